/*
 * ps_server_metrics: the server's periodic measurements (updates, rates,
 * staleness, rejections, bytes) as JSON lines through ps_metrics, driven
 * by the tick hook of ps_server_run().
 */
#ifndef PS_SERVER_METRICS_H
#define PS_SERVER_METRICS_H

#include "ps_error.h"
#include "ps_server.h"

typedef struct ps_server_metrics ps_server_metrics;

/* Write a line to path every `every` seconds. Errors: those of
 * ps_metrics_open(). Caller owns the result; release with
 * ps_server_metrics_close(). */
int ps_server_metrics_open(ps_server_metrics **out, const char *path,
			   double every, ps_err *e) PS_WUR;

/* The tick hook (ps_server_config.tick, arg the ps_server_metrics):
 * writes a line when one is due. A failed write is logged once and ends
 * the file, not the server. */
void ps_server_metrics_tick(void *arg, const ps_server *s, double now);

/* Write the last line now, whether due or not. Errors: PS_EIO. */
int ps_server_metrics_final(ps_server_metrics *sm, const ps_server *s) PS_WUR;

/* Close and free. Accepts NULL and *smp == NULL; sets *smp to NULL. */
void ps_server_metrics_close(ps_server_metrics **smp);

#endif
