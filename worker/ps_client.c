/*
 * ps_client: request ids count up from 1; every reply echoes its
 * request's id. The server answers one connection in order, so acks for
 * earlier pushes arrive before the weights of a later pull: a pull's wait
 * loop is also where acks are taken in.
 */
#include "ps_client.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ps_log.h"
#include "ps_transport.h"

struct ps_client {
	ps_transport *t;
	double timeout;
	int max_inflight;
	int inflight;
	uint32_t worker_id;
	uint64_t next_id;
	ps_client_stats st;
	/* The pull in flight (ps_client_pull_start), whose reply may come
	 * while another wait is taking in acks: it lands in dst then. */
	struct {
		uint64_t id; /* 0: none */
		float *dst;
		size_t bytes;
		int arrived;
		ps_msg reply;
	} pull;
	uint8_t buf[PS_WIRE_HEAD_MAX];
};

int ps_client_new(ps_client **out, const char *endpoint, double timeout,
		  int max_inflight, ps_err *e)
{
	return ps_client_new_curve(out, endpoint, timeout, max_inflight, NULL,
				   e);
}

int ps_client_new_curve(ps_client **out, const char *endpoint,
			double timeout, int max_inflight,
			const ps_transport_curve *curve, ps_err *e)
{
	ps_client *c = calloc(1, sizeof *c);
	ps_transport_opts o = {.max_message = 0, .linger_ms = 2000,
			       .curve = curve};
	int rc;

	*out = NULL;
	if (!c)
		return ps_err_set(e, PS_ENOMEM, "out of memory");
	c->timeout = timeout;
	c->max_inflight = max_inflight < 1 ? 1 : max_inflight;
	c->next_id = 1;
	rc = ps_transport_connect(&c->t, endpoint, &o, e);
	if (rc != PS_OK) {
		free(c);
		return rc;
	}
	*out = c;
	return PS_OK;
}

void ps_client_destroy(ps_client **cp)
{
	if (!cp || !*cp)
		return;
	ps_transport_destroy(&(*cp)->t);
	free(*cp);
	*cp = NULL;
}

static int send_msg(ps_client *c, const ps_msg *m, const void *tensor,
		    size_t tlen, ps_err *e)
{
	size_t len = 0;
	int rc = ps_wire_encode(m, c->buf, sizeof c->buf, &len);
	if (rc == PS_OK)
		rc = ps_transport_send(c->t, NULL, c->buf, len, tensor, tlen);
	if (rc != PS_OK)
		return ps_err_set(e, rc, "cannot send %s to %s: %s",
				  ps_msg_kind_name(m->kind),
				  ps_transport_endpoint(c->t), ps_strerror(rc));
	return PS_OK;
}

static void take_ack(ps_client *c, const ps_msg *m)
{
	if (c->inflight > 0)
		c->inflight--;
	if (m->kind == PS_MSG_ACK) {
		if (m->u.ack.stop)
			c->st.stop = 1;
		c->st.acks++;
		c->st.staleness_sum += m->u.ack.staleness;
		if (m->u.ack.staleness > c->st.staleness_max)
			c->st.staleness_max = m->u.ack.staleness;
		if (m->u.ack.version > c->st.last_version)
			c->st.last_version = m->u.ack.version;
	} else if (m->u.error.code == PS_WIRE_ERR_SHUTTING_DOWN) {
		/* Not an error of ours: training was stopped early. */
		c->st.refused_after_stop++;
		if (!c->st.stop)
			snprintf(c->st.stop_reason, sizeof c->st.stop_reason,
				 "%s", m->u.error.message);
		c->st.stop = 1;
	} else {
		c->st.push_errors++;
		/* Log the first and then every 100th: a diverging run would
		 * otherwise print one line per step. */
		if (c->st.push_errors % 100 == 1)
			ps_log_warn("server refused a push (%" PRIu64
				    " so far): %s",
				    c->st.push_errors, m->u.error.message);
	}
}

/* Receive until the reply to request `want` arrives (want == 0: until at
 * most `inflight_left` pushes are in flight). The reply, if any, lands in
 * *reply with its tensor copied into tensor_out[tensor_cap bytes]. */
static int wait_reply(ps_client *c, uint64_t want, int inflight_left,
		      ps_msg *reply, void *tensor_out, size_t tensor_cap,
		      ps_err *e)
{
	double deadline = ps_now() + c->timeout;

	for (;;) {
		ps_frame f;
		ps_msg m;
		ps_err de = {0};
		double left = deadline - ps_now();
		int rc;

		if (want == 0 && c->inflight <= inflight_left)
			return PS_OK;
		if (left <= 0)
			return ps_err_set(e, PS_ETIMEDOUT,
					  "no reply from the server at %s within %.0f s",
					  ps_transport_endpoint(c->t),
					  c->timeout);
		rc = ps_transport_recv(c->t, &f, (int)(left * 1000) + 1);
		if (rc == PS_ETIMEDOUT)
			continue;
		/* Only the handled stop signals interrupt the wait: give up
		 * at once rather than wait out the timeout for a server that
		 * may be stopping too. */
		if (rc == PS_EINTR)
			return ps_err_set(e, rc, "stopped by a signal while "
					  "waiting for the server at %s",
					  ps_transport_endpoint(c->t));
		if (rc != PS_OK)
			return ps_err_set(e, rc, "receive from %s failed: %s",
					  ps_transport_endpoint(c->t),
					  ps_strerror(rc));
		rc = ps_wire_decode(f.head, f.head_len, &m, &de);
		if (rc == PS_OK)
			rc = ps_wire_check_tensor(&m, f.tensor_len, &de);
		if (rc != PS_OK)
			return ps_err_set(e, PS_EPROTO,
					  "bad message from the server: %s",
					  de.msg);
		if (c->pull.id && m.request_id == c->pull.id &&
		    want != c->pull.id) {
			/* The pull in flight answered while we waited for
			 * something else: keep its reply for pull_finish. */
			if (m.kind != PS_MSG_ERROR && f.tensor_len > c->pull.bytes)
				return ps_err_set(e, PS_EPROTO,
						  "server sent %zu tensor bytes, expected %zu",
						  f.tensor_len, c->pull.bytes);
			if (m.kind != PS_MSG_ERROR && f.tensor_len)
				memcpy(c->pull.dst, f.tensor, f.tensor_len);
			c->pull.reply = m;
			c->pull.arrived = 1;
			continue;
		}
		if (want != 0 && m.request_id == want) {
			if (m.kind == PS_MSG_ERROR)
				return ps_err_set(e, PS_EPROTO,
						  "server refused: %s",
						  m.u.error.message);
			if (f.tensor_len > tensor_cap)
				return ps_err_set(e, PS_EPROTO,
						  "server sent %zu tensor bytes, expected %zu",
						  f.tensor_len, tensor_cap);
			if (f.tensor_len)
				memcpy(tensor_out, f.tensor, f.tensor_len);
			*reply = m;
			return PS_OK;
		}
		if (m.kind == PS_MSG_ACK || m.kind == PS_MSG_ERROR) {
			take_ack(c, &m);
			deadline = ps_now() + c->timeout;
			continue;
		}
		ps_log_warn("ignoring unexpected %s from the server",
			    ps_msg_kind_name(m.kind));
	}
}

int ps_client_hello(ps_client *c, enum ps_role role, uint32_t rank,
		    const ps_model_spec *spec, ps_msg_welcome *welcome,
		    ps_err *e)
{
	ps_msg m, r;
	int rc;

	ps_msg_init(&m, PS_MSG_HELLO, c->next_id++, 0);
	m.u.hello.role = role;
	m.u.hello.rank = rank;
	m.u.hello.model = *spec;
	rc = send_msg(c, &m, NULL, 0, e);
	if (rc == PS_OK)
		rc = wait_reply(c, m.request_id, 0, &r, NULL, 0, e);
	if (rc != PS_OK)
		return rc;
	if (r.kind != PS_MSG_WELCOME)
		return ps_err_set(e, PS_EPROTO, "expected welcome, got %s",
				  ps_msg_kind_name(r.kind));
	*welcome = r.u.welcome;
	c->worker_id = r.u.welcome.worker_id;
	c->st.last_version = r.u.welcome.version;
	return PS_OK;
}

int ps_client_pull_start(ps_client *c, float *w, uint64_t begin,
			 uint64_t end, uint64_t clock, ps_err *e)
{
	ps_msg m;
	int rc;

	if (c->pull.id)
		return ps_err_set(e, PS_EINVAL, "a pull is already in flight");
	ps_msg_init(&m, PS_MSG_PULL, c->next_id++, c->worker_id);
	m.u.pull.begin = begin;
	m.u.pull.end = end;
	m.u.pull.clock = clock;
	rc = send_msg(c, &m, NULL, 0, e);
	if (rc != PS_OK)
		return rc;
	c->pull.id = m.request_id;
	c->pull.dst = w;
	c->pull.bytes = (size_t)(end - begin) * sizeof(float);
	c->pull.arrived = 0;
	c->pull.reply.u.weights.begin = begin;
	c->pull.reply.u.weights.end = end;
	return PS_OK;
}

int ps_client_pull_finish(ps_client *c, uint64_t *version,
			  int *training_done, ps_err *e)
{
	uint64_t begin = c->pull.reply.u.weights.begin;
	uint64_t end = c->pull.reply.u.weights.end;
	ps_msg r;
	int rc = PS_OK;

	if (!c->pull.id)
		return ps_err_set(e, PS_EINVAL, "no pull in flight");
	if (c->pull.arrived) {
		r = c->pull.reply;
		if (r.kind == PS_MSG_ERROR)
			rc = ps_err_set(e, PS_EPROTO, "server refused: %s",
					r.u.error.message);
	} else {
		rc = wait_reply(c, c->pull.id, 0, &r, c->pull.dst,
				c->pull.bytes, e);
	}
	c->pull.id = 0;
	if (rc != PS_OK)
		return rc;
	if (r.kind != PS_MSG_WEIGHTS || r.u.weights.begin != begin ||
	    r.u.weights.end != end)
		return ps_err_set(e, PS_EPROTO,
				  "pull answered with %s of another range",
				  ps_msg_kind_name(r.kind));
	c->st.pulls++;
	c->st.last_version = r.u.weights.version;
	if (r.u.weights.stop)
		c->st.stop = 1;
	c->st.train_seconds = r.u.weights.train_seconds;
	if (version)
		*version = r.u.weights.version;
	if (training_done)
		*training_done = r.u.weights.training_done;
	return PS_OK;
}

int ps_client_pull(ps_client *c, float *w, uint64_t begin, uint64_t end,
		   uint64_t clock, uint64_t *version, int *training_done,
		   ps_err *e)
{
	int rc = ps_client_pull_start(c, w, begin, end, clock, e);
	if (rc != PS_OK)
		return rc;
	return ps_client_pull_finish(c, version, training_done, e);
}

int ps_client_push(ps_client *c, const float *g, uint64_t begin,
		   uint64_t end, uint64_t base_version, uint32_t batch_size,
		   float loss, uint64_t clock, ps_err *e)
{
	ps_msg m;
	int rc;

	/* Bound the pushes in flight: wait for the oldest ack. */
	if (c->inflight >= c->max_inflight) {
		ps_msg unused;
		rc = wait_reply(c, 0, c->max_inflight - 1, &unused, NULL, 0, e);
		if (rc != PS_OK)
			return rc;
	}
	ps_msg_init(&m, PS_MSG_PUSH, c->next_id++, c->worker_id);
	m.u.push.base_version = base_version;
	m.u.push.begin = begin;
	m.u.push.end = end;
	m.u.push.batch_size = batch_size;
	m.u.push.loss = loss;
	m.u.push.clock = clock;
	m.u.push.seq = c->st.pushes + 1;
	rc = send_msg(c, &m, g, (size_t)(end - begin) * sizeof(float), e);
	if (rc != PS_OK)
		return rc;
	c->st.pushes++;
	c->inflight++;
	return PS_OK;
}

int ps_client_flush(ps_client *c, ps_err *e)
{
	ps_msg unused;
	return wait_reply(c, 0, 0, &unused, NULL, 0, e);
}

int ps_client_bye(ps_client *c, uint64_t samples, uint64_t steps, ps_err *e)
{
	ps_msg m, r;
	int rc = ps_client_flush(c, e);

	if (rc != PS_OK)
		return rc;
	ps_msg_init(&m, PS_MSG_BYE, c->next_id++, c->worker_id);
	m.u.bye.samples = samples;
	m.u.bye.steps = steps;
	rc = send_msg(c, &m, NULL, 0, e);
	if (rc == PS_OK)
		rc = wait_reply(c, m.request_id, 0, &r, NULL, 0, e);
	return rc;
}

int ps_client_stopped(const ps_client *c)
{
	return c->st.stop;
}

int ps_client_stop(ps_client *c, const char *reason, const float *best,
		   uint64_t begin, uint64_t end, uint64_t best_version,
		   ps_err *e)
{
	ps_msg m, r;
	int rc;

	ps_msg_init(&m, PS_MSG_STOP, c->next_id++, c->worker_id);
	snprintf(m.u.stop.reason, sizeof m.u.stop.reason, "%s", reason);
	m.u.stop.best_version = best_version;
	if (best) {
		m.u.stop.begin = begin;
		m.u.stop.end = end;
	}
	rc = send_msg(c, &m, best,
		      best ? (size_t)(end - begin) * sizeof(float) : 0, e);
	if (rc == PS_OK)
		rc = wait_reply(c, m.request_id, 0, &r, NULL, 0, e);
	if (rc == PS_OK)
		c->st.stop = 1;
	return rc;
}

void ps_client_get_stats(const ps_client *c, ps_client_stats *out)
{
	*out = c->st;
}
