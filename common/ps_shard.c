/*
 * ps_shard: shard k starts after k shards of size floor(n / S), plus one
 * for each of the min(k, n mod S) larger shards before it.
 */
#include "ps_shard.h"

void ps_shard_range(uint64_t n, uint32_t num_shards, uint32_t k,
		    uint64_t *begin, uint64_t *end)
{
	uint64_t base = n / num_shards, extra = n % num_shards;

	*begin = k * base + (k < extra ? k : extra);
	*end = *begin + base + (k < extra ? 1 : 0);
}

uint32_t ps_shard_of(uint64_t n, uint32_t num_shards, uint64_t i)
{
	uint64_t base = n / num_shards, extra = n % num_shards;
	uint64_t big = extra * (base + 1); /* weights in the larger shards */

	if (i < big)
		return (uint32_t)(i / (base + 1));
	return (uint32_t)(extra + (i - big) / base);
}
