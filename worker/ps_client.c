/*
 * ps_client: request ids count up from 1; every reply echoes its
 * request's id. The server answers one connection in order, so acks for
 * earlier pushes arrive before the weights of a later pull: every wait is
 * also where acks are taken in.
 *
 * Surviving faults (docs/FAULTS.md):
 *  - every push is kept (a copy of its gradient) until acknowledged. A
 *    reply to a later request means the server has seen the earlier ones:
 *    a push still unacknowledged then lost its ack, and is sent again with
 *    the same seq, which the server recognizes and does not apply twice;
 *  - a wait with no reply for the heartbeat interval sends a heartbeat,
 *    then again at doubling intervals (a bounded backoff); no reply at
 *    all for `timeout` seconds ends the wait with PS_ETIMEDOUT;
 *  - a server that no longer knows us (it was restarted, or our connection
 *    was replaced) answers "unknown worker": we register again, take the
 *    standing it gives (clock, push seq), drop the pushes it did not
 *    apply, and send the pull or request in flight again.
 */
#include "ps_client.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ps_log.h"
#include "ps_transport.h"

/* Heartbeat interval before the server has said one, and how far the
 * backoff may stretch it. */
#define HEARTBEAT_DEFAULT 1.0
#define HEARTBEAT_BACKOFF_MAX 8
/* Sends of one push before it is given up on (counted as dropped). */
#define PUSH_TRIES_MAX 8

/* A push sent and not yet acknowledged, kept to be sent again. */
typedef struct retained_push {
	int used;
	int tries;  /* sends so far */
	ps_msg msg;
	float *g;   /* copy of the gradient */
	size_t cap; /* floats g can hold */
} retained_push;

struct ps_client {
	ps_transport *t;
	double timeout;
	int max_inflight;
	int inflight;
	retained_push *kept; /* [max_inflight] */
	uint32_t worker_id;
	uint64_t next_id;
	uint64_t next_seq;
	/* The server's clock for this rank minus the caller's push count:
	 * a rank that registered again carries on from the server's clock. */
	int64_t clock_shift;
	/* Registration, kept to register again. */
	enum ps_role role;
	uint32_t rank;
	ps_model_spec spec;
	int registered;
	uint64_t registered_id; /* request id of the hello that did it */
	uint64_t rejoin_id;     /* hello in flight to register again; 0 none */
	uint32_t epoch;         /* registrations so far */
	uint32_t pulled_epoch;  /* the registration the last weights are of */
	/* Liveness. */
	double last_rx;         /* ps_now() of the last message received */
	double hb_base, hb_interval, last_hb;
	uint64_t last_hb_id;
	ps_client_stats st;
	/* The pull in flight (ps_client_pull_start): its reply lands in dst
	 * whenever it comes, also while another wait is taking in acks. */
	struct {
		uint64_t id; /* 0: none */
		float *dst;
		size_t bytes;
		uint64_t begin, end, clock; /* clock: the caller's */
		int arrived;
		ps_msg reply;
	} pull;
	/* The request in flight that is neither push nor pull (hello, bye,
	 * stop), kept to send again after registering again. */
	struct {
		uint64_t id; /* 0: none */
		ps_msg msg;
		const void *tensor;
		size_t tlen;
		int arrived;
		ps_msg reply;
	} req;
	uint8_t buf[PS_WIRE_HEAD_MAX];
};

int ps_client_new(ps_client **out, const char *endpoint, double timeout,
		  int max_inflight, ps_err *e)
{
	ps_client *c = calloc(1, sizeof *c);
	ps_transport_opts o = {.max_message = 0, .linger_ms = 2000};
	int rc;

	*out = NULL;
	if (!c)
		return ps_err_set(e, PS_ENOMEM, "out of memory");
	c->timeout = timeout;
	c->max_inflight = max_inflight < 1 ? 1 : max_inflight;
	c->next_id = 1;
	c->next_seq = 1;
	c->hb_base = c->hb_interval = HEARTBEAT_DEFAULT;
	c->kept = calloc((size_t)c->max_inflight, sizeof *c->kept);
	if (!c->kept) {
		free(c);
		return ps_err_set(e, PS_ENOMEM, "out of memory");
	}
	rc = ps_transport_connect(&c->t, endpoint, &o, e);
	if (rc != PS_OK) {
		free(c->kept);
		free(c);
		return rc;
	}
	*out = c;
	return PS_OK;
}

void ps_client_destroy(ps_client **cp)
{
	ps_client *c;
	if (!cp || !*cp)
		return;
	c = *cp;
	ps_transport_destroy(&c->t);
	for (int i = 0; i < c->max_inflight; i++)
		free(c->kept[i].g);
	free(c->kept);
	free(c);
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

static size_t push_floats(const ps_msg *m)
{
	return (size_t)(m->u.push.end - m->u.push.begin);
}

/* Send a kept push (again), under a new request id so that a reply to
 * a later request says its ack is overdue only once more. */
static int send_kept(ps_client *c, retained_push *k, ps_err *e)
{
	k->tries++;
	k->msg.request_id = c->next_id++;
	return send_msg(c, &k->msg, k->g, push_floats(&k->msg) * sizeof(float),
			e);
}

static retained_push *find_kept(ps_client *c, uint64_t request_id)
{
	for (int i = 0; i < c->max_inflight; i++)
		if (c->kept[i].used && c->kept[i].msg.request_id == request_id)
			return &c->kept[i];
	return NULL;
}

static void release_kept(ps_client *c, retained_push *k)
{
	k->used = 0;
	if (c->inflight > 0)
		c->inflight--;
}

/* The server has answered request `upto`, so it has seen every earlier
 * one: a kept push sent before it lost its ack. Send those again. */
static int resend_overdue(ps_client *c, uint64_t upto, ps_err *e)
{
	for (int i = 0; i < c->max_inflight; i++) {
		retained_push *k = &c->kept[i];
		int rc;
		if (!k->used || k->msg.request_id >= upto)
			continue;
		if (k->tries >= PUSH_TRIES_MAX) {
			ps_log_warn("push seq %" PRIu64 " sent %d times and never "
				    "acknowledged: dropped",
				    k->msg.u.push.seq, k->tries);
			c->st.pushes_dropped++;
			release_kept(c, k);
			continue;
		}
		c->st.resent++;
		ps_log_debug("push seq %" PRIu64 " unacknowledged: sending it "
			     "again", k->msg.u.push.seq);
		rc = send_kept(c, k, e);
		if (rc != PS_OK)
			return rc;
	}
	return PS_OK;
}

static void take_ack(ps_client *c, const ps_msg *m)
{
	if (m->kind == PS_MSG_ACK) {
		if (m->u.ack.stop)
			c->st.stop = 1;
		c->st.acks++;
		if (m->u.ack.duplicate) {
			c->st.duplicates++;
		} else {
			c->st.applied++;
			c->st.staleness_sum += m->u.ack.staleness;
			if (m->u.ack.staleness > c->st.staleness_max)
				c->st.staleness_max = m->u.ack.staleness;
		}
		if (m->u.ack.version > c->st.last_version)
			c->st.last_version = m->u.ack.version;
	} else if (m->u.error.code == PS_WIRE_ERR_SHUTTING_DOWN) {
		/* Not an error of ours: training was stopped early. */
		c->st.refused_after_stop++;
		if (!c->st.stop)
			snprintf(c->st.stop_reason, sizeof c->st.stop_reason,
				 "%s", m->u.error.message);
		c->st.stop = 1;
	} else if (m->u.error.code == PS_WIRE_ERR_TOO_OLD) {
		c->st.pushes_dropped++;
		ps_log_warn("a push sent again was too old for the server to "
			    "tell whether it applied it: dropped");
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

static void send_hello(ps_client *c, ps_msg *m, int rejoin)
{
	ps_msg_init(m, PS_MSG_HELLO, c->next_id++, 0);
	m->u.hello.role = c->role;
	m->u.hello.rank = c->rank;
	m->u.hello.model = c->spec;
	m->u.hello.applied_pushes = c->st.applied;
	m->u.hello.rejoin = rejoin;
}

/* Take the standing a welcome gives. Kept pushes are settled: those at
 * or below the server's last seq were applied (their acks are lost),
 * the others were not and are dropped, their gradients computed from
 * weights this server may never have had. */
static void take_welcome(ps_client *c, const ps_msg *m)
{
	const ps_msg_welcome *w = &m->u.welcome;

	c->worker_id = w->worker_id;
	c->registered = 1;
	c->registered_id = m->request_id;
	c->epoch++;
	c->st.last_version = w->version;
	if (w->heartbeat_seconds > 0)
		c->hb_base = c->hb_interval = w->heartbeat_seconds;
	if (c->role != PS_ROLE_WORKER)
		return;
	for (int i = 0; i < c->max_inflight; i++) {
		retained_push *k = &c->kept[i];
		if (!k->used)
			continue;
		if (k->msg.u.push.seq > w->last_seq)
			c->st.pushes_dropped++;
		release_kept(c, k);
	}
	c->next_seq = w->last_seq + 1;
	c->st.applied = w->pushes;
	c->clock_shift = (int64_t)w->clock - (int64_t)c->st.pushes;
}

/* Registered again after an "unknown worker": send again what was in
 * flight. */
static int resume_requests(ps_client *c, ps_err *e)
{
	int rc;

	if (c->pull.id && !c->pull.arrived) {
		ps_msg m;
		ps_msg_init(&m, PS_MSG_PULL, c->next_id++, c->worker_id);
		m.u.pull.begin = c->pull.begin;
		m.u.pull.end = c->pull.end;
		m.u.pull.clock = (uint64_t)((int64_t)c->pull.clock +
					    c->clock_shift);
		c->pull.id = m.request_id;
		rc = send_msg(c, &m, NULL, 0, e);
		if (rc != PS_OK)
			return rc;
	}
	if (c->req.id && !c->req.arrived) {
		c->req.msg.request_id = c->next_id++;
		c->req.msg.worker_id = c->worker_id;
		c->req.id = c->req.msg.request_id;
		rc = send_msg(c, &c->req.msg, c->req.tensor, c->req.tlen, e);
		if (rc != PS_OK)
			return rc;
	}
	return PS_OK;
}

/* The server answered request_id with "unknown worker". Register again,
 * once, if that request was made under the current registration (older
 * ones were sent before the last registration and are moot). */
static int maybe_rejoin(ps_client *c, uint64_t request_id, ps_err *e)
{
	ps_msg m;

	if (!c->registered || c->rejoin_id || request_id < c->registered_id)
		return PS_OK;
	ps_log_warn("the server at %s no longer knows this %s (restarted, or "
		    "it dropped us): registering again",
		    ps_transport_endpoint(c->t),
		    c->role == PS_ROLE_WORKER ? "worker" : "evaluator");
	send_hello(c, &m, 1);
	c->rejoin_id = m.request_id;
	return send_msg(c, &m, NULL, 0, e);
}

/* Act on one message from the server. */
static int dispatch(ps_client *c, const ps_msg *m, const ps_frame *f,
		    ps_err *e)
{
	int unknown = m->kind == PS_MSG_ERROR &&
		      m->u.error.code == PS_WIRE_ERR_UNKNOWN_WORKER;
	retained_push *k;

	if (c->rejoin_id && m->request_id == c->rejoin_id) {
		c->rejoin_id = 0;
		if (m->kind != PS_MSG_WELCOME)
			return ps_err_set(e, PS_EPROTO,
					  "the server refused to register us "
					  "again: %s",
					  m->kind == PS_MSG_ERROR
						  ? m->u.error.message
						  : ps_msg_kind_name(m->kind));
		take_welcome(c, m);
		c->st.rejoins++;
		ps_log_warn("registered again as %s %u at version %" PRIu64
			    "; carrying on",
			    c->role == PS_ROLE_WORKER ? "worker" : "evaluator",
			    c->rank, m->u.welcome.version);
		return resume_requests(c, e);
	}
	if (c->req.id && m->request_id == c->req.id) {
		if (unknown && c->req.msg.kind != PS_MSG_HELLO)
			return maybe_rejoin(c, m->request_id, e);
		c->req.reply = *m;
		c->req.arrived = 1;
		return PS_OK;
	}
	if (c->pull.id && m->request_id == c->pull.id) {
		if (unknown)
			return maybe_rejoin(c, m->request_id, e);
		if (m->kind != PS_MSG_ERROR && f->tensor_len > c->pull.bytes)
			return ps_err_set(e, PS_EPROTO,
					  "server sent %zu tensor bytes, expected %zu",
					  f->tensor_len, c->pull.bytes);
		if (m->kind != PS_MSG_ERROR && f->tensor_len)
			memcpy(c->pull.dst, f->tensor, f->tensor_len);
		c->pull.reply = *m;
		c->pull.arrived = 1;
		c->pulled_epoch = c->epoch;
		return resend_overdue(c, m->request_id, e);
	}
	if ((k = find_kept(c, m->request_id)) != NULL) {
		if (unknown)
			return maybe_rejoin(c, m->request_id, e);
		if (m->kind == PS_MSG_ACK || m->kind == PS_MSG_ERROR) {
			take_ack(c, m);
			release_kept(c, k);
			return resend_overdue(c, m->request_id, e);
		}
	}
	/* The server could not read a message of ours (request id 0). It
	 * answers in order, so it was the oldest one outstanding: a push,
	 * the only kind that can be large or carry bad bytes. */
	if (m->kind == PS_MSG_ERROR && m->request_id == 0) {
		k = NULL;
		for (int i = 0; i < c->max_inflight; i++)
			if (c->kept[i].used &&
			    (!k || c->kept[i].msg.request_id < k->msg.request_id))
				k = &c->kept[i];
		if (k) {
			take_ack(c, m);
			release_kept(c, k);
			return PS_OK;
		}
	}
	if (m->kind == PS_MSG_HEARTBEAT && m->request_id == c->last_hb_id)
		return resend_overdue(c, m->request_id, e);
	if (unknown && m->request_id == c->last_hb_id)
		return maybe_rejoin(c, m->request_id, e);
	/* A reply to a request that was sent again, or to a heartbeat
	 * superseded by a later one: nothing waits for it. */
	ps_log_debug("ignoring %s for request %" PRIu64,
		     ps_msg_kind_name(m->kind), m->request_id);
	return PS_OK;
}

/* The server has said nothing for the heartbeat interval: ask it. A
 * send that fails is not fatal here; the silence will be. */
static void heartbeat(ps_client *c, double now, double silent)
{
	ps_msg m;
	ps_err ignored = {0};

	ps_msg_init(&m, PS_MSG_HEARTBEAT, c->next_id++, c->worker_id);
	if (send_msg(c, &m, NULL, 0, &ignored) == PS_OK)
		c->last_hb_id = m.request_id;
	c->last_hb = now;
	if (silent >= 2 * c->hb_base && c->hb_interval < HEARTBEAT_BACKOFF_MAX * c->hb_base) {
		ps_log_warn("no answer from the server at %s for %.1f s; "
			    "retrying every %.1f s (giving up after %.0f s)",
			    ps_transport_endpoint(c->t), silent,
			    2 * c->hb_interval, c->timeout);
		c->hb_interval *= 2;
	}
}

enum wait_for { WAIT_REQ, WAIT_PULL, WAIT_INFLIGHT };

static int wait_done(const ps_client *c, enum wait_for what, int inflight_left)
{
	switch (what) {
	case WAIT_REQ:
		return c->req.arrived;
	case WAIT_PULL:
		return c->pull.arrived;
	case WAIT_INFLIGHT:
		return c->inflight <= inflight_left && !c->rejoin_id;
	}
	return 1;
}

/* Receive and dispatch until `what` is done. */
static int wait_for(ps_client *c, enum wait_for what, int inflight_left,
		    ps_err *e)
{
	double start = ps_now();

	for (;;) {
		ps_frame f;
		ps_msg m;
		ps_err de = {0};
		double now = ps_now();
		double quiet = c->last_rx > start ? c->last_rx : start;
		double since_send = c->last_hb > quiet ? c->last_hb : quiet;
		double wait_s;
		int rc;

		if (wait_done(c, what, inflight_left))
			return PS_OK;
		if (now - quiet >= c->timeout)
			return ps_err_set(e, PS_ETIMEDOUT,
					  "no reply from the server at %s within %.0f s",
					  ps_transport_endpoint(c->t),
					  c->timeout);
		if (c->registered && now - since_send >= c->hb_interval) {
			heartbeat(c, now, now - quiet);
			continue;
		}
		wait_s = c->registered ? since_send + c->hb_interval - now
				       : quiet + c->timeout - now;
		if (wait_s > quiet + c->timeout - now)
			wait_s = quiet + c->timeout - now;
		rc = ps_transport_recv(c->t, &f, (int)(wait_s * 1000) + 1);
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
		c->last_rx = ps_now();
		c->hb_interval = c->hb_base;
		rc = dispatch(c, &m, &f, e);
		if (rc != PS_OK)
			return rc;
	}
}

/* Send a hello, bye or stop and wait for its reply (which may be an
 * error: the caller looks at *reply). */
static int request(ps_client *c, const ps_msg *m, const void *tensor,
		   size_t tlen, ps_msg *reply, ps_err *e)
{
	int rc;

	c->req.msg = *m;
	c->req.id = m->request_id;
	c->req.tensor = tensor;
	c->req.tlen = tlen;
	c->req.arrived = 0;
	rc = send_msg(c, m, tensor, tlen, e);
	if (rc == PS_OK)
		rc = wait_for(c, WAIT_REQ, 0, e);
	if (rc == PS_OK)
		*reply = c->req.reply;
	c->req.id = 0;
	c->req.tensor = NULL;
	if (rc == PS_OK && reply->kind == PS_MSG_ERROR)
		return ps_err_set(e, PS_EPROTO, "server refused: %s",
				  reply->u.error.message);
	return rc;
}

int ps_client_hello(ps_client *c, enum ps_role role, uint32_t rank,
		    const ps_model_spec *spec, ps_msg_welcome *welcome,
		    ps_err *e)
{
	ps_msg m, r;
	int rc;

	c->role = role;
	c->rank = rank;
	c->spec = *spec;
	send_hello(c, &m, 0);
	rc = request(c, &m, NULL, 0, &r, e);
	if (rc != PS_OK)
		return rc;
	if (r.kind != PS_MSG_WELCOME)
		return ps_err_set(e, PS_EPROTO, "expected welcome, got %s",
				  ps_msg_kind_name(r.kind));
	take_welcome(c, &r);
	/* The weights the caller starts from are the welcome's. */
	c->pulled_epoch = c->epoch;
	*welcome = r.u.welcome;
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
	m.u.pull.clock = (uint64_t)((int64_t)clock + c->clock_shift);
	rc = send_msg(c, &m, NULL, 0, e);
	if (rc != PS_OK)
		return rc;
	c->pull.id = m.request_id;
	c->pull.dst = w;
	c->pull.bytes = (size_t)(end - begin) * sizeof(float);
	c->pull.begin = begin;
	c->pull.end = end;
	c->pull.clock = clock;
	c->pull.arrived = 0;
	return PS_OK;
}

int ps_client_pull_finish(ps_client *c, uint64_t *version,
			  int *training_done, ps_err *e)
{
	uint64_t begin = c->pull.begin, end = c->pull.end;
	ps_msg r;
	int rc;

	if (!c->pull.id)
		return ps_err_set(e, PS_EINVAL, "no pull in flight");
	rc = wait_for(c, WAIT_PULL, 0, e);
	r = c->pull.reply;
	c->pull.id = 0;
	if (rc != PS_OK)
		return rc;
	if (r.kind == PS_MSG_ERROR)
		return ps_err_set(e, PS_EPROTO, "server refused: %s",
				  r.u.error.message);
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
	retained_push *k = NULL;
	size_t count = (size_t)(end - begin);
	int rc;

	/* Bound the pushes in flight: wait for the oldest ack. */
	if (c->inflight >= c->max_inflight) {
		rc = wait_for(c, WAIT_INFLIGHT, c->max_inflight - 1, e);
		if (rc != PS_OK)
			return rc;
	}
	/* Computed from weights of before the last registration: the server
	 * that has us now may never have had them. Counted, not sent; the
	 * server's clock for us does not move, so neither does ours. */
	if (c->pulled_epoch != c->epoch) {
		c->st.pushes++;
		c->st.pushes_dropped++;
		c->clock_shift--;
		return PS_OK;
	}
	for (int i = 0; i < c->max_inflight && !k; i++)
		if (!c->kept[i].used)
			k = &c->kept[i];
	if (k->cap < count) {
		float *g2 = realloc(k->g, count * sizeof *g2);
		if (!g2)
			return ps_err_set(e, PS_ENOMEM,
					  "out of memory for a copy of a push");
		k->g = g2;
		k->cap = count;
	}
	memcpy(k->g, g, count * sizeof *g);
	k->tries = 0;
	ps_msg_init(&k->msg, PS_MSG_PUSH, 0, c->worker_id);
	k->msg.u.push.base_version = base_version;
	k->msg.u.push.begin = begin;
	k->msg.u.push.end = end;
	k->msg.u.push.batch_size = batch_size;
	k->msg.u.push.loss = loss;
	k->msg.u.push.clock = (uint64_t)((int64_t)clock + c->clock_shift);
	k->msg.u.push.seq = c->next_seq;
	rc = send_kept(c, k, e);
	if (rc != PS_OK)
		return rc;
	k->used = 1;
	c->next_seq++;
	c->st.pushes++;
	c->inflight++;
	return PS_OK;
}

int ps_client_flush(ps_client *c, ps_err *e)
{
	return wait_for(c, WAIT_INFLIGHT, 0, e);
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
	return request(c, &m, NULL, 0, &r, e);
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
	rc = request(c, &m, best,
		     best ? (size_t)(end - begin) * sizeof(float) : 0, &r, e);
	if (rc == PS_OK)
		c->st.stop = 1;
	return rc;
}

void ps_client_get_stats(const ps_client *c, ps_client_stats *out)
{
	*out = c->st;
}
