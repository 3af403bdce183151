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
#include <stdlib.h>

#include "fuzz_file.h"
#include "ps_model.h"
#include "ps_modelfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void read_one(const char *path)
{
	ps_model_spec spec;
	ps_model *m = NULL;
	uint64_t version = 0, n = 0;
	float *w = NULL;
	ps_err e = {0};

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
	return fuzz_file_run("fuzz-model", data, size, read_one);
}
