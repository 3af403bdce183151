/*
 * ps-badpeer: a hostile client for the integration tests. It talks to a
 * ps-server through our own transport and wire modules (never zmq.h) and
 * sends what the server must refuse: garbage, a wrong protocol version,
 * requests before hello, bad hellos and bad pushes. Every one must come
 * back as an Error with the right code. Exit 0 when all did, 1 when one
 * did not, 2 for bad options.
 *
 * With --chaos SECONDS it instead keeps up a random stream of hostile
 * messages for that long (or until the server says training is done):
 * garbage, truncated envelopes and tensors, valid envelopes with absurd
 * lengths, NaN pushes, floods of pulls, oversized frames on a connection
 * of their own, and more. It checks every reply and ends with what it
 * sent by kind and what the server's rejection counters must therefore
 * show, as JSON, for the test to compare with the server's stats.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ps_cli.h"
#include "ps_log.h"
#include "ps_rng.h"
#include "ps_transport.h"
#include "ps_wire.h"

/* One connection and the running score. */
typedef struct badpeer {
	ps_transport *t;
	double timeout;
	uint64_t next_id;
	int cases, passed; /* hostile messages sent, refused as expected */
	int failures;      /* other steps that went wrong */
	uint8_t buf[PS_WIRE_HEAD_MAX];
} badpeer;

/* The names the server's stats JSON gives the rejection counters. */
static const char *code_name(enum ps_wire_errcode c)
{
	switch (c) {
	case PS_WIRE_ERR_MALFORMED:
		return "malformed";
	case PS_WIRE_ERR_VERSION:
		return "version";
	case PS_WIRE_ERR_UNKNOWN_WORKER:
		return "unknown_worker";
	case PS_WIRE_ERR_BAD_LENGTH:
		return "bad_length";
	case PS_WIRE_ERR_NONFINITE:
		return "nonfinite";
	case PS_WIRE_ERR_MODEL_MISMATCH:
		return "model_mismatch";
	case PS_WIRE_ERR_BAD_RANK:
		return "bad_rank";
	case PS_WIRE_ERR_SHUTTING_DOWN:
		return "shutting_down";
	case PS_WIRE_ERR_TOO_OLD:
		return "too_old";
	case PS_WIRE_ERR_UNSPECIFIED:
		break;
	}
	return "unspecified";
}

static int send_raw(badpeer *p, const void *head, size_t hlen,
		    const void *tensor, size_t tlen, ps_err *e)
{
	int rc = ps_transport_send(p->t, NULL, head, hlen, tensor, tlen);
	if (rc != PS_OK)
		return ps_err_set(e, rc, "cannot send to %s: %s",
				  ps_transport_endpoint(p->t), ps_strerror(rc));
	return PS_OK;
}

static int send_msg(badpeer *p, const ps_msg *m, const void *tensor,
		    size_t tlen, ps_err *e)
{
	size_t len = 0;
	int rc = ps_wire_encode(m, p->buf, sizeof p->buf, &len);
	if (rc != PS_OK)
		return ps_err_set(e, rc, "cannot encode %s: %s",
				  ps_msg_kind_name(m->kind), ps_strerror(rc));
	return send_raw(p, p->buf, len, tensor, tlen, e);
}

/* Wait (bounded by p->timeout) for the next reply and decode it. */
static int recv_msg(badpeer *p, ps_msg *out, ps_err *e)
{
	double deadline = ps_now() + p->timeout;
	ps_frame f;
	int rc;

	for (;;) {
		double left = deadline - ps_now();
		if (left <= 0)
			return ps_err_set(e, PS_ETIMEDOUT,
					  "no reply from %s within %g s",
					  ps_transport_endpoint(p->t),
					  p->timeout);
		rc = ps_transport_recv(p->t, &f, (int)(left * 1000) + 1);
		if (rc == PS_ETIMEDOUT || rc == PS_EINTR)
			continue;
		if (rc != PS_OK)
			return ps_err_set(e, rc, "receive failed: %s",
					  ps_strerror(rc));
		rc = ps_wire_decode(f.head, f.head_len, out, e);
		if (rc == PS_OK)
			rc = ps_wire_check_tensor(out, f.tensor_len, e);
		return rc;
	}
}

/* Score one case whose message went out with send status send_rc: the
 * reply must be an Error with code `want` echoing request_id. */
static void expect_error(badpeer *p, const char *name, int send_rc,
			 const ps_err *send_err, uint64_t request_id,
			 enum ps_wire_errcode want)
{
	ps_msg m;
	ps_err e = {0};
	int rc = send_rc;

	p->cases++;
	if (rc != PS_OK) {
		printf("FAIL %-26s %s\n", name, send_err->msg);
		return;
	}
	rc = recv_msg(p, &m, &e);
	if (rc != PS_OK) {
		printf("FAIL %-26s expected error %s: %s\n", name,
		       code_name(want), e.msg);
		return;
	}
	if (m.kind != PS_MSG_ERROR) {
		printf("FAIL %-26s expected error %s, got %s\n", name,
		       code_name(want), ps_msg_kind_name(m.kind));
		return;
	}
	if (m.u.error.code != want || m.request_id != request_id) {
		printf("FAIL %-26s expected error %s for request %" PRIu64
		       ", got error %s for request %" PRIu64 ": %s\n",
		       name, code_name(want), request_id,
		       code_name(m.u.error.code), m.request_id,
		       m.u.error.message);
		return;
	}
	p->passed++;
	printf("ok   %-26s error %s: %s\n", name, code_name(want),
	       m.u.error.message);
}

/* Random bytes behind a first byte that no protobuf field can start with
 * (field 1, wire type 7), so that every seed gives a message the server
 * must call malformed rather than, by chance, a valid envelope. */
static void garbage_case(badpeer *p, ps_rng *rng, size_t len, size_t tlen)
{
	static uint8_t bytes[4096], tensor[64];
	char name[64];
	ps_err e = {0};
	int rc;

	for (size_t i = 0; i < len; i++)
		bytes[i] = (uint8_t)ps_rng_next(rng);
	for (size_t i = 0; i < tlen; i++)
		tensor[i] = (uint8_t)ps_rng_next(rng);
	bytes[0] = 0x0f;
	snprintf(name, sizeof name, "garbage-%zu-bytes%s", len,
		 tlen ? "+tensor" : "");
	rc = send_raw(p, bytes, len, tensor, tlen, &e);
	expect_error(p, name, rc, &e, 0, PS_WIRE_ERR_MALFORMED);
}

static void msg_case(badpeer *p, const char *name, const ps_msg *m,
		     const void *tensor, size_t tlen,
		     enum ps_wire_errcode want)
{
	ps_err e = {0};
	int rc = send_msg(p, m, tensor, tlen, &e);
	expect_error(p, name, rc, &e, m->request_id, want);
}

/* A push of `count` floats for range [0, num_params) from worker_id. */
static void push_case(badpeer *p, const char *name, uint32_t worker_id,
		      uint64_t num_params, const float *g, size_t count,
		      enum ps_wire_errcode want)
{
	ps_msg m;
	ps_msg_init(&m, PS_MSG_PUSH, p->next_id++, worker_id);
	m.u.push.begin = 0;
	m.u.push.end = num_params;
	m.u.push.batch_size = 1;
	m.u.push.base_version = 0;
	msg_case(p, name, &m, g, count * sizeof *g, want);
}

/* The valid evaluator hello the push cases need; on success *welcome is
 * the server's answer. A failure counts against the run. */
static int register_evaluator(badpeer *p, const ps_model_spec *spec,
			      ps_msg_welcome *welcome)
{
	ps_msg m, r;
	ps_err e = {0};
	int rc;

	ps_msg_init(&m, PS_MSG_HELLO, p->next_id++, 0);
	m.u.hello.role = PS_ROLE_EVALUATOR;
	m.u.hello.model = *spec;
	rc = send_msg(p, &m, NULL, 0, &e);
	if (rc == PS_OK)
		rc = recv_msg(p, &r, &e);
	if (rc == PS_OK && (r.kind != PS_MSG_WELCOME ||
			    r.request_id != m.request_id)) {
		rc = ps_err_set(&e, PS_EPROTO,
				"expected welcome for request %" PRIu64
				", got %s for request %" PRIu64 ": %s",
				m.request_id, ps_msg_kind_name(r.kind),
				r.request_id,
				r.kind == PS_MSG_ERROR ? r.u.error.message
						       : "");
	}
	if (rc != PS_OK) {
		p->failures++;
		printf("FAIL %-26s %s\n", "hello-as-evaluator", e.msg);
		return rc;
	}
	*welcome = r.u.welcome;
	printf("     %-26s welcome: evaluator id %u, %" PRIu64
	       " parameters\n",
	       "hello-as-evaluator", welcome->worker_id,
	       welcome->num_params);
	return PS_OK;
}

/* Say bye so that the server does not wait for this evaluator. A failure
 * counts against the run. */
static void say_bye(badpeer *p, uint32_t worker_id)
{
	ps_msg m, r;
	ps_err e = {0};
	int rc;

	ps_msg_init(&m, PS_MSG_BYE, p->next_id++, worker_id);
	rc = send_msg(p, &m, NULL, 0, &e);
	if (rc == PS_OK)
		rc = recv_msg(p, &r, &e);
	if (rc == PS_OK && r.kind != PS_MSG_BYE)
		rc = ps_err_set(&e, PS_EPROTO, "expected bye, got %s: %s",
				ps_msg_kind_name(r.kind),
				r.kind == PS_MSG_ERROR ? r.u.error.message
						       : "");
	if (rc != PS_OK) {
		p->failures++;
		printf("FAIL %-26s %s\n", "bye", e.msg);
	}
}

static void run_cases(badpeer *p, const ps_model_spec *spec,
		      uint64_t garbage_seed)
{
	static const size_t garbage_sizes[] = {1, 2, 17, 100, 1000, 2048,
					       3000};
	ps_msg_welcome welcome;
	ps_model_spec other = *spec;
	float *g = NULL;
	ps_rng rng;
	ps_msg m;
	size_t n;

	ps_rng_seed(&rng, garbage_seed);
	for (size_t i = 0; i < sizeof garbage_sizes / sizeof *garbage_sizes;
	     i++)
		garbage_case(p, &rng, garbage_sizes[i], 0);
	garbage_case(p, &rng, 40, 64);

	/* A well-formed pull, but of protocol version 2. */
	ps_msg_init(&m, PS_MSG_PULL, p->next_id++, 1);
	m.protocol = PS_PROTOCOL_VERSION + 1;
	m.u.pull.end = 1;
	msg_case(p, "wrong-protocol-version", &m, NULL, 0,
		 PS_WIRE_ERR_VERSION);

	/* Worker id 1 belongs to rank 0, which may have said hello from
	 * its own connection: the id alone must not be enough. */
	ps_msg_init(&m, PS_MSG_PULL, p->next_id++, 1);
	m.u.pull.end = 1;
	msg_case(p, "pull-before-hello", &m, NULL, 0,
		 PS_WIRE_ERR_UNKNOWN_WORKER);

	ps_msg_init(&m, PS_MSG_HELLO, p->next_id++, 0);
	m.u.hello.role = PS_ROLE_WORKER;
	m.u.hello.rank = UINT32_MAX;
	m.u.hello.model = *spec;
	msg_case(p, "hello-rank-out-of-range", &m, NULL, 0,
		 PS_WIRE_ERR_BAD_RANK);

	/* The server has a model once this hello is through (the first
	 * hello sizes it), so that the next one can differ from it. */
	if (register_evaluator(p, spec, &welcome) != PS_OK)
		return;
	other.input_dim++;
	ps_msg_init(&m, PS_MSG_HELLO, p->next_id++, 0);
	m.u.hello.role = PS_ROLE_EVALUATOR;
	m.u.hello.model = other;
	msg_case(p, "hello-model-mismatch", &m, NULL, 0,
		 PS_WIRE_ERR_MODEL_MISMATCH);
	n = (size_t)welcome.num_params;
	g = n > 0 ? calloc(n + 1, sizeof *g) : NULL;
	if (!g) {
		p->failures++;
		printf("FAIL %-26s no room for %zu floats\n", "pushes", n);
		goto out;
	}
	push_case(p, "push-wrong-length", welcome.worker_id, n, g, n - 1,
		  PS_WIRE_ERR_BAD_LENGTH);
	g[n / 2] = NAN;
	push_case(p, "push-nan", welcome.worker_id, n, g, n,
		  PS_WIRE_ERR_NONFINITE);
	g[n / 2] = 0;
	g[n - 1] = -INFINITY;
	push_case(p, "push-inf", welcome.worker_id, n, g, n,
		  PS_WIRE_ERR_NONFINITE);
	g[n - 1] = 0;
	/* Well formed and finite, but evaluators only pull. The gradient is
	 * zero, so that a server which took it would still train right (and
	 * be caught by its update count). */
	push_case(p, "push-from-evaluator", welcome.worker_id, n, g, n,
		  PS_WIRE_ERR_MALFORMED);
	/* Right length, range beyond the model. */
	ps_msg_init(&m, PS_MSG_PUSH, p->next_id++, welcome.worker_id);
	m.u.push.begin = 1;
	m.u.push.end = n + 1;
	m.u.push.batch_size = 1;
	msg_case(p, "push-range-beyond-model", &m, g, n * sizeof *g,
		 PS_WIRE_ERR_MALFORMED);
	/* A message only a server sends. */
	ps_msg_init(&m, PS_MSG_WELCOME, p->next_id++, welcome.worker_id);
	msg_case(p, "welcome-to-server", &m, NULL, 0, PS_WIRE_ERR_MALFORMED);
out:
	free(g);
	say_bye(p, welcome.worker_id);
}


/* --- chaos: a bounded stream of hostile messages during a real run --- */

enum chaos_kind {
	K_GARBAGE,
	K_TRUNCATED_ENVELOPE,
	K_TRUNCATED_TENSOR,
	K_ABSURD_PUSH_LENGTH,
	K_ABSURD_PULL_RANGE,
	K_ABSURD_HELLO,
	K_PUSH_BEYOND_MODEL,
	K_NAN_PUSH,
	K_WRONG_VERSION,
	K_UNKNOWN_WORKER,
	K_BAD_RANK,
	K_PULL_FLOOD,
	K_OVERSIZED,
	K_COUNT
};

static const char *const kind_names[K_COUNT] = {
	"garbage",	     "truncated_envelope", "truncated_tensor",
	"absurd_push_length", "absurd_pull_range", "absurd_hello",
	"push_beyond_model", "nan_push",	   "wrong_version",
	"unknown_worker",    "bad_rank",	   "pull_flood",
	"oversized",
};

/* The error each kind must draw (UNSPECIFIED: weights, for pulls; or
 * nothing at all, for an oversized frame ZeroMQ drops unread). */
static const enum ps_wire_errcode kind_code[K_COUNT] = {
	PS_WIRE_ERR_MALFORMED,	    PS_WIRE_ERR_MALFORMED,
	PS_WIRE_ERR_BAD_LENGTH,	    PS_WIRE_ERR_BAD_LENGTH,
	PS_WIRE_ERR_MALFORMED,	    PS_WIRE_ERR_MODEL_MISMATCH,
	PS_WIRE_ERR_MALFORMED,	    PS_WIRE_ERR_NONFINITE,
	PS_WIRE_ERR_VERSION,	    PS_WIRE_ERR_UNKNOWN_WORKER,
	PS_WIRE_ERR_BAD_RANK,	    PS_WIRE_ERR_UNSPECIFIED,
	PS_WIRE_ERR_UNSPECIFIED,
};

/* Replies outstanding at most: below the server's per-peer queue (64),
 * so that the server never has to drop a reply to this peer. */
#define WINDOW 48
#define FLOOD_MAX 32

typedef struct expected {
	enum chaos_kind kind;
	uint64_t request_id; /* 0: the envelope cannot be decoded */
} expected;

typedef struct chaos {
	badpeer *p;
	ps_rng rng;
	uint32_t id;  /* the evaluator id this peer registered */
	uint64_t n;   /* the model's parameters */
	float *g;     /* n + 1 floats of scratch gradient */
	uint8_t *junk; /* random bytes */
	size_t oversize;
	expected fifo[WINDOW];
	size_t head, count; /* replies come in request order */
	uint64_t sent[K_COUNT], answered[K_COUNT];
	uint64_t wrong; /* replies that were not what the kind must draw */
	int done;       /* the server said training is done */
} chaos;

static void expect(chaos *c, enum chaos_kind kind, uint64_t request_id)
{
	c->fifo[(c->head + c->count) % WINDOW] =
		(expected){kind, request_id};
	c->count++;
	c->sent[kind]++;
}

/* Take in one reply (waiting up to the peer's timeout) and check it
 * against the oldest outstanding message. */
static int take_reply(chaos *c, int timeout_ms)
{
	ps_frame f;
	ps_msg m;
	ps_err e = {0};
	expected x;
	int rc = ps_transport_recv(c->p->t, &f, timeout_ms);

	if (rc != PS_OK)
		return rc;
	if (c->count == 0) {
		c->wrong++;
		printf("FAIL chaos: a reply nobody asked for\n");
		return PS_OK;
	}
	x = c->fifo[c->head];
	c->head = (c->head + 1) % WINDOW;
	c->count--;
	rc = ps_wire_decode(f.head, f.head_len, &m, &e);
	if (rc == PS_OK)
		rc = ps_wire_check_tensor(&m, f.tensor_len, &e);
	if (rc != PS_OK) {
		c->wrong++;
		printf("FAIL chaos %s: bad reply: %s\n", kind_names[x.kind],
		       e.msg);
		return PS_OK;
	}
	if (kind_code[x.kind] == PS_WIRE_ERR_UNSPECIFIED) {
		if (m.kind == PS_MSG_WEIGHTS && m.request_id == x.request_id &&
		    f.tensor_len == c->n * sizeof(float)) {
			c->answered[x.kind]++;
			if (m.u.weights.training_done)
				c->done = 1;
			return PS_OK;
		}
	} else if (m.kind == PS_MSG_ERROR && m.u.error.code == kind_code[x.kind] &&
		   m.request_id == x.request_id) {
		c->answered[x.kind]++;
		return PS_OK;
	}
	if (c->wrong++ < 10)
		printf("FAIL chaos %s: request %" PRIu64 " drew %s %s for "
		       "request %" PRIu64 ": %s\n",
		       kind_names[x.kind], x.request_id, ps_msg_kind_name(m.kind),
		       m.kind == PS_MSG_ERROR ? code_name(m.u.error.code) : "",
		       m.request_id,
		       m.kind == PS_MSG_ERROR ? m.u.error.message : "");
	return PS_OK;
}

/* Make room in the window, then take in whatever else has arrived. */
static int pace(chaos *c)
{
	int rc;
	while (c->count >= WINDOW) {
		rc = take_reply(c, (int)(c->p->timeout * 1000));
		if (rc != PS_OK)
			return rc;
	}
	while (c->count > 0 && take_reply(c, 0) == PS_OK)
		;
	return PS_OK;
}

static int chaos_send(chaos *c, enum chaos_kind kind, const ps_msg *m,
		      const void *head, size_t hlen, const void *tensor,
		      size_t tlen)
{
	size_t len = 0;
	int rc;

	if (m) {
		rc = ps_wire_encode(m, c->p->buf, sizeof c->p->buf, &len);
		if (rc != PS_OK)
			return rc;
		head = c->p->buf;
		hlen = len;
	}
	rc = ps_transport_send(c->p->t, NULL, head, hlen, tensor, tlen);
	if (rc == PS_OK)
		expect(c, kind, m && kind != K_TRUNCATED_ENVELOPE ? m->request_id
								  : 0);
	return rc;
}

/* A push of [begin, end) from this peer, with the fields a real one has
 * (so that a truncated one is cut inside its body). */
static void chaos_push(chaos *c, ps_msg *m, uint64_t begin, uint64_t end)
{
	ps_msg_init(m, PS_MSG_PUSH, c->p->next_id++, c->id);
	m->u.push.begin = begin;
	m->u.push.end = end;
	m->u.push.batch_size = 1;
	m->u.push.loss = 1.5;
	m->u.push.seq = m->request_id;
}

/* An oversized frame, on a connection of its own: ZeroMQ on the server
 * drops it unread and disconnects the sender. 1 when the disconnect was
 * seen and no reply came. */
static int oversized(chaos *c)
{
	ps_transport_opts o = {.max_message = 0, .linger_ms = 0};
	ps_transport *t = NULL;
	ps_transport_refusals st = {0};
	ps_err e = {0};
	uint8_t *big = calloc(1, c->oversize);
	double deadline = ps_now() + c->p->timeout;
	int dropped = 0;

	c->sent[K_OVERSIZED]++;
	if (!big || ps_transport_connect(&t, ps_transport_endpoint(c->p->t), &o,
					 &e) != PS_OK ||
	    ps_transport_send(t, NULL, "x", 1, big, c->oversize) != PS_OK)
		goto out;
	while (ps_now() < deadline) {
		ps_frame f;
		int rc = ps_transport_recv(t, &f, 20);
		if (rc == PS_OK) {
			printf("FAIL chaos oversized: the server answered\n");
			break;
		}
		ps_transport_get_refusals(t, &st);
		if (st.disconnects > 0) {
			dropped = 1;
			break;
		}
	}
out:
	if (dropped)
		c->answered[K_OVERSIZED]++;
	else
		c->wrong++;
	ps_transport_destroy(&t);
	free(big);
	return PS_OK;
}

static int chaos_one(chaos *c, enum chaos_kind kind)
{
	ps_msg m;
	size_t len, tlen, cut;
	uint64_t id = 0;
	int rc = PS_OK;

	switch (kind) {
	case K_GARBAGE:
		/* As garbage_case: a first byte no field starts with. */
		len = 1 + (size_t)ps_rng_below(&c->rng, 3000);
		for (size_t i = 0; i < len; i++)
			c->junk[i] = (uint8_t)ps_rng_next(&c->rng);
		c->junk[0] = 0x0f;
		tlen = ps_rng_below(&c->rng, 4) == 0
			       ? (size_t)ps_rng_below(&c->rng, 64)
			       : 0;
		return chaos_send(c, kind, NULL, c->junk, len,
				  c->junk + 3000, tlen);
	case K_TRUNCATED_ENVELOPE:
		chaos_push(c, &m, 0, c->n);
		rc = ps_wire_encode(&m, c->p->buf, sizeof c->p->buf, &len);
		if (rc != PS_OK)
			return rc;
		/* The body is the last field and longer than 8 bytes: any
		 * cut of 1 to 8 bytes leaves it short. */
		cut = 1 + (size_t)ps_rng_below(&c->rng, 8);
		return chaos_send(c, kind, NULL, c->p->buf, len - cut, c->g,
				  0);
	case K_TRUNCATED_TENSOR:
		chaos_push(c, &m, 0, c->n);
		cut = 1 + (size_t)ps_rng_below(&c->rng, 4 * c->n);
		return chaos_send(c, kind, &m, NULL, 0, c->g,
				  c->n * sizeof(float) - cut);
	case K_ABSURD_PUSH_LENGTH: {
		static const uint64_t ends[] = {(uint64_t)1 << 32,
						(uint64_t)1 << 62, UINT64_MAX};
		chaos_push(c, &m, 0, ends[ps_rng_below(&c->rng, 3)]);
		return chaos_send(c, kind, &m, NULL, 0, c->g, sizeof(float));
	}
	case K_ABSURD_PULL_RANGE: {
		const uint64_t ends[] = {c->n + 1, (uint64_t)1 << 40,
					 UINT64_MAX};
		ps_msg_init(&m, PS_MSG_PULL, c->p->next_id++, c->id);
		if (ps_rng_below(&c->rng, 4) == 0) {
			m.u.pull.begin = 5; /* begin > end */
			m.u.pull.end = 1;
		} else {
			m.u.pull.end = ends[ps_rng_below(&c->rng, 3)];
		}
		return chaos_send(c, kind, &m, NULL, 0, NULL, 0);
	}
	case K_ABSURD_HELLO:
		ps_msg_init(&m, PS_MSG_HELLO, c->p->next_id++, 0);
		m.u.hello.role = PS_ROLE_EVALUATOR;
		snprintf(m.u.hello.model.name, sizeof m.u.hello.model.name,
			 "softmax");
		m.u.hello.model.input_dim = 0x7fffffffu;
		m.u.hello.model.output_dim = 0x7fffffffu;
		return chaos_send(c, kind, &m, NULL, 0, NULL, 0);
	case K_PUSH_BEYOND_MODEL:
		chaos_push(c, &m, c->n, c->n + 1);
		return chaos_send(c, kind, &m, NULL, 0, c->g, sizeof(float));
	case K_NAN_PUSH: {
		size_t at = (size_t)ps_rng_below(&c->rng, c->n);
		static const float bad[3] = {NAN, INFINITY, -INFINITY};
		chaos_push(c, &m, 0, c->n);
		c->g[at] = bad[ps_rng_below(&c->rng, 3)];
		rc = chaos_send(c, kind, &m, NULL, 0, c->g,
				c->n * sizeof(float));
		c->g[at] = 0;
		return rc;
	}
	case K_WRONG_VERSION:
		ps_msg_init(&m, PS_MSG_PULL, c->p->next_id++, c->id);
		m.protocol = PS_PROTOCOL_VERSION + 1 +
			     (uint32_t)ps_rng_below(&c->rng, 1000);
		m.u.pull.end = c->n;
		return chaos_send(c, kind, &m, NULL, 0, NULL, 0);
	case K_UNKNOWN_WORKER:
		/* Trainer ids belong to other connections; ids up to
		 * 65535 are never an evaluator's, so never this peer's. */
		id = 1 + ps_rng_below(&c->rng, 65535);
		ps_msg_init(&m, PS_MSG_PULL, c->p->next_id++, (uint32_t)id);
		m.u.pull.end = c->n;
		return chaos_send(c, kind, &m, NULL, 0, NULL, 0);
	case K_BAD_RANK:
		ps_msg_init(&m, PS_MSG_HELLO, c->p->next_id++, 0);
		m.u.hello.role = PS_ROLE_WORKER;
		m.u.hello.rank = UINT32_MAX - (uint32_t)ps_rng_below(&c->rng, 100);
		snprintf(m.u.hello.model.name, sizeof m.u.hello.model.name,
			 "softmax");
		m.u.hello.model.input_dim = 1;
		m.u.hello.model.output_dim = 2;
		return chaos_send(c, kind, &m, NULL, 0, NULL, 0);
	case K_PULL_FLOOD: {
		uint64_t burst = 1 + ps_rng_below(&c->rng, FLOOD_MAX);
		for (uint64_t i = 0; i < burst && rc == PS_OK; i++) {
			rc = pace(c);
			if (rc != PS_OK)
				break;
			ps_msg_init(&m, PS_MSG_PULL, c->p->next_id++, c->id);
			m.u.pull.end = c->n;
			rc = chaos_send(c, kind, &m, NULL, 0, NULL, 0);
		}
		return rc;
	}
	case K_OVERSIZED:
		return oversized(c);
	case K_COUNT:
		break;
	}
	return PS_EINVAL;
}

/* Parse --kinds: a comma-separated list of kind names, or "all". */
static int parse_kinds(const char *list, int on[K_COUNT], ps_err *e)
{
	const char *p = list;

	memset(on, 0, K_COUNT * sizeof *on);
	if (strcmp(list, "all") == 0) {
		for (int k = 0; k < K_COUNT; k++)
			on[k] = 1;
		return PS_OK;
	}
	while (*p) {
		size_t n = strcspn(p, ",");
		int k;
		for (k = 0; k < K_COUNT; k++)
			if (strlen(kind_names[k]) == n &&
			    strncmp(kind_names[k], p, n) == 0)
				break;
		if (k == K_COUNT)
			return ps_err_set(e, PS_EINVAL, "--kinds: unknown kind '%.*s'",
					  (int)n, p);
		on[k] = 1;
		p += n;
		if (*p == ',')
			p++;
	}
	return PS_OK;
}

/* The run: register as an evaluator, send for `seconds`, take in every
 * outstanding reply, say bye, and print the accounting. */
static int run_chaos(badpeer *p, const ps_model_spec *spec, uint64_t seed,
		     double seconds, const int on[K_COUNT], size_t oversize)
{
	static chaos c;
	ps_msg_welcome welcome;
	enum chaos_kind pick[K_COUNT];
	int npick = 0, rc = PS_OK;
	uint64_t total = 0, good = 0;
	uint64_t counters[PS_WIRE_ERR_SHUTTING_DOWN + 1] = {0};
	double t0 = ps_now(), last_pull = 0;

	memset(&c, 0, sizeof c);
	c.p = p;
	c.oversize = oversize;
	ps_rng_seed(&c.rng, seed);
	for (int k = 0; k < K_COUNT; k++)
		if (on[k] && (k != K_OVERSIZED || oversize > 0))
			pick[npick++] = (enum chaos_kind)k;
	if (npick == 0) {
		printf("FAIL chaos: no kind to send\n");
		return 1;
	}
	if (register_evaluator(p, spec, &welcome) != PS_OK)
		return 1;
	c.id = welcome.worker_id;
	c.n = welcome.num_params;
	c.g = calloc((size_t)c.n + 1, sizeof *c.g);
	c.junk = malloc(3000 + 64);
	if (!c.g || !c.junk) {
		printf("FAIL chaos: out of memory\n");
		rc = PS_ENOMEM;
		goto out;
	}
	while (rc == PS_OK && !c.done && ps_now() - t0 < seconds) {
		enum chaos_kind k = pick[ps_rng_below(&c.rng, (uint64_t)npick)];
		rc = pace(&c);
		if (rc != PS_OK)
			break;
		/* A pull now and then learns whether training is done,
		 * whatever the kinds. */
		if (ps_now() - last_pull > 0.1 && on[K_PULL_FLOOD] == 0) {
			ps_msg m;
			ps_msg_init(&m, PS_MSG_PULL, p->next_id++, c.id);
			m.u.pull.end = c.n;
			rc = chaos_send(&c, K_PULL_FLOOD, &m, NULL, 0, NULL, 0);
			last_pull = ps_now();
			continue;
		}
		rc = chaos_one(&c, k);
	}
	while (rc == PS_OK && c.count > 0)
		rc = take_reply(&c, (int)(p->timeout * 1000));
	if (rc != PS_OK)
		printf("FAIL chaos: %s with %zu replies outstanding\n",
		       ps_strerror(rc), c.count);
out:
	say_bye(p, welcome.worker_id);
	for (int k = 0; k < K_COUNT; k++) {
		total += c.sent[k];
		good += c.answered[k];
		if (k != K_PULL_FLOOD && k != K_OVERSIZED)
			counters[kind_code[k]] += c.sent[k];
	}
	printf("ps-badpeer: chaos %.1f s: %" PRIu64 " hostile messages, %" PRIu64
	       " answered as expected, %" PRIu64 " wrong%s\n",
	       ps_now() - t0, total, good, c.wrong,
	       c.done ? "; training done" : "");
	printf("ps-badpeer: sent {");
	for (int k = 0; k < K_COUNT; k++)
		printf("%s\"%s\": %" PRIu64, k ? ", " : "", kind_names[k],
		       c.sent[k]);
	printf("}\nps-badpeer: expect {\"malformed\": %" PRIu64
	       ", \"version\": %" PRIu64 ", \"unknown_worker\": %" PRIu64
	       ", \"bad_length\": %" PRIu64 ", \"nonfinite\": %" PRIu64
	       ", \"model_mismatch\": %" PRIu64 ", \"bad_rank\": %" PRIu64
	       ", \"pulls\": %" PRIu64 ", \"oversized_dropped\": %" PRIu64 "}\n",
	       counters[PS_WIRE_ERR_MALFORMED], counters[PS_WIRE_ERR_VERSION],
	       counters[PS_WIRE_ERR_UNKNOWN_WORKER],
	       counters[PS_WIRE_ERR_BAD_LENGTH], counters[PS_WIRE_ERR_NONFINITE],
	       counters[PS_WIRE_ERR_MODEL_MISMATCH],
	       counters[PS_WIRE_ERR_BAD_RANK], c.sent[K_PULL_FLOOD],
	       c.answered[K_OVERSIZED]);
	free(c.g);
	free(c.junk);
	return rc == PS_OK && c.wrong == 0 && p->failures == 0 && total > 0 &&
			       good == total
		       ? 0
		       : 1;
}

int main(int argc, char **argv)
{
	static const char *const models[] = {"softmax", "linear", "logistic",
					     NULL};
	const char *endpoint = NULL;
	int model = 0, input_dim = 0, output_dim = 1;
	uint64_t seed = 1, garbage_seed = 1;
	double timeout = 5, chaos_seconds = 0;
	const char *kinds = "all";
	int on[K_COUNT];
	uint64_t oversize = 0;
	const ps_cli_opt opts[] = {
		{"connect", PS_CLI_STRING, &endpoint, "ENDPOINT",
		 "server endpoint (tcp://HOST:PORT or ipc://PATH)", 0, -1, NULL},
		{"model", PS_CLI_CHOICE, &model, "NAME",
		 "the server's model, for the hellos that must match it", 0, -1,
		 models},
		{"input-dim", PS_CLI_INT, &input_dim, "N",
		 "the model's features per sample", 1, 1 << 24, NULL},
		{"output-dim", PS_CLI_INT, &output_dim, "K",
		 "the model's classes (1 for linear)", 1, 1 << 20, NULL},
		{"seed", PS_CLI_U64, &seed, "S",
		 "the model's initialization seed", 0, -1, NULL},
		{"garbage-seed", PS_CLI_U64, &garbage_seed, "S",
		 "seed of the garbage bytes", 0, -1, NULL},
		{"timeout", PS_CLI_DOUBLE, &timeout, "SECONDS",
		 "how long to wait for each reply", 0.01, 1e6, NULL},
		{"chaos", PS_CLI_DOUBLE, &chaos_seconds, "SECONDS",
		 "instead of the cases, send random hostile messages for this long "
		 "(or until training is done) and print what the server must count",
		 0, 1e6, NULL},
		{"kinds", PS_CLI_STRING, &kinds, "LIST",
		 "chaos: the kinds to send, comma-separated, or all: garbage, "
		 "truncated_envelope, truncated_tensor, absurd_push_length, "
		 "absurd_pull_range, absurd_hello, push_beyond_model, nan_push, "
		 "wrong_version, unknown_worker, bad_rank, pull_flood, oversized",
		 0, -1, NULL},
		{"oversize-bytes", PS_CLI_U64, &oversize, "N",
		 "chaos: the tensor frame size of the oversized kind (above the "
		 "server's --max-message-mb); 0: none sent",
		 0, 1 << 30, NULL},
		{NULL, 0, NULL, NULL, NULL, 0, 0, NULL},
	};
	ps_transport_opts topts = {.max_message = 0, .linger_ms = 1000};
	ps_model_spec spec;
	badpeer p = {.next_id = 1};
	ps_err e = {0};
	int rc;

	/* Tests watch the output while it runs. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	rc = ps_cli_parse("ps-badpeer",
			  "A hostile client for tests: sends a ps-server messages it must refuse\n"
			  "and checks that each is answered with the right error code.",
			  opts, argc, argv, &e);
	if (rc == PS_CLI_HELP)
		return 0;
	if (rc == PS_OK && !endpoint)
		rc = ps_err_set(&e, PS_EINVAL, "--connect is required");
	if (rc == PS_OK && input_dim == 0)
		rc = ps_err_set(&e, PS_EINVAL, "--input-dim is required");
	if (rc == PS_OK)
		rc = parse_kinds(kinds, on, &e);
	if (rc != PS_OK) {
		fprintf(stderr, "ps-badpeer: %s\n", e.msg);
		return 2;
	}
	memset(&spec, 0, sizeof spec);
	snprintf(spec.name, sizeof spec.name, "%s", models[model]);
	spec.input_dim = (uint32_t)input_dim;
	spec.output_dim = (uint32_t)output_dim;
	spec.init_seed = seed;

	p.timeout = timeout;
	rc = ps_transport_connect(&p.t, endpoint, &topts, &e);
	if (rc != PS_OK) {
		fprintf(stderr, "ps-badpeer: %s\n", e.msg);
		return 1;
	}
	if (chaos_seconds > 0) {
		rc = run_chaos(&p, &spec, garbage_seed, chaos_seconds, on,
			       (size_t)oversize);
		ps_transport_destroy(&p.t);
		return rc;
	}
	run_cases(&p, &spec, garbage_seed);
	ps_transport_destroy(&p.t);
	printf("ps-badpeer: %d hostile messages, %d refused as expected\n",
	       p.cases, p.passed);
	return p.cases > 0 && p.passed == p.cases && p.failures == 0 ? 0 : 1;
}
