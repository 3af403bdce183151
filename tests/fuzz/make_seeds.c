/*
 * make_seeds: writes the seed corpora of the fuzzing harnesses
 * (tests/fuzz/corpus/<harness>/) from pserver's own encoders: envelopes
 * from ps_wire_encode(), model files from ps_modelfile_write(), IDX files
 * plain and through zlib's gzip writer, and argv lines. Each seed is a
 * small valid input in its harness's layout (see tests/fuzz/fuzz_*.c).
 * Usage: ps-fuzz-seeds DIR   (`make fuzz-seeds` runs it on tests/fuzz/corpus)
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "ps_model.h"
#include "ps_modelfile.h"
#include "ps_wire.h"

/* A growable byte buffer: the seed being built. */
typedef struct buf {
	uint8_t b[16384];
	size_t len;
} buf;

static void put(buf *s, const void *p, size_t n)
{
	if (s->len + n > sizeof s->b) {
		fprintf(stderr, "make_seeds: seed too large\n");
		exit(1);
	}
	memcpy(s->b + s->len, p, n);
	s->len += n;
}

static void put8(buf *s, unsigned v)
{
	uint8_t b = (uint8_t)v;
	put(s, &b, 1);
}

static void put16(buf *s, size_t v)
{
	put8(s, v & 0xff);
	put8(s, v >> 8 & 0xff);
}

static void put32be(buf *s, uint32_t v)
{
	put8(s, v >> 24);
	put8(s, v >> 16 & 0xff);
	put8(s, v >> 8 & 0xff);
	put8(s, v & 0xff);
}

static const char *outdir;

static void mkdir_p(const char *path)
{
	if (mkdir(path, 0755) != 0 && errno != EEXIST) {
		fprintf(stderr, "make_seeds: %s: %s\n", path, strerror(errno));
		exit(1);
	}
}

static void save(const char *harness, const char *name, const buf *s)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", outdir, harness);
	mkdir_p(path);
	snprintf(path, sizeof path, "%s/%s/%s", outdir, harness, name);
	f = fopen(path, "wb");
	if (!f || fwrite(s->b, 1, s->len, f) != s->len || fclose(f) != 0) {
		fprintf(stderr, "make_seeds: %s: %s\n", path, strerror(errno));
		exit(1);
	}
}

/* --- envelopes ------------------------------------------------------------- */

static size_t encode(const ps_msg *m, uint8_t *out)
{
	size_t len = 0;

	if (ps_wire_encode(m, out, PS_WIRE_HEAD_MAX, &len) != PS_OK) {
		fprintf(stderr, "make_seeds: encode failed\n");
		exit(1);
	}
	return len;
}

static ps_model_spec spec_of(const char *name, uint32_t in, uint32_t out,
			     const char *hidden, const char *act,
			     uint64_t seed)
{
	ps_model_spec m;

	memset(&m, 0, sizeof m);
	snprintf(m.name, sizeof m.name, "%s", name);
	snprintf(m.hidden, sizeof m.hidden, "%s", hidden);
	snprintf(m.activation, sizeof m.activation, "%s", act);
	m.input_dim = in;
	m.output_dim = out;
	m.init_seed = seed;
	return m;
}

static ps_msg msg(enum ps_msg_kind kind, uint32_t worker_id)
{
	ps_msg m;

	ps_msg_init(&m, kind, 7, worker_id);
	return m;
}

static ps_msg hello(enum ps_role role, uint32_t rank, ps_model_spec spec)
{
	ps_msg m = msg(PS_MSG_HELLO, 0);

	m.u.hello.role = role;
	m.u.hello.rank = rank;
	m.u.hello.model = spec;
	return m;
}

static ps_msg pull(uint32_t id, uint64_t begin, uint64_t end, uint64_t clock)
{
	ps_msg m = msg(PS_MSG_PULL, id);

	m.u.pull.begin = begin;
	m.u.pull.end = end;
	m.u.pull.clock = clock;
	return m;
}

static ps_msg push(uint32_t id, uint64_t base, uint64_t begin, uint64_t end,
		   uint64_t clock)
{
	ps_msg m = msg(PS_MSG_PUSH, id);

	m.u.push.base_version = base;
	m.u.push.begin = begin;
	m.u.push.end = end;
	m.u.push.batch_size = 8;
	m.u.push.loss = 0.75f;
	m.u.push.clock = clock;
	m.u.push.seq = clock + 1;
	return m;
}

static ps_msg stop(uint32_t id, uint64_t begin, uint64_t end)
{
	ps_msg m = msg(PS_MSG_STOP, id);

	snprintf(m.u.stop.reason, sizeof m.u.stop.reason, "no improvement");
	m.u.stop.begin = begin;
	m.u.stop.end = end;
	return m;
}

/* count floats of a small gradient. */
static void floats(buf *s, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		float v = (float)((int)i - 3) * 0.125f;
		put(s, &v, sizeof v);
	}
}

/* fuzz_wire: u16 envelope length, envelope, tensor. */
static void wire_seed(const char *name, const ps_msg *m, size_t nfloats)
{
	uint8_t head[PS_WIRE_HEAD_MAX];
	size_t len = encode(m, head);
	buf s = { .len = 0 };

	put16(&s, len);
	put(&s, head, len);
	floats(&s, nfloats);
	save("wire", name, &s);
}

static void wire_seeds(void)
{
	ps_msg m;

	m = hello(PS_ROLE_WORKER, 1, spec_of("softmax", 784, 10, "", "", 1));
	wire_seed("hello-softmax", &m, 0);
	m = hello(PS_ROLE_EVALUATOR, 0,
		  spec_of("mlp", 784, 10, "256,128", "relu", 1));
	wire_seed("hello-mlp-eval", &m, 0);
	m = msg(PS_MSG_WELCOME, 1);
	m.u.welcome.worker_id = 1;
	m.u.welcome.num_params = 7850;
	m.u.welcome.end = 7850;
	m.u.welcome.num_workers = 2;
	m.u.welcome.num_shards = 1;
	wire_seed("welcome", &m, 0);
	m = pull(1, 0, 4, 3);
	wire_seed("pull", &m, 0);
	m = msg(PS_MSG_WEIGHTS, 1);
	m.u.weights.version = 12;
	m.u.weights.end = 4;
	m.u.weights.training_done = 1;
	m.u.weights.train_seconds = 1.5;
	wire_seed("weights", &m, 4);
	m = push(2, 3, 2, 6, 5);
	wire_seed("push", &m, 4);
	m = msg(PS_MSG_ACK, 2);
	m.u.ack.version = 4;
	m.u.ack.staleness = 1;
	m.u.ack.seq = 6;
	wire_seed("ack", &m, 0);
	m = msg(PS_MSG_ERROR, 0);
	m.u.error.code = PS_WIRE_ERR_BAD_LENGTH;
	snprintf(m.u.error.message, sizeof m.u.error.message,
		 "push of range [0, 4) needs 16 tensor bytes, got 12");
	wire_seed("error", &m, 0);
	m = msg(PS_MSG_BYE, 1);
	m.u.bye.samples = 6400;
	m.u.bye.steps = 100;
	wire_seed("bye", &m, 0);
	m = stop(0x10000, 0, 3);
	wire_seed("stop-weights", &m, 3);
	m = stop(0x10000, 0, 0);
	wire_seed("stop", &m, 0);
}

/* --- server sequences -------------------------------------------------------- */

/* One record of fuzz_server: peer byte, u16 lengths, envelope, tensor. */
static void record(buf *s, unsigned peer, const ps_msg *m, size_t nfloats)
{
	uint8_t head[PS_WIRE_HEAD_MAX];
	size_t len = encode(m, head);

	put8(s, peer);
	put16(s, len);
	put16(s, nfloats * 4);
	put(s, head, len);
	floats(s, nfloats);
}

/* Configuration bytes (fuzz_server.c configure()). */
#define C_ASYNC 0
#define C_BSP 1
#define C_SSP 2
#define C_STALE_LR 3
#define C_DC 4
#define C_TWO 8
#define C_SOFTMAX (0 << 4) /* 15 parameters */
#define C_MLP (1 << 4)     /* 26 */
#define C_LINEAR (2 << 4)  /* 4 */
#define C_LOGISTIC (3 << 4) /* 3 */
#define C_SGD (0 << 6)
#define C_NESTEROV (1 << 6)
#define C_ADAM (2 << 6)
#define C_ADAGRAD (3 << 6)
#define EVAL 0x10000u
#define ODD 4 /* tensor at an odd address */

static void server_seeds(void)
{
	buf s;
	ps_msg m;

	/* One trainer's life under async SGD: pull, push, pull, bye. */
	s.len = 0;
	put8(&s, C_ASYNC | C_SOFTMAX | C_SGD);
	m = pull(1, 0, 15, 0);
	record(&s, 0, &m, 0);
	m = push(1, 0, 0, 15, 0);
	record(&s, 0, &m, 15);
	m = push(1, 1, 3, 9, 1);
	record(&s, 0 | ODD, &m, 6);
	m = pull(1, 0, 15, 2);
	record(&s, 0, &m, 0);
	m = pull(EVAL, 0, 15, 0);
	record(&s, 2, &m, 0);
	m = msg(PS_MSG_BYE, 1);
	record(&s, 0, &m, 0);
	save("server", "async-softmax", &s);

	/* bsp with two trainers: both push clock 0, then pull clock 1. */
	s.len = 0;
	put8(&s, C_BSP | C_TWO | C_MLP | C_ADAM);
	m = push(1, 0, 0, 26, 0);
	record(&s, 0, &m, 26);
	m = pull(1, 0, 26, 1);
	record(&s, 0, &m, 0);
	m = push(2, 0, 0, 26, 0);
	record(&s, 1, &m, 26);
	m = pull(2, 0, 26, 1);
	record(&s, 1, &m, 0);
	m = msg(PS_MSG_BYE, 2);
	record(&s, 1, &m, 0);
	m = msg(PS_MSG_BYE, 1);
	record(&s, 0, &m, 0);
	save("server", "bsp-mlp-two", &s);

	/* ssp:1 with delay compensation: a trainer runs ahead and waits. */
	s.len = 0;
	put8(&s, C_SSP | C_DC | C_TWO | C_LINEAR | C_NESTEROV);
	m = pull(1, 0, 4, 0);
	record(&s, 0, &m, 0);
	m = push(1, 0, 0, 4, 0);
	record(&s, 0, &m, 4);
	m = push(1, 1, 0, 4, 1);
	record(&s, 0, &m, 4);
	m = pull(1, 0, 4, 2);
	record(&s, 0, &m, 0);
	m = push(2, 0, 0, 4, 0);
	record(&s, 1, &m, 4);
	save("server", "ssp-dc-linear", &s);

	/* An evaluator stops training with its best weights; a push after
	 * it is refused, a pull says stop. */
	s.len = 0;
	put8(&s, C_STALE_LR | C_LOGISTIC | C_ADAGRAD);
	m = push(1, 0, 0, 3, 0);
	record(&s, 0, &m, 3);
	m = stop(EVAL, 0, 3);
	m.u.stop.best_version = 1;
	record(&s, 2 | ODD, &m, 3);
	m = push(1, 1, 0, 3, 1);
	record(&s, 0, &m, 3);
	m = pull(1, 0, 3, 2);
	record(&s, 0, &m, 0);
	save("server", "stop-logistic", &s);

	/* A stranger: hello again as worker 0 from another peer, a hello
	 * with another model, a push before any hello. */
	s.len = 0;
	put8(&s, C_ASYNC | C_SOFTMAX | C_SGD);
	m = push(1, 0, 0, 15, 0);
	record(&s, 3, &m, 15);
	m = hello(PS_ROLE_WORKER, 0, spec_of("softmax", 4, 3, "", "", 1));
	record(&s, 3, &m, 0);
	m = hello(PS_ROLE_WORKER, 0, spec_of("mlp", 4, 3, "8,8", "tanh", 1));
	record(&s, 3, &m, 0);
	m = push(1, 0, 0, 15, 0);
	record(&s, 3, &m, 15);
	save("server", "stranger", &s);
}

/* --- IDX datasets -------------------------------------------------------------- */

/* n images of rows x cols pixels and their labels (classes 0..k-1). */
static void idx_pair(buf *im, buf *lb, uint32_t n, uint32_t rows,
		     uint32_t cols, uint32_t k)
{
	im->len = lb->len = 0;
	put32be(im, 0x00000803);
	put32be(im, n);
	put32be(im, rows);
	put32be(im, cols);
	for (uint32_t i = 0; i < n * rows * cols; i++)
		put8(im, (i * 37 + 11) & 0xff);
	put32be(lb, 0x00000801);
	put32be(lb, n);
	for (uint32_t i = 0; i < n; i++)
		put8(lb, i % k);
}

/* The gzip form of in, through zlib's own gzip writer. */
static void gzip_of(const buf *in, buf *out)
{
	char path[] = "/tmp/ps-fuzz-seed-XXXXXX";
	int fd = mkstemp(path);
	gzFile g;
	FILE *f;

	if (fd < 0 || !(g = gzdopen(fd, "wb9")) ||
	    gzwrite(g, in->b, (unsigned)in->len) != (int)in->len ||
	    gzclose(g) != Z_OK || !(f = fopen(path, "rb"))) {
		fprintf(stderr, "make_seeds: gzip failed\n");
		exit(1);
	}
	out->len = fread(out->b, 1, sizeof out->b, f);
	fclose(f);
	remove(path);
}

/* fuzz_dataset: flags, u16 image file length, image file, label file. */
static void dataset_seed(const char *name, unsigned flags, const buf *im,
			 const buf *lb)
{
	buf s = { .len = 0 };

	put8(&s, flags);
	put16(&s, im->len);
	put(&s, im->b, im->len);
	put(&s, lb->b, lb->len);
	save("dataset", name, &s);
}

static void dataset_seeds(void)
{
	static buf im, lb, gim, glb;

	idx_pair(&im, &lb, 3, 2, 2, 3);
	dataset_seed("plain-3x2x2", 0, &im, &lb);
	dataset_seed("plain-select-0-1", 1, &im, &lb);
	gzip_of(&im, &gim);
	gzip_of(&lb, &glb);
	dataset_seed("gz-3x2x2", 0, &gim, &glb);
	dataset_seed("gz-images-plain-labels", 2 << 1 | 0, &gim, &lb);
	idx_pair(&im, &lb, 10, 4, 4, 4);
	gzip_of(&im, &gim);
	gzip_of(&lb, &glb);
	dataset_seed("gz-10x4x4-select-1-2", 1 << 1 | 1, &gim, &glb);
}

/* --- model files ------------------------------------------------------------------ */

static void modelfile_seed(const char *name, ps_model_spec spec,
			   uint64_t version)
{
	char path[] = "/tmp/ps-fuzz-model-XXXXXX";
	ps_model *model = NULL;
	float w[64];
	ps_err e = {0};
	int fd = mkstemp(path);
	buf s = { .len = 0 };
	size_t n;
	FILE *f;

	if (fd < 0 || ps_model_new(&model, &spec, &e) != PS_OK) {
		fprintf(stderr, "make_seeds: %s\n", e.msg);
		exit(1);
	}
	close(fd);
	n = ps_model_num_params(model);
	if (n > 64) {
		fprintf(stderr, "make_seeds: model too large for a seed\n");
		exit(1);
	}
	ps_model_init(model, w);
	ps_model_destroy(&model);
	if (ps_modelfile_write(path, &spec, version, w, n, &e) != PS_OK ||
	    !(f = fopen(path, "rb"))) {
		fprintf(stderr, "make_seeds: %s\n", e.msg);
		exit(1);
	}
	s.len = fread(s.b, 1, sizeof s.b, f);
	fclose(f);
	remove(path);
	save("modelfile", name, &s);
}

static void modelfile_seeds(void)
{
	modelfile_seed("softmax-4x3", spec_of("softmax", 4, 3, "", "", 1), 10);
	modelfile_seed("mlp-3-4-2", spec_of("mlp", 3, 2, "4", "relu", 2), 3);
	modelfile_seed("mlp-2-3,2-2",
		       spec_of("mlp", 2, 2, "3,2", "tanh", 5), 0);
	modelfile_seed("linear-3", spec_of("linear", 3, 1, "", "", 1), 100);
	modelfile_seed("logistic-2", spec_of("logistic", 2, 1, "", "", 9), 1);
}

/* --- argv lines ----------------------------------------------------------------------- */

/* words separated by NULs, as fuzz_cli splits them. */
static void cli_seed(const char *name, const char *const *words)
{
	buf s = { .len = 0 };

	for (size_t i = 0; words[i]; i++) {
		if (i)
			put8(&s, 0);
		put(&s, words[i], strlen(words[i]));
	}
	save("cli", name, &s);
}

static void cli_seeds(void)
{
	static const char *const a[] = {"--listen", "tcp://127.0.0.1:*",
					"--workers", "2", "--lr", "0.5",
					"--optimizer", "adam", NULL};
	static const char *const b[] = {"--consistency", "ssp:3",
					"--staleness-lr", "--seed", "42",
					"--steps=1000", "--check", NULL};
	static const char *const c[] = {"--log-level", "debug", "--lr-gamma",
					"1e-3", "--momentum", "0.9",
					"--idle-timeout", "0", NULL};
	static const char *const d[] = {"--help", NULL};
	static const char *const e[] = {"--model-out", "model.bin",
					"--evaluators=1", "--consistency=bsp",
					"--", "extra", NULL};

	cli_seed("server", a);
	cli_seed("consistency-ssp", b);
	cli_seed("numbers", c);
	cli_seed("help", d);
	cli_seed("equals-and-positional", e);
}

/* fuzz_shm: a flag byte, then a descriptor as ps_shm_seg_lend() writes
 * it (the harness puts in its own segment's process, descriptor, inode
 * and use count as the flags say). */
static void shm_seed(const char *name, uint8_t flags, uint64_t len,
		     uint32_t keep)
{
	const uint32_t magic = 0x4d485350u, version = 1, zero = 0;
	const uint64_t zero64 = 0;
	buf s = {.len = 0};

	put(&s, &flags, 1);
	put(&s, &magic, 4);
	put(&s, &version, 4);
	put(&s, &zero64, 8); /* pid, fd */
	put(&s, &zero64, 8); /* inode */
	put(&s, &zero64, 8); /* use count */
	put(&s, &len, 8);
	put(&s, &keep, 4);
	put(&s, &zero, 4);
	save("shm", name, &s);
}

static void shm_seeds(void)
{
	shm_seed("lent", 7, 5000, 0);
	shm_seed("lent-kept-short", 7, 100, 1);
	shm_seed("over-bound", 15, 4096, 0);
	shm_seed("no-hold", 3, 64, 0);
	shm_seed("stale", 5, 64, 0);
	shm_seed("nobody", 0, 64, 0);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: ps-fuzz-seeds DIR\n");
		return 2;
	}
	outdir = argv[1];
	mkdir_p(outdir);
	wire_seeds();
	server_seeds();
	dataset_seeds();
	modelfile_seeds();
	cli_seeds();
	shm_seeds();
	return 0;
}
