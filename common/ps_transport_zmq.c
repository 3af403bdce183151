/*
 * ps_transport_zmq: the ZeroMQ backend. The listening side is a ROUTER
 * socket (it sees each peer's routing id and can answer any of them), the
 * connecting side a DEALER (several requests in flight, no lock-step).
 * This is the only file that includes zmq.h.
 *
 * Frames on the wire: [routing id, added by ROUTER] envelope [tensor].
 * A received message's frames stay in zmq_msg_t buffers owned by the
 * transport until the next recv, so the server applies a gradient straight
 * from ZeroMQ's buffer without copying it. On the sending side a tensor
 * buffer (ps_transport_tensor_new) is a ZeroMQ message of its own, sent as
 * reference-counted copies, so a client's kept push is the very bytes
 * ZeroMQ sends: written once, never copied again in user space.
 *
 * Between processes of one machine (ps_transport_set_default_shm()), a
 * tensor of SHM_MIN bytes or more travels through shared memory instead
 * (ps_shm.h): the frames are then [routing id] envelope, an empty frame,
 * and a descriptor of the segment that holds the bytes. The receiver
 * reads the bytes where the sender wrote them, and takes them as its own
 * where the sender gave them away (a server's reply); ZeroMQ carries
 * 100 bytes instead of the tensor, and no I/O thread copies it.
 *
 * With CURVE the listening side also owns a ZAP handler (a REP socket on
 * inproc://zeromq.zap.01 of its own context) and a monitor of handshake
 * events; recv polls them beside the ROUTER, so the server's one thread
 * answers handshakes between messages and no socket is shared between
 * threads. A connecting side watches its handshake events too, so that
 * a refused client fails at once with the reason instead of waiting out
 * its timeout.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "ps_log.h"
#include "ps_shm.h"
#include "ps_transport_impl.h"

/* Requests queued per peer on the listening side. A worker has its
 * pushes in flight and one pull; more only lets a peer that floods hold
 * more of the server's memory (up to this many messages of up to
 * max_message bytes a frame); a peer past it waits (TCP back-pressure).
 * Replies keep ZeroMQ's queue of 1000: a reply that does not fit is
 * dropped, and since a writer learns of what its reader took only every
 * half queue, a smaller one drops replies to peers that do read (with
 * 64, a peer keeping 48 pulls in flight lost replies in the pull-flood
 * test). */
#define PEER_RCVHWM 64
/* A connection that has not finished its handshake by then is closed. */
#define HANDSHAKE_MS 10000
/* A client gives up after this many handshakes in a row that the server
 * cut short without a reason (a wrong server key looks so, and often a
 * missing CURVE). */
#define HANGUPS_MAX 3
#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define MONITOR_ENDPOINT "inproc://ps-transport-monitor"
/* A connecting side waiting in a receive reads its monitor's events at
 * least this often (recv_first()). */
#define MONITOR_EVERY_MS 50
#define ZAP_FRAMES_MAX 8
/* Tensors this long or longer go through shared memory when it is on:
 * below it the copy into a message is cheap, and the descriptor, the
 * hold and a mapping cost about as much. */
#define SHM_MIN (16 << 10)
/* Peers a listening side remembers to lend to. */
#define LEND_PEERS 256

static int default_shm;

void ps_transport_set_default_shm(int on)
{
	default_shm = on;
}

typedef struct zmq_transport {
	struct ps_transport base;
	void *ctx;
	void *sock;
	void *zap;     /* listening with CURVE: the ZAP handler (REP) */
	void *monitor; /* handshake events of sock (PAIR), or NULL */
	ps_curve_keyset *authorized; /* listening with CURVE */
	int listening;
	int curve;
	int auth_error; /* connecting side: PS_EAUTH once refused */
	int hangups;    /* connecting side: handshakes cut short in a row */
	uint8_t public_key[PS_CURVE_KEY_LEN]; /* with CURVE */
	ps_transport_refusals st;
	uint64_t failed_by_why[4]; /* listening: handshake failures by reason */
	int have_head, have_tensor;
	zmq_msg_t head, tensor;
	int rcvtimeo;       /* ZMQ_RCVTIMEO of sock as last set */
	double next_events; /* ps_now() at which the monitor is next read */
	int64_t max_message;
	/* Shared memory (with default_shm, never with CURVE): the segments
	 * this side lends, those of peers mapped, and the tensor of the last
	 * message received when it came so. */
	ps_shm_pool *pool;
	ps_shm_maps *maps;
	ps_shm_view view;
	uint64_t shm_refused;
	char shm_host[PS_SHM_HOST_MAX]; /* ps_shm_host(), or "" without
					 * shared memory */
	/* Whom to lend to: the server (connecting side), or these peers
	 * (listening side; when full, the oldest makes room). */
	int lend_server;
	size_t nlend, lend_next;
	ps_peer lend_peers[LEND_PEERS];
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
	ps_shm_detach(&z->view);
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

/* The routing id (listening side) and the envelope, the envelope with
 * ZMQ_SNDMORE when a tensor frame follows. */
static int send_head(zmq_transport *z, const ps_peer *to, const void *head,
		     size_t hlen, int more)
{
	/* The listening side never blocks on one slow peer: a full queue
	 * is reported and the reply dropped by the caller. */
	int flags = z->listening ? ZMQ_DONTWAIT : 0;

	if (z->listening) {
		if (!to)
			return PS_EINVAL;
		if (zmq_send(z->sock, to->id, to->len, flags | ZMQ_SNDMORE) < 0)
			return from_errno(zmq_errno());
	}
	if (zmq_send(z->sock, head, hlen, flags | (more ? ZMQ_SNDMORE : 0)) < 0)
		return from_errno(zmq_errno());
	return PS_OK;
}

static int lends_to(const zmq_transport *z, const ps_peer *to)
{
	if (!z->pool)
		return 0;
	if (!z->listening)
		return z->lend_server;
	for (size_t i = 0; to && i < z->nlend; i++)
		if (ps_peer_equal(&z->lend_peers[i], to))
			return 1;
	return 0;
}

static const char *zt_shared_host(const ps_transport *t)
{
	return ((const zmq_transport *)t)->shm_host;
}

static void zt_lend_to(ps_transport *t, const ps_peer *to, int on)
{
	zmq_transport *z = (zmq_transport *)t;

	if (!z->pool)
		return;
	if (!z->listening) {
		z->lend_server = on;
		return;
	}
	if (!to)
		return;
	for (size_t i = 0; i < z->nlend; i++) {
		if (!ps_peer_equal(&z->lend_peers[i], to))
			continue;
		if (!on)
			z->lend_peers[i] = z->lend_peers[--z->nlend];
		return;
	}
	if (!on)
		return;
	if (z->nlend < LEND_PEERS) {
		z->lend_peers[z->nlend++] = *to;
		return;
	}
	z->lend_peers[z->lend_next] = *to;
	z->lend_next = (z->lend_next + 1) % LEND_PEERS;
}

/* The envelope, an empty frame and the descriptor of the first tlen
 * bytes of seg, lent to the receiver (keep: the sender still reads
 * them). */
static int send_shm(zmq_transport *z, const ps_peer *to, const void *head,
		    size_t hlen, ps_shm_seg *seg, size_t tlen, int keep)
{
	int flags = z->listening ? ZMQ_DONTWAIT : 0;
	uint8_t desc[PS_SHM_DESC_LEN];
	int rc;

	ps_shm_seg_lend(seg, tlen, keep, desc);
	rc = send_head(z, to, head, hlen, 1);
	/* As with a tensor frame, the frames after the first cannot fail
	 * for lack of room. */
	if (rc == PS_OK &&
	    (zmq_send(z->sock, "", 0, flags | ZMQ_SNDMORE) < 0 ||
	     zmq_send(z->sock, desc, sizeof desc, flags) < 0))
		rc = from_errno(zmq_errno());
	if (rc != PS_OK)
		ps_shm_seg_unlend(seg);
	else
		ps_transport_count_shared(&z->base, 1);
	return rc;
}

static int zt_send(ps_transport *t, const ps_peer *to, const void *head,
		   size_t hlen, const void *tensor, size_t tlen)
{
	zmq_transport *z = (zmq_transport *)t;
	ps_shm_seg *seg;
	int rc;

	/* A copy into a segment costs what the copy into a message does;
	 * the receiver then takes the segment as it is. With no segment to
	 * be had, the bytes go in the message. */
	if (tlen >= SHM_MIN && lends_to(z, to) &&
	    ps_shm_seg_get(z->pool, tlen, &seg) == PS_OK) {
		memcpy(ps_shm_seg_data(seg), tensor, tlen);
		rc = send_shm(z, to, head, hlen, seg, tlen, 0);
		ps_shm_seg_put(&seg);
		return rc;
	}
	rc = send_head(z, to, head, hlen, tlen > 0);
	if (rc != PS_OK)
		return rc;
	/* Once the first frame is queued ZeroMQ sends all or nothing; the
	 * tensor frame cannot fail for lack of room. */
	if (tlen && zmq_send(z->sock, tensor, tlen,
			     z->listening ? ZMQ_DONTWAIT : 0) < 0)
		return from_errno(zmq_errno());
	return PS_OK;
}

/* A tensor buffer that is a ZeroMQ message: a send queues a copy of the
 * message, which shares the bytes and a reference count with it (for
 * more than 33 bytes; smaller ones are copied, which costs nothing), so
 * the bytes are written once, by the caller, and never copied in user
 * space again. Whoever lets go last, the caller or the I/O thread once
 * the bytes are written to the socket, frees them. */
typedef struct zmq_tensor {
	ps_tensor_buf base;
	zmq_msg_t msg;
} zmq_tensor;

static void zt_tensor_release(ps_tensor_buf *b)
{
	zmq_tensor *zb = (zmq_tensor *)b;
	zmq_msg_close(&zb->msg);
	free(zb);
}

/* A tensor buffer in shared memory: a segment this side lends (made by
 * tensor_new), or one a peer lent and the receiver took. */
typedef struct shm_tensor {
	ps_tensor_buf base;
	ps_shm_seg *seg;
	ps_shm_view view;
} shm_tensor;

static void shm_tensor_release(ps_tensor_buf *b)
{
	shm_tensor *sb = (shm_tensor *)b;
	ps_shm_seg_put(&sb->seg);
	ps_shm_detach(&sb->view);
	free(sb);
}

static int shm_tensor_new(zmq_transport *z, size_t len, ps_tensor_buf **out)
{
	shm_tensor *sb = calloc(1, sizeof *sb);

	if (!sb)
		return PS_ENOMEM;
	if (ps_shm_seg_get(z->pool, len, &sb->seg) != PS_OK) {
		free(sb);
		return PS_ENOMEM;
	}
	ps_tensor_buf_init(&sb->base, z->base.ops, shm_tensor_release,
			   ps_shm_seg_data(sb->seg), len);
	*out = &sb->base;
	return PS_OK;
}

static int zt_tensor_new(ps_transport *t, size_t len, ps_tensor_buf **out)
{
	zmq_transport *z = (zmq_transport *)t;
	zmq_tensor *zb;

	/* A segment where it will be lent: a client's, once its server has
	 * said that it takes them. */
	if (z->pool && len >= SHM_MIN && (z->listening || z->lend_server) &&
	    shm_tensor_new(z, len, out) == PS_OK)
		return PS_OK;
	zb = malloc(sizeof *zb);
	if (!zb)
		return PS_ENOMEM;
	if (zmq_msg_init_size(&zb->msg, len) != 0) {
		free(zb);
		return PS_ENOMEM;
	}
	ps_tensor_buf_init(&zb->base, t->ops, zt_tensor_release,
			   zmq_msg_data(&zb->msg), len);
	*out = &zb->base;
	return PS_OK;
}

/* The received tensor frame moves into a buffer of its own: the bytes
 * ZeroMQ received into are the caller's. ZeroMQ may place a received
 * frame at any byte offset in its receive buffer; a frame not aligned
 * for floats is left to the generic layer to copy. */
static int zt_take_tensor(ps_transport *t, const ps_frame *f,
			  ps_tensor_buf **out)
{
	zmq_transport *z = (zmq_transport *)t;
	zmq_tensor *zb;

	if (z->view.map && f->tensor == z->view.data) {
		shm_tensor *sb;
		/* Bytes the sender still reads are copied by the caller. */
		if (!z->view.writable)
			return PS_EINVAL;
		sb = calloc(1, sizeof *sb);
		if (!sb)
			return PS_ENOMEM;
		sb->view = z->view;
		memset(&z->view, 0, sizeof z->view);
		ps_tensor_buf_init(&sb->base, t->ops, shm_tensor_release,
				   sb->view.data, sb->view.len);
		*out = &sb->base;
		return PS_OK;
	}
	if (!z->have_tensor || f->tensor != zmq_msg_data(&z->tensor) ||
	    (uintptr_t)f->tensor % _Alignof(float) != 0)
		return PS_EINVAL;
	zb = malloc(sizeof *zb);
	if (!zb)
		return PS_ENOMEM;
	zmq_msg_init(&zb->msg);
	if (zmq_msg_move(&zb->msg, &z->tensor) != 0) {
		zmq_msg_close(&zb->msg);
		free(zb);
		return PS_ENOMEM;
	}
	z->have_tensor = 0; /* the move left z->tensor empty */
	ps_tensor_buf_init(&zb->base, t->ops, zt_tensor_release,
			   zmq_msg_data(&zb->msg), zmq_msg_size(&zb->msg));
	*out = &zb->base;
	return PS_OK;
}

static int zt_send_tensor(ps_transport *t, const ps_peer *to,
			  const void *head, size_t hlen, ps_tensor_buf *b)
{
	zmq_transport *z = (zmq_transport *)t;
	zmq_tensor *zb = (zmq_tensor *)b;
	zmq_msg_t copy;
	int rc;

	if (b->release == shm_tensor_release) {
		shm_tensor *sb = (shm_tensor *)b;
		/* The sender keeps its segment (a push kept until it is
		 * acknowledged): lent as it is, read-only. A taken tensor
		 * sent on, or one for a peer that takes none, is copied. */
		if (sb->seg && lends_to(z, to))
			return send_shm(z, to, head, hlen, sb->seg, b->len, 1);
		return zt_send(t, to, head, hlen, b->data, b->len);
	}
	/* The copy first: once the envelope is queued, the tensor frame
	 * must follow. */
	zmq_msg_init(&copy);
	if (zmq_msg_copy(&copy, &zb->msg) != 0) {
		rc = from_errno(zmq_errno());
		zmq_msg_close(&copy);
		return rc;
	}
	rc = send_head(z, to, head, hlen, 1);
	if (rc == PS_OK && zmq_msg_send(&copy, z->sock,
					z->listening ? ZMQ_DONTWAIT : 0) < 0)
		rc = from_errno(zmq_errno());
	/* A sent message is ZeroMQ's; one that was not is still ours. */
	if (rc != PS_OK)
		zmq_msg_close(&copy);
	return rc;
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

/* 1 when n is a power of two: refusals are logged at 1, 2, 4, 8, ...
 * so that a flood cannot fill the log. */
static int log_this(uint64_t n)
{
	return n > 0 && (n & (n - 1)) == 0;
}

/* Answer one ZAP request (RFC 27) on z->zap. A REP socket must answer
 * every request it took in, so once the first frame is in, a reply
 * goes out whatever the request held. */
static void serve_zap(zmq_transport *z)
{
	zmq_msg_t parts[ZAP_FRAMES_MAX];
	ps_zap_frame req[ZAP_FRAMES_MAX];
	ps_zap_reply r;
	size_t n = 0, nreq;
	int more = 1, too_many = 0;
	char key[PS_CURVE_Z85_LEN + 1];

	while (more && n < ZAP_FRAMES_MAX) {
		size_t len = sizeof more;
		zmq_msg_init(&parts[n]);
		if (zmq_msg_recv(&parts[n], z->zap, ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(&parts[n]);
			if (n == 0)
				return; /* nothing was there */
			break;
		}
		n++;
		if (zmq_getsockopt(z->zap, ZMQ_RCVMORE, &more, &len) < 0)
			more = 0;
	}
	if (more) {
		/* Not a ZAP request: libzmq sends at most 7 frames. */
		drain(z->zap);
		too_many = 1;
	}
	for (size_t i = 0; i < n; i++) {
		req[i].data = zmq_msg_data(&parts[i]);
		req[i].len = zmq_msg_size(&parts[i]);
	}
	nreq = too_many ? 0 : n;
	ps_curve_zap_decide(z->authorized, req, nreq, &r);
	if (zmq_send(z->zap, "1.0", 3, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
	    zmq_send(z->zap, n >= 2 ? (const void *)req[1].data : "",
		     n >= 2 ? req[1].len : 0, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
	    zmq_send(z->zap, r.status, strlen(r.status),
		     ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
	    zmq_send(z->zap, r.text, strlen(r.text),
		     ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
	    zmq_send(z->zap, r.user_id, strlen(r.user_id),
		     ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
	    zmq_send(z->zap, "", 0, ZMQ_DONTWAIT) < 0)
		ps_log_error("cannot answer a CURVE handshake: %s",
			     zmq_strerror(zmq_errno()));
	for (size_t i = 0; i < n; i++)
		zmq_msg_close(&parts[i]);
	if (r.verdict == PS_ZAP_ALLOW) {
		ps_log_debug("CURVE client %s from %s let in", r.user_id,
			     r.address);
		return;
	}
	z->st.unauthorized++;
	if (!log_this(z->st.unauthorized))
		return;
	if (r.have_key)
		ps_curve_z85_encode(key, r.key);
	else
		snprintf(key, sizeof key, "(none)");
	ps_log_warn("refused a client from %s with key %s: %s (refusal #%llu)",
		    r.address[0] ? r.address : "?", key, r.text,
		    (unsigned long long)z->st.unauthorized);
}

/* The listening side counts and logs the handshakes that failed before
 * any ZAP request: clients without CURVE, with a wrong server key, or
 * that hung up. */
static void server_event(zmq_transport *z, unsigned event, uint32_t value)
{
	static const char *const whys[4] = {
		"the connection closed during the handshake",
		"the client does not use CURVE",
		"the client's messages do not decrypt (a wrong server key?)",
		"protocol error",
	};
	int why = 0;

	if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
		if (value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
			why = 1;
		else if (value == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC)
			why = 2;
		else
			why = 3;
	} else if (event != ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
		return;
	}
	z->st.handshake_failed++;
	/* Rate-limited by reason, so that every reason shows. */
	if (log_this(++z->failed_by_why[why]))
		ps_log_warn("refused a connection: %s (%llu such, %llu "
			    "failed handshakes in all)",
			    whys[why],
			    (unsigned long long)z->failed_by_why[why],
			    (unsigned long long)z->st.handshake_failed);
}

/* A connecting side's handshake went wrong: tell the user why, once,
 * and fail this and every later receive. */
static void client_event(zmq_transport *z, unsigned event, uint32_t value)
{
	char key[PS_CURVE_Z85_LEN + 1];

	switch (event) {
	case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
		z->hangups = 0;
		return;
	case ZMQ_EVENT_DISCONNECTED:
		z->st.disconnects++;
		return;
	case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
		ps_curve_z85_encode(key, z->public_key);
		ps_log_error("the server at %s refused this client's CURVE key "
			     "%s (status %u): its public key file must be in "
			     "the server's --curve-authorized directory",
			     z->endpoint, key, (unsigned)value);
		break;
	case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
		if (value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH &&
		    z->curve)
			ps_log_error("the server at %s does not use CURVE: start "
				     "it with --curve-secret and "
				     "--curve-authorized, or connect without "
				     "CURVE keys",
				     z->endpoint);
		else if (value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
			ps_log_error("the server at %s requires CURVE: give "
				     "--curve-secret (this client's secret key) "
				     "and --curve-server-key (the server's "
				     "public key)",
				     z->endpoint);
		else
			ps_log_error("the handshake with the server at %s "
				     "failed: protocol error 0x%x",
				     z->endpoint, (unsigned)value);
		break;
	case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
		/* The server hung up before finishing the handshake. A server
		 * that is not there refuses connections instead; one that
		 * does this every time does not take these settings. Often
		 * the server is quicker to see a mechanism mismatch than the
		 * client, which then sees only this. */
		if (++z->hangups < HANGUPS_MAX)
			return;
		if (z->curve)
			ps_log_error("the server at %s closed the connection "
				     "during the CURVE handshake %d times in a "
				     "row: is --curve-server-key the server's "
				     "public key?",
				     z->endpoint, z->hangups);
		else
			ps_log_error("the server at %s closed the connection "
				     "during the handshake %d times in a row: "
				     "does it require CURVE (--curve-secret, "
				     "--curve-server-key)?",
				     z->endpoint, z->hangups);
		break;
	default:
		return;
	}
	z->auth_error = PS_EAUTH;
}

/* Take in every event the monitor holds: two frames each, the event
 * (u16) and its value (u32) in the first, an address in the second. */
static void read_events(zmq_transport *z)
{
	for (;;) {
		zmq_msg_t m;
		uint16_t event = 0;
		uint32_t value = 0;

		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, z->monitor, ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(&m);
			return;
		}
		if (zmq_msg_size(&m) >= 6) {
			memcpy(&event, zmq_msg_data(&m), 2);
			memcpy(&value, (const uint8_t *)zmq_msg_data(&m) + 2, 4);
		}
		zmq_msg_close(&m);
		drain(z->monitor);
		if (z->listening)
			server_event(z, event, value);
		else
			client_event(z, event, value);
	}
}

/* Wait until the data socket has a message, serving the ZAP handler and
 * the monitor meanwhile. Returns PS_OK when a message is there. */
static int wait_readable(zmq_transport *z, int timeout_ms)
{
	double deadline = ps_now() + (timeout_ms > 0 ? timeout_ms : 0) / 1e3;

	for (;;) {
		zmq_pollitem_t items[3] = {{z->sock, 0, ZMQ_POLLIN, 0}};
		int k = 1, zap_at = -1, mon_at = -1, wait = timeout_ms, n;

		if (z->zap) {
			items[k] = (zmq_pollitem_t){z->zap, 0, ZMQ_POLLIN, 0};
			zap_at = k++;
		}
		if (z->monitor) {
			items[k] = (zmq_pollitem_t){z->monitor, 0, ZMQ_POLLIN, 0};
			mon_at = k++;
		}
		if (timeout_ms > 0) {
			double left = deadline - ps_now();
			wait = left > 0 ? (int)ceil(left * 1e3) : 0;
		}
		n = zmq_poll(items, k, wait);
		if (n < 0)
			return from_errno(zmq_errno());
		if (zap_at >= 0 && (items[zap_at].revents & ZMQ_POLLIN))
			serve_zap(z);
		if (mon_at >= 0 && (items[mon_at].revents & ZMQ_POLLIN))
			read_events(z);
		if (z->auth_error)
			return z->auth_error;
		if (items[0].revents & ZMQ_POLLIN)
			return PS_OK;
		if (n == 0 || timeout_ms == 0 ||
		    (timeout_ms > 0 && ps_now() >= deadline))
			return PS_ETIMEDOUT;
	}
}

/* The first frame of the next message into m, waiting at most
 * timeout_ms (-1: without a limit, 0: only for one already there).
 *
 * Without a ZAP handler to serve, a blocking receive with a receive
 * timeout, which is how ZeroMQ itself waits: a poll of its mailbox and a
 * read when a message has to be waited for. zmq_poll() polls before and
 * after the wait and looks at every socket's events each time (a poll of
 * its mailbox again): 12 more system calls per pull round trip of the
 * client and server together, 20-40 us more CPU on a round trip of
 * about 120 us here (docs/EXPERIMENTS.md, "Waiting in ZeroMQ's own
 * receive"). A connecting side's monitor is read in between, at most
 * MONITOR_EVERY_MS apart and when a wait times out: a refused handshake
 * is reported that much later at worst. A listening side with CURVE
 * serves its ZAP handler while it waits, through wait_readable(). */
static int recv_first(zmq_transport *z, zmq_msg_t *m, int *more,
		      int timeout_ms)
{
	double deadline = ps_now() + (timeout_ms > 0 ? timeout_ms : 0) / 1e3;

	if (z->zap) {
		int rc = wait_readable(z, timeout_ms);
		return rc == PS_OK ? recv_part(z->sock, m, more) : rc;
	}
	for (;;) {
		size_t len = sizeof *more;
		int wait = timeout_ms, err;

		if (timeout_ms > 0) {
			double left = deadline - ps_now();
			wait = left > 0 ? (int)ceil(left * 1e3) : 0;
		}
		if (z->monitor) {
			double now = ps_now();
			if (now >= z->next_events) {
				read_events(z);
				z->next_events = now + MONITOR_EVERY_MS / 1e3;
			}
			if (z->auth_error)
				return z->auth_error;
			if (wait < 0 || wait > MONITOR_EVERY_MS)
				wait = MONITOR_EVERY_MS;
		}
		if (wait != z->rcvtimeo &&
		    zmq_setsockopt(z->sock, ZMQ_RCVTIMEO, &wait, sizeof wait) == 0)
			z->rcvtimeo = wait;
		zmq_msg_init(m);
		if (zmq_msg_recv(m, z->sock, 0) >= 0) {
			if (zmq_getsockopt(z->sock, ZMQ_RCVMORE, more, &len) < 0)
				*more = 0;
			return PS_OK;
		}
		err = zmq_errno();
		zmq_msg_close(m);
		if (err != EAGAIN)
			return from_errno(err);
		if (timeout_ms == 0)
			return PS_ETIMEDOUT;
		if (timeout_ms > 0 && ps_now() >= deadline) {
			if (z->monitor)
				read_events(z);
			return z->auth_error ? z->auth_error : PS_ETIMEDOUT;
		}
	}
}

/* After an empty frame, the descriptor of a tensor in shared memory:
 * mapped into z->view. A descriptor this side cannot or will not map
 * drops the message (PS_EPROTO), logged with the reason. */
static int recv_shm(zmq_transport *z, int *more)
{
	zmq_msg_t d;
	ps_err e = {0};
	int rc = recv_part(z->sock, &d, more);

	if (rc != PS_OK)
		return rc;
	if (*more)
		rc = ps_err_set(&e, PS_EPROTO, "frames after a shared tensor");
	else if (!z->maps)
		rc = ps_err_set(&e, PS_EPROTO,
				"a tensor in shared memory, which this process "
				"does not take (%s)",
				z->curve ? "not with CURVE"
					 : "started without --shm, or without "
					   "shared memory here");
	else
		rc = ps_shm_attach(z->maps, zmq_msg_data(&d), zmq_msg_size(&d),
				   z->max_message > 0 ? (size_t)z->max_message : 0,
				   &z->view, &e);
	zmq_msg_close(&d);
	if (rc == PS_OK) {
		ps_transport_count_shared(&z->base, 0);
		return PS_OK;
	}
	if (log_this(++z->shm_refused))
		ps_log_warn("dropped a message from %s: %s (%llu such)",
			    z->listening ? "a client" : z->endpoint, e.msg,
			    (unsigned long long)z->shm_refused);
	return PS_EPROTO;
}

static int zt_recv(ps_transport *t, ps_frame *out, int timeout_ms)
{
	zmq_transport *z = (zmq_transport *)t;
	int more = 0, rc;

	release_frames(z);
	memset(out, 0, sizeof *out);
	if (z->auth_error)
		return z->auth_error;

	if (z->listening) {
		zmq_msg_t id;
		rc = recv_first(z, &id, &more, timeout_ms);
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
	rc = z->listening ? recv_part(z->sock, &z->head, &more)
			  : recv_first(z, &z->head, &more, timeout_ms);
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
		if (more && zmq_msg_size(&z->tensor) == 0)
			rc = recv_shm(z, &more);
		if (rc == PS_OK && more) {
			drain(z->sock);
			rc = PS_EPROTO;
		}
		if (rc != PS_OK) {
			release_frames(z);
			return rc;
		}
	}
	out->head = zmq_msg_data(&z->head);
	out->head_len = zmq_msg_size(&z->head);
	if (z->view.map) {
		out->tensor = z->view.data;
		out->tensor_len = z->view.len;
	} else if (z->have_tensor) {
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

static void zt_refusals(const ps_transport *t, ps_transport_refusals *out)
{
	const zmq_transport *z = (const zmq_transport *)t;
	*out = z->st;
}

static void zt_destroy(ps_transport *t)
{
	zmq_transport *z = (zmq_transport *)t;
	release_frames(z);
	ps_shm_pool_release(&z->pool);
	ps_shm_maps_destroy(&z->maps);
	if (z->auth_error) {
		/* Nothing queued will ever be delivered: do not linger. */
		int zero = 0;
		zmq_setsockopt(z->sock, ZMQ_LINGER, &zero, sizeof zero);
	}
	if (z->monitor) {
		zmq_socket_monitor(z->sock, NULL, 0);
		zmq_close(z->monitor);
	}
	if (z->sock)
		zmq_close(z->sock);
	if (z->zap)
		zmq_close(z->zap);
	if (z->ctx)
		zmq_ctx_term(z->ctx);
	ps_curve_keyset_destroy(&z->authorized);
	free(z);
}

static const struct ps_transport_ops zmq_ops = {
	.send = zt_send,
	.recv = zt_recv,
	.endpoint = zt_endpoint,
	.destroy = zt_destroy,
	.wait_any = zt_wait_any,
	.refusals = zt_refusals,
	.tensor_new = zt_tensor_new,
	.send_tensor = zt_send_tensor,
	.take_tensor = zt_take_tensor,
	.shared_host = zt_shared_host,
	.lend_to = zt_lend_to,
};

static int no_curve(ps_err *e)
{
	return ps_err_set(e, PS_ETRANSPORT,
			  "this libzmq was built without CURVE (zmq_has(\"curve\") "
			  "is false): no keys, no encryption");
}

int ps_transport_curve_keypair(uint8_t public_key[PS_CURVE_KEY_LEN],
			       uint8_t secret_key[PS_CURVE_KEY_LEN], ps_err *e)
{
	char pub[PS_CURVE_Z85_LEN + 1], sec[PS_CURVE_Z85_LEN + 1];
	int rc = PS_OK;

	if (!zmq_has("curve"))
		return no_curve(e);
	if (zmq_curve_keypair(pub, sec) != 0 ||
	    ps_curve_z85_decode(public_key, pub, PS_CURVE_Z85_LEN) != PS_OK ||
	    ps_curve_z85_decode(secret_key, sec, PS_CURVE_Z85_LEN) != PS_OK)
		rc = ps_err_set(e, PS_ETRANSPORT, "zmq_curve_keypair: %s",
				zmq_strerror(zmq_errno()));
	explicit_bzero(sec, sizeof sec);
	return rc;
}

int ps_transport_curve_public(uint8_t public_key[PS_CURVE_KEY_LEN],
			      const uint8_t secret_key[PS_CURVE_KEY_LEN],
			      ps_err *e)
{
	char pub[PS_CURVE_Z85_LEN + 1], sec[PS_CURVE_Z85_LEN + 1];
	int rc = PS_OK;

	if (!zmq_has("curve"))
		return no_curve(e);
	ps_curve_z85_encode(sec, secret_key);
	if (zmq_curve_public(pub, sec) != 0 ||
	    ps_curve_z85_decode(public_key, pub, PS_CURVE_Z85_LEN) != PS_OK)
		rc = ps_err_set(e, PS_ETRANSPORT, "zmq_curve_public: %s",
				zmq_strerror(zmq_errno()));
	explicit_bzero(sec, sizeof sec);
	return rc;
}

static int sockopt_failed(ps_err *e, const char *what)
{
	return ps_err_set(e, PS_ETRANSPORT, "zmq_setsockopt %s: %s", what,
			  zmq_strerror(zmq_errno()));
}

/* Watch sock's handshakes through a PAIR socket on an inproc endpoint of
 * this transport's own context. Before bind or connect, so that no
 * event is missed. */
static int open_monitor(zmq_transport *z, int events, ps_err *e)
{
	int zero = 0;

	if (zmq_socket_monitor(z->sock, MONITOR_ENDPOINT, events) < 0)
		return ps_err_set(e, PS_ETRANSPORT, "zmq_socket_monitor: %s",
				  zmq_strerror(zmq_errno()));
	z->monitor = zmq_socket(z->ctx, ZMQ_PAIR);
	if (!z->monitor ||
	    zmq_setsockopt(z->monitor, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
	    zmq_connect(z->monitor, MONITOR_ENDPOINT) < 0)
		return ps_err_set(e, PS_ETRANSPORT, "monitor socket: %s",
				  zmq_strerror(zmq_errno()));
	return PS_OK;
}

/* CURVE on a listening socket: server keys, the ZAP handler bound before
 * the socket binds (without a handler libzmq would let every client in)
 * and the monitor that counts the other failed handshakes. */
static int listen_curve(zmq_transport *z, const ps_transport_curve *c,
			ps_err *e)
{
	int one = 1, zero = 0, rc;

	if (!zmq_has("curve"))
		return no_curve(e);
	if (!c->authorized || ps_curve_keyset_count(c->authorized) == 0)
		return ps_err_set(e, PS_EINVAL,
				  "CURVE needs at least one authorized client key");
	rc = ps_curve_keyset_copy(&z->authorized, c->authorized);
	if (rc != PS_OK)
		return ps_err_set(e, rc, "out of memory");
	rc = ps_transport_curve_public(z->public_key, c->secret_key, e);
	if (rc != PS_OK)
		return rc;
	z->curve = 1;
	if (zmq_setsockopt(z->sock, ZMQ_CURVE_SERVER, &one, sizeof one) < 0 ||
	    zmq_setsockopt(z->sock, ZMQ_CURVE_SECRETKEY, c->secret_key,
			   PS_CURVE_KEY_LEN) < 0 ||
	    zmq_setsockopt(z->sock, ZMQ_ZAP_DOMAIN, "pserver", 7) < 0)
		return sockopt_failed(e, "CURVE");
	z->zap = zmq_socket(z->ctx, ZMQ_REP);
	if (!z->zap ||
	    zmq_setsockopt(z->zap, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
	    zmq_bind(z->zap, ZAP_ENDPOINT) < 0)
		return ps_err_set(e, PS_ETRANSPORT, "ZAP handler: %s",
				  zmq_strerror(zmq_errno()));
	return open_monitor(z,
			    ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
				    ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL,
			    e);
}

/* CURVE on a connecting socket: this side's key pair and the server's
 * public key. */
static int connect_curve(zmq_transport *z, const ps_transport_curve *c,
			 ps_err *e)
{
	int rc;

	if (!zmq_has("curve"))
		return no_curve(e);
	rc = ps_transport_curve_public(z->public_key, c->secret_key, e);
	if (rc != PS_OK)
		return rc;
	z->curve = 1;
	if (zmq_setsockopt(z->sock, ZMQ_CURVE_SERVERKEY, c->server_key,
			   PS_CURVE_KEY_LEN) < 0 ||
	    zmq_setsockopt(z->sock, ZMQ_CURVE_PUBLICKEY, z->public_key,
			   PS_CURVE_KEY_LEN) < 0 ||
	    zmq_setsockopt(z->sock, ZMQ_CURVE_SECRETKEY, c->secret_key,
			   PS_CURVE_KEY_LEN) < 0)
		return sockopt_failed(e, "CURVE");
	return PS_OK;
}

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
	z->max_message = maxmsg;
	z->rcvtimeo = -1; /* ZeroMQ's default */
	/* Shared memory, unless CURVE: its encryption and its keys would
	 * not cover bytes that bypass the socket. */
	if (default_shm && !(opts && opts->curve)) {
		int src = ps_shm_host(z->shm_host, sizeof z->shm_host);
		if (src == PS_OK)
			src = ps_shm_pool_new(&z->pool);
		if (src == PS_OK)
			src = ps_shm_maps_new(&z->maps);
		if (src == PS_ENOMEM) {
			rc = ps_err_set(e, PS_ENOMEM, "out of memory");
			goto out;
		}
		if (src != PS_OK) {
			/* Without /proc, or without memfds, no peer could map
			 * a segment: this side neither lends nor takes. */
			ps_shm_pool_release(&z->pool);
			z->shm_host[0] = '\0';
			ps_log_warn("no shared memory here (no /proc or no "
				    "memfd): tensors go in the messages");
		}
	}
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
	int mandatory = 1, hwm = PEER_RCVHWM, handshake = HANDSHAKE_MS;
	size_t len;
	int rc = open_socket(&z, ZMQ_ROUTER, opts, e);

	*out = NULL;
	if (rc != PS_OK)
		return rc;
	z->listening = 1;
	/* Report a reply to a vanished peer instead of dropping it. Bound
	 * what one peer can queue, and how long a connection may take to
	 * finish its handshake. */
	if (zmq_setsockopt(z->sock, ZMQ_ROUTER_MANDATORY, &mandatory,
			   sizeof mandatory) < 0 ||
	    zmq_setsockopt(z->sock, ZMQ_RCVHWM, &hwm, sizeof hwm) < 0 ||
	    zmq_setsockopt(z->sock, ZMQ_HANDSHAKE_IVL, &handshake,
			   sizeof handshake) < 0) {
		rc = sockopt_failed(e, "limits");
		goto out;
	}
	if (opts && opts->curve) {
		rc = listen_curve(z, opts->curve, e);
		if (rc != PS_OK)
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
	if (opts && opts->curve)
		rc = connect_curve(z, opts->curve, e);
	if (rc == PS_OK)
		rc = open_monitor(z,
				  ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
					  ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
					  ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
					  ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
					  ZMQ_EVENT_DISCONNECTED,
				  e);
	if (rc != PS_OK) {
		zt_destroy(&z->base);
		return rc;
	}
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
