/*
 * ps_transport_zmq: the ZeroMQ backend. The listening side is a ROUTER
 * socket (it sees each peer's routing id and can answer any of them), the
 * connecting side a DEALER (several requests in flight, no lock-step).
 * This is the only file that includes zmq.h.
 *
 * Frames on the wire: [routing id, added by ROUTER] envelope [tensor].
 * A received message's frames stay in zmq_msg_t buffers owned by the
 * transport until the next recv, so the server applies a gradient straight
 * from ZeroMQ's buffer without copying it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "ps_transport_impl.h"

typedef struct zmq_transport {
	struct ps_transport base;
	void *ctx;
	void *sock;
	int listening;
	int have_head, have_tensor;
	zmq_msg_t head, tensor;
	char endpoint[256];
} zmq_transport;

static int from_errno(int err)
{
	switch (err) {
	case EAGAIN:
		return PS_ETIMEDOUT;
	case EINTR:
		return PS_EINTR;
	case EHOSTUNREACH:
		return PS_EUNKNOWN_WORKER;
	case EADDRINUSE:
		return PS_EADDRINUSE;
	case EINVAL:
	case EPROTONOSUPPORT:
	case ENOCOMPATPROTO:
	case ENODEV:
	case EADDRNOTAVAIL:
		return PS_EINVAL;
	case ENOMEM:
		return PS_ENOMEM;
	default:
		return PS_ETRANSPORT;
	}
}

static void release_frames(zmq_transport *z)
{
	if (z->have_head)
		zmq_msg_close(&z->head);
	if (z->have_tensor)
		zmq_msg_close(&z->tensor);
	z->have_head = z->have_tensor = 0;
}

/* Receive and discard the rest of a multipart message. */
static void drain(void *sock)
{
	int more = 1;
	size_t len = sizeof more;
	while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len) == 0 && more) {
		zmq_msg_t m;
		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, sock, 0) < 0) {
			zmq_msg_close(&m);
			break;
		}
		zmq_msg_close(&m);
	}
}

static int zt_send(ps_transport *t, const ps_peer *to, const void *head,
		   size_t hlen, const void *tensor, size_t tlen)
{
	zmq_transport *z = (zmq_transport *)t;
	/* The listening side never blocks on one slow peer: a full queue
	 * is reported and the reply dropped by the caller. */
	int flags = z->listening ? ZMQ_DONTWAIT : 0;

	if (z->listening) {
		if (!to)
			return PS_EINVAL;
		if (zmq_send(z->sock, to->id, to->len, flags | ZMQ_SNDMORE) < 0)
			return from_errno(zmq_errno());
	}
	if (zmq_send(z->sock, head, hlen, flags | (tlen ? ZMQ_SNDMORE : 0)) < 0)
		return from_errno(zmq_errno());
	/* Once the first frame is queued ZeroMQ sends all or nothing; the
	 * tensor frame cannot fail for lack of room. */
	if (tlen && zmq_send(z->sock, tensor, tlen, flags) < 0)
		return from_errno(zmq_errno());
	return PS_OK;
}

static int recv_part(void *sock, zmq_msg_t *m, int *more)
{
	size_t len = sizeof *more;
	zmq_msg_init(m);
	if (zmq_msg_recv(m, sock, ZMQ_DONTWAIT) < 0) {
		int rc = from_errno(zmq_errno());
		zmq_msg_close(m);
		return rc;
	}
	if (zmq_getsockopt(sock, ZMQ_RCVMORE, more, &len) < 0)
		*more = 0;
	return PS_OK;
}

static int zt_recv(ps_transport *t, ps_frame *out, int timeout_ms)
{
	zmq_transport *z = (zmq_transport *)t;
	zmq_pollitem_t item = {z->sock, 0, ZMQ_POLLIN, 0};
	int more = 0, rc, n;

	release_frames(z);
	memset(out, 0, sizeof *out);
	n = zmq_poll(&item, 1, timeout_ms);
	if (n < 0)
		return from_errno(zmq_errno());
	if (n == 0)
		return PS_ETIMEDOUT;

	if (z->listening) {
		zmq_msg_t id;
		rc = recv_part(z->sock, &id, &more);
		if (rc != PS_OK)
			return rc;
		if (zmq_msg_size(&id) <= PS_PEER_ID_MAX) {
			out->from.len = (uint8_t)zmq_msg_size(&id);
			memcpy(out->from.id, zmq_msg_data(&id), out->from.len);
		}
		zmq_msg_close(&id);
		if (out->from.len == 0) {
			/* A routing id we cannot hold is one we cannot
			 * answer: drop the message. */
			drain(z->sock);
			return PS_EPROTO;
		}
		if (!more)
			return PS_EPROTO;
	}
	rc = recv_part(z->sock, &z->head, &more);
	if (rc != PS_OK)
		return rc;
	z->have_head = 1;
	if (more) {
		rc = recv_part(z->sock, &z->tensor, &more);
		if (rc != PS_OK) {
			release_frames(z);
			return rc;
		}
		z->have_tensor = 1;
		if (more) {
			drain(z->sock);
			release_frames(z);
			return PS_EPROTO;
		}
	}
	out->head = zmq_msg_data(&z->head);
	out->head_len = zmq_msg_size(&z->head);
	if (z->have_tensor) {
		out->tensor = zmq_msg_data(&z->tensor);
		out->tensor_len = zmq_msg_size(&z->tensor);
	}
	return PS_OK;
}

/* Every ts[i] is a zmq_transport (ps_transport_wait_any() checked). */
static int zt_wait_any(ps_transport *const *ts, size_t n, int timeout_ms)
{
	zmq_pollitem_t few[16], *items = few;
	int k, rc;

	if (n > sizeof few / sizeof few[0]) {
		items = malloc(n * sizeof *items);
		if (!items)
			return PS_ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		items[i] = (zmq_pollitem_t){((zmq_transport *)ts[i])->sock, 0,
					    ZMQ_POLLIN, 0};
	k = zmq_poll(items, (int)n, timeout_ms);
	rc = k < 0 ? from_errno(zmq_errno()) : k > 0 ? PS_OK : PS_ETIMEDOUT;
	if (items != few)
		free(items);
	return rc;
}

static const char *zt_endpoint(const ps_transport *t)
{
	return ((const zmq_transport *)t)->endpoint;
}

static void zt_destroy(ps_transport *t)
{
	zmq_transport *z = (zmq_transport *)t;
	release_frames(z);
	if (z->sock)
		zmq_close(z->sock);
	if (z->ctx)
		zmq_ctx_term(z->ctx);
	free(z);
}

static const struct ps_transport_ops zmq_ops = {
	.send = zt_send,
	.recv = zt_recv,
	.endpoint = zt_endpoint,
	.destroy = zt_destroy,
	.wait_any = zt_wait_any,
};

static int open_socket(zmq_transport **out, int type,
		       const ps_transport_opts *opts, ps_err *e)
{
	zmq_transport *z = calloc(1, sizeof *z);
	int linger = opts ? opts->linger_ms : 1000;
	int64_t maxmsg = opts && opts->max_message > 0 ? opts->max_message : -1;
	int rc = PS_OK;

	if (!z)
		return ps_err_set(e, PS_ENOMEM, "out of memory");
	z->base.ops = &zmq_ops;
	z->ctx = zmq_ctx_new();
	if (!z->ctx) {
		rc = ps_err_set(e, PS_ETRANSPORT, "zmq_ctx_new: %s",
				zmq_strerror(zmq_errno()));
		goto out;
	}
	z->sock = zmq_socket(z->ctx, type);
	if (!z->sock) {
		rc = ps_err_set(e, PS_ETRANSPORT, "zmq_socket: %s",
				zmq_strerror(zmq_errno()));
		goto out;
	}
	if (zmq_setsockopt(z->sock, ZMQ_LINGER, &linger, sizeof linger) < 0 ||
	    zmq_setsockopt(z->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) < 0) {
		rc = ps_err_set(e, PS_ETRANSPORT, "zmq_setsockopt: %s",
				zmq_strerror(zmq_errno()));
		goto out;
	}
out:
	if (rc != PS_OK) {
		zt_destroy(&z->base);
		z = NULL;
	}
	*out = z;
	return rc;
}

int ps_transport_zmq_listen(ps_transport **out, const char *endpoint,
			    const ps_transport_opts *opts, ps_err *e)
{
	zmq_transport *z = NULL;
	int mandatory = 1;
	size_t len;
	int rc = open_socket(&z, ZMQ_ROUTER, opts, e);

	*out = NULL;
	if (rc != PS_OK)
		return rc;
	z->listening = 1;
	/* Report a reply to a vanished peer instead of dropping it. */
	if (zmq_setsockopt(z->sock, ZMQ_ROUTER_MANDATORY, &mandatory,
			   sizeof mandatory) < 0) {
		rc = ps_err_set(e, PS_ETRANSPORT, "zmq_setsockopt: %s",
				zmq_strerror(zmq_errno()));
		goto out;
	}
	if (zmq_bind(z->sock, endpoint) < 0) {
		int err = zmq_errno();
		rc = ps_err_set(e, from_errno(err), "cannot listen on %s: %s",
				endpoint, zmq_strerror(err));
		goto out;
	}
	len = sizeof z->endpoint;
	if (zmq_getsockopt(z->sock, ZMQ_LAST_ENDPOINT, z->endpoint, &len) < 0)
		snprintf(z->endpoint, sizeof z->endpoint, "%s", endpoint);
out:
	if (rc != PS_OK) {
		zt_destroy(&z->base);
		return rc;
	}
	*out = &z->base;
	return PS_OK;
}

int ps_transport_zmq_connect(ps_transport **out, const char *endpoint,
			     const ps_transport_opts *opts, ps_err *e)
{
	zmq_transport *z = NULL;
	int rc = open_socket(&z, ZMQ_DEALER, opts, e);

	*out = NULL;
	if (rc != PS_OK)
		return rc;
	/* A worker whose server has vanished must not block forever once its
	 * queue fills: give up after a while and let the caller report it. */
	int sndtimeo = 30000;
	if (zmq_setsockopt(z->sock, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo) < 0 ||
	    zmq_connect(z->sock, endpoint) < 0) {
		int err = zmq_errno();
		rc = ps_err_set(e, from_errno(err), "cannot connect to %s: %s",
				endpoint, zmq_strerror(err));
		zt_destroy(&z->base);
		return rc;
	}
	snprintf(z->endpoint, sizeof z->endpoint, "%s", endpoint);
	*out = &z->base;
	return PS_OK;
}
