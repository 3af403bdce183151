/*
 * ps_model: the public face of the models. Checks specs, picks the kind's
 * ps_model_ops from a registry, owns the scratch buffers, and builds
 * loss_grad, evaluate and predict out of the kinds' forward and backward
 * passes.
 */
#include "ps_model_impl.h"

#include <assert.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Adding a kind: define its ops in its own file, list it here. */
static const struct ps_model_ops *const registry[] = {
	&ps_model_linear_ops,
	&ps_model_logistic_ops,
	&ps_model_softmax_ops,
	&ps_model_mlp_ops,
};

#define REGISTRY_LEN (sizeof registry / sizeof registry[0])

static const struct ps_model_ops *find_ops(const char *name)
{
	const struct ps_model_ops *ops = NULL;

	for (size_t i = 0; i < REGISTRY_LEN; i++) {
		if (strcmp(registry[i]->name, name) == 0) {
			ops = registry[i];
			break;
		}
	}
	return ops;
}

static void known_names(char *buf, size_t size)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < REGISTRY_LEN && used < size; i++) {
		int k = snprintf(buf + used, size - used, "%s%s",
				 i ? ", " : "", registry[i]->name);
		if (k < 0)
			break;
		used += (size_t)k;
	}
}

/* Everything about a spec that does not depend on the kind, then the
 * kind's own rules, then the size: in that order so that the message names
 * the first thing a user has to fix. */
static int check_spec(const ps_model_spec *spec,
		      const struct ps_model_ops **opsp, uint64_t *countp,
		      ps_err *e)
{
	const struct ps_model_ops *ops = NULL;
	char known[128];
	uint64_t count = 0;
	int rc = PS_OK;

	/* The spec arrives off the wire: an unterminated name must not send
	 * strcmp past the array. */
	if (!memchr(spec->name, '\0', sizeof spec->name)) {
		rc = ps_err_set(e, PS_EINVAL,
				"model name is not NUL-terminated within %zu bytes",
				sizeof spec->name);
		goto out;
	}
	if (!memchr(spec->hidden, '\0', sizeof spec->hidden)) {
		rc = ps_err_set(e, PS_EINVAL,
				"model hidden-layer string is not NUL-terminated within %zu bytes",
				sizeof spec->hidden);
		goto out;
	}
	if (!memchr(spec->activation, '\0', sizeof spec->activation)) {
		rc = ps_err_set(e, PS_EINVAL,
				"model activation is not NUL-terminated within %zu bytes",
				sizeof spec->activation);
		goto out;
	}
	ops = find_ops(spec->name);
	if (!ops) {
		known_names(known, sizeof known);
		rc = ps_err_set(e, PS_EINVAL,
				"unknown model '%s' (known models: %s)",
				spec->name, known);
		goto out;
	}
	if (spec->input_dim == 0) {
		rc = ps_err_set(e, PS_EINVAL, "model '%s': input_dim is 0",
				spec->name);
		goto out;
	}
	if (spec->output_dim == 0) {
		rc = ps_err_set(e, PS_EINVAL, "model '%s': output_dim is 0",
				spec->name);
		goto out;
	}
	if (!ops->takes_hidden && spec->hidden[0] != '\0') {
		rc = ps_err_set(e, PS_EINVAL,
				"model '%s' has no hidden layers, but hidden is '%s'",
				spec->name, spec->hidden);
		goto out;
	}
	if (!ops->takes_hidden && spec->activation[0] != '\0') {
		rc = ps_err_set(e, PS_EINVAL,
				"model '%s' has no hidden layers, but activation is '%s'",
				spec->name, spec->activation);
		goto out;
	}
	rc = ops->check(spec, e);
	if (rc != PS_OK)
		goto out;
	count = ops->num_params(spec);
	if (count > PS_MODEL_PARAMS_MAX) {
		if (count == UINT64_MAX)
			rc = ps_err_set(e, PS_EINVAL,
					"model '%s' with input_dim %" PRIu32
					"%s%s%s and output_dim %" PRIu32
					": parameter count overflows",
					spec->name, spec->input_dim,
					*spec->hidden ? ", hidden '" : "",
					spec->hidden, *spec->hidden ? "'" : "",
					spec->output_dim);
		else
			rc = ps_err_set(e, PS_EINVAL,
					"model '%s' with input_dim %" PRIu32
					"%s%s%s and output_dim %" PRIu32
					" has %" PRIu64
					" parameters; at most %" PRIu64
					" are supported",
					spec->name, spec->input_dim,
					*spec->hidden ? ", hidden '" : "",
					spec->hidden, *spec->hidden ? "'" : "",
					spec->output_dim, count,
					PS_MODEL_PARAMS_MAX);
		goto out;
	}
	/* The cap is what lets every kind hand dimensions to CBLAS as int. */
	assert(spec->input_dim <= INT_MAX && spec->output_dim <= INT_MAX);
	*opsp = ops;
	*countp = count;
out:
	return rc;
}

int ps_model_new(ps_model **out, const ps_model_spec *spec, ps_err *e)
{
	ps_model *m = NULL;
	const struct ps_model_ops *ops = NULL;
	uint64_t count = 0;
	int rc;

	assert(out && spec);
	rc = check_spec(spec, &ops, &count, e);
	if (rc != PS_OK)
		goto out;
	m = calloc(1, sizeof *m);
	if (!m) {
		rc = ps_err_set(e, PS_ENOMEM, "out of memory for model '%s'",
				spec->name);
		goto out;
	}
	m->spec = *spec;
	m->ops = ops;
	m->num_params = (size_t)count;
	if (ops->setup) {
		rc = ops->setup(m, e);
		if (rc != PS_OK)
			goto out;
	}
	*out = m;
	m = NULL;
out:
	ps_model_destroy(&m);
	return rc;
}

void ps_model_destroy(ps_model **mp)
{
	ps_model *m;

	if (!mp || !*mp)
		return;
	m = *mp;
	if (m->ops->teardown)
		m->ops->teardown(m);
	for (unsigned i = 0; i < PS_MODEL_SCRATCH_SLOTS; i++)
		free(m->scratch[i].p);
	free(m);
	*mp = NULL;
}

const ps_model_spec *ps_model_get_spec(const ps_model *m)
{
	return &m->spec;
}

size_t ps_model_num_params(const ps_model *m)
{
	return m->num_params;
}

void ps_model_init(const ps_model *m, float *w)
{
	m->ops->init(m, w);
}

int ps_model_scratch(ps_model *m, unsigned slot, size_t rows, size_t cols,
		     float **out)
{
	struct ps_model_scratch *s;
	float *p = NULL;
	size_t need;
	int rc = PS_OK;

	assert(slot < PS_MODEL_SCRATCH_SLOTS);
	s = &m->scratch[slot];
	if (cols != 0 && rows > SIZE_MAX / sizeof(float) / cols) {
		rc = PS_ENOMEM;
		goto out;
	}
	need = rows * cols;
	if (need > s->cap) {
		/* The old contents are dead, so malloc+free rather than
		 * realloc (which would copy them); the old buffer survives a
		 * failure so the slot stays consistent. */
		p = malloc(need * sizeof(float));
		if (!p) {
			rc = PS_ENOMEM;
			goto out;
		}
		free(s->p);
		s->p = p;
		s->cap = need;
	}
	*out = s->p;
out:
	return rc;
}

int ps_model_check_labels(const float *y, size_t n, uint32_t classes)
{
	int rc = PS_OK;

	for (size_t i = 0; i < n; i++) {
		float v = y[i];
		/* Written so that NaN fails the range test too. */
		if (!(v >= 0.0f && v < (float)classes) || v != floorf(v)) {
			rc = PS_EINVAL;
			break;
		}
	}
	return rc;
}

int ps_model_loss_grad(ps_model *m, const float *w, const float *x,
		       const float *y, size_t n, float *grad, double *loss)
{
	double sum = 0.0;
	size_t correct = 0;
	int rc;

	assert(m && w && x && y && grad && loss);
	/* CBLAS counts rows in int; larger batches are not minibatches. */
	if (n == 0 || n > INT_MAX) {
		rc = PS_EINVAL;
		goto out;
	}
	rc = m->ops->forward(m, w, x, y, n, &sum, &correct, NULL);
	if (rc != PS_OK)
		goto out;
	m->ops->backward(m, w, x, y, n, grad);
	*loss = sum / (double)n;
out:
	return rc;
}

uint32_t ps_model_num_classes(const ps_model *m)
{
	if (!m->ops->classifier)
		return 0;
	/* One output is the probability of class 1 (logistic). */
	return m->spec.output_dim == 1 ? 2 : m->spec.output_dim;
}

int ps_model_check_data(const ps_model *m, const ps_dataset *d, ps_err *e)
{
	uint32_t k = ps_model_num_classes(m);
	int rc = PS_OK;

	if (d->dim != m->spec.input_dim)
		rc = ps_err_set(e, PS_EINVAL,
				"model expects %" PRIu32 " features, data has %zu",
				m->spec.input_dim, d->dim);
	else if (d->n == 0)
		rc = ps_err_set(e, PS_EINVAL, "data has no rows");
	else if (k > 0 && d->classes == 0)
		rc = ps_err_set(e, PS_EINVAL,
				"model '%s' is a classifier, but the data has no class labels",
				m->spec.name);
	else if (k > 0 && d->classes > k)
		rc = ps_err_set(e, PS_EINVAL,
				"model '%s' tells %" PRIu32
				" classes apart, data has %" PRIu32 " classes",
				m->spec.name, k, d->classes);
	return rc;
}

/* Evaluation and prediction run the forward pass over `rows` rows at a
 * time, so that the scratch stays at one chunk's worth (rows * output_dim
 * floats for softmax, rows * the layer widths for mlp) whatever the
 * dataset. */
int ps_model_predict(ps_model *m, const float *w, const float *x, size_t n,
		     uint32_t *pred)
{
	size_t dim;
	double unused_sum = 0.0;
	size_t unused_correct = 0;
	int rc = PS_OK;

	assert(m && w && x && pred);
	dim = m->spec.input_dim;
	if (!m->ops->classifier || n == 0) {
		rc = PS_EINVAL;
		goto out;
	}
	for (size_t begin = 0; begin < n; begin += PS_MODEL_EVAL_CHUNK) {
		size_t rows = n - begin;
		if (rows > PS_MODEL_EVAL_CHUNK)
			rows = PS_MODEL_EVAL_CHUNK;
		/* No labels: classify only; the sums get nothing. */
		rc = m->ops->forward(m, w, x + begin * dim, NULL, rows,
				     &unused_sum, &unused_correct,
				     pred + begin);
		if (rc != PS_OK)
			goto out;
	}
out:
	return rc;
}

int ps_model_evaluate_confusion(ps_model *m, const float *w,
				const ps_dataset *d, size_t rows,
				ps_model_eval *out, uint64_t *confusion)
{
	uint32_t k;
	uint32_t *pred = NULL;
	double sum = 0.0;
	size_t correct = 0;
	int rc = PS_OK;

	assert(m && w && d && out);
	k = ps_model_num_classes(m);
	if (rows == 0)
		rows = PS_MODEL_EVAL_CHUNK;
	if (d->n == 0 || d->dim != m->spec.input_dim || rows > INT_MAX ||
	    (confusion && k == 0)) {
		rc = PS_EINVAL;
		goto out;
	}
	if (rows > d->n)
		rows = d->n;
	if (confusion) {
		pred = malloc(rows * sizeof *pred);
		if (!pred) {
			rc = PS_ENOMEM;
			goto out;
		}
		memset(confusion, 0, (size_t)k * k * sizeof *confusion);
	}
	for (size_t begin = 0; begin < d->n; begin += rows) {
		size_t len = d->n - begin < rows ? d->n - begin : rows;
		const float *y = d->y + begin;

		rc = m->ops->forward(m, w, d->x + begin * d->dim, y, len, &sum,
				     &correct, pred);
		if (rc != PS_OK)
			goto out;
		/* forward() checked every label against the classes. */
		for (size_t i = 0; pred && i < len; i++)
			confusion[(size_t)y[i] * k + pred[i]]++;
	}
	out->loss = sum / (double)d->n;
	out->accuracy = m->ops->classifier ? (double)correct / (double)d->n
					   : NAN;
	out->n = d->n;
out:
	free(pred);
	return rc;
}

int ps_model_evaluate(ps_model *m, const float *w, const ps_dataset *d,
		      ps_model_eval *out)
{
	return ps_model_evaluate_confusion(m, w, d, 0, out, NULL);
}

void ps_model_softmax_rows(float *p, size_t n, size_t k, const float *y,
			   uint32_t *pred, double *loss_sum, size_t *correct)
{
	double sum = 0.0;
	size_t hits = 0;

	for (size_t i = 0; i < n; i++) {
		float *row = p + i * k;
		size_t label, best = 0;
		float zmax = row[0], zlabel;
		double z = 0.0;

		for (size_t c = 1; c < k; c++) {
			if (row[c] > zmax) {
				zmax = row[c];
				best = c;
			}
		}
		if (pred)
			pred[i] = (uint32_t)best;
		if (!y)
			continue;
		label = (size_t)y[i];
		hits += best == label;
		zlabel = row[label] - zmax;
		for (size_t c = 0; c < k; c++) {
			row[c] = expf(row[c] - zmax);
			z += row[c];
		}
		sum += log(z) - (double)zlabel;
		for (size_t c = 0; c < k; c++)
			row[c] = (float)((double)row[c] / z);
	}
	*loss_sum += sum;
	*correct += hits;
}
