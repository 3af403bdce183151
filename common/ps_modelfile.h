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

/* Read a model file. Errors: PS_ENOENT, PS_EFORMAT (bad magic, format
 * version, sizes, or checksum), PS_ETRUNC (shorter than its header says;
 * checked before the weights are allocated), PS_EIO (a read error, or
 * path is a directory), PS_ENOMEM.
 * On success *w is owned by the caller (release with free()). */
int ps_modelfile_read(const char *path, ps_model_spec *spec,
		      uint64_t *version, float **w, uint64_t *num_params,
		      ps_err *e) PS_WUR;

#endif
