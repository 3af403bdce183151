/*
 * ps_optim: the update rules of ps_optim.h over float arrays, and the
 * learning-rate schedules. The gradient comes straight from the
 * transport's receive buffer; the state is one calloc'd block beside the
 * server's weights.
 *
 * Speed: an update streams w, g and the state once, so each kind is one
 * loop over restrict-qualified float arrays, with everything that depends
 * only on the step (lr, bias corrections, 1 - beta) computed before it.
 * The loops vectorize with the project's -O2 -fno-math-errno (without
 * -fno-math-errno sqrtf may have to set errno and gcc keeps it scalar);
 * VBLOCK and PS_OPTIM_CLONES below say what else that takes. Plain SGD
 * without regularization stays a BLAS saxpy.
 */
#include "ps_optim.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

struct ps_optim {
	ps_optim_config cfg;
	size_t n;
	/* Per-weight state, n floats each, zero at the start: `a` is the
	 * velocity (momentum, nesterov), the squared sum (adagrad, rmsprop)
	 * or the first moment (adam, adamw); `b` the second moment (adam,
	 * adamw). Both point into one allocation owned through `a`. */
	float *a, *b;
	/* Apply calls that touched at least one weight: Adam's k - 1. */
	uint64_t steps;
};

const char *const ps_optim_names[] = {"sgd",     "momentum", "nesterov",
				      "adagrad", "rmsprop",  "adam",
				      "adamw",   NULL};
const char *const ps_lr_schedule_names[] = {"const", "invsqrt", "exp", "step",
					    NULL};

/* State floats per weight, by kind (the table in ps_optim.h). */
static size_t state_per_weight(enum ps_optim_kind kind)
{
	switch (kind) {
	case PS_OPTIM_SGD:
		return 0;
	case PS_OPTIM_MOMENTUM:
	case PS_OPTIM_NESTEROV:
	case PS_OPTIM_ADAGRAD:
	case PS_OPTIM_RMSPROP:
		return 1;
	case PS_OPTIM_ADAM:
	case PS_OPTIM_ADAMW:
		return 2;
	}
	return 0;
}

static int uses_eps(enum ps_optim_kind kind)
{
	return kind == PS_OPTIM_ADAGRAD || kind == PS_OPTIM_RMSPROP ||
	       kind == PS_OPTIM_ADAM || kind == PS_OPTIM_ADAMW;
}

/* NaN fails both comparisons. */
static int in_unit(double x)
{
	return x >= 0 && x < 1;
}

/* The kernels compute in float: a value must survive the conversion
 * (1e300 would become Inf, and an eps of 1e-300 would become 0 and turn
 * 0 / sqrt(0) into NaN). */
static int nonneg_float(double x)
{
	return x >= 0 && isfinite((float)x);
}

static int positive_float(double x)
{
	return x > 0 && (float)x > 0 && isfinite((float)x);
}

static int check_config(const ps_optim_config *c, ps_err *e)
{
	if ((int)c->kind < PS_OPTIM_SGD || (int)c->kind > PS_OPTIM_ADAMW)
		return ps_err_set(e, PS_EINVAL, "unknown optimizer %d",
				  (int)c->kind);
	if (!(isfinite(c->lr) && c->lr > 0))
		return ps_err_set(e, PS_EINVAL,
				  "learning rate must be positive, got %g",
				  c->lr);
	if (c->schedule != PS_LR_CONST &&
	    !(isfinite(c->decay_steps) && c->decay_steps > 0))
		return ps_err_set(e, PS_EINVAL,
				  "learning-rate decay steps must be positive, got %g",
				  c->decay_steps);
	if ((c->schedule == PS_LR_EXP || c->schedule == PS_LR_STEP) &&
	    !(c->gamma > 0 && c->gamma <= 1))
		return ps_err_set(e, PS_EINVAL,
				  "learning-rate gamma must be in (0, 1], got %g",
				  c->gamma);
	if ((int)c->schedule < PS_LR_CONST || (int)c->schedule > PS_LR_STEP)
		return ps_err_set(e, PS_EINVAL, "unknown schedule %d",
				  (int)c->schedule);
	if (!(isfinite(c->warmup) && c->warmup >= 0))
		return ps_err_set(e, PS_EINVAL,
				  "warm-up must be a non-negative number of updates, got %g",
				  c->warmup);
	if (!in_unit(c->momentum))
		return ps_err_set(e, PS_EINVAL,
				  "momentum must be in [0, 1), got %g",
				  c->momentum);
	if (c->kind == PS_OPTIM_NESTEROV && !(c->momentum > 0))
		return ps_err_set(e, PS_EINVAL,
				  "nesterov needs momentum > 0, got %g",
				  c->momentum);
	if (!in_unit(c->beta1))
		return ps_err_set(e, PS_EINVAL,
				  "beta1 must be in [0, 1), got %g", c->beta1);
	if (!in_unit(c->beta2))
		return ps_err_set(e, PS_EINVAL,
				  "beta2 must be in [0, 1), got %g", c->beta2);
	if (!in_unit(c->rho))
		return ps_err_set(e, PS_EINVAL,
				  "rho must be in [0, 1), got %g", c->rho);
	if (uses_eps(c->kind) && !positive_float(c->eps))
		return ps_err_set(e, PS_EINVAL,
				  "eps must be positive and finite as a float for %s, got %g",
				  ps_optim_names[c->kind], c->eps);
	if (!nonneg_float(c->weight_decay))
		return ps_err_set(e, PS_EINVAL,
				  "weight decay must be non-negative and finite as a float, got %g",
				  c->weight_decay);
	if (!nonneg_float(c->l1))
		return ps_err_set(e, PS_EINVAL,
				  "l1 must be non-negative and finite as a float, got %g",
				  c->l1);
	return PS_OK;
}

void ps_optim_state(ps_optim *o, float **state, size_t *count,
		    uint64_t *steps)
{
	*state = o->a;
	*count = o->a ? state_per_weight(o->cfg.kind) * o->n : 0;
	*steps = o->steps;
}

void ps_optim_set_steps(ps_optim *o, uint64_t steps)
{
	o->steps = steps;
}

int ps_optim_new(ps_optim **out, size_t n, const ps_optim_config *cfg,
		 ps_err *e)
{
	ps_optim *o = NULL;
	size_t per = 0;
	int rc;

	*out = NULL;
	rc = check_config(cfg, e);
	if (rc != PS_OK)
		return rc;
	per = state_per_weight(cfg->kind);
	/* Checked here rather than left to calloc, so that an impossible
	 * size is PS_ENOMEM and not a sanitizer's calloc-overflow abort. */
	if (per > 0 && n > SIZE_MAX / (per * sizeof(float)))
		return ps_err_set(e, PS_ENOMEM,
				  "out of memory for %s state of %zu weights",
				  ps_optim_names[cfg->kind], n);
	o = calloc(1, sizeof *o);
	if (!o) {
		rc = ps_err_set(e, PS_ENOMEM, "out of memory");
		goto out;
	}
	o->cfg = *cfg;
	o->n = n;
	if (per > 0 && n > 0) {
		o->a = calloc(per * n, sizeof(float));
		if (!o->a) {
			rc = ps_err_set(e, PS_ENOMEM,
					"out of memory for %s state of %zu weights",
					ps_optim_names[cfg->kind], n);
			goto out;
		}
		if (per == 2)
			o->b = o->a + n;
	}
	*out = o;
	o = NULL;
out:
	ps_optim_destroy(&o);
	return rc;
}

/* Append to buf[len] at *at, stopping quietly when it is full. */
static void append(char *buf, size_t len, size_t *at, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void append(char *buf, size_t len, size_t *at, const char *fmt, ...)
{
	va_list ap;
	int k;

	if (*at >= len)
		return;
	va_start(ap, fmt);
	k = vsnprintf(buf + *at, len - *at, fmt, ap);
	va_end(ap);
	if (k > 0)
		*at += (size_t)k;
}

const char *ps_optim_describe(const ps_optim_config *c, char *buf,
			      size_t len)
{
	int kind = (int)c->kind, sched = (int)c->schedule;
	size_t at = 0;

	if (len == 0)
		return buf;
	buf[0] = '\0';
	if (kind < PS_OPTIM_SGD || kind > PS_OPTIM_ADAMW)
		append(buf, len, &at, "optimizer %d", kind);
	else
		append(buf, len, &at, "%s", ps_optim_names[kind]);
	append(buf, len, &at, ": lr %g (", c->lr);
	if (sched < PS_LR_CONST || sched > PS_LR_STEP)
		append(buf, len, &at, "schedule %d", sched);
	else
		append(buf, len, &at, "%s", ps_lr_schedule_names[sched]);
	if (c->schedule != PS_LR_CONST)
		append(buf, len, &at, ", decay steps %g", c->decay_steps);
	if (c->schedule == PS_LR_EXP || c->schedule == PS_LR_STEP)
		append(buf, len, &at, ", gamma %g", c->gamma);
	if (c->warmup > 0)
		append(buf, len, &at, ", warm-up %g", c->warmup);
	append(buf, len, &at, ")");
	if (c->kind == PS_OPTIM_MOMENTUM || c->kind == PS_OPTIM_NESTEROV)
		append(buf, len, &at, ", momentum %g", c->momentum);
	if (c->kind == PS_OPTIM_ADAM || c->kind == PS_OPTIM_ADAMW)
		append(buf, len, &at, ", beta1 %g, beta2 %g", c->beta1,
		       c->beta2);
	if (c->kind == PS_OPTIM_RMSPROP)
		append(buf, len, &at, ", rho %g", c->rho);
	if (uses_eps(c->kind))
		append(buf, len, &at, ", eps %g", c->eps);
	append(buf, len, &at, ", weight decay %g%s, l1 %g", c->weight_decay,
	       c->kind == PS_OPTIM_ADAMW ? " (decoupled)" : "", c->l1);
	return buf;
}

void ps_optim_destroy(ps_optim **op)
{
	if (!op || !*op)
		return;
	free((*op)->a);
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

/* Everything a kernel needs, in float, computed once per apply call. */
typedef struct step {
	float lr;
	float wd;   /* coupled L2: weight_decay, 0 for adamw */
	float l1;
	float mu;   /* momentum, nesterov */
	float keep; /* rmsprop: rho */
	float take; /* rmsprop: 1 - rho */
	float eps;
	/* adam, adamw: with a1 = lr / (1 - b1^k) and c2 = 1 / sqrt(1 - b2^k),
	 * a1 * m / (sqrt(v) * c2 + eps) = lr * mhat / (sqrt(vhat) + eps). */
	float b1, b2, take1, take2, a1, c2;
	float decay; /* adamw: lr * weight_decay, decoupled; 0 for adam */
} step;

/* Kernels are inlined into run() four times each: {block, tail} x {with,
 * without regularization}; `reg` is always a constant there. */
#define KERNEL static inline __attribute__((always_inline)) void

/* l1 * sign(w) with sign(0) = 0, written as selects: gcc -O2 if-converts
 * those, while (float)(w > 0) - (float)(w < 0) stays a branch. */
static inline float l1_term(float w, float l1)
{
	float r = w > 0.0f ? l1 : 0.0f;
	return w < 0.0f ? -l1 : r;
}

/* g + weight_decay * w + l1 * sign(w), or g itself when reg is 0. */
static inline float coupled(float g, float w, step s, int reg)
{
	return reg ? g + s.wd * w + l1_term(w, s.l1) : g;
}

KERNEL sgd(float *restrict w, const float *restrict g, size_t n, step s,
	   int reg)
{
	for (size_t i = 0; i < n; i++)
		w[i] -= s.lr * coupled(g[i], w[i], s, reg);
}

KERNEL momentum(float *restrict w, const float *restrict g,
		float *restrict v, size_t n, step s, int reg)
{
	for (size_t i = 0; i < n; i++) {
		float gi = coupled(g[i], w[i], s, reg);
		float vi = s.mu * v[i] + gi;
		v[i] = vi;
		w[i] -= s.lr * vi;
	}
}

KERNEL nesterov(float *restrict w, const float *restrict g,
		float *restrict v, size_t n, step s, int reg)
{
	for (size_t i = 0; i < n; i++) {
		float gi = coupled(g[i], w[i], s, reg);
		float vi = s.mu * v[i] + gi;
		v[i] = vi;
		w[i] -= s.lr * (gi + s.mu * vi);
	}
}

KERNEL adagrad(float *restrict w, const float *restrict g,
	       float *restrict sq, size_t n, step s, int reg)
{
	for (size_t i = 0; i < n; i++) {
		float gi = coupled(g[i], w[i], s, reg);
		float si = sq[i] + gi * gi;
		sq[i] = si;
		w[i] -= s.lr * gi / (sqrtf(si) + s.eps);
	}
}

KERNEL rmsprop(float *restrict w, const float *restrict g,
	       float *restrict sq, size_t n, step s, int reg)
{
	for (size_t i = 0; i < n; i++) {
		float gi = coupled(g[i], w[i], s, reg);
		float si = s.keep * sq[i] + s.take * gi * gi;
		sq[i] = si;
		w[i] -= s.lr * gi / (sqrtf(si) + s.eps);
	}
}

/* Adam and AdamW: s.wd is 0 for adamw and s.decay is 0 for adam, and
 * w - 0 * w is exactly w. */
KERNEL adam(float *restrict w, const float *restrict g, float *restrict m,
	    float *restrict v, size_t n, step s, int reg)
{
	for (size_t i = 0; i < n; i++) {
		float wi = w[i];
		float gi = coupled(g[i], wi, s, reg);
		float mi = s.b1 * m[i] + s.take1 * gi;
		float vi = s.b2 * v[i] + s.take2 * gi * gi;
		m[i] = mi;
		v[i] = vi;
		w[i] = wi - s.decay * wi -
		       s.a1 * mi / (sqrtf(vi) * s.c2 + s.eps);
	}
}

/* One pass of the kind's rule over w[0, n), state entries from begin. */
KERNEL update(ps_optim *o, float *restrict w, const float *restrict g,
	      size_t begin, size_t n, step s, int reg)
{
	switch (o->cfg.kind) {
	case PS_OPTIM_SGD:
		sgd(w, g, n, s, reg);
		break;
	case PS_OPTIM_MOMENTUM:
		momentum(w, g, o->a + begin, n, s, reg);
		break;
	case PS_OPTIM_NESTEROV:
		nesterov(w, g, o->a + begin, n, s, reg);
		break;
	case PS_OPTIM_ADAGRAD:
		adagrad(w, g, o->a + begin, n, s, reg);
		break;
	case PS_OPTIM_RMSPROP:
		rmsprop(w, g, o->a + begin, n, s, reg);
		break;
	case PS_OPTIM_ADAM:
	case PS_OPTIM_ADAMW:
		adam(w, g, o->a + begin, o->b + begin, n, s, reg);
		break;
	}
}

/* gcc 12 at -O2 vectorizes with its "very cheap" cost model: only loops
 * whose trip count is known to be a multiple of the vector width, since
 * it will not add a scalar epilogue. So the kernels run over a block of
 * n & ~(VBLOCK - 1) weights, which gcc sees is such a multiple, and then
 * over the scalar tail of at most VBLOCK - 1. 16 covers AVX-512. */
#define VBLOCK 16

/* The project builds for baseline x86-64 (SSE2). An AVX2 clone, chosen at
 * load time through an ifunc, halves the time of the adaptive kinds,
 * whose sqrt and divide throughput is the limit (Adam over 1M floats:
 * about 0.65 ms with SSE2, 0.35 ms with AVX2, here). "avx2" without
 * "fma" keeps the rounding of every operation as written, so both clones
 * give bit-identical weights. */
#if defined(__x86_64__) && defined(__GLIBC__) &&                               \
	(defined(__clang__) ? __clang_major__ >= 14 : defined(__GNUC__))
#define PS_OPTIM_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define PS_OPTIM_CLONES
#endif

PS_OPTIM_CLONES
static void run(ps_optim *o, float *restrict w, const float *restrict g,
		size_t begin, size_t n, step s)
{
	size_t body = n & ~(size_t)(VBLOCK - 1);

	if (s.wd != 0 || s.l1 != 0) {
		update(o, w, g, begin, body, s, 1);
		update(o, w + body, g + body, begin + body, n - body, s, 1);
	} else {
		update(o, w, g, begin, body, s, 0);
		update(o, w + body, g + body, begin + body, n - body, s, 0);
	}
}

void ps_optim_apply_scaled(ps_optim *o, float *restrict w,
			   const float *restrict g, size_t begin, size_t n,
			   uint64_t t, double lr_scale)
{
	const ps_optim_config *c = &o->cfg;
	double lr, k;
	step s = {0};

	assert(begin <= o->n && n <= o->n - begin);
	if (n == 0)
		return;
	lr = ps_optim_lr(o, t) * lr_scale;
	o->steps++;
	/* Plain SGD too goes through the kernels rather than cblas_saxpy:
	 * BLAS rounds its vector body and its tail differently (fused
	 * multiply-add or not), so a weight's update would depend on where
	 * its range starts, and server shards would not reproduce one
	 * server's weights. */
	s.lr = (float)lr;
	s.wd = (float)c->weight_decay;
	s.l1 = (float)c->l1;
	s.mu = (float)c->momentum;
	s.keep = (float)c->rho;
	s.take = (float)(1.0 - c->rho);
	s.eps = (float)c->eps;
	if (c->kind == PS_OPTIM_ADAM || c->kind == PS_OPTIM_ADAMW) {
		/* Bias corrections in double, once per call. */
		k = (double)o->steps;
		s.b1 = (float)c->beta1;
		s.b2 = (float)c->beta2;
		s.take1 = (float)(1.0 - c->beta1);
		s.take2 = (float)(1.0 - c->beta2);
		s.a1 = (float)(lr / (1.0 - pow(c->beta1, k)));
		s.c2 = (float)(1.0 / sqrt(1.0 - pow(c->beta2, k)));
		if (c->kind == PS_OPTIM_ADAMW) {
			s.decay = (float)(lr * c->weight_decay);
			s.wd = 0.0f;
		}
	}
	run(o, w, g, begin, n, s);
}

void ps_optim_apply_range(ps_optim *o, float *restrict w,
			  const float *restrict g, size_t begin, size_t n,
			  uint64_t t)
{
	ps_optim_apply_scaled(o, w, g, begin, n, t, 1.0);
}

void ps_optim_apply(ps_optim *o, float *restrict w, const float *restrict g,
		    size_t n, uint64_t t)
{
	ps_optim_apply_range(o, w, g, 0, n, t);
}
