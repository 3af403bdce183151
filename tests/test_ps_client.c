/*
 * Unit tests for ps_client's kept pushes and its buffers that spare a
 * copy (pulled weights it keeps, gradients pushed from its own buffer),
 * against a scripted server: a
 * thread of the test that listens on a real ZeroMQ transport (tcp on an
 * ephemeral port), decodes what the client sends, records every push's
 * bytes and answers as its script says. The client runs on the test's
 * own thread; an alarm() watchdog ends the run if anything blocks.
 * Each transport belongs to one thread, as the product requires.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ps_client.h"
#include "ps_error.h"
#include "ps_transport.h"
#include "ps_wire.h"

#define N 50000   /* floats a push: 200 KB, a shared ZeroMQ message */
#define WAIT_MS 5000
#define MAX_SEEN 8

/* What the scripted server saw and did. Written by its thread, read by
 * the test's after pthread_join(). */
typedef struct script {
	ps_transport *t;
	char endpoint[256];
	int failed;            /* the script went wrong: why in `why` */
	char why[200];
	size_t pushes;         /* pushes received */
	ps_msg push[MAX_SEEN]; /* their envelopes */
	float *bytes[MAX_SEEN];/* their tensors (N floats each) */
	double heartbeat;      /* announced in the welcome; 0: 5 s */
	ps_msg pull[MAX_SEEN]; /* pulls received, in order */
	size_t pulls;
} script;

static const ps_transport_opts quick = {0, 0, NULL};

static void script_fail(script *s, const char *why)
{
	if (!s->failed)
		snprintf(s->why, sizeof s->why, "%s", why);
	s->failed = 1;
}

/* Receive one message: decoded into *m, a push's tensor recorded. */
static int script_recv(script *s, ps_peer *from, ps_msg *m)
{
	ps_frame f;
	ps_err e = {0, ""};

	if (ps_transport_recv(s->t, &f, WAIT_MS) != PS_OK) {
		script_fail(s, "nothing came from the client");
		return -1;
	}
	if (ps_wire_decode(f.head, f.head_len, m, &e) != PS_OK) {
		script_fail(s, "undecodable message");
		return -1;
	}
	*from = f.from;
	if (m->kind == PS_MSG_PULL && s->pulls < MAX_SEEN)
		s->pull[s->pulls++] = *m;
	if (m->kind != PS_MSG_PUSH)
		return 0;
	if (s->pushes == MAX_SEEN || f.tensor_len != N * sizeof(float)) {
		script_fail(s, "too many pushes, or one of the wrong size");
		return -1;
	}
	s->push[s->pushes] = *m;
	s->bytes[s->pushes] = malloc(f.tensor_len);
	if (!s->bytes[s->pushes]) {
		script_fail(s, "out of memory");
		return -1;
	}
	memcpy(s->bytes[s->pushes], f.tensor, f.tensor_len);
	s->pushes++;
	return 0;
}

static int script_expect(script *s, ps_peer *from, ps_msg *m,
			 enum ps_msg_kind kind)
{
	if (script_recv(s, from, m) != 0)
		return -1;
	if (m->kind != kind) {
		char why[120];
		snprintf(why, sizeof why, "expected %s, got %s",
			 ps_msg_kind_name(kind), ps_msg_kind_name(m->kind));
		script_fail(s, why);
		return -1;
	}
	return 0;
}

static void script_send(script *s, const ps_peer *to, const ps_msg *m)
{
	uint8_t buf[PS_WIRE_HEAD_MAX];
	size_t len = 0;

	if (ps_wire_encode(m, buf, sizeof buf, &len) != PS_OK ||
	    ps_transport_send(s->t, to, buf, len, NULL, 0) != PS_OK)
		script_fail(s, "cannot answer the client");
}

static void script_ack(script *s, const ps_peer *to, const ps_msg *push,
		       uint64_t version)
{
	ps_msg a;

	ps_msg_init(&a, PS_MSG_ACK, push->request_id, push->worker_id);
	a.u.ack.version = version;
	a.u.ack.seq = push->u.push.seq;
	script_send(s, to, &a);
}

/* Welcome the hello as worker 1 of a one-shard model of N weights. */
static int script_welcome(script *s, ps_peer *peer)
{
	ps_msg m, w;

	if (script_expect(s, peer, &m, PS_MSG_HELLO) != 0)
		return -1;
	ps_msg_init(&w, PS_MSG_WELCOME, m.request_id, 0);
	w.u.welcome.worker_id = 1;
	w.u.welcome.num_params = N;
	w.u.welcome.begin = 0;
	w.u.welcome.end = N;
	w.u.welcome.num_workers = 1;
	w.u.welcome.num_shards = 1;
	w.u.welcome.heartbeat_seconds = s->heartbeat > 0 ? s->heartbeat : 5;
	script_send(s, peer, &w);
	return 0;
}

static int script_bye(script *s, ps_peer *peer)
{
	ps_msg m, b;

	if (script_expect(s, peer, &m, PS_MSG_BYE) != 0)
		return -1;
	ps_msg_init(&b, PS_MSG_BYE, m.request_id, m.worker_id);
	script_send(s, peer, &b);
	return 0;
}

/* Two pushes come; the ack of the first is "lost": only the second is
 * acknowledged, which tells the client that the first lost its ack, so
 * it sends the first again; that one is acknowledged; then bye. */
static void *lose_first_ack(void *arg)
{
	script *s = arg;
	ps_peer peer;
	ps_msg a, b, again;

	if (script_welcome(s, &peer) != 0 ||
	    script_expect(s, &peer, &a, PS_MSG_PUSH) != 0 ||
	    script_expect(s, &peer, &b, PS_MSG_PUSH) != 0)
		return NULL;
	script_ack(s, &peer, &b, 1);
	if (script_expect(s, &peer, &again, PS_MSG_PUSH) != 0)
		return NULL;
	script_ack(s, &peer, &again, 2);
	script_bye(s, &peer);
	return NULL;
}

/* heartbeat: seconds the welcome announces (0: 5 s). */
static void script_start(script *s, pthread_t *th, void *(*fn)(void *),
			 double heartbeat)
{
	ps_err e = {0, ""};

	memset(s, 0, sizeof *s);
	s->heartbeat = heartbeat;
	assert_int_equal(ps_transport_listen(&s->t, "tcp://127.0.0.1:*",
					     &quick, &e),
			 PS_OK);
	snprintf(s->endpoint, sizeof s->endpoint, "%s",
		 ps_transport_endpoint(s->t));
	assert_int_equal(pthread_create(th, NULL, fn, s), 0);
}

static void script_finish(script *s, pthread_t th)
{
	assert_int_equal(pthread_join(th, NULL), 0);
	ps_transport_destroy(&s->t);
	if (s->failed)
		fail_msg("scripted server: %s", s->why);
}

static void script_free(script *s)
{
	for (size_t i = 0; i < s->pushes; i++)
		free(s->bytes[i]);
}

static void fill(float *g, int k)
{
	for (size_t i = 0; i < N; i++)
		g[i] = (float)((int)(i % 1000) - 500 + k) * 0.001f;
}

static ps_model_spec spec_of(void)
{
	ps_model_spec m;

	memset(&m, 0, sizeof m);
	snprintf(m.name, sizeof m.name, "linear");
	m.input_dim = N - 1;
	m.output_dim = 1;
	m.init_seed = 1;
	return m;
}

/* Start the scripted server on fn and a client registered with it as
 * trainer 0, with max_inflight pushes in flight and heartbeats every
 * `heartbeat` seconds (0: 5 s). */
static ps_client *start_hb(script *s, pthread_t *th, void *(*fn)(void *),
			   int max_inflight, double heartbeat)
{
	ps_client *c = NULL;
	ps_msg_welcome wel;
	ps_model_spec spec = spec_of();
	ps_err e = {0, ""};

	script_start(s, th, fn, heartbeat);
	assert_int_equal(ps_client_new(&c, s->endpoint, 10.0, max_inflight, &e),
			 PS_OK);
	assert_int_equal(ps_client_hello(c, PS_ROLE_WORKER, 0, &spec, &wel, &e),
			 PS_OK);
	return c;
}

static ps_client *start(script *s, pthread_t *th, void *(*fn)(void *),
			int max_inflight)
{
	return start_hb(s, th, fn, max_inflight, 0);
}

/* After lose_first_ack: three pushes arrived, the first, the second and
 * the first again, each with its own bytes. */
static void assert_first_sent_again(const script *s, const float *want1,
				    const float *want2)
{
	assert_int_equal(s->pushes, 3);
	assert_memory_equal(s->bytes[0], want1, N * sizeof(float));
	assert_memory_equal(s->bytes[1], want2, N * sizeof(float));
	assert_memory_equal(s->bytes[2], want1, N * sizeof(float));
}

/* The kept copy of a push is the client's, not the caller's: after the
 * caller has overwritten its gradient array (with NaN, even), a push sent
 * again because its ack was lost carries exactly the bytes of its first
 * send, under the same seq; and a second push made meanwhile from the
 * same array has its own bytes. (A buffer shared with the caller, or
 * reused for the next push while ZeroMQ still held it, would fail.) */
static void test_client_resent_push_keeps_its_bytes(void **state)
{
	(void)state;
	script s;
	pthread_t th;
	ps_client *c = NULL;
	ps_client_stats st;
	ps_err e = {0, ""};
	float *g = malloc(N * sizeof *g), *want1 = malloc(N * sizeof *g),
	      *want2 = malloc(N * sizeof *g);

	assert_non_null(g);
	assert_non_null(want1);
	assert_non_null(want2);
	fill(want1, 1);
	fill(want2, 2);
	c = start(&s, &th, lose_first_ack, 2);
	memcpy(g, want1, N * sizeof *g);
	assert_int_equal(ps_client_push(c, g, 0, N, 0, 8, 1.0f, 1, &e), PS_OK);
	memcpy(g, want2, N * sizeof *g);
	assert_int_equal(ps_client_push(c, g, 0, N, 0, 8, 1.0f, 2, &e), PS_OK);
	for (size_t i = 0; i < N; i++)
		g[i] = NAN;
	assert_int_equal(ps_client_flush(c, &e), PS_OK);
	assert_int_equal(ps_client_bye(c, 16, 2, &e), PS_OK);
	ps_client_get_stats(c, &st);
	ps_client_destroy(&c);
	script_finish(&s, th);

	assert_first_sent_again(&s, want1, want2);
	assert_int_equal(s.push[2].u.push.seq, s.push[0].u.push.seq);
	assert_int_not_equal(s.push[2].request_id, s.push[0].request_id);
	assert_int_equal(st.resent, 1);
	assert_int_equal(st.acks, 2);
	assert_int_equal(st.applied, 2);
	script_free(&s);
	free(g);
	free(want1);
	free(want2);
}

/* Welcome, take three pushes, acknowledge none. */
static void *never_ack(void *arg)
{
	script *s = arg;
	ps_peer peer;
	ps_msg m;

	if (script_welcome(s, &peer) != 0)
		return NULL;
	for (int k = 0; k < 3; k++)
		if (script_expect(s, &peer, &m, PS_MSG_PUSH) != 0)
			return NULL;
	return NULL;
}

/* Pushes still kept when the client goes are released with it (the
 * sanitizer build checks that nothing leaks and nothing is freed twice),
 * whatever ZeroMQ may still hold of them. */
static void test_client_destroy_releases_kept_pushes(void **state)
{
	(void)state;
	script s;
	pthread_t th;
	ps_client *c = NULL;
	ps_err e = {0, ""};
	float *g = calloc(N, sizeof *g);

	assert_non_null(g);
	c = start(&s, &th, never_ack, 3);
	for (int k = 0; k < 3; k++)
		assert_int_equal(ps_client_push(c, g, 0, N, 0, 1, 0.0f,
						(uint64_t)k + 1, &e),
				 PS_OK);
	/* The last push is still being sent, or queued, or just taken in. */
	ps_client_destroy(&c);
	assert_null(c);
	script_finish(&s, th);
	assert_int_equal(s.pushes, 3);
	script_free(&s);
	free(g);
}

/* The scripted server's weights for pull k: k in every weight but the
 * first, which is k + 0.5. */
static void weights_of(float *w, int k)
{
	for (size_t i = 0; i < N; i++)
		w[i] = (float)k;
	w[0] = (float)k + 0.5f;
}

#define CLAIM_LR 0.5f /* the rate the scripted server announces */

/* Answer a pull with weights_of(k) (or with one float too few), or with
 * "unchanged" and no tensor (k < 0: version -k). */
static void script_weights(script *s, const ps_peer *to, const ps_msg *pull,
			   int k, int short_by_one)
{
	uint8_t buf[PS_WIRE_HEAD_MAX];
	size_t len = 0;
	ps_msg r;
	float *w = malloc(N * sizeof *w);

	if (!w) {
		script_fail(s, "out of memory");
		return;
	}
	weights_of(w, k);
	ps_msg_init(&r, PS_MSG_WEIGHTS, pull->request_id, pull->worker_id);
	r.u.weights.version = (uint64_t)(k < 0 ? -k : k);
	r.u.weights.begin = pull->u.pull.begin;
	r.u.weights.end = pull->u.pull.end;
	r.u.weights.sgd_lr = CLAIM_LR;
	r.u.weights.unchanged = k < 0;
	if (ps_wire_encode(&r, buf, sizeof buf, &len) != PS_OK ||
	    ps_transport_send(s->t, to, buf, len, w,
			      k < 0 ? 0
				    : (N - (short_by_one ? 1 : 0)) * sizeof *w) !=
		    PS_OK)
		script_fail(s, "cannot answer the pull");
	free(w);
}

/* Two pulls answered in full, then one a float short, then bye. */
static void *serve_pulls(void *arg)
{
	script *s = arg;
	ps_peer peer;
	ps_msg m;

	if (script_welcome(s, &peer) != 0)
		return NULL;
	for (int k = 1; k <= 3; k++) {
		if (script_expect(s, &peer, &m, PS_MSG_PULL) != 0)
			return NULL;
		script_weights(s, &peer, &m, k, k == 3);
	}
	script_bye(s, &peer);
	return NULL;
}

/* A pull with no buffer of the caller's leaves the weights with the
 * client (ps_client_weights()): exactly the server's bytes, writable by
 * the caller, replaced by the next pull's; a reply of the wrong length
 * is refused, not half taken. */
static void test_client_keeps_pulled_weights(void **state)
{
	(void)state;
	script s;
	pthread_t th;
	ps_client *c = NULL;
	ps_err e = {0, ""};
	uint64_t version = 0;
	float *want = malloc(N * sizeof *want), *w;

	assert_non_null(want);
	c = start(&s, &th, serve_pulls, 2);
	assert_null(ps_client_weights(c));
	assert_int_equal(ps_client_pull(c, NULL, 0, N, 0, &version, NULL, &e),
			 PS_OK);
	assert_int_equal(version, 1);
	w = ps_client_weights(c);
	assert_non_null(w);
	weights_of(want, 1);
	assert_memory_equal(w, want, N * sizeof *w);
	w[0] = -1.0f; /* the caller's to write */
	assert_float_equal(ps_client_weights(c)[0], -1.0f, 0.0f);

	assert_int_equal(ps_client_pull_start(c, NULL, 0, N, 1, &e), PS_OK);
	assert_int_equal(ps_client_pull_finish(c, &version, NULL, &e), PS_OK);
	assert_int_equal(version, 2);
	weights_of(want, 2);
	assert_memory_equal(ps_client_weights(c), want, N * sizeof(float));

	assert_int_equal(ps_client_pull(c, NULL, 0, N, 2, &version, NULL, &e),
			 PS_EPROTO);
	assert_non_null(strstr(e.msg, "tensor bytes"));
	assert_int_equal(ps_client_bye(c, 0, 0, &e), PS_OK);
	ps_client_destroy(&c);
	script_finish(&s, th);
	free(want);
}

/* Answer a heartbeat, saying which pull is held back (0: none). */
static void script_heartbeat(script *s, const ps_peer *to, const ps_msg *hb,
			     uint64_t pull_waiting)
{
	ps_msg r;

	ps_msg_init(&r, PS_MSG_HEARTBEAT, hb->request_id, hb->worker_id);
	r.u.heartbeat.pull_waiting = pull_waiting;
	script_send(s, to, &r);
}

/* A pull is "lost": not answered, and the next heartbeat's answer says
 * no pull is held back. The client must send it again (same range,
 * clock and claim, a new request id); that one is answered. Then bye. */
static void *lose_a_pull(void *arg)
{
	script *s = arg;
	ps_peer peer;
	ps_msg first, m;

	if (script_welcome(s, &peer) != 0 ||
	    script_expect(s, &peer, &first, PS_MSG_PULL) != 0 ||
	    script_expect(s, &peer, &m, PS_MSG_HEARTBEAT) != 0)
		return NULL;
	script_heartbeat(s, &peer, &m, 0);
	if (script_expect(s, &peer, &m, PS_MSG_PULL) != 0)
		return NULL;
	if (m.request_id <= first.request_id ||
	    m.u.pull.begin != first.u.pull.begin ||
	    m.u.pull.end != first.u.pull.end ||
	    m.u.pull.clock != first.u.pull.clock ||
	    m.u.pull.held_seq != first.u.pull.held_seq)
		script_fail(s, "the pull sent again is not the lost one");
	script_weights(s, &peer, &m, 4, 0);
	script_bye(s, &peer);
	return NULL;
}

/* A pull held back (as under bsp): the heartbeat's answer says so, and
 * the client must keep waiting for it, not send it again; a second
 * heartbeat is answered the same way; then the pull is answered. */
static void *hold_a_pull(void *arg)
{
	script *s = arg;
	ps_peer peer;
	ps_msg pull, m;

	if (script_welcome(s, &peer) != 0 ||
	    script_expect(s, &peer, &pull, PS_MSG_PULL) != 0)
		return NULL;
	for (int i = 0; i < 2; i++) {
		if (script_expect(s, &peer, &m, PS_MSG_HEARTBEAT) != 0)
			return NULL;
		script_heartbeat(s, &peer, &m, pull.request_id);
	}
	script_weights(s, &peer, &pull, 5, 0);
	script_bye(s, &peer);
	return NULL;
}

/* A pull whose answer never comes while the server answers a later
 * heartbeat was lost on the way (the server answers in order): the
 * client sends it again and carries on, and counts it, instead of
 * waiting until the run's time limit. A pull the server says it holds
 * back is waited for, not sent again. */
/* One pull against script fn (heartbeats every 50 ms): it must end with
 * weights_of(k) at version k, after `resent` pulls sent again and
 * `pulls` pulls seen by the server. */
static void pull_against(void *(*fn)(void *), int k, uint64_t resent,
			 size_t pulls)
{
	script s;
	pthread_t th;
	ps_client *c = start_hb(&s, &th, fn, 2, 0.05);
	ps_client_stats st;
	ps_err e = {0, ""};
	uint64_t version = 0;
	float *want = malloc(N * sizeof *want);

	assert_non_null(want);
	assert_int_equal(ps_client_pull(c, NULL, 0, N, 0, &version, NULL, &e),
			 PS_OK);
	assert_int_equal(version, (uint64_t)k);
	weights_of(want, k);
	assert_memory_equal(ps_client_weights(c), want, N * sizeof(float));
	ps_client_get_stats(c, &st);
	assert_int_equal(st.pulls_resent, resent);
	assert_int_equal(ps_client_bye(c, 0, 0, &e), PS_OK);
	ps_client_destroy(&c);
	script_finish(&s, th);
	assert_int_equal(s.pulls, pulls);
	free(want);
}

static void test_client_resends_lost_pull(void **state)
{
	(void)state;
	pull_against(lose_a_pull, 4, 1, 2);
	pull_against(hold_a_pull, 5, 0, 1);
}

/* The answer to a bye is "lost": the client learns it from the next
 * heartbeat's answer and says bye again; that one is answered. */
static void *lose_a_bye(void *arg)
{
	script *s = arg;
	ps_peer peer;
	ps_msg first, m;

	if (script_welcome(s, &peer) != 0 ||
	    script_expect(s, &peer, &first, PS_MSG_BYE) != 0 ||
	    script_expect(s, &peer, &m, PS_MSG_HEARTBEAT) != 0)
		return NULL;
	script_heartbeat(s, &peer, &m, 0);
	(void)script_bye(s, &peer);
	return NULL;
}

static void test_client_says_bye_again_when_its_answer_is_lost(void **state)
{
	(void)state;
	script s;
	pthread_t th;
	ps_client *c = start_hb(&s, &th, lose_a_bye, 2, 0.05);
	ps_client_stats st;
	ps_err e = {0, ""};

	assert_int_equal(ps_client_bye(c, 0, 0, &e), PS_OK);
	ps_client_get_stats(c, &st);
	assert_int_equal(st.requests_resent, 1);
	ps_client_destroy(&c);
	script_finish(&s, th);
}

/* Weights 1 in full; a push, acknowledged; then a pull that must claim
 * "reply 1 plus that push", answered "unchanged"; then a pull that claims
 * nothing, answered "unchanged" all the same (wrongly). */
static void *answer_claims(void *arg)
{
	script *s = arg;
	ps_peer peer;
	ps_msg m, push;

	if (script_welcome(s, &peer) != 0 ||
	    script_expect(s, &peer, &m, PS_MSG_PULL) != 0)
		return NULL;
	if (m.u.pull.held_seq != 0)
		script_fail(s, "the first pull claimed weights");
	script_weights(s, &peer, &m, 1, 0);
	if (script_expect(s, &peer, &push, PS_MSG_PUSH) != 0)
		return NULL;
	script_ack(s, &peer, &push, 2);
	if (script_expect(s, &peer, &m, PS_MSG_PULL) != 0)
		return NULL;
	if (m.u.pull.held_seq != push.u.push.seq || m.u.pull.held_version != 1)
		script_fail(s, "the pull after the own push claimed something else");
	script_weights(s, &peer, &m, -2, 0);
	if (script_expect(s, &peer, &m, PS_MSG_PULL) != 0)
		return NULL;
	if (m.u.pull.held_seq != 0)
		script_fail(s, "a pull claimed weights without an own push");
	script_weights(s, &peer, &m, -3, 0);
	return NULL;
}

/* After adding its own newest push to the weights it keeps, the client's
 * next pull says so; an "unchanged" reply leaves those weights as they
 * are (no copy, no tensor) and is counted; "unchanged" to a pull that
 * claimed nothing is refused. */
static void test_client_claims_held_weights(void **state)
{
	(void)state;
	script s;
	pthread_t th;
	ps_client *c = NULL;
	ps_client_stats st;
	ps_err e = {0, ""};
	uint64_t version = 0;
	float *want = malloc(N * sizeof *want), *w, *g;

	assert_non_null(want);
	c = start(&s, &th, answer_claims, 2);
	assert_int_equal(ps_client_pull(c, NULL, 0, N, 0, &version, NULL, &e),
			 PS_OK);
	w = ps_client_weights(c);
	g = ps_client_grad_buffer(c, 0, N);
	assert_non_null(g);
	fill(g, 3);
	assert_int_equal(ps_client_push(c, g, 0, N, version, 8, 1.0f, 1, &e),
			 PS_OK);
	assert_int_equal(ps_client_add_own_push(c, w, g, 0, N), 1);
	weights_of(want, 1);
	for (size_t i = 0; i < N; i++)
		want[i] -= CLAIM_LR * g[i];
	assert_int_equal(ps_client_pull(c, NULL, 0, N, 1, &version, NULL, &e),
			 PS_OK);
	assert_int_equal(version, 2);
	assert_ptr_equal(ps_client_weights(c), w);
	assert_memory_equal(w, want, N * sizeof *w);
	ps_client_get_stats(c, &st);
	assert_int_equal(st.pulls_unchanged, 1);

	assert_int_equal(ps_client_pull(c, NULL, 0, N, 1, &version, NULL, &e),
			 PS_EPROTO);
	assert_non_null(strstr(e.msg, "claimed no weights"));
	ps_client_destroy(&c);
	script_finish(&s, th);
	assert_int_equal(s.pushes, 1);
	script_free(&s);
	free(want);
}

/* A gradient written into ps_client_grad_buffer() is pushed as written
 * and stays readable after the push; the next buffer is another one, so
 * a push sent again (its ack lost) still carries its own bytes; a buffer
 * not pushed is handed out again. */
static void test_client_grad_buffer_push(void **state)
{
	(void)state;
	script s;
	pthread_t th;
	ps_client *c = NULL;
	ps_client_stats st;
	ps_err e = {0, ""};
	float *want1 = malloc(N * sizeof(float)), *want2 = malloc(N * sizeof(float));
	float *g1, *g2;

	assert_non_null(want1);
	assert_non_null(want2);
	fill(want1, 1);
	fill(want2, 2);
	c = start(&s, &th, lose_first_ack, 2);
	g1 = ps_client_grad_buffer(c, 0, N);
	assert_non_null(g1);
	assert_ptr_equal(ps_client_grad_buffer(c, 0, N), g1);
	memcpy(g1, want1, N * sizeof *g1);
	assert_int_equal(ps_client_push(c, g1, 0, N, 0, 8, 1.0f, 1, &e), PS_OK);
	assert_memory_equal(g1, want1, N * sizeof *g1);
	g2 = ps_client_grad_buffer(c, 0, N);
	assert_non_null(g2);
	assert_ptr_not_equal(g2, g1);
	memcpy(g2, want2, N * sizeof *g2);
	assert_int_equal(ps_client_push(c, g2, 0, N, 0, 8, 1.0f, 2, &e), PS_OK);
	assert_int_equal(ps_client_flush(c, &e), PS_OK);
	assert_memory_equal(g2, want2, N * sizeof *g2);
	assert_int_equal(ps_client_bye(c, 16, 2, &e), PS_OK);
	ps_client_get_stats(c, &st);
	ps_client_destroy(&c);
	script_finish(&s, th);

	assert_first_sent_again(&s, want1, want2);
	assert_int_equal(st.resent, 1);
	script_free(&s);
	free(want1);
	free(want2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_client_resent_push_keeps_its_bytes),
		cmocka_unit_test(test_client_destroy_releases_kept_pushes),
		cmocka_unit_test(test_client_keeps_pulled_weights),
		cmocka_unit_test(test_client_grad_buffer_push),
		cmocka_unit_test(test_client_claims_held_weights),
		cmocka_unit_test(test_client_resends_lost_pull),
		cmocka_unit_test(test_client_says_bye_again_when_its_answer_is_lost),
	};

	alarm(60);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
