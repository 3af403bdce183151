/*
 * ps_rng: xoshiro256** (Blackman and Vigna), state filled by splitmix64 so
 * that any 64-bit seed, zero included, gives a good state.
 */
#include "ps_rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

void ps_rng_seed(ps_rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

uint64_t ps_rng_next(ps_rng *r)
{
	uint64_t *s = r->s;
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

double ps_rng_uniform(ps_rng *r)
{
	return (double)(ps_rng_next(r) >> 11) * 0x1.0p-53;
}

uint64_t ps_rng_below(ps_rng *r, uint64_t bound)
{
	/* Rejection keeps it unbiased: discard the top partial block. */
	uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
	uint64_t x;
	do
		x = ps_rng_next(r);
	while (x >= limit);
	return x % bound;
}

double ps_rng_normal(ps_rng *r)
{
	double u1, u2;
	do
		u1 = ps_rng_uniform(r);
	while (u1 <= 0.0);
	u2 = ps_rng_uniform(r);
	return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void ps_rng_shuffle(ps_rng *r, uint32_t *idx, size_t n)
{
	for (size_t i = n; i > 1; i--) {
		size_t j = (size_t)ps_rng_below(r, i);
		uint32_t t = idx[i - 1];
		idx[i - 1] = idx[j];
		idx[j] = t;
	}
}
