/*
 * ps_rng: a small seeded pseudo-random generator (xoshiro256**, seeded by
 * splitmix64) so that data generation, initialization and shuffling give
 * the same numbers on every machine and libc.
 */
#ifndef PS_RNG_H
#define PS_RNG_H

#include <stddef.h>
#include <stdint.h>

/* Plain value record; copy it to fork a stream. */
typedef struct ps_rng {
	uint64_t s[4];
} ps_rng;

void ps_rng_seed(ps_rng *r, uint64_t seed);
uint64_t ps_rng_next(ps_rng *r);
/* Uniform in [0, 1). */
double ps_rng_uniform(ps_rng *r);
/* Uniform integer in [0, bound); bound > 0. Unbiased. */
uint64_t ps_rng_below(ps_rng *r, uint64_t bound);
/* Standard normal (Box-Muller). */
double ps_rng_normal(ps_rng *r);
/* Fisher-Yates shuffle of idx[0..n). */
void ps_rng_shuffle(ps_rng *r, uint32_t *idx, size_t n);

#endif
