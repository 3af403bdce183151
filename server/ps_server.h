/*
 * ps_server: the parameter server's core. It owns one key range of the
 * model's weights, registers workers, answers pulls with the current
 * weights and version, applies pushes with the server-side optimizer as
 * they arrive (async, ssp) or combined once per clock (bsp; pulls wait
 * as docs/CONSISTENCY.md says), and measures staleness. Single-threaded: one
 * event loop receives, validates, applies and replies; no locks.
 */
#ifndef PS_SERVER_H
#define PS_SERVER_H

#include <stdint.h>
#include <stdio.h>

#include "ps_error.h"
#include "ps_model.h"
#include "ps_optim.h"
#include "ps_transport.h"

/* How far apart trainers may run (docs/CONSISTENCY.md). A trainer's
 * clock is the number of pushes it has made. */
enum ps_consistency {
	PS_CONSISTENCY_ASYNC = 0, /* apply every push on arrival; pulls never wait */
	PS_CONSISTENCY_BSP = 1,   /* one combined step per clock; a pull for
				   * clock c waits for step c - 1 */
	PS_CONSISTENCY_SSP = 2,   /* apply on arrival; a pull for clock c waits
				   * until the slowest live trainer has made
				   * c - ssp_bound pushes */
};

/* Parse "async", "bsp" or "ssp:S" (S a non-negative integer; "ssp:0" is
 * bsp) into *mode and *bound. Errors: PS_EINVAL with e->msg. */
int ps_consistency_parse(const char *text, enum ps_consistency *mode,
			 uint32_t *bound, ps_err *e) PS_WUR;

struct ps_server;

typedef struct ps_server_config {
	uint32_t num_workers;   /* training workers expected, >= 1 */
	ps_optim_config optim;
	enum ps_consistency consistency;
	uint32_t ssp_bound;     /* S of ssp:S, >= 1 */
	/* Scale each push's step by 1 / max(1, staleness) (async and ssp). */
	int staleness_lr;
	/* Delay compensation (DC-ASGD): push g becomes
	 * g + dc_lambda * g * g * (w_now - w_pulled); 0 disables. Costs one
	 * copy of the weights per trainer. */
	double dc_lambda;
	/* Seconds without any message before the server gives up on its
	 * workers (a hang guard); 0 disables. */
	double idle_timeout;
	/* After every worker said bye, how long to wait for evaluators to
	 * fetch the final weights and say bye. */
	double eval_grace;
	/* Evaluators to wait for (within eval_grace) after training, even
	 * if they have not said hello yet. */
	uint32_t num_evaluators;
	/* Seconds without a message from a registered trainer before it is
	 * dropped as dead (docs/FAULTS.md); 0 never drops one. */
	double worker_timeout;
	/* Seconds a client waits for a reply before it sends a heartbeat;
	 * told to every client in its welcome. Must be below worker_timeout. */
	double heartbeat;
	/* Checkpoints: into this directory (NULL: none), after every
	 * checkpoint_updates updates and/or checkpoint_seconds seconds (0:
	 * not by that measure), keeping the newest checkpoint_keep; and a
	 * last one when the run ends or is stopped. */
	const char *checkpoint_dir;
	uint64_t checkpoint_updates;
	double checkpoint_seconds;
	int checkpoint_keep;
	/* Fault injection for tests: do not send every Nth ack of an applied
	 * push (0: off). */
	uint64_t drop_ack_every;
	/* ... and no answer to every Nth pull of a trainer (0: off). */
	uint64_t drop_pull_every;
	/* This server is shard `shard` of `num_shards` (0 means 1): it owns
	 * the key range ps_shard_range() gives it (common/ps_shard.h). */
	uint32_t shard, num_shards;
	/* Called from ps_server_run() after every loop turn (at least every
	 * 200 ms) with ps_now(); e.g. ps_server_metrics_tick(). NULL: none. */
	void (*tick)(void *arg, const struct ps_server *s, double now);
	void *tick_arg;
	/* Largest model a hello may ask for, in parameters; 0: no limit.
	 * The first hello sizes the weights: without a bound one message
	 * could make the server allocate gigabytes. A model whose weights
	 * do not fit in one message could not be pulled anyway. */
	uint64_t max_params;
} ps_server_config;

/* Counters of everything the server refused; each is also logged. */
typedef struct ps_server_rejects {
	uint64_t malformed;      /* undecodable, bad framing, bad field */
	uint64_t version;        /* wrong protocol version */
	uint64_t unknown_worker; /* no hello, or id/peer mismatch */
	uint64_t bad_length;     /* tensor size does not match the range */
	uint64_t nonfinite;      /* NaN or Inf in a gradient */
	uint64_t model_mismatch; /* hello with another model */
	uint64_t bad_rank;       /* rank >= num_workers */
	uint64_t send_failed;    /* a reply that could not be queued */
} ps_server_rejects;

/* Plain value record of the figures a run reports. */
typedef struct ps_server_stats {
	uint64_t version;       /* updates applied */
	uint64_t samples;       /* samples behind the applied pushes */
	uint64_t pulls;
	double staleness_sum;
	uint64_t staleness_max;
	uint64_t staleness_hist[8]; /* 0, 1, 2-3, 4-7, ..., >= 64 */
	uint32_t workers_seen;
	uint32_t workers_done;
	double train_seconds;   /* first hello to last worker bye */
	ps_server_rejects rejects;
	uint64_t rejects_total;
	/* Early stop requested by an evaluator. */
	int stopped;
	int weights_restored;      /* the evaluator's best weights replaced ours */
	uint64_t model_version;    /* version of the weights held now */
	uint64_t pushes_after_stop; /* refused with ERROR_SHUTTING_DOWN */
	char stop_reason[256];
	/* Consistency. */
	uint64_t pushes_applied;   /* pushes taken in (bsp: combined later) */
	uint64_t bsp_steps;        /* combined steps applied (bsp) */
	uint64_t pulls_waited;     /* pulls held back by bsp/ssp */
	uint64_t pulls_unchanged;  /* answered "unchanged": the trainer held
				    * the weights already (no tensor sent) */
	uint64_t clock_lead_max;   /* max over answered trainer pulls of its
				    * clock minus the slowest live trainer's
				    * (not counting pulls after a stop) */
	/* Faults (docs/FAULTS.md). */
	uint32_t workers_lost;     /* trainers dropped after worker_timeout */
	uint32_t rejoins;          /* hellos of a rank registered before */
	uint64_t duplicates;       /* pushes sent again, acked, not applied */
	uint64_t too_old;          /* repeats too old to tell, refused */
	uint64_t acks_dropped;     /* fault injection: acks not sent */
	uint64_t pulls_dropped;    /* fault injection: pulls not answered */
	uint64_t checkpoints;      /* checkpoints written */
	uint64_t checkpoint_version; /* version of the last one written */
	int resumed;               /* started from a checkpoint */
	uint64_t resumed_version;  /* its version */
	uint64_t updates_lost;     /* updates the workers saw acknowledged
				    * that the checkpoint resumed from lacks */
	double apply_seconds;      /* spent applying updates */
} ps_server_stats;

typedef struct ps_server ps_server;

/* A server answering through transport t (borrowed: it must outlive the
 * server). The model is sized by the first hello. Errors: PS_EINVAL
 * (num_workers 0, bad optimizer settings), PS_ENOMEM. Caller owns the
 * result; release with ps_server_destroy(). */
int ps_server_new(ps_server **out, const ps_server_config *cfg,
		  ps_transport *t, ps_err *e) PS_WUR;

void ps_server_destroy(ps_server **sp);

struct ps_checkpoint;

/* Start from a checkpoint (before the first message): the model, its
 * weights and optimizer state, the counters and each worker's standing.
 * Errors: PS_EINVAL (the checkpoint's worker count or optimizer differs
 * from the configuration's, or the model is already set), PS_ENOMEM. */
int ps_server_restore(ps_server *s, const struct ps_checkpoint *ck,
		      ps_err *e) PS_WUR;

/* Write a checkpoint into cfg.checkpoint_dir now. Errors: PS_EINVAL (no
 * directory configured, or no model yet), those of ps_checkpoint_save(). */
int ps_server_checkpoint(ps_server *s, ps_err *e) PS_WUR;

/* Drop trainers not heard from for worker_timeout seconds at time now,
 * as the event loop does between messages (exposed for tests). */
void ps_server_check_liveness(ps_server *s, double now);

/* Handle one received message: validate it, act, reply. Bad input is
 * counted, logged and answered with an error message where the sender can
 * be addressed; it is never fatal. Returns PS_OK, or the reason the
 * message was refused (for tests; the server carries on either way). */
int ps_server_handle(ps_server *s, const ps_frame *f);

/* Note that the transport dropped a message with bad framing. */
void ps_server_count_malformed(ps_server *s, const ps_frame *f);

/* Run the event loop until every worker has said bye (and evaluators have
 * had eval_grace seconds to finish), *stop becomes non-zero (set it from
 * a signal handler), or the idle timeout passes.
 * Errors: PS_ETIMEDOUT (idle timeout), PS_EINTR (stopped), PS_ETRANSPORT. */
int ps_server_run(ps_server *s, volatile int *stop, ps_err *e) PS_WUR;

/* 1 once every expected worker has said bye. */
int ps_server_training_done(const ps_server *s);

void ps_server_get_stats(const ps_server *s, ps_server_stats *out);

/* The weights this server holds as trained so far: all of the model's
 * when it is the only shard, else its range (ps_server_range()). Errors:
 * PS_EINVAL when no worker has said hello yet (no model). Borrowed
 * pointers: valid while s lives. */
int ps_server_weights(const ps_server *s, const float **w, uint64_t *n,
		      const ps_model_spec **spec) PS_WUR;

/* The range [*begin, *end) this shard holds of a model of *total
 * weights; all zero before the first hello. */
void ps_server_range(const ps_server *s, uint64_t *begin, uint64_t *end,
		     uint64_t *total);

/* Write the run's figures as one JSON object to f. */
void ps_server_write_stats_json(const ps_server *s, FILE *f);

#endif
