/*
 * fuzz_file.h: the driver of the harnesses whose input is a whole file
 * with a CRC-32 in its last 4 bytes (model files, checkpoints). The input
 * goes into a memfd, which the reader opens by its /proc/self/fd path;
 * each input is read twice, as it is and with its last 4 bytes made the
 * right CRC-32, so that mutations also reach the checks behind the
 * checksum. Included by one harness each: its state is that harness's.
 */
#ifndef PS_FUZZ_FILE_H
#define PS_FUZZ_FILE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

/* Write len bytes of buf as the file at path and call reader(path). */
static void fuzz_file_read(int fd, const char *path, const uint8_t *buf,
			   size_t len, void (*reader)(const char *path))
{
	if (ftruncate(fd, 0) != 0 ||
	    (len > 0 && pwrite(fd, buf, len, 0) != (ssize_t)len))
		abort();
	reader(path);
}

/* The body of LLVMFuzzerTestOneInput: read data, then data with its CRC
 * made right (when that changes it). name names the memfd. */
static int fuzz_file_run(const char *name, const uint8_t *data, size_t size,
			 void (*reader)(const char *path))
{
	static int fd = -1;
	static char path[64];
	uint8_t *fixed;
	uint32_t crc;

	if (fd < 0) {
		fd = memfd_create(name, MFD_CLOEXEC);
		if (fd < 0)
			abort();
		snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	}
	fuzz_file_read(fd, path, data, size, reader);
	if (size < 4)
		return 0;
	fixed = malloc(size);
	if (!fixed)
		abort();
	memcpy(fixed, data, size);
	crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), fixed, (uInt)(size - 4));
	memcpy(fixed + size - 4, &crc, 4);
	if (memcmp(fixed, data, size) != 0)
		fuzz_file_read(fd, path, fixed, size, reader);
	free(fixed);
	return 0;
}

#endif
