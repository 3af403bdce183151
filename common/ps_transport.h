/*
 * ps_transport: framed messages between a server and its peers, behind a
 * table of function pointers so that the ZeroMQ backend (and an MPI one
 * later) are interchangeable. A message is an envelope (bytes from
 * ps_wire) plus an optional tensor frame of raw float32.
 */
#ifndef PS_TRANSPORT_H
#define PS_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "ps_curve.h"
#include "ps_error.h"

#define PS_PEER_ID_MAX 16

/* Who sent a message, as the listening side sees it. Plain value record;
 * compare with ps_peer_equal(). The connecting side's only peer is its
 * server and it passes NULL where a peer is asked for. */
typedef struct ps_peer {
	uint8_t len;
	uint8_t id[PS_PEER_ID_MAX];
} ps_peer;

int ps_peer_equal(const ps_peer *a, const ps_peer *b);

/* A received message. Borrowed: head and tensor point into the
 * transport's buffers and stay valid until the next ps_transport_recv()
 * or ps_transport_destroy() on the same transport. */
typedef struct ps_frame {
	ps_peer from;
	const uint8_t *head;
	size_t head_len;
	const uint8_t *tensor;
	size_t tensor_len;
} ps_frame;

/* CURVE security for a ZeroMQ transport: every message encrypted and
 * authenticated, and on the listening side only clients whose public key
 * is in `authorized` let in (a ZAP handler served inside
 * ps_transport_recv()). Plain value record but for authorized. */
typedef struct ps_transport_curve {
	uint8_t secret_key[PS_CURVE_KEY_LEN]; /* this side's; the public key
					       * is derived from it */
	uint8_t server_key[PS_CURVE_KEY_LEN]; /* connecting side: the
					       * server's public key */
	/* Listening side: the client keys let in. Borrowed for the call:
	 * listen copies the set. */
	const ps_curve_keyset *authorized;
} ps_transport_curve;

typedef struct ps_transport_opts {
	/* Largest frame accepted (ZeroMQ checks the envelope and the tensor
	 * frame each on its own, so a whole message may reach twice this);
	 * a message with a larger frame is dropped by the transport before
	 * any allocation and its sender disconnected. 0 means no limit. */
	int64_t max_message;
	/* How long destroy waits to deliver queued messages. */
	int linger_ms;
	/* CURVE (ZeroMQ endpoints only), or NULL for plain ZeroMQ. Borrowed
	 * for the call to listen or connect. */
	const ps_transport_curve *curve;
} ps_transport_opts;

typedef struct ps_transport ps_transport;

/* Process-wide allocator settings for moving large messages, for an entry
 * point to call once at its start, before it makes a transport. ZeroMQ
 * allocates every message with malloc, and the MPI backend every send;
 * glibc maps a buffer of 128 KB or more afresh and unmaps it when freed,
 * or trims the heap under it, so that every large message page-faults in
 * again (streams of 4 MB pushes, four in flight, ran 4-19x slower).
 * This keeps buffers of up to 32 MB on the heap and up to 256 MB of freed
 * heap for reuse. Does nothing where malloc is not glibc's. */
void ps_transport_setup_process(void);

/* What a transport refused or lost below the protocol. Plain value
 * record. */
typedef struct ps_transport_refusals {
	/* Listening with CURVE: clients refused because their key is not
	 * authorized (each refused handshake once). */
	uint64_t unauthorized;
	/* Listening with CURVE: other failed handshakes (a client without
	 * CURVE, one with a wrong server key, one that hung up). */
	uint64_t handshake_failed;
	/* Connecting side: times the connection to the server dropped. */
	uint64_t disconnects;
} ps_transport_refusals;

/* Listen on endpoint ("tcp://127.0.0.1:5555", "tcp://127.0.0.1:*" for
 * an ephemeral port, "ipc:///path"). Errors: PS_EADDRINUSE, PS_EINVAL
 * (malformed endpoint), PS_ETRANSPORT; e->msg names the endpoint.
 * Caller owns the result; release with ps_transport_destroy().
 * The transport belongs to the calling thread. */
int ps_transport_listen(ps_transport **out, const char *endpoint,
			const ps_transport_opts *opts, ps_err *e) PS_WUR;

/* Connect to a listening endpoint. Connection is asynchronous: sends are
 * queued until the peer is there. Errors: PS_EINVAL, PS_ETRANSPORT.
 * Caller owns the result; release with ps_transport_destroy(). */
int ps_transport_connect(ps_transport **out, const char *endpoint,
			 const ps_transport_opts *opts, ps_err *e) PS_WUR;

/* The endpoint actually bound or connected, with a wildcard port resolved
 * ("tcp://127.0.0.1:41234"). Borrowed: valid while t lives. */
const char *ps_transport_endpoint(const ps_transport *t);

/* Send envelope head[hlen] and, if tlen > 0, a tensor frame tensor[tlen]
 * to peer `to` (NULL on the connecting side). Both are copied before this
 * returns. Errors: PS_EUNKNOWN_WORKER (listening side: peer gone),
 * PS_ETIMEDOUT (queue full), PS_EINTR, PS_ETRANSPORT. */
int ps_transport_send(ps_transport *t, const ps_peer *to, const void *head,
		      size_t hlen, const void *tensor, size_t tlen) PS_WUR;

/* A tensor frame built once and sent any number of times, for a sender
 * that must keep what it sent (a client keeps each push until it is
 * acknowledged, to send it again). The transport allocates it, the caller
 * fills it, and ps_transport_send_tensor() sends it without copying the
 * bytes where the backend can share them (ZeroMQ: a reference-counted
 * message, freed by whichever of the caller and the I/O thread lets go
 * last; MPI: the frame's header written into room kept in front of the
 * bytes, and a hold on the buffer until the send is reaped) and from a
 * copy where it cannot (a second send of it still pending on MPI, a
 * held send under a link delay). Opaque. */
typedef struct ps_tensor_buf ps_tensor_buf;

/* A buffer of len bytes (contents undefined, aligned for floats) for
 * sends on t. Errors: PS_ENOMEM. Caller owns the result; release with
 * ps_tensor_buf_destroy(). It may outlive t. The thread that owns t. */
int ps_transport_tensor_new(ps_transport *t, size_t len,
			    ps_tensor_buf **out) PS_WUR;

/* The bytes of b, for the caller to fill before the first send; they
 * must not change after it (a send in progress may still read them).
 * Borrowed: valid until ps_tensor_buf_destroy(). */
void *ps_tensor_buf_data(ps_tensor_buf *b);
size_t ps_tensor_buf_len(const ps_tensor_buf *b);

/* As ps_transport_send() with b's bytes as the tensor frame (none when
 * b's length is 0). b is borrowed for the call: the caller keeps it, and
 * may send it again or destroy it at once after this returns, whatever
 * the backend still has to send. A buffer made by another kind of
 * transport is sent from a copy. Errors as ps_transport_send(). */
int ps_transport_send_tensor(ps_transport *t, const ps_peer *to,
			     const void *head, size_t hlen,
			     ps_tensor_buf *b) PS_WUR;

/* Another hold on b, for a second owner in the same thread (a push kept
 * for sending again, and the caller still reading the gradient it sent):
 * returns b, which each owner destroys once. */
ps_tensor_buf *ps_tensor_buf_share(ps_tensor_buf *b);

/* Release the caller's hold on b; the bytes go with the last hold.
 * Accepts NULL and *bp == NULL; sets *bp to NULL. Any thread that owns
 * b. */
void ps_tensor_buf_destroy(ps_tensor_buf **bp);

/* The tensor frame of f, the last message received on t (f->tensor_len >
 * 0), as a buffer the caller owns and may write: where the backend can,
 * the received bytes themselves, so that the frame is not copied (ZeroMQ:
 * the message, when its bytes are aligned for floats; MPI: the receive
 * buffer), and otherwise a copy. f->tensor is not to be read afterwards.
 * Errors: PS_EINVAL (no tensor frame), PS_ENOMEM. Caller owns the result;
 * release with ps_tensor_buf_destroy(). */
int ps_transport_take_tensor(ps_transport *t, const ps_frame *f,
			     ps_tensor_buf **out) PS_WUR;

/* Wait up to timeout_ms (-1: forever, 0: poll) for the next message.
 * A listening transport with CURVE answers the ZAP requests of new
 * connections meanwhile. Errors: PS_ETIMEDOUT (nothing arrived),
 * PS_EINTR (a signal arrived), PS_EPROTO (a message with a wrong number
 * of frames was received and dropped; out->from says who sent it),
 * PS_EAUTH (connecting side: the server refused the handshake, or this
 * side's CURVE settings do not match the server's; logged with the
 * reason; every later receive fails the same way), PS_ETRANSPORT. */
int ps_transport_recv(ps_transport *t, ps_frame *out, int timeout_ms) PS_WUR;

/* Wait until any of ts[n] may have a message to receive (then receive
 * from each with timeout 0), at most timeout_ms. Returns PS_OK when one
 * may, PS_ETIMEDOUT otherwise (or PS_OK spuriously, after a short nap, for
 * a backend that cannot wait on several). */
int ps_transport_wait_any(ps_transport *const *ts, size_t n, int timeout_ms) PS_WUR;


/* Copy t's counters into *out (all 0 for a backend that keeps none). */
void ps_transport_get_refusals(const ps_transport *t, ps_transport_refusals *out);

/* A new CURVE key pair, from the ZeroMQ library's generator.
 * Errors: PS_ETRANSPORT (this libzmq has no CURVE). */
int ps_transport_curve_keypair(uint8_t public_key[PS_CURVE_KEY_LEN],
			       uint8_t secret_key[PS_CURVE_KEY_LEN],
			       ps_err *e) PS_WUR;

/* The public key of secret_key. Errors: PS_ETRANSPORT (no CURVE). */
int ps_transport_curve_public(uint8_t public_key[PS_CURVE_KEY_LEN],
			      const uint8_t secret_key[PS_CURVE_KEY_LEN],
			      ps_err *e) PS_WUR;

/* Close and free. Accepts NULL and *tp == NULL; sets *tp to NULL.
 * Messages still held by a link delay are sent first, each at its due
 * time. */
void ps_transport_destroy(ps_transport **tp);

/* What went through a transport, counted by the generic layer for every
 * backend. Bytes are the envelope plus the tensor frame of each message
 * (no framing overhead). Plain value record. */
typedef struct ps_transport_counters {
	uint64_t msgs_in, msgs_out;
	uint64_t bytes_in, bytes_out;
	uint64_t delayed;        /* messages held by the link delay */
	uint64_t delayed_failed; /* held messages whose late send failed
				  * (dropped and counted, as a network
				  * would lose them) */
	/* Of msgs_in and msgs_out, those whose tensor travelled in shared
	 * memory (ps_transport_set_default_shm()). */
	uint64_t shared_in, shared_out;
} ps_transport_counters;

/* The counters of t, or with t == NULL the sums over every transport the
 * process has created, destroyed ones included. Any thread. */
void ps_transport_stats(const ps_transport *t, ps_transport_counters *out);

/* Emulated one-way link delay for every transport created after this
 * call in this process (0: none, the default). Each outgoing message is
 * held for `seconds` in a queue of the transport and sent by a later
 * ps_transport_send() or ps_transport_recv() on it once due: the caller
 * never blocks for it, and recv shortens its waits so that nothing is
 * sent late. Order is kept. For link emulation where the kernel has no
 * netem (docs/EXPERIMENTS.md). Call before creating transports, from one
 * thread. */
void ps_transport_set_default_delay(double seconds);

/* Tensors through shared memory between the processes of one machine,
 * for every ZeroMQ transport created after this call in this process
 * (off by default): descriptors from peers are taken, and to a peer that
 * takes them too on this machine (ps_transport_shares_with(),
 * ps_transport_lend_to()) a tensor of 16 KB or more is lent as a segment
 * of shared memory (common/ps_shm.h), the message carrying its
 * descriptor. Peers must run as the same user: a receiver that cannot
 * map a segment drops the message, logged. Not with CURVE (such
 * transports neither lend nor take segments). Call before creating
 * transports, from one thread. */
void ps_transport_set_default_shm(int on);

/* Where t takes tensors lent through shared memory from: this machine
 * as ps_shm_host() names it, for a ZeroMQ transport made with
 * ps_transport_set_default_shm(1) and without CURVE; "" for any other.
 * For the protocol to tell its peer (Hello, Welcome). Borrowed: valid
 * while t lives. */
const char *ps_transport_shared_host(const ps_transport *t);

/* Whether t should lend to a peer that takes shared tensors on
 * peer_host (its ps_transport_shared_host(), as the peer said it): 1
 * when both take them and on the same machine. */
int ps_transport_shares_with(const ps_transport *t, const char *peer_host);

/* From now on lend tensors through shared memory to peer `to` (NULL on
 * the connecting side: its server), or stop (on = 0). t lends to nobody
 * until told, since a peer that does not take them would drop the
 * message: the protocol says who does (Hello and Welcome). Does nothing
 * where t does not take them itself. The listening side keeps up to 256
 * peers; one forgotten has its tensors sent in the message again. */
void ps_transport_lend_to(ps_transport *t, const ps_peer *to, int on);

#endif
