/*
 * Unit tests for ps_checkpoint: a round trip keeps every field, any one
 * flipped byte and any truncation is refused, a directory keeps the newest
 * checkpoints and resumes from the newest valid one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "ps_checkpoint.h"
#include "ps_log.h"
#include "ps_modelfile.h"

#define N 15
#define WORKERS 3

typedef struct fx {
	char dir[64];
	char path[128];
	float w[N], state[2 * N];
	ps_checkpoint_worker workers[WORKERS];
	ps_checkpoint ck;
} fx;

static int setup(void **state)
{
	fx *f = test_calloc(1, sizeof *f);

	assert_non_null(f);
	strcpy(f->dir, "/tmp/ps-test-ckpt-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof f->path, "%s/one.psck", f->dir);
	strcpy(f->ck.spec.name, "softmax");
	f->ck.spec.input_dim = 4;
	f->ck.spec.output_dim = 3;
	f->ck.spec.init_seed = 77;
	for (int i = 0; i < N; i++)
		f->w[i] = (float)i * 0.5f - 3;
	for (int i = 0; i < 2 * N; i++)
		f->state[i] = (float)i * 0.125f;
	for (int r = 0; r < WORKERS; r++)
		f->workers[r] = (ps_checkpoint_worker){
			.clock = 10u + (uint64_t)r, .last_seq = 20u + (uint64_t)r,
			.seq_mask = 0xf0f0u + (uint64_t)r, .pushes = 30u + (uint64_t)r,
			.samples = 40u + (uint64_t)r, .done = r == 1};
	f->ck.w = f->w;
	f->ck.n = N;
	f->ck.begin = 5;
	f->ck.total = N + 9;
	f->ck.shard = 1;
	f->ck.num_shards = 3;
	f->ck.version = 123;
	f->ck.model_version = 120;
	f->ck.optim_kind = 5; /* adam: 2 floats per weight */
	f->ck.optim_steps = 99;
	f->ck.state = f->state;
	f->ck.state_count = 2 * N;
	f->ck.consistency = 2;
	f->ck.num_workers = WORKERS;
	f->ck.workers = f->workers;
	f->ck.samples = 1000;
	f->ck.pulls = 55;
	f->ck.pushes_applied = 122;
	f->ck.bsp_steps = 0;
	f->ck.bsp_clock = 0;
	f->ck.staleness_max = 7;
	for (int i = 0; i < 8; i++)
		f->ck.staleness_hist[i] = (uint64_t)i * 3;
	f->ck.updates_lost = 4;
	f->ck.staleness_sum = 61.5;
	f->ck.train_seconds = 12.25;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fx *f = *state;
	char cmd[128];

	snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	test_free(f);
	return 0;
}

static long file_size(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return (long)st.st_size;
}

static void read_all(const char *path, unsigned char **buf, long *len)
{
	FILE *fp = fopen(path, "rb");
	assert_non_null(fp);
	*len = file_size(path);
	*buf = malloc((size_t)*len);
	assert_non_null(*buf);
	assert_int_equal(fread(*buf, 1, (size_t)*len, fp), (size_t)*len);
	fclose(fp);
}

static void write_all(const char *path, const unsigned char *buf, long len)
{
	FILE *fp = fopen(path, "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(buf, 1, (size_t)len, fp), (size_t)len);
	assert_int_equal(fclose(fp), 0);
}

static void test_checkpoint_round_trip(void **state)
{
	fx *f = *state;
	ps_checkpoint got;
	ps_err e = {0, ""};

	assert_int_equal(ps_checkpoint_write(f->path, &f->ck, &e), PS_OK);
	assert_int_equal(ps_checkpoint_read(f->path, &got, &e), PS_OK);
	assert_string_equal(got.spec.name, "softmax");
	assert_int_equal(got.spec.init_seed, 77);
	assert_int_equal(got.n, N);
	assert_int_equal(got.begin, 5);
	assert_int_equal(got.total, N + 9);
	assert_true(got.shard == 1 && got.num_shards == 3);
	assert_memory_equal(got.w, f->w, sizeof f->w);
	assert_int_equal(got.state_count, 2 * N);
	assert_memory_equal(got.state, f->state, sizeof f->state);
	assert_int_equal(got.num_workers, WORKERS);
	assert_memory_equal(got.workers, f->workers, sizeof f->workers);
	assert_int_equal(got.version, 123);
	assert_int_equal(got.model_version, 120);
	assert_int_equal(got.optim_kind, 5);
	assert_int_equal(got.optim_steps, 99);
	assert_int_equal(got.consistency, 2);
	assert_int_equal(got.samples, 1000);
	assert_int_equal(got.pulls, 55);
	assert_int_equal(got.pushes_applied, 122);
	assert_int_equal(got.staleness_max, 7);
	assert_memory_equal(got.staleness_hist, f->ck.staleness_hist,
			    sizeof got.staleness_hist);
	assert_int_equal(got.updates_lost, 4);
	assert_true(got.staleness_sum == 61.5 && got.train_seconds == 12.25);
	ps_checkpoint_release(&got);
	assert_null(got.w);

	/* Tools that read models read a checkpoint's weights ... */
	{
		ps_model_spec spec;
		uint64_t version = 0, n = 0;
		float *w = NULL;
		assert_int_equal(ps_modelfile_read(f->path, &spec, &version, &w,
						   &n, &e),
				 PS_OK);
		assert_int_equal(version, 120);
		assert_int_equal(n, N);
		assert_memory_equal(w, f->w, sizeof f->w);
		free(w);
	}
	/* ... but a model file is no checkpoint. */
	assert_int_equal(ps_modelfile_write(f->path, &f->ck.spec, 1, f->w, N,
					    &e),
			 PS_OK);
	assert_int_equal(ps_checkpoint_read(f->path, &got, &e), PS_EFORMAT);
	assert_non_null(strstr(e.msg, "not a checkpoint"));
}

/* CRC-32 catches every single-byte change: each one is refused, none is
 * loaded (and none crashes the reader). */
static void test_checkpoint_any_flipped_byte_is_refused(void **state)
{
	fx *f = *state;
	unsigned char *good;
	long len;
	ps_checkpoint got;
	ps_err e = {0, ""};

	assert_int_equal(ps_checkpoint_write(f->path, &f->ck, &e), PS_OK);
	read_all(f->path, &good, &len);
	for (long i = 0; i < len; i++) {
		good[i] ^= 0x40;
		write_all(f->path, good, len);
		good[i] ^= 0x40;
		if (ps_checkpoint_read(f->path, &got, &e) == PS_OK)
			fail_msg("byte %ld flipped: loaded", i);
		assert_null(got.w);
	}
	write_all(f->path, good, len);
	assert_int_equal(ps_checkpoint_read(f->path, &got, &e), PS_OK);
	ps_checkpoint_release(&got);
	free(good);
}

static void test_checkpoint_any_truncation_is_refused(void **state)
{
	fx *f = *state;
	unsigned char *good;
	long len;
	ps_checkpoint got;
	ps_err e = {0, ""};

	assert_int_equal(ps_checkpoint_write(f->path, &f->ck, &e), PS_OK);
	read_all(f->path, &good, &len);
	for (long k = 0; k < len; k++) {
		int rc;
		write_all(f->path, good, k);
		rc = ps_checkpoint_read(f->path, &got, &e);
		if (rc != PS_ETRUNC && rc != PS_EFORMAT)
			fail_msg("cut to %ld bytes: %s", k, ps_strerror(rc));
	}
	/* One byte too many is refused as well. */
	{
		unsigned char *more = malloc((size_t)len + 1);
		assert_non_null(more);
		memcpy(more, good, (size_t)len);
		more[len] = 0;
		write_all(f->path, more, len + 1);
		assert_int_equal(ps_checkpoint_read(f->path, &got, &e), PS_EFORMAT);
		free(more);
	}
	free(good);
}

/* A checkpoint whose counts contradict each other, with a valid CRC (as
 * a buggy writer could make): refused before anything is allocated. */
static void test_checkpoint_inconsistent_state_is_refused(void **state)
{
	fx *f = *state;
	ps_checkpoint got;
	ps_err e = {0, ""};

	f->ck.state_count = N + 1; /* neither 0, n nor 2n */
	{
		float big[2 * N + 1] = {0};
		f->ck.state = big;
		assert_int_equal(ps_checkpoint_write(f->path, &f->ck, &e), PS_OK);
	}
	assert_int_equal(ps_checkpoint_read(f->path, &got, &e), PS_EFORMAT);
	assert_non_null(strstr(e.msg, "inconsistent"));
	f->ck.state_count = 2 * N;
	f->ck.state = f->state;
	f->ck.model_version = f->ck.version + 1;
	assert_int_equal(ps_checkpoint_write(f->path, &f->ck, &e), PS_OK);
	assert_int_equal(ps_checkpoint_read(f->path, &got, &e), PS_EFORMAT);
	f->ck.model_version = 120;
	f->ck.begin = 10; /* [10, 25) of 24 weights */
	assert_int_equal(ps_checkpoint_write(f->path, &f->ck, &e), PS_OK);
	assert_int_equal(ps_checkpoint_read(f->path, &got, &e), PS_EFORMAT);
	f->ck.begin = 5;
	/* A done flag of 2, with the CRC made right again: the layout of
	 * ps_checkpoint.c puts worker 2's flag at 200 + 2 * 48 + 40 bytes
	 * into the extra part, which follows the 156-byte header, the
	 * weights and the u64 length. */
	{
		unsigned char *buf;
		long len, off = 156 + N * 4 + 8 + 200 + 2 * 48 + 40;
		uint32_t crc;
		assert_int_equal(ps_checkpoint_write(f->path, &f->ck, &e), PS_OK);
		read_all(f->path, &buf, &len);
		assert_int_equal(buf[off], 0);
		buf[off] = 2;
		crc = (uint32_t)crc32(0L, buf, (uInt)(len - 4));
		memcpy(buf + len - 4, &crc, 4);
		write_all(f->path, buf, len);
		free(buf);
	}
	assert_int_equal(ps_checkpoint_read(f->path, &got, &e), PS_EFORMAT);
	assert_non_null(strstr(e.msg, "done flag"));
}

static int count_checkpoints(const char *dir)
{
	char cmd[160];
	FILE *p;
	int n = -1;

	snprintf(cmd, sizeof cmd, "ls '%s' | grep -c '^ckpt-.*\\.psck$'", dir);
	p = popen(cmd, "r");
	assert_non_null(p);
	assert_int_equal(fscanf(p, "%d", &n), 1);
	pclose(p);
	return n;
}

/* save keeps the newest `keep`; load_newest skips a damaged newest one
 * for the one before it, and says so when none is left. */
static void test_checkpoint_directory_keeps_and_falls_back(void **state)
{
	fx *f = *state;
	char written[4096], loaded[4096];
	ps_checkpoint got;
	ps_err e = {0, ""};

	assert_int_equal(ps_checkpoint_load_newest(f->dir, &got, loaded,
						   sizeof loaded, &e),
			 PS_ENOENT);
	for (uint64_t v = 100; v <= 1000; v += 100) {
		f->ck.version = v;
		f->ck.model_version = v;
		assert_int_equal(ps_checkpoint_save(f->dir, &f->ck, 2, written,
						    sizeof written, &e),
				 PS_OK);
	}
	assert_non_null(strstr(written, "ckpt-00000000000000001000.psck"));
	assert_int_equal(count_checkpoints(f->dir), 2);
	/* A file that only looks like one is no checkpoint of ours. */
	{
		char other[128];
		snprintf(other, sizeof other, "%s/ckpt-12x.psck", f->dir);
		write_all(other, (const unsigned char *)"x", 1);
	}
	assert_int_equal(ps_checkpoint_load_newest(f->dir, &got, loaded,
						   sizeof loaded, &e),
			 PS_OK);
	assert_int_equal(got.version, 1000);
	ps_checkpoint_release(&got);

	/* Damage the newest: the one before it is loaded. */
	{
		unsigned char *buf;
		long len;
		read_all(written, &buf, &len);
		buf[len / 2] ^= 1;
		write_all(written, buf, len);
		free(buf);
	}
	ps_log_setup("test", PS_LOG_ERROR); /* the refusal is logged */
	assert_int_equal(ps_checkpoint_load_newest(f->dir, &got, loaded,
						   sizeof loaded, &e),
			 PS_OK);
	assert_int_equal(got.version, 900);
	assert_non_null(strstr(loaded, "ckpt-00000000000000000900.psck"));
	ps_checkpoint_release(&got);

	/* Damage that one too: nothing valid is left. */
	{
		unsigned char *buf;
		long len;
		read_all(loaded, &buf, &len);
		write_all(loaded, buf, len - 1);
		free(buf);
	}
	assert_int_equal(ps_checkpoint_load_newest(f->dir, &got, loaded,
						   sizeof loaded, &e),
			 PS_EFORMAT);
	assert_non_null(strstr(e.msg, "no valid checkpoint"));
	assert_non_null(strstr(e.msg, "checksum"));
	assert_null(got.w);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_checkpoint_round_trip),
		T(test_checkpoint_any_flipped_byte_is_refused),
		T(test_checkpoint_any_truncation_is_refused),
		T(test_checkpoint_inconsistent_state_is_refused),
		T(test_checkpoint_directory_keeps_and_falls_back),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}
