/*
 * ps_worker_metrics: one JSON line per interval for a trainer. "loss" is
 * the mean training loss of the minibatches since the previous line (null
 * when none had a finite loss), the rates are over that interval, the
 * rest are totals since the start.
 */
#include "ps_worker_metrics.h"

#include <math.h>
#include <stdlib.h>

#include "ps_log.h"
#include "ps_metrics.h"
#include "ps_transport.h"

struct ps_worker_metrics {
	ps_metrics *m;
	uint32_t rank, epochs;
	uint64_t steps_total;
	double loss_sum;
	uint64_t loss_n;
	uint64_t prev_samples, prev_steps;
	int failed;
};

int ps_worker_metrics_open(ps_worker_metrics **out, const char *path,
			   double every, uint32_t rank, uint32_t epochs,
			   uint64_t steps_total, ps_err *e)
{
	ps_worker_metrics *wm;
	int rc;

	*out = NULL;
	wm = calloc(1, sizeof *wm);
	if (!wm)
		return ps_err_set(e, PS_ENOMEM, "out of memory");
	rc = ps_metrics_open(&wm->m, path, every, e);
	if (rc != PS_OK) {
		free(wm);
		return rc;
	}
	wm->rank = rank;
	wm->epochs = epochs;
	wm->steps_total = steps_total;
	*out = wm;
	return PS_OK;
}

void ps_worker_metrics_loss(ps_worker_metrics *wm, double loss)
{
	if (!wm || !isfinite(loss))
		return;
	wm->loss_sum += loss;
	wm->loss_n++;
}

void ps_worker_metrics_tick(ps_worker_metrics *wm, const ps_client *c,
			    uint32_t epoch, uint64_t steps, uint64_t samples,
			    int final)
{
	ps_client_stats st;
	ps_transport_counters tc;
	double now, dt;

	if (!wm || wm->failed)
		return;
	now = ps_now();
	if (!final && !ps_metrics_due(wm->m, now))
		return;
	ps_client_get_stats(c, &st);
	ps_transport_stats(NULL, &tc);
	dt = ps_metrics_begin(wm->m, now);
	ps_metrics_u64(wm->m, "rank", wm->rank);
	ps_metrics_u64(wm->m, "epoch", (uint64_t)epoch + (steps > 0));
	ps_metrics_u64(wm->m, "epochs", wm->epochs);
	ps_metrics_u64(wm->m, "steps", steps);
	ps_metrics_u64(wm->m, "steps_total", wm->steps_total);
	ps_metrics_u64(wm->m, "samples", samples);
	ps_metrics_num(wm->m, "samples_per_second",
		       dt > 0 ? (double)(samples - wm->prev_samples) / dt
			      : 0.0);
	ps_metrics_num(wm->m, "steps_per_second",
		       dt > 0 ? (double)(steps - wm->prev_steps) / dt : 0.0);
	ps_metrics_num(wm->m, "loss",
		       wm->loss_n ? wm->loss_sum / (double)wm->loss_n
				  : (double)NAN);
	ps_metrics_u64(wm->m, "updates", st.last_version);
	ps_metrics_u64(wm->m, "pushes", st.pushes);
	ps_metrics_u64(wm->m, "applied", st.applied);
	ps_metrics_num(wm->m, "staleness_mean",
		       st.applied ? (double)st.staleness_sum /
					    (double)st.applied
				  : 0.0);
	ps_metrics_u64(wm->m, "staleness_max", st.staleness_max);
	ps_metrics_u64(wm->m, "push_errors", st.push_errors);
	ps_metrics_transport(wm->m, &tc);
	wm->loss_sum = 0;
	wm->loss_n = 0;
	wm->prev_samples = samples;
	wm->prev_steps = steps;
	if (ps_metrics_end(wm->m) != PS_OK) {
		ps_log_error("cannot write the metrics file: no more metrics");
		wm->failed = 1;
	}
}

void ps_worker_metrics_close(ps_worker_metrics **wmp)
{
	if (!wmp || !*wmp)
		return;
	ps_metrics_close(&(*wmp)->m);
	free(*wmp);
	*wmp = NULL;
}
