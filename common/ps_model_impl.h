/*
 * ps_model_impl: what ps_model.c shares with the files that implement one
 * model each (ps_model_linear.c, ps_model_softmax.c, ...). Not part of the
 * public interface: only ps_model*.c and the model unit test include it.
 * A new model is one more file defining a struct ps_model_ops plus one line
 * in the registry in ps_model.c.
 */
#ifndef PS_MODEL_IMPL_H
#define PS_MODEL_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "ps_model.h"

/* Largest parameter count a spec may ask for. It also keeps every
 * dimension and every leading dimension within the int that CBLAS takes. */
#define PS_MODEL_PARAMS_MAX ((uint64_t)1 << 31)

/* Scratch buffers a model may use, by role. Each model decides what a slot
 * holds (e.g. logits then probabilities, residuals, one layer's
 * activations); a model needing more packs several arrays into one slot. */
#define PS_MODEL_SCRATCH_SLOTS 4

/* One model kind. Every function is called only on a model whose spec has
 * passed ps_model_new's checks and this kind's check(). */
struct ps_model_ops {
	const char *name;  /* spec.name that selects this kind */
	int classifier;    /* targets are class labels: accuracy is defined */
	int takes_hidden;  /* spec.hidden, spec.activation may be non-empty */

	/* Kind-specific spec rules (output_dim, hidden layer syntax,
	 * activation), after the generic ones (terminated strings, name,
	 * non-zero dimensions). PS_EINVAL with e->msg set on a violation. */
	int (*check)(const ps_model_spec *spec, ps_err *e);

	/* Parameter count for a checked spec, saturating at UINT64_MAX
	 * instead of wrapping, so that ps_model_new can reject absurd sizes
	 * before anything is allocated. */
	uint64_t (*num_params)(const ps_model_spec *spec);

	/* Optional (NULL when the kind needs no private state): set up
	 * m->priv after the spec is checked; release it in teardown.
	 * teardown must accept a model whose setup failed part-way. */
	int (*setup)(ps_model *m, ps_err *e);
	void (*teardown)(ps_model *m);

	/* Fill w[num_params] deterministically from spec.init_seed. */
	void (*init)(const ps_model *m, float *w);

	/* Forward pass over n rows (1 <= n <= INT_MAX): add the sum of the
	 * per-row losses to *loss_sum and, for classifiers, the number of rows
	 * whose predicted class equals the label to *correct. Leaves in the
	 * scratch slots what backward() needs for the same w, x, y, n.
	 * Classifiers also take pred: NULL, or n entries that receive each
	 * row's predicted class (the one *correct counts against), and y ==
	 * NULL with pred set: classify only, adding nothing to the sums
	 * (backward() must not follow). Regression kinds are never
	 * given pred. Errors: PS_EINVAL (bad label), PS_ENOMEM (scratch
	 * growth); on error the sums are unchanged. */
	int (*forward)(ps_model *m, const float *w, const float *x,
		       const float *y, size_t n, double *loss_sum,
		       size_t *correct, uint32_t *pred);

	/* Gradient of the mean loss of the preceding forward() call into
	 * grad[num_params]. May overwrite the scratch forward() left. */
	void (*backward)(ps_model *m, const float *w, const float *x,
			 const float *y, size_t n, float *grad);
};

struct ps_model_scratch {
	float *p;
	size_t cap; /* floats */
};

struct ps_model {
	ps_model_spec spec;
	const struct ps_model_ops *ops;
	size_t num_params;
	struct ps_model_scratch scratch[PS_MODEL_SCRATCH_SLOTS];
	void *priv; /* owned by ops->setup/teardown */
};

extern const struct ps_model_ops ps_model_linear_ops;
extern const struct ps_model_ops ps_model_logistic_ops;
extern const struct ps_model_ops ps_model_softmax_ops;
extern const struct ps_model_ops ps_model_mlp_ops;

/* Scratch slot `slot` with room for rows * cols floats, into *out. The
 * contents are unspecified (not preserved across growth). Grows only, so a
 * steady batch size allocates once. Errors: PS_ENOMEM (allocation failure
 * or a size that does not fit in size_t); the slot is unchanged then.
 * Borrowed: valid until the next call for the same slot or destroy. */
int ps_model_scratch(ps_model *m, unsigned slot, size_t rows, size_t cols,
		     float **out) PS_WUR;

/* Check that y[0..n) are class labels: exact integers in [0, classes).
 * Errors: PS_EINVAL (NaN, out of range, or fractional). */
int ps_model_check_labels(const float *y, size_t n, uint32_t classes) PS_WUR;

/* Turn n rows of k logits at p into softmax probabilities, in place, with
 * the row max subtracted first (every exponent <= 0, the sum >= 1). The
 * argmax of each row goes to pred[i] when pred is not NULL; when y is not
 * NULL (labels already checked) the rows' cross-entropy is added to
 * *loss_sum and the rows whose argmax is the label to *correct. When y is
 * NULL the rows are left as logits: nothing needs the probabilities. */
void ps_model_softmax_rows(float *p, size_t n, size_t k, const float *y,
			   uint32_t *pred, double *loss_sum, size_t *correct);

#endif
