/*
 * fuzz_dataset: libFuzzer harness for the IDX dataset loader
 * (common/ps_dataset.c), gzip-compressed or plain, through the spec
 * string a user gives (ps_dataset_open "idx:IMAGES,LABELS[@A,B]").
 * Input: 1 byte of flags (bit 0: select two classes, from the next two
 * bits, "@0,1", "@1,2", ...), a 2-byte little-endian length L, then the
 * image file (L bytes, cut to what is there) and the label file (the
 * rest). The files live in two memfds the loader opens by their
 * /proc/self/fd paths, as it would open any file. A dataset that loads
 * must hold what its header said. Flag bit 3 loads a trainer's rows only
 * (ps_dataset_open_rows(), shard (flags >> 6) % W of W = (flags >> 4 & 3)
 * + 1), which must be those rows of the whole set, with its classes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ps_dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int images_fd = -1, labels_fd = -1;

typedef struct shard {
	unsigned rank, workers;
} shard;

static void pick_shard(size_t n, void *arg, size_t *begin, size_t *end)
{
	const shard *s = arg;
	ps_dataset_shard_range(n, s->rank, s->workers, begin, end);
}

/* The rows of the whole set the shard should have loaded. */
static void check_rows(const char *spec, const ps_dataset *d,
		       const ps_dataset_rows *rows)
{
	ps_dataset *all = NULL;
	ps_err e = {0};

	if (ps_dataset_open(&all, spec, &e) != PS_OK || !all ||
	    rows->total != all->n || rows->first + d->n > all->n ||
	    d->dim != all->dim || d->classes != all->classes)
		abort();
	if (d->n > 0 &&
	    (memcmp(d->x, all->x + rows->first * all->dim,
		    d->n * d->dim * sizeof *d->x) != 0 ||
	     memcmp(d->y, all->y + rows->first, d->n * sizeof *d->y) != 0))
		abort();
	ps_dataset_destroy(&all);
}

/* Replace the contents of fd with buf[len]. */
static void fill(int fd, const uint8_t *buf, size_t len)
{
	if (ftruncate(fd, 0) != 0 ||
	    (len > 0 && pwrite(fd, buf, len, 0) != (ssize_t)len))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char spec[128];
	ps_dataset *d = NULL;
	ps_err e = {0};
	uint8_t flags;
	size_t ilen;

	if (size < 3)
		return 0;
	if (images_fd < 0) {
		images_fd = memfd_create("fuzz-images", MFD_CLOEXEC);
		labels_fd = memfd_create("fuzz-labels", MFD_CLOEXEC);
		if (images_fd < 0 || labels_fd < 0)
			abort();
	}
	flags = data[0];
	ilen = (size_t)data[1] | (size_t)data[2] << 8;
	data += 3;
	size -= 3;
	if (ilen > size)
		ilen = size;
	fill(images_fd, data, ilen);
	fill(labels_fd, data + ilen, size - ilen);
	if (flags & 1)
		snprintf(spec, sizeof spec,
			 "idx:/proc/self/fd/%d,/proc/self/fd/%d@%u,%u",
			 images_fd, labels_fd, flags >> 1 & 3,
			 (flags >> 1 & 3) + 1);
	else
		snprintf(spec, sizeof spec,
			 "idx:/proc/self/fd/%d,/proc/self/fd/%d", images_fd,
			 labels_fd);
	if (flags & 8) {
		shard sh = {0, (flags >> 4 & 3) + 1u};
		ps_dataset_rows rows = {.pick = pick_shard, .arg = &sh};
		sh.rank = (flags >> 6) % sh.workers;
		if (ps_dataset_open_rows(&d, spec, &rows, &e) == PS_OK) {
			if (!d || d->dim == 0 || d->classes == 0 ||
			    d->classes > 256)
				abort();
			check_rows(spec, d, &rows);
		}
		ps_dataset_destroy(&d);
		return 0;
	}
	if (ps_dataset_open(&d, spec, &e) == PS_OK) {
		if (!d || d->n == 0 || d->dim == 0 || d->classes == 0 ||
		    d->classes > 256)
			abort();
		/* Every value was read: pixels in [0, 1], labels below
		 * classes. */
		for (size_t i = 0; i < d->n * d->dim; i++)
			if (!(d->x[i] >= 0.0f && d->x[i] <= 1.0f))
				abort();
		for (size_t i = 0; i < d->n; i++)
			if (!(d->y[i] >= 0.0f && d->y[i] < (float)d->classes))
				abort();
	}
	ps_dataset_destroy(&d);
	return 0;
}
