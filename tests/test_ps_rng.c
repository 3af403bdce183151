/*
 * Unit tests for ps_rng: the same seed gives the same stream (pinned to
 * the xoshiro256** reference values, so that a change of generator is
 * noticed), below() stays under its bound without bias, shuffle permutes,
 * and uniform/normal have the right moments.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ps_rng.h"

/* Reference splitmix64 + xoshiro256**, written out independently of
 * ps_rng.c from the published algorithms (Vigna, prng.di.unimi.it). */
static uint64_t ref_splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t ref_rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t ref_next(uint64_t s[4])
{
	const uint64_t result = ref_rotl(s[1] * 5, 7) * 9;
	const uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = ref_rotl(s[3], 45);
	return result;
}

static void test_rng_deterministic(void **state)
{
	(void)state;
	ps_rng a, b;
	ps_rng_seed(&a, 42);
	ps_rng_seed(&b, 42);
	for (int i = 0; i < 1000; i++)
		assert_true(ps_rng_next(&a) == ps_rng_next(&b));
	for (int i = 0; i < 100; i++) {
		assert_true(ps_rng_uniform(&a) == ps_rng_uniform(&b));
		assert_true(ps_rng_normal(&a) == ps_rng_normal(&b));
		assert_true(ps_rng_below(&a, 1000003) ==
			    ps_rng_below(&b, 1000003));
	}

	/* Reseeding restarts the stream. */
	uint64_t first = 0;
	ps_rng_seed(&a, 7);
	first = ps_rng_next(&a);
	ps_rng_next(&a);
	ps_rng_seed(&a, 7);
	assert_true(ps_rng_next(&a) == first);

	/* A copy forks the stream. */
	ps_rng_seed(&a, 9);
	ps_rng_next(&a);
	b = a;
	for (int i = 0; i < 10; i++)
		assert_true(ps_rng_next(&a) == ps_rng_next(&b));
}

static void test_rng_matches_reference(void **state)
{
	(void)state;
	const uint64_t seeds[] = {0, 1, 42, 0xffffffffffffffffULL,
				  0x0123456789abcdefULL};
	for (size_t k = 0; k < sizeof seeds / sizeof seeds[0]; k++) {
		uint64_t x = seeds[k], s[4];
		for (int i = 0; i < 4; i++)
			s[i] = ref_splitmix(&x);
		ps_rng r;
		ps_rng_seed(&r, seeds[k]);
		assert_memory_equal(r.s, s, sizeof s);
		for (int i = 0; i < 10000; i++)
			assert_true(ps_rng_next(&r) == ref_next(s));
	}
	/* Pinned: splitmix64(0) is a published constant. */
	ps_rng r;
	ps_rng_seed(&r, 0);
	assert_true(r.s[0] == 0xe220a8397b1dcdafULL);
}

static void test_rng_seeds_differ(void **state)
{
	(void)state;
	ps_rng a, b;
	int same = 0;
	ps_rng_seed(&a, 1);
	ps_rng_seed(&b, 2);
	for (int i = 0; i < 1000; i++)
		same += ps_rng_next(&a) == ps_rng_next(&b);
	assert_int_equal(same, 0);

	/* Seed zero still gives a working state (xoshiro's one bad state is
	 * all zeros). */
	ps_rng_seed(&a, 0);
	assert_false(a.s[0] == 0 && a.s[1] == 0 && a.s[2] == 0 && a.s[3] == 0);
	uint64_t x = ps_rng_next(&a), y = ps_rng_next(&a);
	assert_true(x != y);
}

static void test_rng_uniform_range_and_mean(void **state)
{
	(void)state;
	ps_rng r;
	enum { N = 200000 };
	double sum = 0, sumsq = 0, lo = 1, hi = 0;
	int bins[10] = {0};
	ps_rng_seed(&r, 123);
	for (int i = 0; i < N; i++) {
		double u = ps_rng_uniform(&r);
		assert_true(u >= 0.0);
		assert_true(u < 1.0);
		sum += u;
		sumsq += u * u;
		lo = u < lo ? u : lo;
		hi = u > hi ? u : hi;
		bins[(int)(u * 10)]++;
	}
	double mean = sum / N, var = sumsq / N - mean * mean;
	/* Standard error of the mean is 0.29 / sqrt(N) = 0.00065. */
	assert_true(fabs(mean - 0.5) < 0.005);
	assert_true(fabs(var - 1.0 / 12) < 0.002);
	assert_true(lo < 0.001);
	assert_true(hi > 0.999);
	for (int b = 0; b < 10; b++)
		assert_true(abs(bins[b] - N / 10) < N / 100);
}

static void test_rng_below_bound(void **state)
{
	(void)state;
	ps_rng r;
	ps_rng_seed(&r, 5);
	const uint64_t bounds[] = {1,
				   2,
				   3,
				   7,
				   10,
				   1000,
				   (1ULL << 32) + 1,
				   (1ULL << 63) + 1,
				   UINT64_MAX};
	for (size_t k = 0; k < sizeof bounds / sizeof bounds[0]; k++) {
		uint64_t maxseen = 0;
		for (int i = 0; i < 20000; i++) {
			uint64_t x = ps_rng_below(&r, bounds[k]);
			assert_true(x < bounds[k]);
			maxseen = x > maxseen ? x : maxseen;
		}
		if (bounds[k] == 1)
			assert_int_equal(maxseen, 0);
		else if (bounds[k] <= 1000)
			assert_true(maxseen == bounds[k] - 1);
		else
			assert_true(maxseen > bounds[k] / 2);
	}
}

/* Every value of a small bound comes up about equally often. With a
 * bound of 2/3 of 2^64, a plain modulo would give the lower half of the
 * range twice the weight of the upper half: a mean near 0.417 of the
 * bound instead of 0.5. */
static void test_rng_below_unbiased(void **state)
{
	(void)state;
	ps_rng r;
	enum { N = 70000, K = 7 };
	int count[K] = {0};
	ps_rng_seed(&r, 77);
	for (int i = 0; i < N; i++)
		count[ps_rng_below(&r, K)]++;
	for (int k = 0; k < K; k++)
		assert_true(abs(count[k] - N / K) < N / K / 10);

	const uint64_t bound = 0xaaaaaaaaaaaaaaaaULL;
	double mean = 0;
	for (int i = 0; i < 20000; i++)
		mean += (double)ps_rng_below(&r, bound) / (double)bound;
	mean /= 20000;
	assert_true(fabs(mean - 0.5) < 0.015);
}

static void test_rng_shuffle_is_permutation(void **state)
{
	(void)state;
	ps_rng r;
	enum { N = 1000 };
	uint32_t idx[N];
	int seen[N];
	ps_rng_seed(&r, 99);
	for (uint32_t i = 0; i < N; i++)
		idx[i] = i;
	ps_rng_shuffle(&r, idx, N);
	memset(seen, 0, sizeof seen);
	int fixed = 0;
	for (uint32_t i = 0; i < N; i++) {
		assert_true(idx[i] < N);
		seen[idx[i]]++;
		fixed += idx[i] == i;
	}
	for (int i = 0; i < N; i++)
		assert_int_equal(seen[i], 1);
	/* A shuffle moves things: about one fixed point is expected. */
	assert_true(fixed < 10);

	/* The same seed shuffles the same way; another seed differently. */
	uint32_t a[N], b[N];
	for (uint32_t i = 0; i < N; i++)
		a[i] = b[i] = i * 3;
	ps_rng_seed(&r, 1);
	ps_rng_shuffle(&r, a, N);
	ps_rng_seed(&r, 1);
	ps_rng_shuffle(&r, b, N);
	assert_memory_equal(a, b, sizeof a);
	ps_rng_seed(&r, 2);
	for (uint32_t i = 0; i < N; i++)
		b[i] = i * 3;
	ps_rng_shuffle(&r, b, N);
	assert_memory_not_equal(a, b, sizeof a);
}

static void test_rng_shuffle_small(void **state)
{
	(void)state;
	ps_rng r;
	uint32_t one[1] = {42};
	ps_rng_seed(&r, 3);
	ps_rng_shuffle(&r, one, 1);
	assert_int_equal(one[0], 42);
	ps_rng_shuffle(&r, NULL, 0);

	/* All 6 orders of 3 elements appear, each about 1/6 of the time. */
	int count[6] = {0};
	enum { N = 60000 };
	for (int i = 0; i < N; i++) {
		uint32_t v[3] = {0, 1, 2};
		ps_rng_shuffle(&r, v, 3);
		assert_int_equal(v[0] + v[1] + v[2], 3);
		assert_true(v[0] != v[1] && v[1] != v[2] && v[0] != v[2]);
		count[v[0] * 2 + (v[1] > v[2])]++;
	}
	for (int k = 0; k < 6; k++)
		assert_true(abs(count[k] - N / 6) < N / 60);
}

static void test_rng_normal_moments(void **state)
{
	(void)state;
	ps_rng r;
	enum { N = 200000 };
	double sum = 0, sumsq = 0;
	int within1 = 0;
	ps_rng_seed(&r, 2718);
	for (int i = 0; i < N; i++) {
		double z = ps_rng_normal(&r);
		assert_true(isfinite(z));
		sum += z;
		sumsq += z * z;
		within1 += fabs(z) < 1.0;
	}
	double mean = sum / N, var = sumsq / N - mean * mean;
	assert_true(fabs(mean) < 0.01);
	assert_true(fabs(var - 1.0) < 0.02);
	/* 68.27% within one standard deviation. */
	assert_true(fabs((double)within1 / N - 0.6827) < 0.01);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rng_deterministic),
		cmocka_unit_test(test_rng_matches_reference),
		cmocka_unit_test(test_rng_seeds_differ),
		cmocka_unit_test(test_rng_uniform_range_and_mean),
		cmocka_unit_test(test_rng_below_bound),
		cmocka_unit_test(test_rng_below_unbiased),
		cmocka_unit_test(test_rng_shuffle_is_permutation),
		cmocka_unit_test(test_rng_shuffle_small),
		cmocka_unit_test(test_rng_normal_moments),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
