/*
 * ps_model_softmax: multinomial logistic regression. Parameters
 * W[output_dim][input_dim] row-major, then b[output_dim]; loss the mean
 * cross-entropy of softmax(X W^T + b). Scratch slot 0 holds one row of
 * logits per sample, turned into probabilities by forward and into
 * P - Y by backward; slot 1 a vector of n ones for the bias gradient. A
 * batch costs n * (output_dim + 1) floats beyond x.
 */
#include "ps_model_impl.h"
#include "ps_rng.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

enum { SLOT_PROB = 0, SLOT_ONES = 1 };

/* Small enough that the initial logits are near zero (the loss starts near
 * log K and no class is favoured), large enough to break the symmetry. */
#define INIT_SCALE 0.01

static int softmax_check(const ps_model_spec *spec, ps_err *e)
{
	int rc = PS_OK;

	if (spec->output_dim < 2)
		rc = ps_err_set(e, PS_EINVAL,
				"model 'softmax' needs output_dim >= 2 classes, got %u",
				(unsigned)spec->output_dim);
	return rc;
}

/* Both factors are below 2^32, so the product cannot wrap a uint64_t. */
static uint64_t softmax_num_params(const ps_model_spec *spec)
{
	return (uint64_t)spec->output_dim * ((uint64_t)spec->input_dim + 1);
}

static void softmax_init(const ps_model *m, float *w)
{
	const size_t nw = (size_t)m->spec.output_dim * m->spec.input_dim;
	ps_rng rng;

	ps_rng_seed(&rng, m->spec.init_seed);
	for (size_t i = 0; i < nw; i++)
		w[i] = (float)(INIT_SCALE * ps_rng_normal(&rng));
	memset(w + nw, 0, (size_t)m->spec.output_dim * sizeof *w);
}

static int softmax_forward(ps_model *m, const float *w, const float *x,
			   const float *y, size_t n, double *loss_sum,
			   size_t *correct, uint32_t *pred)
{
	const int dim = (int)m->spec.input_dim;
	const int k = (int)m->spec.output_dim;
	const float *bias = w + (size_t)k * (size_t)dim;
	float *p = NULL;
	float *ones = NULL;
	int rc = PS_OK;

	/* Before any work, so that a bad batch leaves no half-done state. */
	if (y)
		rc = ps_model_check_labels(y, n, m->spec.output_dim);
	if (rc != PS_OK)
		goto out;
	rc = ps_model_scratch(m, SLOT_PROB, n, (size_t)k, &p);
	if (rc != PS_OK)
		goto out;
	/* backward() cannot fail, so the room it needs is taken here. */
	rc = ps_model_scratch(m, SLOT_ONES, n, 1, &ones);
	if (rc != PS_OK)
		goto out;
	for (size_t i = 0; i < n; i++)
		memcpy(p + i * (size_t)k, bias, (size_t)k * sizeof *p);
	/* logits = X W^T + b, with b already in place (beta = 1). */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, k, dim,
		    1.0f, x, dim, w, dim, 1.0f, p, k);
	ps_model_softmax_rows(p, n, (size_t)k, y, pred, loss_sum, correct);
out:
	return rc;
}

static void softmax_backward(ps_model *m, const float *w, const float *x,
			     const float *y, size_t n, float *grad)
{
	const int dim = (int)m->spec.input_dim;
	const int k = (int)m->spec.output_dim;
	const float scale = (float)(1.0 / (double)n);
	float *g = m->scratch[SLOT_PROB].p;
	float *ones = m->scratch[SLOT_ONES].p;

	(void)w;
	/* dL/dlogits = (P - Y) / n; the 1/n rides in the BLAS alpha. */
	for (size_t i = 0; i < n; i++)
		g[i * (size_t)k + (size_t)y[i]] -= 1.0f;
	/* dW = (P - Y)^T X / n */
	cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, dim, (int)n,
		    scale, g, k, x, dim, 0.0f, grad, dim);
	/* db = column sums of (P - Y) / n, as G^T 1 so BLAS does the
	 * summation. */
	for (size_t i = 0; i < n; i++)
		ones[i] = 1.0f;
	cblas_sgemv(CblasRowMajor, CblasTrans, (int)n, k, scale, g, k, ones, 1,
		    0.0f, grad + (size_t)k * (size_t)dim, 1);
}

const struct ps_model_ops ps_model_softmax_ops = {
	.name = "softmax",
	.classifier = 1,
	.takes_hidden = 0,
	.check = softmax_check,
	.num_params = softmax_num_params,
	.setup = NULL,
	.teardown = NULL,
	.init = softmax_init,
	.forward = softmax_forward,
	.backward = softmax_backward,
};
