/*
 * ps-bench-micro: pserver's micro-benchmarks, each beside the ceiling of
 * this machine measured in the same run (`make bench-micro`;
 * docs/EXPERIMENTS.md, "Micro-benchmarks"):
 *  - pulls and pushes through pserver's own stack (ps_client -> ps_wire ->
 *    ps_transport -> a real ps_server, which validates, applies and
 *    replies, and back) over ZeroMQ tcp, ZeroMQ ipc and MPI, beside raw
 *    ZeroMQ and raw MPI exchanges of the same shapes;
 *  - the server's update apply (ps_optim: SGD, Adam over 1M floats)
 *    beside the streaming memory bandwidth.
 * Two ranks under mpirun: rank 0 serves, rank 1 measures and reports.
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
#include <time.h>
#include <unistd.h>

#include <cblas.h>
#include <mpi.h>
#include <zmq.h>

#include "ps_cli.h"
#include "ps_client.h"
#include "ps_log.h"
#include "ps_optim.h"
#include "ps_server.h"
#include "ps_shm.h"
#include "ps_transport.h"
#include "ps_wire.h"

#define RAW_TAG	     99
#define SMALL	     16 /* raw: a pull's request, a push's acknowledgement */
#define MAX_REPS     64
#define MAX_INFLIGHT 64
#define EP_LEN	     256

/* A pull round trip (request, weights), a push round trip (gradient,
 * ack, one in flight) and streamed pushes (up to --inflight in flight). */
enum op { OP_PULL, OP_PUSH, OP_STREAM, NOPS };

/* Tensor sizes in floats: 4 B, 40 KB, 4 MB. */
static const size_t sizes[] = {1, 10000, 1000000};
#define NSIZES	   (sizeof sizes / sizeof sizes[0])
#define MAX_FLOATS 1000000

enum { T_TCP, T_IPC, T_MPI, NTRANSPORTS };
static const char *const transport_names[] = {"zmq-tcp", "zmq-ipc", "mpi"};
/* pserver's rows over ZeroMQ again with tensors through shared memory
 * (--shm, as ps-launch's local runs), beside the same raw ZeroMQ. */
static const char *const shm_names[] = {"tcp+shm", "ipc+shm", NULL};
#define is_zmq(t) ((t) == T_TCP || (t) == T_IPC)
static const char *const only_names[] = {"all", "zmq-tcp", "zmq-ipc", "mpi",
					 NULL};

/* The server's update apply over MAX_FLOATS weights: cold (w, g and the
 * optimizer state evicted from the caches before each apply) or warm
 * (applied again and again to the same arrays, as a busy server does),
 * and the whole of what a server does to a 4 MB push besides messaging.
 * bytes: counted per float, every array read or written once. */
enum apply_case { AP_SGD_COLD, AP_SGD_WARM, AP_ADAM_COLD, AP_ADAM_WARM,
		  AP_PUSH, NAPPLY };
static const struct {
	const char *what, *how;
	int bytes; /* per float */
	int cold;
} apply_cases[NAPPLY] = {
    {"SGD apply", "cold", 12, 1},	     /* r w, g; w w */
    {"SGD apply", "warm", 12, 0},
    {"Adam apply", "cold", 28, 1},	     /* r w, g, m, v; w w, m, v */
    {"Adam apply", "warm", 28, 0},
    {"push check+SGD", "warm", 16, 0},    /* r g (check), then SGD */
};

/* Streaming memory bandwidth: a = b (copy, 8 B per float counted) and
 * a = b + q * c (triad, 12 B), as STREAM counts them. */
enum { MEM_COPY, MEM_TRIAD, NMEM };
static const char *const mem_names[] = {"memory copy", "memory triad"};
static const int mem_bytes[] = {8, 12};

/* Operations per second of each repetition, and their median; and the
 * CPU time both ranks spent per operation (every thread, microseconds;
 * 0: not measured). */
typedef struct result {
	double rate[MAX_REPS];
	double med;
	double cpu[MAX_REPS];
	double cpu_med;
} result;

typedef struct bench {
	int reps;
	double min_time; /* seconds per repetition, at least */
	int inflight;	 /* pushes in flight when streaming */
	int no_shm;	 /* skip the shared-memory rows */
	int mem_mb;	 /* size of each streaming array */
	size_t mem_floats; /* the same in floats, a multiple of 16 */
	const char *out_dir;
	int only; /* index into only_names: 0 all, else transport + 1 */
	int rank;
	/* The processes whose CPU time a transport case counts: both
	 * ranks when they share a machine, else none (ncpu 0). */
	long cpu_pid[2];
	int ncpu;
	int round; /* the repetition being measured */
	double load[2]; /* 1-minute load average at the start and the end */
	result ours[NTRANSPORTS][NOPS][NSIZES];
	result ours_shm[NTRANSPORTS][NOPS][NSIZES]; /* ZeroMQ ones only */
	result raw[NTRANSPORTS][NOPS][NSIZES];
	result apply[NAPPLY];
	result mem[NMEM]; /* passes per second, best of 3 in each round */
} bench;

/* A thing to time: one operation `what` (an enum op or an enum
 * apply_case) carrying `bytes`, and a wait for every operation still in
 * flight (NULL: none ever is). Each returns 0 on success. */
typedef struct timed {
	int (*one)(void *ctx, int what, size_t bytes);
	int (*drain)(void *ctx);
	void *ctx;
} timed;

static double now(void)
{
	return ps_now();
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* CPU time process pid has run so far, every thread of it counted
 * (those that have ended too), in seconds; -1 when it cannot be read. */
static double process_cpu(long pid)
{
	struct timespec ts;
	clockid_t clock;

	if (clock_getcpuclockid((pid_t)pid, &clock) != 0 ||
	    clock_gettime(clock, &ts) != 0)
		return -1.0;
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The CPU time of the processes in b->cpu_pid, in seconds; -1 when there
 * are none or one cannot be read. */
static double cpu_now(const bench *b)
{
	double sum = 0.0;

	for (int i = 0; i < b->ncpu; i++) {
		double c = process_cpu(b->cpu_pid[i]);
		if (c < 0)
			return -1.0;
		sum += c;
	}
	return b->ncpu > 0 ? sum : -1.0;
}

static int run_ops(const timed *p, int what, size_t bytes, long k)
{
	for (long i = 0; i < k; i++)
		if (p->one(p->ctx, what, bytes) != 0)
			return -1;
	return p->drain ? p->drain(p->ctx) : 0;
}

/* Time repetition number b->round of `what`: k operations and the wait
 * for the last, k chosen so that they last at least min_time. */
static int measure(const bench *b, const timed *p, int what, size_t bytes,
		   result *out)
{
	double t0, c0, c1, one;
	long k;

	if (run_ops(p, what, bytes, 3) != 0) /* warm up: connections */
		return -1;
	t0 = now();
	if (run_ops(p, what, bytes, 3) != 0)
		return -1;
	one = (now() - t0) / 3;
	k = (long)ceil(b->min_time / (one > 1e-7 ? one : 1e-7));
	if (k < 3)
		k = 3;
	if (k > 200000)
		k = 200000;
	c0 = cpu_now(b);
	t0 = now();
	if (run_ops(p, what, bytes, k) != 0)
		return -1;
	out->rate[b->round] = (double)k / (now() - t0);
	c1 = cpu_now(b);
	out->cpu[b->round] = c0 >= 0 && c1 > c0 ? 1e6 * (c1 - c0) / k : 0.0;
	return 0;
}

static double median(const double *v, int n)
{
	double sorted[MAX_REPS];
	memcpy(sorted, v, (size_t)n * sizeof sorted[0]);
	qsort(sorted, (size_t)n, sizeof sorted[0], cmp_double);
	return n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
}

static void take_median(result *r, int reps)
{
	r->med = median(r->rate, reps);
	r->cpu_med = 0.0;
	for (int i = 0; i < reps; i++)
		if (r->cpu[i] <= 0)
			return;
	r->cpu_med = median(r->cpu, reps);
}

/* A ratio over rounds: its median, least and greatest. */
typedef struct spread {
	double med, lo, hi;
} spread;

/* ours / (raw * scale) in each round, each pair measured in the same
 * round: its median is steadier than the ratio of the two medians when
 * the machine's load changes during the run. */
static spread paired_ratio(const result *ours, const result *raw,
			   double scale, int reps)
{
	double q[MAX_REPS] = {0};
	spread sp;

	for (int r = 0; r < reps; r++)
		q[r] = ours->rate[r] / (raw->rate[r] * scale);
	sp.med = median(q, reps);
	sp.lo = sp.hi = q[0];
	for (int r = 1; r < reps; r++) {
		sp.lo = q[r] < sp.lo ? q[r] : sp.lo;
		sp.hi = q[r] > sp.hi ? q[r] : sp.hi;
	}
	return sp;
}

/* Every (op, size) of one transport case, on the measuring rank. */
static int measure_all(const bench *b, const timed *p,
		       result res[NOPS][NSIZES])
{
	for (int op = 0; op < NOPS; op++)
		for (size_t i = 0; i < NSIZES; i++)
			if (measure(b, p, op, sizes[i] * sizeof(float),
				    &res[op][i]) != 0)
				return -1;
	return 0;
}

/* 1 on every rank when any rank failed; the measuring rank says what. */
static int agree(const bench *b, int failed, const char *what,
		 const char *transport)
{
	int any = 0;
	MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
	if (any && b->rank == 1)
		fprintf(stderr, "ps-bench-micro: %s %s failed\n", what,
			transport);
	return any;
}

/* A barrier that sleeps instead of spinning: the other rank measures
 * memory meanwhile, and an MPI wait would take a core from it. */
static void quiet_barrier(void)
{
	const struct timespec nap = {0, 1000000};
	MPI_Request r;
	int done = 0;

	MPI_Ibarrier(MPI_COMM_WORLD, &r);
	while (MPI_Test(&r, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && !done)
		nanosleep(&nap, NULL);
}

static void share_endpoint(char ep[EP_LEN])
{
	MPI_Bcast(ep, EP_LEN, MPI_CHAR, 0, MPI_COMM_WORLD);
}

static void ipc_endpoint(char ep[EP_LEN], const char *what)
{
	snprintf(ep, EP_LEN, "ipc:///tmp/ps-bench-%s-%ld.sock", what,
		 (long)getpid());
}

/* --- raw: the same shapes without pserver --- */

/* The measuring side of a raw case: send() sends buf[0, len) to the
 * echoing side, reply() takes in one reply and returns its size (-1 on
 * failure). A request names the size of its reply in its first 4 bytes;
 * 0 there stops the echoing side. */
typedef struct raw {
	int (*send)(struct raw *r, size_t len);
	long (*reply)(struct raw *r);
	unsigned char *buf, *rbuf; /* MAX_FLOATS * 4 bytes each */
	void *sock;		   /* ZeroMQ's */
	int inflight, window;
} raw;

static int raw_ack(raw *r)
{
	if (r->reply(r) != SMALL)
		return -1;
	r->inflight--;
	return 0;
}

static int raw_one(void *ctx, int op, size_t bytes)
{
	raw *r = ctx;
	uint32_t want = op == OP_PULL ? (uint32_t)bytes : SMALL;

	if (op == OP_STREAM && r->inflight == r->window && raw_ack(r) != 0)
		return -1;
	memcpy(r->buf, &want, 4);
	if (r->send(r, op == OP_PULL ? SMALL : bytes) != 0)
		return -1;
	if (op == OP_STREAM) {
		r->inflight++;
		return 0;
	}
	return r->reply(r) == (long)want ? 0 : -1;
}

static int raw_drain(void *ctx)
{
	raw *r = ctx;
	while (r->inflight > 0)
		if (raw_ack(r) != 0)
			return -1;
	return 0;
}

/* Measure every case of transport t, then stop the echoing side. */
static int raw_measure(bench *b, raw *r, int t)
{
	timed p = {raw_one, raw_drain, r};
	int rc = measure_all(b, &p, b->raw[t]);

	memset(r->buf, 0, 4);
	if (r->send(r, 4) != 0)
		rc = -1;
	return rc;
}

/* ZeroMQ: DEALER -> ROUTER with zmq_send and zmq_msg_recv, the socket
 * types and calls pserver's transport uses. */
static int raw_zmq_send(raw *r, size_t len)
{
	return zmq_send(r->sock, r->buf, len, 0) < 0 ? -1 : 0;
}

static long raw_zmq_reply(raw *r)
{
	zmq_msg_t m;
	int rc;

	zmq_msg_init(&m);
	rc = zmq_msg_recv(&m, r->sock, 0);
	zmq_msg_close(&m);
	return rc;
}

static int raw_zmq_case(bench *b, int t)
{
	void *ctx = zmq_ctx_new();
	raw r = {raw_zmq_send, raw_zmq_reply, malloc(MAX_FLOATS * 4), NULL,
		 NULL, 0, b->inflight};
	char ep[EP_LEN] = "";
	size_t len = sizeof ep;
	int linger = 0, ok, rc = -1;

	if (ctx && r.buf)
		r.sock = zmq_socket(ctx, b->rank == 0 ? ZMQ_ROUTER : ZMQ_DEALER);
	if (r.sock) {
		memset(r.buf, 0, MAX_FLOATS * 4);
		zmq_setsockopt(r.sock, ZMQ_LINGER, &linger, sizeof linger);
	}
	if (b->rank == 0 && r.sock) {
		if (t == T_IPC)
			ipc_endpoint(ep, "raw");
		else
			snprintf(ep, sizeof ep, "tcp://127.0.0.1:*");
		if (zmq_bind(r.sock, ep) != 0 ||
		    zmq_getsockopt(r.sock, ZMQ_LAST_ENDPOINT, ep, &len) != 0)
			ep[0] = '\0';
	}
	share_endpoint(ep);
	ok = r.sock && ep[0] &&
	     (b->rank == 0 || zmq_connect(r.sock, ep) == 0);
	/* Neither side may wait for the other unless both are ready. */
	if (agree(b, !ok, "setting up raw", transport_names[t]))
		goto out;
	if (b->rank == 1) {
		rc = raw_measure(b, &r, t);
		goto out;
	}
	for (;;) {
		zmq_msg_t id, req;
		uint32_t want = 0;
		zmq_msg_init(&id);
		zmq_msg_init(&req);
		if (zmq_msg_recv(&id, r.sock, 0) < 0 ||
		    zmq_msg_recv(&req, r.sock, 0) < 0)
			break;
		if (zmq_msg_size(&req) >= 4)
			memcpy(&want, zmq_msg_data(&req), 4);
		zmq_msg_close(&req);
		if (want == 0) {
			zmq_msg_close(&id);
			rc = 0;
			break;
		}
		zmq_send(r.sock, zmq_msg_data(&id), zmq_msg_size(&id),
			 ZMQ_SNDMORE);
		zmq_msg_close(&id);
		zmq_send(r.sock, r.buf, want, 0);
	}
out:
	if (r.sock)
		zmq_close(r.sock);
	if (ctx)
		zmq_ctx_term(ctx);
	if (b->rank == 0 && t == T_IPC && ep[0])
		unlink(ep + 6);
	free(r.buf);
	return rc;
}

/* MPI: blocking MPI_Send and MPI_Recv. */
static int raw_mpi_send(raw *r, size_t len)
{
	return MPI_Send(r->buf, (int)len, MPI_BYTE, 0, RAW_TAG,
			MPI_COMM_WORLD) == MPI_SUCCESS
		       ? 0
		       : -1;
}

static long raw_mpi_reply(raw *r)
{
	MPI_Status st;
	int count = 0;

	if (MPI_Recv(r->rbuf, MAX_FLOATS * 4, MPI_BYTE, 0, RAW_TAG,
		     MPI_COMM_WORLD, &st) != MPI_SUCCESS)
		return -1;
	MPI_Get_count(&st, MPI_BYTE, &count);
	return count;
}

static int raw_mpi_case(bench *b)
{
	raw r = {raw_mpi_send, raw_mpi_reply, malloc(MAX_FLOATS * 4),
		 malloc(MAX_FLOATS * 4), NULL, 0, b->inflight};
	int rc = -1;

	/* Both ranks must know before either waits on the other. */
	if (agree(b, !r.buf || !r.rbuf, "setting up raw", "mpi"))
		goto out;
	memset(r.buf, 0, MAX_FLOATS * 4);
	if (b->rank == 1) {
		rc = raw_measure(b, &r, T_MPI);
		goto out;
	}
	for (;;) {
		MPI_Status st;
		uint32_t want = 0;
		int count = 0;
		MPI_Recv(r.rbuf, MAX_FLOATS * 4, MPI_BYTE, 1, RAW_TAG,
			 MPI_COMM_WORLD, &st);
		MPI_Get_count(&st, MPI_BYTE, &count);
		if (count >= 4)
			memcpy(&want, r.rbuf, 4);
		if (want == 0) {
			rc = 0;
			break;
		}
		MPI_Send(r.buf, (int)want, MPI_BYTE, 1, RAW_TAG,
			 MPI_COMM_WORLD);
	}
out:
	free(r.buf);
	free(r.rbuf);
	return rc;
}

/* --- ours: ps_client against a real ps_server --- */

typedef struct ours {
	ps_client *c;
	float *g; /* a zero gradient */
	uint64_t version, clock;
	ps_err e;
} ours;

static int ours_one(void *ctx, int op, size_t bytes)
{
	ours *o = ctx;
	uint64_t n = bytes / sizeof(float);
	int rc;

	/* Pulled as a trainer pulls: the weights stay in the message that
	 * brought them (ps_client_weights()), as the raw side's do. */
	if (op == OP_PULL)
		return ps_client_pull(o->c, NULL, 0, n, o->clock, &o->version,
				      NULL, &o->e) == PS_OK
			       ? 0
			       : -1;
	/* A zero gradient: the server checks and applies it all the same,
	 * and the weights stay put. */
	rc = ps_client_push(o->c, o->g, 0, n, o->version, 1, 0.0f, ++o->clock,
			    &o->e);
	if (rc == PS_OK && op == OP_PUSH)
		rc = ps_client_flush(o->c, &o->e);
	return rc == PS_OK ? 0 : -1;
}

static int ours_drain(void *ctx)
{
	ours *o = ctx;
	return ps_client_flush(o->c, &o->e) == PS_OK ? 0 : -1;
}

static int ours_case(bench *b, int t, int shm)
{
	ps_transport_opts topts = {64 << 20, 1000, NULL};
	ps_server_config cfg;
	ps_transport *tr = NULL;
	ps_server *s = NULL;
	ours o;
	timed p = {ours_one, ours_drain, &o};
	char ep[EP_LEN] = "";
	volatile int stop = 0;
	int rc = -1;

	memset(&o, 0, sizeof o);
	ps_transport_set_default_shm(shm);
	if (b->rank == 0) {
		memset(&cfg, 0, sizeof cfg);
		cfg.num_workers = 1;
		cfg.optim.kind = PS_OPTIM_SGD;
		cfg.optim.lr = 0.01;
		cfg.consistency = PS_CONSISTENCY_ASYNC;
		cfg.idle_timeout = 60;
		if (t == T_TCP)
			snprintf(ep, sizeof ep, "tcp://127.0.0.1:*");
		else if (t == T_IPC)
			ipc_endpoint(ep, "ours");
		else
			snprintf(ep, sizeof ep, "mpi://*");
		if (ps_transport_listen(&tr, ep, &topts, &o.e) != PS_OK ||
		    ps_server_new(&s, &cfg, tr, &o.e) != PS_OK) {
			fprintf(stderr, "ps-bench-micro: %s\n", o.e.msg);
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
			fprintf(stderr, "ps-bench-micro: server: %s\n",
				o.e.msg);
	} else {
		/* A model of exactly MAX_FLOATS weights; each operation
		 * moves the range [0, n) of it. */
		ps_model_spec spec = {.name = "linear",
				      .input_dim = MAX_FLOATS - 1,
				      .output_dim = 1,
				      .init_seed = 1};
		ps_msg_welcome wel;
		o.g = malloc(MAX_FLOATS * sizeof(float));
		/* Written, as raw's buffer is: calloc's untouched pages would
		 * all read from one zero page, always in cache. */
		if (o.g)
			memset(o.g, 0, MAX_FLOATS * sizeof(float));
		if (!o.g ||
		    ps_client_new(&o.c, ep, 30.0, b->inflight, &o.e) != PS_OK ||
		    ps_client_hello(o.c, PS_ROLE_WORKER, 0, &spec, &wel,
				    &o.e) != PS_OK ||
		    measure_all(b, &p, shm ? b->ours_shm[t] : b->ours[t]) != 0 ||
		    ps_client_bye(o.c, o.clock, o.clock, &o.e) != PS_OK)
			fprintf(stderr, "ps-bench-micro: client: %s\n",
				o.e.msg);
		else
			rc = 0;
	}
out:
	ps_transport_set_default_shm(0);
	ps_client_destroy(&o.c);
	free(o.g);
	ps_server_destroy(&s);
	ps_transport_destroy(&tr);
	if (b->rank == 0 && t == T_IPC && ep[0])
		unlink(ep + 6);
	return rc;
}

/* --- the server's update apply, and memory bandwidth --- */

typedef struct apply_bench {
	ps_optim *sgd, *adam;
	float *w, *g;	  /* MAX_FLOATS each */
	float *a, *b, *c; /* the streaming arrays, n floats each */
	size_t n;
	uint64_t t; /* updates applied so far */
} apply_bench;

static void apply_destroy(apply_bench *ap)
{
	ps_optim_destroy(&ap->sgd);
	ps_optim_destroy(&ap->adam);
	free(ap->w);
	free(ap->g);
	free(ap->a);
	free(ap->b);
	free(ap->c);
}

/* Every array written once before any timing, so that no page fault is
 * timed. */
static int apply_setup(apply_bench *ap, size_t mem_floats)
{
	ps_optim_config cfg;
	ps_err e = {0, ""};

	memset(ap, 0, sizeof *ap);
	ap->n = mem_floats;
	ap->w = malloc(MAX_FLOATS * sizeof(float));
	ap->g = malloc(MAX_FLOATS * sizeof(float));
	ap->a = malloc(ap->n * sizeof(float));
	ap->b = malloc(ap->n * sizeof(float));
	ap->c = malloc(ap->n * sizeof(float));
	memset(&cfg, 0, sizeof cfg);
	cfg.kind = PS_OPTIM_SGD;
	cfg.lr = 0.01;
	if (!ap->w || !ap->g || !ap->a || !ap->b || !ap->c ||
	    ps_optim_new(&ap->sgd, MAX_FLOATS, &cfg, &e) != PS_OK)
		goto fail;
	cfg.kind = PS_OPTIM_ADAM;
	cfg.lr = 0.001;
	cfg.beta1 = 0.9;
	cfg.beta2 = 0.999;
	cfg.eps = 1e-8;
	if (ps_optim_new(&ap->adam, MAX_FLOATS, &cfg, &e) != PS_OK)
		goto fail;
	for (size_t i = 0; i < MAX_FLOATS; i++) {
		ap->w[i] = 0.0f;
		ap->g[i] = 1e-3f * (float)((int)(i % 7) - 3);
	}
	for (size_t i = 0; i < ap->n; i++) {
		ap->a[i] = 0.0f;
		ap->b[i] = 1.0f;
		ap->c[i] = 2.0f;
	}
	return 0;
fail:
	fprintf(stderr, "ps-bench-micro: apply: %s\n",
		e.code ? e.msg : "out of memory");
	apply_destroy(ap);
	return -1;
}

static int apply_one(void *ctx, int which, size_t bytes)
{
	apply_bench *ap = ctx;
	size_t bad = 0;

	(void)bytes;
	switch ((enum apply_case)which) {
	case AP_PUSH:
		if (ps_wire_check_finite(ap->g, MAX_FLOATS, &bad) != PS_OK)
			return -1;
		/* fall through */
	case AP_SGD_COLD:
	case AP_SGD_WARM:
		ps_optim_apply_range(ap->sgd, ap->w, ap->g, 0, MAX_FLOATS,
				     ap->t++);
		break;
	case AP_ADAM_COLD:
	case AP_ADAM_WARM:
		ps_optim_apply_range(ap->adam, ap->w, ap->g, 0, MAX_FLOATS,
				     ap->t++);
		break;
	case NAPPLY:
		return -1;
	}
	return 0;
}

/* Read 64 MB (or the whole streaming array, if smaller) so that the
 * weights, the gradient and the optimizer state leave the caches. */
static volatile float evict_sink; /* keeps the reads */

static void evict(const apply_bench *ap)
{
	size_t n = ap->n < (64 << 20) / sizeof(float)
		       ? ap->n
		       : (64 << 20) / sizeof(float);
	float s = 0.0f;

	for (size_t i = 0; i < n; i += 16) /* one float per cache line */
		s += ap->b[i];
	evict_sink = s;
}

/* A cold apply: each one timed alone after an eviction, at least 5 and
 * until they add up to a quarter of min_time (at most 50). */
static int measure_cold(const bench *b, apply_bench *ap, int which,
			result *out)
{
	double sum = 0.0;
	int m = 0;

	if (apply_one(ap, which, 0) != 0)
		return -1;
	while (m < 5 || (sum < b->min_time / 4 && m < 50)) {
		double t0;
		evict(ap);
		t0 = now();
		if (apply_one(ap, which, 0) != 0)
			return -1;
		sum += now() - t0;
		m++;
	}
	out->rate[b->round] = m / sum;
	return 0;
}

/* a = b + q * c over n floats, n a multiple of 16 (gcc -O2 vectorizes
 * only loops it can see need no scalar tail). */
static void triad(float *restrict a, const float *restrict b,
		  const float *restrict c, size_t n)
{
	n &= ~(size_t)15;
	for (size_t i = 0; i < n; i++)
		a[i] = b[i] + 3.0f * c[i];
}

/* One pass of a streaming kernel over the arrays, in passes per second. */
static double mem_pass(apply_bench *ap, int kind)
{
	double t0 = now();

	if (kind == MEM_COPY)
		memcpy(ap->a, ap->b, ap->n * sizeof(float));
	else
		triad(ap->a, ap->b, ap->c, ap->n);
	return 1.0 / (now() - t0);
}

/* Round b->round of the rank-1-only measurements. */
static int apply_round(bench *b, apply_bench *ap)
{
	timed p = {apply_one, NULL, ap};

	for (int k = 0; k < NMEM; k++) {
		double best = 0.0;
		for (int pass = 0; pass < 3; pass++) {
			double r = mem_pass(ap, k);
			if (r > best)
				best = r;
		}
		b->mem[k].rate[b->round] = best;
	}
	for (int i = 0; i < NAPPLY; i++) {
		int rc = apply_cases[i].cold
			     ? measure_cold(b, ap, i, &b->apply[i])
			     : measure(b, &p, i, 0, &b->apply[i]);
		if (rc != 0)
			return -1;
	}
	return 0;
}

/* --- report --- */

/* One line of the table: what pserver does, and its ceiling. */
typedef struct row {
	const char *what, *path;
	size_t size;	/* the tensor, the weights or a streaming array */
	double bytes;	/* counted per operation, for MB/s */
	double ours;	/* operations per second; 0: not measured */
	double raw;	/* the ceiling, in operations per second */
	spread ratio;	/* ours / raw, paired_ratio(); 0: not measured */
	double target;	/* least ratio asked for; 0: none */
	/* CPU time of both ranks per operation, microseconds: pserver's
	 * and the ceiling's (transport rows only; 0: not measured). */
	double ours_cpu, raw_cpu;
} row;

#define MAX_ROWS ((NTRANSPORTS + 2) * NOPS * NSIZES + NAPPLY + NMEM)

/* Least ratios asked for (docs/EXPERIMENTS.md): a small pull within 1.3x
 * of a raw ZeroMQ round trip, a 4 MB push at 0.9x of raw ZeroMQ or
 * better, a cold SGD apply within 1.5x of the time the memory bandwidth
 * allows. */
static double transport_target(int op, int t, size_t floats)
{
	if (t == T_MPI)
		return 0.0;
	if (op == OP_PULL && floats == 1)
		return 1.0 / 1.3;
	if (op != OP_PULL && floats == MAX_FLOATS)
		return 0.9;
	return 0.0;
}

/* The row of pserver's figures o on path beside raw's r, for operation
 * op on tensors of sizes[i] over transport t. */
static row transport_row(const bench *b, const char *what, const char *path,
			 int op, size_t i, int t, const result *o,
			 const result *r)
{
	size_t bytes = sizes[i] * sizeof(float);

	return (row){what,
		     path,
		     bytes,
		     (double)bytes,
		     o->med,
		     r->med,
		     paired_ratio(o, r, 1.0, b->reps),
		     transport_target(op, t, sizes[i]),
		     o->cpu_med,
		     r->cpu_med};
}

static int collect_rows(const bench *b, row *rows)
{
	static const char *const what[NOPS] = {"pull round trip",
					       "push round trip",
					       "push stream"};
	double floats = (double)b->mem_floats;
	/* Triad passes per second -> bytes per second. */
	double pass = mem_bytes[MEM_TRIAD] * floats;
	int n = 0;

	for (int op = 0; op < NOPS; op++)
		for (size_t i = 0; i < NSIZES; i++)
			for (int t = 0; t < NTRANSPORTS; t++) {
				if (b->only && t != b->only - 1)
					continue;
				const result *r = &b->raw[t][op][i];
				rows[n++] = transport_row(
				    b, what[op], transport_names[t], op, i, t,
				    &b->ours[t][op][i], r);
				if (!b->no_shm && is_zmq(t))
					rows[n++] = transport_row(
					    b, what[op], shm_names[t], op, i, t,
					    &b->ours_shm[t][op][i], r);
			}
	for (int i = 0; i < NAPPLY; i++) {
		double bytes = (double)apply_cases[i].bytes * MAX_FLOATS;
		rows[n++] = (row){
		    apply_cases[i].what,
		    apply_cases[i].how,
		    MAX_FLOATS * sizeof(float),
		    bytes,
		    b->apply[i].med,
		    b->mem[MEM_TRIAD].med * pass / bytes,
		    paired_ratio(&b->apply[i], &b->mem[MEM_TRIAD], pass / bytes,
				 b->reps),
		    i == AP_SGD_COLD ? 1.0 / 1.5 : 0.0,
		    0.0, 0.0};
	}
	for (int k = 0; k < NMEM; k++)
		rows[n++] = (row){mem_names[k],
				  "memory",
				  b->mem_floats * sizeof(float),
				  mem_bytes[k] * floats,
				  0.0,
				  b->mem[k].med,
				  {0.0, 0.0, 0.0},
				  0.0, 0.0, 0.0};
	return n;
}

static void human_size(char *buf, size_t len, size_t bytes)
{
	if (bytes >= 1000000)
		snprintf(buf, len, "%zu MB", bytes / 1000000);
	else if (bytes >= 1000)
		snprintf(buf, len, "%zu KB", bytes / 1000);
	else
		snprintf(buf, len, "%zu B", bytes);
}

/* Operations per second, microseconds per operation and MB/s, or "-". */
static void cells(char out[3][24], double rate, double bytes)
{
	if (rate <= 0) {
		for (int i = 0; i < 3; i++)
			snprintf(out[i], 24, "-");
		return;
	}
	snprintf(out[0], 24, "%.0f", rate);
	snprintf(out[1], 24, "%.1f", 1e6 / rate);
	snprintf(out[2], 24, "%.*f", rate * bytes < 1e6 ? 3 : 0,
		 rate * bytes / 1e6);
}

/* CPU microseconds per operation, or "-" (and an empty CSV field) when
 * not measured. */
static void cpu_cell(char out[24], double us)
{
	if (us > 0)
		snprintf(out, 24, "%.1f", us);
	else
		snprintf(out, 24, "-");
}

static void csv_cpu(FILE *csv, double us)
{
	if (us > 0)
		fprintf(csv, "%.6g,", us);
	else
		fprintf(csv, ",");
}

static void report(const bench *b, FILE *table, FILE *csv)
{
	row rows[MAX_ROWS];
	int n = collect_rows(b, rows);

	fprintf(table,
		"pserver's micro-benchmarks beside this machine's ceilings, "
		"measured in one run:\nmedians of %d rounds, each case at "
		"least %.2f s a round; push stream: %d in flight;\nload "
		"average %.2f at the start, %.2f at the end.\n"
		"Transport rows: ps_client + ps_server against raw "
		"DEALER/ROUTER or MPI_Send/Recv,\nMB/s counts the tensor one "
		"way. Apply rows: ps_optim over 1M floats against the\ntriad "
		"bandwidth, MB/s counts every array read or written once "
		"(SGD 12 B, Adam 28 B\na float). cpu us: CPU time of both "
		"ranks per operation, every thread and the\nkernel's work for "
		"them (%s). ratio: pserver/raw\noperations per second, the "
		"median over rounds of the ratio in each round\n(above 1: "
		"pserver faster).\n\n",
		b->reps, b->min_time, b->inflight, b->load[0], b->load[1],
		b->ncpu ? "both ranks on this machine"
			: "-: the ranks are on two machines");
	fprintf(table,
		"| %-15s | %-7s | %-6s | %10s | %10s | %8s | %8s | %10s | "
		"%9s | %8s | %10s | %5s | %-13s |\n",
		"what", "path", "size", "pserver /s", "pserver us", "MB/s",
		"cpu us", "raw /s", "raw us", "raw MB/s", "raw cpu us",
		"ratio", "target");
	fprintf(table, "|-----------------|---------|--------|-----------:|"
		       "-----------:|---------:|---------:|-----------:|"
		       "----------:|---------:|-----------:|------:|"
		       "---------------|\n");
	if (csv)
		fprintf(csv, "what,path,bytes,pserver_per_s,pserver_us,"
			     "pserver_mb_per_s,pserver_cpu_us,raw_per_s,raw_us,"
			     "raw_mb_per_s,raw_cpu_us,ratio,ratio_min,"
			     "ratio_max,target,target_met\n");
	for (int i = 0; i < n; i++) {
		const row *r = &rows[i];
		char sz[32], o[3][24], w[3][24], oc[24], wc[24];
		char ratio[16] = "-", target[24] = "";
		int met = r->ours > 0 && r->ratio.med >= r->target;

		human_size(sz, sizeof sz, r->size);
		cells(o, r->ours, r->bytes);
		cells(w, r->raw, r->bytes);
		cpu_cell(oc, r->ours > 0 ? r->ours_cpu : 0.0);
		cpu_cell(wc, r->raw_cpu);
		if (r->ours > 0)
			snprintf(ratio, sizeof ratio, "%.2f", r->ratio.med);
		if (r->target > 0)
			snprintf(target, sizeof target, ">=%.2f %s",
				 r->target, met ? "met" : "MISSED");
		fprintf(table,
			"| %-15s | %-7s | %-6s | %10s | %10s | %8s | %8s | "
			"%10s | %9s | %8s | %10s | %5s | %-13s |\n",
			r->what, r->path, sz, o[0], o[1], o[2], oc, w[0], w[1],
			w[2], wc, ratio, target);
		if (csv) {
			fprintf(csv, "%s,%s,%zu,", r->what, r->path, r->size);
			if (r->ours > 0)
				fprintf(csv, "%.6g,%.6g,%.6g,", r->ours,
					1e6 / r->ours, r->ours * r->bytes / 1e6);
			else
				fprintf(csv, ",,,");
			csv_cpu(csv, r->ours > 0 ? r->ours_cpu : 0.0);
			fprintf(csv, "%.6g,%.6g,%.6g,", r->raw, 1e6 / r->raw,
				r->raw * r->bytes / 1e6);
			csv_cpu(csv, r->raw_cpu);
			if (r->ours > 0)
				fprintf(csv, "%.4f,%.4f,%.4f", r->ratio.med,
					r->ratio.lo, r->ratio.hi);
			else
				fprintf(csv, ",,");
			fprintf(csv, ",%.4f,%s\n", r->target,
				r->target > 0 ? (met ? "yes" : "no") : "");
		}
	}
}

static int write_report(const bench *b)
{
	char path[4096];
	FILE *csv = NULL, *md = NULL;
	int rc = 0;

	report(b, stdout, NULL);
	if (!b->out_dir)
		return 0;
	snprintf(path, sizeof path, "%s/micro.csv", b->out_dir);
	csv = fopen(path, "w");
	snprintf(path, sizeof path, "%s/micro.md", b->out_dir);
	md = fopen(path, "w");
	if (!csv || !md) {
		fprintf(stderr, "ps-bench-micro: cannot write in %s\n",
			b->out_dir);
		rc = -1;
	} else {
		report(b, md, csv);
		printf("\nwritten: %s/micro.csv, %s/micro.md\n", b->out_dir,
		       b->out_dir);
	}
	if (csv && fclose(csv) != 0)
		rc = -1;
	if (md && fclose(md) != 0)
		rc = -1;
	return rc;
}

/* On the measuring rank, the processes whose CPU time counts: its own
 * and rank 0's, when both are on one machine (the same boot id and PID
 * namespace, so that rank 0's process ID names it here too). */
static void find_cpu_pids(bench *b)
{
	char host[PS_SHM_HOST_MAX] = "", peer[PS_SHM_HOST_MAX] = "";
	long pid = (long)getpid(), peer_pid = pid;

	if (ps_shm_host(host, sizeof host) != PS_OK)
		host[0] = '\0';
	memcpy(peer, host, sizeof peer);
	MPI_Bcast(peer, sizeof peer, MPI_CHAR, 0, MPI_COMM_WORLD);
	MPI_Bcast(&peer_pid, 1, MPI_LONG, 0, MPI_COMM_WORLD);
	b->ncpu = 0;
	if (b->rank != 1 || host[0] == '\0' || strcmp(host, peer) != 0)
		return;
	b->cpu_pid[b->ncpu++] = pid;
	b->cpu_pid[b->ncpu++] = peer_pid;
}

static double load_average(void)
{
	double l = 0.0;
	return getloadavg(&l, 1) == 1 ? l : 0.0;
}

int main(int argc, char **argv)
{
	static bench b;
	static apply_bench ap;
	ps_err e = {0, ""};
	int size = 0, rc, failed = 0;
	const ps_cli_opt opts[] = {
	    {"reps", PS_CLI_INT, &b.reps, "N",
	     "rounds over every case; the median is reported", 1, MAX_REPS,
	     NULL},
	    {"min-time", PS_CLI_DOUBLE, &b.min_time, "SECONDS",
	     "least duration of one repetition", 0.001, 60, NULL},
	    {"inflight", PS_CLI_INT, &b.inflight, "K",
	     "pushes in flight when streaming", 1, MAX_INFLIGHT, NULL},
	    {"mem-mb", PS_CLI_INT, &b.mem_mb, "MB",
	     "size of each of the 3 memory-bandwidth arrays", 1, 4096, NULL},
	    {"no-shm", PS_CLI_FLAG, &b.no_shm, NULL,
	     "leave out the rows of pserver over ZeroMQ with tensors of 16 KB "
	     "or more through shared memory (tcp+shm, ipc+shm: as ps-launch's "
	     "local runs, against the same raw ZeroMQ)", 0, 0, NULL},
	    {"transport", PS_CLI_CHOICE, &b.only, "NAME",
	     "measure one transport only, or all", 0, -1, only_names},
	    {"out", PS_CLI_STRING, &b.out_dir, "DIR",
	     "also write micro.csv and micro.md into DIR", 0, -1, NULL},
	    {NULL, 0, NULL, NULL, NULL, 0, 0, NULL},
	};

	b.reps = 5;
	b.min_time = 0.2;
	b.inflight = 4;
	b.mem_mb = 128;
	rc = ps_cli_parse(
	    "ps-bench-micro",
	    "pserver's micro-benchmarks: pull and push through its stack "
	    "against raw ZeroMQ\nand MPI, the server's update apply "
	    "against memory bandwidth. Run as 2 ranks:\nmpirun -np 2 "
	    "ps-bench-micro",
	    opts, argc, argv, &e);
	if (rc == PS_CLI_HELP)
		return 0;
	if (rc != PS_OK) {
		fprintf(stderr, "ps-bench-micro: %s\n", e.msg);
		return 2;
	}
	if (MPI_Init(&argc, &argv) != MPI_SUCCESS)
		return 1;
	MPI_Comm_rank(MPI_COMM_WORLD, &b.rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	if (size != 2) {
		if (b.rank == 0)
			fprintf(stderr, "ps-bench-micro: run as 2 ranks: "
					"mpirun -np 2 ps-bench-micro\n");
		MPI_Finalize();
		return 2;
	}
	ps_log_setup(b.rank == 0 ? "bench server" : "bench client",
		     PS_LOG_WARN);
	/* As ps-server and ps-worker: one BLAS thread, or SGD's saxpy would
	 * take the core the transport needs, and the allocator settings for
	 * large messages, which the raw baselines get too. */
	openblas_set_num_threads(1);
	ps_transport_setup_process();
	b.load[0] = load_average();
	find_cpu_pids(&b);

	/* Rounds of every case in turn, one repetition each (raw and ours
	 * for each transport, then the apply and memory cases, which rank 1
	 * measures alone), so that a change in the machine's load between
	 * the start and the end of the run touches every case alike. After
	 * each case both ranks agree on failure so that neither goes on
	 * alone. */
	/* A multiple of 16 floats: the streaming loops have no tail. */
	b.mem_floats = ((size_t)b.mem_mb << 20) / sizeof(float) & ~(size_t)15;
	failed = agree(&b, b.rank == 1 && apply_setup(&ap, b.mem_floats) != 0,
		       "setting up", "apply");
	for (b.round = 0; b.round < b.reps && !failed; b.round++) {
		for (int t = 0; t < NTRANSPORTS && !failed; t++) {
			if (b.only && t != b.only - 1)
				continue;
			/* Raw, ours and ours with shared memory, each
			 * round starting one further along: a drift in load
			 * favours none. */
			int ncases = is_zmq(t) && !b.no_shm ? 3 : 2;
			for (int k = 0; k < ncases && !failed; k++) {
				int which = (k + b.round) % ncases;
				if (which == 1)
					rc = ours_case(&b, t, 0);
				else if (which == 2)
					rc = ours_case(&b, t, 1);
				else if (t == T_MPI)
					rc = raw_mpi_case(&b);
				else
					rc = raw_zmq_case(&b, t);
				failed = agree(&b, rc != 0,
					       which == 0 ? "raw" : "ours",
					       which == 2 ? shm_names[t]
							  : transport_names[t]);
			}
		}
		if (failed)
			break;
		rc = b.rank == 1 ? apply_round(&b, &ap) : 0;
		quiet_barrier();
		failed = agree(&b, rc != 0, "apply", "in-process");
	}
	b.load[1] = load_average();
	for (int t = 0; t < NTRANSPORTS; t++)
		for (int op = 0; op < NOPS; op++)
			for (size_t j = 0; j < NSIZES; j++) {
				take_median(&b.ours[t][op][j], b.reps);
				take_median(&b.ours_shm[t][op][j], b.reps);
				take_median(&b.raw[t][op][j], b.reps);
			}
	for (int i = 0; i < NAPPLY; i++)
		take_median(&b.apply[i], b.reps);
	for (int k = 0; k < NMEM; k++)
		take_median(&b.mem[k], b.reps);
	rc = failed ? 1 : 0;
	if (!failed && b.rank == 1 && write_report(&b) != 0)
		rc = 1;
	apply_destroy(&ap);
	MPI_Finalize();
	return rc;
}
