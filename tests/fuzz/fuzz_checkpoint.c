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
#include <stdlib.h>

#include "fuzz_file.h"
#include "ps_checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void read_one(const char *path)
{
	ps_checkpoint ck;
	ps_err e = {0};
	float sum = 0;

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
	return fuzz_file_run("fuzz-checkpoint", data, size, read_one);
}
