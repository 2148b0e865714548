/*
 * siphash — SipHash-2-4, and ClickHouse's sipHash64.
 *
 * ClickHouse's sipHash64(s) is SipHash-2-4 of the bytes of s with the key
 * k0 = k1 = 0. upmon uses it to pick a row's shard exactly as the
 * Distributed table `events` does (sharding key sipHash64(attempt_id), all
 * weights 1): shard = sipHash64(attempt_id) % number_of_shards. The system
 * tests compare this implementation with the real server on many strings.
 *
 * Pure functions, reentrant, no state.
 */
#ifndef UPMON_SIPHASH_H
#define UPMON_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

/* SipHash-2-4 of len bytes of data (NULL allowed when len is 0) with the
 * 128-bit key k0 (bytes 0..7, little-endian) and k1 (bytes 8..15). */
uint64_t upm_siphash24(uint64_t k0, uint64_t k1, const void *data, size_t len);

/* ClickHouse's sipHash64 of a string's bytes: upm_siphash24(0, 0, ...). */
uint64_t upm_siphash64(const void *data, size_t len);

/* The 0-based shard of a sharding-key value among nshards equally weighted
 * shards: upm_siphash64(key) % nshards. nshards must be > 0. */
uint32_t upm_siphash_shard(const void *key, size_t len, uint32_t nshards);

#endif
