/*
 * ps_server_metrics: one JSON line per interval from the server's stats
 * and the process's transport counters. Counts are totals since the start
 * (so the last line is the run's); rates and the interval staleness mean
 * are over the interval since the previous line.
 */
#include "ps_server_metrics.h"

#include <math.h>
#include <stdlib.h>

#include "ps_log.h"
#include "ps_metrics.h"
#include "ps_transport.h"

struct ps_server_metrics {
	ps_metrics *m;
	ps_server_stats prev;
	int failed;
};

static const char *const staleness_labels[8] = {
	"0", "1", "2-3", "4-7", "8-15", "16-31", "32-63", "64+"};

int ps_server_metrics_open(ps_server_metrics **out, const char *path,
			   double every, ps_err *e)
{
	ps_server_metrics *sm = NULL;
	int rc;

	*out = NULL;
	sm = calloc(1, sizeof *sm);
	if (!sm)
		return ps_err_set(e, PS_ENOMEM, "out of memory");
	rc = ps_metrics_open(&sm->m, path, every, e);
	if (rc != PS_OK) {
		free(sm);
		return rc;
	}
	*out = sm;
	return PS_OK;
}

static int write_line(ps_server_metrics *sm, const ps_server *s, double now)
{
	ps_server_stats st;
	ps_transport_counters tc;
	double dt;
	uint64_t pushes;

	ps_server_get_stats(s, &st);
	ps_transport_stats(NULL, &tc);
	dt = ps_metrics_begin(sm->m, now);
	ps_metrics_num(sm->m, "train_seconds", st.train_seconds);
	ps_metrics_u64(sm->m, "updates", st.version);
	ps_metrics_u64(sm->m, "samples", st.samples);
	ps_metrics_u64(sm->m, "pulls", st.pulls);
	ps_metrics_num(sm->m, "updates_per_second",
		       dt > 0 ? (double)(st.version - sm->prev.version) / dt
			      : 0.0);
	ps_metrics_num(sm->m, "samples_per_second",
		       dt > 0 ? (double)(st.samples - sm->prev.samples) / dt
			      : 0.0);
	ps_metrics_num(sm->m, "staleness_mean",
		       st.pushes_applied ? st.staleness_sum /
						   (double)st.pushes_applied
					 : 0.0);
	pushes = st.pushes_applied - sm->prev.pushes_applied;
	/* NaN (null) when nothing was applied in the interval. */
	ps_metrics_num(sm->m, "staleness_mean_interval",
		       pushes ? (st.staleness_sum - sm->prev.staleness_sum) /
					(double)pushes
			      : (double)NAN);
	ps_metrics_u64(sm->m, "staleness_max", st.staleness_max);
	ps_metrics_hist(sm->m, "staleness_histogram", staleness_labels,
			st.staleness_hist, 8);
	ps_metrics_u64(sm->m, "rejected", st.rejects_total);
	ps_metrics_u64(sm->m, "pulls_waited", st.pulls_waited);
	ps_metrics_u64(sm->m, "workers_seen", st.workers_seen);
	ps_metrics_u64(sm->m, "workers_done", st.workers_done);
	ps_metrics_u64(sm->m, "workers_lost", st.workers_lost);
	ps_metrics_transport(sm->m, &tc);
	sm->prev = st;
	return ps_metrics_end(sm->m);
}

void ps_server_metrics_tick(void *arg, const ps_server *s, double now)
{
	ps_server_metrics *sm = arg;

	if (sm->failed || !ps_metrics_due(sm->m, now))
		return;
	if (write_line(sm, s, now) != PS_OK) {
		ps_log_error("cannot write the metrics file: no more metrics");
		sm->failed = 1;
	}
}

int ps_server_metrics_final(ps_server_metrics *sm, const ps_server *s)
{
	if (sm->failed)
		return PS_EIO;
	return write_line(sm, s, ps_now());
}

void ps_server_metrics_close(ps_server_metrics **smp)
{
	if (!smp || !*smp)
		return;
	ps_metrics_close(&(*smp)->m);
	free(*smp);
	*smp = NULL;
}
