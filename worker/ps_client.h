/*
 * ps_client: a worker's connection to its server. Wraps the transport and
 * the wire format into hello, pull, push and bye calls. Pushes are sent
 * without waiting (several in flight, bounded); a pull waits for its
 * weights and takes in the acks that arrive meanwhile. It rides out
 * faults by itself (docs/FAULTS.md): a push whose ack was lost is sent
 * again and applied once, a silent server gets heartbeats with backoff,
 * and a restarted server is registered with again.
 */
#ifndef PS_CLIENT_H
#define PS_CLIENT_H

#include <stdint.h>

#include "ps_error.h"
#include "ps_transport.h"
#include "ps_wire.h"

typedef struct ps_client ps_client;

/* Plain value record of what a client saw. */
typedef struct ps_client_stats {
	uint64_t pushes, acks, pulls;
	uint64_t applied;         /* this rank's pushes the server applied,
				   * from its count at registration on */
	uint64_t duplicates;      /* acks of pushes sent again: not applied
				   * twice */
	uint64_t resent;          /* pushes sent again (ack overdue) */
	uint64_t pulls_resent;    /* pulls sent again: unanswered, not held
				   * back, and a later heartbeat answered */
	uint64_t requests_resent; /* byes and stops sent again, likewise */
	uint64_t rejoins;         /* registered again (server restarted) */
	uint64_t pushes_dropped;  /* not applied: computed before the server
				   * was restarted, or too old to tell */
	uint64_t push_errors;     /* pushes the server refused */
	uint64_t staleness_sum;   /* over applied pushes */
	uint64_t staleness_max;
	uint64_t last_version;    /* newest version the server reported */
	uint64_t refused_after_stop; /* pushes that arrived after a stop */
	uint64_t pulls_unchanged; /* shard replies saying the weights held
				   * already were the server's (no tensor) */
	double train_seconds;     /* server's training clock at the last pull */
	int stop;                 /* the server asked trainers to stop */
	char stop_reason[256];
} ps_client_stats;

/* Connect to the server at endpoint. timeout: seconds a wait may go
 * without any message from the server before giving up (heartbeats are
 * answered, so a server holding a pull back under bsp is not silent).
 * max_inflight: pushes sent but not yet acknowledged before push waits
 * (>= 1); each keeps its gradient (a copy, unless it was computed in
 * ps_client_grad_buffer()) until acknowledged.
 * Errors: those of ps_transport_connect(), PS_ENOMEM. Caller owns the
 * result; release with ps_client_destroy(). One thread at a time. */
int ps_client_new(ps_client **out, const char *endpoint, double timeout,
		  int max_inflight, ps_err *e) PS_WUR;

/* As ps_client_new(), over a connection secured with CURVE keys (curve
 * borrowed for the call; NULL: plain, as ps_client_new()). A server that
 * refuses the keys makes the first wait fail with PS_EAUTH. */
int ps_client_new_curve(ps_client **out, const char *endpoint,
			double timeout, int max_inflight,
			const ps_transport_curve *curve, ps_err *e) PS_WUR;

void ps_client_destroy(ps_client **cp);

/* Register. On success *welcome holds the worker id, model size and key
 * range; for a worker, also its standing on the server (a restarted
 * worker process carries on from it: the clocks this client sends are the
 * caller's push count shifted to the server's clock for this rank). Errors: PS_ETIMEDOUT (no answer within the timeout), PS_EPROTO
 * (the server refused; e->msg has its reason), PS_EINTR (a signal came
 * while waiting), PS_ETRANSPORT. */
int ps_client_hello(ps_client *c, enum ps_role role, uint32_t rank,
		    const ps_model_spec *spec, ps_msg_welcome *welcome,
		    ps_err *e) PS_WUR;

/* Fetch weights [begin, end) into w[end - begin]; *version and
 * *training_done (may be NULL) come from the reply, and so does the stop
 * flag (ps_client_stopped()). With w NULL the client keeps the weights
 * where they arrived, without copying them (ps_client_weights()).
 * Errors as hello. */
int ps_client_pull(ps_client *c, float *w, uint64_t begin, uint64_t end,
		   uint64_t clock, uint64_t *version, int *training_done,
		   ps_err *e) PS_WUR;

/* ps_client_pull() in two halves, so that a trainer can compute while the
 * weights travel: start sends the pull; the reply is copied into
 * w[end - begin] whenever it arrives (also during a push's wait), so w
 * must not be read for this step until finish returns. One pull in flight
 * at a time. Errors: PS_EINVAL (start: one is in flight; finish: none
 * is), and those of hello. */
int ps_client_pull_start(ps_client *c, float *w, uint64_t begin,
			 uint64_t end, uint64_t clock, ps_err *e) PS_WUR;
int ps_client_pull_finish(ps_client *c, uint64_t *version,
			  int *training_done, ps_err *e) PS_WUR;

/* The weights of the last pull made with w NULL, w[end - begin] for its
 * range: with one shard, the bytes of the server's reply themselves (or,
 * when the server answered "unchanged", the weights the caller already
 * had, own push added).
 * The caller may read and write them until the next such pull finishes
 * (they are released then) or c is destroyed. NULL before the first. */
float *ps_client_weights(ps_client *c);

/* A buffer for the gradient of the next push of [begin, end), to fill and
 * pass to ps_client_push(), which then sends it without copying (when
 * one shard holds the whole range). It stays the caller's to read, not
 * write, after the push, until the next call (which may return it again
 * if it was not pushed). NULL when out of memory. */
float *ps_client_grad_buffer(ps_client *c, uint64_t begin, uint64_t end);

/* Add this client's newest push to weights pulled before the server
 * applied it: w[i] -= lr * g[i] for the weights [begin, end) in w and
 * g[end - begin], each shard's part at the rate that shard announced with
 * the weights of the last pull (Weights.sgd_lr), in float32 as the
 * server's plain SGD does it. A prefetching trainer calls it with the
 * gradient it just pushed, which the prefetched weights cannot hold yet;
 * with one trainer the result is the server's next weights exactly.
 * When w is ps_client_weights() of the last pull and the push covered
 * each shard's part of it, the next pull started says so, and a shard
 * whose weights are then exactly these answers "unchanged" without
 * sending them (docs/PROTOCOL.md). Returns 1 when w was changed, 0 when
 * not: a shard in the range runs another update (rate 0), or g holds a
 * NaN or infinity (the server refuses such a push). */
int ps_client_add_own_push(ps_client *c, float *w, const float *g,
			   uint64_t begin, uint64_t end);

/* Send gradient g[end - begin] computed from weights of base_version.
 * g is copied, unless it is this range's ps_client_grad_buffer(), which
 * is sent as it is. Returns once it is queued (waiting first if
 * max_inflight pushes are unacknowledged). A push the server refuses is
 * counted in push_errors and logged, not returned. Errors: PS_ETIMEDOUT,
 * PS_EINTR, PS_ETRANSPORT. */
int ps_client_push(ps_client *c, const float *g, uint64_t begin,
		   uint64_t end, uint64_t base_version, uint32_t batch_size,
		   float loss, uint64_t clock, ps_err *e) PS_WUR;

/* Wait until every push is acknowledged. Errors: PS_ETIMEDOUT, PS_EINTR. */
int ps_client_flush(ps_client *c, ps_err *e) PS_WUR;

/* 1 once any reply has said the server stopped training early. */
int ps_client_stopped(const ps_client *c);

/* Evaluators: ask the server to stop training early with a reason; when
 * best is not NULL, best[end - begin] (weights of best_version) replace
 * the server's. Errors as hello. */
int ps_client_stop(ps_client *c, const char *reason, const float *best,
		   uint64_t begin, uint64_t end, uint64_t best_version,
		   ps_err *e) PS_WUR;

/* Flush, say goodbye and wait for the server's answer. */
int ps_client_bye(ps_client *c, uint64_t samples, uint64_t steps,
		  ps_err *e) PS_WUR;

void ps_client_get_stats(const ps_client *c, ps_client_stats *out);

#endif
