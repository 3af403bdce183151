/*
 * ps_optim: the server-side optimizer that turns a pushed gradient into a
 * weight update. Its state (none for plain SGD; moments for the methods
 * that come next) lives beside the weights it belongs to.
 */
#ifndef PS_OPTIM_H
#define PS_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "ps_error.h"

enum ps_optim_kind {
	PS_OPTIM_SGD = 0,
};

/* Learning-rate schedules; t counts updates applied so far. */
enum ps_lr_schedule {
	PS_LR_CONST = 0,   /* lr */
	PS_LR_INVSQRT = 1, /* lr / sqrt(1 + t / decay_steps) */
	PS_LR_EXP = 2,     /* lr * gamma ^ (t / decay_steps) */
	PS_LR_STEP = 3,    /* lr * gamma ^ floor(t / decay_steps) */
};

/* Zero-initialized fields give constant-rate SGD at rate lr. */
typedef struct ps_optim_config {
	enum ps_optim_kind kind;
	double lr; /* learning rate, > 0 */
	enum ps_lr_schedule schedule;
	double decay_steps; /* > 0 when schedule != PS_LR_CONST */
	double gamma;       /* in (0, 1] for exp and step */
	double warmup;      /* updates of linear warm-up from lr/warmup */
} ps_optim_config;

/* Schedule names accepted on the command line, in enum order. */
extern const char *const ps_lr_schedule_names[];

typedef struct ps_optim ps_optim;

/* Names accepted on the command line, NULL-terminated, in enum order. */
extern const char *const ps_optim_names[];

/* An optimizer for n weights. Errors: PS_EINVAL (lr not finite and
 * positive, unknown kind, schedule parameters out of range), PS_ENOMEM. Caller owns the result; release with
 * ps_optim_destroy(). */
int ps_optim_new(ps_optim **out, size_t n, const ps_optim_config *cfg,
		 ps_err *e) PS_WUR;

void ps_optim_destroy(ps_optim **op);

/* Learning rate of update number t (0 for the first). */
double ps_optim_lr(const ps_optim *o, uint64_t t);

/* Apply gradient g[n] to weights w[n] in place as update number t. Both
 * float-aligned. */
void ps_optim_apply(ps_optim *o, float *w, const float *g, size_t n,
		    uint64_t t);

#endif
