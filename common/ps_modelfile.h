/*
 * ps_modelfile: the trained-model file the server writes at the end of a
 * run and evaluation tools read: model spec, weights version and the
 * float32 weights, with a CRC-32, written atomically (temporary file,
 * fsync, rename) so a reader never sees half a file.
 *
 * Layout, all integers little-endian (docs/PROTOCOL.md repeats it):
 *   0   char[8]  magic "PSMODEL\0"
 *   8   u32      format version (1)
 *   12  char[32] model name, NUL-padded
 *   44  char[64] hidden layers, NUL-padded
 *   108 char[16] activation, NUL-padded
 *   124 u32      input_dim
 *   128 u32      output_dim
 *   132 u64      init_seed
 *   140 u64      version (updates applied)
 *   148 u64      num_params
 *   156 f32[num_params] weights
 *   ... u32      CRC-32 (zlib) of every byte before it
 * Each string field holds at most its size - 1 characters: the last byte
 * is always NUL.
 *
 * A checkpoint (the server's, docs/FAULTS.md) is the same file with magic
 * "PSCKPT\0\0", and between the weights and the CRC:
 *   ... u64      extra_len
 *   ... u8[extra_len] the server's state (its own versioned layout)
 * so that every tool that reads a model can read a checkpoint's weights.
 */
#ifndef PS_MODELFILE_H
#define PS_MODELFILE_H

#include <stdint.h>

#include "ps_error.h"
#include "ps_model.h"

#define PS_MODELFILE_FORMAT 1

/* Write atomically to path. Errors: PS_EIO (e->msg has the path and
 * strerror), PS_EINVAL (path too long, num_params 0 or above 2^32). */
int ps_modelfile_write(const char *path, const ps_model_spec *spec,
		       uint64_t version, const float *w, uint64_t num_params,
		       ps_err *e) PS_WUR;

/* Write a checkpoint: as ps_modelfile_write(), plus extra[extra_len]
 * (extra may be NULL when extra_len is 0). Errors as ps_modelfile_write(). */
int ps_modelfile_write_checkpoint(const char *path, const ps_model_spec *spec,
				  uint64_t version, const float *w,
				  uint64_t num_params, const void *extra,
				  uint64_t extra_len, ps_err *e) PS_WUR;

/* Read a model file or a checkpoint's model (its extra part checked by
 * the CRC, then dropped). Errors: PS_ENOENT, PS_EFORMAT (bad magic, format
 * version, sizes, or checksum), PS_ETRUNC (shorter than its header says;
 * checked before the weights are allocated), PS_EIO (a read error, or
 * path is a directory), PS_ENOMEM.
 * On success *w is owned by the caller (release with free()). */
int ps_modelfile_read(const char *path, ps_model_spec *spec,
		      uint64_t *version, float **w, uint64_t *num_params,
		      ps_err *e) PS_WUR;

/* Read a checkpoint: as ps_modelfile_read(), plus *extra[*extra_len]
 * (its length checked against the file's size before allocation). A
 * model file is refused with PS_EFORMAT. On success *w and *extra are
 * owned by the caller (release with free()). */
int ps_modelfile_read_checkpoint(const char *path, ps_model_spec *spec,
				 uint64_t *version, float **w,
				 uint64_t *num_params, void **extra,
				 uint64_t *extra_len, ps_err *e) PS_WUR;

#endif
