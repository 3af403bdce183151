/*
 * Unit tests for ps_metrics: the JSON-lines writer's fields, its fixed
 * interval, and its documented errors. Files go to a mkdtemp directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ps_error.h"
#include "ps_log.h"
#include "ps_metrics.h"

static char tmpdir[] = "/tmp/test_ps_metrics.XXXXXX";
static char path[sizeof tmpdir + 32];

static int group_setup(void **state)
{
	(void)state;
	if (!mkdtemp(tmpdir))
		return -1;
	snprintf(path, sizeof path, "%s/m.jsonl", tmpdir);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	unlink(path);
	return rmdir(tmpdir);
}

static size_t read_all(char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");
	size_t n;

	assert_non_null(f);
	n = fread(buf, 1, cap - 1, f);
	buf[n] = '\0';
	fclose(f);
	return n;
}

static void test_metrics_lines_and_fields(void **state)
{
	(void)state;
	static const char *const labels[3] = {"0", "1", "2-3"};
	const uint64_t counts[3] = {5, 0, 7};
	ps_transport_counters c = {.bytes_in = 11, .bytes_out = 22,
				   .msgs_in = 1, .msgs_out = 2,
				   .shared_in = 3, .shared_out = 4};
	ps_metrics *m = NULL;
	ps_err e = {0, ""};
	char buf[2048];
	double t;

	assert_int_equal(ps_metrics_open(&m, path, 10, &e), PS_OK);
	assert_non_null(m);
	t = ps_now();
	assert_true(ps_metrics_due(m, t));
	assert_true(ps_metrics_begin(m, t) == 0.0);
	ps_metrics_u64(m, "updates", 42);
	ps_metrics_num(m, "loss", 0.5);
	ps_metrics_num(m, "nothing", NAN);
	ps_metrics_hist(m, "staleness_histogram", labels, counts, 3);
	ps_metrics_transport(m, &c);
	assert_int_equal(ps_metrics_end(m), PS_OK);
	/* The next line falls due one interval later. */
	assert_false(ps_metrics_due(m, t + 5));
	assert_true(ps_metrics_due(m, t + 10.5));
	assert_true(ps_metrics_begin(m, t + 10.5) == 10.5);
	assert_int_equal(ps_metrics_end(m), PS_OK);
	/* A line written late does not shift the grid: due at t + 20. */
	assert_true(ps_metrics_due(m, t + 20));

	/* Flushed at the end of each line, before close. */
	read_all(buf, sizeof buf);
	assert_non_null(strstr(buf, "{\"time\": "));
	assert_non_null(strstr(buf, "\"unix_time\": "));
	assert_non_null(strstr(buf, ", \"updates\": 42, \"loss\": 0.5, "
				    "\"nothing\": null"));
	assert_non_null(strstr(buf, "\"staleness_histogram\": {\"0\": 5, "
				    "\"1\": 0, \"2-3\": 7}"));
	assert_non_null(strstr(buf, "\"bytes_in\": 11, \"bytes_out\": 22, "
				    "\"msgs_in\": 1, \"msgs_out\": 2, "
				    "\"msgs_shared_in\": 3, "
				    "\"msgs_shared_out\": 4}\n"));
	/* Exactly two lines. */
	assert_non_null(strchr(buf, '\n'));
	assert_non_null(strchr(strchr(buf, '\n') + 1, '\n'));
	assert_int_equal(strchr(strchr(buf, '\n') + 1, '\n')[1], '\0');
	ps_metrics_close(&m);
	assert_null(m);
}

static void test_metrics_open_errors(void **state)
{
	(void)state;
	ps_metrics *m = (ps_metrics *)(uintptr_t)1;
	ps_err e = {0, ""};

	assert_int_equal(ps_metrics_open(&m, path, 0, &e), PS_EINVAL);
	assert_null(m);
	assert_int_equal(ps_metrics_open(&m, "/nonexistent-dir/m.jsonl", 1, &e),
			 PS_EIO);
	assert_null(m);
	assert_non_null(strstr(e.msg, "/nonexistent-dir/m.jsonl"));
}

static void test_metrics_null_is_never_due(void **state)
{
	(void)state;
	ps_metrics *m = NULL;

	assert_false(ps_metrics_due(NULL, ps_now()));
	ps_metrics_close(&m);
	ps_metrics_close(NULL);
}

/* A full device: the write error comes back from ps_metrics_end(). */
static void test_metrics_write_error(void **state)
{
	(void)state;
	ps_metrics *m = NULL;
	ps_err e = {0, ""};

	if (access("/dev/full", W_OK) != 0) {
		skip();
		return;
	}
	assert_int_equal(ps_metrics_open(&m, "/dev/full", 1, &e), PS_OK);
	ps_metrics_begin(m, ps_now());
	assert_int_equal(ps_metrics_end(m), PS_EIO);
	assert_false(ps_metrics_due(m, ps_now() + 100));
	ps_metrics_close(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_metrics_lines_and_fields),
		cmocka_unit_test(test_metrics_open_errors),
		cmocka_unit_test(test_metrics_null_is_never_due),
		cmocka_unit_test(test_metrics_write_error),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
