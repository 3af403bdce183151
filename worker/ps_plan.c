/*
 * ps_plan: a trainer's minibatch order. Invariants: order[] is always a
 * permutation of the shard's row indices [begin, end); `at` is where the
 * next batch starts in it, 0 at an epoch's start, when the next call
 * shuffles first. The stream is consumed only by those shuffles, one per
 * epoch, so the batches depend on (rows, val_fraction, rank, num_workers,
 * seed, batch, epochs) alone.
 */
#include "ps_plan.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "ps_rng.h"

struct ps_plan {
	ps_plan_config cfg;
	size_t begin, end, n; /* the shard, n = end - begin */
	uint32_t *order;      /* [n] dataset row indices */
	ps_rng rng;
	uint32_t epoch;       /* epoch of the next batch */
	size_t at;            /* start of the next batch in order[] */
	uint64_t step;        /* batches handed out so far */
};

size_t ps_plan_held_out(size_t rows, double fraction)
{
	return fraction > 0 ? (size_t)((double)rows * fraction) : 0;
}

void ps_plan_shard_range(const ps_plan_config *cfg, size_t *begin,
			 size_t *end)
{
	ps_dataset_shard_range(cfg->rows - ps_plan_held_out(cfg->rows,
							    cfg->val_fraction),
			       cfg->rank, cfg->num_workers, begin, end);
}

int ps_plan_new(ps_plan **out, const ps_plan_config *cfg, ps_err *e)
{
	ps_plan *p = NULL;
	int rc = PS_OK;

	*out = NULL;
	if (cfg->num_workers == 0 || cfg->rank >= cfg->num_workers)
		return ps_err_set(e, PS_EINVAL, "rank %u outside [0, %u)",
				  cfg->rank, cfg->num_workers);
	if (cfg->batch == 0)
		return ps_err_set(e, PS_EINVAL, "batch size 0");
	if (!(cfg->val_fraction >= 0 && cfg->val_fraction < 1))
		return ps_err_set(e, PS_EINVAL,
				  "validation fraction %g outside [0, 1)",
				  cfg->val_fraction);
	if (cfg->rows > UINT32_MAX)
		return ps_err_set(e, PS_EINVAL,
				  "%zu rows: more than 2^32 - 1 are not supported",
				  cfg->rows);
	p = calloc(1, sizeof *p);
	if (!p)
		return ps_err_set(e, PS_ENOMEM, "out of memory");
	p->cfg = *cfg;
	ps_plan_shard_range(cfg, &p->begin, &p->end);
	p->n = p->end - p->begin;
	p->order = malloc((p->n ? p->n : 1) * sizeof *p->order);
	if (!p->order) {
		rc = ps_err_set(e, PS_ENOMEM, "out of memory for %zu row indices",
				p->n);
		goto out;
	}
	for (size_t i = 0; i < p->n; i++)
		p->order[i] = (uint32_t)(p->begin + i);
	/* Each rank shuffles its own shard with its own stream. */
	ps_rng_seed(&p->rng,
		    cfg->seed ^ (0x9e3779b97f4a7c15ULL * (cfg->rank + 1)));
out:
	if (rc != PS_OK)
		ps_plan_destroy(&p);
	*out = p;
	return rc;
}

void ps_plan_destroy(ps_plan **pp)
{
	if (!pp || !*pp)
		return;
	free((*pp)->order);
	free(*pp);
	*pp = NULL;
}

void ps_plan_shard(const ps_plan *p, size_t *begin, size_t *end)
{
	*begin = p->begin;
	*end = p->end;
}

uint64_t ps_plan_steps(const ps_plan *p)
{
	return (uint64_t)((p->n + p->cfg.batch - 1) / p->cfg.batch) *
	       p->cfg.epochs;
}

int ps_plan_next(ps_plan *p, ps_plan_batch *out)
{
	size_t count;

	if (p->n == 0 || p->epoch >= p->cfg.epochs)
		return 0;
	if (p->at == 0)
		ps_rng_shuffle(&p->rng, p->order, p->n);
	count = p->n - p->at < p->cfg.batch ? p->n - p->at : p->cfg.batch;
	out->rows = p->order + p->at;
	out->count = count;
	out->epoch = p->epoch;
	out->step = p->step++;
	p->at += count;
	if (p->at == p->n) {
		p->at = 0;
		p->epoch++;
	}
	return 1;
}

void ps_plan_gather(const ps_dataset *d, size_t first, const ps_plan_batch *b,
		    float *x, float *y)
{
	for (size_t i = 0; i < b->count; i++) {
		size_t row = b->rows[i] - first;
		assert(b->rows[i] >= first && row < d->n);
		memcpy(x + i * d->dim, d->x + row * d->dim,
		       d->dim * sizeof *x);
		y[i] = d->y[row];
	}
}
