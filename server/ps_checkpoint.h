/*
 * ps_checkpoint: the server's checkpoints. A checkpoint is a model file
 * (ps_modelfile.h, magic "PSCKPT") whose extra part holds what the server
 * needs to carry on: optimizer state, counters, and each worker's clock,
 * push sequence window and counts. Written atomically with a CRC; a
 * directory keeps the newest few, named by version. docs/FAULTS.md says
 * what is saved and what a resume loses.
 */
#ifndef PS_CHECKPOINT_H
#define PS_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "ps_error.h"
#include "ps_model.h"

/* Layout version of the extra part; a reader refuses any other. */
#define PS_CHECKPOINT_FORMAT 1

/* One training worker's standing. Plain value record. */
typedef struct ps_checkpoint_worker {
	uint64_t clock;    /* pushes counted for bsp/ssp */
	uint64_t last_seq; /* highest push seq applied */
	uint64_t seq_mask; /* bit i: seq last_seq - 1 - i was applied */
	uint64_t pushes, samples;
	int done;          /* said bye */
} ps_checkpoint_worker;

/* Everything a checkpoint holds. Plain value record; after
 * ps_checkpoint_read() its arrays are owned by it (ps_checkpoint_release());
 * for ps_checkpoint_write() they are the caller's. */
typedef struct ps_checkpoint {
	ps_model_spec spec;
	float *w;
	uint64_t n;             /* weights in w: this shard's */
	uint64_t begin, total;  /* w holds [begin, begin + n) of total */
	uint32_t shard, num_shards;
	uint64_t version;       /* updates applied */
	uint64_t model_version; /* version of the weights in w */
	uint32_t optim_kind;    /* enum ps_optim_kind */
	uint64_t optim_steps;
	float *state;           /* optimizer state, state_count floats */
	uint64_t state_count;
	uint32_t consistency;   /* enum ps_consistency */
	uint32_t num_workers;
	ps_checkpoint_worker *workers; /* [num_workers] */
	uint64_t samples, pulls, pushes_applied, bsp_steps, bsp_clock;
	uint64_t staleness_max, staleness_hist[8], updates_lost;
	double staleness_sum, train_seconds;
} ps_checkpoint;

/* Write ck to path atomically (temporary file, fsync, rename).
 * Errors: those of ps_modelfile_write_checkpoint(), PS_ENOMEM. */
int ps_checkpoint_write(const char *path, const ps_checkpoint *ck,
			ps_err *e) PS_WUR;

/* Read and validate a checkpoint: CRC, format versions, and every length
 * and value against the others, before anything is used. Errors:
 * PS_ENOENT, PS_EIO, PS_ETRUNC, PS_EFORMAT (e->msg says what is wrong),
 * PS_ENOMEM. On success release *ck with ps_checkpoint_release(). */
int ps_checkpoint_read(const char *path, ps_checkpoint *ck, ps_err *e) PS_WUR;

/* Free what ps_checkpoint_read() allocated and zero *ck. */
void ps_checkpoint_release(ps_checkpoint *ck);

/* In directory dir: write ck as ckpt-<version>.psck, then delete all but
 * the newest `keep` (>= 1) checkpoints. *written (may be NULL) gets the
 * path. Errors as ps_checkpoint_write(); PS_EINVAL for a path too long. */
int ps_checkpoint_save(const char *dir, const ps_checkpoint *ck, int keep,
		       char *written, size_t written_len, ps_err *e) PS_WUR;

/* Where shard `shard` of `num_shards` keeps its checkpoints under the
 * run's checkpoint directory root: root itself for a single server, else
 * root/<S>-shards/shard-<K> (so that a run resumed onto another shard
 * count never mixes its files with the old cut's). Errors: PS_EINVAL (too
 * long for out[len]). */
int ps_checkpoint_dir(const char *root, uint32_t num_shards, uint32_t shard,
		      char *out, size_t len, ps_err *e) PS_WUR;

/* Write root/manifest.json atomically: the model, its size, the shard
 * count and every shard's range, as of checkpoint ck (shard 0 writes it).
 * Errors: PS_EIO, PS_EINVAL. */
int ps_checkpoint_write_manifest(const char *root, const ps_checkpoint *ck,
				 ps_err *e) PS_WUR;

/* Load what shard `shard` of `num_shards` resumes from, out of the run's
 * checkpoints under root, into *ck, and the path(s) it came from into
 * from[len]. When the manifest's shard count (1 without a manifest)
 * equals num_shards, that is the shard's newest valid checkpoint. Else
 * the ranges are recut: the newest version that every old shard has a
 * valid checkpoint of is read, and this shard's range of weights and
 * optimizer state is copied out of the old shards that overlap it; the
 * counters and workers' standing come from the old shard holding the
 * range's first weight. Errors: those of ps_checkpoint_load_newest(), and
 * PS_EFORMAT when the old shards have no version in common or disagree
 * on the model. */
int ps_checkpoint_load_for(const char *root, uint32_t num_shards,
			   uint32_t shard, ps_checkpoint *ck, char *from,
			   size_t len, ps_err *e) PS_WUR;

/* Load the newest valid checkpoint of dir into *ck, its path into
 * path[len]. A checkpoint that fails to load is logged with its reason
 * and skipped for the next older one. Errors: PS_ENOENT (dir missing, or
 * no checkpoint in it), PS_EFORMAT (every one refused; e->msg has the
 * newest one's reason), PS_EIO, PS_ENOMEM. */
int ps_checkpoint_load_newest(const char *dir, ps_checkpoint *ck, char *path,
			      size_t len, ps_err *e) PS_WUR;

#endif
