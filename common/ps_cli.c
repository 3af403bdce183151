/*
 * ps_cli: getopt_long driven by a ps_cli_opt table. Values are converted
 * with strtol/strtod and checked for trailing garbage, range and
 * finiteness, so that a typo never becomes a silent zero.
 */
#include "ps_cli.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PS_CLI_MAX_OPTS 128

static int parse_number(const ps_cli_opt *o, const char *arg, ps_err *e)
{
	char *end = NULL;
	const char *p = arg;
	long long ll = 0;
	unsigned long long ull = 0;
	double v;

	errno = 0;
	switch (o->type) {
	case PS_CLI_DOUBLE:
		v = strtod(arg, &end);
		break;
	case PS_CLI_U64:
		/* strtoull would take "-1" as ULLONG_MAX: refuse any sign. */
		while (isspace((unsigned char)*p))
			p++;
		if (*p == '-')
			return ps_err_set(e, PS_EINVAL,
					  "--%s: expected a non-negative integer, got '%s'",
					  o->name, arg);
		/* strtoull, not strtoll: every uint64_t value is valid. */
		ull = strtoull(arg, &end, 10);
		v = (double)ull;
		break;
	default:
		/* strtoll accepts "1e3" as 1 with garbage; that is rejected. */
		ll = strtoll(arg, &end, 10);
		v = (double)ll;
		break;
	}
	if (end == arg || *end != '\0' || errno == ERANGE || !isfinite(v))
		return ps_err_set(e, PS_EINVAL, "--%s: expected %s, got '%s'",
				  o->name,
				  o->type == PS_CLI_DOUBLE ? "a number"
							   : "an integer",
				  arg);
	/* Converting a long long outside int's range to int is not
	 * portable: an int option is bounded by int whatever its table
	 * range says. */
	if (o->type == PS_CLI_INT && (ll < INT_MIN || ll > INT_MAX))
		return ps_err_set(e, PS_EINVAL,
				  "--%s: %s is out of range [%d, %d]", o->name,
				  arg, INT_MIN, INT_MAX);
	if (o->min <= o->max && (v < o->min || v > o->max))
		return ps_err_set(e, PS_EINVAL,
				  "--%s: %s is out of range [%g, %g]", o->name,
				  arg, o->min, o->max);
	switch (o->type) {
	case PS_CLI_INT:
		*(int *)o->target = (int)ll;
		break;
	case PS_CLI_U64:
		*(uint64_t *)o->target = (uint64_t)ull;
		break;
	default:
		*(double *)o->target = v;
		break;
	}
	return PS_OK;
}

static int parse_choice(const ps_cli_opt *o, const char *arg, ps_err *e)
{
	char list[256] = "";
	for (int i = 0; o->choices[i]; i++) {
		if (strcmp(arg, o->choices[i]) == 0) {
			*(int *)o->target = i;
			return PS_OK;
		}
		snprintf(list + strlen(list), sizeof list - strlen(list),
			 "%s%s", i ? ", " : "", o->choices[i]);
	}
	return ps_err_set(e, PS_EINVAL, "--%s: unknown value '%s' (one of: %s)",
			  o->name, arg, list);
}

static void format_default(const ps_cli_opt *o, char *buf, size_t len)
{
	buf[0] = '\0';
	switch (o->type) {
	case PS_CLI_INT:
		snprintf(buf, len, " (default %d)", *(int *)o->target);
		break;
	case PS_CLI_U64:
		snprintf(buf, len, " (default %" PRIu64 ")",
			 *(uint64_t *)o->target);
		break;
	case PS_CLI_DOUBLE:
		snprintf(buf, len, " (default %g)", *(double *)o->target);
		break;
	case PS_CLI_STRING:
		if (*(const char **)o->target)
			snprintf(buf, len, " (default %s)",
				 *(const char **)o->target);
		break;
	case PS_CLI_CHOICE:
		snprintf(buf, len, " (default %s)",
			 o->choices[*(int *)o->target]);
		break;
	case PS_CLI_FLAG:
		break;
	}
}

void ps_cli_help(FILE *f, const char *prog, const char *summary,
		 const ps_cli_opt *opts)
{
	fprintf(f, "Usage: %s [OPTIONS]\n%s\n\nOptions:\n", prog, summary);
	for (const ps_cli_opt *o = opts; o->name; o++) {
		char left[64], def[128];
		if (o->type == PS_CLI_FLAG)
			snprintf(left, sizeof left, "--%s", o->name);
		else
			snprintf(left, sizeof left, "--%s %s", o->name,
				 o->metavar ? o->metavar : "VALUE");
		format_default(o, def, sizeof def);
		fprintf(f, "  %-26s %s%s\n", left, o->help, def);
		if (o->type == PS_CLI_CHOICE) {
			fprintf(f, "  %-26s one of:", "");
			for (int i = 0; o->choices[i]; i++)
				fprintf(f, " %s", o->choices[i]);
			fputc('\n', f);
		}
	}
	fprintf(f, "  %-26s %s\n", "--help", "show this help and exit");
}

int ps_cli_parse(const char *prog, const char *summary,
		 const ps_cli_opt *opts, int argc, char **argv, ps_err *e)
{
	struct option lo[PS_CLI_MAX_OPTS + 2];
	int n = 0, rc = PS_OK, c;

	for (const ps_cli_opt *o = opts; o->name; o++, n++) {
		if (n >= PS_CLI_MAX_OPTS)
			return ps_err_set(e, PS_EINVAL, "too many options");
		lo[n].name = o->name;
		lo[n].has_arg =
			o->type == PS_CLI_FLAG ? no_argument : required_argument;
		lo[n].flag = NULL;
		lo[n].val = 256 + n;
	}
	lo[n] = (struct option){"help", no_argument, NULL, 'h'};
	lo[n + 1] = (struct option){NULL, 0, NULL, 0};

	/* glibc resets getopt's hidden state (the position inside an
	 * option cluster, a pointer into the previous argv) only when optind
	 * is 0; with 1 a second parse would read the first one's argv. */
	optind = 0;
	opterr = 0;
	while (rc == PS_OK &&
	       (c = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
		if (c == 'h') {
			ps_cli_help(stdout, prog, summary, opts);
			return PS_CLI_HELP;
		}
		if (c == '?') {
			/* optopt: a known long option given a value it does
			 * not take (its val), an unknown letter of a "-xy"
			 * cluster (optind may still be on that word), or 0
			 * for an unknown long option (optind is past it). */
			if (optopt >= 256 && optopt < 256 + n)
				return ps_err_set(e, PS_EINVAL,
						  "--%s takes no value",
						  opts[optopt - 256].name);
			if (optopt > 0 && optopt < 256)
				return ps_err_set(e, PS_EINVAL,
						  "unknown option '-%c' (try --help)",
						  optopt);
			const char *bad = argv[optind - 1];
			return ps_err_set(e, PS_EINVAL,
					  "unknown option '%s' (try --help)",
					  bad ? bad : "?");
		}
		if (c == ':')
			return ps_err_set(e, PS_EINVAL,
					  "option '%s' needs a value",
					  argv[optind - 1]);
		const ps_cli_opt *o = &opts[c - 256];
		switch (o->type) {
		case PS_CLI_FLAG:
			*(int *)o->target = 1;
			break;
		case PS_CLI_STRING:
			if (optarg[0] == '\0')
				rc = ps_err_set(e, PS_EINVAL,
						"--%s: empty value", o->name);
			else
				*(const char **)o->target = optarg;
			break;
		case PS_CLI_CHOICE:
			rc = parse_choice(o, optarg, e);
			break;
		default:
			rc = parse_number(o, optarg, e);
			break;
		}
	}
	if (rc == PS_OK && optind < argc)
		rc = ps_err_set(e, PS_EINVAL,
				"unexpected argument '%s' (try --help)",
				argv[optind]);
	return rc;
}
