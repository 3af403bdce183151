/*
 * ps_model_logistic: binary logistic regression, p = sigmoid(w.x + b),
 * loss the mean binary cross-entropy, labels exactly 0 or 1. Parameters
 * w[input_dim] then b. Like linear, both passes are one sgemv each: forward
 * leaves p - y in scratch slot 0, which is all the gradient needs.
 */
#include "ps_model_impl.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

enum { SLOT_RESIDUAL = 0 };

static int logistic_check(const ps_model_spec *spec, ps_err *e)
{
	int rc = PS_OK;

	if (spec->output_dim != 1)
		rc = ps_err_set(e, PS_EINVAL,
				"model 'logistic' predicts one probability: output_dim must be 1, got %u",
				(unsigned)spec->output_dim);
	return rc;
}

static uint64_t logistic_num_params(const ps_model_spec *spec)
{
	return (uint64_t)spec->input_dim + 1;
}

/* The loss is convex: zeros (p = 1/2 everywhere) are a fine start and
 * need no seed; init_seed is ignored. */
static void logistic_init(const ps_model *m, float *w)
{
	memset(w, 0, m->num_params * sizeof *w);
}

static int logistic_forward(ps_model *m, const float *w, const float *x,
			    const float *y, size_t n, double *loss_sum,
			    size_t *correct, uint32_t *pred)
{
	const int dim = (int)m->spec.input_dim;
	const double b = w[dim];
	float *r = NULL;
	double sum = 0.0;
	size_t hits = 0;
	int rc = PS_OK;

	/* Exact 0 or 1, checked before any work: a fractional "label" would
	 * make the loss below something other than cross-entropy. */
	if (y)
		rc = ps_model_check_labels(y, n, 2);
	if (rc != PS_OK)
		goto out;
	rc = ps_model_scratch(m, SLOT_RESIDUAL, n, 1, &r);
	if (rc != PS_OK)
		goto out;
	cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n, dim, 1.0f, x, dim, w,
		    1, 0.0f, r, 1);
	for (size_t i = 0; i < n; i++) {
		double z = (double)r[i] + b;
		double t;
		int label;

		/* p >= 1/2 exactly when z >= 0. */
		if (pred)
			pred[i] = z >= 0.0;
		if (!y)
			continue;
		t = exp(-fabs(z));
		label = y[i] != 0.0f;

		/* -log sigmoid(z) if y = 1, -log(1 - sigmoid(z)) if y = 0,
		 * both as max(z, 0) - y*z + log1p(e^-|z|): no exp of a
		 * positive number, so no overflow, and no log of a rounded
		 * 1 - p, so no cancellation for confident predictions. */
		sum += (z > 0.0 ? z : 0.0) - (label ? z : 0.0) + log1p(t);
		hits += (z >= 0.0) == label;
		/* sigmoid(z) from the same t, again without overflow. */
		r[i] = (float)((z >= 0.0 ? 1.0 / (1.0 + t) : t / (1.0 + t)) -
			       (double)label);
	}
	*loss_sum += sum;
	*correct += hits;
out:
	return rc;
}

static void logistic_backward(ps_model *m, const float *w, const float *x,
			      const float *y, size_t n, float *grad)
{
	const int dim = (int)m->spec.input_dim;
	const float *r = m->scratch[SLOT_RESIDUAL].p;
	double rsum = 0.0;

	(void)w;
	(void)y;
	/* dL/dz = p - y per row, so dL/dw = X^T (p - y) / n and dL/db is
	 * its mean: the same shape as least squares. */
	cblas_sgemv(CblasRowMajor, CblasTrans, (int)n, dim,
		    (float)(1.0 / (double)n), x, dim, r, 1, 0.0f, grad, 1);
	for (size_t i = 0; i < n; i++)
		rsum += r[i];
	grad[dim] = (float)(rsum / (double)n);
}

const struct ps_model_ops ps_model_logistic_ops = {
	.name = "logistic",
	.classifier = 1,
	.takes_hidden = 0,
	.check = logistic_check,
	.num_params = logistic_num_params,
	.setup = NULL,
	.teardown = NULL,
	.init = logistic_init,
	.forward = logistic_forward,
	.backward = logistic_backward,
};
