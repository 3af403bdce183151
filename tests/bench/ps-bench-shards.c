/*
 * ps-bench-shards: how many updates per second S server shards apply to a
 * large model. Starts S ps-server processes (a linear model of --params
 * weights, SGD, one shard each), connects one client to all of them and
 * pushes whole-model gradients for --seconds with --inflight pushes
 * outstanding, then reads each shard's stats: updates applied and time
 * spent applying. Prints one line per S and a CSV under --out.
 *
 *   ps-bench-shards [--params N] [--shards LIST] [--seconds T]
 *                   [--inflight K] [--reps R] [--server PATH] [--out DIR]
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ps_cli.h"
#include "ps_client.h"
#include "ps_log.h"
#include "ps_transport.h"

extern char **environ;

#define MAX_SHARDS 8

typedef struct result {
	double pushes_per_s;
	double apply_ms[MAX_SHARDS]; /* per update, each shard */
	uint64_t updates[MAX_SHARDS];
} result;

/* A number after "key": in a small JSON file, or -1. */
static double json_field(const char *path, const char *key)
{
	char buf[65536], pat[64];
	FILE *f = fopen(path, "r");
	size_t n;
	const char *p;

	if (!f)
		return -1;
	n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	snprintf(pat, sizeof pat, "\"%s\": ", key);
	p = strstr(buf, pat);
	return p ? strtod(p + strlen(pat), NULL) : -1;
}

static int read_line(const char *path, char *out, size_t len)
{
	FILE *f = fopen(path, "r");
	int ok;
	if (!f)
		return 0;
	ok = fgets(out, (int)len, f) != NULL;
	fclose(f);
	out[strcspn(out, "\n")] = '\0';
	return ok && out[0];
}

static int run_once(const char *server, const char *dir, uint64_t params,
		    int shards, double seconds, int inflight, result *res)
{
	pid_t pids[MAX_SHARDS] = {0};
	char eps[MAX_SHARDS * 64] = "", ep_file[MAX_SHARDS][512],
	     stats[MAX_SHARDS][512];
	ps_client *c = NULL;
	ps_msg_welcome w;
	ps_model_spec spec;
	float *g = NULL;
	ps_err e = {0};
	int rc = 1;
	uint64_t pushes = 0;
	double t0, t;

	memset(res, 0, sizeof *res);
	for (int k = 0; k < shards; k++) {
		char sk[16], ss[16], workers[] = "1";
		snprintf(ep_file[k], sizeof ep_file[k], "%s/endpoint-%d", dir, k);
		snprintf(stats[k], sizeof stats[k], "%s/server-%d.json", dir, k);
		unlink(ep_file[k]);
		snprintf(sk, sizeof sk, "%d", k);
		snprintf(ss, sizeof ss, "%d", shards);
		char *argv[] = {(char *)server, "--listen", "tcp://127.0.0.1:*",
				"--endpoint-file", ep_file[k], "--stats-out",
				stats[k], "--shard", sk, "--shards", ss,
				"--workers", workers, "--lr", "0.000001",
				"--log-level", "warn", NULL};
		if (posix_spawn(&pids[k], server, NULL, NULL, argv, environ) != 0) {
			fprintf(stderr, "ps-bench-shards: cannot start %s\n", server);
			goto out;
		}
	}
	for (int k = 0; k < shards; k++) {
		char line[256];
		double until = ps_now() + 20;
		while (!read_line(ep_file[k], line, sizeof line)) {
			if (ps_now() > until) {
				fprintf(stderr, "ps-bench-shards: shard %d did not start\n", k);
				goto out;
			}
			usleep(10000);
		}
		snprintf(eps + strlen(eps), sizeof eps - strlen(eps), "%s%s",
			 k ? "," : "", line);
	}
	memset(&spec, 0, sizeof spec);
	strcpy(spec.name, "linear");
	spec.input_dim = (uint32_t)(params - 1);
	spec.output_dim = 1;
	spec.init_seed = 1;
	g = malloc(params * sizeof *g);
	if (!g)
		goto out;
	for (uint64_t i = 0; i < params; i++)
		g[i] = (float)((i % 17) - 8) * 1e-3f;
	if (ps_client_new(&c, eps, 60, inflight, &e) != PS_OK ||
	    ps_client_hello(c, PS_ROLE_WORKER, 0, &spec, &w, &e) != PS_OK) {
		fprintf(stderr, "ps-bench-shards: %s\n", e.msg);
		goto out;
	}
	t0 = ps_now();
	do {
		if (ps_client_push(c, g, 0, params, 0, 1, 0.0f, pushes, &e) !=
		    PS_OK) {
			fprintf(stderr, "ps-bench-shards: %s\n", e.msg);
			goto out;
		}
		pushes++;
		t = ps_now();
	} while (t - t0 < seconds);
	if (ps_client_bye(c, pushes, pushes, &e) != PS_OK) {
		fprintf(stderr, "ps-bench-shards: %s\n", e.msg);
		goto out;
	}
	t = ps_now();
	res->pushes_per_s = (double)pushes / (t - t0);
	ps_client_destroy(&c);
	for (int k = 0; k < shards; k++) {
		int st;
		waitpid(pids[k], &st, 0);
		pids[k] = 0;
		res->updates[k] = (uint64_t)json_field(stats[k], "updates");
		res->apply_ms[k] = res->updates[k]
					   ? 1e3 * json_field(stats[k], "apply_seconds") /
						     (double)res->updates[k]
					   : 0;
	}
	rc = 0;
out:
	ps_client_destroy(&c);
	free(g);
	for (int k = 0; k < shards; k++)
		if (pids[k] > 0) {
			int st;
			kill(pids[k], SIGTERM);
			waitpid(pids[k], &st, 0);
		}
	return rc;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	uint64_t params = 10000000;
	const char *shard_list = "1,2", *server = "build/bin/ps-server",
		   *out = ".";
	double seconds = 3;
	int inflight = 4, reps = 3;
	const ps_cli_opt opts[] = {
		{"params", PS_CLI_U64, &params, "N", "weights of the model", 2,
		 1LL << 31, NULL},
		{"shards", PS_CLI_STRING, &shard_list, "LIST",
		 "shard counts to measure, e.g. 1,2", 0, -1, NULL},
		{"seconds", PS_CLI_DOUBLE, &seconds, "T", "pushing time per run",
		 0.01, 3600, NULL},
		{"inflight", PS_CLI_INT, &inflight, "K",
		 "pushes outstanding", 1, 64, NULL},
		{"reps", PS_CLI_INT, &reps, "R", "runs per shard count (median)", 1,
		 99, NULL},
		{"server", PS_CLI_STRING, &server, "PATH", "the ps-server binary",
		 0, -1, NULL},
		{"out", PS_CLI_STRING, &out, "DIR", "where shards.csv goes", 0, -1,
		 NULL},
		{NULL, 0, NULL, NULL, NULL, 0, 0, NULL},
	};
	ps_err e = {0};
	char csv_path[4096];
	FILE *csv;
	const char *p;
	int rc = ps_cli_parse("ps-bench-shards",
			      "Updates per second that S server shards apply to a "
			      "large model, pushed\nby one client, and each "
			      "shard's apply time per update.",
			      opts, argc, argv, &e);

	if (rc == PS_CLI_HELP)
		return 0;
	if (rc != PS_OK) {
		fprintf(stderr, "ps-bench-shards: %s\n", e.msg);
		return 2;
	}
	ps_log_setup("bench", PS_LOG_WARN);
	/* As ps-worker does: large messages reuse heap buffers. */
	ps_transport_setup_process();
	signal(SIGPIPE, SIG_IGN);
	snprintf(csv_path, sizeof csv_path, "%s/shards.csv", out);
	csv = fopen(csv_path, "w");
	if (!csv) {
		fprintf(stderr, "ps-bench-shards: cannot write %s\n", csv_path);
		return 1;
	}
	fprintf(csv, "shards,params,updates_per_second,apply_ms_per_update_max\n");
	printf("%-7s %12s %16s %s\n", "shards", "params", "updates/s", "apply ms/update per shard");
	for (p = shard_list; *p;) {
		int s = (int)strtol(p, (char **)&p, 10);
		double ups[99], apply[MAX_SHARDS][99];
		result r;
		if (s < 1 || s > MAX_SHARDS) {
			fprintf(stderr, "ps-bench-shards: shard count %d outside [1, %d]\n",
				s, MAX_SHARDS);
			return 2;
		}
		for (int i = 0; i < reps; i++) {
			if (run_once(server, out, (uint64_t)params, s, seconds,
				     inflight, &r) != 0)
				return 1;
			ups[i] = r.pushes_per_s;
			for (int k = 0; k < s; k++)
				apply[k][i] = r.apply_ms[k];
		}
		qsort(ups, (size_t)reps, sizeof *ups, cmp_double);
		printf("%-7d %12" PRIu64 " %16.1f ", s, params, ups[reps / 2]);
		{
			double worst = 0;
			for (int k = 0; k < s; k++) {
				qsort(apply[k], (size_t)reps, sizeof(double), cmp_double);
				printf(" %.3f", apply[k][reps / 2]);
				if (apply[k][reps / 2] > worst)
					worst = apply[k][reps / 2];
			}
			printf("\n");
			fprintf(csv, "%d,%" PRIu64 ",%.1f,%.4f\n", s, params,
				ups[reps / 2], worst);
		}
		fflush(stdout);
		if (*p == ',')
			p++;
	}
	fclose(csv);
	return 0;
}
