/*
 * ps-sgd-oracle: the correctness oracle of the consistency tests. One
 * process, no server: synchronous minibatch SGD over exactly the
 * minibatches the trainers of a cluster with the same options would use
 * (ps_plan), combined the way the server's bsp step combines them. With
 * --workers 1 it is plain sequential SGD, which is also what one
 * asynchronous trainer does. Writes the model file the server would.
 * Exit 0 on success, 1 on failure, 2 for bad options.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "ps_cli.h"
#include "ps_dataset.h"
#include "ps_log.h"
#include "ps_model.h"
#include "ps_modelfile.h"
#include "ps_optim.h"
#include "ps_plan.h"
#include "ps_worker.h"

/* Everything one run holds; released by oracle_free(). */
typedef struct oracle {
	ps_dataset *data;
	ps_model *model;
	ps_optim *optim;
	ps_plan **plans;  /* [workers] */
	float **grads;    /* [workers][n] */
	size_t *counts;   /* [workers] this step's batch size, 0: none */
	float *w, *mean, *bx, *by;
	uint32_t workers;
} oracle;

static void oracle_free(oracle *o)
{
	for (uint32_t r = 0; r < o->workers; r++) {
		if (o->plans)
			ps_plan_destroy(&o->plans[r]);
		if (o->grads)
			free(o->grads[r]);
	}
	free(o->plans);
	free(o->grads);
	free(o->counts);
	free(o->w);
	free(o->mean);
	free(o->bx);
	free(o->by);
	ps_optim_destroy(&o->optim);
	ps_model_destroy(&o->model);
	ps_dataset_destroy(&o->data);
}

/* One synchronous step: every rank that still has a minibatch computes
 * its gradient on the current weights; the step applies their
 * batch-size-weighted mean, with the server's bsp arithmetic (first share
 * times its gradient, the others added with saxpy, in rank order) as
 * update number t. *stepped is 0 when no rank had a batch left.
 * Errors: those of ps_model_loss_grad(). */
static int oracle_step(oracle *o, uint64_t t, int *stepped,
		       double *loss_mean, ps_err *e)
{
	size_t n = ps_model_num_params(o->model);
	uint64_t total = 0;
	double loss_sum = 0;
	int first = 1;

	for (uint32_t r = 0; r < o->workers; r++) {
		ps_plan_batch b;
		double loss;
		int rc;

		o->counts[r] = 0;
		if (!ps_plan_next(o->plans[r], &b))
			continue;
		ps_plan_gather(o->data, 0, &b, o->bx, o->by);
		rc = ps_model_loss_grad(o->model, o->w, o->bx, o->by, b.count,
					o->grads[r], &loss);
		if (rc != PS_OK)
			return ps_err_set(e, rc, "gradient of rank %u failed: %s",
					  r, ps_strerror(rc));
		o->counts[r] = b.count;
		total += b.count;
		loss_sum += loss * (double)b.count;
	}
	*stepped = total > 0;
	if (total == 0)
		return PS_OK;
	for (uint32_t r = 0; r < o->workers; r++) {
		float share;
		if (o->counts[r] == 0)
			continue;
		share = (float)((double)o->counts[r] / (double)total);
		if (first)
			for (size_t i = 0; i < n; i++)
				o->mean[i] = share * o->grads[r][i];
		else
			cblas_saxpy((int)n, share, o->grads[r], 1, o->mean, 1);
		first = 0;
	}
	ps_optim_apply_range(o->optim, o->w, o->mean, 0, n, t);
	*loss_mean = loss_sum / (double)total;
	return PS_OK;
}

int main(int argc, char **argv)
{
	static const char *const models[] = {"softmax", "linear", "mlp",
					     "logistic", NULL};
	static const char *const activations[] = {"relu", "tanh", NULL};
	static const char *const levels[] = {"error", "warn", "info", "debug",
					     NULL};
	const char *data = NULL, *model_out = NULL, *hidden = "256";
	int model = 0, activation = 0, workers = 1, epochs = 1, batch = 64;
	int classes = 0, optimizer = 0, schedule = 0, level = 1;
	uint64_t seed = 1;
	double val_fraction = 0, lr = 0.1, decay_steps = 1000, gamma = 0.5,
	       warmup = 0, momentum = 0.9, beta1 = 0.9, beta2 = 0.999,
	       eps = 1e-8, rho = 0.9, weight_decay = 0, l1 = 0;
	const ps_cli_opt opts[] = {
		{"data", PS_CLI_STRING, &data, "SPEC",
		 "training data, as for ps-worker (required)", 0, -1, NULL},
		{"model", PS_CLI_CHOICE, &model, "NAME", "model", 0, -1, models},
		{"hidden", PS_CLI_STRING, &hidden, "LIST",
		 "mlp: hidden layer widths", 0, -1, NULL},
		{"activation", PS_CLI_CHOICE, &activation, "NAME",
		 "mlp: hidden activation", 0, -1, activations},
		{"classes", PS_CLI_INT, &classes, "K",
		 "classes (0: from the data)", 0, 1000000, NULL},
		{"workers", PS_CLI_INT, &workers, "N",
		 "trainers whose minibatches each step combines", 1, 65535,
		 NULL},
		{"epochs", PS_CLI_INT, &epochs, "E", "passes over each shard", 0,
		 1000000, NULL},
		{"batch", PS_CLI_INT, &batch, "B", "minibatch size", 1, 1000000,
		 NULL},
		{"seed", PS_CLI_U64, &seed, "S",
		 "seed of initialization and shuffling", 0, -1, NULL},
		{"val-fraction", PS_CLI_DOUBLE, &val_fraction, "F",
		 "the last fraction F of the data is held out (not trained on)",
		 0, 0.9, NULL},
		{"optimizer", PS_CLI_CHOICE, &optimizer, "NAME",
		 "optimizer, as ps-server's", 0, -1, ps_optim_names},
		{"lr", PS_CLI_DOUBLE, &lr, "RATE", "learning rate", 1e-12, 1e6,
		 NULL},
		{"lr-schedule", PS_CLI_CHOICE, &schedule, "NAME",
		 "learning-rate schedule over the step count", 0, -1,
		 ps_lr_schedule_names},
		{"lr-decay-steps", PS_CLI_DOUBLE, &decay_steps, "D",
		 "steps per decay period", 1e-9, 1e18, NULL},
		{"lr-gamma", PS_CLI_DOUBLE, &gamma, "G", "decay factor", 1e-12,
		 1, NULL},
		{"lr-warmup", PS_CLI_DOUBLE, &warmup, "W",
		 "linear warm-up steps", 0, 1e18, NULL},
		{"momentum", PS_CLI_DOUBLE, &momentum, "MU", "momentum, nesterov",
		 0, 1, NULL},
		{"beta1", PS_CLI_DOUBLE, &beta1, "B1", "adam, adamw", 0, 1, NULL},
		{"beta2", PS_CLI_DOUBLE, &beta2, "B2", "adam, adamw", 0, 1, NULL},
		{"rho", PS_CLI_DOUBLE, &rho, "RHO", "rmsprop", 0, 1, NULL},
		{"eps", PS_CLI_DOUBLE, &eps, "EPS",
		 "adagrad, rmsprop, adam, adamw", 1e-30, 1, NULL},
		{"weight-decay", PS_CLI_DOUBLE, &weight_decay, "WD", "L2", 0,
		 1e6, NULL},
		{"l1", PS_CLI_DOUBLE, &l1, "L1", "L1", 0, 1e6, NULL},
		{"model-out", PS_CLI_STRING, &model_out, "PATH",
		 "write the trained model here (ps-server's format)", 0, -1,
		 NULL},
		{"log-level", PS_CLI_CHOICE, &level, "LEVEL", "log verbosity", 0,
		 -1, levels},
		{NULL, 0, NULL, NULL, NULL, 0, 0, NULL},
	};
	ps_worker_config wc;
	ps_optim_config oc;
	ps_model_spec spec;
	oracle o;
	ps_err e = {0};
	uint64_t t = 0;
	double loss = 0;
	size_t n = 0;
	int rc, status = 1;

	memset(&o, 0, sizeof o);
	rc = ps_cli_parse("ps-sgd-oracle",
			  "Synchronous minibatch SGD over the minibatches a cluster's trainers\n"
			  "would use: the reference bsp and one async trainer must match.",
			  opts, argc, argv, &e);
	if (rc == PS_CLI_HELP)
		return 0;
	if (rc == PS_OK && !data)
		rc = ps_err_set(&e, PS_EINVAL, "--data is required");
	if (rc != PS_OK) {
		fprintf(stderr, "ps-sgd-oracle: %s\n", e.msg);
		return 2;
	}
	ps_log_setup("oracle", (enum ps_log_level)level);
	/* As ps-worker: one BLAS thread, so that the gradients are computed
	 * with the same kernels and summation order. */
	openblas_set_num_threads(1);

	memset(&oc, 0, sizeof oc);
	oc.kind = (enum ps_optim_kind)optimizer;
	oc.lr = lr;
	oc.schedule = (enum ps_lr_schedule)schedule;
	oc.decay_steps = decay_steps;
	oc.gamma = gamma;
	oc.warmup = warmup;
	oc.momentum = momentum;
	oc.beta1 = beta1;
	oc.beta2 = beta2;
	oc.rho = rho;
	oc.eps = eps;
	oc.weight_decay = weight_decay;
	oc.l1 = l1;

	memset(&wc, 0, sizeof wc);
	wc.data = data;
	wc.model = models[model];
	wc.hidden = hidden;
	wc.activation = activations[activation];
	wc.classes = (uint32_t)classes;
	wc.seed = seed;

	o.workers = (uint32_t)workers;
	rc = ps_dataset_open(&o.data, data, &e);
	if (rc == PS_OK)
		rc = ps_worker_model_spec(&wc, o.data, &spec, &e);
	if (rc == PS_OK)
		rc = ps_model_new(&o.model, &spec, &e);
	if (rc != PS_OK)
		goto out;
	n = ps_model_num_params(o.model);
	rc = ps_optim_new(&o.optim, n, &oc, &e);
	if (rc != PS_OK)
		goto out;
	o.plans = calloc(o.workers, sizeof *o.plans);
	o.grads = calloc(o.workers, sizeof *o.grads);
	o.counts = calloc(o.workers, sizeof *o.counts);
	o.w = malloc(n * sizeof *o.w);
	o.mean = malloc(n * sizeof *o.mean);
	o.bx = malloc((size_t)batch * o.data->dim * sizeof *o.bx);
	o.by = malloc((size_t)batch * sizeof *o.by);
	if (!o.plans || !o.grads || !o.counts || !o.w || !o.mean || !o.bx ||
	    !o.by) {
		rc = ps_err_set(&e, PS_ENOMEM, "out of memory");
		goto out;
	}
	for (uint32_t r = 0; r < o.workers; r++) {
		ps_plan_config pc = {.rows = o.data->n,
				     .val_fraction = val_fraction,
				     .rank = r,
				     .num_workers = o.workers,
				     .seed = seed,
				     .batch = (uint32_t)batch,
				     .epochs = (uint32_t)epochs};
		rc = ps_plan_new(&o.plans[r], &pc, &e);
		if (rc != PS_OK)
			goto out;
		o.grads[r] = malloc(n * sizeof *o.grads[r]);
		if (!o.grads[r]) {
			rc = ps_err_set(&e, PS_ENOMEM, "out of memory");
			goto out;
		}
	}
	ps_model_init(o.model, o.w);
	for (;;) {
		int stepped = 0;
		rc = oracle_step(&o, t, &stepped, &loss, &e);
		if (rc != PS_OK)
			goto out;
		if (!stepped)
			break;
		t++;
	}
	printf("ps-sgd-oracle: %" PRIu64 " steps of %u trainer(s), last loss %.6g\n",
	       t, o.workers, loss);
	if (model_out)
		rc = ps_modelfile_write(model_out, &spec, t, o.w, n, &e);
	if (rc == PS_OK)
		status = 0;
out:
	if (rc != PS_OK)
		fprintf(stderr, "ps-sgd-oracle: %s\n", e.msg);
	oracle_free(&o);
	return status;
}
