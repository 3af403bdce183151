/*
 * ps-bench-transport: push and pull round trips through pserver's own
 * stack (ps_client -> ps_wire -> ps_transport -> a real ps_server, which
 * validates, applies and replies, and back) over ZeroMQ tcp, ZeroMQ ipc
 * and MPI, beside raw ZeroMQ and raw MPI ping-pongs of the same shapes in
 * the same run. Two ranks under mpirun: rank 0 serves, rank 1 measures
 * and reports (`make bench-transport`; docs/EXPERIMENTS.md).
 *
 * A benchmark, not product code: the raw baselines call zmq.h and mpi.h
 * directly, which STYLE.md confines to the two transport backends for
 * everything else. MPI also carries the benchmark's own coordination
 * (barriers, each case's endpoint).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mpi.h>
#include <zmq.h>

#include "ps_cli.h"
#include "ps_client.h"
#include "ps_log.h"
#include "ps_optim.h"
#include "ps_server.h"
#include "ps_transport.h"
#include "ps_wire.h"

#define RAW_TAG	 99
#define SMALL	 16 /* the raw request of a pull and the raw reply of a push */
#define MAX_REPS 64
#define EP_LEN	 256

enum op { OP_PUSH = 0, OP_PULL = 1 };
static const char *const op_names[] = {"push", "pull"};

/* Tensor sizes in floats: 4 B, 40 KB, 4 MB. */
static const size_t sizes[] = {1, 10000, 1000000};
#define NSIZES	   (sizeof sizes / sizeof sizes[0])
#define MAX_FLOATS 1000000

enum { T_TCP, T_IPC, T_MPI, T_CURVE, NTRANSPORTS };
static const char *const transport_names[] = {"zmq-tcp", "zmq-ipc", "mpi",
					      "zmq-curve"};
static const char *const only_names[] = {"all", "zmq-tcp", "zmq-ipc", "mpi",
					 "zmq-curve", NULL};

/* Round trips per second of each repetition, and their median. */
typedef struct result {
	double rate[MAX_REPS];
	double rt_per_s;
	double us; /* 1e6 / rt_per_s */
} result;

typedef struct bench {
	int reps;
	double min_time; /* seconds per repetition, at least */
	const char *out_dir;
	int only; /* index into only_names: 0 all, else transport + 1 */
	int rank;
	int round; /* the repetition being measured */
	result ours[NTRANSPORTS][2][NSIZES];
	result raw[NTRANSPORTS][2][NSIZES];
	/* What a server does to a push besides messaging: the NaN/Inf check
	 * and an SGD step, in microseconds (median), by size. */
	double apply_us[NSIZES];
} bench;

/* One round trip of op carrying a tensor of `bytes`; 0 on success. */
typedef int (*rt_fn)(void *ctx, enum op op, size_t bytes);

static double now(void)
{
	return ps_now();
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Time repetition number b->round: k round trips, k chosen so that it
 * lasts at least min_time. */
static int measure(const bench *b, rt_fn fn, void *ctx, enum op op,
		   size_t bytes, result *out)
{
	double t0, one;
	long k;

	for (int i = 0; i < 3; i++) /* warm up: connections, buffers */
		if (fn(ctx, op, bytes) != 0)
			return -1;
	t0 = now();
	for (int i = 0; i < 3; i++)
		if (fn(ctx, op, bytes) != 0)
			return -1;
	one = (now() - t0) / 3;
	k = (long)ceil(b->min_time / (one > 1e-7 ? one : 1e-7));
	if (k < 3)
		k = 3;
	if (k > 200000)
		k = 200000;
	t0 = now();
	for (long i = 0; i < k; i++)
		if (fn(ctx, op, bytes) != 0)
			return -1;
	out->rate[b->round] = (double)k / (now() - t0);
	return 0;
}

static void take_median(result *r, int reps)
{
	double sorted[MAX_REPS];
	memcpy(sorted, r->rate, sizeof sorted);
	qsort(sorted, (size_t)reps, sizeof sorted[0], cmp_double);
	r->rt_per_s = reps % 2 ? sorted[reps / 2]
			       : (sorted[reps / 2 - 1] + sorted[reps / 2]) / 2;
	r->us = 1e6 / r->rt_per_s;
}

/* Every (op, size) of one case, on the measuring rank. */
static int measure_all(const bench *b, rt_fn fn, void *ctx,
		       result res[2][NSIZES])
{
	for (int op = 0; op < 2; op++)
		for (size_t i = 0; i < NSIZES; i++)
			if (measure(b, fn, ctx, (enum op)op,
				    sizes[i] * sizeof(float), &res[op][i]) != 0)
				return -1;
	return 0;
}

static void share_endpoint(char ep[EP_LEN])
{
	MPI_Bcast(ep, EP_LEN, MPI_CHAR, 0, MPI_COMM_WORLD);
}

/* zmq-curve: the server's and the client's key pairs, made on rank 0
 * and sent to rank 1 (a benchmark's shortcut: keys travel in files
 * otherwise). [0] server public, [1] server secret, [2] client public,
 * [3] client secret. */
static uint8_t curve_keys[4][PS_CURVE_KEY_LEN];

static int share_curve_keys(const bench *b)
{
	ps_err e = {0, ""};
	int ok = 1;
	if (b->rank == 0 &&
	    (ps_transport_curve_keypair(curve_keys[0], curve_keys[1], &e) !=
		     PS_OK ||
	     ps_transport_curve_keypair(curve_keys[2], curve_keys[3], &e) !=
		     PS_OK)) {
		fprintf(stderr, "ps-bench-transport: %s\n", e.msg);
		ok = 0;
	}
	MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
	MPI_Bcast(curve_keys, sizeof curve_keys, MPI_BYTE, 0, MPI_COMM_WORLD);
	return ok ? 0 : -1;
}

/* Raw ZeroMQ with CURVE, as libzmq does it without a ZAP handler. */
static void raw_zmq_curve(void *sock, int server)
{
	int one = 1;
	if (server) {
		zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one);
		zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, curve_keys[1],
			       PS_CURVE_KEY_LEN);
	} else {
		zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, curve_keys[0],
			       PS_CURVE_KEY_LEN);
		zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, curve_keys[2],
			       PS_CURVE_KEY_LEN);
		zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, curve_keys[3],
			       PS_CURVE_KEY_LEN);
	}
}

static void ipc_endpoint(char ep[EP_LEN], const char *what)
{
	snprintf(ep, EP_LEN, "ipc:///tmp/ps-bench-%s-%ld.sock", what,
		 (long)getpid());
}

/* --- raw ZeroMQ: DEALER -> ROUTER, as pserver's transport uses --- */

typedef struct raw_zmq {
	void *sock;
	unsigned char *buf; /* MAX_FLOATS * 4 bytes */
} raw_zmq;

/* A request names the size of its reply in its first 4 bytes. */
static int raw_zmq_rt(void *ctx, enum op op, size_t bytes)
{
	raw_zmq *z = ctx;
	uint32_t want = op == OP_PUSH ? SMALL : (uint32_t)bytes;
	size_t len = op == OP_PUSH ? bytes : SMALL;
	zmq_msg_t m;
	int rc;

	memcpy(z->buf, &want, 4);
	if (zmq_send(z->sock, z->buf, len, 0) < 0)
		return -1;
	zmq_msg_init(&m);
	rc = zmq_msg_recv(&m, z->sock, 0);
	zmq_msg_close(&m);
	return rc == (int)want ? 0 : -1;
}

static int raw_zmq_case(bench *b, int t)
{
	void *ctx = zmq_ctx_new();
	raw_zmq z = {NULL, malloc(MAX_FLOATS * sizeof(float))};
	char ep[EP_LEN] = "";
	size_t len = sizeof ep;
	int linger = 0, rc = -1;

	if (t == T_CURVE && share_curve_keys(b) != 0)
		goto out;
	if (!ctx || !z.buf)
		goto out;
	memset(z.buf, 0, MAX_FLOATS * sizeof(float));
	z.sock = zmq_socket(ctx, b->rank == 0 ? ZMQ_ROUTER : ZMQ_DEALER);
	if (!z.sock)
		goto out;
	zmq_setsockopt(z.sock, ZMQ_LINGER, &linger, sizeof linger);
	if (t == T_CURVE)
		raw_zmq_curve(z.sock, b->rank == 0);
	if (b->rank == 0) {
		if (t == T_IPC)
			ipc_endpoint(ep, "raw");
		else
			snprintf(ep, sizeof ep, "tcp://127.0.0.1:*");
		if (zmq_bind(z.sock, ep) != 0 ||
		    zmq_getsockopt(z.sock, ZMQ_LAST_ENDPOINT, ep, &len) != 0)
			ep[0] = '\0';
	}
	share_endpoint(ep);
	if (ep[0] == '\0') {
		fprintf(stderr, "ps-bench-transport: raw %s: bind failed\n",
			transport_names[t]);
		goto out;
	}
	if (b->rank == 0) {
		/* Echo until an empty request: reply with the size asked. */
		for (;;) {
			zmq_msg_t id, req;
			uint32_t want = 0;
			zmq_msg_init(&id);
			zmq_msg_init(&req);
			if (zmq_msg_recv(&id, z.sock, 0) < 0 ||
			    zmq_msg_recv(&req, z.sock, 0) < 0)
				break;
			if (zmq_msg_size(&req) >= 4)
				memcpy(&want, zmq_msg_data(&req), 4);
			zmq_msg_close(&req);
			if (want == 0) {
				zmq_msg_close(&id);
				rc = 0;
				break;
			}
			zmq_send(z.sock, zmq_msg_data(&id), zmq_msg_size(&id),
				 ZMQ_SNDMORE);
			zmq_msg_close(&id);
			zmq_send(z.sock, z.buf, want, 0);
		}
	} else {
		if (zmq_connect(z.sock, ep) == 0)
			rc = measure_all(b, raw_zmq_rt, &z, b->raw[t]);
		memset(z.buf, 0, 4); /* stop */
		zmq_send(z.sock, z.buf, 4, 0);
	}
out:
	if (z.sock)
		zmq_close(z.sock);
	if (ctx)
		zmq_ctx_term(ctx);
	if (b->rank == 0 && t == T_IPC && ep[0])
		unlink(ep + 6);
	free(z.buf);
	return rc;
}

/* --- raw MPI: MPI_Send / MPI_Recv --- */

typedef struct raw_mpi {
	unsigned char *buf, *rbuf;
} raw_mpi;

static int raw_mpi_rt(void *ctx, enum op op, size_t bytes)
{
	raw_mpi *m = ctx;
	uint32_t want = op == OP_PUSH ? SMALL : (uint32_t)bytes;
	int len = (int)(op == OP_PUSH ? bytes : SMALL), count = 0;
	MPI_Status st;

	memcpy(m->buf, &want, 4);
	if (MPI_Send(m->buf, len, MPI_BYTE, 0, RAW_TAG, MPI_COMM_WORLD) !=
	    MPI_SUCCESS)
		return -1;
	if (MPI_Recv(m->rbuf, MAX_FLOATS * 4, MPI_BYTE, 0, RAW_TAG,
		     MPI_COMM_WORLD, &st) != MPI_SUCCESS)
		return -1;
	MPI_Get_count(&st, MPI_BYTE, &count);
	return count == (int)want ? 0 : -1;
}

static int raw_mpi_case(bench *b)
{
	raw_mpi m = {malloc(MAX_FLOATS * 4), malloc(MAX_FLOATS * 4)};
	int ok = m.buf && m.rbuf, all_ok = 0, rc = -1;

	/* Both ranks must know before either waits on the other. */
	MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
	if (!all_ok)
		goto out;
	memset(m.buf, 0, MAX_FLOATS * 4);
	if (b->rank == 0) {
		for (;;) {
			MPI_Status st;
			uint32_t want = 0;
			int count = 0;
			MPI_Recv(m.rbuf, MAX_FLOATS * 4, MPI_BYTE, 1, RAW_TAG,
				 MPI_COMM_WORLD, &st);
			MPI_Get_count(&st, MPI_BYTE, &count);
			if (count >= 4)
				memcpy(&want, m.rbuf, 4);
			if (want == 0) {
				rc = 0;
				break;
			}
			MPI_Send(m.buf, (int)want, MPI_BYTE, 1, RAW_TAG,
				 MPI_COMM_WORLD);
		}
	} else {
		rc = measure_all(b, raw_mpi_rt, &m, b->raw[T_MPI]);
		memset(m.buf, 0, 4); /* stop */
		MPI_Send(m.buf, 4, MPI_BYTE, 0, RAW_TAG, MPI_COMM_WORLD);
	}
out:
	free(m.buf);
	free(m.rbuf);
	return rc;
}

/* --- ours: ps_client against a real ps_server --- */

typedef struct ours {
	ps_client *c;
	float *w;
	uint64_t version, clock;
	ps_err e;
} ours;

static int ours_rt(void *ctx, enum op op, size_t bytes)
{
	ours *o = ctx;
	uint64_t n = bytes / sizeof(float);
	int rc;

	if (op == OP_PUSH) {
		/* A zero gradient: the server checks and applies it all the
		 * same, and the weights stay put. */
		rc = ps_client_push(o->c, o->w, 0, n, o->version, 1, 0.0f,
				    ++o->clock, &o->e);
		if (rc == PS_OK)
			rc = ps_client_flush(o->c, &o->e);
	} else {
		rc = ps_client_pull(o->c, o->w, 0, n, o->clock, &o->version,
				    NULL, &o->e);
	}
	return rc == PS_OK ? 0 : -1;
}

static int ours_case(bench *b, int t)
{
	ps_transport_opts topts = {64 << 20, 1000, NULL};
	ps_transport_curve curve;
	ps_curve_keyset *authorized = NULL;
	ps_server_config cfg;
	ps_transport *tr = NULL;
	ps_server *s = NULL;
	ours o;
	char ep[EP_LEN] = "";
	volatile int stop = 0;
	int rc = -1;

	memset(&o, 0, sizeof o);
	memset(&curve, 0, sizeof curve);
	if (t == T_CURVE) {
		if (share_curve_keys(b) != 0)
			return -1;
		if (ps_curve_keyset_new(&authorized) != PS_OK ||
		    ps_curve_keyset_add(authorized, curve_keys[2]) != PS_OK)
			return -1;
		memcpy(curve.secret_key, curve_keys[b->rank == 0 ? 1 : 3],
		       PS_CURVE_KEY_LEN);
		memcpy(curve.server_key, curve_keys[0], PS_CURVE_KEY_LEN);
		curve.authorized = authorized;
		topts.curve = &curve;
	}
	if (b->rank == 0) {
		memset(&cfg, 0, sizeof cfg);
		cfg.num_workers = 1;
		cfg.optim.kind = PS_OPTIM_SGD;
		cfg.optim.lr = 0.01;
		cfg.consistency = PS_CONSISTENCY_ASYNC;
		cfg.idle_timeout = 60;
		if (t == T_TCP || t == T_CURVE)
			snprintf(ep, sizeof ep, "tcp://127.0.0.1:*");
		else if (t == T_IPC)
			ipc_endpoint(ep, "ours");
		else
			snprintf(ep, sizeof ep, "mpi://*");
		if (ps_transport_listen(&tr, ep, &topts, &o.e) != PS_OK ||
		    ps_server_new(&s, &cfg, tr, &o.e) != PS_OK) {
			fprintf(stderr, "ps-bench-transport: %s\n", o.e.msg);
			ep[0] = '\0';
		} else {
			snprintf(ep, sizeof ep, "%s",
				 ps_transport_endpoint(tr));
		}
	}
	share_endpoint(ep);
	if (ep[0] == '\0')
		goto out;
	if (b->rank == 0) {
		if (ps_server_run(s, &stop, &o.e) == PS_OK)
			rc = 0;
		else
			fprintf(stderr, "ps-bench-transport: server: %s\n",
				o.e.msg);
	} else {
		/* A model of exactly MAX_FLOATS weights; each round trip
		 * moves the range [0, n) of it. */
		ps_model_spec spec = {.name = "linear",
				      .input_dim = MAX_FLOATS - 1,
				      .output_dim = 1,
				      .init_seed = 1};
		ps_msg_welcome wel;
		o.w = calloc(MAX_FLOATS, sizeof(float));
		if (!o.w ||
		    ps_client_new_curve(&o.c, ep, 30.0, 1, topts.curve,
					&o.e) != PS_OK ||
		    ps_client_hello(o.c, PS_ROLE_WORKER, 0, &spec, &wel,
				    &o.e) != PS_OK ||
		    measure_all(b, ours_rt, &o, b->ours[t]) != 0 ||
		    ps_client_bye(o.c, o.clock, o.clock, &o.e) != PS_OK)
			fprintf(stderr, "ps-bench-transport: client: %s\n",
				o.e.msg);
		else
			rc = 0;
	}
out:
	ps_client_destroy(&o.c);
	free(o.w);
	ps_server_destroy(&s);
	ps_transport_destroy(&tr);
	ps_curve_keyset_destroy(&authorized);
	if (b->rank == 0 && t == T_IPC && ep[0])
		unlink(ep + 6);
	return rc;
}

/* The server's own work on a push of each size, timed in this process:
 * part of every "ours" push round trip, none of a raw one. */
static int measure_apply(bench *b)
{
	ps_optim_config cfg;
	ps_optim *o = NULL;
	ps_err e = {0, ""};
	float *w = calloc(MAX_FLOATS, sizeof(float));
	float *g = calloc(MAX_FLOATS, sizeof(float));
	uint64_t t = 0;
	int rc = -1;

	memset(&cfg, 0, sizeof cfg);
	cfg.kind = PS_OPTIM_SGD;
	cfg.lr = 0.01;
	if (!w || !g || ps_optim_new(&o, MAX_FLOATS, &cfg, &e) != PS_OK)
		goto out;
	for (size_t i = 0; i < NSIZES; i++) {
		double us[21];
		for (int r = 0; r < 21; r++) {
			size_t bad;
			double t0 = now();
			int reps = sizes[i] < 1000 ? 1000 : 1;
			for (int k = 0; k < reps; k++) {
				if (ps_wire_check_finite(g, sizes[i], &bad) !=
				    PS_OK)
					goto out;
				ps_optim_apply_range(o, w, g, 0, sizes[i], ++t);
			}
			us[r] = (now() - t0) * 1e6 / reps;
		}
		qsort(us, 21, sizeof us[0], cmp_double);
		b->apply_us[i] = us[10];
	}
	rc = 0;
out:
	ps_optim_destroy(&o);
	free(w);
	free(g);
	return rc;
}

/* --- report --- */

static void human_size(char *buf, size_t len, size_t bytes)
{
	if (bytes >= 1000000)
		snprintf(buf, len, "%zu MB", bytes / 1000000);
	else if (bytes >= 1000)
		snprintf(buf, len, "%zu KB", bytes / 1000);
	else
		snprintf(buf, len, "%zu B", bytes);
}

static void report(const bench *b, FILE *table, FILE *csv)
{
	char sz[32];

	fprintf(
	    table,
	    "Round trips through pserver (ps_client, ps_wire, ps_transport, "
	    "ps_server) vs raw ping-pongs;\nmedian of %d rounds, each case "
	    "at least %.2f s a round. MB/s counts the tensor, one way.\n\n",
	    b->reps, b->min_time);
	fprintf(table, "| op | tensor | transport | ours RT/s | ours MB/s | "
		       "ours us | raw RT/s | raw MB/s | raw us | ours/raw |\n"
		       "|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
	if (csv)
		fprintf(csv, "op,bytes,transport,ours_rt_per_s,ours_mb_per_s,"
			     "ours_us,raw_rt_per_s,raw_mb_per_s,raw_us,"
			     "ours_over_raw\n");
	for (int op = 0; op < 2; op++)
		for (size_t i = 0; i < NSIZES; i++)
			for (int t = 0; t < NTRANSPORTS; t++) {
				if (b->only && t != b->only - 1)
					continue;
				const result *o = &b->ours[t][op][i];
				const result *r = &b->raw[t][op][i];
				size_t bytes = sizes[i] * sizeof(float);
				double omb = o->rt_per_s * (double)bytes / 1e6;
				double rmb = r->rt_per_s * (double)bytes / 1e6;
				human_size(sz, sizeof sz, bytes);
				fprintf(table,
					"| %s | %s | %s | %.0f | %.1f | %.1f | "
					"%.0f | %.1f | %.1f | %.2f |\n",
					op_names[op], sz, transport_names[t],
					o->rt_per_s, omb, o->us, r->rt_per_s,
					rmb, r->us, o->rt_per_s / r->rt_per_s);
				if (csv)
					fprintf(csv,
						"%s,%zu,%s,%.1f,%.3f,%.3f,%.1f,"
						"%.3f,%.3f,%.4f\n",
						op_names[op], bytes,
						transport_names[t], o->rt_per_s,
						omb, o->us, r->rt_per_s, rmb,
						r->us,
						o->rt_per_s / r->rt_per_s);
			}
	fprintf(table,
		"\nInside each ours push, the server's NaN/Inf check and "
		"SGD step take (timed alone):");
	for (size_t i = 0; i < NSIZES; i++) {
		human_size(sz, sizeof sz, sizes[i] * sizeof(float));
		fprintf(table, "%s %s %.1f us", i ? "," : "", sz,
			b->apply_us[i]);
	}
	fprintf(table, ".\n");
}

static int write_report(const bench *b)
{
	char path[4096];
	FILE *csv = NULL, *md = NULL;
	int rc = 0;

	report(b, stdout, NULL);
	if (!b->out_dir)
		return 0;
	snprintf(path, sizeof path, "%s/transport.csv", b->out_dir);
	csv = fopen(path, "w");
	snprintf(path, sizeof path, "%s/transport.md", b->out_dir);
	md = fopen(path, "w");
	if (!csv || !md) {
		fprintf(stderr, "ps-bench-transport: cannot write in %s\n",
			b->out_dir);
		rc = -1;
	} else {
		report(b, md, csv);
		printf("\nwritten: %s/transport.csv, %s/transport.md\n",
		       b->out_dir, b->out_dir);
	}
	if (csv && fclose(csv) != 0)
		rc = -1;
	if (md && fclose(md) != 0)
		rc = -1;
	return rc;
}

int main(int argc, char **argv)
{
	static bench b;
	ps_err e = {0, ""};
	int size = 0, rc, failed = 0, any_failed = 0;
	const ps_cli_opt opts[] = {
	    {"reps", PS_CLI_INT, &b.reps, "N",
	     "rounds over every case; the median is reported", 1, MAX_REPS,
	     NULL},
	    {"min-time", PS_CLI_DOUBLE, &b.min_time, "SECONDS",
	     "least duration of one repetition", 0.001, 60, NULL},
	    {"transport", PS_CLI_CHOICE, &b.only, "NAME",
	     "measure one transport only, or all", 0, -1, only_names},
	    {"out", PS_CLI_STRING, &b.out_dir, "DIR",
	     "also write transport.csv and transport.md into DIR", 0, -1, NULL},
	    {NULL, 0, NULL, NULL, NULL, 0, 0, NULL},
	};

	b.reps = 5;
	b.min_time = 0.2;
	rc = ps_cli_parse(
	    "ps-bench-transport",
	    "Push and pull round trips through pserver's stack and "
	    "raw ZeroMQ and MPI\nping-pongs. Run as 2 ranks: "
	    "mpirun -np 2 ps-bench-transport",
	    opts, argc, argv, &e);
	if (rc == PS_CLI_HELP)
		return 0;
	if (rc != PS_OK) {
		fprintf(stderr, "ps-bench-transport: %s\n", e.msg);
		return 2;
	}
	if (MPI_Init(&argc, &argv) != MPI_SUCCESS)
		return 1;
	MPI_Comm_rank(MPI_COMM_WORLD, &b.rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	if (size != 2) {
		if (b.rank == 0)
			fprintf(stderr, "ps-bench-transport: run as 2 ranks: "
					"mpirun -np 2 ps-bench-transport\n");
		MPI_Finalize();
		return 2;
	}
	ps_log_setup(b.rank == 0 ? "bench server" : "bench client",
		     PS_LOG_WARN);

	/* Rounds of every case in turn on both ranks, raw then ours, one
	 * repetition each, so that a change in the machine's load between
	 * the start and the end of the run touches every case alike. After
	 * each case both ranks agree on failure so that neither goes on
	 * alone. */
	for (int i = 0; i < 2 * NTRANSPORTS * b.reps && !any_failed; i++) {
		int t = i / 2 % NTRANSPORTS;
		b.round = i / (2 * NTRANSPORTS);
		if (b.only && t != b.only - 1)
			continue;
		if (i % 2 == 0)
			rc =
			    t == T_MPI ? raw_mpi_case(&b) : raw_zmq_case(&b, t);
		else
			rc = ours_case(&b, t);
		failed = rc != 0;
		MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_LOR,
			      MPI_COMM_WORLD);
		if (any_failed && b.rank == 1)
			fprintf(stderr, "ps-bench-transport: %s %s failed\n",
				i % 2 ? "ours" : "raw", transport_names[t]);
	}
	for (int t = 0; t < NTRANSPORTS; t++)
		for (int op = 0; op < 2; op++)
			for (size_t j = 0; j < NSIZES; j++) {
				take_median(&b.ours[t][op][j], b.reps);
				take_median(&b.raw[t][op][j], b.reps);
			}
	rc = any_failed ? 1 : 0;
	if (!any_failed && b.rank == 1 &&
	    (measure_apply(&b) != 0 || write_report(&b) != 0))
		rc = 1;
	MPI_Finalize();
	return rc;
}
