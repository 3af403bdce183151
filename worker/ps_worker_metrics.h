/*
 * ps_worker_metrics: a trainer's periodic measurements (epoch, progress,
 * training loss, samples/s, staleness of its pushes, bytes) as JSON lines
 * through ps_metrics, written from the training loop.
 */
#ifndef PS_WORKER_METRICS_H
#define PS_WORKER_METRICS_H

#include <stdint.h>

#include "ps_client.h"
#include "ps_error.h"

typedef struct ps_worker_metrics ps_worker_metrics;

/* Write a line to path every `every` seconds for trainer `rank`, whose
 * plan has `epochs` epochs of `steps_total` minibatches in all. Errors:
 * those of ps_metrics_open(). Caller owns the result; release with
 * ps_worker_metrics_close(). */
int ps_worker_metrics_open(ps_worker_metrics **out, const char *path,
			   double every, uint32_t rank, uint32_t epochs,
			   uint64_t steps_total, ps_err *e) PS_WUR;

/* Note one minibatch's training loss (non-finite ones are not averaged).
 * Accepts wm == NULL. */
void ps_worker_metrics_loss(ps_worker_metrics *wm, double loss);

/* Write a line if one is due, or now if `final`: epoch (0-based, as in
 * ps_plan_batch), steps and samples so far. Accepts wm == NULL. A failed
 * write is logged once and ends the file, not the training. */
void ps_worker_metrics_tick(ps_worker_metrics *wm, const ps_client *c,
			    uint32_t epoch, uint64_t steps, uint64_t samples,
			    int final);

/* Close and free. Accepts NULL and *wmp == NULL; sets *wmp to NULL. */
void ps_worker_metrics_close(ps_worker_metrics **wmp);

#endif
