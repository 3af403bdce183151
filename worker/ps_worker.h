/*
 * ps_worker: the two client roles of ps-worker. A trainer loads its shard
 * of the training data and loops pull -> minibatch gradient -> push for a
 * number of epochs. An evaluator pulls the whole model now and then,
 * measures it on held-out data, reports progress, and measures the final
 * weights once every trainer has finished.
 */
#ifndef PS_WORKER_H
#define PS_WORKER_H

#include <stdint.h>

#include "ps_dataset.h"
#include "ps_error.h"
#include "ps_model.h"
#include "ps_transport.h"

typedef struct ps_worker_config {
	const char *endpoint;   /* server to connect to */
	const char *data;       /* dataset spec, see ps_dataset_open() */
	const char *model;      /* "linear", "logistic", "softmax", "mlp" */
	const char *hidden;     /* mlp: hidden layer widths, e.g. "256,128" */
	const char *activation; /* mlp: "relu" or "tanh" */
	uint32_t classes;       /* 0: from the data */
	uint32_t rank;          /* trainer: shard index */
	uint32_t num_workers;   /* trainer: shard count */
	uint64_t seed;          /* initialization and shuffling */
	uint32_t epochs;
	uint32_t batch;
	double timeout;         /* seconds to wait for the server */
	int max_inflight;       /* unacknowledged pushes */
	double progress_every;  /* seconds between progress lines */
	uint32_t fetch_every;   /* pull every this many steps (Downpour), >= 1 */
	uint32_t push_every;    /* push the summed gradient of this many steps */
	double step_delay;      /* seconds to sleep per step (a slow worker) */
	int prefetch;           /* ask for the next weights right after each
				 * push and compute meanwhile on the ones in
				 * hand, plus the own newest gradient when the
				 * server announces plain SGD */
	int stale_prefetch;     /* prefetch: leave the own newest gradient
				 * out (one step more staleness) */
	double clip_norm;       /* > 0: clip each gradient to this L2 norm */
	double clip_value;      /* > 0: clamp each gradient element */
	double val_fraction;    /* last fraction of the training data held out */
	const char *val_data;   /* evaluator: the training data, for its
				 * held-out validation rows */
	uint32_t patience;      /* evaluator: stop training after this many
				 * evaluations without a better validation
				 * loss; 0: never */
	double stop_at_accuracy; /* evaluator: stop training once the test
				  * accuracy reaches this; 0: never */
	const char *result_out; /* evaluator: final figures, JSON */
	const char *metrics_out;/* evaluator: one JSON line per evaluation;
				 * trainer: one every metrics_every seconds */
	double metrics_every;   /* trainer: seconds between metrics lines */
	const char *model_out;  /* evaluator: the final weights, whole model */
	uint64_t crash_after;   /* testing aid: exit(3) after this many steps
				 * without a bye; 0: never */
	volatile int *stop;     /* set non-zero to stop early */
	/* CURVE keys for the connection (docs/SECURITY.md); NULL: plain. */
	const ps_transport_curve *curve;
} ps_worker_config;

/* The model spec every client must agree on, from cfg's model, hidden,
 * activation, classes and seed and the data d (input_dim from d; classes
 * from d unless cfg->classes). Errors: PS_EINVAL (a name too long, a
 * classifier on regression data, logistic on data without two classes;
 * e->msg says which). */
int ps_worker_model_spec(const ps_worker_config *cfg, const ps_dataset *d,
			 ps_model_spec *spec, ps_err *e) PS_WUR;

/* Train on shard `rank` of `num_workers` of the training rows (all but
 * the last val_fraction) until `epochs` are done or the server says stop,
 * then say bye. Errors: those of dataset loading and the client; e->msg is
 * the line to print. */
int ps_worker_train(const ps_worker_config *cfg, ps_err *e) PS_WUR;

/* Check the options without connecting: load the data, build the model
 * spec and the model, and print one "ok: ..." line. Errors: those of
 * dataset loading and ps_model_new(). */
int ps_worker_check(const ps_worker_config *cfg, ps_err *e) PS_WUR;

/* Evaluate the server's weights on cfg->data every progress_every seconds
 * until training is done, then once more on the final weights, writing
 * result_out. With val_data, also measure the held-out validation rows;
 * with patience, ask the server to stop (handing it the best weights)
 * once the validation loss has not improved for that many evaluations. Errors: as ps_worker_train(). */
int ps_worker_evaluate(const ps_worker_config *cfg, ps_err *e) PS_WUR;

#endif
