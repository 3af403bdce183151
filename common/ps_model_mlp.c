/*
 * ps_model_mlp: a fully connected network, input -> hidden layers (ReLU or
 * tanh) -> softmax, trained on mean cross-entropy. Layer l maps s_{l-1}
 * features to s_l with W_l[s_l][s_{l-1}] and b_l[s_l], stored in layer
 * order (see ps_model.h). Every product is one sgemm or sgemv per layer
 * and batch; only the bias, activation and softmax are loops over elements.
 *
 * Scratch slot 0 holds, for a batch of n rows, the post-activations of the
 * hidden layers and then the output probabilities, each n x s_l row-major,
 * back to back. Backward turns each block into that layer's error signal
 * in place, from the top down, once the block below no longer needs it.
 * Slot 1 holds a work block of n x (widest hidden layer) for the product
 * with W_l, then n ones for the bias gradients.
 */
#include "ps_model_impl.h"
#include "ps_rng.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { SLOT_ACT = 0, SLOT_WORK = 1 };

enum mlp_activation { MLP_RELU, MLP_TANH };

/* Widths s_0 .. s_{L+1}: input, hidden layers, output. */
#define MLP_WIDTHS_MAX (PS_MODEL_LAYERS_MAX + 2)

/* The network's shape, worked out once from the spec (m->priv). width[l]
 * is s_l, width[0] the input; woff, boff and cum are indexed by weight
 * layer l = 1 .. layers, and their entry 0 is unused. */
struct mlp {
	unsigned layers; /* weight layers: hidden layers + 1 */
	enum mlp_activation act;
	size_t width[MLP_WIDTHS_MAX];
	size_t woff[MLP_WIDTHS_MAX]; /* W_l's offset in the parameters */
	size_t boff[MLP_WIDTHS_MAX]; /* b_l's offset */
	/* s_1 + ... + s_{l-1}: layer l's block in slot 0 starts at n times
	 * this for a batch of n rows. */
	size_t cum[MLP_WIDTHS_MAX];
	size_t act_cols; /* s_1 + ... + s_{L+1}: slot 0 floats per row */
	size_t widest_hidden;
};

/* Strict, so that one network has one spelling (the server compares specs
 * byte for byte): decimal widths 1 .. PS_MODEL_WIDTH_MAX without signs,
 * blanks or leading zeros, separated by single commas, at most
 * PS_MODEL_LAYERS_MAX of them. e may be NULL. */
static int parse_hidden(const char *hidden, uint32_t width[PS_MODEL_LAYERS_MAX],
			unsigned *count, ps_err *e)
{
	const char *p = hidden;
	const char *why = NULL;
	unsigned k = 0;
	int rc = PS_OK;

	if (*p == '\0') {
		why = "an mlp needs at least one hidden layer";
		goto out;
	}
	for (;;) {
		uint32_t v = 0;

		if (*p < '0' || *p > '9') {
			why = "widths are decimal numbers separated by single commas";
			goto out;
		}
		if (*p == '0') {
			why = "widths are >= 1, written without leading zeros";
			goto out;
		}
		/* v stays <= PS_MODEL_WIDTH_MAX, so v * 10 + 9 cannot wrap. */
		for (; *p >= '0' && *p <= '9'; p++) {
			v = v * 10 + (uint32_t)(*p - '0');
			if (v > PS_MODEL_WIDTH_MAX) {
				why = "a width is above 65536";
				goto out;
			}
		}
		if (k == PS_MODEL_LAYERS_MAX) {
			why = "more than 8 hidden layers";
			goto out;
		}
		width[k++] = v;
		if (*p == '\0')
			break;
		if (*p != ',') {
			why = "widths are decimal numbers separated by single commas";
			goto out;
		}
		p++;
	}
	*count = k;
out:
	if (why)
		rc = ps_err_set(e, PS_EINVAL,
				"model 'mlp': bad hidden layers '%s': %s (e.g. \"256\" or \"256,128\")",
				hidden, why);
	return rc;
}

static int parse_activation(const char *name, enum mlp_activation *act)
{
	int rc = PS_OK;

	if (strcmp(name, "relu") == 0)
		*act = MLP_RELU;
	else if (strcmp(name, "tanh") == 0)
		*act = MLP_TANH;
	else
		rc = PS_EINVAL;
	return rc;
}

static int mlp_check(const ps_model_spec *spec, ps_err *e)
{
	uint32_t width[PS_MODEL_LAYERS_MAX];
	enum mlp_activation act;
	unsigned count;
	int rc;

	if (spec->output_dim < 2) {
		rc = ps_err_set(e, PS_EINVAL,
				"model 'mlp' needs output_dim >= 2 classes, got %u",
				(unsigned)spec->output_dim);
		goto out;
	}
	rc = parse_hidden(spec->hidden, width, &count, e);
	if (rc != PS_OK)
		goto out;
	rc = parse_activation(spec->activation, &act);
	if (rc != PS_OK)
		rc = ps_err_set(e, PS_EINVAL,
				"model 'mlp': activation must be 'relu' or 'tanh', got '%s'",
				spec->activation);
out:
	return rc;
}

/* Widths below 2^32 and at most 8 hidden layers of at most 2^16: every
 * term is below 2^49 and the sum below 2^53, so nothing wraps. */
static uint64_t mlp_num_params(const ps_model_spec *spec)
{
	uint32_t width[PS_MODEL_LAYERS_MAX];
	unsigned count = 0;
	uint64_t prev = spec->input_dim, total = 0;

	if (parse_hidden(spec->hidden, width, &count, NULL) != PS_OK)
		return UINT64_MAX; /* not reached: check() ran first */
	for (unsigned i = 0; i <= count; i++) {
		uint64_t out = i < count ? width[i] : spec->output_dim;
		total += (prev + 1) * out;
		prev = out;
	}
	return total;
}

static int mlp_setup(ps_model *m, ps_err *e)
{
	uint32_t width[PS_MODEL_LAYERS_MAX];
	struct mlp *net = NULL;
	unsigned count = 0;
	size_t off = 0;
	int rc;

	net = calloc(1, sizeof *net);
	if (!net) {
		rc = ps_err_set(e, PS_ENOMEM, "out of memory for model 'mlp'");
		goto out;
	}
	/* Both were accepted by check(): these cannot fail. */
	rc = parse_hidden(m->spec.hidden, width, &count, e);
	if (rc == PS_OK)
		rc = parse_activation(m->spec.activation, &net->act);
	if (rc != PS_OK)
		goto out;
	net->layers = count + 1;
	net->width[0] = m->spec.input_dim;
	for (unsigned l = 1; l <= count; l++) {
		net->width[l] = width[l - 1];
		if (net->width[l] > net->widest_hidden)
			net->widest_hidden = net->width[l];
	}
	net->width[net->layers] = m->spec.output_dim;
	for (unsigned l = 1; l <= net->layers; l++) {
		net->woff[l] = off;
		off += net->width[l] * net->width[l - 1];
		net->boff[l] = off;
		off += net->width[l];
		net->cum[l] = net->act_cols;
		net->act_cols += net->width[l];
	}
	m->priv = net;
	net = NULL;
out:
	free(net);
	return rc;
}

static void mlp_teardown(ps_model *m)
{
	free(m->priv);
	m->priv = NULL;
}

static void mlp_init(const ps_model *m, float *w)
{
	const struct mlp *net = m->priv;
	ps_rng rng;

	ps_rng_seed(&rng, m->spec.init_seed);
	for (unsigned l = 1; l <= net->layers; l++) {
		const size_t fan_in = net->width[l - 1];
		const size_t count = net->width[l] * fan_in;
		/* He for ReLU layers keeps the activations' second moment
		 * from layer to layer (half the units are off); tanh layers
		 * and the output layer, which is linear up to the softmax,
		 * want variance 1/fan_in. */
		const int relu = l < net->layers && net->act == MLP_RELU;
		const double scale = sqrt((relu ? 2.0 : 1.0) / (double)fan_in);
		float *wl = w + net->woff[l];

		for (size_t i = 0; i < count; i++)
			wl[i] = (float)(scale * ps_rng_normal(&rng));
		memset(w + net->boff[l], 0, net->width[l] * sizeof *w);
	}
}

/*
 * tanh from one expf: glibc's tanhf goes through expm1f and took 14-30 ns
 * a call here, against 3 for expf, which made a tanh network up to twice
 * as slow as a ReLU one of the same shape. For |v| >= 1/8,
 * tanh|v| = (1 - t) / (1 + t) with t = e^{-2|v|} <= e^{-1/4}, so 1 - t >=
 * 0.22 and t's rounding costs at most a few ulps; below 1/8 that
 * subtraction would cancel, and the Taylor series to v^7 is used instead
 * (the first term left out, 62/2835 v^9, is below 4e-10 |v| there).
 * Against double tanh over every 7th positive float: at most 3.6 ulp,
 * 9e-8 absolute. Large |v| gives t = 0 and exactly +-1; NaN stays NaN.
 */
static inline float tanh_fast(float v)
{
	float a = fabsf(v), t, r;

	if (a < 0.125f) {
		float v2 = v * v;
		r = v * (1.0f + v2 * (-1.0f / 3.0f +
				      v2 * (2.0f / 15.0f +
					    v2 * (-17.0f / 315.0f))));
	} else {
		t = expf(-2.0f * a);
		r = copysignf((1.0f - t) / (1.0f + t), v);
	}
	return r;
}

/*
 * The element loops below run over a body whose length is a multiple of
 * VBLOCK, then over the scalar tail: gcc -O2 vectorizes only a loop that
 * needs no scalar epilogue. Vectorized, ReLU and its derivative are
 * selects without branches; as branches on the sign of each element they
 * mispredicted on about half of them and took 14% of a trainer's time
 * (MLP 784-256-10, batch 64). The results are the same element by
 * element either way.
 */
#define VBLOCK 16

static void relu_bias(float *restrict row, const float *restrict b,
		      size_t s)
{
	size_t body = s & ~(size_t)(VBLOCK - 1);

	for (size_t j = 0; j < body; j++) {
		float v = row[j] + b[j];
		row[j] = v > 0.0f ? v : 0.0f;
	}
	for (size_t j = body; j < s; j++) {
		float v = row[j] + b[j];
		row[j] = v > 0.0f ? v : 0.0f;
	}
}

/* a = f(a + b) over n rows of width s, b broadcast along the rows. */
static void add_bias_activate(float *a, const float *b, size_t n, size_t s,
			      enum mlp_activation act)
{
	for (size_t i = 0; i < n; i++) {
		float *row = a + i * s;
		if (act == MLP_RELU) {
			relu_bias(row, b, s);
		} else {
			for (size_t j = 0; j < s; j++)
				row[j] = tanh_fast(row[j] + b[j]);
		}
	}
}

/* a = g * f'(z) over count elements, f' written in terms of a = f(z):
 * ReLU's is a > 0 (0 at the kink), tanh's is 1 - a^2. */
static void times_derivative(float *restrict a, const float *restrict g,
			     size_t count, enum mlp_activation act)
{
	size_t body = count & ~(size_t)(VBLOCK - 1);

	if (act == MLP_RELU) {
		/* g[i] read whether or not it is kept, so that the loop
		 * is a select. */
		for (size_t i = 0; i < body; i++) {
			float gi = g[i];
			a[i] = a[i] > 0.0f ? gi : 0.0f;
		}
		for (size_t i = body; i < count; i++) {
			float gi = g[i];
			a[i] = a[i] > 0.0f ? gi : 0.0f;
		}
	} else {
		for (size_t i = 0; i < body; i++)
			a[i] = g[i] * (1.0f - a[i] * a[i]);
		for (size_t i = body; i < count; i++)
			a[i] = g[i] * (1.0f - a[i] * a[i]);
	}
}

static int mlp_forward(ps_model *m, const float *w, const float *x,
		       const float *y, size_t n, double *loss_sum,
		       size_t *correct, uint32_t *pred)
{
	const struct mlp *net = m->priv;
	const unsigned top = net->layers;
	const size_t k = net->width[top];
	float *act = NULL;
	float *work = NULL;
	float *p;
	int rc = PS_OK;

	/* Before any work, so that a bad batch leaves no half-done state. */
	if (y)
		rc = ps_model_check_labels(y, n, m->spec.output_dim);
	if (rc != PS_OK)
		goto out;
	rc = ps_model_scratch(m, SLOT_ACT, n, net->act_cols, &act);
	if (rc != PS_OK)
		goto out;
	/* backward() cannot fail, so the room it needs is taken here. */
	rc = ps_model_scratch(m, SLOT_WORK, n, net->widest_hidden + 1, &work);
	if (rc != PS_OK)
		goto out;
	for (unsigned l = 1; l <= top; l++) {
		const int si = (int)net->width[l - 1];
		const int so = (int)net->width[l];
		const float *in = l == 1 ? x : act + n * net->cum[l - 1];
		float *z = act + n * net->cum[l];

		/* Z_l = A_{l-1} W_l^T; the bias joins in the loop after. */
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n,
			    so, si, 1.0f, in, si, w + net->woff[l], si, 0.0f,
			    z, so);
		if (l < top)
			add_bias_activate(z, w + net->boff[l], n, (size_t)so,
					  net->act);
	}
	p = act + n * net->cum[top];
	for (size_t i = 0; i < n; i++) {
		const float *bias = w + net->boff[top];
		for (size_t c = 0; c < k; c++)
			p[i * k + c] += bias[c];
	}
	ps_model_softmax_rows(p, n, k, y, pred, loss_sum, correct);
out:
	return rc;
}

static void mlp_backward(ps_model *m, const float *w, const float *x,
			 const float *y, size_t n, float *grad)
{
	const struct mlp *net = m->priv;
	const unsigned top = net->layers;
	const size_t k = net->width[top];
	const float scale = (float)(1.0 / (double)n);
	float *act = m->scratch[SLOT_ACT].p;
	float *tmp = m->scratch[SLOT_WORK].p;
	float *ones = tmp + n * net->widest_hidden;
	float *p = act + n * net->cum[top];

	/* dL/dZ_{L+1} = (P - Y) / n; the 1/n rides in the alpha of the
	 * gradient products, never in the signal passed down. */
	for (size_t i = 0; i < n; i++)
		p[i * k + (size_t)y[i]] -= 1.0f;
	for (size_t i = 0; i < n; i++)
		ones[i] = 1.0f;
	for (unsigned l = top; l >= 1; l--) {
		const int si = (int)net->width[l - 1];
		const int so = (int)net->width[l];
		/* This layer's error signal, in place of its output. */
		const float *d = act + n * net->cum[l];
		const float *in = l == 1 ? x : act + n * net->cum[l - 1];

		/* dW_l = D_l^T A_{l-1} / n */
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, so, si,
			    (int)n, scale, d, so, in, si, 0.0f,
			    grad + net->woff[l], si);
		/* db_l = D_l^T 1 / n: column sums, summed by BLAS. */
		cblas_sgemv(CblasRowMajor, CblasTrans, (int)n, so, scale, d, so,
			    ones, 1, 0.0f, grad + net->boff[l], 1);
		if (l == 1)
			break;
		/* D_{l-1} = (D_l W_l) * f'(Z_{l-1}), written over A_{l-1},
		 * which dW_l above was the last to read. */
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n,
			    si, so, 1.0f, d, so, w + net->woff[l], si, 0.0f,
			    tmp, si);
		times_derivative(act + n * net->cum[l - 1], tmp,
				 n * (size_t)si, net->act);
	}
}

const struct ps_model_ops ps_model_mlp_ops = {
	.name = "mlp",
	.classifier = 1,
	.takes_hidden = 1,
	.check = mlp_check,
	.num_params = mlp_num_params,
	.setup = mlp_setup,
	.teardown = mlp_teardown,
	.init = mlp_init,
	.forward = mlp_forward,
	.backward = mlp_backward,
};
