/*
 * ps_shard: how the model's weights are cut into contiguous key ranges,
 * one per server shard, balanced by parameter count: with n weights and S
 * shards, shard k owns [begin, end) and the sizes differ by at most one
 * (the first n mod S shards hold one more). Every server and client
 * computes the same cut from (n, S) alone.
 */
#ifndef PS_SHARD_H
#define PS_SHARD_H

#include <stdint.h>

/* The range of shard k of S (k < S, S >= 1) over n weights. When S > n
 * the last S - n shards own empty ranges (begin == end). */
void ps_shard_range(uint64_t n, uint32_t num_shards, uint32_t k,
		    uint64_t *begin, uint64_t *end);

/* The shard owning weight i (i < n). */
uint32_t ps_shard_of(uint64_t n, uint32_t num_shards, uint64_t i);

#endif
