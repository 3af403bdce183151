/*
 * ps_optim: plain SGD, w -= lr(t) * g, through CBLAS saxpy, with the
 * learning rate lr(t) given by a schedule over the update count t. The
 * gradient comes straight from the transport's receive buffer.
 */
#include "ps_optim.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>

struct ps_optim {
	ps_optim_config cfg;
	size_t n;
};

const char *const ps_optim_names[] = {"sgd", NULL};
const char *const ps_lr_schedule_names[] = {"const", "invsqrt", "exp", "step",
					    NULL};

int ps_optim_new(ps_optim **out, size_t n, const ps_optim_config *cfg,
		 ps_err *e)
{
	ps_optim *o = NULL;

	*out = NULL;
	if (!(isfinite(cfg->lr) && cfg->lr > 0))
		return ps_err_set(e, PS_EINVAL,
				  "learning rate must be positive, got %g",
				  cfg->lr);
	if (cfg->schedule != PS_LR_CONST &&
	    !(isfinite(cfg->decay_steps) && cfg->decay_steps > 0))
		return ps_err_set(e, PS_EINVAL,
				  "learning-rate decay steps must be positive, got %g",
				  cfg->decay_steps);
	if ((cfg->schedule == PS_LR_EXP || cfg->schedule == PS_LR_STEP) &&
	    !(cfg->gamma > 0 && cfg->gamma <= 1))
		return ps_err_set(e, PS_EINVAL,
				  "learning-rate gamma must be in (0, 1], got %g",
				  cfg->gamma);
	if (cfg->schedule > PS_LR_STEP)
		return ps_err_set(e, PS_EINVAL, "unknown schedule %d",
				  (int)cfg->schedule);
	if (!(isfinite(cfg->warmup) && cfg->warmup >= 0))
		return ps_err_set(e, PS_EINVAL,
				  "warm-up must be a non-negative number of updates, got %g",
				  cfg->warmup);
	if (cfg->kind != PS_OPTIM_SGD)
		return ps_err_set(e, PS_EINVAL, "unknown optimizer %d",
				  (int)cfg->kind);
	o = calloc(1, sizeof *o);
	if (!o)
		return ps_err_set(e, PS_ENOMEM, "out of memory");
	o->cfg = *cfg;
	o->n = n;
	*out = o;
	return PS_OK;
}

void ps_optim_destroy(ps_optim **op)
{
	if (!op || !*op)
		return;
	free(*op);
	*op = NULL;
}

double ps_optim_lr(const ps_optim *o, uint64_t t)
{
	const ps_optim_config *c = &o->cfg;
	double x = (double)t, lr = c->lr;

	switch (c->schedule) {
	case PS_LR_CONST:
		break;
	case PS_LR_INVSQRT:
		lr /= sqrt(1.0 + x / c->decay_steps);
		break;
	case PS_LR_EXP:
		lr *= pow(c->gamma, x / c->decay_steps);
		break;
	case PS_LR_STEP:
		lr *= pow(c->gamma, floor(x / c->decay_steps));
		break;
	}
	if (c->warmup > 0 && x < c->warmup)
		lr *= (x + 1.0) / c->warmup;
	return lr;
}

void ps_optim_apply(ps_optim *o, float *w, const float *g, size_t n,
		    uint64_t t)
{
	float alpha = (float)-ps_optim_lr(o, t);

	/* CBLAS takes int lengths; walk large arrays in int-sized pieces. */
	while (n > 0) {
		int k = n > (size_t)1 << 30 ? 1 << 30 : (int)n;
		cblas_saxpy(k, alpha, g, 1, w, 1);
		w += k;
		g += k;
		n -= (size_t)k;
	}
}
