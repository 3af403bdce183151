/*
 * ps_model_linear: least-squares regression, pred = w.x + b, loss the mean
 * of 0.5*(pred - y)^2. Parameters w[input_dim] then b. Both passes are one
 * sgemv each; the residuals in scratch slot 0 link them.
 */
#include "ps_model_impl.h"

#include <cblas.h>
#include <string.h>

enum { SLOT_RESIDUAL = 0 };

static int linear_check(const ps_model_spec *spec, ps_err *e)
{
	int rc = PS_OK;

	if (spec->output_dim != 1)
		rc = ps_err_set(e, PS_EINVAL,
				"model 'linear' predicts one value: output_dim must be 1, got %u",
				(unsigned)spec->output_dim);
	return rc;
}

static uint64_t linear_num_params(const ps_model_spec *spec)
{
	return (uint64_t)spec->input_dim + 1;
}

/* The loss is convex, so zeros are as good a start as any and need no
 * seed; init_seed is ignored. */
static void linear_init(const ps_model *m, float *w)
{
	memset(w, 0, m->num_params * sizeof *w);
}

static int linear_forward(ps_model *m, const float *w, const float *x,
			  const float *y, size_t n, double *loss_sum,
			  size_t *correct, uint32_t *pred)
{
	const int dim = (int)m->spec.input_dim;
	const float b = w[dim];
	float *r = NULL;
	double sum = 0.0;
	int rc;

	/* A regression: nothing to count or classify. */
	(void)correct;
	(void)pred;
	rc = ps_model_scratch(m, SLOT_RESIDUAL, n, 1, &r);
	if (rc != PS_OK)
		goto out;
	cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n, dim, 1.0f, x, dim, w,
		    1, 0.0f, r, 1);
	for (size_t i = 0; i < n; i++) {
		/* Subtract in double: pred and y are often close, and the
		 * loss is what finite differences and logs compare. */
		double ri = (double)r[i] + (double)b - (double)y[i];
		r[i] = (float)ri;
		sum += 0.5 * ri * ri;
	}
	*loss_sum += sum;
out:
	return rc;
}

static void linear_backward(ps_model *m, const float *w, const float *x,
			    const float *y, size_t n, float *grad)
{
	const int dim = (int)m->spec.input_dim;
	const float *r = m->scratch[SLOT_RESIDUAL].p;
	double rsum = 0.0;

	(void)w;
	(void)y;
	/* dL/dw = X^T r / n, dL/db = mean(r). */
	cblas_sgemv(CblasRowMajor, CblasTrans, (int)n, dim,
		    (float)(1.0 / (double)n), x, dim, r, 1, 0.0f, grad, 1);
	for (size_t i = 0; i < n; i++)
		rsum += r[i];
	grad[dim] = (float)(rsum / (double)n);
}

const struct ps_model_ops ps_model_linear_ops = {
	.name = "linear",
	.classifier = 0,
	.takes_hidden = 0,
	.check = linear_check,
	.num_params = linear_num_params,
	.setup = NULL,
	.teardown = NULL,
	.init = linear_init,
	.forward = linear_forward,
	.backward = linear_backward,
};
