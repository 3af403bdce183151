/*
 * ps_plan: which rows a trainer trains on, minibatch by minibatch. It cuts
 * rank's shard of the training rows (all but the held-out tail), shuffles
 * it at the start of every epoch with the rank's own seeded stream, and
 * hands out the batches in order. The trainer (ps_worker.c) and the
 * correctness oracle (tests/tools/ps-sgd-oracle.c) both walk it, so that
 * the oracle sees exactly the minibatches a cluster's trainers use.
 */
#ifndef PS_PLAN_H
#define PS_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "ps_dataset.h"
#include "ps_error.h"

/* Plain value record of what decides a trainer's minibatches. */
typedef struct ps_plan_config {
	size_t rows;          /* rows of the training data, held-out tail included */
	double val_fraction;  /* the last fraction of rows is held out, in [0, 1) */
	uint32_t rank;        /* this trainer's shard, < num_workers */
	uint32_t num_workers; /* shard count, >= 1 */
	uint64_t seed;        /* the run's seed; rank's stream is derived from it */
	uint32_t batch;       /* rows per minibatch, >= 1; an epoch's last may be
			       * smaller */
	uint32_t epochs;      /* passes over the shard */
} ps_plan_config;

/* One minibatch. rows[count] index the whole dataset (not the shard).
 * Borrowed: valid until the next ps_plan_next() or ps_plan_destroy(). */
typedef struct ps_plan_batch {
	const uint32_t *rows;
	size_t count;   /* 1 .. batch */
	uint32_t epoch; /* 0-based epoch this batch belongs to */
	uint64_t step;  /* 0-based index of this batch over all epochs */
} ps_plan_batch;

typedef struct ps_plan ps_plan;

/* Rows at the end of `rows` kept for validation: floor(rows * fraction),
 * 0 when fraction <= 0. */
size_t ps_plan_held_out(size_t rows, double fraction);

/* The plan of trainer cfg->rank. Errors: PS_EINVAL (rank >= num_workers,
 * batch 0, val_fraction outside [0, 1), more than UINT32_MAX rows; e->msg
 * says which), PS_ENOMEM. Caller owns the result; release with
 * ps_plan_destroy(). */
int ps_plan_new(ps_plan **out, const ps_plan_config *cfg, ps_err *e) PS_WUR;

/* Free p and set *pp to NULL. Accepts NULL and *pp NULL. */
void ps_plan_destroy(ps_plan **pp);

/* The shard of a plan made with cfg: rows [*begin, *end) of the dataset
 * (an empty range when the shard is empty), without making the plan, so
 * that a trainer can load only those rows. cfg must be one ps_plan_new()
 * accepts (rank < num_workers, val_fraction in [0, 1)). */
void ps_plan_shard_range(const ps_plan_config *cfg, size_t *begin,
			 size_t *end);

/* The shard: rows [*begin, *end) of the dataset (an empty range when the
 * shard is empty). */
void ps_plan_shard(const ps_plan *p, size_t *begin, size_t *end);

/* Minibatches in the whole plan: epochs * ceil(shard rows / batch). */
uint64_t ps_plan_steps(const ps_plan *p);

/* The next minibatch into *out: returns 1, or 0 once every epoch is done
 * (and for an empty shard), leaving *out untouched. The shuffle of an
 * epoch happens when its first batch is asked for. */
int ps_plan_next(ps_plan *p, ps_plan_batch *out);

/* Copy the rows of batch b out of d: x[b->count * d->dim] features and
 * y[b->count] targets, in batch order. d holds rows [first, first + d->n)
 * of the dataset the plan was made for (first 0: all of it; a trainer
 * keeps only its shard, first its shard's begin), and b's rows lie in
 * that range. */
void ps_plan_gather(const ps_dataset *d, size_t first, const ps_plan_batch *b,
		    float *x, float *y);

#endif
