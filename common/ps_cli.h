/*
 * ps_cli: declarative command-line options shared by the binaries. A table
 * of ps_cli_opt names each --long option, its type, range and help; parsing
 * checks every value completely and --help is generated from the table.
 */
#ifndef PS_CLI_H
#define PS_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "ps_error.h"

enum ps_cli_type {
	PS_CLI_FLAG,   /* int*: set to 1 when present */
	PS_CLI_INT,    /* int*, within [min, max] */
	PS_CLI_U64,    /* uint64_t*, within [min, max] */
	PS_CLI_DOUBLE, /* double*, finite, within [min, max] */
	PS_CLI_STRING, /* const char **: points into argv */
	PS_CLI_CHOICE, /* int*: index into choices */
};

/* One option. The table ends with an entry whose name is NULL. */
typedef struct ps_cli_opt {
	const char *name;    /* without the leading "--" */
	enum ps_cli_type type;
	void *target;
	const char *metavar; /* shown in --help, e.g. "N" */
	const char *help;    /* one line; the default is appended */
	double min, max;     /* numeric range (inclusive) */
	const char *const *choices; /* NULL-terminated, PS_CLI_CHOICE only */
} ps_cli_opt;

/* ps_cli_parse() returns this (positive) when --help was given and printed:
 * the caller exits 0. */
#define PS_CLI_HELP 1

/* Parse argv against opts, writing values into their targets (which hold
 * the defaults beforehand). Errors: PS_EINVAL for an unknown option, a
 * missing or malformed value, a value out of range, or a positional
 * argument; e->msg is the one line to print ("--lr: expected a number in
 * [0, 100], got 'x'"). Returns PS_CLI_HELP after printing help to stdout. */
int ps_cli_parse(const char *prog, const char *summary,
		 const ps_cli_opt *opts, int argc, char **argv, ps_err *e);

/* Print the generated help (defaults read from the targets) to f. */
void ps_cli_help(FILE *f, const char *prog, const char *summary,
		 const ps_cli_opt *opts);

#endif
