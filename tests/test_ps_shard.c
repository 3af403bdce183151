/*
 * Unit tests for ps_shard: for many (n, S), the ranges tile [0, n) in
 * order, differ in size by at most one, and ps_shard_of agrees with them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ps_shard.h"

static void check_cut(uint64_t n, uint32_t s)
{
	uint64_t next = 0, min = UINT64_MAX, max = 0;

	for (uint32_t k = 0; k < s; k++) {
		uint64_t b, e;
		ps_shard_range(n, s, k, &b, &e);
		if (b != next || e < b)
			fail_msg("n %llu S %u shard %u: [%llu, %llu) after %llu",
				 (unsigned long long)n, s, k,
				 (unsigned long long)b, (unsigned long long)e,
				 (unsigned long long)next);
		if (e - b < min)
			min = e - b;
		if (e - b > max)
			max = e - b;
		/* Sampled: the first, last and middle weight of the range. */
		if (e > b) {
			uint64_t probe[3] = {b, e - 1, b + (e - b) / 2};
			for (int j = 0; j < 3; j++)
				if (ps_shard_of(n, s, probe[j]) != k)
					fail_msg("n %llu S %u: weight %llu in shard %u, "
						 "ps_shard_of says %u",
						 (unsigned long long)n, s,
						 (unsigned long long)probe[j], k,
						 ps_shard_of(n, s, probe[j]));
		}
		next = e;
	}
	assert_int_equal(next, n);
	assert_true(max - min <= 1);
}

static void test_shard_ranges_tile_and_balance(void **state)
{
	(void)state;
	for (uint64_t n = 0; n <= 300; n++)
		for (uint32_t s = 1; s <= 17; s++)
			check_cut(n, s);
	/* Large models, prime and power-of-two counts. */
	check_cut(203530, 3);
	check_cut(10000000, 2);
	check_cut(10000019, 7);
	check_cut((uint64_t)1 << 32, 64);
	check_cut(((uint64_t)1 << 32) + 5, 1000);
}

static void test_shard_ranges_by_hand(void **state)
{
	uint64_t b, e;
	(void)state;
	/* 10 over 3: 4, 3, 3. */
	ps_shard_range(10, 3, 0, &b, &e);
	assert_true(b == 0 && e == 4);
	ps_shard_range(10, 3, 1, &b, &e);
	assert_true(b == 4 && e == 7);
	ps_shard_range(10, 3, 2, &b, &e);
	assert_true(b == 7 && e == 10);
	/* More shards than weights: 2 over 4 is 1, 1, 0, 0. */
	ps_shard_range(2, 4, 1, &b, &e);
	assert_true(b == 1 && e == 2);
	ps_shard_range(2, 4, 3, &b, &e);
	assert_true(b == 2 && e == 2);
	/* One shard owns everything. */
	ps_shard_range(15, 1, 0, &b, &e);
	assert_true(b == 0 && e == 15);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shard_ranges_tile_and_balance),
		cmocka_unit_test(test_shard_ranges_by_hand),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
