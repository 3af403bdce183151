/*
 * ps_metrics: a process's periodic measurements as JSON lines, one object
 * per line, written every `every` seconds into a file of the run
 * directory (server.metrics.jsonl, worker-R.metrics.jsonl). The launcher
 * reads them for its status line and summary, ps-plot and ps-sweep for
 * their curves. Field names are listed in the README's run directory.
 */
#ifndef PS_METRICS_H
#define PS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "ps_error.h"
#include "ps_transport.h"

typedef struct ps_metrics ps_metrics;

/* Create (truncate) path for lines every `every` seconds (> 0), the first
 * one due at once. Errors: PS_EINVAL (every <= 0), PS_EIO (cannot write
 * path; e->msg names it), PS_ENOMEM. Caller owns the result; release with
 * ps_metrics_close(). One thread. */
int ps_metrics_open(ps_metrics **out, const char *path, double every,
		    ps_err *e) PS_WUR;

/* Close and free. Accepts NULL and *mp == NULL; sets *mp to NULL. */
void ps_metrics_close(ps_metrics **mp);

/* Is a line due at `now` (ps_now() seconds)? 0 for m == NULL. */
int ps_metrics_due(const ps_metrics *m, double now);

/* Start a line at `now`: writes "time" (seconds since open) and
 * "unix_time" (wall clock, to line up the files of several processes).
 * Returns the seconds since the previous line (0 for the first), for
 * rates over the interval. The next line falls due `every` seconds after
 * the previous due time (a fixed grid; a late line does not shift it). */
double ps_metrics_begin(ps_metrics *m, double now);

/* Fields of the line begun: an unsigned count, a number (non-finite as
 * null), a histogram as an object of label: count. */
void ps_metrics_u64(ps_metrics *m, const char *key, uint64_t v);
void ps_metrics_num(ps_metrics *m, const char *key, double v);
void ps_metrics_hist(ps_metrics *m, const char *key,
		     const char *const *labels, const uint64_t *counts,
		     size_t n);

/* bytes_in, bytes_out, msgs_in, msgs_out of c. */
void ps_metrics_transport(ps_metrics *m, const ps_transport_counters *c);

/* End the line and flush it to the file. Errors: PS_EIO (write failed;
 * the file is then left alone, later calls write nothing). */
int ps_metrics_end(ps_metrics *m) PS_WUR;

#endif
