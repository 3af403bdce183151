/*
 * Unit tests for ps_modelfile: write/read round trip, and every way a
 * model file can be refused: missing, corrupt in any byte, truncated at
 * any point, wrong magic or format version, absurd sizes; write failures
 * leave no temporary file behind. Files live in a mkdtemp directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "ps_error.h"
#include "ps_model.h"
#include "ps_modelfile.h"
#include "test_rmtree.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER_ALLOCATOR 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||   \
	__has_feature(memory_sanitizer)
#define UNDER_SANITIZER_ALLOCATOR 1
#endif
#endif

/* Layout offsets from ps_modelfile.h. */
#define OFF_FORMAT 8
#define OFF_NAME 12
#define OFF_HIDDEN 44
#define OFF_ACTIVATION 108
#define OFF_INPUT_DIM 124
#define OFF_INIT_SEED 132
#define OFF_NPARAMS 148
#define HEADER_SIZE 156

#define NPARAMS 257

static char tmpdir[] = "/tmp/test_ps_modelfile.XXXXXX";

#define TPATH(var, name)                                                       \
	char var[PATH_MAX];                                                    \
	snprintf(var, sizeof var, "%s/%s", tmpdir, name)

static int group_setup(void **state)
{
	(void)state;
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	return test_rmtree(tmpdir);
}

/* --- helpers ---------------------------------------------------------- */

static void sample_spec(ps_model_spec *s)
{
	memset(s, 0, sizeof *s);
	snprintf(s->name, sizeof s->name, "softmax");
	snprintf(s->hidden, sizeof s->hidden, "128,64");
	snprintf(s->activation, sizeof s->activation, "tanh");
	s->input_dim = 784;
	s->output_dim = 10;
	s->init_seed = 0x0123456789abcdefULL;
}

static void sample_weights(float *w, size_t n)
{
	for (size_t i = 0; i < n; i++)
		w[i] = (float)i * 0.125f - 3.0f + (float)(i % 7) * 1e-3f;
}

static void write_sample(const char *path)
{
	ps_model_spec s;
	float w[NPARAMS];
	ps_err e = {0, ""};
	sample_spec(&s);
	sample_weights(w, NPARAMS);
	int rc = ps_modelfile_write(path, &s, 4242, w, NPARAMS, &e);
	if (rc != PS_OK)
		fail_msg("write %s: %s", path, e.msg);
}

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	long n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	uint8_t *buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static void spit(const char *path, const void *buf, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	if (len)
		assert_int_equal(fwrite(buf, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* Read path expecting code want; on failure *w must be NULL and e.msg
 * must name the file. */
static void expect_read(const char *path, int want)
{
	ps_model_spec s;
	uint64_t version = 0, n = 0;
	float *w = (float *)&s; /* must be reset to NULL on failure */
	ps_err e = {0, ""};
	int rc = ps_modelfile_read(path, &s, &version, &w, &n, &e);
	if (rc != want)
		fail_msg("read %s: %s (%s), expected %s", path,
			 ps_errname(rc), e.msg, ps_errname(want));
	if (want != PS_OK) {
		assert_null(w);
		assert_int_equal(e.code, want);
		assert_non_null(strstr(e.msg, path));
	}
	free(w);
}

/* Read path, return the error code (w freed). */
static int read_rc(const char *path)
{
	ps_model_spec s;
	uint64_t version = 0, n = 0;
	float *w = NULL;
	int rc = ps_modelfile_read(path, &s, &version, &w, &n, NULL);
	if (rc != PS_OK)
		assert_null(w);
	free(w);
	return rc;
}

/* Header fields rewritten with a fresh CRC, so that only the field under
 * test is wrong. */
static void rewrite_crc(uint8_t *buf, size_t len)
{
	uLong crc = crc32(0L, Z_NULL, 0);
	crc = crc32(crc, buf, (uInt)(len - 4));
	uint32_t c = (uint32_t)crc;
	memcpy(buf + len - 4, &c, 4);
}

/* Names in the test directory that start with prefix. */
static int count_entries(const char *prefix)
{
	DIR *d = opendir(tmpdir);
	struct dirent *de;
	int n = 0;
	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		if (strncmp(de->d_name, prefix, strlen(prefix)) == 0)
			n++;
	closedir(d);
	return n;
}

/* --- round trip ------------------------------------------------------- */

static void test_modelfile_roundtrip(void **state)
{
	(void)state;
	TPATH(path, "rt.psm");
	ps_model_spec s, got;
	float w[NPARAMS];
	float *rw = NULL;
	uint64_t version = 0, n = 0;
	ps_err e = {0, ""};

	sample_spec(&s);
	sample_weights(w, NPARAMS);
	w[0] = -0.0f;
	w[1] = 1e-45f; /* denormal */
	w[2] = 3.4e38f;
	assert_int_equal(ps_modelfile_write(path, &s, 987654321012ULL, w,
					    NPARAMS, &e),
			 PS_OK);
	memset(&got, 0x5a, sizeof got);
	assert_int_equal(ps_modelfile_read(path, &got, &version, &rw, &n, &e),
			 PS_OK);
	assert_non_null(rw);
	assert_string_equal(got.name, "softmax");
	assert_string_equal(got.hidden, "128,64");
	assert_string_equal(got.activation, "tanh");
	assert_int_equal(got.input_dim, 784);
	assert_int_equal(got.output_dim, 10);
	assert_true(got.init_seed == 0x0123456789abcdefULL);
	assert_true(version == 987654321012ULL);
	assert_int_equal(n, NPARAMS);
	assert_memory_equal(rw, w, sizeof w);
	free(rw);

	/* The file has exactly the documented size, and the fields sit at
	 * the documented offsets. */
	size_t len;
	uint8_t *buf = slurp(path, &len);
	uint32_t u32;
	uint64_t u64;
	float f;
	assert_int_equal(len, HEADER_SIZE + 4 * NPARAMS + 4);
	assert_memory_equal(buf, "PSMODEL", 8);
	assert_memory_equal(buf + OFF_NAME, "softmax\0", 8);
	assert_memory_equal(buf + OFF_HIDDEN, "128,64\0", 7);
	assert_memory_equal(buf + OFF_ACTIVATION, "tanh\0", 5);
	memcpy(&u32, buf + OFF_INPUT_DIM, 4);
	assert_int_equal(u32, 784);
	memcpy(&u32, buf + OFF_INPUT_DIM + 4, 4);
	assert_int_equal(u32, 10);
	memcpy(&u64, buf + OFF_INIT_SEED, 8);
	assert_true(u64 == 0x0123456789abcdefULL);
	memcpy(&u64, buf + OFF_INIT_SEED + 8, 8);
	assert_true(u64 == 987654321012ULL);
	memcpy(&u64, buf + OFF_NPARAMS, 8);
	assert_int_equal(u64, NPARAMS);
	memcpy(&f, buf + HEADER_SIZE + 4 * 3, 4);
	assert_true(f == w[3]);
	free(buf);
}

static void test_modelfile_roundtrip_longest_strings(void **state)
{
	(void)state;
	TPATH(path, "long.psm");
	ps_model_spec s, got;
	float w[3] = {1, 2, 3}, *rw = NULL;
	uint64_t version = 0, n = 0;

	sample_spec(&s);
	memset(s.name, 'n', sizeof s.name - 1);
	s.name[sizeof s.name - 1] = '\0';
	memset(s.hidden, 'h', sizeof s.hidden - 1);
	s.hidden[sizeof s.hidden - 1] = '\0';
	memset(s.activation, 'a', sizeof s.activation - 1);
	s.activation[sizeof s.activation - 1] = '\0';
	assert_int_equal(ps_modelfile_write(path, &s, 0, w, 3, NULL), PS_OK);
	assert_int_equal(
		ps_modelfile_read(path, &got, &version, &rw, &n, NULL), PS_OK);
	assert_string_equal(got.name, s.name);
	assert_string_equal(got.hidden, s.hidden);
	assert_string_equal(got.activation, s.activation);
	assert_int_equal(version, 0);
	assert_int_equal(n, 3);
	assert_memory_equal(rw, w, sizeof w);
	free(rw);
}

/* The write goes through a temporary file and a rename: afterwards only
 * the target exists, and an existing file is replaced whole. */
static void test_modelfile_write_is_atomic(void **state)
{
	(void)state;
	TPATH(path, "atomic.psm");
	ps_model_spec s, got;
	float w1[4] = {1, 2, 3, 4}, w2[6] = {9, 8, 7, 6, 5, 4}, *rw = NULL;
	uint64_t version = 0, n = 0;

	sample_spec(&s);
	assert_int_equal(ps_modelfile_write(path, &s, 1, w1, 4, NULL), PS_OK);
	assert_int_equal(count_entries("atomic.psm"), 1);
	assert_int_equal(ps_modelfile_write(path, &s, 2, w2, 6, NULL), PS_OK);
	assert_int_equal(count_entries("atomic.psm"), 1);
	assert_int_equal(count_entries("atomic.psm.tmp"), 0);
	assert_int_equal(
		ps_modelfile_read(path, &got, &version, &rw, &n, NULL), PS_OK);
	assert_int_equal(version, 2);
	assert_int_equal(n, 6);
	assert_memory_equal(rw, w2, sizeof w2);
	free(rw);

	struct stat st;
	mode_t um = umask(0);
	umask(um);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644 & ~um);
}

/* --- failures --------------------------------------------------------- */

static void test_modelfile_missing_file(void **state)
{
	(void)state;
	TPATH(path, "does-not-exist.psm");
	expect_read(path, PS_ENOENT);
	TPATH(path2, "no-such-dir/model.psm");
	expect_read(path2, PS_ENOENT);
}

static void test_modelfile_read_directory(void **state)
{
	(void)state;
	expect_read(tmpdir, PS_EIO);
}

/* Every single flipped byte is refused. A flip in num_params changes how
 * long the file should be: a larger count finds the file too short
 * (PS_ETRUNC), a smaller or absurd one is a format error; everywhere else
 * it is a format error (magic, version, NUL padding, or the CRC). */
static void test_modelfile_flipped_byte_refused(void **state)
{
	(void)state;
	TPATH(good, "flip-good.psm");
	TPATH(bad, "flip-bad.psm");
	size_t len;
	write_sample(good);
	uint8_t *orig = slurp(good, &len);
	uint8_t *buf = malloc(len);
	assert_non_null(buf);

	for (size_t pos = 0; pos < len; pos++) {
		const uint8_t masks[] = {0x01, 0x80, 0xff};
		for (size_t k = 0; k < sizeof masks; k++) {
			memcpy(buf, orig, len);
			buf[pos] ^= masks[k];
			spit(bad, buf, len);
			int rc = read_rc(bad);
			int in_count = pos >= OFF_NPARAMS &&
				       pos < OFF_NPARAMS + 8;
			if (in_count ? rc != PS_EFORMAT && rc != PS_ETRUNC
				     : rc != PS_EFORMAT)
				fail_msg("byte %zu ^ 0x%02x of %zu: %s", pos,
					 masks[k], len, ps_errname(rc));
		}
	}
	spit(bad, orig, len);
	assert_int_equal(read_rc(bad), PS_OK);
	free(buf);
	free(orig);
}

static void test_modelfile_truncated(void **state)
{
	(void)state;
	TPATH(good, "trunc-good.psm");
	TPATH(bad, "trunc-bad.psm");
	size_t len;
	write_sample(good);
	uint8_t *orig = slurp(good, &len);
	const size_t cuts[] = {0,
			       1,
			       7,
			       8,
			       OFF_NPARAMS + 4,
			       HEADER_SIZE - 1,
			       HEADER_SIZE,
			       HEADER_SIZE + 1,
			       HEADER_SIZE + 4,
			       HEADER_SIZE + 4 * NPARAMS / 2,
			       HEADER_SIZE + 4 * NPARAMS - 1,
			       HEADER_SIZE + 4 * NPARAMS, /* no CRC */
			       len - 3,
			       len - 1};
	for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
		spit(bad, orig, cuts[i]);
		/* Short of the header or of the body: truncated. */
		int rc = read_rc(bad);
		if (rc != PS_ETRUNC)
			fail_msg("cut at %zu of %zu: %s", cuts[i], len,
				 ps_errname(rc));
		expect_read(bad, PS_ETRUNC);
	}
	free(orig);
}

/* Bytes after the CRC: the file is not what was written. */
static void test_modelfile_trailing_bytes(void **state)
{
	(void)state;
	TPATH(good, "trail-good.psm");
	TPATH(bad, "trail-bad.psm");
	size_t len;
	write_sample(good);
	uint8_t *orig = slurp(good, &len);
	uint8_t *buf = calloc(1, len + 8);
	assert_non_null(buf);
	memcpy(buf, orig, len);
	spit(bad, buf, len + 1);
	expect_read(bad, PS_EFORMAT);
	spit(bad, buf, len + 8);
	expect_read(bad, PS_EFORMAT);
	free(buf);
	free(orig);
}

static void test_modelfile_wrong_magic(void **state)
{
	(void)state;
	TPATH(good, "magic-good.psm");
	TPATH(bad, "magic-bad.psm");
	size_t len;
	write_sample(good);
	uint8_t *buf = slurp(good, &len);

	memcpy(buf, "PSMODEX", 8);
	rewrite_crc(buf, len);
	spit(bad, buf, len);
	expect_read(bad, PS_EFORMAT);

	/* Some other file entirely. */
	char text[400];
	memset(text, 'a', sizeof text);
	spit(bad, text, sizeof text);
	expect_read(bad, PS_EFORMAT);
	uint8_t zeros[HEADER_SIZE + 100] = {0};
	spit(bad, zeros, sizeof zeros);
	expect_read(bad, PS_EFORMAT);
	free(buf);
}

/* Header fields a valid CRC cannot excuse. */
static void test_modelfile_bad_header_fields(void **state)
{
	(void)state;
	TPATH(good, "hdr-good.psm");
	TPATH(bad, "hdr-bad.psm");
	size_t len;
	write_sample(good);
	uint8_t *orig = slurp(good, &len);
	uint8_t *buf = malloc(len);
	assert_non_null(buf);
	uint32_t u32;
	uint64_t u64;

	/* Format version 2. */
	memcpy(buf, orig, len);
	u32 = 2;
	memcpy(buf + OFF_FORMAT, &u32, 4);
	rewrite_crc(buf, len);
	spit(bad, buf, len);
	expect_read(bad, PS_EFORMAT);

	/* Zero parameters. */
	memcpy(buf, orig, len);
	u64 = 0;
	memcpy(buf + OFF_NPARAMS, &u64, 8);
	rewrite_crc(buf, len);
	spit(bad, buf, len);
	expect_read(bad, PS_EFORMAT);

	/* More parameters than any model has. */
	memcpy(buf, orig, len);
	u64 = UINT64_MAX;
	memcpy(buf + OFF_NPARAMS, &u64, 8);
	spit(bad, buf, len);
	expect_read(bad, PS_EFORMAT);
	u64 = (1ULL << 32) + 1;
	memcpy(buf + OFF_NPARAMS, &u64, 8);
	spit(bad, buf, len);
	expect_read(bad, PS_EFORMAT);

	/* Name and hidden strings without their terminating NUL. */
	memcpy(buf, orig, len);
	memset(buf + OFF_NAME, 'x', 32);
	rewrite_crc(buf, len);
	spit(bad, buf, len);
	expect_read(bad, PS_EFORMAT);
	memcpy(buf, orig, len);
	memset(buf + OFF_HIDDEN, 'x', 64);
	rewrite_crc(buf, len);
	spit(bad, buf, len);
	expect_read(bad, PS_EFORMAT);
	memcpy(buf, orig, len);
	memset(buf + OFF_ACTIVATION, 'x', 16);
	rewrite_crc(buf, len);
	spit(bad, buf, len);
	expect_read(bad, PS_EFORMAT);
	/* The last byte alone is enough. */
	memcpy(buf, orig, len);
	buf[OFF_INPUT_DIM - 1] = 'x';
	rewrite_crc(buf, len);
	spit(bad, buf, len);
	expect_read(bad, PS_EFORMAT);

	/* With a recomputed CRC, a changed weight is undetectable: that the
	 * CRC above was the only thing wrong is shown by this passing. */
	memcpy(buf, orig, len);
	buf[HEADER_SIZE + 5] ^= 0x10;
	rewrite_crc(buf, len);
	spit(bad, buf, len);
	expect_read(bad, PS_OK);
	free(buf);
	free(orig);
}

/* A corrupt count far beyond the file's size is refused before the
 * reader allocates memory for it (gigabytes here). */
static void test_modelfile_huge_count_small_file(void **state)
{
	(void)state;
	TPATH(good, "huge-good.psm");
	TPATH(bad, "huge-bad.psm");
	size_t len;
	write_sample(good);
	uint8_t *buf = slurp(good, &len);
	uint64_t n = 1ULL << 32; /* 16 GiB of floats, the largest allowed */
	memcpy(buf + OFF_NPARAMS, &n, 8);
	rewrite_crc(buf, len);
	spit(bad, buf, len);

	struct rlimit old, lim;
	assert_int_equal(getrlimit(RLIMIT_AS, &old), 0);
#ifndef UNDER_SANITIZER_ALLOCATOR
	/* Any attempt at 16 GiB fails here; the read must not even try. */
	lim = old;
	if (lim.rlim_cur == RLIM_INFINITY || lim.rlim_cur > (4ull << 30))
		lim.rlim_cur = 4ull << 30;
	assert_int_equal(setrlimit(RLIMIT_AS, &lim), 0);
#else
	(void)lim;
#endif
	int rc = read_rc(bad);
	assert_int_equal(setrlimit(RLIMIT_AS, &old), 0);
	assert_int_equal(rc, PS_ETRUNC);
	free(buf);
}

/* A sparse file of the size the header asks for: the allocation fails
 * under an address-space limit and is reported, not fatal. */
static void test_modelfile_out_of_memory(void **state)
{
#ifdef UNDER_SANITIZER_ALLOCATOR
	(void)state;
	skip();
#else
	(void)state;
	TPATH(good, "oom-good.psm");
	TPATH(bad, "oom-bad.psm");
	size_t len;
	write_sample(good);
	uint8_t *buf = slurp(good, &len);
	uint64_t n = 1ULL << 31; /* 8 GiB */
	memcpy(buf + OFF_NPARAMS, &n, 8);
	spit(bad, buf, HEADER_SIZE);
	assert_int_equal(truncate(bad, (off_t)(HEADER_SIZE + 4 * n + 4)), 0);

	struct rlimit old, lim;
	ps_model_spec s;
	uint64_t version = 0, got = 0;
	float *w = NULL;
	ps_err e = {0, ""};
	assert_int_equal(getrlimit(RLIMIT_AS, &old), 0);
	lim = old;
	if (lim.rlim_cur == RLIM_INFINITY || lim.rlim_cur > (4ull << 30))
		lim.rlim_cur = 4ull << 30;
	assert_int_equal(setrlimit(RLIMIT_AS, &lim), 0);
	int rc = ps_modelfile_read(bad, &s, &version, &w, &got, &e);
	assert_int_equal(setrlimit(RLIMIT_AS, &old), 0);
	assert_int_equal(rc, PS_ENOMEM);
	assert_null(w);
	assert_non_null(strstr(e.msg, bad));
	unlink(bad);
	free(buf);
#endif
}

static void test_modelfile_unwritable_directory(void **state)
{
	(void)state;
	ps_model_spec s;
	float w[2] = {1, 2};
	ps_err e = {0, ""};
	sample_spec(&s);

	/* A directory that does not exist. */
	TPATH(p1, "missing-dir/model.psm");
	assert_int_equal(ps_modelfile_write(p1, &s, 1, w, 2, &e), PS_EIO);
	assert_int_equal(e.code, PS_EIO);
	assert_non_null(strstr(e.msg, "missing-dir"));

	/* A "directory" that is a regular file. */
	TPATH(file, "plainfile");
	spit(file, "x", 1);
	TPATH(p2, "plainfile/model.psm");
	assert_int_equal(ps_modelfile_write(p2, &s, 1, w, 2, &e), PS_EIO);
	assert_non_null(strstr(e.msg, "plainfile"));

	/* A directory without write permission (root ignores the mode). */
	TPATH(ro, "readonly");
	assert_int_equal(mkdir(ro, 0500), 0);
	TPATH(p3, "readonly/model.psm");
	if (geteuid() != 0) {
		assert_int_equal(ps_modelfile_write(p3, &s, 1, w, 2, &e),
				 PS_EIO);
		assert_non_null(strstr(e.msg, "readonly"));
	}
	chmod(ro, 0700);

	/* The target is a directory: the temporary file is written, the
	 * rename fails, and the temporary file is removed. */
	TPATH(dirtarget, "target-dir");
	assert_int_equal(mkdir(dirtarget, 0700), 0);
	TPATH(inside, "target-dir/keep");
	spit(inside, "k", 1);
	assert_int_equal(ps_modelfile_write(dirtarget, &s, 1, w, 2, &e),
			 PS_EIO);
	assert_non_null(strstr(e.msg, "target-dir"));
	assert_int_equal(count_entries("target-dir"), 1);
}

static void test_modelfile_path_too_long(void **state)
{
	(void)state;
	ps_model_spec s;
	float w[1] = {0};
	ps_err e = {0, ""};
	char path[5000];
	sample_spec(&s);
	memset(path, 'p', sizeof path - 1);
	path[sizeof path - 1] = '\0';
	assert_int_equal(ps_modelfile_write(path, &s, 1, w, 1, &e), PS_EINVAL);
	assert_non_null(strstr(e.msg, "too long"));
}

static void test_modelfile_write_refuses_empty_model(void **state)
{
	(void)state;
	ps_model_spec s;
	float w[1] = {0};
	ps_err e = {0, ""};
	sample_spec(&s);
	assert_int_equal(ps_modelfile_write("never-written", &s, 1, w, 0, &e),
			 PS_EINVAL);
	assert_int_equal(access("never-written", F_OK), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_modelfile_roundtrip),
		cmocka_unit_test(test_modelfile_roundtrip_longest_strings),
		cmocka_unit_test(test_modelfile_write_is_atomic),
		cmocka_unit_test(test_modelfile_missing_file),
		cmocka_unit_test(test_modelfile_read_directory),
		cmocka_unit_test(test_modelfile_flipped_byte_refused),
		cmocka_unit_test(test_modelfile_truncated),
		cmocka_unit_test(test_modelfile_trailing_bytes),
		cmocka_unit_test(test_modelfile_wrong_magic),
		cmocka_unit_test(test_modelfile_bad_header_fields),
		cmocka_unit_test(test_modelfile_huge_count_small_file),
		cmocka_unit_test(test_modelfile_out_of_memory),
		cmocka_unit_test(test_modelfile_unwritable_directory),
		cmocka_unit_test(test_modelfile_path_too_long),
		cmocka_unit_test(test_modelfile_write_refuses_empty_model),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
