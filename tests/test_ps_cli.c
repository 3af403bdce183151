/*
 * Unit tests for ps_cli: every option type parsed from argv, defaults kept,
 * generated --help (captured from stdout), and every PS_EINVAL case with
 * the one-line message naming the option. Parses run back to back, so the
 * tests also catch getopt state leaking from one parse into the next.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ps_cli.h"
#include "ps_error.h"

static const char *const colors[] = {"red", "green", "blue", NULL};

/* The targets of the test table, reset to their defaults before each
 * test. */
static struct {
	int verbose;
	int batch;
	int offset; /* int without a range */
	uint64_t seed;
	uint64_t limit; /* u64 within [10, 1000] */
	double lr;
	double scale; /* double without a range */
	const char *out;
	int color;
} v;

static const ps_cli_opt opts[] = {
	{"verbose", PS_CLI_FLAG, &v.verbose, NULL, "talk more", 0, 0, NULL},
	{"batch", PS_CLI_INT, &v.batch, "B", "minibatch size", 1, 4096, NULL},
	{"offset", PS_CLI_INT, &v.offset, "K", "an offset", 0, -1, NULL},
	{"seed", PS_CLI_U64, &v.seed, "S", "random seed", 0, -1, NULL},
	{"limit", PS_CLI_U64, &v.limit, "L", "a limit", 10, 1000, NULL},
	{"lr", PS_CLI_DOUBLE, &v.lr, "RATE", "learning rate", 1e-6, 10, NULL},
	{"scale", PS_CLI_DOUBLE, &v.scale, "X", "a scale", 0, -1, NULL},
	{"out", PS_CLI_STRING, &v.out, "PATH", "output file", 0, -1, NULL},
	{"color", PS_CLI_CHOICE, &v.color, "NAME", "a color", 0, -1, colors},
	{NULL, 0, NULL, NULL, NULL, 0, 0, NULL},
};

static int reset_defaults(void **state)
{
	(void)state;
	v.verbose = 0;
	v.batch = 64;
	v.offset = -3;
	v.seed = 7;
	v.limit = 100;
	v.lr = 0.01;
	v.scale = 1.5;
	v.out = "default.bin";
	v.color = 1;
	return 0;
}

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])) - 1)

/* Parse a NULL-terminated argument list (program name first). The strings
 * are copied into heap memory freed right after, so a parser that keeps a
 * pointer into a previous argv is caught by the address sanitizer.
 * String targets point into argv: they are checked by the caller through
 * *keep, which takes the copies when not NULL. */
static int parse_keep(const char *const *args, ps_err *e, char ***keep)
{
	int argc = 0;
	while (args[argc])
		argc++;
	char **argv = calloc((size_t)argc + 1, sizeof *argv);
	assert_non_null(argv);
	for (int i = 0; i < argc; i++) {
		argv[i] = strdup(args[i]);
		assert_non_null(argv[i]);
	}
	int rc = ps_cli_parse("prog", "A test program.", opts, argc, argv, e);
	if (keep) {
		*keep = argv;
	} else {
		for (int i = 0; i < argc; i++)
			free(argv[i]);
		free(argv);
	}
	return rc;
}

static void free_argv(char **argv)
{
	for (int i = 0; argv && argv[i]; i++)
		free(argv[i]);
	free(argv);
}

static int parse(const char *const *args, ps_err *e)
{
	return parse_keep(args, e, NULL);
}

/* Expect PS_EINVAL with a message containing both needles. */
static void expect_einval(const char *const *args, const char *needle1,
			  const char *needle2)
{
	ps_err e = {0, ""};
	int rc = parse(args, &e);
	if (rc != PS_EINVAL)
		fail_msg("'%s %s' gave %s, expected PS_EINVAL",
			 args[1] ? args[1] : "",
			 args[1] && args[2] ? args[2] : "", ps_errname(rc));
	assert_int_equal(e.code, PS_EINVAL);
	assert_null(strchr(e.msg, '\n'));
	if (needle1 && !strstr(e.msg, needle1))
		fail_msg("message '%s' lacks '%s'", e.msg, needle1);
	if (needle2 && !strstr(e.msg, needle2))
		fail_msg("message '%s' lacks '%s'", e.msg, needle2);
}

/* Run a parse with stdout sent to a temporary file; the output is
 * returned in out (NUL-terminated, truncated to cap). */
static int parse_capturing_stdout(const char *const *args, ps_err *e,
				  char *out, size_t cap)
{
	char path[] = "/tmp/test_ps_cli.XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	fflush(stdout);
	int saved = dup(STDOUT_FILENO);
	assert_true(saved >= 0);
	assert_true(dup2(fd, STDOUT_FILENO) >= 0);

	int rc = parse(args, e);

	fflush(stdout);
	assert_true(dup2(saved, STDOUT_FILENO) >= 0);
	close(saved);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	ssize_t n = read(fd, out, cap - 1);
	assert_true(n >= 0);
	out[n] = '\0';
	close(fd);
	unlink(path);
	return rc;
}

/* --- parsing -------------------------------------------------------------- */

static void test_cli_parses_each_type(void **state)
{
	(void)state;
	ps_err e = {0, ""};
	char **argv = NULL;
	const char *args[] = {"prog",	 "--verbose", "--batch",  "128",
			      "--offset", "-42",	"--seed",   "12345",
			      "--limit",  "10",	"--lr",	    "2.5e-3",
			      "--scale",  "-1e10",	"--out",    "/tmp/x.bin",
			      "--color",  "blue",	NULL};
	assert_int_equal(parse_keep(args, &e, &argv), PS_OK);
	assert_int_equal(v.verbose, 1);
	assert_int_equal(v.batch, 128);
	assert_int_equal(v.offset, -42);
	assert_true(v.seed == 12345);
	assert_true(v.limit == 10);
	assert_true(v.lr == 2.5e-3);
	assert_true(v.scale == -1e10);
	assert_string_equal(v.out, "/tmp/x.bin");
	assert_int_equal(v.color, 2);
	free_argv(argv);
}

static void test_cli_parses_equals_form(void **state)
{
	(void)state;
	ps_err e = {0, ""};
	char **argv = NULL;
	const char *args[] = {"prog", "--batch=3", "--lr=0.5",
			      "--color=red", "--out=o", NULL};
	assert_int_equal(parse_keep(args, &e, &argv), PS_OK);
	assert_int_equal(v.batch, 3);
	assert_true(v.lr == 0.5);
	assert_int_equal(v.color, 0);
	assert_string_equal(v.out, "o");
	free_argv(argv);
}

static void test_cli_defaults_kept(void **state)
{
	(void)state;
	ps_err e = {0, ""};
	const char *none[] = {"prog", NULL};
	assert_int_equal(parse(none, &e), PS_OK);
	assert_int_equal(v.verbose, 0);
	assert_int_equal(v.batch, 64);
	assert_int_equal(v.offset, -3);
	assert_true(v.seed == 7);
	assert_true(v.limit == 100);
	assert_true(v.lr == 0.01);
	assert_true(v.scale == 1.5);
	assert_string_equal(v.out, "default.bin");
	assert_int_equal(v.color, 1);

	/* Setting one option leaves the others alone. */
	const char *one[] = {"prog", "--batch", "5", NULL};
	assert_int_equal(parse(one, &e), PS_OK);
	assert_int_equal(v.batch, 5);
	assert_true(v.lr == 0.01);
	assert_true(v.seed == 7);
	assert_string_equal(v.out, "default.bin");
	assert_int_equal(v.color, 1);
	assert_int_equal(v.verbose, 0);
}

static void test_cli_last_value_wins(void **state)
{
	(void)state;
	const char *args[] = {"prog", "--batch", "5", "--batch", "6", NULL};
	assert_int_equal(parse(args, NULL), PS_OK);
	assert_int_equal(v.batch, 6);
}

static void test_cli_range_is_inclusive(void **state)
{
	(void)state;
	const char *lo[] = {"prog", "--batch", "1", "--limit", "10",
			    "--lr", "1e-6", NULL};
	assert_int_equal(parse(lo, NULL), PS_OK);
	assert_int_equal(v.batch, 1);
	assert_true(v.limit == 10);
	assert_true(v.lr == 1e-6);
	const char *hi[] = {"prog", "--batch", "4096", "--limit", "1000",
			    "--lr", "10", NULL};
	assert_int_equal(parse(hi, NULL), PS_OK);
	assert_int_equal(v.batch, 4096);
	assert_true(v.limit == 1000);
	assert_true(v.lr == 10);
}

/* A u64 option takes every uint64_t value, not only those of a long long. */
static void test_cli_u64_full_range(void **state)
{
	(void)state;
	ps_err e = {0, ""};
	const char *max[] = {"prog", "--seed", "18446744073709551615", NULL};
	assert_int_equal(parse(max, &e), PS_OK);
	assert_true(v.seed == UINT64_MAX);
	const char *big[] = {"prog", "--seed", "9223372036854775808", NULL};
	assert_int_equal(parse(big, &e), PS_OK);
	assert_true(v.seed == 9223372036854775808ULL);
	const char *zero[] = {"prog", "--seed", "0", NULL};
	assert_int_equal(parse(zero, &e), PS_OK);
	assert_true(v.seed == 0);

	const char *over[] = {"prog", "--seed", "18446744073709551616", NULL};
	expect_einval(over, "--seed", "18446744073709551616");
	const char *neg[] = {"prog", "--seed", "-1", NULL};
	expect_einval(neg, "--seed", "-1");
	const char *neg_ranged[] = {"prog", "--limit", "-5", NULL};
	expect_einval(neg_ranged, "--limit", "-5");
	assert_true(v.seed == 0);
	assert_true(v.limit == 100);
}

/* An int option without a range still only takes values of an int. */
static void test_cli_int_beyond_int_range(void **state)
{
	(void)state;
	const char *big[] = {"prog", "--offset", "3000000000", NULL};
	expect_einval(big, "--offset", "3000000000");
	const char *small[] = {"prog", "--offset", "-2147483649", NULL};
	expect_einval(small, "--offset", "-2147483649");
	const char *huge[] = {"prog", "--offset", "99999999999999999999",
			      NULL};
	expect_einval(huge, "--offset", NULL);
	assert_int_equal(v.offset, -3);

	const char *max[] = {"prog", "--offset", "2147483647", NULL};
	assert_int_equal(parse(max, NULL), PS_OK);
	assert_int_equal(v.offset, 2147483647);
	const char *min[] = {"prog", "--offset", "-2147483648", NULL};
	assert_int_equal(parse(min, NULL), PS_OK);
	assert_int_equal(v.offset, -2147483647 - 1);
}

/* --- help ------------------------------------------------------------------ */

static void test_cli_help_returns_help(void **state)
{
	(void)state;
	char out[8192];
	ps_err e = {0, ""};
	const char *args[] = {"prog", "--batch", "9", "--help", NULL};
	int rc = parse_capturing_stdout(args, &e, out, sizeof out);
	assert_int_equal(rc, PS_CLI_HELP);
	assert_non_null(strstr(out, "Usage: prog"));
	assert_non_null(strstr(out, "A test program."));
	assert_non_null(strstr(out, "--batch B"));
	assert_non_null(strstr(out, "minibatch size"));
	assert_non_null(strstr(out, "--help"));
	/* Defaults are read from the targets: --batch 9 came first. */
	assert_non_null(strstr(out, "(default 9)"));

	const char *shorth[] = {"prog", "-h", NULL};
	rc = parse_capturing_stdout(shorth, &e, out, sizeof out);
	assert_int_equal(rc, PS_CLI_HELP);
	assert_non_null(strstr(out, "--lr RATE"));
}

static void test_cli_help_text(void **state)
{
	(void)state;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	assert_non_null(f);
	ps_cli_help(f, "prog", "Summary line.", opts);
	assert_int_equal(fclose(f), 0);

	assert_non_null(strstr(buf, "Usage: prog [OPTIONS]\nSummary line.\n"));
	assert_non_null(strstr(buf, "--verbose"));
	assert_null(strstr(buf, "--verbose VALUE"));
	assert_non_null(strstr(buf, "minibatch size (default 64)"));
	assert_non_null(strstr(buf, "an offset (default -3)"));
	assert_non_null(strstr(buf, "random seed (default 7)"));
	assert_non_null(strstr(buf, "learning rate (default 0.01)"));
	assert_non_null(strstr(buf, "output file (default default.bin)"));
	assert_non_null(strstr(buf, "a color (default green)"));
	assert_non_null(strstr(buf, "one of: red green blue"));
	assert_non_null(strstr(buf, "--help"));
	free(buf);
}

/* --- errors ---------------------------------------------------------------- */

static void test_cli_unknown_option(void **state)
{
	(void)state;
	const char *lng[] = {"prog", "--bogus", NULL};
	expect_einval(lng, "--bogus", "unknown option");
	const char *lngv[] = {"prog", "--bogus=3", "--batch", "2", NULL};
	expect_einval(lngv, "--bogus", "unknown option");
	const char *shrt[] = {"prog", "-x", NULL};
	expect_einval(shrt, "-x", "unknown option");
	/* A cluster names the bad letter, not whatever came before it. */
	const char *cluster[] = {"prog", "--batch", "2", "-qh", NULL};
	expect_einval(cluster, "'-q'", "unknown option");
	/* Ambiguous prefix of --limit and --lr. */
	const char *ambiguous[] = {"prog", "--l", "3", NULL};
	expect_einval(ambiguous, "--l", NULL);
	assert_true(v.limit == 100);
	assert_true(v.lr == 0.01);
}

static void test_cli_flag_with_value(void **state)
{
	(void)state;
	const char *args[] = {"prog", "--verbose=1", NULL};
	expect_einval(args, "--verbose", NULL);
	assert_int_equal(v.verbose, 0);
}

static void test_cli_missing_value(void **state)
{
	(void)state;
	const char *args[] = {"prog", "--batch", NULL};
	expect_einval(args, "--batch", "needs a value");
	const char *args2[] = {"prog", "--verbose", "--color", NULL};
	expect_einval(args2, "--color", "needs a value");
	assert_int_equal(v.batch, 64);
	assert_int_equal(v.color, 1);
}

static void test_cli_malformed_int(void **state)
{
	(void)state;
	const char *bad[] = {"1x", "", "x", "1e3", "0x10", "1.5", "--", "+",
			     " ", "12 "};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		const char *args[] = {"prog", "--batch", bad[i], NULL};
		char quoted[64];
		snprintf(quoted, sizeof quoted, "'%s'", bad[i]);
		expect_einval(args, "--batch", quoted);
		assert_int_equal(v.batch, 64);
	}
	const char *u[] = {"prog", "--seed", "7z", NULL};
	expect_einval(u, "--seed", "'7z'");
	const char *u2[] = {"prog", "--seed", "", NULL};
	expect_einval(u2, "--seed", "expected");
	assert_true(v.seed == 7);
}

static void test_cli_malformed_double(void **state)
{
	(void)state;
	const char *bad[] = {"1x",   "",	 "nan", "NaN",	"inf",
			     "-inf", "infinity", "1e999", "abc", "1.0.0",
			     "0.5 "};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		const char *args[] = {"prog", "--scale", bad[i], NULL};
		char quoted[64];
		snprintf(quoted, sizeof quoted, "'%s'", bad[i]);
		expect_einval(args, "--scale", quoted);
		const char *args2[] = {"prog", "--lr", bad[i], NULL};
		expect_einval(args2, "--lr", quoted);
	}
	assert_true(v.scale == 1.5);
	assert_true(v.lr == 0.01);
}

static void test_cli_out_of_range(void **state)
{
	(void)state;
	const char *i0[] = {"prog", "--batch", "0", NULL};
	expect_einval(i0, "--batch", "out of range");
	const char *i1[] = {"prog", "--batch", "4097", NULL};
	expect_einval(i1, "--batch", "4097");
	const char *i2[] = {"prog", "--batch", "-1", NULL};
	expect_einval(i2, "--batch", "out of range");
	const char *d0[] = {"prog", "--lr", "0", NULL};
	expect_einval(d0, "--lr", "out of range");
	const char *d1[] = {"prog", "--lr", "10.000001", NULL};
	expect_einval(d1, "--lr", "10.000001");
	const char *u0[] = {"prog", "--limit", "9", NULL};
	expect_einval(u0, "--limit", "out of range");
	const char *u1[] = {"prog", "--limit", "1001", NULL};
	expect_einval(u1, "--limit", "1001");
	assert_int_equal(v.batch, 64);
	assert_true(v.lr == 0.01);
	assert_true(v.limit == 100);
}

static void test_cli_bad_choice(void **state)
{
	(void)state;
	const char *args[] = {"prog", "--color", "purple", NULL};
	expect_einval(args, "--color", "'purple'");
	expect_einval(args, "red, green, blue", NULL);
	/* Choices match whole words only. */
	const char *prefix[] = {"prog", "--color", "re", NULL};
	expect_einval(prefix, "--color", "'re'");
	const char *upper[] = {"prog", "--color", "RED", NULL};
	expect_einval(upper, "--color", NULL);
	assert_int_equal(v.color, 1);
}

static void test_cli_empty_string(void **state)
{
	(void)state;
	const char *args[] = {"prog", "--out", "", NULL};
	expect_einval(args, "--out", "empty");
	assert_string_equal(v.out, "default.bin");
}

static void test_cli_positional_argument(void **state)
{
	(void)state;
	const char *first[] = {"prog", "extra", NULL};
	expect_einval(first, "'extra'", "unexpected argument");
	const char *middle[] = {"prog", "--batch", "3", "stray", "--lr",
				"0.5", NULL};
	expect_einval(middle, "'stray'", NULL);
	const char *after[] = {"prog", "--", "--batch", NULL};
	expect_einval(after, "'--batch'", "unexpected argument");
	const char *dash[] = {"prog", "-", NULL};
	expect_einval(dash, "'-'", NULL);
}

static void test_cli_null_err_accepted(void **state)
{
	(void)state;
	const char *args[] = {"prog", "--batch", "zz", NULL};
	assert_int_equal(parse(args, NULL), PS_EINVAL);
	const char *args2[] = {"prog", "--nope", NULL};
	assert_int_equal(parse(args2, NULL), PS_EINVAL);
}

static void test_cli_too_many_options(void **state)
{
	(void)state;
	enum { N = 200 };
	static ps_cli_opt many[N + 1];
	static char names[N][16];
	static int flags[N];
	ps_err e = {0, ""};
	char *argv[] = {(char *)"prog", NULL};
	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof names[i], "opt%d", i);
		many[i] = (ps_cli_opt){names[i], PS_CLI_FLAG, &flags[i], NULL,
				       "a flag", 0, 0, NULL};
	}
	many[N] = (ps_cli_opt){NULL, 0, NULL, NULL, NULL, 0, 0, NULL};
	assert_int_equal(ps_cli_parse("prog", "s", many, 1, argv, &e),
			 PS_EINVAL);
	assert_non_null(strstr(e.msg, "too many"));
}

/* getopt keeps state between calls; a parse that stopped inside an
 * option cluster ("-qh", "-hq") must not leak its leftover letters into
 * the next parse (glibc resets fully only when optind is 0). The first
 * argv is kept alive, so that the leftover is really there to be read. */
static void test_cli_repeated_parse_resets_state(void **state)
{
	(void)state;
	char out[4096];
	ps_err e = {0, ""};
	char **kept = NULL;

	const char *bad[] = {"prog", "-qh", NULL};
	assert_int_equal(parse_keep(bad, &e, &kept), PS_EINVAL);
	const char *good[] = {"prog", "--batch", "12", NULL};
	assert_int_equal(parse_capturing_stdout(good, &e, out, sizeof out),
			 PS_OK);
	assert_string_equal(out, "");
	assert_int_equal(v.batch, 12);
	free_argv(kept);

	const char *help[] = {"prog", "-hq", NULL};
	fflush(stdout);
	int saved = dup(STDOUT_FILENO), devnull = open("/dev/null", O_WRONLY);
	assert_true(saved >= 0 && devnull >= 0);
	dup2(devnull, STDOUT_FILENO);
	int rc = parse_keep(help, &e, &kept);
	fflush(stdout);
	dup2(saved, STDOUT_FILENO);
	close(saved);
	close(devnull);
	assert_int_equal(rc, PS_CLI_HELP);
	const char *good2[] = {"prog", "--batch", "13", NULL};
	e.msg[0] = '\0';
	rc = parse(good2, &e);
	if (rc != PS_OK)
		fail_msg("second parse: %s (%s)", ps_errname(rc), e.msg);
	assert_int_equal(v.batch, 13);
	free_argv(kept);

	/* A parse stopped by an error, then one with fewer arguments. */
	const char *stop[] = {"prog", "--batch", "0", "--lr", "1", "--out",
			      "x", NULL};
	expect_einval(stop, "--batch", NULL);
	const char *none[] = {"prog", NULL};
	assert_int_equal(parse(none, &e), PS_OK);
	assert_int_equal(v.batch, 13);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup(f, reset_defaults)
	const struct CMUnitTest tests[] = {
		T(test_cli_parses_each_type),
		T(test_cli_parses_equals_form),
		T(test_cli_defaults_kept),
		T(test_cli_last_value_wins),
		T(test_cli_range_is_inclusive),
		T(test_cli_u64_full_range),
		T(test_cli_int_beyond_int_range),
		T(test_cli_help_returns_help),
		T(test_cli_help_text),
		T(test_cli_unknown_option),
		T(test_cli_flag_with_value),
		T(test_cli_missing_value),
		T(test_cli_malformed_int),
		T(test_cli_malformed_double),
		T(test_cli_out_of_range),
		T(test_cli_bad_choice),
		T(test_cli_empty_string),
		T(test_cli_positional_argument),
		T(test_cli_null_err_accepted),
		T(test_cli_too_many_options),
		T(test_cli_repeated_parse_resets_state),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}
