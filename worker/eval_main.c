/*
 * ps-eval: measure a saved model (the server's --model-out file) on a
 * dataset without a cluster: mean loss, accuracy and, for classifiers, the
 * confusion matrix, printed as a table and optionally written as JSON.
 * Options and output only; the measuring is ps_model_evaluate_confusion().
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "ps_cli.h"
#include "ps_dataset.h"
#include "ps_json.h"
#include "ps_model.h"
#include "ps_modelfile.h"

/* Wider than this many classes the matrix goes to --json only. */
#define PRINT_CLASSES_MAX 32

/* What the run measured, for the two outputs. */
struct result {
	const char *model_path;
	const char *data_spec;
	const ps_model_spec *spec;
	uint64_t version;
	size_t num_params;
	const ps_dataset *data;
	ps_model_eval ev;
	uint32_t k;          /* classes; 0 for a regression */
	uint64_t *confusion; /* k * k, or NULL */
};

/* Put "what: " in front of e's message. */
static int prefix(ps_err *e, const char *what)
{
	char msg[sizeof e->msg];

	snprintf(msg, sizeof msg, "%s", e->msg);
	return ps_err_set(e, e->code, "%s: %s", what, msg);
}

static const char *loss_name(const struct result *r)
{
	if (r->k == 0)
		return "mean of (y - prediction)^2 / 2";
	if (strcmp(r->spec->name, "logistic") == 0)
		return "mean binary cross-entropy";
	return "mean cross-entropy";
}

/* "784 -> 256 -> 128 -> 10": input, hidden layers, output. */
static void shape(const ps_model_spec *spec, char *buf, size_t size)
{
	size_t used = 0;
	int k = snprintf(buf, size, "%" PRIu32, spec->input_dim);

	/* The widths are checked digits and commas. */
	for (const char *c = spec->hidden; k >= 0 && *c; c++) {
		used += (size_t)k;
		if (used >= size)
			return;
		k = *c == ',' ? snprintf(buf + used, size - used, " -> ")
			      : snprintf(buf + used, size - used, "%s%c",
					 c == spec->hidden ? " -> " : "", *c);
	}
	if (k >= 0 && (used += (size_t)k) < size)
		snprintf(buf + used, size - used, " -> %" PRIu32,
			 spec->output_dim);
}

static int digits(uint64_t v)
{
	int d = 1;
	while (v >= 10) {
		v /= 10;
		d++;
	}
	return d;
}

/* Rows are the true class, columns the predicted one; the last column is
 * the row total and the recall (diagonal / row total), the last rows the
 * column totals and the precision (diagonal / column total). */
static void print_confusion(const struct result *r)
{
	const uint32_t k = r->k;
	const uint64_t *c = r->confusion;
	int width = 5;

	if (k > PRINT_CLASSES_MAX) {
		printf("\nconfusion matrix: %" PRIu32
		       " classes, too wide to print (see --json)\n",
		       k);
		return;
	}
	if (digits(r->ev.n) + 1 > width)
		width = digits(r->ev.n) + 1;
	printf("\nconfusion matrix (rows: true class, columns: predicted class)\n");
	printf("%9s", "true\\pred");
	for (uint32_t p = 0; p < k; p++)
		printf(" %*" PRIu32, width, p);
	printf(" | %*s  recall\n", width, "total");
	for (uint32_t t = 0; t < k; t++) {
		uint64_t total = 0;
		printf("%9" PRIu32, t);
		for (uint32_t p = 0; p < k; p++) {
			printf(" %*" PRIu64, width, c[(size_t)t * k + p]);
			total += c[(size_t)t * k + p];
		}
		printf(" | %*" PRIu64, width, total);
		if (total)
			printf("  %6.4f\n",
			       (double)c[(size_t)t * k + t] / (double)total);
		else
			printf("  %6s\n", "-");
	}
	printf("%9s", "total");
	for (uint32_t p = 0; p < k; p++) {
		uint64_t total = 0;
		for (uint32_t t = 0; t < k; t++)
			total += c[(size_t)t * k + p];
		printf(" %*" PRIu64, width, total);
	}
	printf(" | %*zu\n", width, r->ev.n);
	printf("%9s", "precision");
	for (uint32_t p = 0; p < k; p++) {
		uint64_t total = 0;
		for (uint32_t t = 0; t < k; t++)
			total += c[(size_t)t * k + p];
		if (total)
			printf(" %*.4f", width,
			       (double)c[(size_t)p * k + p] / (double)total);
		else
			printf(" %*s", width, "-");
	}
	printf("\n");
}

static void print_result(const struct result *r)
{
	const ps_model_spec *s = r->spec;
	char dims[4 * PS_MODEL_HIDDEN_MAX + 32];

	shape(s, dims, sizeof dims);
	printf("model     %s\n", r->model_path);
	printf("          %s %s", s->name, dims);
	if (s->activation[0])
		printf(", activation %s", s->activation);
	printf(", %zu parameters\n", r->num_params);
	printf("          version %" PRIu64 " (updates applied), init seed %" PRIu64
	       "\n",
	       r->version, s->init_seed);
	printf("data      %s: %zu rows of %zu features", r->data_spec,
	       r->data->n, r->data->dim);
	if (r->data->classes)
		printf(", %" PRIu32 " classes", r->data->classes);
	printf("\nloss      %.4f (%s)\n", r->ev.loss, loss_name(r));
	if (r->k) {
		uint64_t right = 0;
		for (uint32_t t = 0; t < r->k; t++)
			right += r->confusion[(size_t)t * r->k + t];
		printf("accuracy  %.4f (%" PRIu64 " of %zu)\n", r->ev.accuracy,
		       right, r->ev.n);
		print_confusion(r);
	}
}

static int write_json(const char *path, const struct result *r, ps_err *e)
{
	const ps_model_spec *s = r->spec;
	FILE *f = fopen(path, "w");

	if (!f)
		return ps_err_set(e, PS_EIO, "cannot write %s", path);
	fputs("{\n  \"model_file\": ", f);
	ps_json_string(f, r->model_path);
	fputs(",\n  \"model\": {\"name\": ", f);
	ps_json_string(f, s->name);
	fprintf(f, ", \"input_dim\": %" PRIu32 ", \"output_dim\": %" PRIu32
		   ", \"hidden\": ",
		s->input_dim, s->output_dim);
	ps_json_string(f, s->hidden);
	fputs(", \"activation\": ", f);
	ps_json_string(f, s->activation);
	fprintf(f, ", \"init_seed\": %" PRIu64 ", \"version\": %" PRIu64
		   ", \"num_params\": %zu},\n  \"data\": ",
		s->init_seed, r->version, r->num_params);
	ps_json_string(f, r->data_spec);
	fprintf(f, ",\n  \"rows\": %zu,\n  \"loss\": ", r->ev.n);
	ps_json_number(f, r->ev.loss);
	fputs(",\n  \"accuracy\": ", f);
	ps_json_number(f, r->ev.accuracy);
	fputs(",\n  \"confusion\": ", f);
	if (r->k) {
		fputs("[", f);
		for (uint32_t t = 0; t < r->k; t++) {
			fputs(t ? ",\n    [" : "\n    [", f);
			for (uint32_t p = 0; p < r->k; p++)
				fprintf(f, "%s%" PRIu64, p ? ", " : "",
					r->confusion[(size_t)t * r->k + p]);
			fputs("]", f);
		}
		fputs("\n  ]", f);
	} else {
		fputs("null", f);
	}
	fputs("\n}\n", f);
	if (fclose(f) != 0)
		return ps_err_set(e, PS_EIO, "cannot write %s", path);
	return PS_OK;
}

int main(int argc, char **argv)
{
	const char *model_path = NULL, *data_spec = NULL, *json_out = NULL;
	int batch = PS_MODEL_EVAL_CHUNK;
	const ps_cli_opt opts[] = {
		{"model-file", PS_CLI_STRING, &model_path, "PATH",
		 "the model to measure (a run's model.bin)", 0, -1, NULL},
		{"data", PS_CLI_STRING, &data_spec, "SPEC",
		 "dataset: fashion-mnist:train|test, idx:IMAGES,LABELS, "
		 "synthetic-linear:N[:SEED], ...; SPEC@A,B keeps two classes",
		 0, -1, NULL},
		{"batch", PS_CLI_INT, &batch, "N",
		 "rows per forward pass (memory: N times the layer widths)", 1,
		 1 << 24, NULL},
		{"json", PS_CLI_STRING, &json_out, "PATH",
		 "also write the figures (loss, accuracy, confusion matrix) here as JSON",
		 0, -1, NULL},
		{NULL, 0, NULL, NULL, NULL, 0, 0, NULL},
	};
	ps_model_spec spec;
	ps_dataset *data = NULL;
	ps_model *model = NULL;
	float *w = NULL;
	uint64_t version = 0, num_params = 0;
	struct result r = {0};
	ps_err e = {0};
	int rc, status = 1;

	rc = ps_cli_parse("ps-eval",
			  "Measure a saved model on a dataset, without a cluster: loss,\n"
			  "accuracy and, for classifiers, the confusion matrix.",
			  opts, argc, argv, &e);
	if (rc == PS_CLI_HELP)
		return 0;
	if (rc == PS_OK && !model_path)
		rc = ps_err_set(&e, PS_EINVAL,
				"--model-file is required (try --help)");
	if (rc == PS_OK && !data_spec)
		rc = ps_err_set(&e, PS_EINVAL, "--data is required (try --help)");
	if (rc != PS_OK) {
		fprintf(stderr, "ps-eval: %s\n", e.msg);
		return 2;
	}
	/* The evaluator measures with one BLAS thread; so does this, and the
	 * two agree to the last bit on the same weights and data. */
	openblas_set_num_threads(1);

	rc = ps_modelfile_read(model_path, &spec, &version, &w, &num_params,
			       &e);
	if (rc != PS_OK)
		goto out;
	rc = ps_model_new(&model, &spec, &e);
	if (rc != PS_OK) {
		prefix(&e, model_path);
		goto out;
	}
	if (num_params != ps_model_num_params(model)) {
		(void)ps_err_set(&e, PS_EFORMAT,
				 "%s: holds %" PRIu64
				 " weights, model '%s' has %zu parameters",
				 model_path, num_params, spec.name,
				 ps_model_num_params(model));
		goto out;
	}
	rc = ps_dataset_open(&data, data_spec, &e);
	if (rc != PS_OK)
		goto out;
	rc = ps_model_check_data(model, data, &e);
	if (rc != PS_OK) {
		prefix(&e, data_spec);
		goto out;
	}
	r.k = ps_model_num_classes(model);
	if (r.k) {
		r.confusion = calloc((size_t)r.k * r.k, sizeof *r.confusion);
		if (!r.confusion) {
			(void)ps_err_set(&e, PS_ENOMEM, "out of memory");
			goto out;
		}
	}
	rc = ps_model_evaluate_confusion(model, w, data, (size_t)batch, &r.ev,
					 r.confusion);
	if (rc != PS_OK) {
		ps_err_set(&e, rc, "evaluating %s on %s: %s", model_path,
			   data_spec, ps_strerror(rc));
		goto out;
	}
	r.model_path = model_path;
	r.data_spec = data_spec;
	r.spec = &spec;
	r.version = version;
	r.num_params = ps_model_num_params(model);
	r.data = data;
	print_result(&r);
	if (json_out)
		rc = write_json(json_out, &r, &e);
	if (rc == PS_OK)
		status = 0;
out:
	if (status != 0)
		fprintf(stderr, "ps-eval: %s\n", e.msg);
	free(r.confusion);
	free(w);
	ps_model_destroy(&model);
	ps_dataset_destroy(&data);
	return status;
}
