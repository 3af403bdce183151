/*
 * ps_worker: training and evaluation loops. A step sends its push and
 * then its pull back to back, so the two share one round trip: the server
 * answers in order, and the weights it returns already hold the push.
 */
#include "ps_worker.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ps_client.h"
#include "ps_clip.h"
#include "ps_dataset.h"
#include "ps_json.h"
#include "ps_log.h"
#include "ps_model.h"
#include "ps_modelfile.h"
#include "ps_plan.h"
#include "ps_transport.h"
#include "ps_worker_metrics.h"

int ps_worker_model_spec(const ps_worker_config *cfg, const ps_dataset *d,
			 ps_model_spec *spec, ps_err *e)
{
	memset(spec, 0, sizeof *spec);
	if (strlen(cfg->model) >= sizeof spec->name)
		return ps_err_set(e, PS_EINVAL, "model name too long: %s",
				  cfg->model);
	strcpy(spec->name, cfg->model);
	spec->input_dim = (uint32_t)d->dim;
	spec->init_seed = cfg->seed;
	if (strcmp(cfg->model, "linear") == 0 ||
	    strcmp(cfg->model, "logistic") == 0) {
		spec->output_dim = 1;
	} else {
		spec->output_dim = cfg->classes ? cfg->classes : d->classes;
		if (spec->output_dim == 0)
			return ps_err_set(e, PS_EINVAL,
					  "model %s needs class labels, but %s is a regression dataset",
					  cfg->model, cfg->data);
	}
	if (strcmp(cfg->model, "logistic") == 0 && d->classes != 2)
		return ps_err_set(e, PS_EINVAL,
				  "model logistic needs labels 0 and 1, but %s has %u classes (keep two with %s@A,B)",
				  cfg->data, (unsigned)d->classes, cfg->data);
	/* Only the kinds with layers take these: the others must send "". */
	if (strcmp(cfg->model, "mlp") == 0) {
		if (strlen(cfg->hidden) >= sizeof spec->hidden)
			return ps_err_set(e, PS_EINVAL,
					  "--hidden '%.80s' longer than %zu characters",
					  cfg->hidden, sizeof spec->hidden - 1);
		if (strlen(cfg->activation) >= sizeof spec->activation)
			return ps_err_set(e, PS_EINVAL,
					  "--activation '%.80s' too long",
					  cfg->activation);
		strcpy(spec->hidden, cfg->hidden);
		strcpy(spec->activation, cfg->activation);
	}
	return PS_OK;
}

/* Load data (only the rows rows picks, or all when NULL) and model and
 * say hello. */
static int setup(const ps_worker_config *cfg, enum ps_role role,
		 ps_dataset_rows *rows, ps_dataset **data, ps_model **model,
		 ps_client **client, ps_msg_welcome *welcome, ps_err *e)
{
	ps_model_spec spec;
	int rc;

	rc = rows ? ps_dataset_open_rows(data, cfg->data, rows, e)
		  : ps_dataset_open(data, cfg->data, e);
	if (rc != PS_OK)
		return rc;
	rc = ps_worker_model_spec(cfg, *data, &spec, e);
	if (rc == PS_OK)
		rc = ps_model_new(model, &spec, e);
	if (rc == PS_OK)
		rc = ps_client_new_curve(client, cfg->endpoint, cfg->timeout,
					 cfg->max_inflight, cfg->curve, e);
	if (rc == PS_OK)
		rc = ps_client_hello(*client, role, cfg->rank, &spec, welcome,
				     e);
	if (rc == PS_OK && welcome->num_params != ps_model_num_params(*model))
		rc = ps_err_set(e, PS_EPROTO,
				"server holds %" PRIu64
				" parameters, this model has %zu",
				welcome->num_params,
				ps_model_num_params(*model));
	if (rc == PS_OK && (welcome->begin != 0 ||
			    welcome->end != welcome->num_params))
		rc = ps_err_set(e, PS_EPROTO,
				"server owns only [%" PRIu64 ", %" PRIu64
				"); several shards are not supported yet",
				welcome->begin, welcome->end);
	return rc;
}

static void sleep_seconds(double s)
{
	struct timespec ts;
	ts.tv_sec = (time_t)s;
	ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
	nanosleep(&ts, NULL);
}

/* Downpour: push the accumulated gradient sum and start a new one. */
static int push_sum(ps_client *client, float *acc, size_t n,
		    uint64_t base_version, uint32_t *batch, uint32_t *steps,
		    double *loss, uint64_t *pushes, ps_err *e)
{
	int rc = ps_client_push(client, acc, 0, n, base_version, *batch,
				(float)(*loss / *steps), *pushes, e);
	if (rc != PS_OK)
		return rc;
	(*pushes)++;
	memset(acc, 0, n * sizeof *acc);
	*batch = 0;
	*steps = 0;
	*loss = 0;
	return PS_OK;
}

int ps_worker_check(const ps_worker_config *cfg, ps_err *e)
{
	ps_dataset *data = NULL, *val = NULL;
	ps_model *model = NULL;
	ps_model_spec spec;
	int rc = ps_dataset_open(&data, cfg->data, e);

	if (rc == PS_OK)
		rc = ps_worker_model_spec(cfg, data, &spec, e);
	if (rc == PS_OK)
		rc = ps_model_new(&model, &spec, e);
	if (rc == PS_OK && cfg->val_data) {
		rc = ps_dataset_open(&val, cfg->val_data, e);
		if (rc == PS_OK && val->dim != data->dim)
			rc = ps_err_set(e, PS_EINVAL,
					"%s has %zu features per row, %s has %zu",
					cfg->val_data, val->dim, cfg->data,
					data->dim);
	}
	if (rc == PS_OK && cfg->val_fraction > 0 &&
	    ps_plan_held_out(cfg->val_data ? val->n : data->n,
			     cfg->val_fraction) == 0)
		rc = ps_err_set(e, PS_EINVAL,
				"--val-fraction %g holds out no row", cfg->val_fraction);
	if (rc == PS_OK)
		printf("ok: %s: %zu rows of %zu features; model %s, %zu parameters\n",
		       cfg->data, data->n, data->dim, spec.name,
		       ps_model_num_params(model));
	ps_model_destroy(&model);
	ps_dataset_destroy(&val);
	ps_dataset_destroy(&data);
	return rc;
}

/* The trainer's shard of a training set of n rows, as its plan will cut
 * it: only those rows are loaded. A configuration the plan will refuse
 * keeps them all, for ps_plan_new() to say what is wrong. */
static void pick_shard(size_t n, void *arg, size_t *begin, size_t *end)
{
	ps_plan_config pc = *(const ps_plan_config *)arg;

	*begin = 0;
	*end = n;
	pc.rows = n;
	if (pc.num_workers > 0 && pc.rank < pc.num_workers &&
	    pc.val_fraction >= 0 && pc.val_fraction < 1)
		ps_plan_shard_range(&pc, begin, end);
}

int ps_worker_train(const ps_worker_config *cfg, ps_err *e)
{
	ps_dataset *all = NULL;
	ps_dataset_rows rows;
	ps_plan *plan = NULL;
	ps_plan_config pc;
	ps_plan_batch batch;
	ps_model *model = NULL;
	ps_client *client = NULL;
	ps_msg_welcome welcome;
	/* w: the client's weights of the last pull, used where they
	 * arrived; g: the client's buffer for the next push. Neither is
	 * copied on its way. */
	float *w = NULL, *g = NULL, *bx = NULL, *by = NULL;
	size_t begin, end, dim;
	uint64_t version = 0, steps = 0, samples = 0;
	double t0, last_report, loss_sum = 0;
	uint64_t loss_n = 0, clipped_norm = 0, clipped_value = 0;
	uint64_t pushes = 0, acc_version = 0;
	uint64_t own_steps = 0; /* prefetch: own pushes added locally */
	float *acc = NULL;
	uint32_t acc_batch = 0, acc_steps = 0;
	double acc_loss = 0;
	ps_worker_metrics *wm = NULL;
	uint32_t epoch = 0;
	int rc;

	/* Only the shard is loaded: the rest of the set never takes memory
	 * (an IDX set) or goes once loaded (the others). */
	pc = (ps_plan_config){.val_fraction = cfg->val_fraction,
			      .rank = cfg->rank,
			      .num_workers = cfg->num_workers,
			      .seed = cfg->seed,
			      .batch = cfg->batch,
			      .epochs = cfg->epochs};
	rows = (ps_dataset_rows){.pick = pick_shard, .arg = &pc};
	rc = setup(cfg, PS_ROLE_WORKER, &rows, &all, &model, &client,
		   &welcome, e);
	if (rc != PS_OK)
		goto out;
	pc.rows = rows.total;
	rc = ps_plan_new(&plan, &pc, e);
	if (rc != PS_OK)
		goto out;
	if (cfg->metrics_out) {
		rc = ps_worker_metrics_open(&wm, cfg->metrics_out,
					    cfg->metrics_every, cfg->rank,
					    cfg->epochs, ps_plan_steps(plan), e);
		if (rc != PS_OK)
			goto out;
	}
	ps_plan_shard(plan, &begin, &end);
	dim = all->dim;
	if (begin == end) {
		ps_log_warn("shard %u of %u is empty: nothing to train on",
			    cfg->rank, cfg->num_workers);
	}
	/* One rule (ps_plan_shard_range()) cut both. */
	assert(rows.first == begin && all->n == end - begin);
	ps_log_debug("holding rows [%zu, %zu) of %zu, %.1f MB", begin, end,
		     rows.total,
		     (double)(end - begin) * (double)(dim + 1) * sizeof(float) /
			     1e6);
	bx = malloc((size_t)cfg->batch * dim * sizeof *bx);
	by = malloc((size_t)cfg->batch * sizeof *by);
	if (cfg->push_every > 1)
		acc = calloc(welcome.num_params, sizeof *acc);
	if (!bx || !by || (cfg->push_every > 1 && !acc)) {
		rc = ps_err_set(e, PS_ENOMEM, "out of memory");
		goto out;
	}
	ps_log_info("rank %u of %u: rows [%zu, %zu) of %s, %u epochs, batch %u",
		    cfg->rank, cfg->num_workers, begin, end, cfg->data,
		    cfg->epochs, cfg->batch);

	rc = ps_client_pull(client, NULL, 0, welcome.num_params, 0, &version,
			    NULL, e);
	if (rc != PS_OK)
		goto out;
	w = ps_client_weights(client);
	if (cfg->prefetch) {
		rc = ps_client_pull_start(client, NULL, 0, welcome.num_params,
					  pushes, e);
		if (rc != PS_OK)
			goto out;
	}
	t0 = last_report = ps_now();
	while (ps_plan_next(plan, &batch)) {
		size_t b = batch.count;
		double loss;
		if (cfg->stop && *cfg->stop) {
			rc = ps_err_set(e, PS_EINTR, "stopped by a signal");
			goto out;
		}
		ps_plan_gather(all, begin, &batch, bx, by);
		g = ps_client_grad_buffer(client, 0, welcome.num_params);
		if (!g) {
			rc = ps_err_set(e, PS_ENOMEM, "out of memory");
			goto out;
		}
		rc = ps_model_loss_grad(model, w, bx, by, b, g, &loss);
		if (rc != PS_OK) {
			ps_err_set(e, rc, "gradient failed: %s",
				   ps_strerror(rc));
			goto out;
		}
		if (cfg->clip_value > 0 &&
		    ps_clip_value(g, welcome.num_params,
				  cfg->clip_value) > 0)
			clipped_value++;
		if (cfg->clip_norm > 0 &&
		    ps_clip_norm(g, welcome.num_params,
				 cfg->clip_norm) > cfg->clip_norm)
			clipped_norm++;
		if (cfg->step_delay > 0)
			sleep_seconds(cfg->step_delay);
		steps++;
		samples += b;
		if (acc) {
			/* Downpour: push the sum of push_every gradients,
			 * computed from the weights of the oldest. */
			if (acc_steps == 0)
				acc_version = version;
			for (size_t i = 0; i < welcome.num_params; i++)
				acc[i] += g[i];
			acc_batch += (uint32_t)b;
			acc_loss += loss;
			if (++acc_steps == cfg->push_every) {
				rc = push_sum(client, acc, welcome.num_params,
					      acc_version, &acc_batch,
					      &acc_steps, &acc_loss,
					      &pushes, e);
				if (rc != PS_OK)
					goto out;
			}
		} else {
			rc = ps_client_push(client, g, 0,
					    welcome.num_params, version,
					    (uint32_t)b, (float)loss,
					    pushes, e);
			if (rc != PS_OK)
				goto out;
			pushes++;
		}
		/* The clock of a pull is the pushes made so far: under
		 * bsp/ssp the server answers when the others have caught
		 * up. */
		if (cfg->prefetch) {
			/* Prefetch: the weights requested after the last
			 * push travelled while this step computed; take them
			 * and ask for the next ones at once. */
			rc = ps_client_pull_finish(client, &version, NULL, e);
			if (rc != PS_OK)
				goto out;
			w = ps_client_weights(client);
			/* They were asked for before this step's push, so
			 * they lack it: add it as the server will (plain SGD
			 * only). With one trainer that makes them the
			 * server's next weights, and prefetch costs no
			 * staleness at all. Added before the next pull goes,
			 * which then says so: a server whose weights these
			 * are exactly answers without sending them. */
			if (!cfg->stale_prefetch &&
			    ps_client_add_own_push(client, w, g, 0,
						   welcome.num_params))
				own_steps++;
			rc = ps_client_pull_start(client, NULL, 0,
						  welcome.num_params, pushes, e);
			if (rc != PS_OK)
				goto out;
		} else if (steps % cfg->fetch_every == 0) {
			rc = ps_client_pull(client, NULL, 0,
					    welcome.num_params, pushes,
					    &version, NULL, e);
			if (rc != PS_OK)
				goto out;
			w = ps_client_weights(client);
		}
		if (cfg->crash_after && steps >= cfg->crash_after) {
			ps_log_error("crashing on purpose after %" PRIu64
				     " steps (--crash-after)", steps);
			_exit(3);
		}
		if (ps_client_stopped(client))
			goto stopped;
		if (isfinite(loss)) {
			loss_sum += loss;
			loss_n++;
		}
		epoch = batch.epoch;
		ps_worker_metrics_loss(wm, loss);
		ps_worker_metrics_tick(wm, client, epoch, steps, samples, 0);
		if (ps_now() - last_report >= cfg->progress_every) {
			double now = ps_now();
			ps_log_info("epoch %u/%u  step %" PRIu64
				    "  loss %.4f  %.0f samples/s",
				    batch.epoch + 1, cfg->epochs, steps,
				    loss_n ? loss_sum / (double)loss_n : NAN,
				    (double)samples / (now - t0));
			loss_sum = 0;
			loss_n = 0;
			last_report = now;
		}
	}
	if (cfg->prefetch) {
		/* The last prefetched weights are not needed; the reply must
		 * still be taken before the bye. */
		rc = ps_client_pull_finish(client, NULL, NULL, e);
		if (rc != PS_OK)
			goto out;
	}
	if (acc && acc_steps > 0) {
		rc = push_sum(client, acc, welcome.num_params, acc_version,
			      &acc_batch, &acc_steps, &acc_loss, &pushes, e);
		if (rc != PS_OK)
			goto out;
	}
stopped:
	if (ps_client_stopped(client))
		ps_log_info("the server stopped training early after %" PRIu64
			    " of my steps", steps);
	rc = ps_client_bye(client, samples, steps, e);
	ps_worker_metrics_tick(wm, client, epoch, steps, samples, 1);
	if (rc == PS_OK) {
		ps_client_stats st;
		double secs = ps_now() - t0;
		ps_client_get_stats(client, &st);
		ps_log_info("done: %" PRIu64 " steps, %" PRIu64
			    " samples in %.2f s (%.0f samples/s), staleness "
			    "mean %.2f max %" PRIu64 ", %" PRIu64
			    " pushes refused",
			    steps, samples, secs,
			    secs > 0 ? (double)samples / secs : 0.0,
			    st.applied ? (double)st.staleness_sum /
						 (double)st.applied
				       : 0.0,
			    st.staleness_max, st.push_errors);
		if (st.resent || st.rejoins || st.pushes_dropped ||
		    st.pulls_resent)
			ps_log_info("faults ridden out: %" PRIu64
				    " pushes sent again (%" PRIu64
				    " already applied), %" PRIu64
				    " pulls sent again, %" PRIu64
				    " registrations again, %" PRIu64
				    " pushes dropped",
				    st.resent, st.duplicates, st.pulls_resent,
				    st.rejoins, st.pushes_dropped);
		if (cfg->prefetch)
			ps_log_info("prefetch: own newest gradient added to "
				    "%" PRIu64 " of %" PRIu64 " prefetched "
				    "weights, %" PRIu64 " pull replies "
				    "\"unchanged\"%s",
				    own_steps, steps, st.pulls_unchanged,
				    cfg->stale_prefetch
					    ? " (--stale-prefetch)"
				    : own_steps < steps
					    ? " (the rest: the server runs an "
					      "update other than plain SGD, or "
					      "the gradient was not finite)"
					    : "");
		if (cfg->clip_norm > 0 || cfg->clip_value > 0)
			ps_log_info("clipped %" PRIu64 " of %" PRIu64
				    " gradients by norm, %" PRIu64 " by value",
				    clipped_norm, steps, clipped_value);
	}
out:
	ps_worker_metrics_close(&wm);
	free(acc);
	free(bx);
	free(by);
	ps_plan_destroy(&plan);
	ps_client_destroy(&client);
	ps_model_destroy(&model);
	ps_dataset_destroy(&all);
	return rc;
}


static void json_number(FILE *f, const char *key, double v, const char *sep)
{
	fprintf(f, "\"%s\": ", key);
	ps_json_number(f, v);
	fputs(sep, f);
}

/* The evaluator's early-stopping watch over the validation loss. */
typedef struct val_watch {
	ps_dataset *all, *rows; /* the training data and its held-out tail */
	float *best_w;
	double best_loss;
	uint64_t best_version;
	uint32_t since_best;    /* evaluations without improvement */
	int asked_stop;
} val_watch;

static int val_open(val_watch *v, const ps_worker_config *cfg, size_t n,
		    ps_err *e)
{
	size_t hold;
	int rc = ps_dataset_open(&v->all, cfg->val_data, e);

	if (rc != PS_OK)
		return rc;
	hold = ps_plan_held_out(v->all->n, cfg->val_fraction);
	if (hold == 0)
		return ps_err_set(e, PS_EINVAL,
				  "--val-fraction %g of %zu rows holds out nothing",
				  cfg->val_fraction, v->all->n);
	rc = ps_dataset_slice(&v->rows, v->all, v->all->n - hold, v->all->n);
	if (rc != PS_OK)
		return ps_err_set(e, rc, "cannot cut the validation rows");
	v->best_w = malloc(n * sizeof *v->best_w);
	if (!v->best_w)
		return ps_err_set(e, PS_ENOMEM, "out of memory");
	v->best_loss = INFINITY;
	ps_log_info("validation: the last %zu rows of %s", hold, cfg->val_data);
	return PS_OK;
}

static void val_close(val_watch *v)
{
	free(v->best_w);
	ps_dataset_destroy(&v->rows);
	ps_dataset_destroy(&v->all);
}

/* Note one validation loss; ask the server to stop once it has not
 * improved for `patience` evaluations. A NaN loss never improves. */
static int val_check(val_watch *v, const ps_worker_config *cfg,
		     ps_client *client, const float *w, uint64_t n,
		     uint64_t version, double loss, ps_err *e)
{
	char reason[200];

	if (loss < v->best_loss) {
		v->best_loss = loss;
		v->best_version = version;
		v->since_best = 0;
		memcpy(v->best_w, w, n * sizeof *w);
		return PS_OK;
	}
	v->since_best++;
	if (cfg->patience == 0 || v->asked_stop ||
	    v->since_best < cfg->patience)
		return PS_OK;
	v->asked_stop = 1;
	if (isfinite(v->best_loss))
		snprintf(reason, sizeof reason,
			 "validation loss has not improved for %u evaluations "
			 "(best %.4f at version %" PRIu64 ")",
			 cfg->patience, v->best_loss, v->best_version);
	else
		snprintf(reason, sizeof reason,
			 "validation loss has not been finite for %u evaluations",
			 cfg->patience);
	ps_log_info("early stop: %s", reason);
	return ps_client_stop(client, reason,
			      isfinite(v->best_loss) ? v->best_w : NULL, 0, n,
			      v->best_version, e);
}

static int write_result(const char *path, uint64_t version,
			const ps_model_eval *ev, const val_watch *v, ps_err *e)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return ps_err_set(e, PS_EIO, "cannot write %s", path);
	fprintf(f, "{\"updates\": %" PRIu64 ", \"test_samples\": %zu, ",
		version, ev->n);
	json_number(f, "test_loss", ev->loss, ", ");
	json_number(f, "test_accuracy", ev->accuracy, "");
	if (v->rows) {
		fprintf(f, ", ");
		json_number(f, "best_val_loss", v->best_loss, ", ");
		fprintf(f, "\"best_val_version\": %" PRIu64 ", \"early_stop\": %s",
			v->best_version, v->asked_stop ? "true" : "false");
	}
	fprintf(f, "}\n");
	if (fclose(f) != 0)
		return ps_err_set(e, PS_EIO, "cannot write %s", path);
	return PS_OK;
}

int ps_worker_evaluate(const ps_worker_config *cfg, ps_err *e)
{
	ps_dataset *data = NULL;
	ps_model *model = NULL;
	ps_client *client = NULL;
	ps_msg_welcome welcome;
	val_watch val = {0};
	FILE *metrics = NULL;
	float *w = NULL;
	double t0, prev_t = 0;
	uint64_t prev_version = 0, n;
	int rc, done = 0, target_stop = 0;

	rc = setup(cfg, PS_ROLE_EVALUATOR, NULL, &data, &model, &client, &welcome,
		   e);
	if (rc != PS_OK)
		goto out;
	if (cfg->stop_at_accuracy > 0 && ps_model_num_classes(model) == 0) {
		rc = ps_err_set(e, PS_EINVAL,
				"--stop-at-accuracy: model %s is not a "
				"classifier and has no accuracy",
				cfg->model);
		goto out;
	}
	n = welcome.num_params;
	w = malloc(n * sizeof *w);
	if (!w) {
		rc = ps_err_set(e, PS_ENOMEM, "out of memory");
		goto out;
	}
	if (cfg->val_data) {
		rc = val_open(&val, cfg, n, e);
		if (rc != PS_OK)
			goto out;
	}
	if (cfg->metrics_out) {
		metrics = fopen(cfg->metrics_out, "w");
		if (!metrics) {
			rc = ps_err_set(e, PS_EIO, "cannot write %s",
					cfg->metrics_out);
			goto out;
		}
	}
	t0 = ps_now();
	while (!done) {
		ps_model_eval ev, vev = {0};
		ps_client_stats st;
		ps_transport_counters tc;
		uint64_t version;
		double now, rate;
		double next = ps_now() + cfg->progress_every;

		rc = ps_client_pull(client, w, 0, n, 0, &version, &done, e);
		if (rc != PS_OK)
			goto out;
		ps_client_get_stats(client, &st);
		rc = ps_model_evaluate(model, w, data, &ev);
		if (rc == PS_OK && val.rows && !done)
			rc = ps_model_evaluate(model, w, val.rows, &vev);
		if (rc != PS_OK) {
			ps_err_set(e, rc, "evaluation failed: %s",
				   ps_strerror(rc));
			goto out;
		}
		now = ps_now() - t0;
		/* The first line has nothing to compare with. */
		rate = prev_t > 0 && now > prev_t
			       ? (double)(version - prev_version) / (now - prev_t)
			       : 0;
		prev_t = now;
		prev_version = version;
		printf("[%6.1fs] updates %8" PRIu64 "  %7.0f upd/s  test_loss %.4f",
		       now, version, rate, ev.loss);
		if (isfinite(ev.accuracy))
			printf("  test_acc %.4f", ev.accuracy);
		if (val.rows && !done)
			printf("  val_loss %.4f", vev.loss);
		/* The server holds the best weights only if this evaluator
		 * handed it some: none when no validation loss was finite. */
		printf("%s\n", !done ? ""
			       : !st.stop ? "  (final)"
			       : val.asked_stop && isfinite(val.best_loss)
				       ? "  (final: stopped early, best weights)"
				       : "  (final: stopped early)");
		fflush(stdout);
		if (metrics) {
			struct timespec wall;
			timespec_get(&wall, TIME_UTC);
			fprintf(metrics,
				"{\"time\": %.3f, \"unix_time\": %.3f, \"train_seconds\": %.3f, \"updates\": %" PRIu64 ", ",
				now,
				(double)wall.tv_sec + (double)wall.tv_nsec / 1e9,
				st.train_seconds, version);
			if (val.rows && !done)
				json_number(metrics, "val_loss", vev.loss, ", ");
			json_number(metrics, "test_loss", ev.loss, ", ");
			json_number(metrics, "test_accuracy", ev.accuracy, ", ");
			ps_transport_stats(NULL, &tc);
			fprintf(metrics, "\"bytes_in\": %" PRIu64
					 ", \"bytes_out\": %" PRIu64 "}\n",
				tc.bytes_in, tc.bytes_out);
			fflush(metrics);
		}
		if (done && cfg->result_out) {
			rc = write_result(cfg->result_out, version, &ev, &val, e);
			if (rc != PS_OK)
				goto out;
		}
		if (done && cfg->model_out) {
			ps_model_spec spec;
			rc = ps_worker_model_spec(cfg, data, &spec, e);
			if (rc == PS_OK)
				rc = ps_modelfile_write(cfg->model_out, &spec,
							version, w, n, e);
			if (rc != PS_OK)
				goto out;
		}
		if (val.rows && !done && !target_stop) {
			rc = val_check(&val, cfg, client, w, n, version,
				       vev.loss, e);
			if (rc != PS_OK)
				goto out;
		}
		/* One stop at most: the first of patience and target. */
		if (!done && !val.asked_stop && !target_stop &&
		    cfg->stop_at_accuracy > 0 &&
		    ev.accuracy >= cfg->stop_at_accuracy) {
			char reason[120];
			snprintf(reason, sizeof reason,
				 "test accuracy %.4f reached the target %g at "
				 "version %" PRIu64,
				 ev.accuracy, cfg->stop_at_accuracy, version);
			ps_log_info("stopping: %s", reason);
			target_stop = 1;
			rc = ps_client_stop(client, reason, NULL, 0, n, version,
					    e);
			if (rc != PS_OK)
				goto out;
		}
		while (!done && ps_now() < next) {
			if (cfg->stop && *cfg->stop) {
				rc = ps_err_set(e, PS_EINTR, "stopped by a signal");
				goto out;
			}
			sleep_seconds(0.05);
		}
	}
	rc = ps_client_bye(client, 0, 0, e);
out:
	if (metrics)
		fclose(metrics);
	free(w);
	val_close(&val);
	ps_client_destroy(&client);
	ps_model_destroy(&model);
	ps_dataset_destroy(&data);
	return rc;
}
