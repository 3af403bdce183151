/*
 * ps_optim: the server-side optimizer that turns a pushed gradient into a
 * weight update: SGD, momentum, Nesterov, AdaGrad, RMSprop, Adam, AdamW,
 * with L2 and L1 regularization and a learning-rate schedule. Its state
 * (velocities, squared sums, moments) lives beside the weights it
 * belongs to, one entry per weight, allocated once by ps_optim_new().
 */
#ifndef PS_OPTIM_H
#define PS_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "ps_error.h"

/*
 * The update of one weight w with pushed gradient g, as update number t of
 * the server (t = updates applied so far, 0 for the first push). All
 * arithmetic is float32; lr = ps_optim_lr(o, t), so the schedule scales
 * every kind. First the coupled regularization, for every kind:
 *
 *   g' = g + weight_decay * w + l1 * sign(w)      sign(0) = 0
 *
 * (AdamW takes its weight decay decoupled instead, below; its L1 term is
 * coupled like everyone's.) Then, with state zero before the first update:
 *
 *   kind      state per weight    update
 *   sgd       none                w -= lr * g'
 *   momentum  v: 1 float          v = mu * v + g';  w -= lr * v
 *   nesterov  v: 1 float          v = mu * v + g';  w -= lr * (g' + mu * v)
 *   adagrad   s: 1 float          s += g'^2;  w -= lr * g' / (sqrt(s) + eps)
 *   rmsprop   s: 1 float          s = rho * s + (1 - rho) * g'^2;
 *                                 w -= lr * g' / (sqrt(s) + eps)
 *   adam      m, v: 2 floats      m = b1 * m + (1 - b1) * g';
 *                                 v = b2 * v + (1 - b2) * g'^2;
 *                                 mhat = m / (1 - b1^k); vhat = v / (1 - b2^k);
 *                                 w -= lr * mhat / (sqrt(vhat) + eps)
 *   adamw     m, v: 2 floats      w -= lr * weight_decay * w, then the adam
 *                                 step on g' = g + l1 * sign(w) (the old w)
 *
 * momentum and nesterov are PyTorch's forms (the velocity accumulates
 * gradients, lr multiplies it); mu is the `momentum` field. AdaGrad reuses
 * eps (PyTorch's default there is 1e-10; once s holds a few squared
 * gradients the two make no difference). Adam's bias correction counts
 * the optimizer's own updates, k = 1 for its first apply call that
 * touches at least one weight, 2 for the next, ... For a server that owns
 * the whole model and applies every push to it, k = t + 1; it stays right
 * when another shard's pushes raise the server's version but not this
 * optimizer's updates. When pushes cover only part of the model, k counts
 * pushes, not the updates of each weight (that would take another array).
 */
enum ps_optim_kind {
	PS_OPTIM_SGD = 0,
	PS_OPTIM_MOMENTUM = 1,
	PS_OPTIM_NESTEROV = 2,
	PS_OPTIM_ADAGRAD = 3,
	PS_OPTIM_RMSPROP = 4,
	PS_OPTIM_ADAM = 5,
	PS_OPTIM_ADAMW = 6,
};

/* Learning-rate schedules; t counts updates applied so far. */
enum ps_lr_schedule {
	PS_LR_CONST = 0,   /* lr */
	PS_LR_INVSQRT = 1, /* lr / sqrt(1 + t / decay_steps) */
	PS_LR_EXP = 2,     /* lr * gamma ^ (t / decay_steps) */
	PS_LR_STEP = 3,    /* lr * gamma ^ floor(t / decay_steps) */
};

/*
 * Plain value record. Zero means zero, not "default": a zero-initialized
 * record with lr set is constant-rate SGD without regularization, and so
 * is momentum with mu 0; the adaptive kinds need eps > 0 and usually want
 * the conventional values ps-server passes by default (mu 0.9, beta1 0.9,
 * beta2 0.999, rho 0.9, eps 1e-8). Every field is checked against its
 * range whatever the kind; eps only when the kind reads it.
 */
typedef struct ps_optim_config {
	enum ps_optim_kind kind;
	double lr; /* learning rate, > 0 */
	enum ps_lr_schedule schedule;
	double decay_steps; /* > 0 when schedule != PS_LR_CONST */
	double gamma;       /* in (0, 1] for exp and step */
	double warmup;      /* updates of linear warm-up from lr/warmup */
	double momentum;    /* mu of momentum and nesterov, in [0, 1);
			       nesterov needs > 0 */
	double beta1;       /* adam, adamw: first-moment decay, in [0, 1) */
	double beta2;       /* adam, adamw: second-moment decay, in [0, 1) */
	double rho;         /* rmsprop: squared-gradient decay, in [0, 1) */
	double eps;         /* adagrad, rmsprop, adam, adamw: > 0 */
	double weight_decay; /* L2, >= 0: coupled; decoupled for adamw */
	double l1;          /* L1, >= 0: coupled for every kind */
} ps_optim_config;

/* Schedule names accepted on the command line, in enum order. */
extern const char *const ps_lr_schedule_names[];

typedef struct ps_optim ps_optim;

/* Names accepted on the command line, NULL-terminated, in enum order. */
extern const char *const ps_optim_names[];

/* An optimizer for n weights, its state zeroed. Errors: PS_EINVAL (unknown
 * kind or schedule, or a parameter out of the range given in
 * ps_optim_config; e->msg names it and its value), PS_ENOMEM (the state
 * cannot be allocated). Caller owns the result; release with
 * ps_optim_destroy(). */
int ps_optim_new(ps_optim **out, size_t n, const ps_optim_config *cfg,
		 ps_err *e) PS_WUR;

/* One line for logs: the kind and every parameter it reads, e.g.
 * "adam: lr 0.001 (const), beta1 0.9, beta2 0.999, eps 1e-08, weight decay
 * 0, l1 0". Writes at most len bytes to buf, NUL-terminated, and returns
 * buf. cfg need not be valid. */
const char *ps_optim_describe(const ps_optim_config *cfg, char *buf,
			      size_t len);

/* The optimizer's state, for checkpoints: *state points at *count floats
 * (n per state float per weight, in the table's order; NULL and 0 for
 * sgd), and *steps is the apply-call count Adam's bias correction uses.
 * Borrowed: valid until ps_optim_destroy(); a checkpoint restore writes
 * through it and then calls ps_optim_set_steps(). */
void ps_optim_state(ps_optim *o, float **state, size_t *count,
		    uint64_t *steps);
void ps_optim_set_steps(ps_optim *o, uint64_t steps);

/* Free o and its state and set *op to NULL. Accepts NULL and *op NULL. */
void ps_optim_destroy(ps_optim **op);

/* Learning rate of update number t (0 for the first). */
double ps_optim_lr(const ps_optim *o, uint64_t t);

/* Apply gradient g[n] to weights w[n] in place as update number t, where
 * w[0] is weight `begin` of the n the optimizer was made for, so that
 * w[i] uses state entry begin + i; begin + n must not exceed that n
 * (asserted). w and g are float-aligned and must not overlap. n == 0
 * changes nothing, not even Adam's step count. Single-threaded: one
 * caller at a time. */
void ps_optim_apply_range(ps_optim *o, float *restrict w,
			  const float *restrict g, size_t begin, size_t n,
			  uint64_t t);

/* ps_optim_apply_range() with the learning rate of update t multiplied by
 * lr_scale (> 0): the staleness-aware rate scales each push by
 * 1 / max(1, staleness). */
void ps_optim_apply_scaled(ps_optim *o, float *restrict w,
			   const float *restrict g, size_t begin, size_t n,
			   uint64_t t, double lr_scale);

/* ps_optim_apply_range() with begin 0: weights [0, n) and their state.
 * A push to a range that starts elsewhere must go through
 * ps_optim_apply_range(), or it would update another range's state. */
void ps_optim_apply(ps_optim *o, float *restrict w, const float *restrict g,
		    size_t n, uint64_t t);

#endif
