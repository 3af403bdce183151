/*
 * fuzz_checkpoint: libFuzzer harness for the checkpoint reader
 * (server/ps_checkpoint.c ps_checkpoint_read), which `ps-server --resume`
 * points at whatever files are in its checkpoint directory. The input is
 * the file, in a memfd the reader opens by its /proc/self/fd path. As for
 * model files, each input is read twice, the second time with its last 4
 * bytes made the right CRC-32, so that mutations reach the server state's
 * own checks behind the checksum.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "ps_checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fd = -1;
static char path[64];

static void read_one(const uint8_t *buf, size_t len)
{
	ps_checkpoint ck;
	ps_err e = {0};
	float sum = 0;

	if (ftruncate(fd, 0) != 0 ||
	    (len > 0 && pwrite(fd, buf, len, 0) != (ssize_t)len))
		abort();
	if (ps_checkpoint_read(path, &ck, &e) != PS_OK) {
		if (ck.w || ck.state || ck.workers)
			abort(); /* documented: nothing is left allocated */
		return;
	}
	/* What a resume does next: every array is as long as it says. */
	for (uint64_t i = 0; i < ck.n; i++)
		sum += ck.w[i];
	for (uint64_t i = 0; i < ck.state_count; i++)
		sum += ck.state[i];
	for (uint32_t r = 0; r < ck.num_workers; r++)
		sum += (float)ck.workers[r].clock;
	if (ck.shard >= ck.num_shards || ck.begin + ck.n > ck.total)
		abort(); /* the reader promised these */
	(void)sum;
	ps_checkpoint_release(&ck);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *fixed;
	uint32_t crc;

	if (fd < 0) {
		fd = memfd_create("fuzz-checkpoint", MFD_CLOEXEC);
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
