/*
 * ps_dataset: training and test data in memory, as float rows. Loads IDX
 * files (the MNIST family, gzip-compressed or not), generates the synthetic
 * y = slope*x + intercept + noise regression and a synthetic two-class
 * problem, keeps two classes of a dataset as a binary one, and cuts a
 * dataset into the contiguous shard that one worker rank trains on.
 */
#ifndef PS_DATASET_H
#define PS_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "ps_error.h"

/* Plain value record. x holds n rows of dim floats (row-major); y holds n
 * targets: the class index as an exact small float for classification
 * (classes > 0), the regression target otherwise (classes == 0).
 * A dataset made by ps_dataset_slice() borrows the rows of its parent
 * (owns_data == 0) and must not outlive it. */
typedef struct ps_dataset {
	size_t n;
	size_t dim;
	uint32_t classes;
	float *x;
	float *y;
	int owns_data;
} ps_dataset;

/* Load an IDX image file (magic 0x00000803, u8 pixels, any number of
 * dimensions after the count; pixels scaled to [0, 1]) and an IDX label
 * file (magic 0x00000801, u8 labels) into *out. gzip files are read
 * transparently. classes is max(label) + 1.
 * Errors: PS_ENOENT (cannot open), PS_EFORMAT (wrong magic, counts that
 * disagree, absurd sizes), PS_ETRUNC (file shorter than its header says;
 * for a regular file found from its size before anything is allocated,
 * a gzip file being held to deflate's best ratio, 1032:1), PS_EIO,
 * PS_ENOMEM. e->msg names the file and the problem.
 * Caller owns the result; release with ps_dataset_destroy(). */
int ps_dataset_load_idx(ps_dataset **out, const char *images_path,
			const char *labels_path, ps_err *e) PS_WUR;

/* The textbook regression: x uniform in [-1, 1] (dim 1), y = slope * x +
 * intercept + N(0, noise^2), from a seeded generator (same seed, same data
 * on every machine). Errors: PS_EINVAL (n == 0), PS_ENOMEM.
 * Caller owns the result; release with ps_dataset_destroy(). */
int ps_dataset_synthetic_linear(ps_dataset **out, size_t n, double slope,
				double intercept, double noise, uint64_t seed,
				ps_err *e) PS_WUR;

/* A two-class problem in the plane: x ~ N(0, 1)^2 and label 1 when
 * 1.5*x0 - 2*x1 + 0.5 + 0.3*N(0, 1) > 0, else 0 (about 58% ones), from a
 * seeded generator (same seed, same data everywhere). classes = 2.
 * Errors: PS_EINVAL (n == 0), PS_ENOMEM.
 * Caller owns the result; release with ps_dataset_destroy(). */
int ps_dataset_synthetic_logistic(ps_dataset **out, size_t n, uint64_t seed,
				  ps_err *e) PS_WUR;

/* A new dataset of the rows of d labelled a or b, in their order, with a
 * relabelled 0 and b relabelled 1; classes = 2. The rows are copied, so
 * the result does not depend on d.
 * Errors: PS_EINVAL (d is a regression set, a == b, a or b >= d->classes,
 * or no row has either label; e->msg says which), PS_ENOMEM.
 * Caller owns the result; release with ps_dataset_destroy(). */
int ps_dataset_select_classes(ps_dataset **out, const ps_dataset *d,
			      uint32_t a, uint32_t b, ps_err *e) PS_WUR;

/* Open a dataset named by a spec string:
 *   "fashion-mnist:train" / "fashion-mnist:test" (dir from PS_DATA_DIR,
 *       default /usr/share/datasets/fashion-mnist, files *-idx?-ubyte.gz)
 *   "idx:IMAGES,LABELS"
 *   "synthetic-linear:N[:SEED]"  (slope 3, intercept 2, noise 0.1)
 *   "synthetic-logistic:N[:SEED]" (ps_dataset_synthetic_logistic())
 * and any of them followed by "@A,B" (e.g. "fashion-mnist:train@0,6"):
 * only classes A and B, as labels 0 and 1 (ps_dataset_select_classes()).
 * A and B are decimal; the selection is what follows the last '@', so an
 * idx path containing '@' needs a selection after it. SEED defaults to 1.
 * Errors: those of the loaders and of the selection, PS_EINVAL for an
 * unknown spec or a malformed selection.
 * Caller owns the result; release with ps_dataset_destroy(). */
int ps_dataset_open(ps_dataset **out, const char *spec, ps_err *e) PS_WUR;

/* Which rows of a set to keep, for ps_dataset_open_rows(): pick is
 * called once with the set's row count n and sets [*begin, *end) (within
 * [0, n]). The other fields are outputs. */
typedef struct ps_dataset_rows {
	void (*pick)(size_t n, void *arg, size_t *begin, size_t *end);
	void *arg;
	size_t first;  /* the set's row the result's row 0 is */
	size_t total;  /* rows of the whole set */
	int picked;    /* internal: the loader kept the rows itself */
} ps_dataset_rows;

/* ps_dataset_open() keeping only the rows rows->pick chooses (a trainer's
 * shard). An IDX set (fashion-mnist:..., idx:...) without a class
 * selection stores only those rows as it reads the files, so the rest
 * never takes memory; every other set is made whole and then cut
 * (ps_dataset_keep_rows()). classes is the whole set's either way.
 * Errors: those of ps_dataset_open(), PS_ERANGE (a pick outside the set).
 * Caller owns the result; release with ps_dataset_destroy(). */
int ps_dataset_open_rows(ps_dataset **out, const char *spec,
			 ps_dataset_rows *rows, ps_err *e) PS_WUR;

/* Rows [begin, end) that worker `rank` of `nranks` trains on: contiguous,
 * sizes differ by at most one. Precondition: rank < nranks. */
void ps_dataset_shard_range(size_t n, unsigned rank, unsigned nranks,
			    size_t *begin, size_t *end);

/* A view of rows [begin, end) of d, borrowing d's memory.
 * Errors: PS_ERANGE (bad range), PS_ENOMEM.
 * Caller owns the view (not the rows); release with ps_dataset_destroy()
 * before d. */
int ps_dataset_slice(ps_dataset **out, const ps_dataset *d, size_t begin,
		     size_t end) PS_WUR;

/* Keep only rows [begin, end) of d, which owns its rows: they move to
 * the front and the memory of the others goes back (a trainer keeps its
 * shard and lets the rest of the set go). On failure d is unchanged.
 * Errors: PS_ERANGE (bad range), PS_EINVAL (d borrows its rows). */
int ps_dataset_keep_rows(ps_dataset *d, size_t begin, size_t end) PS_WUR;

/* Release a dataset (and its rows when it owns them). Accepts NULL and
 * *dp == NULL; sets *dp to NULL. */
void ps_dataset_destroy(ps_dataset **dp);

#endif
