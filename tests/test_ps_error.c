/*
 * Unit tests for ps_error: every code of PS_ERROR_MAP has its own message
 * and name, the codes are distinct and negative, and ps_err_set() records
 * the detail (or accepts a NULL ps_err).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "ps_error.h"

/* Every code of the map, in map order, with its spelled-out name. */
#define CODE_ENTRY_(name, msg) {PS_##name, "PS_" #name, msg},
static const struct {
	int code;
	const char *name;
	const char *msg;
} codes[] = {PS_ERROR_MAP(CODE_ENTRY_)};
#undef CODE_ENTRY_
#define NCODES (sizeof codes / sizeof codes[0])

static void test_error_every_code_has_a_message(void **state)
{
	(void)state;
	assert_true(NCODES >= 16);
	for (size_t i = 0; i < NCODES; i++) {
		const char *s = ps_strerror(codes[i].code);
		assert_non_null(s);
		assert_true(strlen(s) > 0);
		assert_string_not_equal(s, "unknown error");
		assert_string_equal(s, codes[i].msg);
	}
}

static void test_error_messages_are_distinct(void **state)
{
	(void)state;
	for (size_t i = 0; i < NCODES; i++)
		for (size_t j = i + 1; j < NCODES; j++)
			assert_string_not_equal(ps_strerror(codes[i].code),
						ps_strerror(codes[j].code));
}

static void test_error_codes_are_distinct_and_negative(void **state)
{
	(void)state;
	for (size_t i = 0; i < NCODES; i++) {
		assert_true(codes[i].code < 0);
		assert_true(codes[i].code > PS_ERROR_FIRST_);
		assert_true(codes[i].code < PS_ERROR_LAST_);
		for (size_t j = i + 1; j < NCODES; j++)
			assert_int_not_equal(codes[i].code, codes[j].code);
	}
	assert_int_equal(PS_OK, 0);
}

static void test_error_every_code_has_a_name(void **state)
{
	(void)state;
	for (size_t i = 0; i < NCODES; i++) {
		const char *n = ps_errname(codes[i].code);
		assert_non_null(n);
		assert_string_equal(n, codes[i].name);
		assert_string_not_equal(n, "PS_E?");
	}
	assert_string_equal(ps_errname(PS_EINVAL), "PS_EINVAL");
	assert_string_equal(ps_errname(PS_EUNKNOWN_WORKER),
			    "PS_EUNKNOWN_WORKER");
}

static void test_error_ok_is_success(void **state)
{
	(void)state;
	assert_string_equal(ps_strerror(PS_OK), "success");
	assert_string_equal(ps_errname(PS_OK), "PS_OK");
}

static void test_error_unknown_code(void **state)
{
	(void)state;
	const int bogus[] = {1, 42, -1, PS_ERROR_FIRST_, PS_ERROR_LAST_,
			     -100000};
	for (size_t i = 0; i < sizeof bogus / sizeof bogus[0]; i++) {
		assert_string_equal(ps_strerror(bogus[i]), "unknown error");
		assert_string_equal(ps_errname(bogus[i]), "PS_E?");
	}
}

static void test_error_set_fills_code_and_message(void **state)
{
	(void)state;
	ps_err e = {0, ""};
	int rc = ps_err_set(&e, PS_EPROTO, "push: begin %d > end %d", 7, 3);
	assert_int_equal(rc, PS_EPROTO);
	assert_int_equal(e.code, PS_EPROTO);
	assert_string_equal(e.msg, "push: begin 7 > end 3");

	/* A later call replaces both. */
	rc = ps_err_set(&e, PS_EIO, "%s", "disk");
	assert_int_equal(rc, PS_EIO);
	assert_int_equal(e.code, PS_EIO);
	assert_string_equal(e.msg, "disk");
}

static void test_error_set_truncates_long_message(void **state)
{
	(void)state;
	ps_err e;
	char big[1000];
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	memset(&e, 0x55, sizeof e);
	assert_int_equal(ps_err_set(&e, PS_EINVAL, "%s", big), PS_EINVAL);
	assert_int_equal(strlen(e.msg), sizeof e.msg - 1);
	assert_int_equal(e.msg[0], 'x');
}

static void test_error_set_accepts_null(void **state)
{
	(void)state;
	assert_int_equal(ps_err_set(NULL, PS_ETIMEDOUT, "after %d ms", 5),
			 PS_ETIMEDOUT);
	assert_int_equal(ps_err_set(NULL, PS_OK, "fine"), PS_OK);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_error_every_code_has_a_message),
		cmocka_unit_test(test_error_messages_are_distinct),
		cmocka_unit_test(test_error_codes_are_distinct_and_negative),
		cmocka_unit_test(test_error_every_code_has_a_name),
		cmocka_unit_test(test_error_ok_is_success),
		cmocka_unit_test(test_error_unknown_code),
		cmocka_unit_test(test_error_set_fills_code_and_message),
		cmocka_unit_test(test_error_set_truncates_long_message),
		cmocka_unit_test(test_error_set_accepts_null),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
