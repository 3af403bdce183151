/*
 * ps_dataset: IDX loading (through zlib, so gzip and plain files alike),
 * the seeded synthetic regression and classification sets, two-class
 * selection, spec strings, and contiguous shards. zlib is used here and
 * nowhere else in the library.
 */
#include "ps_dataset.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "ps_rng.h"

/* What a header may claim before we call it absurd rather than try to
 * allocate it. The total cap keeps a corrupt header from asking for more
 * than 16 GiB of floats. */
#define IDX_MAX_COUNT ((uint64_t)1 << 28)
#define IDX_MAX_DIM ((uint64_t)1 << 24)
#define IDX_MAX_VALUES ((uint64_t)1 << 32)

/* Deflate's best ratio: one 258-byte match in 2 bits of a block's
 * codes. A gzip file of S bytes cannot hold more than this times S. */
#define GZIP_MAX_RATIO 1032

#define IDX_TYPE_U8 0x08
#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAGIC_LABELS 0x00000801u

/* Bytes per gzread() call and per conversion pass: big enough that the
 * call overhead vanishes, small enough to stay in cache. */
#define IDX_CHUNK ((size_t)1 << 20)
#define IDX_GZBUFFER (1u << 17)

#define DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"
/* Short enough that a whole message (spec cut to 48 characters, the
 * longest reason, these forms) fits in ps_err.msg. */
#define SPEC_FORMS                                                             \
	"forms: fashion-mnist:train|test, idx:IMAGES,LABELS, "                 \
	"synthetic-linear:N[:SEED], synthetic-logistic:N[:SEED], "             \
	"each optionally @A,B"

enum idx_kind { IDX_IMAGES, IDX_LABELS };

/* An IDX file whose header has been read and checked; the stream is
 * positioned at the first data byte. count is the first dimension, dim the
 * product of the others (1 for labels). */
struct idx_file {
	const char *path;
	enum idx_kind kind;
	gzFile f;
	size_t count;
	size_t dim;
	/* The file's size, when it is a regular file (-1 otherwise: a pipe
	 * has none): what the header may promise is checked against it. */
	long long file_size;
};

/* Translate the error zlib recorded on f. gzerror() prefixes its message
 * with the path, which we print ourselves. */
static int gz_fail(gzFile f, const char *path, ps_err *e)
{
	int zerr = Z_OK;
	const char *zmsg = gzerror(f, &zerr);
	size_t plen = strlen(path);
	int rc;

	if (strncmp(zmsg, path, plen) == 0 && zmsg[plen] == ':' &&
	    zmsg[plen + 1] == ' ')
		zmsg += plen + 2;
	if (zerr == Z_MEM_ERROR)
		rc = ps_err_set(e, PS_ENOMEM, "%s: out of memory in zlib",
				path);
	else if (zerr == Z_DATA_ERROR)
		rc = ps_err_set(e, PS_EFORMAT, "%s: corrupt gzip data: %s",
				path, zmsg);
	else
		rc = ps_err_set(e, PS_EIO, "%s: read error: %s", path, zmsg);
	return rc;
}

/* gzread() until len bytes or end of file; *got says how many arrived.
 * A short read is not an error here: only the caller knows what the file
 * promised, and so how to word the truncation. */
static int gz_read_full(gzFile f, const char *path, void *buf, size_t len,
			size_t *got, ps_err *e)
{
	unsigned char *p = buf;
	size_t done = 0;
	int rc = PS_OK;

	while (done < len) {
		size_t want = len - done < IDX_CHUNK ? len - done : IDX_CHUNK;
		int r = gzread(f, p + done, (unsigned)want);
		if (r < 0) {
			rc = gz_fail(f, path, e);
			break;
		}
		if (r == 0)
			break;
		done += (size_t)r;
	}
	*got = done;
	return rc;
}

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void idx_close(struct idx_file *idx)
{
	if (idx->f) {
		/* Read-only stream: nothing left to flush or lose. */
		(void)gzclose(idx->f);
		idx->f = NULL;
	}
}

static int idx_check_magic(const struct idx_file *idx, uint32_t magic,
			   ps_err *e)
{
	unsigned type = magic >> 8 & 0xff;
	unsigned nd = magic & 0xff;
	int rc = PS_OK;

	if (magic >> 16 != 0)
		rc = ps_err_set(e, PS_EFORMAT,
				"%s: not an IDX file (magic 0x%08x)",
				idx->path, (unsigned)magic);
	else if (type != IDX_TYPE_U8)
		rc = ps_err_set(e, PS_EFORMAT,
				"%s: IDX element type 0x%02x not supported "
				"(only 0x08, unsigned byte)",
				idx->path, type);
	else if (idx->kind == IDX_LABELS && magic != IDX_MAGIC_LABELS)
		rc = ps_err_set(e, PS_EFORMAT,
				"%s: wrong magic 0x%08x for labels (want "
				"0x%08x, one dimension)",
				idx->path, (unsigned)magic, IDX_MAGIC_LABELS);
	else if (idx->kind == IDX_IMAGES && nd < 2)
		rc = ps_err_set(e, PS_EFORMAT,
				"%s: wrong magic 0x%08x for images (want "
				"0x%08x, or at least one dimension after "
				"the count)",
				idx->path, (unsigned)magic, IDX_MAGIC_IMAGES);
	return rc;
}

/* Open path and read and check its header. On failure idx->f may still
 * be open; idx_close() it either way. */
static int idx_open(struct idx_file *idx, const char *path,
		    enum idx_kind kind, ps_err *e)
{
	/* The magic, then up to 255 big-endian u32 dimensions. */
	unsigned char hdr[4 + 255 * 4];
	const char *what = kind == IDX_IMAGES ? "images" : "labels";
	uint64_t count, dim = 1;
	unsigned nd;
	size_t got;
	struct stat st;
	int fd, rc;

	idx->path = path;
	idx->kind = kind;
	idx->file_size = -1;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = ps_err_set(e, errno == ENOMEM ? PS_ENOMEM : PS_ENOENT,
				"%s: cannot open: %s", path, strerror(errno));
		goto out;
	}
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
		idx->file_size = (long long)st.st_size;
	idx->f = gzdopen(fd, "rb");
	if (!idx->f) {
		close(fd);
		rc = ps_err_set(e, PS_ENOMEM, "%s: out of memory opening it",
				path);
		goto out;
	}
	/* Before the first read, or zlib ignores it. */
	(void)gzbuffer(idx->f, IDX_GZBUFFER);

	rc = gz_read_full(idx->f, path, hdr, 4, &got, e);
	if (rc)
		goto out;
	if (got < 4) {
		rc = ps_err_set(e, PS_ETRUNC,
				"%s: truncated: file ends after %zu bytes, "
				"inside the 4-byte IDX magic",
				path, got);
		goto out;
	}
	rc = idx_check_magic(idx, be32(hdr), e);
	if (rc)
		goto out;

	nd = hdr[3];
	rc = gz_read_full(idx->f, path, hdr + 4, (size_t)nd * 4, &got, e);
	if (rc)
		goto out;
	if (got < (size_t)nd * 4) {
		rc = ps_err_set(e, PS_ETRUNC,
				"%s: truncated: header has %u dimensions, "
				"file ends after %zu of them",
				path, nd, got / 4);
		goto out;
	}

	count = be32(hdr + 4);
	if (count == 0 || count > IDX_MAX_COUNT) {
		rc = ps_err_set(e, PS_EFORMAT,
				"%s: header says %llu %s (want 1 to %llu)",
				path, (unsigned long long)count, what,
				(unsigned long long)IDX_MAX_COUNT);
		goto out;
	}
	/* Each factor is below 2^32 and the running product stays at or
	 * below 2^24 until we stop, so the product cannot overflow. */
	for (unsigned i = 1; i < nd; i++) {
		uint32_t d = be32(hdr + 4 + 4 * (size_t)i);
		dim *= d;
		if (d == 0 || dim > IDX_MAX_DIM) {
			rc = ps_err_set(e, PS_EFORMAT,
					"%s: absurd image size: dimension %u "
					"is %lu (product must be 1 to %llu)",
					path, i, (unsigned long)d,
					(unsigned long long)IDX_MAX_DIM);
			goto out;
		}
	}
	if (count * dim > IDX_MAX_VALUES) {
		rc = ps_err_set(e, PS_EFORMAT,
				"%s: absurd size: %llu %s of %llu bytes is "
				"more than %llu values",
				path, (unsigned long long)count, what,
				(unsigned long long)dim,
				(unsigned long long)IDX_MAX_VALUES);
		goto out;
	}
	/* A header must not make us allocate gigabytes for a small file:
	 * the data it promises has to fit in the file (plain) or in what
	 * the file's size can inflate to (gzip). Only the whole read can
	 * tell a gzip file short, so that bound is loose, but it is a bound:
	 * a few bytes no longer claim 16 GiB. */
	if (idx->file_size >= 0) {
		uint64_t have = (uint64_t)idx->file_size;
		uint64_t head = 4 + 4 * (uint64_t)nd;
		uint64_t data = have > head ? have - head : 0;
		char promise[96];

		if (kind == IDX_IMAGES)
			snprintf(promise, sizeof promise,
				 "%llu images of %llu bytes",
				 (unsigned long long)count,
				 (unsigned long long)dim);
		else
			snprintf(promise, sizeof promise, "%llu labels",
				 (unsigned long long)count);
		if (gzdirect(idx->f) && data < count * dim) {
			rc = ps_err_set(e, PS_ETRUNC,
					"%s: truncated: header says %s, file "
					"ends after %llu",
					path, promise,
					(unsigned long long)(data / dim));
			goto out;
		}
		if (!gzdirect(idx->f) && have <= UINT64_MAX / GZIP_MAX_RATIO &&
		    have * GZIP_MAX_RATIO < head + count * dim) {
			rc = ps_err_set(e, PS_ETRUNC,
					"%s: truncated: header says %s, more "
					"than %llu bytes of gzip data can hold",
					path, promise,
					(unsigned long long)have);
			goto out;
		}
	}
#if UINT64_MAX > SIZE_MAX
	if (count * dim > SIZE_MAX / sizeof(float)) {
		rc = ps_err_set(e, PS_ENOMEM,
				"%s: %llu %s of %llu bytes do not fit in "
				"this address space",
				path, (unsigned long long)count, what,
				(unsigned long long)dim);
		goto out;
	}
#endif
	idx->count = (size_t)count;
	idx->dim = (size_t)dim;
out:
	return rc;
}

/* dst[i] = lut[src[i]]. restrict lets the compiler keep src in
 * registers across the float stores, which it must otherwise assume
 * could overwrite it. */
static void convert(float *restrict dst, const unsigned char *restrict src,
		    size_t k, const float *restrict lut)
{
	for (size_t i = 0; i < k; i++)
		dst[i] = lut[src[i]];
}

/* The larger of m and the largest of src[k]. */
static unsigned char max_byte(const unsigned char *src, size_t k,
			      unsigned char m)
{
	for (size_t i = 0; i < k; i++)
		m = src[i] > m ? src[i] : m;
	return m;
}

/* Read the count * dim data bytes of idx, keep rows [first, last) of
 * them in dst as floats through lut, and make sure nothing follows them.
 * *maxv gets the largest byte of all rows. */
static int idx_read_data(struct idx_file *idx, float *dst, const float *lut,
			 size_t first, size_t last, unsigned *maxv, ps_err *e)
{
	size_t total = idx->count * idx->dim;
	size_t from = first * idx->dim, to = last * idx->dim;
	size_t chunk = total < IDX_CHUNK ? total : IDX_CHUNK;
	size_t done = 0, got = 0;
	unsigned char *buf = NULL;
	unsigned char m = 0;
	int rc = PS_OK;

	buf = malloc(chunk);
	if (!buf) {
		rc = ps_err_set(e, PS_ENOMEM, "%s: out of memory", idx->path);
		goto out;
	}
	while (done < total) {
		size_t want = total - done < chunk ? total - done : chunk;
		size_t lo, hi;
		rc = gz_read_full(idx->f, idx->path, buf, want, &got, e);
		if (rc)
			goto out;
		/* The part of [done, done + got) that is kept. */
		lo = done > from ? done : from;
		hi = done + got < to ? done + got : to;
		if (lo < hi)
			convert(dst + (lo - from), buf + (lo - done), hi - lo,
				lut);
		m = max_byte(buf, got, m);
		done += got;
		if (got < want)
			break;
	}
	if (done < total) {
		if (idx->kind == IDX_IMAGES)
			rc = ps_err_set(e, PS_ETRUNC,
					"%s: truncated: header says %zu images "
					"of %zu bytes, file ends after %zu",
					idx->path, idx->count, idx->dim,
					done / idx->dim);
		else
			rc = ps_err_set(e, PS_ETRUNC,
					"%s: truncated: header says %zu "
					"labels, file ends after %zu",
					idx->path, idx->count, done);
		goto out;
	}
	/* One more read: it finds data the header does not account for,
	 * and makes zlib check the gzip trailer (CRC and length) in case
	 * inflate stopped at the last data byte before reaching it. */
	rc = gz_read_full(idx->f, idx->path, buf, 1, &got, e);
	if (rc)
		goto out;
	if (got) {
		rc = ps_err_set(e, PS_EFORMAT,
				"%s: more data than the header's %zu %s",
				idx->path, idx->count,
				idx->kind == IDX_IMAGES ? "images" : "labels");
		goto out;
	}
	*maxv = m;
out:
	free(buf);
	return rc;
}

/* Ask for transparent huge pages on a big, fresh buffer. Faulting in the
 * 188 MB of Fashion-MNIST train 4 KiB at a time cost 500-650 ms on a test
 * VM, more than inflating it (320 ms); with huge pages it took 20 ms.
 * Advice only: without THP, or off Linux, nothing changes. */
static void advise_huge(void *p, size_t len)
{
#ifdef MADV_HUGEPAGE
	const uintptr_t huge = (uintptr_t)2 << 20;
	uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1);
	uintptr_t end = ((uintptr_t)p + len) & ~(huge - 1);

	if (end > a)
		(void)madvise((void *)a, end - a, MADV_HUGEPAGE);
#else
	(void)p;
	(void)len;
#endif
}

/* An owning dataset of n rows of dim floats, contents unset. what names
 * the source in the error message. dim is at least 1 (every caller has
 * checked); n is 0 only for an empty pick of an IDX set's rows, which
 * allocates no rows at all. */
static int dataset_alloc(ps_dataset **out, size_t n, size_t dim,
			 const char *what, ps_err *e)
{
	ps_dataset *d = NULL;
	int rc = PS_OK;

	assert(dim > 0);
	if (n > SIZE_MAX / sizeof(float) / dim) {
		rc = ps_err_set(e, PS_ENOMEM,
				"%s: %zu rows of %zu floats do not fit in "
				"memory",
				what, n, dim);
		goto out;
	}
	d = calloc(1, sizeof *d);
	if (d) {
		d->owns_data = 1;
		d->n = n;
		d->dim = dim;
	}
	if (d && n > 0) {
		d->x = malloc(n * dim * sizeof(float));
		d->y = malloc(n * sizeof(float));
	}
	if (!d || (n > 0 && (!d->x || !d->y))) {
		rc = ps_err_set(e, PS_ENOMEM,
				"%s: out of memory for %zu rows of %zu floats",
				what, n, dim);
		goto out;
	}
	advise_huge(d->x, n * dim * sizeof(float));
	*out = d;
	d = NULL;
out:
	ps_dataset_destroy(&d);
	return rc;
}

/* The rows rows->pick chooses of a set of n, checked; all of them when
 * rows is NULL. Errors: PS_ERANGE (a range outside the set). */
static int pick_rows(ps_dataset_rows *rows, size_t n, size_t *begin,
		     size_t *end, const char *what, ps_err *e)
{
	*begin = 0;
	*end = n;
	if (!rows)
		return PS_OK;
	rows->pick(n, rows->arg, begin, end);
	if (*begin > *end || *end > n)
		return ps_err_set(e, PS_ERANGE,
				  "%s: rows [%zu, %zu) asked for of %zu", what,
				  *begin, *end, n);
	rows->first = *begin;
	rows->total = n;
	rows->picked = 1;
	return PS_OK;
}

/* ps_dataset_load_idx() storing only the rows rows picks (all when NULL):
 * the others are read, checked and dropped. */
static int load_idx(ps_dataset **out, const char *images_path,
		    const char *labels_path, ps_dataset_rows *rows, ps_err *e)
{
	struct idx_file im = { 0 }, lb = { 0 };
	ps_dataset *d = NULL;
	float pixel[256], label[256];
	unsigned maxpix = 0, maxlabel = 0;
	size_t first, last;
	int rc;

	assert(out && images_path && labels_path);
	*out = NULL;
	/* Both headers before any bulk read, so that a mismatch costs no
	 * time and no memory. */
	rc = idx_open(&im, images_path, IDX_IMAGES, e);
	if (rc)
		goto out;
	rc = idx_open(&lb, labels_path, IDX_LABELS, e);
	if (rc)
		goto out;
	if (im.count != lb.count) {
		rc = ps_err_set(e, PS_EFORMAT,
				"%s: header says %zu labels, but %s says %zu "
				"images",
				labels_path, lb.count, images_path, im.count);
		goto out;
	}
	rc = pick_rows(rows, im.count, &first, &last, images_path, e);
	if (rc)
		goto out;
	rc = dataset_alloc(&d, last - first, im.dim, images_path, e);
	if (rc)
		goto out;

	/* Division, not multiplication by 1/255: 255 must become exactly 1. */
	for (int i = 0; i < 256; i++) {
		pixel[i] = (float)i / 255.0f;
		label[i] = (float)i;
	}
	rc = idx_read_data(&im, d->x, pixel, first, last, &maxpix, e);
	if (rc)
		goto out;
	/* Every label counts for the classes, kept or not: each trainer of
	 * a set must size the same model. */
	rc = idx_read_data(&lb, d->y, label, first, last, &maxlabel, e);
	if (rc)
		goto out;
	d->classes = maxlabel + 1;
	*out = d;
	d = NULL;
out:
	idx_close(&im);
	idx_close(&lb);
	ps_dataset_destroy(&d);
	return rc;
}

int ps_dataset_load_idx(ps_dataset **out, const char *images_path,
			const char *labels_path, ps_err *e)
{
	return load_idx(out, images_path, labels_path, NULL, e);
}

int ps_dataset_synthetic_linear(ps_dataset **out, size_t n, double slope,
				double intercept, double noise, uint64_t seed,
				ps_err *e)
{
	ps_dataset *d = NULL;
	ps_rng rng;
	int rc;

	assert(out);
	*out = NULL;
	if (n == 0) {
		rc = ps_err_set(e, PS_EINVAL,
				"synthetic-linear: n must be >= 1");
		goto out;
	}
	if (!isfinite(slope) || !isfinite(intercept) || !isfinite(noise) ||
	    noise < 0) {
		rc = ps_err_set(e, PS_EINVAL,
				"synthetic-linear: slope %g, intercept %g and "
				"noise %g must be finite, noise >= 0",
				slope, intercept, noise);
		goto out;
	}
	rc = dataset_alloc(&d, n, 1, "synthetic-linear", e);
	if (rc)
		goto out;
	d->classes = 0;
	ps_rng_seed(&rng, seed);
	for (size_t i = 0; i < n; i++) {
		/* y from the stored (rounded) x, so the data obey the line
		 * exactly up to the noise. Fixed draw order: x, then noise. */
		float x = (float)(2.0 * ps_rng_uniform(&rng) - 1.0);
		double eps = ps_rng_normal(&rng);
		d->x[i] = x;
		d->y[i] = (float)(slope * x + intercept + noise * eps);
	}
	*out = d;
	d = NULL;
out:
	ps_dataset_destroy(&d);
	return rc;
}

int ps_dataset_synthetic_logistic(ps_dataset **out, size_t n, uint64_t seed,
				  ps_err *e)
{
	ps_dataset *d = NULL;
	ps_rng rng;
	int rc;

	assert(out);
	*out = NULL;
	if (n == 0) {
		rc = ps_err_set(e, PS_EINVAL,
				"synthetic-logistic: n must be >= 1");
		goto out;
	}
	rc = dataset_alloc(&d, n, 2, "synthetic-logistic", e);
	if (rc)
		goto out;
	d->classes = 2;
	ps_rng_seed(&rng, seed);
	for (size_t i = 0; i < n; i++) {
		/* The label from the stored (rounded) x, so that the data
		 * obey the boundary up to the noise. Fixed draw order: x0,
		 * x1, then noise. */
		float x0 = (float)ps_rng_normal(&rng);
		float x1 = (float)ps_rng_normal(&rng);
		double eps = ps_rng_normal(&rng);
		double z = 1.5 * x0 - 2.0 * x1 + 0.5 + 0.3 * eps;
		d->x[2 * i] = x0;
		d->x[2 * i + 1] = x1;
		d->y[i] = z > 0.0 ? 1.0f : 0.0f;
	}
	*out = d;
	d = NULL;
out:
	ps_dataset_destroy(&d);
	return rc;
}

int ps_dataset_select_classes(ps_dataset **out, const ps_dataset *d,
			      uint32_t a, uint32_t b, ps_err *e)
{
	ps_dataset *s = NULL;
	size_t count = 0, row = 0;
	int rc = PS_OK;

	assert(out && d);
	*out = NULL;
	if (d->classes == 0) {
		rc = ps_err_set(e, PS_EINVAL,
				"cannot select classes %" PRIu32 " and %" PRIu32
				" of a regression dataset",
				a, b);
		goto out;
	}
	if (a == b) {
		rc = ps_err_set(e, PS_EINVAL,
				"the two selected classes must differ, got %"
				PRIu32 " twice",
				a);
		goto out;
	}
	if (a >= d->classes || b >= d->classes) {
		rc = ps_err_set(e, PS_EINVAL,
				"class %" PRIu32 " is not one of the dataset's %"
				PRIu32 " classes (0 to %" PRIu32 ")",
				a >= d->classes ? a : b, d->classes,
				d->classes - 1);
		goto out;
	}
	/* Labels are exact small integers in floats, so == is exact. */
	for (size_t i = 0; i < d->n; i++)
		count += d->y[i] == (float)a || d->y[i] == (float)b;
	if (count == 0) {
		rc = ps_err_set(e, PS_EINVAL,
				"no row is labelled %" PRIu32 " or %" PRIu32, a,
				b);
		goto out;
	}
	rc = dataset_alloc(&s, count, d->dim, "class selection", e);
	if (rc)
		goto out;
	s->classes = 2;
	for (size_t i = 0; i < d->n; i++) {
		int is_a = d->y[i] == (float)a;
		if (!is_a && d->y[i] != (float)b)
			continue;
		memcpy(s->x + row * d->dim, d->x + i * d->dim,
		       d->dim * sizeof *s->x);
		s->y[row++] = is_a ? 0.0f : 1.0f;
	}
	*out = s;
	s = NULL;
out:
	ps_dataset_destroy(&s);
	return rc;
}

static int bad_spec(ps_err *e, const char *spec, const char *why)
{
	return ps_err_set(e, PS_EINVAL, "bad dataset spec '%.48s'%s%s; %s",
			  spec, *why ? ": " : "", why, SPEC_FORMS);
}

_Static_assert(ULLONG_MAX == UINT64_MAX, "strtoull() parses a uint64_t");

/* Decimal digits only: strtoull() alone would take leading blanks, a
 * sign (negating "-1" to UINT64_MAX) and an empty string. */
static int parse_u64(const char *s, uint64_t *v, const char **endp)
{
	unsigned long long x;
	char *end;
	int rc = -1;

	if (isdigit((unsigned char)*s)) {
		errno = 0;
		x = strtoull(s, &end, 10);
		if (errno != ERANGE) {
			*v = x;
			*endp = end;
			rc = 0;
		}
	}
	return rc;
}

enum synthetic_kind { SYNTH_LINEAR, SYNTH_LOGISTIC };

static int open_synthetic(ps_dataset **out, const char *spec,
			  const char *arg, enum synthetic_kind kind, ps_err *e)
{
	uint64_t n = 0, seed = 1;
	const char *end = NULL;
	int rc;

	if (parse_u64(arg, &n, &end) != 0 || n == 0 ||
	    (*end != '\0' && *end != ':')) {
		rc = bad_spec(e, spec, "N must be a decimal integer >= 1");
		goto out;
	}
#if UINT64_MAX > SIZE_MAX
	if (n > SIZE_MAX) {
		rc = bad_spec(e, spec, "N too large");
		goto out;
	}
#endif
	if (*end == ':' &&
	    (parse_u64(end + 1, &seed, &end) != 0 || *end != '\0')) {
		rc = bad_spec(e, spec,
			      "SEED must be a decimal integer below 2^64");
		goto out;
	}
	if (kind == SYNTH_LINEAR)
		rc = ps_dataset_synthetic_linear(out, (size_t)n, 3.0, 2.0, 0.1,
						 seed, e);
	else
		rc = ps_dataset_synthetic_logistic(out, (size_t)n, seed, e);
out:
	return rc;
}

static int open_idx(ps_dataset **out, const char *spec, const char *arg,
		    ps_dataset_rows *rows, ps_err *e)
{
	char *images = NULL, *labels;
	int rc;

	/* Split at the first comma: the images path cannot contain one. */
	if (!strchr(arg, ',') || arg[0] == ',' ||
	    arg[strlen(arg) - 1] == ',') {
		rc = bad_spec(e, spec, "want two paths, IMAGES,LABELS");
		goto out;
	}
	images = strdup(arg);
	if (!images) {
		rc = ps_err_set(e, PS_ENOMEM, "out of memory");
		goto out;
	}
	labels = strchr(images, ',');
	*labels++ = '\0';
	rc = load_idx(out, images, labels, rows, e);
out:
	free(images);
	return rc;
}

static char *join_path(const char *dir, const char *file)
{
	size_t dl = strlen(dir), fl = strlen(file);
	int slash = dl > 0 && dir[dl - 1] != '/';
	size_t len = dl + slash + fl + 1;
	char *p = malloc(len);

	if (p)
		snprintf(p, len, "%s%s%s", dir, slash ? "/" : "", file);
	return p;
}

static int open_fashion_mnist(ps_dataset **out, const char *prefix,
			      ps_dataset_rows *rows, ps_err *e)
{
	const char *dir = getenv("PS_DATA_DIR");
	char name[64];
	char *images = NULL, *labels = NULL;
	int rc;

	if (!dir || !*dir)
		dir = DEFAULT_DATA_DIR;
	snprintf(name, sizeof name, "%s-images-idx3-ubyte.gz", prefix);
	images = join_path(dir, name);
	snprintf(name, sizeof name, "%s-labels-idx1-ubyte.gz", prefix);
	labels = join_path(dir, name);
	if (!images || !labels) {
		rc = ps_err_set(e, PS_ENOMEM, "out of memory");
		goto out;
	}
	rc = load_idx(out, images, labels, rows, e);
out:
	free(images);
	free(labels);
	return rc;
}

/* base is spec without its selection; spec is what messages quote. An
 * IDX set keeps only the rows rows picks (NULL: all); the others ignore
 * rows. */
static int open_base(ps_dataset **out, const char *spec, const char *base,
		     ps_dataset_rows *rows, ps_err *e)
{
	static const char linear[] = "synthetic-linear:";
	static const char logistic[] = "synthetic-logistic:";
	static const char idx[] = "idx:";
	int rc;

	if (strcmp(base, "fashion-mnist:train") == 0)
		rc = open_fashion_mnist(out, "train", rows, e);
	else if (strcmp(base, "fashion-mnist:test") == 0)
		rc = open_fashion_mnist(out, "t10k", rows, e);
	else if (strncmp(base, linear, sizeof linear - 1) == 0)
		rc = open_synthetic(out, spec, base + sizeof linear - 1,
				    SYNTH_LINEAR, e);
	else if (strncmp(base, logistic, sizeof logistic - 1) == 0)
		rc = open_synthetic(out, spec, base + sizeof logistic - 1,
				    SYNTH_LOGISTIC, e);
	else if (strncmp(base, idx, sizeof idx - 1) == 0)
		rc = open_idx(out, spec, base + sizeof idx - 1, rows, e);
	else
		rc = bad_spec(e, spec, "unknown kind");
	return rc;
}

/* "A,B": two decimal class labels below 2^32. */
static int parse_selection(const char *s, uint32_t *a, uint32_t *b)
{
	uint64_t va = 0, vb = 0;
	const char *end = NULL;
	int rc = -1;

	if (parse_u64(s, &va, &end) == 0 && *end == ',' &&
	    parse_u64(end + 1, &vb, &end) == 0 && *end == '\0' &&
	    va <= UINT32_MAX && vb <= UINT32_MAX) {
		*a = (uint32_t)va;
		*b = (uint32_t)vb;
		rc = 0;
	}
	return rc;
}

int ps_dataset_open(ps_dataset **out, const char *spec, ps_err *e)
{
	ps_dataset *all = NULL;
	const char *at;
	char *base = NULL;
	uint32_t a = 0, b = 0;
	int rc;

	assert(out);
	*out = NULL;
	if (!spec) {
		rc = bad_spec(e, "(null)", "");
		goto out;
	}
	at = strrchr(spec, '@');
	if (!at) {
		rc = open_base(out, spec, spec, NULL, e);
		goto out;
	}
	/* The cheap checks before the base is loaded. */
	if (parse_selection(at + 1, &a, &b) != 0) {
		rc = bad_spec(e, spec, "want @A,B, two class numbers");
		goto out;
	}
	if (a == b) {
		rc = bad_spec(e, spec, "@A,B needs two different classes");
		goto out;
	}
	base = strndup(spec, (size_t)(at - spec));
	if (!base) {
		rc = ps_err_set(e, PS_ENOMEM, "out of memory");
		goto out;
	}
	rc = open_base(&all, spec, base, NULL, e);
	if (rc)
		goto out;
	rc = ps_dataset_select_classes(out, all, a, b, e);
	if (rc && e) {
		char why[sizeof e->msg];
		snprintf(why, sizeof why, "%s", e->msg);
		ps_err_set(e, rc, "dataset spec '%.64s': %s", spec, why);
	}
out:
	ps_dataset_destroy(&all);
	free(base);
	return rc;
}

int ps_dataset_open_rows(ps_dataset **out, const char *spec,
			 ps_dataset_rows *rows, ps_err *e)
{
	size_t begin, end;
	int rc;

	assert(out && rows && rows->pick);
	*out = NULL;
	rows->picked = 0;
	if (spec && !strrchr(spec, '@'))
		rc = open_base(out, spec, spec, rows, e);
	else
		rc = ps_dataset_open(out, spec, e);
	if (rc || rows->picked)
		return rc;
	rc = pick_rows(rows, (*out)->n, &begin, &end, spec, e);
	if (rc == PS_OK) {
		/* A range pick_rows checked, of a set that owns its rows. */
		int kept = ps_dataset_keep_rows(*out, begin, end);
		assert(kept == PS_OK);
		(void)kept;
	} else {
		ps_dataset_destroy(out);
	}
	return rc;
}

void ps_dataset_shard_range(size_t n, unsigned rank, unsigned nranks,
			    size_t *begin, size_t *end)
{
	size_t q, r;

	assert(nranks > 0 && rank < nranks && begin && end);
	/* The first n % nranks ranks take one extra row. q * rank <= n, so
	 * nothing overflows even for n near SIZE_MAX. */
	q = n / nranks;
	r = n % nranks;
	*begin = q * rank + (rank < r ? rank : r);
	*end = *begin + q + (rank < r ? 1 : 0);
}

int ps_dataset_slice(ps_dataset **out, const ps_dataset *d, size_t begin,
		     size_t end)
{
	ps_dataset *v = NULL;
	int rc = PS_OK;

	assert(out && d);
	*out = NULL;
	if (begin > end || end > d->n) {
		rc = PS_ERANGE;
		goto out;
	}
	v = calloc(1, sizeof *v);
	if (!v) {
		rc = PS_ENOMEM;
		goto out;
	}
	v->n = end - begin;
	v->dim = d->dim;
	v->classes = d->classes;
	v->owns_data = 0;
	/* No arithmetic on a NULL base (an empty hand-made dataset). */
	v->x = d->x ? d->x + begin * d->dim : NULL;
	v->y = d->y ? d->y + begin : NULL;
	*out = v;
out:
	return rc;
}

/* Processes that move large messages keep freed memory for reuse
 * (ps_transport_setup_process(): no mmap, a high trim threshold), so
 * rows let go would stay in the process: hand the free pages back. */
static void give_back_free_memory(void)
{
#ifdef __GLIBC__
	malloc_trim(0);
#endif
}

int ps_dataset_keep_rows(ps_dataset *d, size_t begin, size_t end)
{
	size_t n;
	float *x, *y;

	assert(d);
	if (begin > end || end > d->n)
		return PS_ERANGE;
	if (!d->owns_data)
		return PS_EINVAL;
	n = end - begin;
	if (n == 0) {
		free(d->x);
		free(d->y);
		d->x = d->y = NULL;
		d->n = 0;
		give_back_free_memory();
		return PS_OK;
	}
	memmove(d->x, d->x + begin * d->dim, n * d->dim * sizeof *d->x);
	memmove(d->y, d->y + begin, n * sizeof *d->y);
	/* Shrinking cannot fail for want of memory; a realloc that does
	 * anyway leaves the block as it was, rows already in front. */
	x = realloc(d->x, n * d->dim * sizeof *d->x);
	y = realloc(d->y, n * sizeof *d->y);
	if (x)
		d->x = x;
	if (y)
		d->y = y;
	d->n = n;
	give_back_free_memory();
	return PS_OK;
}

void ps_dataset_destroy(ps_dataset **dp)
{
	ps_dataset *d = dp ? *dp : NULL;

	if (d) {
		if (d->owns_data) {
			free(d->x);
			free(d->y);
		}
		free(d);
		*dp = NULL;
	}
}
