/*
 * ps_modelfile: see the layout in ps_modelfile.h. The header is packed
 * field by field into a byte buffer (no struct padding on disk).
 */
#include "ps_modelfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define MAGIC "PSMODEL"
#define CKPT_MAGIC "PSCKPT\0" /* 8 bytes with the final NUL */
#define MAGIC_SIZE 8
#define MAX_PARAMS ((uint64_t)1 << 32)

/* Header field offsets and sizes, as in the layout in ps_modelfile.h. */
#define OFF_FORMAT 8
#define OFF_NAME 12
#define OFF_HIDDEN 44
#define OFF_ACTIVATION 108
#define OFF_INPUT_DIM 124
#define OFF_OUTPUT_DIM 128
#define OFF_INIT_SEED 132
#define OFF_VERSION 140
#define OFF_NPARAMS 148
#define HEADER_SIZE 156

_Static_assert(OFF_HIDDEN - OFF_NAME == PS_MODEL_NAME_MAX &&
		       OFF_ACTIVATION - OFF_HIDDEN == PS_MODEL_HIDDEN_MAX &&
		       OFF_INPUT_DIM - OFF_ACTIVATION ==
			       PS_MODEL_ACTIVATION_MAX,
	       "the file's string fields are the spec's arrays");

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4); /* little-endian host, checked in ps_wire.c */
}

static void put64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* zlib's crc32 takes uInt lengths. */
static uLong crc_update(uLong crc, const void *p, uint64_t len)
{
	const Bytef *b = p;
	while (len > 0) {
		uInt k = len > (1u << 30) ? (1u << 30) : (uInt)len;
		crc = crc32(crc, b, k);
		b += k;
		len -= k;
	}
	return crc;
}

/* Make the rename itself durable. Best effort: some file systems refuse
 * to fsync a directory, and the file's own data is already on disk. */
static void sync_parent_dir(const char *path)
{
	char dir[4096];
	const char *slash = strrchr(path, '/');
	int fd;

	if (!slash)
		snprintf(dir, sizeof dir, ".");
	else if (snprintf(dir, sizeof dir, "%.*s", (int)(slash - path + 1),
			  path) >= (int)sizeof dir)
		return;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		(void)fsync(fd);
		close(fd);
	}
}

/* Both kinds share the header and the weights; a checkpoint then holds
 * u64 extra_len and extra_len bytes of its owner's state. */
static int write_file(const char *path, const char *magic,
		      const ps_model_spec *spec, uint64_t version,
		      const float *w, uint64_t num_params, const void *extra,
		      uint64_t extra_len, ps_err *e)
{
	uint8_t h[HEADER_SIZE] = {0}, tail[4], xlen[8];
	char tmp[4096];
	int fd = -1, rc = PS_OK;
	uLong crc;

	if (num_params == 0 || num_params > MAX_PARAMS)
		return ps_err_set(e, PS_EINVAL, "%s: cannot write %llu weights",
				  path, (unsigned long long)num_params);
	if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >=
	    (int)sizeof tmp)
		return ps_err_set(e, PS_EINVAL, "path too long: %s", path);
	memcpy(h, magic, MAGIC_SIZE);
	put32(h + OFF_FORMAT, PS_MODELFILE_FORMAT);
	memcpy(h + OFF_NAME, spec->name,
	       strnlen(spec->name, sizeof spec->name - 1));
	memcpy(h + OFF_HIDDEN, spec->hidden,
	       strnlen(spec->hidden, sizeof spec->hidden - 1));
	memcpy(h + OFF_ACTIVATION, spec->activation,
	       strnlen(spec->activation, sizeof spec->activation - 1));
	put32(h + OFF_INPUT_DIM, spec->input_dim);
	put32(h + OFF_OUTPUT_DIM, spec->output_dim);
	put64(h + OFF_INIT_SEED, spec->init_seed);
	put64(h + OFF_VERSION, version);
	put64(h + OFF_NPARAMS, num_params);
	put64(xlen, extra_len);
	crc = crc_update(crc32(0L, Z_NULL, 0), h, sizeof h);
	crc = crc_update(crc, w, num_params * 4);
	if (extra) {
		crc = crc_update(crc, xlen, sizeof xlen);
		crc = crc_update(crc, extra, extra_len);
	}
	put32(tail, (uint32_t)crc);

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = ps_err_set(e, PS_EIO, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	if (write_all(fd, h, sizeof h) < 0 ||
	    write_all(fd, w, num_params * 4) < 0 ||
	    (extra && (write_all(fd, xlen, sizeof xlen) < 0 ||
		       write_all(fd, extra, extra_len) < 0)) ||
	    write_all(fd, tail, sizeof tail) < 0 || fsync(fd) < 0) {
		rc = ps_err_set(e, PS_EIO, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	if (close(fd) < 0) {
		fd = -1;
		rc = ps_err_set(e, PS_EIO, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		rc = ps_err_set(e, PS_EIO, "%s: %s", path, strerror(errno));
		goto out;
	}
	sync_parent_dir(path);
out:
	if (fd >= 0)
		close(fd);
	if (rc != PS_OK)
		unlink(tmp);
	return rc;
}

int ps_modelfile_write(const char *path, const ps_model_spec *spec,
		       uint64_t version, const float *w, uint64_t num_params,
		       ps_err *e)
{
	return write_file(path, MAGIC, spec, version, w, num_params, NULL, 0,
			  e);
}

int ps_modelfile_write_checkpoint(const char *path, const ps_model_spec *spec,
				  uint64_t version, const float *w,
				  uint64_t num_params, const void *extra,
				  uint64_t extra_len, ps_err *e)
{
	static const uint8_t none;
	return write_file(path, CKPT_MAGIC, spec, version, w, num_params,
			  extra ? extra : &none, extra_len, e);
}

/* fread() of exactly len bytes, or the error that says why not. */
static int read_exact(FILE *f, void *buf, uint64_t len, const char *path,
		      const char *what, ps_err *e)
{
	if (len > 0 && fread(buf, 1, len, f) != len)
		return ferror(f) ? ps_err_set(e, PS_EIO, "%s: read error", path)
				 : ps_err_set(e, PS_ETRUNC, "%s: truncated %s",
					      path, what);
	return PS_OK;
}

static int read_file(const char *path, ps_model_spec *spec,
		     uint64_t *version, float **w, uint64_t *num_params,
		     void **extra, uint64_t *extra_len, ps_err *e)
{
	uint8_t h[HEADER_SIZE], tail[4], xlen[8];
	FILE *f = NULL;
	float *buf = NULL;
	uint8_t *xbuf = NULL;
	uint64_t n, x = 0;
	int rc = PS_OK, is_ckpt;
	uLong crc;
	struct stat st;
	uint64_t size;

	*w = NULL;
	f = fopen(path, "rb");
	if (!f) {
		rc = ps_err_set(e, errno == ENOENT ? PS_ENOENT : PS_EIO,
				"%s: %s", path, strerror(errno));
		goto out;
	}
	/* fopen() opens a directory; reading it fails with EISDIR, which
	 * is no truncation. */
	if (fstat(fileno(f), &st) < 0) {
		rc = ps_err_set(e, PS_EIO, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		rc = ps_err_set(e, PS_EIO, "%s: is a directory", path);
		goto out;
	}
	rc = read_exact(f, h, sizeof h, path, "header", e);
	if (rc != PS_OK)
		goto out;
	is_ckpt = memcmp(h, CKPT_MAGIC, MAGIC_SIZE) == 0;
	if (!is_ckpt && memcmp(h, MAGIC, MAGIC_SIZE) != 0) {
		rc = ps_err_set(e, PS_EFORMAT, "%s: not a pserver model file",
				path);
		goto out;
	}
	if (extra && !is_ckpt) {
		rc = ps_err_set(e, PS_EFORMAT,
				"%s: a model file, not a checkpoint", path);
		goto out;
	}
	if (get32(h + OFF_FORMAT) != PS_MODELFILE_FORMAT) {
		rc = ps_err_set(e, PS_EFORMAT,
				"%s: format version %u, expected %d", path,
				get32(h + OFF_FORMAT), PS_MODELFILE_FORMAT);
		goto out;
	}
	n = get64(h + OFF_NPARAMS);
	if (n == 0 || n > MAX_PARAMS || h[OFF_HIDDEN - 1] != 0 ||
	    h[OFF_ACTIVATION - 1] != 0 || h[OFF_INPUT_DIM - 1] != 0) {
		rc = ps_err_set(e, PS_EFORMAT, "%s: corrupt header", path);
		goto out;
	}
	/* A corrupt count must not make us allocate gigabytes for a small
	 * file: check it against the file's size first (when it has one). */
	size = HEADER_SIZE + n * 4 + 4 + (is_ckpt ? 8 : 0);
	if (S_ISREG(st.st_mode) &&
	    (is_ckpt ? (uint64_t)st.st_size < size
		     : (uint64_t)st.st_size != size)) {
		rc = ps_err_set(e,
				(uint64_t)st.st_size < size ? PS_ETRUNC
							    : PS_EFORMAT,
				"%s: %lld bytes, the header says %llu", path,
				(long long)st.st_size,
				(unsigned long long)size);
		goto out;
	}
	buf = malloc(n * 4);
	if (!buf) {
		rc = ps_err_set(e, PS_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	rc = read_exact(f, buf, n * 4, path, "weights", e);
	if (rc != PS_OK)
		goto out;
	crc = crc_update(crc32(0L, Z_NULL, 0), h, sizeof h);
	crc = crc_update(crc, buf, n * 4);
	if (is_ckpt) {
		rc = read_exact(f, xlen, sizeof xlen, path, "state", e);
		if (rc != PS_OK)
			goto out;
		x = get64(xlen);
		if (S_ISREG(st.st_mode) && x != (uint64_t)st.st_size - size) {
			rc = ps_err_set(e,
					x > (uint64_t)st.st_size - size
						? PS_ETRUNC
						: PS_EFORMAT,
					"%s: %lld bytes, the header says %llu",
					path, (long long)st.st_size,
					(unsigned long long)(size + x));
			goto out;
		}
		xbuf = malloc(x ? x : 1);
		if (!xbuf) {
			rc = ps_err_set(e, PS_ENOMEM, "%s: out of memory", path);
			goto out;
		}
		rc = read_exact(f, xbuf, x, path, "state", e);
		if (rc != PS_OK)
			goto out;
		crc = crc_update(crc, xlen, sizeof xlen);
		crc = crc_update(crc, xbuf, x);
	}
	rc = read_exact(f, tail, sizeof tail, path, "checksum", e);
	if (rc != PS_OK)
		goto out;
	if ((uint32_t)crc != get32(tail) || fgetc(f) != EOF) {
		rc = ps_err_set(e, PS_EFORMAT, "%s: checksum mismatch", path);
		goto out;
	}
	memset(spec, 0, sizeof *spec);
	memcpy(spec->name, h + OFF_NAME, sizeof spec->name);
	memcpy(spec->hidden, h + OFF_HIDDEN, sizeof spec->hidden);
	memcpy(spec->activation, h + OFF_ACTIVATION, sizeof spec->activation);
	spec->input_dim = get32(h + OFF_INPUT_DIM);
	spec->output_dim = get32(h + OFF_OUTPUT_DIM);
	spec->init_seed = get64(h + OFF_INIT_SEED);
	*version = get64(h + OFF_VERSION);
	*num_params = n;
	*w = buf;
	buf = NULL;
	if (extra) {
		*extra = xbuf;
		*extra_len = x;
		xbuf = NULL;
	}
out:
	free(buf);
	free(xbuf);
	if (f)
		fclose(f);
	return rc;
}

int ps_modelfile_read(const char *path, ps_model_spec *spec,
		      uint64_t *version, float **w, uint64_t *num_params,
		      ps_err *e)
{
	return read_file(path, spec, version, w, num_params, NULL, NULL, e);
}

int ps_modelfile_read_checkpoint(const char *path, ps_model_spec *spec,
				 uint64_t *version, float **w,
				 uint64_t *num_params, void **extra,
				 uint64_t *extra_len, ps_err *e)
{
	*extra = NULL;
	*extra_len = 0;
	return read_file(path, spec, version, w, num_params, extra, extra_len,
			 e);
}
