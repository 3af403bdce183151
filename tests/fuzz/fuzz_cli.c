/*
 * fuzz_cli: libFuzzer harness for option parsing (common/ps_cli.c
 * ps_cli_parse) with a table of every option type, shaped like ps-server's,
 * and the server's consistency-mode parser on what --consistency gets.
 * The input is split into argv words at its NUL bytes; argv[0] is the
 * program's name. --help output goes to /dev/null.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ps_cli.h"
#include "ps_server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (!freopen("/dev/null", "w", stdout))
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const kinds[] = {"sgd", "momentum", "adam", NULL};
	static const char *const levels[] = {"error", "warn", "info", "debug",
					     NULL};
	const char *listen = NULL, *model_out = NULL, *consistency = "async";
	int workers = 0, kind = 0, level = 2, check = 0, staleness_lr = 0;
	int evaluators = 0;
	double lr = 0.1, gamma = 0.5, idle = 120, momentum = 0.9;
	uint64_t seed = 1, steps = 0;
	const ps_cli_opt opts[] = {
		{"listen", PS_CLI_STRING, &listen, "ENDPOINT", "where", 0, -1,
		 NULL},
		{"workers", PS_CLI_INT, &workers, "N", "workers", 0, 65535,
		 NULL},
		{"evaluators", PS_CLI_INT, &evaluators, "N", "evaluators", 0,
		 16, NULL},
		{"optimizer", PS_CLI_CHOICE, &kind, "NAME", "optimizer", 0, -1,
		 kinds},
		{"lr", PS_CLI_DOUBLE, &lr, "RATE", "rate", 1e-12, 1e6, NULL},
		{"lr-gamma", PS_CLI_DOUBLE, &gamma, "G", "decay", 1e-12, 1,
		 NULL},
		{"momentum", PS_CLI_DOUBLE, &momentum, "MU", "momentum", 0, 1,
		 NULL},
		{"idle-timeout", PS_CLI_DOUBLE, &idle, "SECONDS", "idle", 0,
		 1e9, NULL},
		/* max < min: no range check, every value of the type. */
		{"seed", PS_CLI_U64, &seed, "S", "seed", 0, -1, NULL},
		{"steps", PS_CLI_U64, &steps, "N", "steps", 1, 1e6, NULL},
		{"model-out", PS_CLI_STRING, &model_out, "PATH", "model", 0, -1,
		 NULL},
		{"consistency", PS_CLI_STRING, &consistency, "MODE", "mode", 0,
		 -1, NULL},
		{"staleness-lr", PS_CLI_FLAG, &staleness_lr, NULL, "flag", 0,
		 -1, NULL},
		{"check", PS_CLI_FLAG, &check, NULL, "check", 0, -1, NULL},
		{"log-level", PS_CLI_CHOICE, &level, "LEVEL", "log", 0, -1,
		 levels},
		{NULL, 0, NULL, NULL, NULL, 0, 0, NULL},
	};
	char *copy = NULL, **argv = NULL;
	int argc = 1, rc;
	ps_err e = {0};

	/* One word per NUL-terminated run; the last one ends at the end. */
	copy = malloc(size + 1);
	argv = malloc((size + 3) * sizeof *argv);
	if (!copy || !argv)
		abort();
	memcpy(copy, data, size);
	copy[size] = '\0';
	argv[0] = "ps-server";
	for (size_t i = 0; i < size;) {
		argv[argc++] = copy + i;
		i += strlen(copy + i) + 1;
	}
	argv[argc] = NULL;

	rc = ps_cli_parse("ps-server", "fuzz", opts, argc, argv, &e);
	if (rc == PS_OK) {
		enum ps_consistency mode;
		uint32_t bound;
		/* Every value is checked: what parsed is in range. */
		if (workers < 0 || workers > 65535 || kind < 0 || kind > 2 ||
		    level < 0 || level > 3 || !(lr >= 1e-12 && lr <= 1e6) ||
		    (steps != 0 && (steps < 1 || steps > 1000000)))
			abort();
		if (ps_consistency_parse(consistency, &mode, &bound, &e) ==
			    PS_OK &&
		    mode == PS_CONSISTENCY_SSP && bound == 0)
			abort();
	} else if (rc != PS_CLI_HELP && (rc != PS_EINVAL || !e.msg[0])) {
		abort();
	}
	free(argv);
	free(copy);
	return 0;
}
