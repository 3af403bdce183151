/*
 * ps_model: the models a worker trains, behind one small interface:
 * parameter count, seeded initialization, mean loss and gradient over a
 * minibatch, evaluation over a dataset (with a confusion matrix), and
 * per-row predictions. Dense math goes through CBLAS.
 * Kinds: "linear" (least squares, mean of 0.5*(y - w.x - b)^2),
 * "logistic" (binary logistic regression, mean binary cross-entropy),
 * "softmax" (multinomial logistic regression, mean cross-entropy) and
 * "mlp" (fully connected hidden layers, ReLU or tanh, softmax output).
 */
#ifndef PS_MODEL_H
#define PS_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "ps_dataset.h"
#include "ps_error.h"

#define PS_MODEL_NAME_MAX 32
#define PS_MODEL_HIDDEN_MAX 64
#define PS_MODEL_ACTIVATION_MAX 16

/* Most hidden layers an "mlp" spec may list, and the widest one. */
#define PS_MODEL_LAYERS_MAX 8
#define PS_MODEL_WIDTH_MAX 65536

/* What the server needs to size and initialize the weights. Plain value
 * record; it travels in Hello. */
typedef struct ps_model_spec {
	char name[PS_MODEL_NAME_MAX];     /* "linear", "logistic", ... */
	uint32_t input_dim;               /* features per sample */
	uint32_t output_dim;              /* classes; 1 for linear, logistic */
	uint64_t init_seed;
	char hidden[PS_MODEL_HIDDEN_MAX]; /* "" for models without layers */
	char activation[PS_MODEL_ACTIVATION_MAX]; /* likewise */
} ps_model_spec;

typedef struct ps_model ps_model;

/* Result of ps_model_evaluate(). accuracy is NaN for regression. */
typedef struct ps_model_eval {
	double loss;
	double accuracy;
	size_t n;
} ps_model_eval;

/* Make a model from its spec. Parameter layout, which the wire protocol
 * and the weight files rely on:
 *   linear:   w[input_dim], b                      (output_dim must be 1)
 *   logistic: w[input_dim], b                      (output_dim must be 1)
 *   softmax:  W[output_dim][input_dim] row-major, b[output_dim]
 *   mlp:      for each layer l = 1 .. L+1 in order, with sizes
 *             s_0 = input_dim, s_1 .. s_L from hidden, s_{L+1} = output_dim:
 *             W_l[s_l][s_{l-1}] row-major, then b_l[s_l]
 * hidden and activation must be "" for every kind but "mlp". For "mlp",
 * hidden is 1 to PS_MODEL_LAYERS_MAX decimal widths in [1,
 * PS_MODEL_WIDTH_MAX] separated by commas ("256", "256,128"; no spaces,
 * signs or leading zeros, so that one network has one spelling),
 * activation is "relu" or "tanh" (no default: specs are compared byte for
 * byte), and output_dim >= 2.
 * Errors: PS_EINVAL (unknown name, zero or absurd dimensions, a bad hidden
 * or activation string; e->msg says which), PS_ENOMEM. Caller owns the
 * result; release with ps_model_destroy(). A model keeps scratch buffers:
 * one thread at a time. */
int ps_model_new(ps_model **out, const ps_model_spec *spec, ps_err *e) PS_WUR;

void ps_model_destroy(ps_model **mp);

/* Borrowed: valid while the model lives. */
const ps_model_spec *ps_model_get_spec(const ps_model *m);

size_t ps_model_num_params(const ps_model *m);

/* Fill w[num_params] with the initial weights for spec.init_seed: the same
 * seed gives the same weights everywhere. linear and logistic start at
 * zero; softmax at N(0, 0.01^2) weights; mlp draws every W_l in layer
 * order from one ps_rng stream, N(0, 2/fan_in) (He) for ReLU hidden layers
 * and N(0, 1/fan_in) (Xavier/Glorot in its normal fan-in form, also
 * called LeCun) for tanh hidden layers and the output layer. Biases are
 * zero. */
void ps_model_init(const ps_model *m, float *w);

/* Mean loss over the batch (x: n rows of input_dim, y: n targets) into
 * *loss and its gradient with respect to w into grad[num_params].
 * Errors: PS_EINVAL (n == 0, a class label outside [0, output_dim), or
 * for logistic a label other than 0 and 1),
 * PS_ENOMEM (scratch growth for a larger batch than before). */
int ps_model_loss_grad(ps_model *m, const float *w, const float *x,
		       const float *y, size_t n, float *grad,
		       double *loss) PS_WUR;

/* Mean loss and (for classifiers) accuracy of w over all of d, in chunks
 * so that memory stays bounded. Errors: PS_EINVAL (d->dim != input_dim,
 * an empty d, a bad label), PS_ENOMEM; *out is unchanged then. */
int ps_model_evaluate(ps_model *m, const float *w, const ps_dataset *d,
		      ps_model_eval *out) PS_WUR;

/* Rows per forward pass of ps_model_evaluate() and ps_model_predict(). */
#define PS_MODEL_EVAL_CHUNK 1024

/* Classes a classifier tells apart: output_dim for softmax and mlp, 2 for
 * logistic (one output, the probability of class 1); 0 for a regression
 * model (linear). */
uint32_t ps_model_num_classes(const ps_model *m);

/* Check that d can be evaluated with m: rows of input_dim features and,
 * for a classifier, class labels of at most ps_model_num_classes(m)
 * classes (fewer is fine: a test set may lack some). A regression model
 * takes any targets. Errors: PS_EINVAL, e->msg the line to show ("model
 * expects 784 features, data has 2"). */
int ps_model_check_data(const ps_model *m, const ps_dataset *d,
			ps_err *e) PS_WUR;

/* The class of each of the n rows of x (input_dim floats each) under
 * weights w into pred[n], through the same forward pass as
 * ps_model_loss_grad(): the argmax of the outputs for softmax and mlp
 * (the lowest class on ties), 1 when p >= 0.5 for logistic. Works in
 * chunks of PS_MODEL_EVAL_CHUNK rows. Errors: PS_EINVAL (a regression
 * model, n == 0), PS_ENOMEM. */
int ps_model_predict(ps_model *m, const float *w, const float *x, size_t n,
		     uint32_t *pred) PS_WUR;

/* ps_model_evaluate() with `rows` rows per forward pass (0: the default
 * PS_MODEL_EVAL_CHUNK; the scratch grows to rows times the output or
 * layer widths) that, for a classifier and confusion not NULL, also fills
 * the confusion matrix: confusion[t * k + p] is the number of rows of true
 * class t predicted as p, k = ps_model_num_classes(m), k * k entries, row
 * sums the class counts and the diagonal sum accuracy * n. Errors:
 * PS_EINVAL (those of ps_model_evaluate(), confusion for a regression
 * model, rows above INT_MAX), PS_ENOMEM; *out is unchanged then and
 * confusion unspecified. */
int ps_model_evaluate_confusion(ps_model *m, const float *w,
				const ps_dataset *d, size_t rows,
				ps_model_eval *out,
				uint64_t *confusion) PS_WUR;

#endif
