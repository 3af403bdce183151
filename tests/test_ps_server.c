/*
 * Unit tests for ps_server: the message handlers driven directly through
 * ps_server_handle() with frames built by ps_wire_encode(), answering
 * through the fake transport (tests/fake_transport.c), whose recorded
 * replies are decoded and checked. Every refusal is checked for its
 * counter, its Error reply, untouched weights, and a server that carries
 * on serving.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_transport.h"
#include "ps_checkpoint.h"
#include "ps_log.h"
#include "ps_model.h"
#include "ps_server.h"
#include "ps_wire.h"

#define NUM_WORKERS 2
#define LR 0.5f
/* softmax, input 4, output 3: W[3][4] and b[3] */
#define NPARAMS 15

typedef struct fx {
	ps_transport *t;
	ps_server *s;
	ps_peer peer[3]; /* workers 0 and 1, and a stranger */
	size_t seen;     /* recorded sends already looked at */
	uint64_t next_req;
} fx;

static ps_peer make_peer(uint8_t k)
{
	/* Shaped like a ZeroMQ routing id: a zero byte and four more. */
	ps_peer p;

	memset(&p, 0, sizeof p);
	p.len = 5;
	p.id[1] = 'p';
	p.id[2] = 'e';
	p.id[3] = 'e';
	p.id[4] = (uint8_t)('0' + k);
	return p;
}

static ps_model_spec test_spec(void)
{
	ps_model_spec m;

	memset(&m, 0, sizeof m);
	strcpy(m.name, "softmax");
	m.input_dim = 4;
	m.output_dim = 3;
	m.init_seed = 1234;
	return m;
}

/* Async SGD at lr; then `consistency` ("async", "bsp", "ssp:S"; NULL is
 * async), the staleness-aware rate and DC-ASGD's lambda. */
static int new_server_with(ps_server **s, ps_transport *t,
			   uint32_t num_workers, double lr, double idle_timeout,
			   const char *consistency, int staleness_lr,
			   double dc_lambda)
{
	ps_server_config cfg;
	ps_err e = { 0, "" };

	memset(&cfg, 0, sizeof cfg);
	cfg.num_workers = num_workers;
	cfg.optim.kind = PS_OPTIM_SGD;
	cfg.optim.lr = lr;
	cfg.idle_timeout = idle_timeout;
	if (consistency)
		assert_int_equal(ps_consistency_parse(consistency,
						      &cfg.consistency,
						      &cfg.ssp_bound, &e),
				 PS_OK);
	cfg.staleness_lr = staleness_lr;
	cfg.dc_lambda = dc_lambda;
	return ps_server_new(s, &cfg, t, &e);
}

static int new_server(ps_server **s, ps_transport *t, uint32_t num_workers,
		      double lr, double idle_timeout)
{
	return new_server_with(s, t, num_workers, lr, idle_timeout, NULL, 0,
			       0);
}

static int setup(void **state)
{
	fx *f = test_calloc(1, sizeof *f);

	assert_non_null(f);
	assert_int_equal(fake_transport_new(&f->t), PS_OK);
	assert_int_equal(new_server(&f->s, f->t, NUM_WORKERS, LR, 0), PS_OK);
	assert_non_null(f->s);
	for (uint8_t k = 0; k < 3; k++)
		f->peer[k] = make_peer(k);
	f->next_req = 100;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fx *f = *state;

	ps_server_destroy(&f->s);
	ps_transport_destroy(&f->t);
	test_free(f);
	return 0;
}

/* --- building and feeding frames ---------------------------------------- */

static int feed_raw(fx *f, const ps_peer *from, const void *head, size_t hlen,
		    const void *tensor, size_t tlen)
{
	ps_frame fr;

	memset(&fr, 0, sizeof fr);
	if (from)
		fr.from = *from;
	fr.head = head;
	fr.head_len = hlen;
	fr.tensor = tensor;
	fr.tensor_len = tlen;
	return ps_server_handle(f->s, &fr);
}

static int feed(fx *f, const ps_peer *from, const ps_msg *m,
		const void *tensor, size_t tlen)
{
	uint8_t buf[PS_WIRE_HEAD_MAX];
	size_t len = 0;

	assert_int_equal(ps_wire_encode(m, buf, sizeof buf, &len), PS_OK);
	return feed_raw(f, from, buf, len, tensor, tlen);
}

static ps_msg mk(fx *f, enum ps_msg_kind kind, uint32_t worker_id)
{
	ps_msg m;

	ps_msg_init(&m, kind, f->next_req++, worker_id);
	return m;
}

static ps_msg mk_hello(fx *f, enum ps_role role, uint32_t rank,
		       const ps_model_spec *spec)
{
	ps_msg m = mk(f, PS_MSG_HELLO, 0);

	m.u.hello.role = role;
	m.u.hello.rank = rank;
	m.u.hello.model = *spec;
	return m;
}

static ps_msg mk_pull(fx *f, uint32_t worker_id, uint64_t begin, uint64_t end)
{
	ps_msg m = mk(f, PS_MSG_PULL, worker_id);

	m.u.pull.begin = begin;
	m.u.pull.end = end;
	return m;
}

static ps_msg mk_push(fx *f, uint32_t worker_id, uint64_t base,
		      uint64_t begin, uint64_t end, uint32_t batch)
{
	ps_msg m = mk(f, PS_MSG_PUSH, worker_id);

	m.u.push.base_version = base;
	m.u.push.begin = begin;
	m.u.push.end = end;
	m.u.push.batch_size = batch;
	m.u.push.loss = 1.5f;
	m.u.push.seq = m.request_id * 3; /* distinct from request_id */
	return m;
}

/* --- looking at what the server sent ------------------------------------- */

/* The oldest reply not looked at yet: to `to`, decoded into *out. More
 * may follow it (a push that releases a waiting pull is answered twice). */
static const fake_sent *take_next_reply(fx *f, const ps_peer *to, ps_msg *out)
{
	const fake_sent *r;

	assert_true(fake_transport_count(f->t) > f->seen);
	r = fake_transport_sent(f->t, f->seen);
	assert_int_equal(fake_transport_decode(f->t, f->seen, out), PS_OK);
	f->seen++;
	assert_true(r->has_peer);
	assert_true(ps_peer_equal(&r->to, to));
	return r;
}

/* The one reply sent since the last look: to `to`, decoded into *out. */
static const fake_sent *take_reply(fx *f, const ps_peer *to, ps_msg *out)
{
	const fake_sent *r;

	assert_int_equal(fake_transport_count(f->t), f->seen + 1);
	r = fake_transport_sent(f->t, f->seen);
	assert_int_equal(fake_transport_decode(f->t, f->seen, out), PS_OK);
	f->seen++;
	assert_true(r->has_peer);
	assert_true(ps_peer_equal(&r->to, to));
	return r;
}

static void assert_no_reply(fx *f)
{
	assert_int_equal(fake_transport_count(f->t), f->seen);
}

static void assert_floats_equal(const float *got, const float *want, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!(got[i] == want[i]))
			fail_msg("index %zu: got %.9g, want %.9g", i,
				 (double)got[i], (double)want[i]);
}

static const float *weights(fx *f)
{
	const float *w = NULL;
	const ps_model_spec *spec = NULL;
	uint64_t n = 0;

	assert_int_equal(ps_server_weights(f->s, &w, &n, &spec), PS_OK);
	assert_int_equal(n, NPARAMS);
	return w;
}

static ps_server_stats stats(fx *f)
{
	ps_server_stats st;

	ps_server_get_stats(f->s, &st);
	return st;
}

/* --- common steps -------------------------------------------------------- */

static void join(fx *f, uint32_t rank)
{
	ps_model_spec spec = test_spec();
	ps_msg m = mk_hello(f, PS_ROLE_WORKER, rank, &spec), r;

	assert_int_equal(feed(f, &f->peer[rank], &m, NULL, 0), PS_OK);
	take_reply(f, &f->peer[rank], &r);
	assert_int_equal(r.kind, PS_MSG_WELCOME);
	assert_int_equal(r.u.welcome.worker_id, rank + 1);
}

static void join_all(fx *f)
{
	for (uint32_t k = 0; k < NUM_WORKERS; k++)
		join(f, k);
}

/* Gradient k of a family of exactly representable values. */
static void gradient(float *g, size_t n, int k)
{
	for (size_t i = 0; i < n; i++)
		g[i] = (float)((int)i - 7 + 3 * k) * 0.25f;
}

/* A push from worker `rank` at the current version; checks the ack and
 * the update, w -= LR * g, exactly. Returns the push's seq. */
static uint64_t push_ok(fx *f, uint32_t rank, uint64_t base,
			uint64_t want_tau)
{
	float g[NPARAMS], want[NPARAMS];
	const float *w = weights(f);
	uint64_t v = stats(f).version;
	ps_msg m = mk_push(f, rank + 1, base, 0, NPARAMS, 8), r;

	gradient(g, NPARAMS, (int)v);
	for (size_t i = 0; i < NPARAMS; i++)
		want[i] = w[i] - LR * g[i];
	assert_int_equal(feed(f, &f->peer[rank], &m, g, sizeof g), PS_OK);
	take_reply(f, &f->peer[rank], &r);
	assert_int_equal(r.kind, PS_MSG_ACK);
	assert_int_equal(r.request_id, m.request_id);
	assert_int_equal(r.worker_id, rank + 1);
	assert_int_equal(r.u.ack.version, v + 1);
	assert_int_equal(r.u.ack.staleness, want_tau);
	assert_int_equal(r.u.ack.seq, m.u.push.seq);
	assert_int_equal(stats(f).version, v + 1);
	assert_floats_equal(weights(f), want, NPARAMS);
	return m.u.push.seq;
}

/* After a refusal the server must keep serving a good worker. */
static void assert_still_serving(fx *f)
{
	push_ok(f, 0, stats(f).version, 0);
}

static const struct {
	const char *name;
	size_t off;
} reject_fields[] = {
#define FIELD(x) { #x, offsetof(ps_server_rejects, x) }
	FIELD(malformed),      FIELD(version),   FIELD(unknown_worker),
	FIELD(bad_length),     FIELD(nonfinite), FIELD(model_mismatch),
	FIELD(bad_rank),       FIELD(send_failed),
#undef FIELD
};

static uint64_t reject_count(const ps_server_rejects *r, size_t off)
{
	uint64_t v;

	memcpy(&v, (const char *)r + off, sizeof v);
	return v;
}

#define REJ(x) offsetof(ps_server_rejects, x)

/* Feed a frame that must be refused with want_rc: counted once in the
 * rejects field at offset `field` and nowhere else, answered with an Error
 * of `code` echoing req_id to the sender (no answer to an anonymous one),
 * weights and version untouched. */
static void expect_rejected_raw(fx *f, const ps_peer *from, const void *head,
				size_t hlen, const void *tensor, size_t tlen,
				uint64_t req_id, int want_rc,
				enum ps_wire_errcode code, size_t field)
{
	ps_server_stats before = stats(f), after;
	float w0[NPARAMS];
	const float *w = NULL;
	const ps_model_spec *spec = NULL;
	uint64_t n = 0;
	int had_model = ps_server_weights(f->s, &w, &n, &spec) == PS_OK;
	int rc;

	if (had_model)
		memcpy(w0, w, sizeof w0);
	rc = feed_raw(f, from, head, hlen, tensor, tlen);
	if (rc != want_rc)
		fail_msg("handle returned %s, want %s", ps_errname(rc),
			 ps_errname(want_rc));
	after = stats(f);
	for (size_t i = 0; i < sizeof reject_fields / sizeof reject_fields[0];
	     i++) {
		uint64_t b = reject_count(&before.rejects, reject_fields[i].off);
		uint64_t a = reject_count(&after.rejects, reject_fields[i].off);
		uint64_t want = b + (reject_fields[i].off == field);
		if (a != want)
			fail_msg("rejects.%s: %llu, want %llu",
				 reject_fields[i].name, (unsigned long long)a,
				 (unsigned long long)want);
	}
	assert_int_equal(after.rejects_total, before.rejects_total + 1);
	assert_int_equal(after.version, before.version);
	assert_int_equal(after.samples, before.samples);
	if (had_model)
		assert_floats_equal(weights(f), w0, NPARAMS);
	if (from && from->len > 0) {
		ps_msg r;
		take_reply(f, from, &r);
		assert_int_equal(r.kind, PS_MSG_ERROR);
		assert_int_equal(r.u.error.code, code);
		assert_int_equal(r.request_id, req_id);
		assert_true(r.u.error.message[0] != '\0');
	} else {
		assert_no_reply(f);
	}
}

static void expect_rejected(fx *f, const ps_peer *from, const ps_msg *m,
			    const void *tensor, size_t tlen, int want_rc,
			    enum ps_wire_errcode code, size_t field)
{
	uint8_t buf[PS_WIRE_HEAD_MAX];
	size_t len = 0;

	assert_int_equal(ps_wire_encode(m, buf, sizeof buf, &len), PS_OK);
	expect_rejected_raw(f, from, buf, len, tensor, tlen, m->request_id,
			    want_rc, code, field);
}

/* --- hello --------------------------------------------------------------- */

static void test_server_hello_welcomes_worker(void **state)
{
	fx *f = *state;
	ps_model_spec spec = test_spec();
	ps_msg m = mk_hello(f, PS_ROLE_WORKER, 1, &spec), r;
	ps_model *model = NULL;
	ps_err e = { 0, "" };
	float w0[NPARAMS];
	const float *w = NULL;
	const ps_model_spec *got = NULL;
	uint64_t n = 0;

	/* No model before the first hello. */
	assert_int_equal(ps_server_weights(f->s, &w, &n, &got), PS_EINVAL);

	assert_int_equal(feed(f, &f->peer[1], &m, NULL, 0), PS_OK);
	take_reply(f, &f->peer[1], &r);
	assert_int_equal(r.kind, PS_MSG_WELCOME);
	assert_int_equal(r.request_id, m.request_id);
	assert_int_equal(r.worker_id, 2);
	assert_int_equal(r.u.welcome.worker_id, 2);
	assert_int_equal(r.u.welcome.num_params, NPARAMS);
	assert_int_equal(r.u.welcome.begin, 0);
	assert_int_equal(r.u.welcome.end, NPARAMS);
	assert_int_equal(r.u.welcome.version, 0);
	assert_int_equal(r.u.welcome.num_workers, NUM_WORKERS);
	assert_int_equal(r.u.welcome.shard, 0);
	assert_int_equal(r.u.welcome.num_shards, 1);

	/* The weights are exactly what ps_model_init gives for the spec. */
	assert_int_equal(ps_model_new(&model, &spec, &e), PS_OK);
	assert_int_equal(ps_model_num_params(model), NPARAMS);
	ps_model_init(model, w0);
	ps_model_destroy(&model);
	assert_int_equal(ps_server_weights(f->s, &w, &n, &got), PS_OK);
	assert_int_equal(n, NPARAMS);
	assert_memory_equal(w, w0, sizeof w0);
	assert_string_equal(got->name, "softmax");
	assert_int_equal(got->input_dim, 4);
	assert_int_equal(got->output_dim, 3);
	assert_int_equal(got->init_seed, 1234);

	/* The other rank gets its own id; the count of workers seen grows. */
	join(f, 0);
	assert_int_equal(stats(f).workers_seen, 2);
	assert_int_equal(stats(f).rejects_total, 0);
}

static void test_server_hello_again_keeps_state(void **state)
{
	fx *f = *state;
	ps_model_spec spec = test_spec();
	ps_msg m, r;

	join_all(f);
	push_ok(f, 0, 0, 0);
	/* Same worker, same peer: welcomed again at the current version. */
	m = mk_hello(f, PS_ROLE_WORKER, 0, &spec);
	assert_int_equal(feed(f, &f->peer[0], &m, NULL, 0), PS_OK);
	take_reply(f, &f->peer[0], &r);
	assert_int_equal(r.u.welcome.worker_id, 1);
	assert_int_equal(r.u.welcome.version, 1);
	assert_int_equal(stats(f).workers_seen, 2);
	assert_int_equal(stats(f).version, 1);
}

/* A worker that reconnects from a new peer takes over its rank; the old
 * peer is no longer that worker. */
static void test_server_hello_from_new_peer_takes_over(void **state)
{
	fx *f = *state;
	ps_model_spec spec = test_spec();
	ps_msg m, r;

	join_all(f);
	m = mk_hello(f, PS_ROLE_WORKER, 0, &spec);
	assert_int_equal(feed(f, &f->peer[2], &m, NULL, 0), PS_OK);
	take_reply(f, &f->peer[2], &r);
	assert_int_equal(r.u.welcome.worker_id, 1);
	assert_int_equal(stats(f).workers_seen, 2);

	m = mk_pull(f, 1, 0, NPARAMS);
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_EUNKNOWN_WORKER,
			PS_WIRE_ERR_UNKNOWN_WORKER, REJ(unknown_worker));
	m = mk_pull(f, 1, 0, NPARAMS);
	assert_int_equal(feed(f, &f->peer[2], &m, NULL, 0), PS_OK);
	take_reply(f, &f->peer[2], &r);
	assert_int_equal(r.kind, PS_MSG_WEIGHTS);
}

/* --- pull ---------------------------------------------------------------- */

static void test_server_pull_returns_weights(void **state)
{
	fx *f = *state;
	const fake_sent *rec;
	ps_msg m, r;

	join_all(f);
	m = mk_pull(f, 1, 0, NPARAMS);
	m.u.pull.clock = 7;
	assert_int_equal(feed(f, &f->peer[0], &m, NULL, 0), PS_OK);
	rec = take_reply(f, &f->peer[0], &r);
	assert_int_equal(r.kind, PS_MSG_WEIGHTS);
	assert_int_equal(r.request_id, m.request_id);
	assert_int_equal(r.worker_id, 1);
	assert_int_equal(r.u.weights.version, 0);
	assert_int_equal(r.u.weights.begin, 0);
	assert_int_equal(r.u.weights.end, NPARAMS);
	assert_int_equal(r.u.weights.training_done, 0);
	assert_int_equal(rec->tensor_len, NPARAMS * sizeof(float));
	assert_memory_equal(rec->tensor, weights(f), NPARAMS * sizeof(float));

	/* A part of the range: exactly those weights. */
	m = mk_pull(f, 2, 3, 7);
	assert_int_equal(feed(f, &f->peer[1], &m, NULL, 0), PS_OK);
	rec = take_reply(f, &f->peer[1], &r);
	assert_int_equal(r.u.weights.begin, 3);
	assert_int_equal(r.u.weights.end, 7);
	assert_int_equal(rec->tensor_len, 4 * sizeof(float));
	assert_memory_equal(rec->tensor, weights(f) + 3, 4 * sizeof(float));

	/* An empty range at the very end is still inside the model. */
	m = mk_pull(f, 2, NPARAMS, NPARAMS);
	assert_int_equal(feed(f, &f->peer[1], &m, NULL, 0), PS_OK);
	rec = take_reply(f, &f->peer[1], &r);
	assert_int_equal(r.kind, PS_MSG_WEIGHTS);
	assert_int_equal(rec->tensor_len, 0);

	assert_int_equal(stats(f).pulls, 3);
	assert_int_equal(stats(f).version, 0);
}

/* A pull of the whole model from worker `rank` claiming it holds the
 * reply at held_version plus its push held_seq (0: no claim); checks that
 * the reply is "unchanged" without a tensor, or the weights, as want_same
 * says. */
static void claim_pull(fx *f, uint32_t rank, uint64_t held_seq,
		       uint64_t held_version, int want_same)
{
	ps_msg m = mk_pull(f, rank + 1, 0, NPARAMS), r;
	const fake_sent *rec;

	m.u.pull.held_seq = held_seq;
	m.u.pull.held_version = held_version;
	assert_int_equal(feed(f, &f->peer[rank], &m, NULL, 0), PS_OK);
	rec = take_reply(f, &f->peer[rank], &r);
	assert_int_equal(r.kind, PS_MSG_WEIGHTS);
	assert_int_equal(r.u.weights.version, stats(f).version);
	assert_int_equal(r.u.weights.unchanged, want_same);
	if (want_same) {
		assert_int_equal(rec->tensor_len, 0);
	} else {
		assert_int_equal(rec->tensor_len, NPARAMS * sizeof(float));
		assert_memory_equal(rec->tensor, weights(f),
				    NPARAMS * sizeof(float));
	}
}

/* A trainer that says it holds its last reply plus its own newest push
 * gets "unchanged" (no tensor) exactly when that is the server's weights:
 * the one update since that reply was that push, as plain SGD at the rate
 * the reply announced. Another trainer's update in between, or a claim of
 * another push or of another reply, gets the weights. */
static void test_server_pull_claiming_held_weights(void **state)
{
	fx *f = *state;
	uint64_t seq, older;

	join_all(f);
	claim_pull(f, 0, 0, 0, 0);          /* version 0, no claim */
	seq = push_ok(f, 0, 0, 0);           /* version 1 */
	claim_pull(f, 0, seq, 0, 1);
	assert_int_equal(stats(f).pulls_unchanged, 1);
	seq = push_ok(f, 0, 1, 0);           /* version 2: its own again */
	claim_pull(f, 0, seq, 1, 1);
	/* The other trainer's push lands between: version 4 is not
	 * "reply 2 plus my push". */
	seq = push_ok(f, 0, 2, 0);
	push_ok(f, 1, 2, 1);
	claim_pull(f, 0, seq, 2, 0);
	/* A claim of an older push, or of an older reply. */
	older = seq;
	push_ok(f, 0, 4, 0);                 /* version 5 */
	claim_pull(f, 0, older, 4, 0);
	seq = push_ok(f, 0, 5, 0);           /* version 6 */
	claim_pull(f, 0, seq, 4, 0);
	/* The other trainer's push is not this one's. */
	seq = push_ok(f, 1, 6, 0);           /* version 7, by trainer 1 */
	claim_pull(f, 0, seq, 6, 0);
	assert_int_equal(stats(f).pulls_unchanged, 2);
}

/* --- push ---------------------------------------------------------------- */

static void test_server_push_applies_sgd_and_measures_staleness(void **state)
{
	fx *f = *state;
	float g[NPARAMS], want[NPARAMS];
	const fake_sent *rec;
	ps_server_stats st;
	ps_msg m, r;

	join_all(f);
	/* w1 = w0 - 0.5 * g exactly, by hand against the weights pulled. */
	memcpy(want, weights(f), sizeof want);
	gradient(g, NPARAMS, 0);
	for (size_t i = 0; i < NPARAMS; i++)
		want[i] = want[i] - 0.5f * g[i];
	m = mk_push(f, 1, 0, 0, NPARAMS, 8);
	assert_int_equal(feed(f, &f->peer[0], &m, g, sizeof g), PS_OK);
	take_reply(f, &f->peer[0], &r);
	assert_int_equal(r.kind, PS_MSG_ACK);
	assert_int_equal(r.request_id, m.request_id);
	assert_int_equal(r.u.ack.version, 1);
	assert_int_equal(r.u.ack.staleness, 0);
	assert_int_equal(r.u.ack.seq, m.u.push.seq);
	assert_floats_equal(weights(f), want, NPARAMS);

	/* A pull now sees version 1 and the updated weights. */
	m = mk_pull(f, 2, 0, NPARAMS);
	assert_int_equal(feed(f, &f->peer[1], &m, NULL, 0), PS_OK);
	rec = take_reply(f, &f->peer[1], &r);
	assert_int_equal(r.u.weights.version, 1);
	assert_memory_equal(rec->tensor, want, sizeof want);

	/* Worker 1 computed on version 0; one update happened since. */
	push_ok(f, 1, 0, 1);
	/* Worker 0 again on version 0: two updates since. */
	push_ok(f, 0, 0, 2);
	/* Worker 1 up to date. */
	push_ok(f, 1, 3, 0);

	st = stats(f);
	assert_int_equal(st.version, 4);
	assert_int_equal(st.samples, 4 * 8);
	assert_true(st.staleness_sum == 3.0);
	assert_int_equal(st.staleness_max, 2);
	assert_int_equal(st.staleness_hist[0], 2);
	assert_int_equal(st.staleness_hist[1], 1);
	assert_int_equal(st.staleness_hist[2], 1);
	for (int b = 3; b < 8; b++)
		assert_int_equal(st.staleness_hist[b], 0);
	assert_int_equal(st.rejects_total, 0);
}

static void test_server_staleness_histogram_buckets(void **state)
{
	fx *f = *state;
	static const uint64_t taus[] = { 1,  2,  3,  4,  7,  8,  15,
					 16, 31, 32, 63, 64, 65, 100 };
	static const uint64_t want[8] = { 100, 1, 2, 2, 2, 2, 2, 3 };
	ps_server_stats st;

	join(f, 0);
	for (int i = 0; i < 100; i++)
		push_ok(f, 0, (uint64_t)i, 0);
	for (size_t i = 0; i < sizeof taus / sizeof taus[0]; i++)
		push_ok(f, 0, stats(f).version - taus[i], taus[i]);
	st = stats(f);
	for (int b = 0; b < 8; b++)
		if (st.staleness_hist[b] != want[b])
			fail_msg("bucket %d: %llu, want %llu", b,
				 (unsigned long long)st.staleness_hist[b],
				 (unsigned long long)want[b]);
	assert_int_equal(st.staleness_max, 100);
}

static void test_server_push_to_a_subrange(void **state)
{
	fx *f = *state;
	float g[5] = { 1, 2, 3, 4, 5 }, want[NPARAMS];
	ps_msg m, r;

	join(f, 0);
	memcpy(want, weights(f), sizeof want);
	for (size_t i = 0; i < 5; i++)
		want[5 + i] -= 0.5f * g[i];
	m = mk_push(f, 1, 0, 5, 10, 4);
	assert_int_equal(feed(f, &f->peer[0], &m, g, sizeof g), PS_OK);
	take_reply(f, &f->peer[0], &r);
	assert_int_equal(r.u.ack.version, 1);
	assert_floats_equal(weights(f), want, NPARAMS);
}

/* The transport hands over its receive buffer: the gradient may sit at
 * any address. */
static void test_server_push_misaligned_gradient(void **state)
{
	fx *f = *state;
	_Alignas(float) uint8_t raw[NPARAMS * sizeof(float) + 1];
	float g[NPARAMS], want[NPARAMS];
	ps_msg m, r;

	join(f, 0);
	gradient(g, NPARAMS, 5);
	memcpy(raw + 1, g, sizeof g);
	memcpy(want, weights(f), sizeof want);
	for (size_t i = 0; i < NPARAMS; i++)
		want[i] -= 0.5f * g[i];
	m = mk_push(f, 1, 0, 0, NPARAMS, 4);
	assert_int_equal(feed(f, &f->peer[0], &m, raw + 1, sizeof g), PS_OK);
	take_reply(f, &f->peer[0], &r);
	assert_int_equal(r.kind, PS_MSG_ACK);
	assert_floats_equal(weights(f), want, NPARAMS);
}

/* --- refusals ------------------------------------------------------------ */

static void test_server_rejects_garbage_bytes(void **state)
{
	fx *f = *state;
	static const uint8_t garbage[] = { 0xff, 0xff, 0xff, 0xff, 0x0f,
					   0x12, 0x34 };
	static uint8_t huge[PS_WIRE_HEAD_MAX + 1];

	join(f, 0);
	expect_rejected_raw(f, &f->peer[2], garbage, sizeof garbage, NULL, 0,
			    0, PS_EPROTO, PS_WIRE_ERR_MALFORMED,
			    REJ(malformed));
	expect_rejected_raw(f, &f->peer[0], garbage, sizeof garbage, NULL, 0,
			    0, PS_EPROTO, PS_WIRE_ERR_MALFORMED,
			    REJ(malformed));
	expect_rejected_raw(f, &f->peer[0], huge, sizeof huge, NULL, 0, 0,
			    PS_EPROTO, PS_WIRE_ERR_MALFORMED, REJ(malformed));
	assert_still_serving(f);
}

static void test_server_rejects_wrong_protocol_version(void **state)
{
	fx *f = *state;
	ps_msg m;

	join(f, 0);
	m = mk_pull(f, 1, 0, NPARAMS);
	m.protocol = PS_PROTOCOL_VERSION + 1;
	m.request_id = 99;
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_EVERSION,
			PS_WIRE_ERR_VERSION, REJ(version));
	m.protocol = 0;
	m.request_id = 98;
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_EVERSION,
			PS_WIRE_ERR_VERSION, REJ(version));
	assert_still_serving(f);
}

static void test_server_rejects_push_of_wrong_length(void **state)
{
	fx *f = *state;
	float g[NPARAMS + 1];
	ps_model_spec spec = test_spec();
	ps_msg m;

	join(f, 0);
	gradient(g, NPARAMS + 1, 0);
	m = mk_push(f, 1, 0, 0, NPARAMS, 8);
	expect_rejected(f, &f->peer[0], &m, g, (NPARAMS - 1) * sizeof(float),
			PS_EPROTO, PS_WIRE_ERR_BAD_LENGTH, REJ(bad_length));
	m = mk_push(f, 1, 0, 0, NPARAMS, 8);
	expect_rejected(f, &f->peer[0], &m, g, sizeof g, PS_EPROTO,
			PS_WIRE_ERR_BAD_LENGTH, REJ(bad_length));
	m = mk_push(f, 1, 0, 0, NPARAMS, 8);
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_EPROTO,
			PS_WIRE_ERR_BAD_LENGTH, REJ(bad_length));
	m = mk_push(f, 1, 0, 0, NPARAMS, 8);
	expect_rejected(f, &f->peer[0], &m, g, NPARAMS * sizeof(float) - 1,
			PS_EPROTO, PS_WIRE_ERR_BAD_LENGTH, REJ(bad_length));
	/* Messages without a tensor must not carry one. */
	m = mk_pull(f, 1, 0, NPARAMS);
	expect_rejected(f, &f->peer[0], &m, g, sizeof(float), PS_EPROTO,
			PS_WIRE_ERR_BAD_LENGTH, REJ(bad_length));
	m = mk_hello(f, PS_ROLE_WORKER, 1, &spec);
	expect_rejected(f, &f->peer[1], &m, g, sizeof(float), PS_EPROTO,
			PS_WIRE_ERR_BAD_LENGTH, REJ(bad_length));
	assert_int_equal(stats(f).workers_seen, 1);
	assert_still_serving(f);
}

static void test_server_rejects_nonfinite_push(void **state)
{
	fx *f = *state;
	const float bad[] = { NAN, -NAN, INFINITY, -INFINITY };
	const size_t where[] = { 3, 0, 14, 7 };
	float g[NPARAMS];
	ps_msg m;

	join(f, 0);
	for (size_t k = 0; k < 4; k++) {
		gradient(g, NPARAMS, 1);
		g[where[k]] = bad[k];
		m = mk_push(f, 1, 0, 0, NPARAMS, 8);
		expect_rejected(f, &f->peer[0], &m, g, sizeof g, PS_ENONFINITE,
				PS_WIRE_ERR_NONFINITE, REJ(nonfinite));
	}
	/* In a part of the range too. */
	gradient(g, 5, 1);
	g[4] = NAN;
	m = mk_push(f, 1, 0, 10, 15, 8);
	expect_rejected(f, &f->peer[0], &m, g, 5 * sizeof(float),
			PS_ENONFINITE, PS_WIRE_ERR_NONFINITE, REJ(nonfinite));
	assert_still_serving(f);
}

static void test_server_rejects_unknown_worker(void **state)
{
	fx *f = *state;
	float g[NPARAMS];
	ps_msg m;

	gradient(g, NPARAMS, 0);
	/* Before any hello. */
	m = mk_pull(f, 1, 0, NPARAMS);
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_EUNKNOWN_WORKER,
			PS_WIRE_ERR_UNKNOWN_WORKER, REJ(unknown_worker));
	m = mk_push(f, 1, 0, 0, NPARAMS, 8);
	expect_rejected(f, &f->peer[0], &m, g, sizeof g, PS_EUNKNOWN_WORKER,
			PS_WIRE_ERR_UNKNOWN_WORKER, REJ(unknown_worker));
	m = mk(f, PS_MSG_BYE, 1);
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_EUNKNOWN_WORKER,
			PS_WIRE_ERR_UNKNOWN_WORKER, REJ(unknown_worker));

	join_all(f);
	/* Another peer's id. */
	m = mk_pull(f, 1, 0, NPARAMS);
	expect_rejected(f, &f->peer[1], &m, NULL, 0, PS_EUNKNOWN_WORKER,
			PS_WIRE_ERR_UNKNOWN_WORKER, REJ(unknown_worker));
	m = mk_push(f, 1, 0, 0, NPARAMS, 8);
	expect_rejected(f, &f->peer[1], &m, g, sizeof g, PS_EUNKNOWN_WORKER,
			PS_WIRE_ERR_UNKNOWN_WORKER, REJ(unknown_worker));
	m = mk_push(f, 2, 0, 0, NPARAMS, 8);
	expect_rejected(f, &f->peer[2], &m, g, sizeof g, PS_EUNKNOWN_WORKER,
			PS_WIRE_ERR_UNKNOWN_WORKER, REJ(unknown_worker));
	m = mk(f, PS_MSG_BYE, 2);
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_EUNKNOWN_WORKER,
			PS_WIRE_ERR_UNKNOWN_WORKER, REJ(unknown_worker));
	/* Ids nobody was given. */
	m = mk_pull(f, 0, 0, NPARAMS);
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_EUNKNOWN_WORKER,
			PS_WIRE_ERR_UNKNOWN_WORKER, REJ(unknown_worker));
	m = mk_pull(f, NUM_WORKERS + 1, 0, NPARAMS);
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_EUNKNOWN_WORKER,
			PS_WIRE_ERR_UNKNOWN_WORKER, REJ(unknown_worker));
	m = mk_pull(f, 0x10000, 0, NPARAMS);
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_EUNKNOWN_WORKER,
			PS_WIRE_ERR_UNKNOWN_WORKER, REJ(unknown_worker));
	m = mk_pull(f, UINT32_MAX, 0, NPARAMS);
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_EUNKNOWN_WORKER,
			PS_WIRE_ERR_UNKNOWN_WORKER, REJ(unknown_worker));
	assert_int_equal(stats(f).workers_done, 0);
	assert_still_serving(f);
}

static void test_server_rejects_bad_rank(void **state)
{
	fx *f = *state;
	ps_model_spec spec = test_spec();
	ps_msg m;

	join(f, 0);
	m = mk_hello(f, PS_ROLE_WORKER, NUM_WORKERS, &spec);
	expect_rejected(f, &f->peer[2], &m, NULL, 0, PS_ERANGE,
			PS_WIRE_ERR_BAD_RANK, REJ(bad_rank));
	m = mk_hello(f, PS_ROLE_WORKER, UINT32_MAX, &spec);
	expect_rejected(f, &f->peer[2], &m, NULL, 0, PS_ERANGE,
			PS_WIRE_ERR_BAD_RANK, REJ(bad_rank));
	assert_int_equal(stats(f).workers_seen, 1);
	/* The refused peer did not become anyone. */
	m = mk_pull(f, NUM_WORKERS + 1, 0, NPARAMS);
	expect_rejected(f, &f->peer[2], &m, NULL, 0, PS_EUNKNOWN_WORKER,
			PS_WIRE_ERR_UNKNOWN_WORKER, REJ(unknown_worker));
	assert_still_serving(f);
}

/* Regression: a hello refused for its rank used to size the model when it
 * came first, so the correct workers that followed were refused with
 * model_mismatch. A refused hello leaves no state behind. */
static void test_server_bad_rank_hello_does_not_fix_the_model(void **state)
{
	fx *f = *state;
	ps_model_spec other = test_spec();
	const float *w = NULL;
	const ps_model_spec *spec = NULL;
	uint64_t n = 0;
	ps_msg m;

	strcpy(other.name, "linear");
	other.output_dim = 1;
	m = mk_hello(f, PS_ROLE_WORKER, NUM_WORKERS, &other);
	expect_rejected(f, &f->peer[2], &m, NULL, 0, PS_ERANGE,
			PS_WIRE_ERR_BAD_RANK, REJ(bad_rank));
	assert_int_equal(ps_server_weights(f->s, &w, &n, &spec), PS_EINVAL);
	join(f, 0);
	assert_int_equal(ps_server_weights(f->s, &w, &n, &spec), PS_OK);
	assert_string_equal(spec->name, "softmax");
	assert_still_serving(f);
}

static void test_server_rejects_model_mismatch(void **state)
{
	fx *f = *state;
	ps_model_spec good = test_spec(), bad;
	ps_msg m;

	join(f, 0);
	bad = good;
	bad.output_dim = 4;
	m = mk_hello(f, PS_ROLE_WORKER, 1, &bad);
	expect_rejected(f, &f->peer[1], &m, NULL, 0, PS_EINVAL,
			PS_WIRE_ERR_MODEL_MISMATCH, REJ(model_mismatch));
	bad = good;
	bad.input_dim = 5;
	m = mk_hello(f, PS_ROLE_WORKER, 1, &bad);
	expect_rejected(f, &f->peer[1], &m, NULL, 0, PS_EINVAL,
			PS_WIRE_ERR_MODEL_MISMATCH, REJ(model_mismatch));
	bad = good;
	bad.init_seed = 1235;
	m = mk_hello(f, PS_ROLE_WORKER, 1, &bad);
	expect_rejected(f, &f->peer[1], &m, NULL, 0, PS_EINVAL,
			PS_WIRE_ERR_MODEL_MISMATCH, REJ(model_mismatch));
	bad = good;
	strcpy(bad.name, "linear");
	bad.output_dim = 1;
	m = mk_hello(f, PS_ROLE_WORKER, 1, &bad);
	expect_rejected(f, &f->peer[1], &m, NULL, 0, PS_EINVAL,
			PS_WIRE_ERR_MODEL_MISMATCH, REJ(model_mismatch));
	bad = good;
	strcpy(bad.hidden, "8");
	m = mk_hello(f, PS_ROLE_WORKER, 1, &bad);
	expect_rejected(f, &f->peer[1], &m, NULL, 0, PS_EINVAL,
			PS_WIRE_ERR_MODEL_MISMATCH, REJ(model_mismatch));
	/* Evaluators must agree too. */
	m = mk_hello(f, PS_ROLE_EVALUATOR, 0, &bad);
	expect_rejected(f, &f->peer[2], &m, NULL, 0, PS_EINVAL,
			PS_WIRE_ERR_MODEL_MISMATCH, REJ(model_mismatch));
	/* Nobody was registered by the refused hellos. */
	assert_int_equal(stats(f).workers_seen, 1);
	m = mk_pull(f, 2, 0, NPARAMS);
	expect_rejected(f, &f->peer[1], &m, NULL, 0, PS_EUNKNOWN_WORKER,
			PS_WIRE_ERR_UNKNOWN_WORKER, REJ(unknown_worker));
	assert_still_serving(f);
}

static void test_server_rejects_invalid_model_spec(void **state)
{
	fx *f = *state;
	ps_model_spec bad = test_spec();
	const float *w = NULL;
	const ps_model_spec *spec = NULL;
	uint64_t n = 0;
	ps_msg m;

	strcpy(bad.name, "bogus");
	m = mk_hello(f, PS_ROLE_WORKER, 0, &bad);
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_EINVAL,
			PS_WIRE_ERR_MALFORMED, REJ(malformed));
	bad = test_spec();
	bad.input_dim = 0;
	m = mk_hello(f, PS_ROLE_WORKER, 0, &bad);
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_EINVAL,
			PS_WIRE_ERR_MALFORMED, REJ(malformed));
	bad = test_spec();
	bad.output_dim = 1; /* softmax needs two classes */
	m = mk_hello(f, PS_ROLE_WORKER, 0, &bad);
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_EINVAL,
			PS_WIRE_ERR_MALFORMED, REJ(malformed));
	/* No model was made from them; a good hello still sets one up. */
	assert_int_equal(ps_server_weights(f->s, &w, &n, &spec), PS_EINVAL);
	assert_int_equal(stats(f).workers_seen, 0);
	join(f, 0);
	assert_still_serving(f);
}

static void test_server_rejects_push_ahead_of_version(void **state)
{
	fx *f = *state;
	float g[NPARAMS];
	ps_msg m;

	join(f, 0);
	gradient(g, NPARAMS, 0);
	m = mk_push(f, 1, 1, 0, NPARAMS, 8);
	expect_rejected(f, &f->peer[0], &m, g, sizeof g, PS_EPROTO,
			PS_WIRE_ERR_MALFORMED, REJ(malformed));
	push_ok(f, 0, 0, 0);
	m = mk_push(f, 1, UINT64_MAX, 0, NPARAMS, 8);
	expect_rejected(f, &f->peer[0], &m, g, sizeof g, PS_EPROTO,
			PS_WIRE_ERR_MALFORMED, REJ(malformed));
	assert_still_serving(f);
}

/* Pushes that are well formed but come from the wrong party or say
 * nothing: an evaluator's, one after the worker's bye, an empty range. */
static void test_server_rejects_pushes_that_must_not_apply(void **state)
{
	fx *f = *state;
	ps_model_spec spec = test_spec();
	float g[NPARAMS];
	uint32_t eval_id;
	ps_msg m, r;

	join_all(f);
	gradient(g, NPARAMS, 0);
	m = mk_hello(f, PS_ROLE_EVALUATOR, 0, &spec);
	assert_int_equal(feed(f, &f->peer[2], &m, NULL, 0), PS_OK);
	take_reply(f, &f->peer[2], &r);
	eval_id = r.u.welcome.worker_id;
	m = mk_push(f, eval_id, 0, 0, NPARAMS, 8);
	expect_rejected(f, &f->peer[2], &m, g, sizeof g, PS_EPROTO,
			PS_WIRE_ERR_MALFORMED, REJ(malformed));

	m = mk_push(f, 1, 0, 3, 3, 8);
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_EPROTO,
			PS_WIRE_ERR_MALFORMED, REJ(malformed));

	m = mk(f, PS_MSG_BYE, 2);
	assert_int_equal(feed(f, &f->peer[1], &m, NULL, 0), PS_OK);
	take_reply(f, &f->peer[1], &r);
	m = mk_push(f, 2, 0, 0, NPARAMS, 8);
	expect_rejected(f, &f->peer[1], &m, g, sizeof g, PS_EPROTO,
			PS_WIRE_ERR_MALFORMED, REJ(malformed));
	assert_still_serving(f);
}

static void test_server_rejects_range_beyond_model(void **state)
{
	fx *f = *state;
	float g[NPARAMS];
	ps_msg m;

	join(f, 0);
	gradient(g, NPARAMS, 0);
	m = mk_pull(f, 1, 0, NPARAMS + 1);
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_ERANGE,
			PS_WIRE_ERR_MALFORMED, REJ(malformed));
	m = mk_pull(f, 1, NPARAMS, NPARAMS + 1);
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_ERANGE,
			PS_WIRE_ERR_MALFORMED, REJ(malformed));
	m = mk_pull(f, 1, UINT64_MAX - 1, UINT64_MAX);
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_ERANGE,
			PS_WIRE_ERR_MALFORMED, REJ(malformed));
	/* begin > end never gets past decoding. */
	m = mk_pull(f, 1, 7, 3);
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_EPROTO,
			PS_WIRE_ERR_MALFORMED, REJ(malformed));
	m = mk_push(f, 1, 0, 10, 10 + NPARAMS, 8);
	expect_rejected(f, &f->peer[0], &m, g, sizeof g, PS_ERANGE,
			PS_WIRE_ERR_MALFORMED, REJ(malformed));
	assert_int_equal(stats(f).pulls, 0);
	assert_still_serving(f);
}

/* Weights, ack, welcome and error go from a server, never to one. */
static void test_server_rejects_messages_only_servers_send(void **state)
{
	fx *f = *state;
	float w[NPARAMS];
	ps_msg m;

	join(f, 0);
	memcpy(w, weights(f), sizeof w);
	m = mk(f, PS_MSG_WEIGHTS, 1);
	m.u.weights.end = NPARAMS;
	expect_rejected(f, &f->peer[0], &m, w, sizeof w, PS_EPROTO,
			PS_WIRE_ERR_MALFORMED, REJ(malformed));
	m = mk(f, PS_MSG_ACK, 1);
	m.u.ack.version = 5;
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_EPROTO,
			PS_WIRE_ERR_MALFORMED, REJ(malformed));
	m = mk(f, PS_MSG_WELCOME, 1);
	m.u.welcome.num_params = NPARAMS;
	m.u.welcome.end = NPARAMS;
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_EPROTO,
			PS_WIRE_ERR_MALFORMED, REJ(malformed));
	m = mk(f, PS_MSG_ERROR, 1);
	m.u.error.code = PS_WIRE_ERR_MALFORMED;
	strcpy(m.u.error.message, "loop?");
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_EPROTO,
			PS_WIRE_ERR_MALFORMED, REJ(malformed));
	assert_still_serving(f);
}

static void test_server_count_malformed_answers_sender(void **state)
{
	fx *f = *state;
	ps_server_stats st;
	ps_frame fr;
	ps_msg r;

	join(f, 0);
	memset(&fr, 0, sizeof fr);
	fr.from = f->peer[2];
	ps_server_count_malformed(f->s, &fr);
	take_reply(f, &f->peer[2], &r);
	assert_int_equal(r.kind, PS_MSG_ERROR);
	assert_int_equal(r.u.error.code, PS_WIRE_ERR_MALFORMED);
	memset(&fr, 0, sizeof fr);
	ps_server_count_malformed(f->s, &fr);
	assert_no_reply(f);
	st = stats(f);
	assert_int_equal(st.rejects.malformed, 2);
	assert_int_equal(st.rejects_total, 2);
	assert_still_serving(f);
}

/* --- evaluators ---------------------------------------------------------- */

static void test_server_evaluator_pulls_and_is_not_a_worker(void **state)
{
	fx *f = *state;
	ps_model_spec spec = test_spec();
	const fake_sent *rec;
	uint32_t id;
	ps_msg m, r;

	join_all(f);
	m = mk_hello(f, PS_ROLE_EVALUATOR, 0, &spec);
	assert_int_equal(feed(f, &f->peer[2], &m, NULL, 0), PS_OK);
	take_reply(f, &f->peer[2], &r);
	assert_int_equal(r.kind, PS_MSG_WELCOME);
	id = r.u.welcome.worker_id;
	assert_true(id != 0 && id > NUM_WORKERS);
	assert_int_equal(r.u.welcome.num_params, NPARAMS);
	assert_int_equal(stats(f).workers_seen, NUM_WORKERS);

	m = mk_pull(f, id, 0, NPARAMS);
	assert_int_equal(feed(f, &f->peer[2], &m, NULL, 0), PS_OK);
	rec = take_reply(f, &f->peer[2], &r);
	assert_int_equal(r.kind, PS_MSG_WEIGHTS);
	assert_memory_equal(rec->tensor, weights(f), NPARAMS * sizeof(float));

	/* Its bye does not count towards the end of training. */
	m = mk(f, PS_MSG_BYE, id);
	assert_int_equal(feed(f, &f->peer[2], &m, NULL, 0), PS_OK);
	take_reply(f, &f->peer[2], &r);
	assert_int_equal(r.kind, PS_MSG_BYE);
	assert_int_equal(stats(f).workers_done, 0);
	assert_false(ps_server_training_done(f->s));
}

static void test_server_rejects_evaluators_beyond_capacity(void **state)
{
	fx *f = *state;
	ps_model_spec spec = test_spec();
	ps_peer p;
	ps_msg m, r;
	uint8_t k;

	join(f, 0);
	for (k = 0; k < 200; k++) {
		p = make_peer(0);
		p.id[0] = 'e';
		p.id[4] = k;
		m = mk_hello(f, PS_ROLE_EVALUATOR, 0, &spec);
		if (feed(f, &p, &m, NULL, 0) != PS_OK)
			break;
		take_reply(f, &p, &r);
		assert_int_equal(r.kind, PS_MSG_WELCOME);
	}
	assert_true(k > 0 && k < 200);
	/* The refused one was answered and counted like any bad rank. */
	take_reply(f, &p, &r);
	assert_int_equal(r.kind, PS_MSG_ERROR);
	assert_int_equal(r.u.error.code, PS_WIRE_ERR_BAD_RANK);
	assert_int_equal(stats(f).rejects.bad_rank, 1);
	/* An evaluator already known may say hello again. */
	p.id[4] = 0;
	m = mk_hello(f, PS_ROLE_EVALUATOR, 0, &spec);
	assert_int_equal(feed(f, &p, &m, NULL, 0), PS_OK);
	take_reply(f, &p, &r);
	assert_int_equal(r.kind, PS_MSG_WELCOME);
	assert_still_serving(f);
}

static void use_server_cfg(fx *f, ps_server_config *cfg);

/* Evaluators that go silent are dropped after worker_timeout and their
 * slots taken again: peers that connect and say nothing more cannot keep
 * the real evaluator out for good. */
static void test_server_silent_evaluators_free_their_slots(void **state)
{
	fx *f = *state;
	ps_server_config cfg;
	ps_model_spec spec = test_spec();
	ps_peer p;
	ps_msg m, r;
	uint8_t k, full;

	memset(&cfg, 0, sizeof cfg);
	cfg.worker_timeout = 0.1;
	cfg.heartbeat = 0.02;
	use_server_cfg(f, &cfg);
	join(f, 0);
	for (k = 0; k < 200; k++) {
		p = make_peer(0);
		p.id[0] = 'e';
		p.id[4] = k;
		m = mk_hello(f, PS_ROLE_EVALUATOR, 0, &spec);
		if (feed(f, &p, &m, NULL, 0) != PS_OK)
			break;
		take_reply(f, &p, &r);
	}
	full = k;
	take_reply(f, &p, &r);
	assert_int_equal(r.u.error.code, PS_WIRE_ERR_BAD_RANK);
	ps_server_check_liveness(f->s, ps_now() + 1);
	/* The newcomer gets a slot now, and the old ones are unknown. */
	p.id[4] = 250;
	m = mk_hello(f, PS_ROLE_EVALUATOR, 0, &spec);
	assert_int_equal(feed(f, &p, &m, NULL, 0), PS_OK);
	take_reply(f, &p, &r);
	assert_int_equal(r.kind, PS_MSG_WELCOME);
	assert_true(r.u.welcome.worker_id >= 0x10000u &&
		    r.u.welcome.worker_id < 0x10000u + full);
	p.id[4] = 1;
	m = mk_pull(f, 0x10000u + 1, 0, NPARAMS);
	assert_int_equal(feed(f, &p, &m, NULL, 0), PS_EUNKNOWN_WORKER);
	take_reply(f, &p, &r);
}

/* --- end of training ----------------------------------------------------- */

static void test_server_bye_from_every_worker_ends_training(void **state)
{
	fx *f = *state;
	ps_msg m, r;

	join_all(f);
	push_ok(f, 0, 0, 0);
	assert_false(ps_server_training_done(f->s));

	m = mk(f, PS_MSG_BYE, 1);
	m.u.bye.samples = 8;
	assert_int_equal(feed(f, &f->peer[0], &m, NULL, 0), PS_OK);
	take_reply(f, &f->peer[0], &r);
	assert_int_equal(r.kind, PS_MSG_BYE);
	assert_int_equal(r.request_id, m.request_id);
	assert_false(ps_server_training_done(f->s));
	/* A repeated bye is answered but not counted twice. */
	m = mk(f, PS_MSG_BYE, 1);
	assert_int_equal(feed(f, &f->peer[0], &m, NULL, 0), PS_OK);
	take_reply(f, &f->peer[0], &r);
	assert_int_equal(stats(f).workers_done, 1);
	assert_false(ps_server_training_done(f->s));

	m = mk_pull(f, 2, 0, NPARAMS);
	assert_int_equal(feed(f, &f->peer[1], &m, NULL, 0), PS_OK);
	take_reply(f, &f->peer[1], &r);
	assert_int_equal(r.u.weights.training_done, 0);

	m = mk(f, PS_MSG_BYE, 2);
	assert_int_equal(feed(f, &f->peer[1], &m, NULL, 0), PS_OK);
	take_reply(f, &f->peer[1], &r);
	assert_int_equal(r.kind, PS_MSG_BYE);
	assert_true(ps_server_training_done(f->s));
	assert_int_equal(stats(f).workers_done, NUM_WORKERS);
	assert_true(stats(f).train_seconds >= 0);

	/* Anyone still pulling learns that training is over. */
	m = mk_pull(f, 1, 0, NPARAMS);
	assert_int_equal(feed(f, &f->peer[0], &m, NULL, 0), PS_OK);
	take_reply(f, &f->peer[0], &r);
	assert_int_equal(r.kind, PS_MSG_WEIGHTS);
	assert_int_equal(r.u.weights.training_done, 1);
	assert_int_equal(r.u.weights.version, 1);
}

/* A worker that says hello again after its bye is training again. */
static void test_server_hello_after_bye_reopens_worker(void **state)
{
	fx *f = *state;
	ps_msg m, r;

	join(f, 0);
	m = mk(f, PS_MSG_BYE, 1);
	assert_int_equal(feed(f, &f->peer[0], &m, NULL, 0), PS_OK);
	take_reply(f, &f->peer[0], &r);
	assert_int_equal(stats(f).workers_done, 1);
	join(f, 0);
	assert_int_equal(stats(f).workers_done, 0);
	assert_int_equal(stats(f).workers_seen, 1);
}

/* --- the transport's part ------------------------------------------------- */

static void test_server_anonymous_peer_gets_no_reply(void **state)
{
	fx *f = *state;
	static const uint8_t garbage[] = { 0xff, 0x01 };
	ps_peer anon;
	ps_msg m;

	memset(&anon, 0, sizeof anon);
	join(f, 0);
	expect_rejected_raw(f, &anon, garbage, sizeof garbage, NULL, 0, 0,
			    PS_EPROTO, PS_WIRE_ERR_MALFORMED, REJ(malformed));
	expect_rejected_raw(f, NULL, garbage, sizeof garbage, NULL, 0, 0,
			    PS_EPROTO, PS_WIRE_ERR_MALFORMED, REJ(malformed));
	m = mk_pull(f, 1, 0, NPARAMS);
	expect_rejected(f, &anon, &m, NULL, 0, PS_EUNKNOWN_WORKER,
			PS_WIRE_ERR_UNKNOWN_WORKER, REJ(unknown_worker));
	m = mk_pull(f, 1, 0, NPARAMS);
	m.protocol = 9;
	expect_rejected(f, &anon, &m, NULL, 0, PS_EVERSION,
			PS_WIRE_ERR_VERSION, REJ(version));
	assert_int_equal(stats(f).rejects.send_failed, 0);
	assert_still_serving(f);
}

static void test_server_send_failure_is_counted(void **state)
{
	fx *f = *state;
	static const uint8_t garbage[] = { 0xff, 0x01 };
	float g[NPARAMS];
	ps_server_stats st;
	ps_msg m;

	join_all(f);
	/* A weights reply that cannot be queued. */
	fake_transport_fail_next(f->t, 1, PS_EUNKNOWN_WORKER);
	m = mk_pull(f, 1, 0, NPARAMS);
	assert_int_equal(feed(f, &f->peer[0], &m, NULL, 0), PS_OK);
	assert_no_reply(f);
	assert_int_equal(stats(f).rejects.send_failed, 1);

	/* A lost ack does not undo the update. */
	fake_transport_fail_next(f->t, 1, PS_ETIMEDOUT);
	gradient(g, NPARAMS, 0);
	m = mk_push(f, 2, 0, 0, NPARAMS, 8);
	assert_int_equal(feed(f, &f->peer[1], &m, g, sizeof g), PS_OK);
	assert_no_reply(f);
	st = stats(f);
	assert_int_equal(st.version, 1);
	assert_int_equal(st.rejects.send_failed, 2);

	/* A lost error reply: the refusal and the failed send both count. */
	fake_transport_fail_next(f->t, 1, PS_ETRANSPORT);
	assert_int_equal(feed_raw(f, &f->peer[2], garbage, sizeof garbage,
				  NULL, 0),
			 PS_EPROTO);
	assert_no_reply(f);
	st = stats(f);
	assert_int_equal(st.rejects.malformed, 1);
	assert_int_equal(st.rejects.send_failed, 3);
	assert_int_equal(fake_transport_refused(f->t), 3);
	/* send_failed is a count of its own, not a refused message. */
	assert_int_equal(st.rejects_total, 1);

	assert_still_serving(f);
	push_ok(f, 1, 2, 0);
}

/* --- consistency: bsp, ssp, staleness-aware rate, DC-ASGD ---------------- */

/* Replace the fixture's server (nobody has joined it yet) by one with
 * this consistency and these staleness remedies; NUM_WORKERS, SGD at LR. */
static void use_server(fx *f, const char *consistency, int staleness_lr,
		       double dc_lambda)
{
	ps_server_destroy(&f->s);
	assert_int_equal(new_server_with(&f->s, f->t, NUM_WORKERS, LR, 0,
					 consistency, staleness_lr, dc_lambda),
			 PS_OK);
}

/* A push of gradient g from worker `rank` for its clock `clock`: handled
 * and acknowledged. Returns the ack. */
static ps_msg push_clock(fx *f, uint32_t rank, uint64_t base, uint64_t clock,
			 const float *g, uint32_t batch)
{
	ps_msg m = mk_push(f, rank + 1, base, 0, NPARAMS, batch), r;

	m.u.push.clock = clock;
	assert_int_equal(feed(f, &f->peer[rank], &m, g,
			      NPARAMS * sizeof *g),
			 PS_OK);
	take_next_reply(f, &f->peer[rank], &r);
	assert_int_equal(r.kind, PS_MSG_ACK);
	assert_int_equal(r.request_id, m.request_id);
	return r;
}

/* A pull of the whole model for clock `clock` from worker `rank`, handled;
 * its answer (if any) is left for the caller to take. Returns the pull. */
static ps_msg pull_clock(fx *f, uint32_t rank, uint64_t clock)
{
	ps_msg m = mk_pull(f, rank + 1, 0, NPARAMS);

	m.u.pull.clock = clock;
	assert_int_equal(feed(f, &f->peer[rank], &m, NULL, 0), PS_OK);
	return m;
}

/* The answer to `pull` sent to worker `rank`: weights of `version` equal
 * to want[NPARAMS] (and to the server's). */
static void expect_weights(fx *f, uint32_t rank, const ps_msg *pull,
			   uint64_t version, const float *want)
{
	const fake_sent *rec;
	ps_msg r;

	rec = take_reply(f, &f->peer[rank], &r);
	assert_int_equal(r.kind, PS_MSG_WEIGHTS);
	assert_int_equal(r.request_id, pull->request_id);
	assert_int_equal(r.u.weights.version, version);
	assert_int_equal(rec->tensor_len, NPARAMS * sizeof(float));
	assert_floats_equal((const float *)(const void *)rec->tensor, want,
			    NPARAMS);
	assert_floats_equal(weights(f), want, NPARAMS);
}

static void test_server_consistency_parse(void **state)
{
	static const struct {
		const char *text;
		enum ps_consistency mode;
		uint32_t bound;
	} good[] = {
		{ "async", PS_CONSISTENCY_ASYNC, 0 },
		{ "bsp", PS_CONSISTENCY_BSP, 0 },
		{ "ssp:0", PS_CONSISTENCY_BSP, 0 },
		{ "ssp:3", PS_CONSISTENCY_SSP, 3 },
		{ "ssp:1000000", PS_CONSISTENCY_SSP, 1000000 },
	};
	static const char *const bad[] = {
		"ssp", "ssp:", "ssp:-1", "ssp:x", "bs", "", "ssp:3x", "ssp: 3",
		"ssp:+3", "ssp:1000001", "ssp:99999999999999999999", "BSP",
		"async ",
	};

	(void)state;
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		enum ps_consistency mode = PS_CONSISTENCY_ASYNC;
		uint32_t bound = 77;
		ps_err e = { 0, "" };
		assert_int_equal(ps_consistency_parse(good[i].text, &mode,
						      &bound, &e),
				 PS_OK);
		assert_int_equal(mode, good[i].mode);
		assert_int_equal(bound, good[i].bound);
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		enum ps_consistency mode = PS_CONSISTENCY_ASYNC;
		uint32_t bound = 0;
		ps_err e = { 0, "" };
		if (ps_consistency_parse(bad[i], &mode, &bound, &e) != PS_EINVAL)
			fail_msg("'%s' was accepted", bad[i]);
		assert_int_equal(e.code, PS_EINVAL);
		assert_non_null(strstr(e.msg, "ssp:S"));
	}
}

static void test_server_new_rejects_bad_consistency_config(void **state)
{
	ps_server_config cfg;
	ps_server *s = NULL;
	ps_err e = { 0, "" };
	fx *f = *state;

	memset(&cfg, 0, sizeof cfg);
	cfg.num_workers = 2;
	cfg.optim.lr = 0.5;
	cfg.consistency = PS_CONSISTENCY_SSP; /* bound 0: that is bsp */
	assert_int_equal(ps_server_new(&s, &cfg, f->t, &e), PS_EINVAL);
	assert_null(s);
	cfg.consistency = PS_CONSISTENCY_ASYNC;
	cfg.dc_lambda = -0.5;
	assert_int_equal(ps_server_new(&s, &cfg, f->t, &e), PS_EINVAL);
	cfg.dc_lambda = NAN;
	assert_int_equal(ps_server_new(&s, &cfg, f->t, &e), PS_EINVAL);
	assert_null(s);
}

/* bsp: a pull for clock 1 waits until every live worker has pushed clock
 * 0; then one step applies the batch-weighted mean, and the waiting pull
 * gets its weights. */
static void test_server_bsp_combines_one_step_per_clock(void **state)
{
	fx *f = *state;
	float w0[NPARAMS], g0[NPARAMS], g1[NPARAMS], want[NPARAMS];
	ps_server_stats st;
	ps_msg pull, ack;

	use_server(f, "bsp", 0, 0);
	join_all(f);
	memcpy(w0, weights(f), sizeof w0);
	gradient(g0, NPARAMS, 0);
	gradient(g1, NPARAMS, 1);

	ack = push_clock(f, 0, 0, 0, g0, 8);
	assert_int_equal(ack.u.ack.version, 0);
	assert_int_equal(ack.u.ack.staleness, 0);
	/* Kept aside, not applied. */
	assert_floats_equal(weights(f), w0, NPARAMS);
	assert_int_equal(stats(f).version, 0);

	pull = pull_clock(f, 0, 1);
	assert_no_reply(f);
	assert_int_equal(stats(f).pulls_waited, 1);

	/* Worker 1 may still pull clock 0 at once. */
	{
		ps_msg p1 = pull_clock(f, 1, 0);
		expect_weights(f, 1, &p1, 0, w0);
	}

	/* Batches 8 and 24: shares 1/4 and 3/4, all exact in float. */
	for (size_t i = 0; i < NPARAMS; i++)
		want[i] = w0[i] - LR * (0.25f * g0[i] + 0.75f * g1[i]);
	ack = push_clock(f, 1, 0, 0, g1, 24);
	assert_int_equal(ack.u.ack.staleness, 0);
	expect_weights(f, 0, &pull, 1, want);

	st = stats(f);
	assert_int_equal(st.version, 1);
	assert_int_equal(st.bsp_steps, 1);
	assert_int_equal(st.pushes_applied, 2);
	assert_int_equal(st.samples, 32);
	assert_int_equal(st.pulls_waited, 1);
	assert_int_equal(st.rejects_total, 0);
	/* Every pull answered under bsp has the puller at most one clock
	 * ahead of the slowest. */
	assert_true(st.clock_lead_max <= 1);
}

/* bsp refuses a push for the wrong clock, a second waiting pull of the
 * same worker, and a push for clock c + 1 before step c was applied (a
 * trainer with --fetch-every above --push-every: it used to overwrite the
 * gradient step c still needed, and wedge the run). */
static void test_server_bsp_refuses_push_before_its_step(void **state)
{
	fx *f = *state;
	float g[NPARAMS];
	ps_msg m, pull;

	use_server(f, "bsp", 0, 0);
	join_all(f);
	gradient(g, NPARAMS, 0);

	m = mk_push(f, 1, 0, 0, NPARAMS, 8);
	m.u.push.clock = 3;
	expect_rejected(f, &f->peer[0], &m, g, sizeof g, PS_EPROTO,
			PS_WIRE_ERR_MALFORMED, REJ(malformed));
	(void)push_clock(f, 0, 0, 0, g, 8);

	m = mk_push(f, 1, 0, 0, NPARAMS, 8);
	m.u.push.clock = 1; /* the right clock, but step 0 is not applied */
	expect_rejected(f, &f->peer[0], &m, g, sizeof g, PS_EPROTO,
			PS_WIRE_ERR_MALFORMED, REJ(malformed));
	assert_int_equal(stats(f).pushes_applied, 1);

	/* A part of the range cannot be combined. */
	m = mk_push(f, 2, 0, 0, 5, 8);
	expect_rejected(f, &f->peer[1], &m, g, 5 * sizeof(float), PS_EPROTO,
			PS_WIRE_ERR_MALFORMED, REJ(malformed));

	pull = pull_clock(f, 0, 1);
	assert_no_reply(f);
	m = mk_pull(f, 1, 0, NPARAMS);
	m.u.pull.clock = 1;
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_EPROTO,
			PS_WIRE_ERR_MALFORMED, REJ(malformed));
	assert_int_equal(stats(f).pulls_waited, 1);

	/* The first waiting pull is still served when the step comes. */
	(void)push_clock(f, 1, 0, 0, g, 8);
	take_reply(f, &f->peer[0], &m);
	assert_int_equal(m.kind, PS_MSG_WEIGHTS);
	assert_int_equal(m.request_id, pull.request_id);
	assert_int_equal(m.u.weights.version, 1);
	/* Now clock 1 is welcome. */
	(void)push_clock(f, 0, 1, 1, g, 8);
	assert_int_equal(stats(f).pushes_applied, 3);
}

/* A worker's bye releases the others: the step of the clock it will not
 * push is taken without it, and the waiting pull is answered. */
static void test_server_bsp_bye_releases_waiting_pull(void **state)
{
	fx *f = *state;
	float w0[NPARAMS], g[NPARAMS], want[NPARAMS];
	ps_msg m, r, pull;

	use_server(f, "bsp", 0, 0);
	join_all(f);
	memcpy(w0, weights(f), sizeof w0);
	gradient(g, NPARAMS, 2);
	(void)push_clock(f, 0, 0, 0, g, 8);
	pull = pull_clock(f, 0, 1);
	assert_no_reply(f);

	m = mk(f, PS_MSG_BYE, 2);
	assert_int_equal(feed(f, &f->peer[1], &m, NULL, 0), PS_OK);
	take_next_reply(f, &f->peer[1], &r);
	assert_int_equal(r.kind, PS_MSG_BYE);
	for (size_t i = 0; i < NPARAMS; i++)
		want[i] = w0[i] - LR * g[i];
	expect_weights(f, 0, &pull, 1, want);
	assert_int_equal(stats(f).workers_done, 1);

	/* Alone now: every push is a step, no pull waits. */
	(void)push_clock(f, 0, 1, 1, g, 8);
	assert_int_equal(stats(f).version, 2);
	pull = pull_clock(f, 0, 2);
	take_reply(f, &f->peer[0], &r);
	assert_int_equal(r.kind, PS_MSG_WEIGHTS);
	assert_int_equal(r.u.weights.version, 2);
	assert_int_equal(stats(f).pulls_waited, 1);
}

/* A heartbeat's answer names the pull the server holds back for that
 * trainer (and only for it), so that the trainer can tell a held pull
 * from a lost one; none once the pull is answered. */
static void test_server_heartbeat_names_the_held_pull(void **state)
{
	fx *f = *state;
	float g[NPARAMS];
	ps_msg m, r, pull;

	use_server(f, "bsp", 0, 0);
	join_all(f);
	gradient(g, NPARAMS, 2);
	(void)push_clock(f, 0, 0, 0, g, 8);
	pull = pull_clock(f, 0, 1);
	assert_no_reply(f);
	m = mk(f, PS_MSG_HEARTBEAT, 1);
	assert_int_equal(feed(f, &f->peer[0], &m, NULL, 0), PS_OK);
	take_reply(f, &f->peer[0], &r);
	assert_int_equal(r.kind, PS_MSG_HEARTBEAT);
	assert_int_equal(r.u.heartbeat.pull_waiting, pull.request_id);
	m = mk(f, PS_MSG_HEARTBEAT, 2);
	assert_int_equal(feed(f, &f->peer[1], &m, NULL, 0), PS_OK);
	take_reply(f, &f->peer[1], &r);
	assert_int_equal(r.u.heartbeat.pull_waiting, 0);

	/* The other trainer's push completes the step: the pull is
	 * answered, and no longer named. */
	(void)push_clock(f, 1, 0, 0, g, 8);
	take_next_reply(f, &f->peer[0], &r);
	assert_int_equal(r.kind, PS_MSG_WEIGHTS);
	assert_int_equal(r.request_id, pull.request_id);
	m = mk(f, PS_MSG_HEARTBEAT, 1);
	assert_int_equal(feed(f, &f->peer[0], &m, NULL, 0), PS_OK);
	take_next_reply(f, &f->peer[0], &r);
	assert_int_equal(r.kind, PS_MSG_HEARTBEAT);
	assert_int_equal(r.u.heartbeat.pull_waiting, 0);
}

/* An evaluator's early stop releases the pulls bsp/ssp hold back: no push
 * is applied after it, so they would have waited forever. */
static void test_server_stop_releases_waiting_pulls(void **state)
{
	fx *f = *state;
	ps_model_spec spec = test_spec();
	float g[NPARAMS];
	uint32_t eval_id;
	ps_msg m, r, pull;

	use_server(f, "bsp", 0, 0);
	join_all(f);
	m = mk_hello(f, PS_ROLE_EVALUATOR, 0, &spec);
	assert_int_equal(feed(f, &f->peer[2], &m, NULL, 0), PS_OK);
	take_reply(f, &f->peer[2], &r);
	eval_id = r.u.welcome.worker_id;
	gradient(g, NPARAMS, 0);
	(void)push_clock(f, 0, 0, 0, g, 8);
	pull = pull_clock(f, 0, 1);
	assert_no_reply(f);

	m = mk(f, PS_MSG_STOP, eval_id);
	strcpy(m.u.stop.reason, "test");
	assert_int_equal(feed(f, &f->peer[2], &m, NULL, 0), PS_OK);
	take_next_reply(f, &f->peer[2], &r);
	assert_int_equal(r.kind, PS_MSG_ACK);
	assert_int_equal(r.u.ack.stop, 1);
	take_reply(f, &f->peer[0], &r);
	assert_int_equal(r.kind, PS_MSG_WEIGHTS);
	assert_int_equal(r.request_id, pull.request_id);
	assert_int_equal(r.u.weights.stop, 1);
	assert_int_equal(r.u.weights.version, 0);
	/* And later pulls do not wait either, nor count as a lead. */
	pull = pull_clock(f, 1, 5);
	take_reply(f, &f->peer[1], &r);
	assert_int_equal(r.kind, PS_MSG_WEIGHTS);
	assert_int_equal(r.u.weights.stop, 1);
	assert_int_equal(stats(f).clock_lead_max, 0);
}

/* ssp:1: pushes apply on arrival; a pull waits exactly when answering it
 * would put its worker more than 1 clock ahead of the slowest live one. */
static void test_server_ssp_pull_waits_beyond_the_bound(void **state)
{
	fx *f = *state;
	float g[NPARAMS], want[NPARAMS];
	ps_msg m, r, pull;

	use_server(f, "ssp:1", 0, 0);
	join_all(f);
	gradient(g, NPARAMS, 0);

	/* Worker 0 at clock 1, worker 1 at 0: lead 1, answered. */
	(void)push_clock(f, 0, 0, 0, g, 8);
	assert_int_equal(stats(f).version, 1);
	pull = pull_clock(f, 0, 1);
	take_reply(f, &f->peer[0], &r);
	assert_int_equal(r.kind, PS_MSG_WEIGHTS);
	assert_int_equal(stats(f).clock_lead_max, 1);

	/* Clock 2 would be 2 ahead: it waits. */
	(void)push_clock(f, 0, 1, 1, g, 8);
	pull = pull_clock(f, 0, 2);
	assert_no_reply(f);
	assert_int_equal(stats(f).pulls_waited, 1);

	/* Wrong clocks are refused under ssp too. */
	m = mk_push(f, 2, 0, 0, NPARAMS, 8);
	m.u.push.clock = 1;
	expect_rejected(f, &f->peer[1], &m, g, sizeof g, PS_EPROTO,
			PS_WIRE_ERR_MALFORMED, REJ(malformed));

	/* Worker 1's push for clock 0 moves the slowest to 1: answered, and
	 * the lead recorded stays 1. */
	memcpy(want, weights(f), sizeof want);
	for (size_t i = 0; i < NPARAMS; i++)
		want[i] = want[i] - LR * g[i];
	(void)push_clock(f, 1, 0, 0, g, 8);
	expect_weights(f, 0, &pull, 3, want);
	assert_int_equal(stats(f).clock_lead_max, 1);

	/* The slow worker itself never waits. */
	pull = pull_clock(f, 1, 1);
	take_reply(f, &f->peer[1], &r);
	assert_int_equal(r.kind, PS_MSG_WEIGHTS);
	assert_int_equal(stats(f).pulls_waited, 1);
	assert_int_equal(stats(f).clock_lead_max, 1);
}

/* --staleness-lr: a push of staleness tau moves the weights by
 * lr / max(1, tau) times its gradient (taus 2 and 4: exact in float). */
static void test_server_staleness_lr_scales_by_one_over_tau(void **state)
{
	fx *f = *state;
	float g[NPARAMS], want[NPARAMS];
	ps_msg m, r;

	use_server(f, "async", 1, 0);
	join_all(f);
	push_ok(f, 0, 0, 0); /* tau 0: full step */
	push_ok(f, 1, 0, 1); /* tau 1: full step */

	for (int k = 0; k < 2; k++) {
		uint64_t tau = k == 0 ? 2 : 4;
		if (k == 1)
			push_ok(f, 0, 3, 0); /* version 4 */
		gradient(g, NPARAMS, 5 + k);
		memcpy(want, weights(f), sizeof want);
		for (size_t i = 0; i < NPARAMS; i++)
			want[i] = want[i] - (LR / (float)tau) * g[i];
		m = mk_push(f, 1, 0, 0, NPARAMS, 8);
		assert_int_equal(feed(f, &f->peer[0], &m, g, sizeof g), PS_OK);
		take_reply(f, &f->peer[0], &r);
		assert_int_equal(r.kind, PS_MSG_ACK);
		assert_int_equal(r.u.ack.staleness, tau);
		assert_floats_equal(weights(f), want, NPARAMS);
	}
	assert_int_equal(stats(f).staleness_max, 4);
}

/* DC-ASGD: the push is compensated with the weights its worker last
 * pulled, g + lambda * g * g * (w_now - w_pulled); a worker that never
 * pulled counts as having the initial weights (its copy used to be
 * uninitialized memory). */
static void test_server_dc_asgd_compensates_by_hand(void **state)
{
	fx *f = *state;
	const float lambda = 0.5f;
	float w_init[NPARAMS], w1[NPARAMS], g0[NPARAMS], g1[NPARAMS],
		want[NPARAMS], plain[NPARAMS];
	const float *w;
	ps_msg pull;
	double diff = 0;

	use_server(f, "async", 0, lambda);
	join_all(f);
	memcpy(w_init, weights(f), sizeof w_init);
	pull = pull_clock(f, 0, 0);
	expect_weights(f, 0, &pull, 0, w_init);

	/* Worker 1 never pulled: w_now = w_init, so no correction. */
	gradient(g1, NPARAMS, 1);
	for (size_t i = 0; i < NPARAMS; i++)
		w1[i] = w_init[i] - LR * g1[i];
	(void)push_clock(f, 1, 0, 0, g1, 8);
	assert_floats_equal(weights(f), w1, NPARAMS);

	/* Worker 0 pulled w_init, one update ago. */
	gradient(g0, NPARAMS, 0);
	for (size_t i = 0; i < NPARAMS; i++) {
		float c = g0[i] + lambda * g0[i] * g0[i] * (w1[i] - w_init[i]);
		want[i] = w1[i] - LR * c;
		plain[i] = w1[i] - LR * g0[i];
	}
	(void)push_clock(f, 0, 0, 0, g0, 8);
	w = weights(f);
	for (size_t i = 0; i < NPARAMS; i++) {
		/* The same float operations in the same order; allow one
		 * rounding of slack in case a compiler fuses them. */
		if (fabsf(w[i] - want[i]) > 1e-6f * (1.0f + fabsf(want[i])))
			fail_msg("index %zu: got %.9g, want %.9g", i,
				 (double)w[i], (double)want[i]);
		diff += fabs((double)w[i] - (double)plain[i]);
	}
	/* ... and the correction did change the update. */
	assert_true(diff > 1e-3);
}

/* --- construction, the loop, the report ----------------------------------- */

static void test_server_new_rejects_bad_config(void **state)
{
	static const double bad_lr[] = { 0.0, -0.5, NAN, INFINITY, -INFINITY };
	ps_transport *t = NULL;
	ps_server *s;

	(void)state;
	assert_int_equal(fake_transport_new(&t), PS_OK);
	s = (ps_server *)(void *)&t; /* must come back NULL */
	assert_int_equal(new_server(&s, t, 0, 0.5, 0), PS_EINVAL);
	assert_null(s);
	for (size_t i = 0; i < sizeof bad_lr / sizeof bad_lr[0]; i++) {
		s = (ps_server *)(void *)&t;
		assert_int_equal(new_server(&s, t, 1, bad_lr[i], 0),
				 PS_EINVAL);
		assert_null(s);
	}
	assert_int_equal(new_server(&s, t, 1, 0.5, 0), PS_OK);
	assert_non_null(s);
	ps_server_destroy(&s);
	assert_null(s);
	assert_int_equal(fake_transport_count(t), 0);
	ps_transport_destroy(&t);
}

static void test_server_destroy_accepts_null(void **state)
{
	ps_server *s = NULL;

	(void)state;
	ps_server_destroy(NULL);
	ps_server_destroy(&s);
	assert_null(s);
}

static void test_server_run_stops_and_times_out(void **state)
{
	fx *f = *state;
	ps_server *s = NULL;
	volatile int stop = 1;
	ps_err e = { 0, "" };

	assert_int_equal(ps_server_run(f->s, &stop, &e), PS_EINTR);
	assert_int_equal(e.code, PS_EINTR);

	/* Nothing ever arrives through the fake: the hang guard fires. */
	assert_int_equal(new_server(&s, f->t, 1, 0.5, 0.02), PS_OK);
	stop = 0;
	assert_int_equal(ps_server_run(s, &stop, &e), PS_ETIMEDOUT);
	assert_int_equal(e.code, PS_ETIMEDOUT);
	ps_server_destroy(&s);

	/* With every worker gone and no evaluator, run returns at once. */
	join_all(f);
	for (uint32_t k = 0; k < NUM_WORKERS; k++) {
		ps_msg m = mk(f, PS_MSG_BYE, k + 1), r;
		assert_int_equal(feed(f, &f->peer[k], &m, NULL, 0), PS_OK);
		take_reply(f, &f->peer[k], &r);
	}
	assert_int_equal(ps_server_run(f->s, &stop, &e), PS_OK);
}

/* An announced evaluator that has not connected when the trainers finish
 * keeps the server up for eval_grace: it must not find the server gone
 * (seen when trainers finished in 25 ms, before the evaluator's hello). */
static void test_server_waits_for_announced_evaluator(void **state)
{
	fx *f = *state;
	ps_server *s = NULL;
	ps_server_config cfg;
	volatile int stop = 0;
	ps_err e = { 0, "" };
	ps_model_spec spec = test_spec();
	double t0;
	ps_msg m;

	memset(&cfg, 0, sizeof cfg);
	cfg.num_workers = 1;
	cfg.optim.lr = LR;
	cfg.eval_grace = 0.3;
	cfg.num_evaluators = 1;
	assert_int_equal(ps_server_new(&s, &cfg, f->t, &e), PS_OK);
	m = mk_hello(f, PS_ROLE_WORKER, 0, &spec);
	{
		uint8_t buf[PS_WIRE_HEAD_MAX];
		size_t len = 0;
		ps_frame fr = { f->peer[0], buf, 0, NULL, 0 };
		assert_int_equal(ps_wire_encode(&m, buf, sizeof buf, &len), PS_OK);
		fr.head_len = len;
		assert_int_equal(ps_server_handle(s, &fr), PS_OK);
		m = mk(f, PS_MSG_BYE, 1);
		assert_int_equal(ps_wire_encode(&m, buf, sizeof buf, &len), PS_OK);
		fr.head_len = len;
		assert_int_equal(ps_server_handle(s, &fr), PS_OK);
	}
	assert_true(ps_server_training_done(s));
	t0 = ps_now();
	assert_int_equal(ps_server_run(s, &stop, &e), PS_OK);
	assert_true(ps_now() - t0 >= 0.29);
	ps_server_destroy(&s);
}

static void test_server_stats_json_has_the_figures(void **state)
{
	fx *f = *state;
	static const uint8_t garbage[] = { 0xff, 0x01 };
	FILE *tmp = tmpfile();
	char buf[4096];
	size_t len;
	long depth = 0;

	assert_non_null(tmp);
	join_all(f);
	push_ok(f, 0, 0, 0);
	push_ok(f, 1, 0, 1);
	assert_int_equal(feed_raw(f, &f->peer[2], garbage, sizeof garbage,
				  NULL, 0),
			 PS_EPROTO);
	ps_server_write_stats_json(f->s, tmp);
	rewind(tmp);
	len = fread(buf, 1, sizeof buf - 1, tmp);
	fclose(tmp);
	assert_true(len > 0 && len < sizeof buf - 1);
	buf[len] = '\0';

	assert_non_null(strstr(buf, "\"updates\": 2,"));
	assert_non_null(strstr(buf, "\"samples\": 16,"));
	assert_non_null(strstr(buf, "\"staleness_mean\": 0.5"));
	assert_non_null(strstr(buf, "\"staleness_max\": 1,"));
	assert_non_null(strstr(buf, "\"staleness_histogram\": {\"0\": 1, "
				    "\"1\": 1,"));
	assert_non_null(strstr(buf, "\"rejected\": {\"total\": 1, "
				    "\"malformed\": 1,"));
	assert_non_null(strstr(buf, "\"workers\": 2,"));
	/* One object, braces and brackets balanced. */
	assert_int_equal(buf[0], '{');
	for (size_t i = 0; i < len; i++) {
		if (buf[i] == '{' || buf[i] == '[')
			depth++;
		else if (buf[i] == '}' || buf[i] == ']')
			depth--;
		assert_true(depth >= 0);
		if (depth == 0)
			assert_true(i == len - 2 || i == len - 1);
	}
	assert_int_equal(depth, 0);
}

/* --- faults (docs/FAULTS.md) ---------------------------------------------- */

/* A server configured by cfg (num_workers NUM_WORKERS, SGD at LR unless
 * cfg says otherwise) replaces the fixture's. */
static void use_server_cfg(fx *f, ps_server_config *cfg)
{
	ps_err e = {0, ""};

	ps_server_destroy(&f->s);
	if (!cfg->num_workers)
		cfg->num_workers = NUM_WORKERS;
	if (!cfg->optim.lr) {
		cfg->optim.kind = PS_OPTIM_SGD;
		cfg->optim.lr = LR;
	}
	assert_int_equal(ps_server_new(&f->s, cfg, f->t, &e), PS_OK);
}

/* Feed push m (gradient g) from worker `rank`; return the reply. */
static ps_msg push_msg(fx *f, uint32_t rank, const ps_msg *m, const float *g)
{
	ps_msg r;

	(void)feed(f, &f->peer[rank], m, g, NPARAMS * sizeof *g);
	take_next_reply(f, &f->peer[rank], &r);
	return r;
}

/* A push sent again (its ack was lost) is acknowledged as a repeat and not
 * applied; the server remembers the last 64 seqs below the newest, so
 * pushes arriving out of order are each applied once, and a repeat older
 * than that is refused as too old rather than applied. */
static void test_server_repeated_push_is_applied_once(void **state)
{
	fx *f = *state;
	float g[NPARAMS], w1[NPARAMS];
	ps_msg m, again, r;
	ps_server_stats st;

	join_all(f);
	gradient(g, NPARAMS, 1);
	m = mk_push(f, 1, 0, 0, NPARAMS, 8);
	m.u.push.seq = 100;
	r = push_msg(f, 0, &m, g);
	assert_int_equal(r.kind, PS_MSG_ACK);
	assert_false(r.u.ack.duplicate);
	memcpy(w1, weights(f), sizeof w1);

	again = m;
	again.request_id = f->next_req++;
	r = push_msg(f, 0, &again, g);
	assert_int_equal(r.kind, PS_MSG_ACK);
	assert_int_equal(r.request_id, again.request_id);
	assert_true(r.u.ack.duplicate);
	assert_int_equal(r.u.ack.seq, 100);
	assert_int_equal(r.u.ack.version, 1);
	assert_floats_equal(weights(f), w1, NPARAMS);

	/* 102 before 101: both new, each applied once. */
	m.u.push.seq = 102;
	m.u.push.base_version = 1;
	m.request_id = f->next_req++;
	assert_false(push_msg(f, 0, &m, g).u.ack.duplicate);
	m.u.push.seq = 101;
	m.request_id = f->next_req++;
	assert_false(push_msg(f, 0, &m, g).u.ack.duplicate);
	m.request_id = f->next_req++;
	assert_true(push_msg(f, 0, &m, g).u.ack.duplicate);
	assert_int_equal(stats(f).version, 3);

	/* Far ahead, then a repeat from before the window. */
	m.u.push.seq = 200;
	m.request_id = f->next_req++;
	assert_false(push_msg(f, 0, &m, g).u.ack.duplicate);
	memcpy(w1, weights(f), sizeof w1);
	m.u.push.seq = 101;
	m.request_id = f->next_req++;
	r = push_msg(f, 0, &m, g);
	assert_int_equal(r.kind, PS_MSG_ERROR);
	assert_int_equal(r.u.error.code, PS_WIRE_ERR_TOO_OLD);
	assert_floats_equal(weights(f), w1, NPARAMS);

	/* Seqs are per worker: worker 1's seq 100 is its own. */
	m = mk_push(f, 2, 4, 0, NPARAMS, 8);
	m.u.push.seq = 100;
	assert_false(push_msg(f, 1, &m, g).u.ack.duplicate);

	st = stats(f);
	assert_int_equal(st.version, 5);
	assert_int_equal(st.pushes_applied, 5);
	assert_int_equal(st.duplicates, 2);
	assert_int_equal(st.too_old, 1);
	assert_int_equal(st.rejects_total, 0);
}

static void test_server_answers_heartbeats(void **state)
{
	fx *f = *state;
	ps_msg m, r;

	join(f, 0);
	assert_still_serving(f);
	m = mk(f, PS_MSG_HEARTBEAT, 1);
	assert_int_equal(feed(f, &f->peer[0], &m, NULL, 0), PS_OK);
	take_reply(f, &f->peer[0], &r);
	assert_int_equal(r.kind, PS_MSG_HEARTBEAT);
	assert_int_equal(r.request_id, m.request_id);
	assert_int_equal(r.u.heartbeat.version, 1);
	assert_int_equal(r.u.heartbeat.pull_waiting, 0);
	/* One that never said hello is told so: it will register. */
	m = mk(f, PS_MSG_HEARTBEAT, 2);
	assert_int_equal(feed(f, &f->peer[1], &m, NULL, 0), PS_EUNKNOWN_WORKER);
	take_reply(f, &f->peer[1], &r);
	assert_int_equal(r.u.error.code, PS_WIRE_ERR_UNKNOWN_WORKER);
}

/* Spin (no sleep: a bounded busy wait on the clock) until ps_now() has
 * passed t. */
static void wait_until(double t)
{
	while (ps_now() <= t)
		;
}

/* bsp with a trainer that goes silent: after worker_timeout it is dropped,
 * the step goes ahead with the gradients that came, the held pull is
 * answered, and the dropped trainer's messages are refused until it
 * registers again, at the current clock. */
static void test_server_drops_silent_worker_under_bsp(void **state)
{
	fx *f = *state;
	ps_server_config cfg;
	float w0[NPARAMS], g[NPARAMS], want[NPARAMS];
	ps_msg pull, m, r;
	ps_model_spec spec = test_spec();
	double t1, t0;

	memset(&cfg, 0, sizeof cfg);
	cfg.consistency = PS_CONSISTENCY_BSP;
	cfg.worker_timeout = 0.1;
	cfg.heartbeat = 0.02;
	use_server_cfg(f, &cfg);
	join(f, 1);
	t1 = ps_now();
	wait_until(t1 + 0.15);
	join(f, 0);
	memcpy(w0, weights(f), sizeof w0);
	gradient(g, NPARAMS, 3);
	(void)push_clock(f, 0, 0, 0, g, 8);
	pull = pull_clock(f, 0, 1);
	assert_no_reply(f);
	t0 = ps_now();

	/* Worker 0 was heard within the timeout, worker 1 was not. */
	ps_server_check_liveness(f->s, t0 + 0.05);
	for (size_t i = 0; i < NPARAMS; i++)
		want[i] = w0[i] - LR * g[i];
	expect_weights(f, 0, &pull, 1, want);
	assert_int_equal(stats(f).workers_lost, 1);
	assert_int_equal(stats(f).bsp_steps, 1);
	assert_false(ps_server_training_done(f->s));

	m = mk_pull(f, 2, 0, NPARAMS);
	assert_int_equal(feed(f, &f->peer[1], &m, NULL, 0), PS_EUNKNOWN_WORKER);
	take_reply(f, &f->peer[1], &r);

	/* It registers again: at clock 1, the step under way. */
	m = mk_hello(f, PS_ROLE_WORKER, 1, &spec);
	m.u.hello.rejoin = 1;
	assert_int_equal(feed(f, &f->peer[1], &m, NULL, 0), PS_OK);
	take_reply(f, &f->peer[1], &r);
	assert_int_equal(r.kind, PS_MSG_WELCOME);
	assert_int_equal(r.u.welcome.clock, 1);
	assert_true(r.u.welcome.heartbeat_seconds == 0.02);
	assert_int_equal(stats(f).rejoins, 1);
	/* Both count again: step 1 waits for both. */
	(void)push_clock(f, 0, 1, 1, g, 8);
	assert_int_equal(stats(f).version, 1);
	(void)push_clock(f, 1, 1, 1, g, 8);
	assert_int_equal(stats(f).version, 2);
}

/* A rank that never registers is dropped worker_timeout after the first
 * one did; every trainer dropped or done ends training, and a late one
 * that registers after all reopens it. */
static void test_server_drops_rank_that_never_registers(void **state)
{
	fx *f = *state;
	ps_server_config cfg;
	ps_msg m, r;
	ps_model_spec spec = test_spec();
	double t;

	memset(&cfg, 0, sizeof cfg);
	cfg.worker_timeout = 0.1;
	cfg.heartbeat = 0.02;
	use_server_cfg(f, &cfg);
	ps_server_check_liveness(f->s, ps_now() + 10); /* nobody yet: no-op */
	assert_int_equal(stats(f).workers_lost, 0);
	join(f, 0);
	t = ps_now();
	ps_server_check_liveness(f->s, t + 0.05);
	assert_int_equal(stats(f).workers_lost, 0);
	m = mk(f, PS_MSG_BYE, 1);
	assert_int_equal(feed(f, &f->peer[0], &m, NULL, 0), PS_OK);
	take_reply(f, &f->peer[0], &r);
	assert_false(ps_server_training_done(f->s));
	ps_server_check_liveness(f->s, t + 0.2);
	assert_int_equal(stats(f).workers_lost, 1);
	assert_true(ps_server_training_done(f->s));

	m = mk_hello(f, PS_ROLE_WORKER, 1, &spec);
	assert_int_equal(feed(f, &f->peer[1], &m, NULL, 0), PS_OK);
	take_reply(f, &f->peer[1], &r);
	assert_int_equal(r.kind, PS_MSG_WELCOME);
	assert_false(ps_server_training_done(f->s));
}

/* The fault-injection hook drops every Nth ack of an applied push and
 * counts it; the push itself is applied. */
static void test_server_drop_ack_hook(void **state)
{
	fx *f = *state;
	ps_server_config cfg;
	float g[NPARAMS];
	ps_msg m, r;

	memset(&cfg, 0, sizeof cfg);
	cfg.drop_ack_every = 2;
	use_server_cfg(f, &cfg);
	join(f, 0);
	gradient(g, NPARAMS, 0);
	m = mk_push(f, 1, 0, 0, NPARAMS, 8);
	assert_int_equal(push_msg(f, 0, &m, g).kind, PS_MSG_ACK);
	m = mk_push(f, 1, 1, 0, NPARAMS, 8);
	assert_int_equal(feed(f, &f->peer[0], &m, g, sizeof g), PS_OK);
	assert_no_reply(f);
	assert_int_equal(stats(f).version, 2);
	assert_int_equal(stats(f).acks_dropped, 1);
	/* Sent again: a repeat, acknowledged this time. */
	m.request_id = f->next_req++;
	r = push_msg(f, 0, &m, g);
	assert_true(r.u.ack.duplicate);
	assert_int_equal(stats(f).version, 2);
}

/* What the server had done when each ack left (fake_transport_on_send). */
typedef struct ack_watch {
	fx *f;
	size_t acks;
	ps_msg ack;              /* the last one */
	float w[NPARAMS];        /* the weights as that ack left */
	uint64_t version;        /* the server's version then */
} ack_watch;

static void watch_acks(void *arg, const fake_sent *r)
{
	ack_watch *a = arg;
	ps_msg m;
	ps_err e = { 0, "" };

	if (ps_wire_decode(r->head, r->head_len, &m, &e) != PS_OK ||
	    m.kind != PS_MSG_ACK)
		return;
	a->acks++;
	a->ack = m;
	memcpy(a->w, weights(a->f), sizeof a->w);
	a->version = stats(a->f).version;
}

/* Outside bsp a push that passed every check is acknowledged before its
 * step is taken (ZeroMQ sends the ack while the server applies), and the
 * ack already reports the version the step makes; by the time the server
 * handles anything else the step is in the weights. A push that fails a
 * check (here NaN) gets no ack at all and changes nothing. */
static void ack_leaves_before_the_step(fx *f, const char *consistency)
{
	ack_watch a;
	float g[NPARAMS], w0[NPARAMS], want[NPARAMS];
	ps_msg m, r;

	use_server(f, consistency, 0, 0);
	memset(&a, 0, sizeof a);
	a.f = f;
	join(f, 0);
	join(f, 1);
	fake_transport_on_send(f->t, watch_acks, &a);
	memcpy(w0, weights(f), sizeof w0);
	gradient(g, NPARAMS, 2);
	for (size_t i = 0; i < NPARAMS; i++)
		want[i] = w0[i] - LR * g[i];
	m = mk_push(f, 1, 0, 0, NPARAMS, 8);
	m.u.push.clock = 0;
	assert_int_equal(feed(f, &f->peer[0], &m, g, sizeof g), PS_OK);
	take_reply(f, &f->peer[0], &r);
	assert_int_equal(a.acks, 1);
	/* It left before the step ... */
	assert_int_equal(a.version, 0);
	assert_floats_equal(a.w, w0, NPARAMS);
	/* ... saying what the step makes, which was taken before return. */
	assert_int_equal(a.ack.u.ack.version, 1);
	assert_int_equal(a.ack.u.ack.staleness, 0);
	assert_int_equal(a.ack.u.ack.seq, m.u.push.seq);
	assert_false(a.ack.u.ack.duplicate);
	assert_int_equal(stats(f).version, 1);
	assert_int_equal(stats(f).pushes_applied, 1);
	assert_floats_equal(weights(f), want, NPARAMS);

	/* NaN: refused, no ack, nothing applied. */
	g[5] = NAN;
	m = mk_push(f, 1, 1, 0, NPARAMS, 8);
	m.u.push.clock = 1;
	assert_int_equal(feed(f, &f->peer[0], &m, g, sizeof g), PS_ENONFINITE);
	take_reply(f, &f->peer[0], &r);
	assert_int_equal(r.kind, PS_MSG_ERROR);
	assert_int_equal(r.u.error.code, PS_WIRE_ERR_NONFINITE);
	assert_int_equal(a.acks, 1);
	assert_int_equal(stats(f).version, 1);
	assert_floats_equal(weights(f), want, NPARAMS);
	fake_transport_on_send(f->t, NULL, NULL);
}

static void test_server_ack_leaves_before_the_step_async(void **state)
{
	ack_leaves_before_the_step(*state, "async");
}

static void test_server_ack_leaves_before_the_step_ssp(void **state)
{
	ack_leaves_before_the_step(*state, "ssp:1");
}

/* Under bsp a push is not applied by itself: its ack leaves once the
 * gradient is stored, with the version before the step, and the step
 * follows when the last trainer's push arrives. */
static void test_server_bsp_ack_reports_the_version_before_the_step(void **state)
{
	fx *f = *state;
	ack_watch a;
	float g[NPARAMS];
	ps_msg r;

	use_server(f, "bsp", 0, 0);
	memset(&a, 0, sizeof a);
	a.f = f;
	join_all(f);
	fake_transport_on_send(f->t, watch_acks, &a);
	gradient(g, NPARAMS, 1);
	r = push_clock(f, 0, 0, 0, g, 8);
	assert_int_equal(r.u.ack.version, 0);
	assert_int_equal(stats(f).version, 0);
	r = push_clock(f, 1, 0, 0, g, 8);
	assert_int_equal(r.u.ack.version, 0);
	/* The step came after the last ack left. */
	assert_int_equal(a.acks, 2);
	assert_int_equal(a.version, 0);
	assert_int_equal(stats(f).version, 1);
	fake_transport_on_send(f->t, NULL, NULL);
}

/* A checkpoint restores weights, optimizer state, counters and each
 * worker's standing: the restored server's next update equals the
 * original's, a repeat of a push applied before the checkpoint is
 * recognized, and a checkpoint of another configuration is refused. */
static void test_server_checkpoint_restores_everything(void **state)
{
	fx *f = *state;
	ps_server_config cfg;
	ps_server *other = NULL;
	ps_checkpoint ck;
	char dir[64] = "/tmp/ps-test-server-ckpt-XXXXXX", path[4096], cmd[128];
	float g[NPARAMS], after[NPARAMS];
	ps_msg m, r;
	ps_err e = {0, ""};
	ps_model_spec spec = test_spec();
	uint64_t seq0 = 0;

	assert_non_null(mkdtemp(dir));
	memset(&cfg, 0, sizeof cfg);
	cfg.optim.kind = PS_OPTIM_ADAM;
	cfg.optim.lr = 0.01;
	cfg.optim.beta1 = 0.9;
	cfg.optim.beta2 = 0.999;
	cfg.optim.eps = 1e-8;
	cfg.checkpoint_dir = dir;
	cfg.checkpoint_keep = 2;
	use_server_cfg(f, &cfg);
	assert_int_equal(ps_server_checkpoint(f->s, &e), PS_EINVAL); /* no model */
	join_all(f);
	for (int k = 0; k < 3; k++) {
		gradient(g, NPARAMS, k);
		m = mk_push(f, 1 + (uint32_t)(k % 2), (uint64_t)k, 0, NPARAMS, 8);
		assert_int_equal(push_msg(f, (uint32_t)(k % 2), &m, g).kind,
				 PS_MSG_ACK);
		if (k % 2 == 0)
			seq0 = m.u.push.seq; /* worker 0's last */
	}
	assert_int_equal(ps_server_checkpoint(f->s, &e), PS_OK);
	assert_int_equal(stats(f).checkpoints, 1);
	assert_int_equal(stats(f).checkpoint_version, 3);

	assert_int_equal(ps_checkpoint_load_newest(dir, &ck, path, sizeof path,
						   &e),
			 PS_OK);
	assert_int_equal(ck.version, 3);
	assert_int_equal(ps_server_new(&other, &cfg, f->t, &e), PS_OK);
	assert_int_equal(ps_server_restore(other, &ck, &e), PS_OK);
	assert_int_equal(ps_server_restore(other, &ck, &e), PS_EINVAL);
	{
		ps_server_stats a, b;
		const float *wa, *wb;
		uint64_t na, nb;
		const ps_model_spec *sa, *sb;
		ps_server_get_stats(f->s, &a);
		ps_server_get_stats(other, &b);
		assert_int_equal(b.version, a.version);
		assert_int_equal(b.samples, a.samples);
		assert_int_equal(b.pushes_applied, a.pushes_applied);
		assert_true(b.resumed && b.resumed_version == 3);
		assert_int_equal(ps_server_weights(f->s, &wa, &na, &sa), PS_OK);
		assert_int_equal(ps_server_weights(other, &wb, &nb, &sb), PS_OK);
		assert_int_equal(na, nb);
		assert_floats_equal(wb, wa, NPARAMS);
	}
	/* The same next push on both: Adam's moments and step count came
	 * along, so the weights stay equal. */
	gradient(g, NPARAMS, 5);
	m = mk_push(f, 1, 3, 0, NPARAMS, 8);
	assert_int_equal(push_msg(f, 0, &m, g).kind, PS_MSG_ACK);
	memcpy(after, weights(f), sizeof after);
	{
		ps_server *mine = f->s;
		const float *wb;
		uint64_t nb;
		const ps_model_spec *sb;
		f->s = other;
		/* Registered again, it carries on from seq and clock. */
		m = mk_hello(f, PS_ROLE_WORKER, 0, &spec);
		m.u.hello.rejoin = 1;
		m.u.hello.applied_pushes = 3; /* it saw one more acknowledged */
		assert_int_equal(feed(f, &f->peer[0], &m, NULL, 0), PS_OK);
		take_reply(f, &f->peer[0], &r);
		assert_int_equal(r.kind, PS_MSG_WELCOME);
		assert_int_equal(r.u.welcome.pushes, 2);
		assert_int_equal(r.u.welcome.last_seq, seq0);
		assert_int_equal(stats(f).updates_lost, 1);
		m = mk_push(f, 1, 3, 0, NPARAMS, 8);
		assert_int_equal(push_msg(f, 0, &m, g).kind, PS_MSG_ACK);
		assert_int_equal(ps_server_weights(other, &wb, &nb, &sb), PS_OK);
		assert_floats_equal(wb, after, NPARAMS);
		f->s = mine;
	}
	ps_server_destroy(&other);

	/* Another worker count, another optimizer: refused. */
	cfg.num_workers = 3;
	assert_int_equal(ps_server_new(&other, &cfg, f->t, &e), PS_OK);
	assert_int_equal(ps_server_restore(other, &ck, &e), PS_EINVAL);
	assert_non_null(strstr(e.msg, "2 workers"));
	ps_server_destroy(&other);
	cfg.num_workers = NUM_WORKERS;
	cfg.optim.kind = PS_OPTIM_SGD;
	assert_int_equal(ps_server_new(&other, &cfg, f->t, &e), PS_OK);
	assert_int_equal(ps_server_restore(other, &ck, &e), PS_EINVAL);
	assert_non_null(strstr(e.msg, "adam"));
	ps_server_destroy(&other);
	ps_checkpoint_release(&ck);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

/* The first hello sizes the weights: one that asks for more parameters
 * than fit in a message is refused before anything is allocated. */
static void test_server_refuses_model_beyond_max_params(void **state)
{
	fx *f = *state;
	ps_server_config cfg;
	ps_err e = { 0, "" };
	ps_model_spec big = test_spec();
	const float *w = NULL;
	const ps_model_spec *spec = NULL;
	uint64_t n = 0;
	ps_msg m;

	ps_server_destroy(&f->s);
	memset(&cfg, 0, sizeof cfg);
	cfg.num_workers = NUM_WORKERS;
	cfg.optim.kind = PS_OPTIM_SGD;
	cfg.optim.lr = LR;
	cfg.max_params = 15; /* test_spec(): 4 * 3 + 3 = 15 parameters */
	assert_int_equal(ps_server_new(&f->s, &cfg, f->t, &e), PS_OK);
	/* An absurd model, and one a single parameter too large. */
	big.input_dim = 1u << 24;
	big.output_dim = 127;
	m = mk_hello(f, PS_ROLE_WORKER, 0, &big);
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_ERANGE,
			PS_WIRE_ERR_MALFORMED, REJ(malformed));
	big = test_spec();
	big.input_dim = 5; /* 5 * 3 + 3 = 18 */
	m = mk_hello(f, PS_ROLE_EVALUATOR, 0, &big);
	expect_rejected(f, &f->peer[0], &m, NULL, 0, PS_ERANGE,
			PS_WIRE_ERR_MALFORMED, REJ(malformed));
	assert_int_equal(ps_server_weights(f->s, &w, &n, &spec), PS_EINVAL);
	/* Exactly at the bound is fine. */
	join_all(f);
	assert_int_equal(ps_server_weights(f->s, &w, &n, &spec), PS_OK);
	assert_int_equal(n, 15);
	assert_still_serving(f);
}

/* Connections the transport refused (CURVE) appear among the
 * rejections, and in their total. */
static void test_server_stats_json_counts_transport_refusals(void **state)
{
	fx *f = *state;
	ps_transport_refusals ts = { .unauthorized = 3, .handshake_failed = 5 };
	FILE *tmp = tmpfile();
	char buf[4096];
	size_t len;

	assert_non_null(tmp);
	fake_transport_set_refusals(f->t, &ts);
	ps_server_write_stats_json(f->s, tmp);
	rewind(tmp);
	len = fread(buf, 1, sizeof buf - 1, tmp);
	fclose(tmp);
	buf[len] = '\0';
	assert_non_null(strstr(buf, "\"rejected\": {\"total\": 8, "));
	assert_non_null(strstr(buf, "\"unauthorized\": 3, "
				    "\"handshake_failed\": 5}"));
}

/* The rate a Weights reply announces (sgd_lr): the rate of the next
 * update when that update is plain w -= lr * g, else 0. */
static float announced_rate(fx *f)
{
	ps_msg m = mk_pull(f, 1, 0, NPARAMS), r;

	assert_int_equal(feed(f, &f->peer[0], &m, NULL, 0), PS_OK);
	take_next_reply(f, &f->peer[0], &r);
	assert_int_equal(r.kind, PS_MSG_WEIGHTS);
	return r.u.weights.sgd_lr;
}

static void test_server_weights_announce_the_sgd_rate(void **state)
{
	fx *f = *state;
	ps_server_config cfg;
	float w[NPARAMS], g[NPARAMS], lr;

	/* Plain SGD: the rate, and a push added at that rate locally gives
	 * the server's weights after it, bit for bit. */
	join_all(f);
	lr = announced_rate(f);
	assert_true(lr == LR);
	memcpy(w, weights(f), sizeof w);
	gradient(g, NPARAMS, 3);
	for (size_t i = 0; i < NPARAMS; i++)
		w[i] -= lr * g[i];
	push_clock(f, 0, 0, 0, g, 8);
	assert_memory_equal(w, weights(f), sizeof w);

	/* A schedule: the rate at the version of the weights, which is the
	 * update number the next push is applied as. */
	memset(&cfg, 0, sizeof cfg);
	cfg.optim.kind = PS_OPTIM_SGD;
	cfg.optim.lr = LR;
	cfg.optim.schedule = PS_LR_STEP;
	cfg.optim.decay_steps = 1;
	cfg.optim.gamma = 0.5;
	use_server_cfg(f, &cfg);
	join_all(f);
	assert_true(announced_rate(f) == LR);
	push_clock(f, 0, 0, 0, g, 8);
	assert_true(announced_rate(f) == LR / 2);

	/* Anything else: 0. */
	memset(&cfg, 0, sizeof cfg);
	cfg.optim.kind = PS_OPTIM_MOMENTUM;
	cfg.optim.lr = LR;
	cfg.optim.momentum = 0.9;
	use_server_cfg(f, &cfg);
	join_all(f);
	assert_true(announced_rate(f) == 0.0f);
	memset(&cfg, 0, sizeof cfg);
	cfg.optim.weight_decay = 0.01;
	use_server_cfg(f, &cfg);
	join_all(f);
	assert_true(announced_rate(f) == 0.0f);
	use_server(f, "async", 1, 0);
	join_all(f);
	assert_true(announced_rate(f) == 0.0f);
	use_server(f, "async", 0, 0.5);
	join_all(f);
	assert_true(announced_rate(f) == 0.0f);
	use_server(f, "ssp:2", 0, 0);
	join_all(f);
	assert_true(announced_rate(f) == LR);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_server_hello_welcomes_worker),
		T(test_server_repeated_push_is_applied_once),
		T(test_server_answers_heartbeats),
		T(test_server_heartbeat_names_the_held_pull),
		T(test_server_drops_silent_worker_under_bsp),
		T(test_server_drops_rank_that_never_registers),
		T(test_server_ack_leaves_before_the_step_async),
		T(test_server_ack_leaves_before_the_step_ssp),
		T(test_server_bsp_ack_reports_the_version_before_the_step),
		T(test_server_drop_ack_hook),
		T(test_server_checkpoint_restores_everything),
		T(test_server_refuses_model_beyond_max_params),
		T(test_server_stats_json_counts_transport_refusals),
		T(test_server_hello_again_keeps_state),
		T(test_server_hello_from_new_peer_takes_over),
		T(test_server_pull_returns_weights),
		T(test_server_pull_claiming_held_weights),
		T(test_server_weights_announce_the_sgd_rate),
		T(test_server_push_applies_sgd_and_measures_staleness),
		T(test_server_staleness_histogram_buckets),
		T(test_server_push_to_a_subrange),
		T(test_server_push_misaligned_gradient),
		T(test_server_rejects_garbage_bytes),
		T(test_server_rejects_wrong_protocol_version),
		T(test_server_rejects_push_of_wrong_length),
		T(test_server_rejects_nonfinite_push),
		T(test_server_rejects_unknown_worker),
		T(test_server_rejects_bad_rank),
		T(test_server_bad_rank_hello_does_not_fix_the_model),
		T(test_server_rejects_model_mismatch),
		T(test_server_rejects_invalid_model_spec),
		T(test_server_rejects_push_ahead_of_version),
		T(test_server_rejects_pushes_that_must_not_apply),
	T(test_server_rejects_range_beyond_model),
		T(test_server_rejects_messages_only_servers_send),
		T(test_server_count_malformed_answers_sender),
		T(test_server_evaluator_pulls_and_is_not_a_worker),
		T(test_server_rejects_evaluators_beyond_capacity),
		T(test_server_silent_evaluators_free_their_slots),
		T(test_server_bye_from_every_worker_ends_training),
		T(test_server_hello_after_bye_reopens_worker),
		T(test_server_anonymous_peer_gets_no_reply),
		T(test_server_send_failure_is_counted),
		T(test_server_new_rejects_bad_config),
		T(test_server_destroy_accepts_null),
		T(test_server_run_stops_and_times_out),
		T(test_server_waits_for_announced_evaluator),
		T(test_server_stats_json_has_the_figures),
		T(test_server_consistency_parse),
		T(test_server_new_rejects_bad_consistency_config),
		T(test_server_bsp_combines_one_step_per_clock),
		T(test_server_bsp_refuses_push_before_its_step),
		T(test_server_bsp_bye_releases_waiting_pull),
		T(test_server_stop_releases_waiting_pulls),
		T(test_server_ssp_pull_waits_beyond_the_bound),
		T(test_server_staleness_lr_scales_by_one_over_tau),
		T(test_server_dc_asgd_compensates_by_hand),
	};
#undef T

	/* Refusals are logged as warnings; keep the test output readable. */
	ps_log_setup("test", PS_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
