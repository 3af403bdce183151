/*
 * Unit tests for ps_dataset: IDX loading from small files written into a
 * temporary directory (plain and gzip), every documented failure, the
 * synthetic regression, spec strings, shard ranges and slices.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "ps_dataset.h"
#include "ps_error.h"
#include "test_rmtree.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER_ALLOCATOR 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||   \
	__has_feature(memory_sanitizer)
#define UNDER_SANITIZER_ALLOCATOR 1
#endif
#endif

#define FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"
#define MAGIC_IMAGES 0x00000803u
#define MAGIC_LABELS 0x00000801u

static char tmpdir[] = "/tmp/test_ps_dataset.XXXXXX";

/* Path of a file in the test directory. */
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

static void write_bytes(const char *path, int gz, const void *buf, size_t len)
{
	if (gz) {
		gzFile f = gzopen(path, "wb");
		assert_non_null(f);
		if (len)
			assert_int_equal(gzwrite(f, buf, (unsigned)len),
					 (int)len);
		assert_int_equal(gzclose(f), Z_OK);
	} else {
		FILE *f = fopen(path, "wb");
		assert_non_null(f);
		if (len)
			assert_int_equal(fwrite(buf, 1, len, f), len);
		assert_int_equal(fclose(f), 0);
	}
}

/* An IDX file: magic, nd big-endian dimensions, then datalen bytes. */
static void write_idx(const char *path, int gz, uint32_t magic,
		      const uint32_t *dims, unsigned nd,
		      const unsigned char *data, size_t datalen)
{
	size_t len = 4 + 4 * (size_t)nd + datalen;
	unsigned char *buf = malloc(len);
	unsigned char *p = buf;

	assert_non_null(buf);
	for (unsigned i = 0; i <= nd; i++) {
		uint32_t v = i == 0 ? magic : dims[i - 1];
		*p++ = (unsigned char)(v >> 24);
		*p++ = (unsigned char)(v >> 16);
		*p++ = (unsigned char)(v >> 8);
		*p++ = (unsigned char)v;
	}
	if (datalen)
		memcpy(p, data, datalen);
	write_bytes(path, gz, buf, len);
	free(buf);
}

/* n labels 0, 1, ..., 9, 0, 1, ... */
static void write_labels(const char *path, int gz, uint32_t n)
{
	unsigned char *l = malloc(n ? n : 1);

	assert_non_null(l);
	for (uint32_t i = 0; i < n; i++)
		l[i] = (unsigned char)(i % 10);
	write_idx(path, gz, MAGIC_LABELS, &n, 1, l, n);
	free(l);
}

/* n images of rows x cols with a known pattern, optionally short. */
static void write_images(const char *path, int gz, uint32_t n, uint32_t rows,
			 uint32_t cols, size_t datalen)
{
	uint32_t dims[3] = { n, rows, cols };
	unsigned char *px = malloc(datalen ? datalen : 1);

	assert_non_null(px);
	for (size_t i = 0; i < datalen; i++)
		px[i] = (unsigned char)(i * 31 + i / 7);
	write_idx(path, gz, MAGIC_IMAGES, dims, 3, px, datalen);
	free(px);
}

static off_t file_size(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return st.st_size;
}

/* rc and e agree on the expected code, and e->msg mentions needle. */
static void check_fails(int rc, int want, const ps_err *e, const char *needle)
{
	if (rc != want || (needle && !strstr(e->msg, needle)))
		print_message("got %s \"%s\", want %s mentioning \"%s\"\n",
			      ps_errname(rc), e->msg, ps_errname(want),
			      needle ? needle : "");
	assert_int_equal(rc, want);
	assert_int_equal(e->code, want);
	if (needle)
		assert_non_null(strstr(e->msg, needle));
}

/* Load files named in the test directory; *d is NULL on failure. */
static int load(ps_dataset **d, const char *images, const char *labels,
		ps_err *e)
{
	TPATH(ip, images);
	TPATH(lp, labels);
	int rc;

	memset(e, 0, sizeof *e);
	rc = ps_dataset_load_idx(d, ip, lp, e);
	if (rc != PS_OK)
		assert_null(*d);
	return rc;
}

static void test_dataset_load_idx_plain(void **state)
{
	static const unsigned char px[] = { 0,   255, 51,  102, 1,  2,
					    3,   4,   200, 100, 50, 25 };
	static const unsigned char lab[] = { 0, 2, 1 };
	uint32_t idims[3] = { 3, 2, 2 }, ldims[1] = { 3 };
	ps_dataset *d = NULL;
	ps_err e;
	TPATH(ip, "plain-images");
	TPATH(lp, "plain-labels");

	(void)state;
	write_idx(ip, 0, MAGIC_IMAGES, idims, 3, px, sizeof px);
	write_idx(lp, 0, MAGIC_LABELS, ldims, 1, lab, sizeof lab);
	assert_int_equal(load(&d, "plain-images", "plain-labels", &e), PS_OK);
	assert_non_null(d);
	assert_int_equal(d->n, 3);
	assert_int_equal(d->dim, 4);
	assert_int_equal(d->classes, 3);
	assert_true(d->owns_data);
	for (size_t i = 0; i < sizeof px; i++)
		assert_true(d->x[i] == (float)px[i] / 255.0f);
	assert_true(d->x[0] == 0.0f);
	assert_true(d->x[1] == 1.0f);
	for (size_t i = 0; i < sizeof lab; i++)
		assert_true(d->y[i] == (float)lab[i]);
	ps_dataset_destroy(&d);
	assert_null(d);
}

/* Big enough to cross the loader's 1 MiB read chunk. */
static void test_dataset_load_idx_gzip(void **state)
{
	const uint32_t n = 1500, rows = 28, cols = 28;
	size_t len = (size_t)n * rows * cols;
	ps_dataset *d = NULL;
	ps_err e;
	TPATH(ip, "gz-images.gz");
	TPATH(lp, "gz-labels.gz");

	(void)state;
	write_images(ip, 1, n, rows, cols, len);
	write_labels(lp, 1, n);
	assert_true(file_size(ip) < (off_t)len); /* really compressed */
	assert_int_equal(load(&d, "gz-images.gz", "gz-labels.gz", &e), PS_OK);
	assert_int_equal(d->n, n);
	assert_int_equal(d->dim, rows * cols);
	assert_int_equal(d->classes, 10);
	for (size_t i = 0; i < len; i++) {
		unsigned char b = (unsigned char)(i * 31 + i / 7);
		if (d->x[i] != (float)b / 255.0f)
			fail_msg("x[%zu] = %g, want %g", i, d->x[i],
				 (float)b / 255.0f);
	}
	for (size_t i = 0; i < n; i++)
		assert_true(d->y[i] == (float)(i % 10));
	ps_dataset_destroy(&d);
}

/* Any number of dimensions after the count; dim is their product. */
static void test_dataset_load_idx_any_ndims(void **state)
{
	static const uint32_t d2[2] = { 2, 5 };
	static const uint32_t d4[4] = { 2, 2, 3, 4 };
	unsigned char px[48];
	ps_dataset *d = NULL;
	ps_err e;
	TPATH(i2, "nd2-images");
	TPATH(i4, "nd4-images");
	TPATH(lp, "nd-labels");

	(void)state;
	for (size_t i = 0; i < sizeof px; i++)
		px[i] = (unsigned char)(5 * i);
	write_idx(i2, 0, 0x00000802, d2, 2, px, 10);
	write_idx(i4, 1, 0x00000804, d4, 4, px, 48);
	write_labels(lp, 0, 2);
	assert_int_equal(load(&d, "nd2-images", "nd-labels", &e), PS_OK);
	assert_int_equal(d->n, 2);
	assert_int_equal(d->dim, 5);
	assert_true(d->x[9] == 45.0f / 255.0f);
	ps_dataset_destroy(&d);
	assert_int_equal(load(&d, "nd4-images", "nd-labels", &e), PS_OK);
	assert_int_equal(d->n, 2);
	assert_int_equal(d->dim, 24);
	assert_int_equal(d->classes, 2);
	assert_true(d->x[47] == 235.0f / 255.0f);
	ps_dataset_destroy(&d);
}

static void test_dataset_truncated_images(void **state)
{
	ps_dataset *d = NULL;
	ps_err e;
	TPATH(ip, "trunc-images");
	TPATH(gp, "trunc-images.gz");
	TPATH(lp, "trunc-labels");

	(void)state;
	/* 10 images of 2x2 promised, 4 and a bit delivered. */
	write_images(ip, 0, 10, 2, 2, 17);
	write_images(gp, 1, 10, 2, 2, 17);
	write_labels(lp, 0, 10);
	check_fails(load(&d, "trunc-images", "trunc-labels", &e), PS_ETRUNC,
		    &e, "header says 10 images of 4 bytes, file ends after 4");
	assert_non_null(strstr(e.msg, ip));
	check_fails(load(&d, "trunc-images.gz", "trunc-labels", &e),
		    PS_ETRUNC, &e, "file ends after 4");
	assert_non_null(strstr(e.msg, gp));
}

static void test_dataset_truncated_labels(void **state)
{
	uint32_t n = 10;
	unsigned char lab[7] = { 0 };
	ps_dataset *d = NULL;
	ps_err e;
	TPATH(ip, "tl-images");
	TPATH(lp, "tl-labels");

	(void)state;
	write_images(ip, 0, 10, 2, 2, 40);
	write_idx(lp, 0, MAGIC_LABELS, &n, 1, lab, sizeof lab);
	check_fails(load(&d, "tl-images", "tl-labels", &e), PS_ETRUNC, &e,
		    "header says 10 labels, file ends after 7");
	assert_non_null(strstr(e.msg, lp));
}

static void test_dataset_truncated_header(void **state)
{
	static const unsigned char two[2] = { 0, 0 };
	uint32_t dims[2] = { 10, 2 };
	ps_dataset *d = NULL;
	ps_err e;
	TPATH(empty, "th-empty");
	TPATH(half, "th-half-magic");
	TPATH(dims_short, "th-dims");
	TPATH(lp, "th-labels");
	TPATH(images_ok, "th-images-ok");

	(void)state;
	write_bytes(empty, 0, NULL, 0);
	write_bytes(half, 1, two, sizeof two);
	/* Magic says three dimensions, only two follow. */
	write_idx(dims_short, 0, MAGIC_IMAGES, dims, 2, NULL, 0);
	write_labels(lp, 0, 10);
	check_fails(load(&d, "th-empty", "th-labels", &e), PS_ETRUNC, &e,
		    empty);
	check_fails(load(&d, "th-half-magic", "th-labels", &e), PS_ETRUNC,
		    &e, "truncated");
	check_fails(load(&d, "th-dims", "th-labels", &e), PS_ETRUNC, &e,
		    "header has 3 dimensions, file ends after 2");
	/* The labels' header too. */
	write_images(images_ok, 0, 10, 2, 2, 40);
	check_fails(load(&d, "th-images-ok", "th-empty", &e), PS_ETRUNC, &e,
		    empty);
}

/* A gzip stream cut short: zlib returns what it could inflate. */
static void test_dataset_truncated_gzip_stream(void **state)
{
	ps_dataset *d = NULL;
	ps_err e;
	TPATH(ip, "cut-images.gz");
	TPATH(lp, "cut-labels");

	(void)state;
	write_images(ip, 1, 1000, 28, 28, 1000 * 784);
	write_labels(lp, 0, 1000);
	assert_int_equal(truncate(ip, file_size(ip) / 2), 0);
	check_fails(load(&d, "cut-images.gz", "cut-labels", &e), PS_ETRUNC,
		    &e, "header says 1000 images of 784 bytes");
}

/* A damaged gzip trailer is an error, whether zlib checks it with the
 * last data byte or on the loader's read past the end. */
static void test_dataset_corrupt_gzip(void **state)
{
	ps_dataset *d = NULL;
	ps_err e;
	TPATH(ip, "crc-images.gz");
	TPATH(lp, "crc-labels");
	FILE *f;
	off_t size;
	int c;

	(void)state;
	write_images(ip, 1, 100, 4, 4, 1600);
	write_labels(lp, 0, 100);
	size = file_size(ip);
	f = fopen(ip, "r+b");
	assert_non_null(f);
	assert_int_equal(fseeko(f, size - 8, SEEK_SET), 0);
	c = fgetc(f);
	assert_int_equal(fseeko(f, size - 8, SEEK_SET), 0);
	assert_int_equal(fputc(c ^ 0xff, f), c ^ 0xff);
	assert_int_equal(fclose(f), 0);
	check_fails(load(&d, "crc-images.gz", "crc-labels", &e), PS_EFORMAT,
		    &e, "corrupt gzip data");
	assert_non_null(strstr(e.msg, ip));
}

static void test_dataset_wrong_magic(void **state)
{
	static const uint32_t dims[3] = { 1, 2, 2 };
	static const unsigned char px[4] = { 1, 2, 3, 4 };
	ps_dataset *d = NULL;
	ps_err e;
	TPATH(ip, "wm-images");
	TPATH(lp, "wm-labels");
	TPATH(bogus, "wm-bogus");
	TPATH(floats, "wm-float");

	(void)state;
	write_idx(ip, 0, MAGIC_IMAGES, dims, 3, px, 4);
	write_labels(lp, 0, 1);
	write_idx(bogus, 0, 0x12345678, dims, 0, px, 4);
	write_idx(floats, 0, 0x00000d03, dims, 3, px, 4);
	assert_int_equal(load(&d, "wm-images", "wm-labels", &e), PS_OK);
	ps_dataset_destroy(&d);
	/* Swapped: the labels file is not images, and vice versa. */
	check_fails(load(&d, "wm-labels", "wm-images", &e), PS_EFORMAT, &e,
		    "wrong magic 0x00000801");
	check_fails(load(&d, "wm-images", "wm-images", &e), PS_EFORMAT, &e,
		    "wrong magic 0x00000803 for labels");
	check_fails(load(&d, "wm-bogus", "wm-labels", &e), PS_EFORMAT, &e,
		    "not an IDX file (magic 0x12345678)");
	assert_non_null(strstr(e.msg, bogus));
	check_fails(load(&d, "wm-float", "wm-labels", &e), PS_EFORMAT, &e,
		    "element type 0x0d");
}

static void test_dataset_count_mismatch(void **state)
{
	ps_dataset *d = NULL;
	ps_err e;
	TPATH(ip, "cm-images");
	TPATH(lp, "cm-labels");

	(void)state;
	write_images(ip, 0, 3, 2, 2, 12);
	write_labels(lp, 0, 4);
	check_fails(load(&d, "cm-images", "cm-labels", &e), PS_EFORMAT, &e,
		    "header says 4 labels");
	assert_non_null(strstr(e.msg, lp));
	assert_non_null(strstr(e.msg, "3 images"));
}

/* Headers that would make us allocate nonsense are refused before any
 * allocation. */
static void test_dataset_absurd_sizes(void **state)
{
	static const struct {
		const char *name;
		unsigned nd;
		uint32_t dims[4];
		const char *needle;
	} cases[] = {
		{ "as-zero-count", 3, { 0, 28, 28 }, "header says 0 images" },
		{ "as-zero-dim", 3, { 10, 28, 0 }, "dimension 2 is 0" },
		{ "as-huge-dim", 2, { 10, (1u << 24) + 1 }, "absurd" },
		{ "as-huge-count", 2, { (1u << 28) + 1, 1 },
		  "header says 268435457 images" },
		{ "as-overflow", 4, { 1, 65536, 65536, 65536 }, "absurd" },
		{ "as-max-uint", 3, { 0xffffffffu, 0xffffffffu, 0xffffffffu },
		  "images" },
		{ "as-huge-total", 2, { 1u << 28, 1u << 24 }, "absurd size" },
	};
	ps_dataset *d = NULL;
	ps_err e;
	TPATH(lp, "as-labels");

	(void)state;
	write_labels(lp, 0, 10);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		TPATH(ip, cases[i].name);
		write_idx(ip, 0, 0x00000800 | cases[i].nd, cases[i].dims,
			  cases[i].nd, NULL, 0);
		check_fails(load(&d, cases[i].name, "as-labels", &e),
			    PS_EFORMAT, &e, cases[i].needle);
		assert_non_null(strstr(e.msg, ip));
	}
}

static void test_dataset_trailing_data(void **state)
{
	ps_dataset *d = NULL;
	ps_err e;
	TPATH(ip, "td-images");
	TPATH(gp, "td-images.gz");
	TPATH(lp, "td-labels");

	(void)state;
	/* The header says 3 images of 4 bytes; 13 bytes follow. */
	write_images(ip, 0, 3, 2, 2, 13);
	write_images(gp, 1, 3, 2, 2, 13);
	write_labels(lp, 0, 3);
	check_fails(load(&d, "td-images", "td-labels", &e), PS_EFORMAT, &e,
		    "more data than the header's 3 images");
	check_fails(load(&d, "td-images.gz", "td-labels", &e), PS_EFORMAT,
		    &e, "more data");
}

static void test_dataset_missing_file(void **state)
{
	ps_dataset *d = NULL;
	ps_err e;
	TPATH(ip, "mf-images");
	TPATH(lp, "mf-labels");
	TPATH(nope, "mf-nope");

	(void)state;
	write_images(ip, 0, 2, 2, 2, 8);
	write_labels(lp, 0, 2);
	check_fails(load(&d, "mf-nope", "mf-labels", &e), PS_ENOENT, &e,
		    nope);
	check_fails(load(&d, "mf-images", "mf-nope", &e), PS_ENOENT, &e,
		    "cannot open");
	assert_non_null(strstr(e.msg, nope));
	/* e may be NULL. */
	assert_int_equal(ps_dataset_load_idx(&d, nope, lp, NULL), PS_ENOENT);
	assert_null(d);
}

/* A directory opens but does not read. */
static void test_dataset_read_error(void **state)
{
	ps_dataset *d = NULL;
	ps_err e;
	TPATH(lp, "re-labels");

	(void)state;
	write_labels(lp, 0, 2);
	memset(&e, 0, sizeof e);
	check_fails(ps_dataset_load_idx(&d, tmpdir, lp, &e), PS_EIO, &e,
		    "read error");
	assert_non_null(strstr(e.msg, tmpdir));
	assert_null(d);
}

/* RLIMIT_AS makes a large but sane allocation fail. Sanitizer allocators
 * reserve terabytes of address space and cannot run under the limit. */
static void test_dataset_out_of_memory(void **state)
{
#ifdef UNDER_SANITIZER_ALLOCATOR
	(void)state;
	skip();
#else
	/* 2^32 pixels: within the caps, 16 GiB as floats. The files hold
	 * as many bytes as their headers say (sparse: no disk used), or the
	 * loader would refuse them as truncated before allocating. */
	uint32_t dims[2] = { 1u << 20, 1u << 12 };
	struct rlimit old, lim;
	ps_dataset *d = NULL;
	ps_err e;
	int rc_idx, rc_syn;
	TPATH(ip, "oom-images");
	TPATH(lp, "oom-labels");

	(void)state;
	write_idx(ip, 0, 0x00000802, dims, 2, NULL, 0);
	assert_int_equal(truncate(ip, 12 + ((off_t)1 << 32)), 0);
	write_idx(lp, 0, MAGIC_LABELS, dims, 1, NULL, 0);
	assert_int_equal(truncate(lp, 8 + ((off_t)1 << 20)), 0);
	assert_int_equal(getrlimit(RLIMIT_AS, &old), 0);
	lim = old;
	if (lim.rlim_cur == RLIM_INFINITY || lim.rlim_cur > (4ull << 30))
		lim.rlim_cur = 4ull << 30;
	assert_int_equal(setrlimit(RLIMIT_AS, &lim), 0);
	memset(&e, 0, sizeof e);
	rc_idx = ps_dataset_load_idx(&d, ip, lp, &e);
	assert_null(d);
	rc_syn = ps_dataset_synthetic_linear(&d, (size_t)1 << 33, 3, 2, 0.1, 1,
					     NULL);
	assert_null(d);
	assert_int_equal(setrlimit(RLIMIT_AS, &old), 0);
	check_fails(rc_idx, PS_ENOMEM, &e, "out of memory");
	assert_non_null(strstr(e.msg, ip));
	assert_int_equal(rc_syn, PS_ENOMEM);
#endif
}

/* Reported by tests/fuzz/fuzz_dataset.c as running out of memory (its
 * malloc limit) on this input, kept in tests/fuzz/regressions/dataset/:
 * a 35-byte pair of files whose headers claim 2^24 images of 16x16
 * pixels. The loader allocated the 16 GiB of floats before reading
 * a byte of data; now a header that promises more than a regular file
 * holds is truncation, found before any allocation. Under RLIMIT_AS an
 * allocation would fail with PS_ENOMEM, so PS_ETRUNC shows none was made
 * (sanitizer allocators cannot run under the limit; there the codes are
 * checked only). */
static void test_dataset_header_larger_than_file(void **state)
{
	/* The fuzzer's input: flags, u16 image-file length, the files. */
	static const unsigned char input[] = {
		0x00, 0x18, 0x00,
		/* images: magic, 2^24 x 16 x 16, 8 bytes of data */
		0x00, 0x00, 0x08, 0x03, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x00, 0x10, 0x00, 0x00, 0x00, 0x10, 0, 0, 0, 0, 0, 0, 0, 0,
		/* labels: magic, 2^24, 3 bytes of data */
		0x00, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x00, 0, 0, 0,
	};
	const unsigned char *images = input + 3, *labels = input + 3 + 24;
	ps_dataset *d = NULL;
	ps_err e;
	int rc_plain, rc_gz;
	TPATH(ip, "big-header-images");
	TPATH(gp, "big-header-images.gz");
	TPATH(lp, "big-header-labels");
#ifndef UNDER_SANITIZER_ALLOCATOR
	struct rlimit old, lim;
#endif

	(void)state;
	write_bytes(ip, 0, images, 24);
	write_bytes(gp, 1, images, 24);
	write_bytes(lp, 0, labels, sizeof input - 3 - 24);
#ifndef UNDER_SANITIZER_ALLOCATOR
	assert_int_equal(getrlimit(RLIMIT_AS, &old), 0);
	lim = old;
	if (lim.rlim_cur == RLIM_INFINITY || lim.rlim_cur > (4ull << 30))
		lim.rlim_cur = 4ull << 30;
	assert_int_equal(setrlimit(RLIMIT_AS, &lim), 0);
#endif
	rc_plain = load(&d, "big-header-images", "big-header-labels", &e);
	check_fails(rc_plain, PS_ETRUNC, &e,
		    "header says 16777216 images of 256 bytes, file ends "
		    "after 0");
	rc_gz = load(&d, "big-header-images.gz", "big-header-labels", &e);
#ifndef UNDER_SANITIZER_ALLOCATOR
	assert_int_equal(setrlimit(RLIMIT_AS, &old), 0);
#endif
	check_fails(rc_gz, PS_ETRUNC, &e, "bytes of gzip data can hold");
	assert_non_null(strstr(e.msg, gp));
	/* The labels' header is held to its file the same way. */
	write_images(ip, 0, 3, 2, 2, 12);
	check_fails(load(&d, "big-header-images", "big-header-labels", &e),
		    PS_ETRUNC, &e, "header says 16777216 labels, file ends after 3");
}

static void test_dataset_synthetic_deterministic(void **state)
{
	ps_dataset *a = NULL, *b = NULL, *c = NULL;
	ps_err e;

	(void)state;
	assert_int_equal(ps_dataset_synthetic_linear(&a, 500, 3, 2, 0.1, 42,
						     &e),
			 PS_OK);
	assert_int_equal(ps_dataset_synthetic_linear(&b, 500, 3, 2, 0.1, 42,
						     &e),
			 PS_OK);
	assert_int_equal(ps_dataset_synthetic_linear(&c, 500, 3, 2, 0.1, 43,
						     &e),
			 PS_OK);
	assert_int_equal(a->n, 500);
	assert_int_equal(a->dim, 1);
	assert_int_equal(a->classes, 0);
	assert_true(a->owns_data);
	assert_memory_equal(a->x, b->x, 500 * sizeof(float));
	assert_memory_equal(a->y, b->y, 500 * sizeof(float));
	assert_memory_not_equal(a->x, c->x, 500 * sizeof(float));
	assert_memory_not_equal(a->y, c->y, 500 * sizeof(float));
	ps_dataset_destroy(&a);
	ps_dataset_destroy(&b);
	ps_dataset_destroy(&c);
}

static void test_dataset_synthetic_statistics(void **state)
{
	const size_t n = 10000;
	double sx = 0, sy = 0, sxx = 0, sxy = 0, sr = 0;
	double slope, intercept, mx, my, vx;
	ps_dataset *d = NULL;
	ps_err e;

	(void)state;
	assert_int_equal(ps_dataset_synthetic_linear(&d, n, 3, 2, 0.1, 1, &e),
			 PS_OK);
	for (size_t i = 0; i < n; i++) {
		assert_true(d->x[i] >= -1.0f && d->x[i] <= 1.0f);
		sx += d->x[i];
		sy += d->y[i];
	}
	mx = sx / n;
	my = sy / n;
	for (size_t i = 0; i < n; i++) {
		sxx += (d->x[i] - mx) * (d->x[i] - mx);
		sxy += (d->x[i] - mx) * (d->y[i] - my);
	}
	vx = sxx / n;
	slope = sxy / sxx;
	intercept = my - slope * mx;
	for (size_t i = 0; i < n; i++) {
		double r = d->y[i] - (slope * d->x[i] + intercept);
		sr += r * r;
	}
	assert_true(fabs(slope - 3.0) < 0.05);
	assert_true(fabs(intercept - 2.0) < 0.05);
	assert_true(fabs(mx) < 0.05);
	assert_true(fabs(vx - 1.0 / 3.0) < 0.02);
	assert_true(fabs(sqrt(sr / n) - 0.1) < 0.01);
	ps_dataset_destroy(&d);

	/* Without noise the points lie on the line. */
	assert_int_equal(ps_dataset_synthetic_linear(&d, 100, -1.5, 0.25, 0,
						     7, &e),
			 PS_OK);
	for (size_t i = 0; i < 100; i++)
		assert_true(d->y[i] == (float)(-1.5 * d->x[i] + 0.25));
	ps_dataset_destroy(&d);
}

static void test_dataset_synthetic_bad_args(void **state)
{
	ps_dataset *d = NULL;
	ps_err e;

	(void)state;
	memset(&e, 0, sizeof e);
	check_fails(ps_dataset_synthetic_linear(&d, 0, 3, 2, 0.1, 1, &e),
		    PS_EINVAL, &e, "n must be");
	assert_null(d);
	check_fails(ps_dataset_synthetic_linear(&d, 10, NAN, 2, 0.1, 1, &e),
		    PS_EINVAL, &e, "finite");
	check_fails(ps_dataset_synthetic_linear(&d, 10, 3, INFINITY, 0.1, 1,
						&e),
		    PS_EINVAL, &e, NULL);
	check_fails(ps_dataset_synthetic_linear(&d, 10, 3, 2, -0.1, 1, &e),
		    PS_EINVAL, &e, NULL);
	assert_null(d);
	/* n * sizeof(float) overflows: refused before malloc. */
	check_fails(ps_dataset_synthetic_linear(&d, SIZE_MAX / 2, 3, 2, 0.1,
						1, &e),
		    PS_ENOMEM, &e, NULL);
	assert_null(d);
}

static void test_dataset_synthetic_logistic_deterministic(void **state)
{
	ps_dataset *a = NULL, *b = NULL, *c = NULL;
	ps_err e;

	(void)state;
	assert_int_equal(ps_dataset_synthetic_logistic(&a, 500, 42, &e), PS_OK);
	assert_int_equal(ps_dataset_synthetic_logistic(&b, 500, 42, &e), PS_OK);
	assert_int_equal(ps_dataset_synthetic_logistic(&c, 500, 43, &e), PS_OK);
	assert_int_equal(a->n, 500);
	assert_int_equal(a->dim, 2);
	assert_int_equal(a->classes, 2);
	assert_true(a->owns_data);
	assert_memory_equal(a->x, b->x, 2 * 500 * sizeof(float));
	assert_memory_equal(a->y, b->y, 500 * sizeof(float));
	assert_memory_not_equal(a->x, c->x, 2 * 500 * sizeof(float));
	assert_memory_not_equal(a->y, c->y, 500 * sizeof(float));
	for (size_t i = 0; i < 500; i++)
		assert_true(a->y[i] == 0.0f || a->y[i] == 1.0f);
	ps_dataset_destroy(&a);
	ps_dataset_destroy(&b);
	ps_dataset_destroy(&c);
}

/*
 * The score s = 1.5 x0 - 2 x1 + 0.5 + 0.3 eps is N(0.5, 6.34), so
 * P(label 1) = Phi(0.5 / sqrt(6.34)) = 0.5787; over 20000 rows the share
 * has a standard deviation of 0.0035, and 0.02 is over 5 of them. The
 * noise flips the noiseless rule's answer for about 4% of the rows: at
 * least 92% must agree with it, and some must not (there is noise).
 * x is standard normal in each coordinate: mean within 0.05, variance
 * within 0.05 of 1 (both over 5 standard deviations).
 */
static void test_dataset_synthetic_logistic_statistics(void **state)
{
	const size_t n = 20000;
	double ones = 0, agree = 0, m0 = 0, m1 = 0, v0 = 0, v1 = 0;
	ps_dataset *d = NULL;
	ps_err e;

	(void)state;
	assert_int_equal(ps_dataset_synthetic_logistic(&d, n, 1, &e), PS_OK);
	for (size_t i = 0; i < n; i++) {
		double x0 = d->x[2 * i], x1 = d->x[2 * i + 1];
		ones += d->y[i];
		agree += (1.5 * x0 - 2.0 * x1 + 0.5 > 0) == (d->y[i] == 1.0f);
		m0 += x0;
		m1 += x1;
		v0 += x0 * x0;
		v1 += x1 * x1;
	}
	assert_true(fabs(ones / n - 0.5787) < 0.02);
	assert_true(agree / n > 0.92 && agree < n);
	assert_true(fabs(m0 / n) < 0.05 && fabs(m1 / n) < 0.05);
	assert_true(fabs(v0 / n - 1) < 0.05 && fabs(v1 / n - 1) < 0.05);
	ps_dataset_destroy(&d);
}

static void test_dataset_synthetic_logistic_bad_args(void **state)
{
	ps_dataset *d = NULL;
	ps_err e;

	(void)state;
	memset(&e, 0, sizeof e);
	check_fails(ps_dataset_synthetic_logistic(&d, 0, 1, &e), PS_EINVAL,
		    &e, "n must be");
	assert_null(d);
	check_fails(ps_dataset_synthetic_logistic(&d, SIZE_MAX / 2, 1, &e),
		    PS_ENOMEM, &e, NULL);
	assert_null(d);
}

/* Labels 0 1 2 3 0 1 2 3 0 1 of 10 rows, row i's features (i, -i, 10+i). */
static void four_classes(float *x, float *y)
{
	for (size_t i = 0; i < 10; i++) {
		x[3 * i] = (float)i;
		x[3 * i + 1] = -(float)i;
		x[3 * i + 2] = 10.0f + (float)i;
		y[i] = (float)(i % 4);
	}
}

static void test_dataset_select_classes(void **state)
{
	float x[30], y[10];
	ps_dataset d = { .n = 10, .dim = 3, .classes = 4, .x = x, .y = y };
	const size_t rows[] = { 0, 2, 4, 6, 8 }; /* labelled 0 or 2 */
	ps_dataset *s = NULL;
	ps_err e;

	(void)state;
	four_classes(x, y);
	/* a -> 0 and b -> 1 whatever their order. */
	assert_int_equal(ps_dataset_select_classes(&s, &d, 2, 0, &e), PS_OK);
	assert_int_equal(s->n, 5);
	assert_int_equal(s->dim, 3);
	assert_int_equal(s->classes, 2);
	assert_true(s->owns_data);
	assert_true(s->x != x);
	for (size_t i = 0; i < 5; i++) {
		assert_memory_equal(s->x + 3 * i, x + 3 * rows[i],
				    3 * sizeof(float));
		assert_true(s->y[i] == (y[rows[i]] == 2.0f ? 0.0f : 1.0f));
	}
	/* A copy: the source may go away. */
	memset(x, 0, sizeof x);
	assert_true(s->x[3 * 4 + 2] == 18.0f);
	ps_dataset_destroy(&s);

	four_classes(x, y);
	assert_int_equal(ps_dataset_select_classes(&s, &d, 1, 3, &e), PS_OK);
	assert_int_equal(s->n, 5); /* rows 1, 3, 5, 7, 9 */
	for (size_t i = 0; i < 5; i++) {
		assert_true(s->y[i] == (float)(i % 2));
		assert_true(s->x[3 * i] == (float)(2 * i + 1));
	}
	ps_dataset_destroy(&s);
}

static void test_dataset_select_classes_refused(void **state)
{
	float x[30], y[10];
	ps_dataset d = { .n = 10, .dim = 3, .classes = 4, .x = x, .y = y };
	ps_dataset *s = NULL, *lin = NULL;
	ps_err e;

	(void)state;
	four_classes(x, y);
	s = (ps_dataset *)1;
	check_fails(ps_dataset_select_classes(&s, &d, 1, 1, &e), PS_EINVAL,
		    &e, "differ");
	assert_null(s);
	check_fails(ps_dataset_select_classes(&s, &d, 0, 4, &e), PS_EINVAL,
		    &e, "class 4");
	check_fails(ps_dataset_select_classes(&s, &d, 9, 0, &e), PS_EINVAL,
		    &e, "class 9");
	check_fails(ps_dataset_select_classes(&s, &d, UINT32_MAX, 0, &e),
		    PS_EINVAL, &e, "4 classes");
	/* Both in range, but no row has either label. */
	for (size_t i = 0; i < 10; i++)
		y[i] = i % 2 ? 1.0f : 3.0f;
	check_fails(ps_dataset_select_classes(&s, &d, 0, 2, &e), PS_EINVAL,
		    &e, "no row");
	assert_null(s);
	/* Regression targets are not classes. */
	assert_int_equal(ps_dataset_synthetic_linear(&lin, 10, 3, 2, 0.1, 1,
						     &e),
			 PS_OK);
	check_fails(ps_dataset_select_classes(&s, lin, 0, 1, &e), PS_EINVAL,
		    &e, "regression");
	assert_null(s);
	ps_dataset_destroy(&lin);
}

static void test_dataset_open_synthetic_logistic(void **state)
{
	ps_dataset *a = NULL, *b = NULL;
	ps_err e;

	(void)state;
	assert_int_equal(ps_dataset_open(&a, "synthetic-logistic:100", &e),
			 PS_OK);
	assert_int_equal(ps_dataset_synthetic_logistic(&b, 100, 1, &e), PS_OK);
	assert_int_equal(a->classes, 2);
	assert_memory_equal(a->x, b->x, 200 * sizeof(float));
	assert_memory_equal(a->y, b->y, 100 * sizeof(float));
	ps_dataset_destroy(&a);
	ps_dataset_destroy(&b);
	assert_int_equal(ps_dataset_open(&a, "synthetic-logistic:64:7", &e),
			 PS_OK);
	assert_int_equal(ps_dataset_synthetic_logistic(&b, 64, 7, &e), PS_OK);
	assert_memory_equal(a->y, b->y, 64 * sizeof(float));
	ps_dataset_destroy(&a);
	ps_dataset_destroy(&b);
}

/* SPEC@A,B on every kind that has classes: the order of A and B decides
 * which becomes 1, and the rows are those of the plain spec. */
static void test_dataset_open_select_suffix(void **state)
{
	char spec[2 * PATH_MAX + 16];
	ps_dataset *all = NULL, *d = NULL;
	ps_err e;
	TPATH(ip, "sel-images");
	TPATH(lp, "sel-labels.gz");

	(void)state;
	assert_int_equal(ps_dataset_open(&all, "synthetic-logistic:50:3", &e),
			 PS_OK);
	assert_int_equal(ps_dataset_open(&d, "synthetic-logistic:50:3@0,1",
					 &e),
			 PS_OK);
	assert_int_equal(d->n, 50);
	assert_memory_equal(d->x, all->x, 100 * sizeof(float));
	assert_memory_equal(d->y, all->y, 50 * sizeof(float));
	ps_dataset_destroy(&d);
	assert_int_equal(ps_dataset_open(&d, "synthetic-logistic:50:3@1,0",
					 &e),
			 PS_OK);
	for (size_t i = 0; i < 50; i++)
		assert_true(d->y[i] == 1.0f - all->y[i]);
	ps_dataset_destroy(&d);
	ps_dataset_destroy(&all);

	/* An IDX pair: labels i % 10 over 20 rows; 3 and 7 are rows 3, 7,
	 * 13, 17. */
	write_images(ip, 0, 20, 2, 2, 80);
	write_labels(lp, 1, 20);
	snprintf(spec, sizeof spec, "idx:%s,%s", ip, lp);
	assert_int_equal(ps_dataset_open(&all, spec, &e), PS_OK);
	snprintf(spec, sizeof spec, "idx:%s,%s@7,3", ip, lp);
	assert_int_equal(ps_dataset_open(&d, spec, &e), PS_OK);
	assert_int_equal(d->n, 4);
	assert_int_equal(d->dim, 4);
	assert_int_equal(d->classes, 2);
	for (size_t i = 0; i < 4; i++) {
		size_t row = 3 + 10 * (i / 2) + 4 * (i % 2);
		assert_memory_equal(d->x + 4 * i, all->x + 4 * row,
				    4 * sizeof(float));
		assert_true(d->y[i] == (i % 2 ? 0.0f : 1.0f));
	}
	ps_dataset_destroy(&d);
	ps_dataset_destroy(&all);
}

static void test_dataset_open_select_suffix_refused(void **state)
{
	static const char *const malformed[] = {
		"synthetic-logistic:50@",
		"synthetic-logistic:50@0",
		"synthetic-logistic:50@0,",
		"synthetic-logistic:50@,1",
		"synthetic-logistic:50@0,1,2",
		"synthetic-logistic:50@0;1",
		"synthetic-logistic:50@a,b",
		"synthetic-logistic:50@ 0,1",
		"synthetic-logistic:50@0, 1",
		"synthetic-logistic:50@-1,1",
		"synthetic-logistic:50@+0,1",
		"synthetic-logistic:50@0,4294967296",
		"synthetic-logistic:50@0,1@",
		"synthetic-logistic:50@1,1",
		"@0,1",
		"nope@0,1",
		"synthetic-logistic:0@0,1",
	};
	char spec[2 * PATH_MAX + 32];
	ps_dataset *d = NULL;
	ps_err e;
	TPATH(nope, "sel-nope");

	(void)state;
	for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
		memset(&e, 0, sizeof e);
		d = (ps_dataset *)1;
		if (ps_dataset_open(&d, malformed[i], &e) != PS_EINVAL)
			fail_msg("spec \"%s\": %s \"%s\", want PS_EINVAL",
				 malformed[i], ps_errname(e.code), e.msg);
		assert_null(d);
		/* Every message shows the forms, the suffix included. */
		assert_non_null(strstr(e.msg, "@A,B"));
		assert_non_null(strstr(e.msg, "synthetic-logistic:N[:SEED]"));
		assert_true(strlen(e.msg) < sizeof e.msg - 1);
	}
	/* Well formed, but the data disagree: the message names the spec. */
	check_fails(ps_dataset_open(&d, "synthetic-logistic:50@0,2", &e),
		    PS_EINVAL, &e, "synthetic-logistic:50@0,2");
	assert_non_null(strstr(e.msg, "class 2"));
	assert_null(d);
	check_fails(ps_dataset_open(&d, "synthetic-linear:50@0,1", &e),
		    PS_EINVAL, &e, "regression");
	assert_null(d);
	/* The base's own errors come through unchanged. */
	snprintf(spec, sizeof spec, "idx:%s,%s@0,1", nope, nope);
	check_fails(ps_dataset_open(&d, spec, &e), PS_ENOENT, &e, nope);
	assert_null(d);
	assert_int_equal(ps_dataset_open(&d, "synthetic-logistic:50@9,1",
					 NULL),
			 PS_EINVAL);
	assert_null(d);
}

static void check_shards(size_t n, unsigned nranks)
{
	size_t prev_end = 0, q = n / nranks;

	for (unsigned r = 0; r < nranks; r++) {
		size_t b, en;
		ps_dataset_shard_range(n, r, nranks, &b, &en);
		if (b != prev_end || en < b || en - b < q || en - b - q > 1)
			fail_msg("n=%zu nranks=%u rank=%u: [%zu, %zu) after "
				 "%zu",
				 n, nranks, r, b, en, prev_end);
		prev_end = en;
	}
	if (prev_end != n)
		fail_msg("n=%zu nranks=%u: shards end at %zu", n, nranks,
			 prev_end);
}

static void test_dataset_shard_range_covers(void **state)
{
	static const size_t big[] = {
		1000, 1001, 59999, 60000, (size_t)1 << 40, SIZE_MAX - 1,
		SIZE_MAX,
	};
	static const unsigned many[] = { 97, 1000, 4096, 65537 };

	(void)state;
	/* All small pairs, nranks > n included; then n large enough that
	 * rank * n would overflow. */
	for (size_t n = 0; n <= 64; n++)
		for (unsigned k = 1; k <= 80; k++)
			check_shards(n, k);
	for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
		for (unsigned k = 1; k <= 80; k++)
			check_shards(big[i], k);
		for (size_t j = 0; j < sizeof many / sizeof many[0]; j++)
			check_shards(big[i], many[j]);
	}
	for (size_t j = 0; j < sizeof many / sizeof many[0]; j++)
		check_shards(5, many[j]);
	/* The extra rows go to the first ranks. */
	{
		size_t b, en;
		ps_dataset_shard_range(10, 0, 3, &b, &en);
		assert_int_equal(b, 0);
		assert_int_equal(en, 4);
		ps_dataset_shard_range(10, 2, 3, &b, &en);
		assert_int_equal(b, 7);
		assert_int_equal(en, 10);
		ps_dataset_shard_range(SIZE_MAX, UINT_MAX - 1, UINT_MAX, &b,
				       &en);
		assert_true(en == SIZE_MAX);
	}
}

static void test_dataset_slice(void **state)
{
	ps_dataset *d = NULL, *v = NULL, *w = NULL;
	ps_err e;

	(void)state;
	assert_int_equal(ps_dataset_synthetic_linear(&d, 10, 3, 2, 0.1, 5, &e),
			 PS_OK);
	assert_int_equal(ps_dataset_slice(&v, d, 2, 7), PS_OK);
	assert_int_equal(v->n, 5);
	assert_int_equal(v->dim, 1);
	assert_int_equal(v->classes, 0);
	assert_false(v->owns_data);
	assert_ptr_equal(v->x, d->x + 2);
	assert_ptr_equal(v->y, d->y + 2);
	/* A slice of a slice still borrows the parent's rows. */
	assert_int_equal(ps_dataset_slice(&w, v, 1, 3), PS_OK);
	assert_int_equal(w->n, 2);
	assert_ptr_equal(w->x, d->x + 3);
	ps_dataset_destroy(&w);
	ps_dataset_destroy(&v);
	assert_null(v);
	/* Empty ranges are fine, the end included. */
	assert_int_equal(ps_dataset_slice(&v, d, 10, 10), PS_OK);
	assert_int_equal(v->n, 0);
	ps_dataset_destroy(&v);
	assert_int_equal(ps_dataset_slice(&v, d, 0, 10), PS_OK);
	assert_int_equal(v->n, 10);
	ps_dataset_destroy(&v);

	v = (ps_dataset *)1; /* *out is cleared on failure */
	assert_int_equal(ps_dataset_slice(&v, d, 5, 4), PS_ERANGE);
	assert_null(v);
	assert_int_equal(ps_dataset_slice(&v, d, 0, 11), PS_ERANGE);
	assert_int_equal(ps_dataset_slice(&v, d, 11, 11), PS_ERANGE);
	assert_int_equal(ps_dataset_slice(&v, d, 0, SIZE_MAX), PS_ERANGE);
	assert_int_equal(ps_dataset_slice(&v, d, SIZE_MAX, 3), PS_ERANGE);
	assert_null(v);
	ps_dataset_destroy(&d);
}

/* A pick of fixed rows, for ps_dataset_open_rows(). */
typedef struct fixed_rows {
	size_t begin, end, seen_n;
} fixed_rows;

static void pick_fixed(size_t n, void *arg, size_t *begin, size_t *end)
{
	fixed_rows *f = arg;
	f->seen_n = n;
	*begin = f->begin;
	*end = f->end;
}

/* open_rows of a set and rows [begin, end): the rows of the whole set,
 * the whole set's classes, and first and total said. */
static void expect_rows_of(const char *spec, size_t begin, size_t end)
{
	ps_dataset *all = NULL, *d = NULL;
	fixed_rows f = { begin, end, 0 };
	ps_dataset_rows rows = { .pick = pick_fixed, .arg = &f };
	ps_err e;

	assert_int_equal(ps_dataset_open(&all, spec, &e), PS_OK);
	assert_int_equal(ps_dataset_open_rows(&d, spec, &rows, &e), PS_OK);
	assert_int_equal(f.seen_n, all->n);
	assert_int_equal(rows.first, begin);
	assert_int_equal(rows.total, all->n);
	assert_int_equal(d->n, end - begin);
	assert_int_equal(d->dim, all->dim);
	assert_int_equal(d->classes, all->classes);
	if (end > begin) {
		assert_memory_equal(d->x, all->x + begin * all->dim,
				    (end - begin) * all->dim * sizeof *d->x);
		assert_memory_equal(d->y, all->y + begin,
				    (end - begin) * sizeof *d->y);
	}
	ps_dataset_destroy(&d);
	ps_dataset_destroy(&all);
}

/* A trainer loads only its rows. From IDX files the loader keeps them as
 * it reads (here across the boundary of its 1 MB reads); the classes are
 * the whole set's even when the rows kept lack the largest label; an
 * empty pick keeps nothing but still reads and checks the files. Other
 * sets, and a class selection, are made whole and cut. A pick outside
 * the set is refused. */
static void test_dataset_open_rows(void **state)
{
	char spec[2 * PATH_MAX + 16];
	ps_dataset *d = NULL;
	fixed_rows f = { 0, 0, 0 };
	ps_dataset_rows rows = { .pick = pick_fixed, .arg = &f };
	ps_err e;
	TPATH(ip, "or-images.gz");
	TPATH(lp, "or-labels.gz");
	TPATH(tp, "or-short-images");

	(void)state;
	write_images(ip, 1, 1500, 28, 28, 1500 * 784);
	write_labels(lp, 1, 1500);
	snprintf(spec, sizeof spec, "idx:%s,%s", ip, lp);
	expect_rows_of(spec, 600, 1400); /* byte 1 MB is in row 1337 */
	expect_rows_of(spec, 3, 7);      /* labels 3..6, classes still 10 */
	expect_rows_of(spec, 0, 1500);
	expect_rows_of(spec, 1500, 1500);
	expect_rows_of("synthetic-logistic:50:3", 10, 20);
	snprintf(spec, sizeof spec, "idx:%s,%s@0,1", ip, lp);
	expect_rows_of(spec, 100, 250);

	/* The whole file is still checked when nothing is kept. */
	write_images(tp, 0, 1500, 28, 28, 1499 * 784);
	snprintf(spec, sizeof spec, "idx:%s,%s", tp, lp);
	f = (fixed_rows){ 5, 5, 0 };
	check_fails(ps_dataset_open_rows(&d, spec, &rows, &e), PS_ETRUNC, &e,
		    tp);
	assert_null(d);

	f = (fixed_rows){ 10, 1501, 0 };
	snprintf(spec, sizeof spec, "idx:%s,%s", ip, lp);
	check_fails(ps_dataset_open_rows(&d, spec, &rows, &e), PS_ERANGE, &e,
		    "1501");
	assert_null(d);
	f = (fixed_rows){ 20, 10, 0 };
	check_fails(ps_dataset_open_rows(&d, "synthetic-linear:30", &rows, &e),
		    PS_ERANGE, &e, "synthetic-linear:30");
	assert_null(d);
}

/* keep_rows shrinks an owning set to a range of its rows, in order, with
 * the same dim and classes; a bad range or a borrowed set is refused and
 * leaves the set as it was; an empty range keeps nothing. */
static void test_dataset_keep_rows(void **state)
{
	ps_dataset *d = NULL, *ref = NULL, *v = NULL;
	ps_err e;

	(void)state;
	assert_int_equal(ps_dataset_open(&d, "synthetic-logistic:50:3", &e),
			 PS_OK);
	assert_int_equal(ps_dataset_open(&ref, "synthetic-logistic:50:3", &e),
			 PS_OK);
	assert_int_equal(ps_dataset_keep_rows(d, 5, 4), PS_ERANGE);
	assert_int_equal(ps_dataset_keep_rows(d, 0, 51), PS_ERANGE);
	assert_int_equal(d->n, 50);
	assert_int_equal(ps_dataset_slice(&v, d, 0, 10), PS_OK);
	assert_int_equal(ps_dataset_keep_rows(v, 2, 3), PS_EINVAL);
	assert_int_equal(v->n, 10);
	ps_dataset_destroy(&v);

	assert_int_equal(ps_dataset_keep_rows(d, 17, 42), PS_OK);
	assert_int_equal(d->n, 25);
	assert_int_equal(d->dim, ref->dim);
	assert_int_equal(d->classes, ref->classes);
	assert_memory_equal(d->x, ref->x + 17 * ref->dim,
			    25 * ref->dim * sizeof *d->x);
	assert_memory_equal(d->y, ref->y + 17, 25 * sizeof *d->y);
	/* Again, from the front, and then nothing at all. */
	assert_int_equal(ps_dataset_keep_rows(d, 0, 3), PS_OK);
	assert_int_equal(d->n, 3);
	assert_memory_equal(d->x, ref->x + 17 * ref->dim,
			    3 * ref->dim * sizeof *d->x);
	assert_int_equal(ps_dataset_keep_rows(d, 3, 3), PS_OK);
	assert_int_equal(d->n, 0);
	ps_dataset_destroy(&d);
	ps_dataset_destroy(&ref);
}

/* The shards of a dataset, as slices, put back together are the dataset;
 * slices of a multi-column classification set keep dim and classes. */
static void test_dataset_slice_shards(void **state)
{
	float x[7 * 3], y[7];
	ps_dataset d = { .n = 7, .dim = 3, .classes = 4, .x = x, .y = y };
	ps_dataset empty = { .n = 0, .dim = 3 };
	ps_dataset *v = NULL;
	size_t row = 0;

	(void)state;
	for (size_t i = 0; i < 21; i++)
		x[i] = (float)i;
	for (size_t i = 0; i < 7; i++)
		y[i] = (float)(i % 4);
	for (unsigned r = 0; r < 3; r++) {
		size_t b, en;
		ps_dataset_shard_range(d.n, r, 3, &b, &en);
		assert_int_equal(ps_dataset_slice(&v, &d, b, en), PS_OK);
		assert_int_equal(v->dim, 3);
		assert_int_equal(v->classes, 4);
		for (size_t i = 0; i < v->n; i++, row++) {
			assert_true(v->x[i * 3 + 2] == (float)(row * 3 + 2));
			assert_true(v->y[i] == (float)(row % 4));
		}
		ps_dataset_destroy(&v);
	}
	assert_int_equal(row, 7);
	assert_int_equal(ps_dataset_slice(&v, &empty, 0, 0), PS_OK);
	assert_int_equal(v->n, 0);
	ps_dataset_destroy(&v);
	assert_int_equal(ps_dataset_slice(&v, &empty, 0, 1), PS_ERANGE);
}

static void test_dataset_open_bad_spec(void **state)
{
	static const char *const bad[] = {
		"",
		"fashion-mnist",
		"fashion-mnist:",
		"fashion-mnist:val",
		"Fashion-MNIST:train",
		"mnist:train",
		"synthetic-linear",
		"synthetic-linear:",
		"synthetic-linear:0",
		"synthetic-linear:-5",
		"synthetic-linear:+5",
		"synthetic-linear: 5",
		"synthetic-linear:5x",
		"synthetic-linear:5.0",
		"synthetic-linear:0x10",
		"synthetic-linear:5:",
		"synthetic-linear:5:x",
		"synthetic-linear:5:-1",
		"synthetic-linear:5:1:2",
		"synthetic-linear:99999999999999999999999",
		"synthetic-linear:5:18446744073709551616",
		"idx:",
		"idx:images",
		"idx:images,",
		"idx:,labels",
		"idx",
		"synthetic-logistic",
		"synthetic-logistic:",
		"synthetic-logistic:0",
		"synthetic-logistic:5:",
		"synthetic-logistic:5:x",
		"synthetic-logistic:5:1:2",
		"synthetic-linear:5@",
		"synthetic-linear:5:1:2@0,1",
	};
	ps_dataset *d = NULL;
	ps_err e;

	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		memset(&e, 0, sizeof e);
		d = (ps_dataset *)1;
		if (ps_dataset_open(&d, bad[i], &e) != PS_EINVAL)
			fail_msg("spec \"%s\": %s \"%s\", want PS_EINVAL",
				 bad[i], ps_errname(e.code), e.msg);
		assert_null(d);
		assert_int_equal(e.code, PS_EINVAL);
		assert_non_null(strstr(e.msg, "fashion-mnist:train"));
		assert_non_null(strstr(e.msg, "idx:IMAGES,LABELS"));
		assert_non_null(strstr(e.msg, "synthetic-linear:N[:SEED]"));
		assert_non_null(strstr(e.msg, "synthetic-logistic:N[:SEED]"));
		assert_true(strlen(e.msg) < sizeof e.msg - 1);
	}
	check_fails(ps_dataset_open(&d, NULL, &e), PS_EINVAL, &e, NULL);
	assert_int_equal(ps_dataset_open(&d, "nope", NULL), PS_EINVAL);
	/* A long spec is cut, the accepted forms are not. */
	{
		char longspec[600];
		memset(longspec, 'z', sizeof longspec - 1);
		longspec[sizeof longspec - 1] = '\0';
		check_fails(ps_dataset_open(&d, longspec, &e), PS_EINVAL, &e,
			    "synthetic-linear:N[:SEED]");
	}
}

static void test_dataset_open_synthetic(void **state)
{
	ps_dataset *a = NULL, *b = NULL;
	ps_err e;

	(void)state;
	assert_int_equal(ps_dataset_open(&a, "synthetic-linear:100", &e),
			 PS_OK);
	assert_int_equal(ps_dataset_synthetic_linear(&b, 100, 3, 2, 0.1, 1,
						     &e),
			 PS_OK);
	assert_int_equal(a->n, 100);
	assert_memory_equal(a->x, b->x, 100 * sizeof(float));
	assert_memory_equal(a->y, b->y, 100 * sizeof(float));
	ps_dataset_destroy(&a);
	ps_dataset_destroy(&b);

	assert_int_equal(ps_dataset_open(&a, "synthetic-linear:64:7", &e),
			 PS_OK);
	assert_int_equal(ps_dataset_synthetic_linear(&b, 64, 3, 2, 0.1, 7,
						     &e),
			 PS_OK);
	assert_memory_equal(a->y, b->y, 64 * sizeof(float));
	ps_dataset_destroy(&a);
	ps_dataset_destroy(&b);

	assert_int_equal(ps_dataset_open(&a,
					 "synthetic-linear:1:"
					 "18446744073709551615",
					 &e),
			 PS_OK);
	assert_int_equal(a->n, 1);
	ps_dataset_destroy(&a);
}

static void test_dataset_open_idx(void **state)
{
	char spec[2 * PATH_MAX + 8];
	ps_dataset *d = NULL;
	ps_err e;
	TPATH(ip, "oi-images.gz");
	TPATH(lp, "oi-labels");
	TPATH(nope, "oi-nope");

	(void)state;
	write_images(ip, 1, 6, 3, 3, 54);
	write_labels(lp, 0, 6);
	snprintf(spec, sizeof spec, "idx:%s,%s", ip, lp);
	assert_int_equal(ps_dataset_open(&d, spec, &e), PS_OK);
	assert_int_equal(d->n, 6);
	assert_int_equal(d->dim, 9);
	assert_int_equal(d->classes, 6);
	ps_dataset_destroy(&d);
	/* The loaders' errors come through. */
	snprintf(spec, sizeof spec, "idx:%s,%s", ip, nope);
	check_fails(ps_dataset_open(&d, spec, &e), PS_ENOENT, &e, nope);
	assert_null(d);
}

/* Restores PS_DATA_DIR on every path out of the tests that change it. */
static char *saved_data_dir;
static int saved_data_dir_set;
static int saved;

static void env_save(void)
{
	const char *v = getenv("PS_DATA_DIR");

	saved = 1;
	saved_data_dir_set = v != NULL;
	saved_data_dir = v ? strdup(v) : NULL;
}

static int env_restore(void **state)
{
	(void)state;
	if (!saved)
		return 0;
	saved = 0;
	if (saved_data_dir_set)
		setenv("PS_DATA_DIR", saved_data_dir, 1);
	else
		unsetenv("PS_DATA_DIR");
	free(saved_data_dir);
	saved_data_dir = NULL;
	saved_data_dir_set = 0;
	return 0;
}

static void test_dataset_open_fashion_mnist_dir(void **state)
{
	ps_dataset *d = NULL;
	ps_err e;
	TPATH(dir, "fm");
	TPATH(dir_slash, "fm/");
	TPATH(empty, "fm-empty");
	TPATH(tri, "fm/train-images-idx3-ubyte.gz");
	TPATH(trl, "fm/train-labels-idx1-ubyte.gz");
	TPATH(tei, "fm/t10k-images-idx3-ubyte.gz");
	TPATH(tel, "fm/t10k-labels-idx1-ubyte.gz");
	TPATH(missing, "fm-empty/t10k-images-idx3-ubyte.gz");

	(void)state;
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(mkdir(empty, 0700), 0);
	write_images(tri, 1, 5, 28, 28, 5 * 784);
	write_labels(trl, 1, 5);
	write_images(tei, 1, 3, 28, 28, 3 * 784);
	write_labels(tel, 1, 3);
	env_save();

	assert_int_equal(setenv("PS_DATA_DIR", dir, 1), 0);
	assert_int_equal(ps_dataset_open(&d, "fashion-mnist:train", &e), PS_OK);
	assert_int_equal(d->n, 5);
	assert_int_equal(d->dim, 784);
	ps_dataset_destroy(&d);
	assert_int_equal(setenv("PS_DATA_DIR", dir_slash, 1), 0);
	assert_int_equal(ps_dataset_open(&d, "fashion-mnist:test", &e), PS_OK);
	assert_int_equal(d->n, 3);
	ps_dataset_destroy(&d);

	assert_int_equal(setenv("PS_DATA_DIR", empty, 1), 0);
	check_fails(ps_dataset_open(&d, "fashion-mnist:test", &e), PS_ENOENT,
		    &e, missing);
	assert_null(d);
}

static void test_dataset_fashion_mnist_test(void **state)
{
	size_t per_class[10] = { 0 };
	struct stat st;
	ps_dataset *d = NULL;
	ps_err e;
	int rc;

	(void)state;
	if (stat(FASHION_MNIST_DIR, &st) != 0 || !S_ISDIR(st.st_mode))
		skip();
	/* The default directory, whatever the environment says. */
	env_save();
	unsetenv("PS_DATA_DIR");
	rc = ps_dataset_open(&d, "fashion-mnist:test", &e);
	if (rc != PS_OK)
		fail_msg("fashion-mnist:test: %s", e.msg);
	assert_int_equal(d->n, 10000);
	assert_int_equal(d->dim, 784);
	assert_int_equal(d->classes, 10);
	for (size_t i = 0; i < d->n * d->dim; i++)
		assert_true(d->x[i] >= 0.0f && d->x[i] <= 1.0f);
	for (size_t i = 0; i < d->n; i++) {
		assert_true(d->y[i] >= 0.0f && d->y[i] < 10.0f);
		per_class[(size_t)d->y[i]]++;
	}
	for (size_t c = 0; c < 10; c++)
		assert_int_equal(per_class[c], 1000);
	ps_dataset_destroy(&d);

	/* T-shirt/top against shirt, the pair the README suggests. */
	rc = ps_dataset_open(&d, "fashion-mnist:test@0,6", &e);
	if (rc != PS_OK)
		fail_msg("fashion-mnist:test@0,6: %s", e.msg);
	assert_int_equal(d->n, 2000);
	assert_int_equal(d->classes, 2);
	per_class[0] = per_class[1] = 0;
	for (size_t i = 0; i < d->n; i++) {
		assert_true(d->y[i] == 0.0f || d->y[i] == 1.0f);
		per_class[(size_t)d->y[i]]++;
	}
	assert_int_equal(per_class[0], 1000);
	assert_int_equal(per_class[1], 1000);
	ps_dataset_destroy(&d);
}

static void test_dataset_destroy_null(void **state)
{
	ps_dataset *d = NULL;

	(void)state;
	ps_dataset_destroy(NULL);
	ps_dataset_destroy(&d);
	assert_null(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dataset_load_idx_plain),
		cmocka_unit_test(test_dataset_load_idx_gzip),
		cmocka_unit_test(test_dataset_load_idx_any_ndims),
		cmocka_unit_test(test_dataset_truncated_images),
		cmocka_unit_test(test_dataset_truncated_labels),
		cmocka_unit_test(test_dataset_truncated_header),
		cmocka_unit_test(test_dataset_truncated_gzip_stream),
		cmocka_unit_test(test_dataset_corrupt_gzip),
		cmocka_unit_test(test_dataset_wrong_magic),
		cmocka_unit_test(test_dataset_count_mismatch),
		cmocka_unit_test(test_dataset_absurd_sizes),
		cmocka_unit_test(test_dataset_header_larger_than_file),
		cmocka_unit_test(test_dataset_trailing_data),
		cmocka_unit_test(test_dataset_missing_file),
		cmocka_unit_test(test_dataset_read_error),
		cmocka_unit_test(test_dataset_out_of_memory),
		cmocka_unit_test(test_dataset_synthetic_deterministic),
		cmocka_unit_test(test_dataset_synthetic_statistics),
		cmocka_unit_test(test_dataset_synthetic_bad_args),
		cmocka_unit_test(test_dataset_synthetic_logistic_deterministic),
		cmocka_unit_test(test_dataset_synthetic_logistic_statistics),
		cmocka_unit_test(test_dataset_synthetic_logistic_bad_args),
		cmocka_unit_test(test_dataset_select_classes),
		cmocka_unit_test(test_dataset_select_classes_refused),
		cmocka_unit_test(test_dataset_shard_range_covers),
		cmocka_unit_test(test_dataset_slice),
		cmocka_unit_test(test_dataset_slice_shards),
		cmocka_unit_test(test_dataset_keep_rows),
		cmocka_unit_test(test_dataset_open_rows),
		cmocka_unit_test(test_dataset_open_bad_spec),
		cmocka_unit_test(test_dataset_open_synthetic),
		cmocka_unit_test(test_dataset_open_idx),
		cmocka_unit_test(test_dataset_open_synthetic_logistic),
		cmocka_unit_test(test_dataset_open_select_suffix),
		cmocka_unit_test(test_dataset_open_select_suffix_refused),
		cmocka_unit_test_teardown(test_dataset_open_fashion_mnist_dir,
					  env_restore),
		cmocka_unit_test_teardown(test_dataset_fashion_mnist_test,
					  env_restore),
		cmocka_unit_test(test_dataset_destroy_null),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
