/*
 * ps_client: one link per server shard. On each link request ids count up
 * from 1 and every reply echoes its request's id; a server answers one
 * connection in order, so acks for earlier pushes arrive before the
 * weights of a later pull: every wait is also where acks are taken in.
 * A pull or push of the whole model is cut by the shards' ranges and sent
 * on every link at once; each slice of weights lands straight in the
 * caller's buffer at its offset.
 *
 * Surviving faults (docs/FAULTS.md), link by link:
 *  - every push is kept (its gradient's buffer) until acknowledged. A
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
#include "ps_shard.h"
#include "ps_transport.h"

/* Heartbeat interval before the server has said one, and how far the
 * backoff may stretch it. */
#define HEARTBEAT_DEFAULT 1.0
#define HEARTBEAT_BACKOFF_MAX 8
/* Sends of one push before it is given up on (counted as dropped). */
#define PUSH_TRIES_MAX 8
/* Shards a client connects to at most. */
#define MAX_LINKS 256
/* Recent pulls remembered, to find the per-shard versions a push's
 * gradient was computed from. */
#define HISTORY 16

/* A push sent and not yet acknowledged, kept to be sent again. The
 * gradient slice is in a tensor buffer of the link's transport, which
 * every send of the push shares (no send copies it again): the caller's
 * ps_client_grad_buffer() itself, or else a copy made once. It is
 * released when the push is settled. A new buffer each push: a resend
 * may still be queued when the ack of an earlier send arrives, so the
 * bytes of a settled push are not reused. */
typedef struct retained_push {
	int used;
	int tries;  /* sends so far */
	ps_msg msg;
	ps_tensor_buf *g; /* the gradient slice; NULL when !used */
} retained_push;

/* The connection to one server shard. */
typedef struct link {
	ps_transport *t;
	ps_msg_welcome welcome;
	uint64_t begin, end;  /* the shard's range */
	int inflight;
	retained_push *kept;  /* [max_inflight] */
	uint32_t worker_id;
	uint64_t next_id;
	uint64_t next_seq;
	/* The server's clock for this rank minus the client's push count:
	 * a rank that registered again carries on from the server's clock. */
	int64_t clock_shift;
	int registered;
	uint64_t registered_id; /* request id of the hello that did it */
	uint64_t rejoin_id;     /* hello in flight to register again; 0 none */
	uint32_t epoch;         /* registrations so far */
	uint32_t pulled_epoch;  /* the registration the last weights are of */
	uint64_t version;       /* of the last weights pulled */
	float sgd_lr;           /* their Weights.sgd_lr */
	/* The newest push sent on this link. */
	uint64_t last_push_seq, last_push_begin, last_push_end;
	/* A claim for the next pull: the weights of the last one plus the
	 * own push held_seq added at their sgd_lr (0: none). */
	uint64_t held_seq;
	/* Liveness. */
	double last_rx;         /* ps_now() of the last message received */
	double hb_base, hb_interval, last_hb;
	uint64_t last_hb_id;
	ps_client_stats st;     /* this link's share of the figures */
	struct {
		uint64_t id; /* 0: none */
		float *dst;  /* NULL: the client keeps the weights (taken) */
		ps_tensor_buf *taken; /* this shard's weights, when dst is NULL */
		size_t bytes;
		uint64_t begin, end, clock; /* clock: the caller's */
		uint64_t held_seq, held_version; /* the claim sent */
		int unchanged; /* the reply said the claim holds */
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
} link;

struct ps_client {
	link *links;
	ps_transport **ts; /* links[i].t, for waiting on all */
	uint32_t nlinks;
	double timeout;
	int max_inflight;
	enum ps_role role;
	uint32_t rank;
	ps_model_spec spec;
	uint64_t pushes, pulls; /* the caller's, whole-model */
	int pull_inflight;
	int pull_keep; /* the pull in flight has no buffer of the caller's */
	uint64_t pull_begin, pull_end; /* of the pull in flight */
	/* Weights pulled with no buffer of the caller's
	 * (ps_client_weights()): one shard's message itself, or the
	 * shards' slices copied into plain, side by side. */
	ps_tensor_buf *weights;
	float *plain;
	size_t plain_len;
	float *current; /* ps_client_weights(), or NULL */
	/* The caller's next gradient (ps_client_grad_buffer()), which a push
	 * of it sends without copying. */
	ps_tensor_buf *staged;
	uint64_t staged_begin, staged_end;
	int staged_pushed;
	/* The scalar version reported for each recent pull (the smallest
	 * shard version), and every shard's version then. */
	struct {
		uint64_t version;
		uint64_t *shard_versions; /* [nlinks] */
	} hist[HISTORY];
	unsigned hist_next;
};

static void link_release(link *l, int max_inflight)
{
	ps_tensor_buf_destroy(&l->pull.taken);
	ps_transport_destroy(&l->t);
	for (int i = 0; l->kept && i < max_inflight; i++)
		ps_tensor_buf_destroy(&l->kept[i].g);
	free(l->kept);
	l->kept = NULL;
}

int ps_client_new(ps_client **out, const char *endpoints, double timeout,
		  int max_inflight, ps_err *e)
{
	return ps_client_new_curve(out, endpoints, timeout, max_inflight, NULL,
				   e);
}

int ps_client_new_curve(ps_client **out, const char *endpoints,
			double timeout, int max_inflight,
			const ps_transport_curve *curve, ps_err *e)
{
	ps_client *c = NULL;
	ps_transport_opts o = {.max_message = 0, .linger_ms = 2000,
			       .curve = curve};
	const char *p = endpoints;
	uint32_t n = 1;
	int rc = PS_OK;

	*out = NULL;
	for (const char *q = endpoints; *q; q++)
		n += *q == ',';
	if (n > MAX_LINKS)
		return ps_err_set(e, PS_EINVAL, "%u endpoints: at most %d shards",
				  n, MAX_LINKS);
	c = calloc(1, sizeof *c);
	if (!c)
		return ps_err_set(e, PS_ENOMEM, "out of memory");
	c->timeout = timeout;
	c->max_inflight = max_inflight < 1 ? 1 : max_inflight;
	c->links = calloc(n, sizeof *c->links);
	c->ts = calloc(n, sizeof(ps_transport *));
	if (!c->links || !c->ts) {
		rc = ps_err_set(e, PS_ENOMEM, "out of memory");
		goto out;
	}
	for (unsigned h = 0; h < HISTORY; h++) {
		c->hist[h].shard_versions = calloc(n, sizeof(uint64_t));
		if (!c->hist[h].shard_versions) {
			rc = ps_err_set(e, PS_ENOMEM, "out of memory");
			goto out;
		}
	}
	for (uint32_t i = 0; i < n; i++) {
		link *l = &c->links[i];
		char ep[1024];
		size_t len = strcspn(p, ",");
		if (len == 0 || len >= sizeof ep) {
			rc = ps_err_set(e, PS_EINVAL,
					"endpoint %u of '%s' is %s", i + 1,
					endpoints, len ? "too long" : "empty");
			goto out;
		}
		memcpy(ep, p, len);
		ep[len] = '\0';
		p += len + (p[len] == ',');
		l->next_id = 1;
		l->next_seq = 1;
		l->hb_base = l->hb_interval = HEARTBEAT_DEFAULT;
		l->kept = calloc((size_t)c->max_inflight, sizeof *l->kept);
		if (!l->kept) {
			rc = ps_err_set(e, PS_ENOMEM, "out of memory");
			goto out;
		}
		c->nlinks = i + 1;
		rc = ps_transport_connect(&l->t, ep, &o, e);
		if (rc != PS_OK)
			goto out;
		c->ts[i] = l->t;
	}
	*out = c;
	c = NULL;
out:
	ps_client_destroy(&c);
	return rc;
}

void ps_client_destroy(ps_client **cp)
{
	ps_client *c;
	if (!cp || !*cp)
		return;
	c = *cp;
	for (uint32_t i = 0; c->links && i < c->nlinks; i++)
		link_release(&c->links[i], c->max_inflight);
	for (unsigned h = 0; h < HISTORY; h++)
		free(c->hist[h].shard_versions);
	ps_tensor_buf_destroy(&c->weights);
	ps_tensor_buf_destroy(&c->staged);
	free(c->plain);
	free(c->links);
	free(c->ts);
	free(c);
	*cp = NULL;
}

static int send_with(link *l, const ps_msg *m, const void *tensor,
		     size_t tlen, ps_tensor_buf *kept, ps_err *e)
{
	size_t len = 0;
	int rc = ps_wire_encode(m, l->buf, sizeof l->buf, &len);
	if (rc == PS_OK && kept)
		rc = ps_transport_send_tensor(l->t, NULL, l->buf, len, kept);
	else if (rc == PS_OK)
		rc = ps_transport_send(l->t, NULL, l->buf, len, tensor, tlen);
	if (rc != PS_OK)
		return ps_err_set(e, rc, "cannot send %s to %s: %s",
				  ps_msg_kind_name(m->kind),
				  ps_transport_endpoint(l->t), ps_strerror(rc));
	return PS_OK;
}

static int send_msg(link *l, const ps_msg *m, const void *tensor, size_t tlen,
		    ps_err *e)
{
	return send_with(l, m, tensor, tlen, NULL, e);
}

/* Send a kept push (again), under a new request id so that a reply to
 * a later request says its ack is overdue only once more. */
static int send_kept(link *l, retained_push *k, ps_err *e)
{
	k->tries++;
	k->msg.request_id = l->next_id++;
	return send_with(l, &k->msg, NULL, 0, k->g, e);
}

static retained_push *find_kept(const ps_client *c, link *l,
				uint64_t request_id)
{
	for (int i = 0; i < c->max_inflight; i++)
		if (l->kept[i].used && l->kept[i].msg.request_id == request_id)
			return &l->kept[i];
	return NULL;
}

static void release_kept(link *l, retained_push *k)
{
	k->used = 0;
	ps_tensor_buf_destroy(&k->g);
	if (l->inflight > 0)
		l->inflight--;
}

/* The server has answered request `upto`, so it has seen every earlier
 * one: a kept push sent before it lost its ack. Send those again. */
static int resend_overdue(const ps_client *c, link *l, uint64_t upto,
			  ps_err *e)
{
	for (int i = 0; i < c->max_inflight; i++) {
		retained_push *k = &l->kept[i];
		int rc;
		if (!k->used || k->msg.request_id >= upto)
			continue;
		if (k->tries >= PUSH_TRIES_MAX) {
			ps_log_warn("push seq %" PRIu64 " sent %d times and never "
				    "acknowledged: dropped",
				    k->msg.u.push.seq, k->tries);
			l->st.pushes_dropped++;
			release_kept(l, k);
			continue;
		}
		l->st.resent++;
		ps_log_debug("push seq %" PRIu64 " unacknowledged: sending it "
			     "again", k->msg.u.push.seq);
		rc = send_kept(l, k, e);
		if (rc != PS_OK)
			return rc;
	}
	return PS_OK;
}

static void take_ack(link *l, const ps_msg *m)
{
	if (m->kind == PS_MSG_ACK) {
		if (m->u.ack.stop)
			l->st.stop = 1;
		l->st.acks++;
		if (m->u.ack.duplicate) {
			l->st.duplicates++;
		} else {
			l->st.applied++;
			l->st.staleness_sum += m->u.ack.staleness;
			if (m->u.ack.staleness > l->st.staleness_max)
				l->st.staleness_max = m->u.ack.staleness;
		}
		if (m->u.ack.version > l->st.last_version)
			l->st.last_version = m->u.ack.version;
	} else if (m->u.error.code == PS_WIRE_ERR_SHUTTING_DOWN) {
		/* Not an error of ours: training was stopped early. */
		l->st.refused_after_stop++;
		if (!l->st.stop)
			snprintf(l->st.stop_reason, sizeof l->st.stop_reason,
				 "%s", m->u.error.message);
		l->st.stop = 1;
	} else if (m->u.error.code == PS_WIRE_ERR_TOO_OLD) {
		l->st.pushes_dropped++;
		ps_log_warn("a push sent again was too old for the server to "
			    "tell whether it applied it: dropped");
	} else {
		l->st.push_errors++;
		/* Log the first and then every 100th: a diverging run would
		 * otherwise print one line per step. */
		if (l->st.push_errors % 100 == 1)
			ps_log_warn("server refused a push (%" PRIu64
				    " so far): %s",
				    l->st.push_errors, m->u.error.message);
	}
}

static void make_hello(const ps_client *c, link *l, ps_msg *m, int rejoin)
{
	ps_msg_init(m, PS_MSG_HELLO, l->next_id++, 0);
	m->u.hello.role = c->role;
	m->u.hello.rank = c->rank;
	m->u.hello.model = c->spec;
	m->u.hello.applied_pushes = l->st.applied;
	m->u.hello.rejoin = rejoin;
	snprintf(m->u.hello.shm_host, sizeof m->u.hello.shm_host, "%s",
		 ps_transport_shared_host(l->t));
}

/* Take the standing a welcome gives. Kept pushes are settled: those at
 * or below the server's last seq were applied (their acks are lost),
 * the others were not and are dropped, their gradients computed from
 * weights this server may never have had. */
static void take_welcome(const ps_client *c, link *l, const ps_msg *m)
{
	const ps_msg_welcome *w = &m->u.welcome;

	l->welcome = *w;
	l->worker_id = w->worker_id;
	l->registered = 1;
	l->registered_id = m->request_id;
	l->epoch++;
	l->st.last_version = w->version;
	ps_transport_lend_to(l->t, NULL,
			     ps_transport_shares_with(l->t, w->shm_host));
	if (w->heartbeat_seconds > 0)
		l->hb_base = l->hb_interval = w->heartbeat_seconds;
	if (c->role != PS_ROLE_WORKER)
		return;
	for (int i = 0; i < c->max_inflight; i++) {
		retained_push *k = &l->kept[i];
		if (!k->used)
			continue;
		if (k->msg.u.push.seq > w->last_seq)
			l->st.pushes_dropped++;
		release_kept(l, k);
	}
	l->next_seq = w->last_seq + 1;
	l->st.applied = w->pushes;
	l->clock_shift = (int64_t)w->clock - (int64_t)c->pushes;
}

/* Send the pull in flight again, under a new request id: the same range
 * and clock, with its claim of held weights or (after registering again,
 * when the server holds nothing of ours) without. */
static int send_pull_again(link *l, int with_claim, ps_err *e)
{
	ps_msg m;

	if (!with_claim)
		l->pull.held_seq = l->pull.held_version = 0;
	ps_msg_init(&m, PS_MSG_PULL, l->next_id++, l->worker_id);
	m.u.pull.begin = l->pull.begin;
	m.u.pull.end = l->pull.end;
	m.u.pull.clock = (uint64_t)((int64_t)l->pull.clock + l->clock_shift);
	m.u.pull.held_seq = l->pull.held_seq;
	m.u.pull.held_version = l->pull.held_version;
	l->pull.id = m.request_id;
	return send_msg(l, &m, NULL, 0, e);
}

/* Send the request in flight (hello, bye, stop) again, under a new
 * request id. */
static int send_req_again(link *l, ps_err *e)
{
	l->req.msg.request_id = l->next_id++;
	l->req.msg.worker_id = l->worker_id;
	l->req.id = l->req.msg.request_id;
	return send_msg(l, &l->req.msg, l->req.tensor, l->req.tlen, e);
}

/* Registered again after an "unknown worker": send again what was in
 * flight. */
static int resume_requests(link *l, ps_err *e)
{
	int rc;

	if (l->pull.id && !l->pull.arrived) {
		rc = send_pull_again(l, 0, e);
		if (rc != PS_OK)
			return rc;
	}
	if (l->req.id && !l->req.arrived)
		return send_req_again(l, e);
	return PS_OK;
}

/* The server answered request_id with "unknown worker". Register again,
 * once, if that request was made under the current registration (older
 * ones were sent before the last registration and are moot). */
static int maybe_rejoin(const ps_client *c, link *l, uint64_t request_id,
			ps_err *e)
{
	ps_msg m;

	if (!l->registered || l->rejoin_id || request_id < l->registered_id)
		return PS_OK;
	ps_log_warn("the server at %s no longer knows this %s (restarted, or "
		    "it dropped us): registering again",
		    ps_transport_endpoint(l->t),
		    c->role == PS_ROLE_WORKER ? "worker" : "evaluator");
	make_hello(c, l, &m, 1);
	l->rejoin_id = m.request_id;
	return send_msg(l, &m, NULL, 0, e);
}

/* The answer m to a heartbeat sent after the pull in flight, which has not
 * been answered: the server answers in order, so unless it holds the pull
 * back (m says which it holds), the pull or its answer was lost. Send it
 * again, as it was, under a new request id; an answer to the old one,
 * should it still come, is then ignored. */
static int resend_lost_pull(link *l, const ps_msg *m, ps_err *e)
{
	int rc;

	if (!l->pull.id || l->pull.arrived || m->request_id < l->pull.id ||
	    m->u.heartbeat.pull_waiting == l->pull.id)
		return PS_OK;
	ps_log_warn("pull %" PRIu64 " unanswered though the server at %s "
		    "answered a later heartbeat: sending it again",
		    l->pull.id, ps_transport_endpoint(l->t));
	rc = send_pull_again(l, 1, e);
	if (rc == PS_OK)
		l->st.pulls_resent++;
	return rc;
}

/* The same for a Bye or an evaluator's Stop whose answer never came:
 * the server answers a repeated one as it did the first. (A hello is
 * sent before there are heartbeats: its loss ends in --timeout.) */
static int resend_lost_request(link *l, const ps_msg *m, ps_err *e)
{
	int rc;

	if (!l->req.id || l->req.arrived || m->request_id < l->req.id ||
	    (l->req.msg.kind != PS_MSG_BYE && l->req.msg.kind != PS_MSG_STOP))
		return PS_OK;
	ps_log_warn("%s %" PRIu64 " unanswered though the server at %s "
		    "answered a later heartbeat: sending it again",
		    ps_msg_kind_name(l->req.msg.kind), l->req.id,
		    ps_transport_endpoint(l->t));
	rc = send_req_again(l, e);
	if (rc == PS_OK)
		l->st.requests_resent++;
	return rc;
}

/* Act on one message from link l's server. */
static int dispatch(const ps_client *c, link *l, const ps_msg *m,
		    const ps_frame *f, ps_err *e)
{
	int unknown = m->kind == PS_MSG_ERROR &&
		      m->u.error.code == PS_WIRE_ERR_UNKNOWN_WORKER;
	retained_push *k;

	if (l->rejoin_id && m->request_id == l->rejoin_id) {
		l->rejoin_id = 0;
		if (m->kind != PS_MSG_WELCOME)
			return ps_err_set(e, PS_EPROTO,
					  "the server at %s refused to register "
					  "us again: %s",
					  ps_transport_endpoint(l->t),
					  m->kind == PS_MSG_ERROR
						  ? m->u.error.message
						  : ps_msg_kind_name(m->kind));
		if (m->u.welcome.begin != l->begin ||
		    m->u.welcome.end != l->end)
			return ps_err_set(e, PS_EPROTO,
					  "the server at %s came back owning "
					  "[%" PRIu64 ", %" PRIu64 "), not [%"
					  PRIu64 ", %" PRIu64 ")",
					  ps_transport_endpoint(l->t),
					  m->u.welcome.begin, m->u.welcome.end,
					  l->begin, l->end);
		take_welcome(c, l, m);
		l->st.rejoins++;
		ps_log_warn("registered again with %s as %s %u at version %"
			    PRIu64 "; carrying on",
			    ps_transport_endpoint(l->t),
			    c->role == PS_ROLE_WORKER ? "worker" : "evaluator",
			    c->rank, m->u.welcome.version);
		return resume_requests(l, e);
	}
	if (l->req.id && m->request_id == l->req.id) {
		if (unknown && l->req.msg.kind != PS_MSG_HELLO)
			return maybe_rejoin(c, l, m->request_id, e);
		l->req.reply = *m;
		l->req.arrived = 1;
		return PS_OK;
	}
	if (l->pull.id && m->request_id == l->pull.id) {
		if (unknown)
			return maybe_rejoin(c, l, m->request_id, e);
		l->pull.unchanged = m->kind == PS_MSG_WEIGHTS &&
				    m->u.weights.unchanged;
		if (l->pull.unchanged && !l->pull.held_seq)
			return ps_err_set(e, PS_EPROTO,
					  "server answered \"unchanged\" to a pull "
					  "that claimed no weights");
		if (m->kind != PS_MSG_ERROR && !l->pull.unchanged &&
		    f->tensor_len != l->pull.bytes)
			return ps_err_set(e, PS_EPROTO,
					  "server sent %zu tensor bytes, expected %zu",
					  f->tensor_len, l->pull.bytes);
		if (l->pull.unchanged) {
			l->st.pulls_unchanged++;
		} else if (m->kind != PS_MSG_ERROR && f->tensor_len &&
			   l->pull.dst) {
			memcpy(l->pull.dst, f->tensor, f->tensor_len);
		} else if (m->kind != PS_MSG_ERROR && f->tensor_len) {
			int rc;
			ps_tensor_buf_destroy(&l->pull.taken);
			rc = ps_transport_take_tensor(l->t, f, &l->pull.taken);
			if (rc != PS_OK)
				return ps_err_set(e, rc, "out of memory for weights");
		}
		l->pull.reply = *m;
		l->pull.arrived = 1;
		l->pulled_epoch = l->epoch;
		return resend_overdue(c, l, m->request_id, e);
	}
	if ((k = find_kept(c, l, m->request_id)) != NULL) {
		if (unknown)
			return maybe_rejoin(c, l, m->request_id, e);
		if (m->kind == PS_MSG_ACK || m->kind == PS_MSG_ERROR) {
			take_ack(l, m);
			release_kept(l, k);
			return resend_overdue(c, l, m->request_id, e);
		}
	}
	/* The server could not read a message of ours (request id 0). It
	 * answers in order, so it was the oldest one outstanding: a push,
	 * the only kind that can be large or carry bad bytes. */
	if (m->kind == PS_MSG_ERROR && m->request_id == 0) {
		k = NULL;
		for (int i = 0; i < c->max_inflight; i++)
			if (l->kept[i].used &&
			    (!k || l->kept[i].msg.request_id < k->msg.request_id))
				k = &l->kept[i];
		if (k) {
			take_ack(l, m);
			release_kept(l, k);
			return PS_OK;
		}
	}
	if (m->kind == PS_MSG_HEARTBEAT && m->request_id == l->last_hb_id) {
		int rc = resend_lost_pull(l, m, e);
		if (rc == PS_OK)
			rc = resend_lost_request(l, m, e);
		return rc != PS_OK ? rc : resend_overdue(c, l, m->request_id, e);
	}
	if (unknown && m->request_id == l->last_hb_id)
		return maybe_rejoin(c, l, m->request_id, e);
	/* A reply to a request that was sent again, or to a heartbeat
	 * superseded by a later one: nothing waits for it. */
	ps_log_debug("ignoring %s for request %" PRIu64,
		     ps_msg_kind_name(m->kind), m->request_id);
	return PS_OK;
}

/* The server has said nothing for the heartbeat interval: ask it. A
 * send that fails is not fatal here; the silence will be. */
static void heartbeat(const ps_client *c, link *l, double now, double silent)
{
	ps_msg m;
	ps_err ignored = {0};

	ps_msg_init(&m, PS_MSG_HEARTBEAT, l->next_id++, l->worker_id);
	if (send_msg(l, &m, NULL, 0, &ignored) == PS_OK)
		l->last_hb_id = m.request_id;
	l->last_hb = now;
	if (silent >= 2 * l->hb_base &&
	    l->hb_interval < HEARTBEAT_BACKOFF_MAX * l->hb_base) {
		ps_log_warn("no answer from the server at %s for %.1f s; "
			    "retrying every %.1f s (giving up after %.0f s)",
			    ps_transport_endpoint(l->t), silent,
			    2 * l->hb_interval, c->timeout);
		l->hb_interval *= 2;
	}
}

enum wait_for { WAIT_REQ, WAIT_PULL, WAIT_INFLIGHT };

static int link_done(const link *l, enum wait_for what, int inflight_left)
{
	switch (what) {
	case WAIT_REQ:
		return !l->req.id || l->req.arrived;
	case WAIT_PULL:
		return !l->pull.id || l->pull.arrived;
	case WAIT_INFLIGHT:
		return l->inflight <= inflight_left && !l->rejoin_id;
	}
	return 1;
}

/* Receive one message on l (waiting at most wait_ms) and dispatch it.
 * PS_ETIMEDOUT when none came. */
static int receive_one(ps_client *c, link *l, int wait_ms, ps_err *e)
{
	ps_frame f;
	ps_msg m;
	ps_err de = {0};
	int rc = ps_transport_recv(l->t, &f, wait_ms);

	if (rc == PS_ETIMEDOUT)
		return rc;
	/* Only the handled stop signals interrupt the wait: give up at once
	 * rather than wait out the timeout for a server that may be
	 * stopping too. */
	if (rc == PS_EINTR)
		return ps_err_set(e, rc, "stopped by a signal while waiting for "
				  "the server at %s",
				  ps_transport_endpoint(l->t));
	if (rc != PS_OK)
		return ps_err_set(e, rc, "receive from %s failed: %s",
				  ps_transport_endpoint(l->t), ps_strerror(rc));
	rc = ps_wire_decode(f.head, f.head_len, &m, &de);
	if (rc == PS_OK)
		rc = ps_wire_check_tensor(&m, f.tensor_len, &de);
	if (rc != PS_OK)
		return ps_err_set(e, PS_EPROTO, "bad message from the server at "
				  "%s: %s", ps_transport_endpoint(l->t), de.msg);
	l->last_rx = ps_now();
	l->hb_interval = l->hb_base;
	return dispatch(c, l, &m, &f, e);
}

/* Receive and dispatch on every link until `what` is done on all. */
static int wait_for(ps_client *c, enum wait_for what, int inflight_left,
		    ps_err *e)
{
	double start = ps_now();

	for (;;) {
		double now = ps_now(), next = now + c->timeout;
		int all = 1, rc;

		for (uint32_t i = 0; i < c->nlinks; i++) {
			link *l = &c->links[i];
			double quiet = l->last_rx > start ? l->last_rx : start;
			double since = l->last_hb > quiet ? l->last_hb : quiet;
			if (link_done(l, what, inflight_left))
				continue;
			all = 0;
			if (now - quiet >= c->timeout)
				return ps_err_set(e, PS_ETIMEDOUT,
						  "no reply from the server at %s within %.0f s",
						  ps_transport_endpoint(l->t),
						  c->timeout);
			if (l->registered && now - since >= l->hb_interval) {
				heartbeat(c, l, now, now - quiet);
				since = now;
			}
			if (l->registered && since + l->hb_interval < next)
				next = since + l->hb_interval;
			if (quiet + c->timeout < next)
				next = quiet + c->timeout;
		}
		if (all)
			return PS_OK;
		if (c->nlinks == 1) {
			rc = receive_one(c, &c->links[0],
					 (int)((next - now) * 1000) + 1, e);
			if (rc != PS_OK && rc != PS_ETIMEDOUT)
				return rc;
			continue;
		}
		rc = ps_transport_wait_any(c->ts, c->nlinks,
					   (int)((next - now) * 1000) + 1);
		if (rc == PS_ETIMEDOUT)
			continue;
		if (rc != PS_OK)
			return ps_err_set(e, rc, "waiting for the servers failed: %s",
					  ps_strerror(rc));
		for (uint32_t i = 0; i < c->nlinks; i++) {
			while ((rc = receive_one(c, &c->links[i], 0, e)) == PS_OK)
				;
			if (rc != PS_ETIMEDOUT)
				return rc;
		}
	}
}

/* Send m (its request id and worker id set per link by make) on every
 * link as each link's request, with tensor slice i from tensor_of(i), and
 * wait for every reply. An error reply fails the whole request. */
static int request_all(ps_client *c, const ps_msg *m,
		       const float *tensor, uint64_t tbegin, ps_msg *first,
		       ps_err *e)
{
	int rc = PS_OK;

	for (uint32_t i = 0; i < c->nlinks && rc == PS_OK; i++) {
		link *l = &c->links[i];
		l->req.msg = *m;
		l->req.msg.request_id = l->next_id++;
		l->req.msg.worker_id = l->worker_id;
		l->req.tensor = NULL;
		l->req.tlen = 0;
		if (m->kind == PS_MSG_STOP && tensor) {
			l->req.msg.u.stop.begin = l->begin;
			l->req.msg.u.stop.end = l->end;
			l->req.tensor = tensor + (l->begin - tbegin);
			l->req.tlen = (size_t)(l->end - l->begin) * sizeof(float);
		}
		if (m->kind == PS_MSG_HELLO)
			make_hello(c, l, &l->req.msg, 0);
		l->req.id = l->req.msg.request_id;
		l->req.arrived = 0;
		rc = send_msg(l, &l->req.msg, l->req.tensor, l->req.tlen, e);
	}
	if (rc == PS_OK)
		rc = wait_for(c, WAIT_REQ, 0, e);
	for (uint32_t i = 0; i < c->nlinks; i++) {
		link *l = &c->links[i];
		if (rc == PS_OK && l->req.reply.kind == PS_MSG_ERROR)
			rc = ps_err_set(e, PS_EPROTO, "server %s refused: %s",
					ps_transport_endpoint(l->t),
					l->req.reply.u.error.message);
		if (rc == PS_OK && i == 0)
			*first = l->req.reply;
		l->req.id = 0;
		l->req.tensor = NULL;
	}
	return rc;
}

static int cmp_shard(const void *a, const void *b)
{
	const link *x = a, *y = b;
	return (x->welcome.shard > y->welcome.shard) -
	       (x->welcome.shard < y->welcome.shard);
}

/* Every link's welcome: S distinct shards of S, one model, the ranges
 * ps_shard_range() cuts. Links are put in shard order. */
static int check_shards(ps_client *c, ps_err *e)
{
	uint64_t n = c->links[0].welcome.num_params;

	qsort(c->links, c->nlinks, sizeof *c->links, cmp_shard);
	for (uint32_t i = 0; i < c->nlinks; i++) {
		link *l = &c->links[i];
		uint64_t b, end;
		c->ts[i] = l->t;
		if (l->welcome.num_shards != c->nlinks ||
		    l->welcome.shard != i || l->welcome.num_params != n)
			return ps_err_set(e, PS_EPROTO,
					  "the server at %s is shard %u of %u "
					  "of a %" PRIu64 "-parameter model; "
					  "connected to %u server(s) of a %"
					  PRIu64 "-parameter model",
					  ps_transport_endpoint(l->t),
					  l->welcome.shard, l->welcome.num_shards,
					  l->welcome.num_params, c->nlinks, n);
		ps_shard_range(n, c->nlinks, i, &b, &end);
		if (l->welcome.begin != b || l->welcome.end != end)
			return ps_err_set(e, PS_EPROTO,
					  "the server at %s owns [%" PRIu64
					  ", %" PRIu64 "), expected [%" PRIu64
					  ", %" PRIu64 ")",
					  ps_transport_endpoint(l->t),
					  l->welcome.begin, l->welcome.end, b,
					  end);
		l->begin = b;
		l->end = end;
	}
	return PS_OK;
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
	ps_msg_init(&m, PS_MSG_HELLO, 0, 0);
	rc = request_all(c, &m, NULL, 0, &r, e);
	for (uint32_t i = 0; rc == PS_OK && i < c->nlinks; i++) {
		link *l = &c->links[i];
		if (l->req.reply.kind != PS_MSG_WELCOME)
			return ps_err_set(e, PS_EPROTO, "expected welcome, got %s",
					  ps_msg_kind_name(l->req.reply.kind));
		take_welcome(c, l, &l->req.reply);
		/* The weights the caller starts from are the welcome's. */
		l->pulled_epoch = l->epoch;
		l->version = l->welcome.version;
	}
	if (rc == PS_OK)
		rc = check_shards(c, e);
	if (rc != PS_OK)
		return rc;
	*welcome = c->links[0].welcome;
	welcome->begin = 0;
	welcome->end = welcome->num_params;
	welcome->shard = 0;
	for (uint32_t i = 1; i < c->nlinks; i++)
		if (c->links[i].welcome.version < welcome->version)
			welcome->version = c->links[i].welcome.version;
	return PS_OK;
}

int ps_client_pull_start(ps_client *c, float *w, uint64_t begin,
			 uint64_t end, uint64_t clock, ps_err *e)
{
	if (c->pull_inflight)
		return ps_err_set(e, PS_EINVAL, "a pull is already in flight");
	for (uint32_t i = 0; i < c->nlinks; i++) {
		link *l = &c->links[i];
		uint64_t b = begin > l->begin ? begin : l->begin;
		uint64_t en = end < l->end ? end : l->end;
		ps_msg m;
		int rc;
		l->pull.id = 0;
		l->pull.arrived = 0;
		l->pull.unchanged = 0;
		ps_tensor_buf_destroy(&l->pull.taken);
		if (b >= en)
			continue; /* nothing of this shard wanted */
		ps_msg_init(&m, PS_MSG_PULL, l->next_id++, l->worker_id);
		m.u.pull.begin = b;
		m.u.pull.end = en;
		m.u.pull.clock = (uint64_t)((int64_t)clock + l->clock_shift);
		/* Claimed only for weights the client keeps, of the same
		 * range as the last pull's. */
		if (!w && l->held_seq && b == l->pull.begin &&
		    en == l->pull.end) {
			m.u.pull.held_seq = l->held_seq;
			m.u.pull.held_version = l->version;
		}
		l->held_seq = 0;
		rc = send_msg(l, &m, NULL, 0, e);
		if (rc != PS_OK)
			return rc;
		l->pull.id = m.request_id;
		l->pull.held_seq = m.u.pull.held_seq;
		l->pull.held_version = m.u.pull.held_version;
		l->pull.dst = w ? w + (b - begin) : NULL;
		l->pull.bytes = (size_t)(en - b) * sizeof(float);
		l->pull.begin = b;
		l->pull.end = en;
		l->pull.clock = clock;
	}
	c->pull_inflight = 1;
	c->pull_keep = w == NULL;
	c->pull_begin = begin;
	c->pull_end = end;
	return PS_OK;
}

/* A pull with no buffer of the caller's has landed: make its weights the
 * current ones. One shard's reply is used where it lies; several are
 * copied side by side. A shard that answered "unchanged" leaves its part
 * of the current weights as it is. */
static int keep_weights(ps_client *c, ps_err *e)
{
	size_t n = (size_t)(c->pull_end - c->pull_begin);
	link *only = NULL;
	uint32_t parts = 0, same = 0;

	for (uint32_t i = 0; i < c->nlinks; i++) {
		if (c->links[i].pull.taken) {
			only = &c->links[i];
			parts++;
		}
		same += c->links[i].pull.unchanged;
	}
	if (same > 0 && parts == 0)
		return PS_OK;
	if (parts == 1 && same == 0 && only->pull.begin == c->pull_begin &&
	    only->pull.end == c->pull_end) {
		ps_tensor_buf_destroy(&c->weights);
		c->weights = only->pull.taken;
		only->pull.taken = NULL;
		c->current = ps_tensor_buf_data(c->weights);
		return PS_OK;
	}
	/* Claims are made only of weights the client keeps side by side. */
	if (same > 0 && c->current != c->plain)
		return ps_err_set(e, PS_EPROTO,
				  "a shard answered \"unchanged\" for weights "
				  "this client does not hold");
	ps_tensor_buf_destroy(&c->weights);
	c->current = NULL;
	if (c->plain_len < n) {
		free(c->plain);
		c->plain_len = 0;
		c->plain = malloc(n * sizeof *c->plain);
		if (!c->plain)
			return ps_err_set(e, PS_ENOMEM, "out of memory for weights");
		c->plain_len = n;
	}
	for (uint32_t i = 0; i < c->nlinks; i++) {
		link *l = &c->links[i];
		if (!l->pull.taken)
			continue;
		memcpy(c->plain + (l->pull.begin - c->pull_begin),
		       ps_tensor_buf_data(l->pull.taken), l->pull.bytes);
		ps_tensor_buf_destroy(&l->pull.taken);
	}
	c->current = c->plain;
	return PS_OK;
}

float *ps_client_weights(ps_client *c)
{
	return c->current;
}

int ps_client_pull_finish(ps_client *c, uint64_t *version,
			  int *training_done, ps_err *e)
{
	uint64_t v = UINT64_MAX;
	int done = 1, rc;
	unsigned h;

	if (!c->pull_inflight)
		return ps_err_set(e, PS_EINVAL, "no pull in flight");
	rc = wait_for(c, WAIT_PULL, 0, e);
	c->pull_inflight = 0;
	h = c->hist_next++ % HISTORY;
	for (uint32_t i = 0; i < c->nlinks; i++) {
		link *l = &c->links[i];
		const ps_msg *r = &l->pull.reply;
		if (!l->pull.id)
			continue;
		l->pull.id = 0;
		if (rc != PS_OK)
			continue;
		if (r->kind == PS_MSG_ERROR)
			rc = ps_err_set(e, PS_EPROTO, "server %s refused: %s",
					ps_transport_endpoint(l->t),
					r->u.error.message);
		else if (r->kind != PS_MSG_WEIGHTS ||
			 r->u.weights.begin != l->pull.begin ||
			 r->u.weights.end != l->pull.end)
			rc = ps_err_set(e, PS_EPROTO,
					"pull answered with %s of another range",
					ps_msg_kind_name(r->kind));
		if (rc != PS_OK)
			continue;
		l->version = r->u.weights.version;
		l->sgd_lr = r->u.weights.sgd_lr;
		l->st.last_version = r->u.weights.version;
		if (r->u.weights.stop)
			l->st.stop = 1;
		l->st.train_seconds = r->u.weights.train_seconds;
		done = done && r->u.weights.training_done;
		if (l->version < v)
			v = l->version;
	}
	if (rc == PS_OK && c->pull_keep)
		rc = keep_weights(c, e);
	for (uint32_t i = 0; i < c->nlinks; i++) {
		c->links[i].held_seq = 0; /* new weights: no claim yet */
		ps_tensor_buf_destroy(&c->links[i].pull.taken);
	}
	if (rc != PS_OK)
		return rc;
	for (uint32_t i = 0; i < c->nlinks; i++)
		c->hist[h].shard_versions[i] = c->links[i].version;
	c->hist[h].version = v == UINT64_MAX ? 0 : v;
	c->pulls++;
	if (version)
		*version = c->hist[h].version;
	if (training_done)
		*training_done = done;
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

/* w -= lr * g, each element rounded as the server's SGD kernel does
 * (a product, then a difference: no fused multiply-add). The body runs
 * over a multiple of 16 floats so that gcc -O2 vectorizes it; the result
 * is the same element by element either way. */
static void sub_scaled(float *restrict w, const float *restrict g, float lr,
		       size_t n)
{
	size_t body = n & ~(size_t)15;

	for (size_t j = 0; j < body; j++)
		w[j] -= lr * g[j];
	for (size_t j = body; j < n; j++)
		w[j] -= lr * g[j];
}

int ps_client_add_own_push(ps_client *c, float *w, const float *g,
			   uint64_t begin, uint64_t end)
{
	int kept = w == c->current && begin == c->pull_begin &&
		   end == c->pull_end;
	size_t bad;

	if (end <= begin)
		return 0;
	for (uint32_t i = 0; i < c->nlinks; i++) {
		const link *l = &c->links[i];
		if (l->begin < end && begin < l->end && !(l->sgd_lr > 0.0f))
			return 0;
	}
	if (ps_wire_check_finite(g, (size_t)(end - begin), &bad) != PS_OK)
		return 0;
	for (uint32_t i = 0; i < c->nlinks; i++) {
		link *l = &c->links[i];
		uint64_t lo = l->begin > begin ? l->begin : begin;
		uint64_t hi = l->end < end ? l->end : end;
		if (lo >= hi)
			continue;
		sub_scaled(w + (lo - begin), g + (lo - begin), l->sgd_lr,
			   (size_t)(hi - lo));
		/* The client's own weights, this shard's part now its last
		 * reply plus the newest push over that same part: the next
		 * pull may claim them. */
		if (kept && l->pull.begin == lo && l->pull.end == hi &&
		    l->last_push_seq != 0 && l->last_push_begin == lo &&
		    l->last_push_end == hi)
			l->held_seq = l->last_push_seq;
	}
	return 1;
}

/* The version of shard i's weights behind a gradient computed from the
 * pull that reported base_version: with one shard that is base_version;
 * with several, the shard's version in the newest such pull remembered,
 * else in the last pull. */
static uint64_t shard_base(const ps_client *c, uint32_t i,
			   uint64_t base_version)
{
	if (c->nlinks == 1)
		return base_version;
	for (unsigned k = 1; k <= HISTORY; k++) {
		unsigned h = (c->hist_next - k) % HISTORY;
		if (k <= c->hist_next && c->hist[h].version == base_version)
			return c->hist[h].shard_versions[i];
	}
	return c->links[i].version;
}

float *ps_client_grad_buffer(ps_client *c, uint64_t begin, uint64_t end)
{
	ps_transport *t = c->nlinks > 0 ? c->links[0].t : NULL;

	if (c->staged && !c->staged_pushed && c->staged_begin == begin &&
	    c->staged_end == end)
		return ps_tensor_buf_data(c->staged);
	ps_tensor_buf_destroy(&c->staged);
	/* A buffer of the transport of the one shard that holds the whole
	 * range, so that its push is the buffer itself. */
	for (uint32_t i = 0; i < c->nlinks; i++)
		if (c->links[i].begin <= begin && end <= c->links[i].end)
			t = c->links[i].t;
	if (!t || end < begin ||
	    ps_transport_tensor_new(t, (size_t)(end - begin) * sizeof(float),
				    &c->staged) != PS_OK)
		return NULL;
	c->staged_begin = begin;
	c->staged_end = end;
	c->staged_pushed = 0;
	return ps_tensor_buf_data(c->staged);
}

int ps_client_push(ps_client *c, const float *g, uint64_t begin,
		   uint64_t end, uint64_t base_version, uint32_t batch_size,
		   float loss, uint64_t clock, ps_err *e)
{
	int rc;

	/* Bound the pushes in flight: wait for the oldest acks. */
	if (c->nlinks > 0) {
		int busy = 0;
		for (uint32_t i = 0; i < c->nlinks; i++)
			busy |= c->links[i].inflight >= c->max_inflight;
		if (busy) {
			rc = wait_for(c, WAIT_INFLIGHT, c->max_inflight - 1, e);
			if (rc != PS_OK)
				return rc;
		}
	}
	for (uint32_t i = 0; i < c->nlinks; i++) {
		link *l = &c->links[i];
		uint64_t b = begin > l->begin ? begin : l->begin;
		uint64_t en = end < l->end ? end : l->end;
		size_t count;
		retained_push *k = NULL;
		if (b >= en)
			continue;
		/* Computed from weights of before the last registration:
		 * the server that has us now may never have had them.
		 * Counted, not sent; the server's clock for us does not
		 * move, so neither does ours. */
		if (l->pulled_epoch != l->epoch) {
			l->st.pushes_dropped++;
			l->clock_shift--;
			continue;
		}
		count = (size_t)(en - b);
		for (int j = 0; j < c->max_inflight && !k; j++)
			if (!l->kept[j].used)
				k = &l->kept[j];
		if (!k) /* cannot be: the wait above left a slot free */
			return ps_err_set(e, PS_EINVAL, "no free push slot");
		/* Left by a push whose send failed. */
		ps_tensor_buf_destroy(&k->g);
		if (c->staged && g == ps_tensor_buf_data(c->staged) &&
		    begin == c->staged_begin && end == c->staged_end &&
		    b == begin && en == end) {
			/* The caller's gradient is in a buffer of ours: the
			 * kept push shares it. */
			k->g = ps_tensor_buf_share(c->staged);
			c->staged_pushed = 1;
		} else if (ps_transport_tensor_new(l->t, count * sizeof *g,
						   &k->g) == PS_OK) {
			memcpy(ps_tensor_buf_data(k->g), g + (b - begin),
			       count * sizeof *g);
		} else {
			return ps_err_set(e, PS_ENOMEM,
					  "out of memory for a copy of a push");
		}
		k->tries = 0;
		ps_msg_init(&k->msg, PS_MSG_PUSH, 0, l->worker_id);
		k->msg.u.push.base_version = shard_base(c, i, base_version);
		k->msg.u.push.begin = b;
		k->msg.u.push.end = en;
		k->msg.u.push.batch_size = batch_size;
		k->msg.u.push.loss = loss;
		k->msg.u.push.clock = (uint64_t)((int64_t)clock + l->clock_shift);
		k->msg.u.push.seq = l->next_seq;
		rc = send_kept(l, k, e);
		if (rc != PS_OK)
			return rc;
		k->used = 1;
		l->last_push_seq = l->next_seq;
		l->last_push_begin = b;
		l->last_push_end = en;
		l->next_seq++;
		l->st.pushes++;
		l->inflight++;
	}
	c->pushes++;
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
	ps_msg_init(&m, PS_MSG_BYE, 0, 0);
	m.u.bye.samples = samples;
	m.u.bye.steps = steps;
	return request_all(c, &m, NULL, 0, &r, e);
}

int ps_client_stopped(const ps_client *c)
{
	for (uint32_t i = 0; i < c->nlinks; i++)
		if (c->links[i].st.stop)
			return 1;
	return 0;
}

int ps_client_stop(ps_client *c, const char *reason, const float *best,
		   uint64_t begin, uint64_t end, uint64_t best_version,
		   ps_err *e)
{
	ps_msg m, r;
	int rc;

	(void)end;
	ps_msg_init(&m, PS_MSG_STOP, 0, 0);
	snprintf(m.u.stop.reason, sizeof m.u.stop.reason, "%s", reason);
	m.u.stop.best_version = best_version;
	rc = request_all(c, &m, best, begin, &r, e);
	if (rc == PS_OK)
		for (uint32_t i = 0; i < c->nlinks; i++)
			c->links[i].st.stop = 1;
	return rc;
}

void ps_client_get_stats(const ps_client *c, ps_client_stats *out)
{
	memset(out, 0, sizeof *out);
	out->last_version = UINT64_MAX;
	for (uint32_t i = 0; i < c->nlinks; i++) {
		const ps_client_stats *s = &c->links[i].st;
		out->acks += s->acks;
		out->applied += s->applied;
		out->duplicates += s->duplicates;
		out->resent += s->resent;
		out->pulls_resent += s->pulls_resent;
		out->requests_resent += s->requests_resent;
		out->rejoins += s->rejoins;
		out->pushes_dropped += s->pushes_dropped;
		out->push_errors += s->push_errors;
		out->staleness_sum += s->staleness_sum;
		if (s->staleness_max > out->staleness_max)
			out->staleness_max = s->staleness_max;
		if (s->last_version < out->last_version)
			out->last_version = s->last_version;
		out->refused_after_stop += s->refused_after_stop;
		out->pulls_unchanged += s->pulls_unchanged;
		if (s->train_seconds > out->train_seconds)
			out->train_seconds = s->train_seconds;
		if (s->stop && !out->stop) {
			out->stop = 1;
			snprintf(out->stop_reason, sizeof out->stop_reason, "%s",
				 s->stop_reason);
		}
	}
	if (out->last_version == UINT64_MAX)
		out->last_version = 0;
	out->pushes = c->pushes;
	out->pulls = c->pulls;
}
