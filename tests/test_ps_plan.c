/*
 * Unit tests for ps_plan: the minibatches equal those of the trainer's
 * loop as it was written before the plan was factored out of it (shard
 * cut before the held-out tail, per-rank stream, one shuffle per epoch),
 * every epoch covers the shard once, the step count is exact, and bad
 * configurations are refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "ps_dataset.h"
#include "ps_plan.h"
#include "ps_rng.h"

static ps_plan_config config(size_t rows, double val_fraction, uint32_t rank,
			     uint32_t num_workers, uint64_t seed,
			     uint32_t batch, uint32_t epochs)
{
	ps_plan_config c;

	memset(&c, 0, sizeof c);
	c.rows = rows;
	c.val_fraction = val_fraction;
	c.rank = rank;
	c.num_workers = num_workers;
	c.seed = seed;
	c.batch = batch;
	c.epochs = epochs;
	return c;
}

static ps_plan *plan_new(const ps_plan_config *c)
{
	ps_plan *p = NULL;
	ps_err e = { 0, "" };

	assert_int_equal(ps_plan_new(&p, c, &e), PS_OK);
	assert_non_null(p);
	return p;
}

/* The trainer's loop before ps_plan existed, written out again: shard
 * order indices relative to the shard, shuffled at each epoch's start,
 * cut into batches. Checks the plan's batches against it one by one. */
static void check_against_reference(const ps_plan_config *c)
{
	size_t hold = c->val_fraction > 0
			      ? (size_t)((double)c->rows * c->val_fraction)
			      : 0;
	size_t begin, end, n, pb, pe;
	uint32_t *order;
	uint64_t step = 0;
	ps_plan *p = plan_new(c);
	ps_plan_batch b;
	ps_rng rng;

	ps_dataset_shard_range(c->rows - hold, c->rank, c->num_workers,
			       &begin, &end);
	n = end - begin;
	ps_plan_shard(p, &pb, &pe);
	assert_int_equal(pb, begin);
	assert_int_equal(pe, end);
	order = malloc((n ? n : 1) * sizeof *order);
	assert_non_null(order);
	for (size_t i = 0; i < n; i++)
		order[i] = (uint32_t)i;
	ps_rng_seed(&rng, c->seed ^ (0x9e3779b97f4a7c15ULL * (c->rank + 1)));
	for (uint32_t epoch = 0; epoch < c->epochs && n > 0; epoch++) {
		ps_rng_shuffle(&rng, order, n);
		for (size_t at = 0; at < n; at += c->batch) {
			size_t count = n - at < c->batch ? n - at : c->batch;
			assert_int_equal(ps_plan_next(p, &b), 1);
			assert_int_equal(b.count, count);
			assert_int_equal(b.epoch, epoch);
			assert_int_equal(b.step, step);
			for (size_t i = 0; i < count; i++)
				assert_int_equal(b.rows[i],
						 begin + order[at + i]);
			step++;
		}
	}
	assert_int_equal(ps_plan_steps(p), step);
	assert_int_equal(ps_plan_next(p, &b), 0);
	assert_int_equal(ps_plan_next(p, &b), 0);
	free(order);
	ps_plan_destroy(&p);
	assert_null(p);
}

static void test_plan_matches_the_trainers_loop(void **state)
{
	(void)state;
	/* Even and uneven shards, a batch that does and does not divide
	 * them, a held-out tail, one and several workers. */
	const ps_plan_config cases[] = {
		config(1000, 0, 0, 1, 7, 32, 2),
		config(1000, 0, 0, 3, 7, 32, 3),
		config(1000, 0, 2, 3, 7, 32, 3),
		config(1001, 0.1, 1, 2, 5, 50, 2),
		config(60, 0, 1, 4, 9, 15, 4),
		config(10, 0.25, 2, 3, 1, 64, 2),
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		check_against_reference(&cases[i]);
}

/* Every epoch hands out each row of the shard exactly once; the next
 * epoch is shuffled anew. */
static void test_plan_epochs_cover_the_shard(void **state)
{
	ps_plan_config c = config(257, 0.2, 1, 3, 11, 10, 3);
	ps_plan *p = plan_new(&c);
	size_t begin, end, seen_n = 0;
	unsigned char *seen;
	uint32_t *first = NULL, *second = NULL;
	ps_plan_batch b;
	uint32_t epoch = 0;

	(void)state;
	ps_plan_shard(p, &begin, &end);
	/* 257 - 51 held out = 206 rows over 3 ranks: 69, 69, 68. */
	assert_int_equal(begin, 69);
	assert_int_equal(end, 138);
	seen = calloc(end - begin, 1);
	first = calloc(end - begin, sizeof *first);
	second = calloc(end - begin, sizeof *second);
	assert_true(seen && first && second);
	while (ps_plan_next(p, &b)) {
		if (b.epoch != epoch) {
			assert_int_equal(b.epoch, epoch + 1);
			assert_int_equal(seen_n, end - begin);
			memset(seen, 0, end - begin);
			seen_n = 0;
			epoch = b.epoch;
		}
		for (size_t i = 0; i < b.count; i++) {
			assert_true(b.rows[i] >= begin && b.rows[i] < end);
			assert_int_equal(seen[b.rows[i] - begin], 0);
			seen[b.rows[i] - begin] = 1;
			if (epoch == 0)
				first[seen_n] = b.rows[i];
			else if (epoch == 1)
				second[seen_n] = b.rows[i];
			seen_n++;
		}
	}
	assert_int_equal(epoch, 2);
	assert_int_equal(seen_n, end - begin);
	assert_true(memcmp(first, second, (end - begin) * sizeof *first) != 0);
	free(seen);
	free(first);
	free(second);
	ps_plan_destroy(&p);
}

static void test_plan_steps_and_empty_shards(void **state)
{
	ps_plan_config c = config(5, 0, 0, 2, 1, 2, 3);
	ps_plan *p = plan_new(&c);
	size_t begin, end;
	ps_plan_batch b;

	(void)state;
	/* 3 rows, batch 2: batches of 2 and 1, three epochs. */
	assert_int_equal(ps_plan_steps(p), 6);
	ps_plan_destroy(&p);

	/* 2 rows for 3 workers: the last one gets none, and no batch. */
	c = config(2, 0, 2, 3, 1, 4, 5);
	p = plan_new(&c);
	ps_plan_shard(p, &begin, &end);
	assert_int_equal(begin, end);
	assert_int_equal(ps_plan_steps(p), 0);
	assert_int_equal(ps_plan_next(p, &b), 0);
	ps_plan_destroy(&p);

	/* No epochs: no batch either. */
	c = config(100, 0, 0, 1, 1, 10, 0);
	p = plan_new(&c);
	assert_int_equal(ps_plan_steps(p), 0);
	assert_int_equal(ps_plan_next(p, &b), 0);
	ps_plan_destroy(&p);
}

/* The same configuration gives the same batches; another seed or rank
 * another order. */
static void test_plan_depends_on_seed_and_rank(void **state)
{
	ps_plan_config a = config(300, 0, 0, 1, 3, 300, 1);
	ps_plan_config b = a, c = a;
	ps_plan *pa, *pb, *pc;
	ps_plan_batch ba, bb, bc;

	(void)state;
	c.seed = 4;
	pa = plan_new(&a);
	pb = plan_new(&b);
	pc = plan_new(&c);
	assert_int_equal(ps_plan_next(pa, &ba), 1);
	assert_int_equal(ps_plan_next(pb, &bb), 1);
	assert_int_equal(ps_plan_next(pc, &bc), 1);
	assert_memory_equal(ba.rows, bb.rows, 300 * sizeof *ba.rows);
	assert_true(memcmp(ba.rows, bc.rows, 300 * sizeof *ba.rows) != 0);
	ps_plan_destroy(&pa);
	ps_plan_destroy(&pb);
	ps_plan_destroy(&pc);
}

static void test_plan_gather_copies_rows_in_batch_order(void **state)
{
	ps_dataset *d = NULL;
	ps_err e = { 0, "" };
	ps_plan_config c = config(40, 0, 1, 2, 2, 8, 1);
	ps_plan *p;
	ps_plan_batch b;
	float x[8], y[8];

	(void)state;
	assert_int_equal(ps_dataset_synthetic_linear(&d, 40, 3, 2, 0.1, 1, &e),
			 PS_OK);
	p = plan_new(&c);
	assert_int_equal(ps_plan_next(p, &b), 1);
	ps_plan_gather(d, 0, &b, x, y);
	for (size_t i = 0; i < b.count; i++) {
		assert_true(x[i] == d->x[b.rows[i]]);
		assert_true(y[i] == d->y[b.rows[i]]);
	}
	ps_plan_destroy(&p);
	ps_dataset_destroy(&d);
}

/* A trainer keeps only its shard (ps_dataset_keep_rows()) and gathers
 * from it with the shard's first row: every batch of every epoch gets the
 * rows the whole set would have given. */
static void test_plan_gather_from_the_shard_alone(void **state)
{
	ps_dataset *all = NULL, *mine = NULL;
	ps_err e = { 0, "" };
	ps_plan_config c = config(41, 0.1, 1, 3, 5, 4, 2);
	ps_plan *p;
	ps_plan_batch b;
	size_t begin, end;
	float xa[4], ya[4], xm[4], ym[4];
	int batches = 0;

	(void)state;
	assert_int_equal(ps_dataset_synthetic_linear(&all, 41, 3, 2, 0.1, 1,
						     &e),
			 PS_OK);
	assert_int_equal(ps_dataset_synthetic_linear(&mine, 41, 3, 2, 0.1, 1,
						     &e),
			 PS_OK);
	p = plan_new(&c);
	ps_plan_shard(p, &begin, &end);
	assert_true(begin > 0 && end < 41);
	assert_int_equal(ps_dataset_keep_rows(mine, begin, end), PS_OK);
	while (ps_plan_next(p, &b)) {
		ps_plan_gather(all, 0, &b, xa, ya);
		ps_plan_gather(mine, begin, &b, xm, ym);
		assert_memory_equal(xa, xm, b.count * sizeof *xa);
		assert_memory_equal(ya, ym, b.count * sizeof *ya);
		batches++;
	}
	assert_int_equal(batches, 2 * 3); /* 2 epochs of 12 rows, 4 a batch */
	ps_plan_destroy(&p);
	ps_dataset_destroy(&mine);
	ps_dataset_destroy(&all);
}

static void test_plan_new_rejects_bad_config(void **state)
{
	const ps_plan_config bad[] = {
		config(100, 0, 2, 2, 1, 10, 1),   /* rank >= workers */
		config(100, 0, 0, 0, 1, 10, 1),   /* no workers */
		config(100, 0, 0, 1, 1, 0, 1),    /* batch 0 */
		config(100, 1.0, 0, 1, 1, 10, 1), /* everything held out */
		config(100, -0.1, 0, 1, 1, 10, 1),
		config((size_t)UINT32_MAX + 1, 0, 0, 1, 1, 10, 1),
	};

	char junk;

	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		ps_plan *p = (ps_plan *)(void *)&junk; /* must become NULL */
		ps_err e = { 0, "" };
		assert_int_equal(ps_plan_new(&p, &bad[i], &e), PS_EINVAL);
		assert_null(p);
		assert_int_equal(e.code, PS_EINVAL);
		assert_true(e.msg[0] != '\0');
	}
}

static void test_plan_destroy_accepts_null(void **state)
{
	ps_plan *p = NULL;

	(void)state;
	ps_plan_destroy(NULL);
	ps_plan_destroy(&p);
	assert_null(p);
}

static void test_plan_held_out(void **state)
{
	(void)state;
	assert_int_equal(ps_plan_held_out(1000, 0), 0);
	assert_int_equal(ps_plan_held_out(1000, -1), 0);
	assert_int_equal(ps_plan_held_out(1000, 0.1), 100);
	assert_int_equal(ps_plan_held_out(1001, 0.1), 100);
	assert_int_equal(ps_plan_held_out(9, 0.1), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plan_matches_the_trainers_loop),
		cmocka_unit_test(test_plan_epochs_cover_the_shard),
		cmocka_unit_test(test_plan_steps_and_empty_shards),
		cmocka_unit_test(test_plan_depends_on_seed_and_rank),
		cmocka_unit_test(test_plan_gather_copies_rows_in_batch_order),
		cmocka_unit_test(test_plan_gather_from_the_shard_alone),
		cmocka_unit_test(test_plan_new_rejects_bad_config),
		cmocka_unit_test(test_plan_destroy_accepts_null),
		cmocka_unit_test(test_plan_held_out),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
