/*
 * Unit tests for ps_json: escapes, null for a missing string, and null
 * for numbers JSON cannot hold.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ps_json.h"

/* What fn wrote, read back from a temporary file. */
static const char *written(void (*fn)(FILE *, const void *), const void *arg)
{
	static char buf[256];
	FILE *f = tmpfile();
	size_t n;

	assert_non_null(f);
	fn(f, arg);
	rewind(f);
	n = fread(buf, 1, sizeof buf - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static void put_string(FILE *f, const void *arg)
{
	ps_json_string(f, arg);
}

static void put_number(FILE *f, const void *arg)
{
	ps_json_number(f, *(const double *)arg);
}

static void test_json_string_escapes(void **state)
{
	(void)state;
	assert_string_equal(written(put_string, "plain"), "\"plain\"");
	assert_string_equal(written(put_string, "a\"b\\c"), "\"a\\\"b\\\\c\"");
	assert_string_equal(written(put_string, "tab\there\n"),
			    "\"tab\\u0009here\\u000a\"");
	assert_string_equal(written(put_string, NULL), "null");
}

static void test_json_number_finite_and_not(void **state)
{
	double v[] = {0.8462, -2.5, 1e-12, NAN, INFINITY, -INFINITY};
	(void)state;
	assert_string_equal(written(put_number, &v[0]), "0.8462");
	assert_string_equal(written(put_number, &v[1]), "-2.5");
	assert_string_equal(written(put_number, &v[2]), "1e-12");
	assert_string_equal(written(put_number, &v[3]), "null");
	assert_string_equal(written(put_number, &v[4]), "null");
	assert_string_equal(written(put_number, &v[5]), "null");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_string_escapes),
		cmocka_unit_test(test_json_number_finite_and_not),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
