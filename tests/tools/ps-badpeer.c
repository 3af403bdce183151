/*
 * ps-badpeer: a hostile client for the integration tests. It talks to a
 * ps-server through our own transport and wire modules (never zmq.h) and
 * sends what the server must refuse: garbage, a wrong protocol version,
 * requests before hello, bad hellos and bad pushes. Every one must come
 * back as an Error with the right code. Exit 0 when all did, 1 when one
 * did not, 2 for bad options.
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

int main(int argc, char **argv)
{
	static const char *const models[] = {"softmax", "linear", NULL};
	const char *endpoint = NULL;
	int model = 0, input_dim = 0, output_dim = 1;
	uint64_t seed = 1, garbage_seed = 1;
	double timeout = 5;
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
		{NULL, 0, NULL, NULL, NULL, 0, 0, NULL},
	};
	ps_transport_opts topts = {.max_message = 0, .linger_ms = 1000};
	ps_model_spec spec;
	badpeer p = {.next_id = 1};
	ps_err e = {0};
	int rc;

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
	run_cases(&p, &spec, garbage_seed);
	ps_transport_destroy(&p.t);
	printf("ps-badpeer: %d hostile messages, %d refused as expected\n",
	       p.cases, p.passed);
	return p.cases > 0 && p.passed == p.cases && p.failures == 0 ? 0 : 1;
}
