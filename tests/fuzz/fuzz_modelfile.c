/*
 * fuzz_modelfile: libFuzzer harness for the model-file reader
 * (common/ps_modelfile.c ps_modelfile_read), which ps-eval points at any
 * file it is given. The input is the file, in a memfd the reader opens by
 * its /proc/self/fd path. Each input is read twice: as it is, and with its
 * last 4 bytes replaced by the right CRC-32, so that mutations also reach
 * what comes after the checksum: the spec checks of ps_model_new(), as
 * ps-eval makes the model the file names.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "ps_model.h"
#include "ps_modelfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fd = -1;
static char path[64];

static void read_one(const uint8_t *buf, size_t len)
{
	ps_model_spec spec;
	ps_model *m = NULL;
	uint64_t version = 0, n = 0;
	float *w = NULL;
	ps_err e = {0};

	if (ftruncate(fd, 0) != 0 ||
	    (len > 0 && pwrite(fd, buf, len, 0) != (ssize_t)len))
		abort();
	if (ps_modelfile_read(path, &spec, &version, &w, &n, &e) != PS_OK) {
		if (w)
			abort(); /* documented: *w is NULL on failure */
		return;
	}
	/* What ps-eval does next: make the model the file names. */
	if (ps_model_new(&m, &spec, &e) == PS_OK) {
		if (ps_model_num_params(m) == n) {
			float sum = 0;
			/* Touch every weight: they must all be there. */
			for (uint64_t i = 0; i < n; i++)
				sum += w[i];
			(void)sum;
		}
		ps_model_destroy(&m);
	}
	free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *fixed;
	uint32_t crc;

	if (fd < 0) {
		fd = memfd_create("fuzz-model", MFD_CLOEXEC);
		if (fd < 0)
			abort();
		snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	}
	read_one(data, size);
	if (size < 4)
		return 0;
	fixed = malloc(size);
	if (!fixed)
		abort();
	memcpy(fixed, data, size);
	crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), fixed, (uInt)(size - 4));
	memcpy(fixed + size - 4, &crc, 4);
	if (memcmp(fixed, data, size) != 0)
		read_one(fixed, size);
	free(fixed);
	return 0;
}
