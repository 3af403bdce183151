/*
 * ps_transport_impl: what a transport backend provides. Each backend
 * embeds `struct ps_transport` as its first member and fills in ops.
 * Only transport backends and test fakes include this header.
 */
#ifndef PS_TRANSPORT_IMPL_H
#define PS_TRANSPORT_IMPL_H

#include "ps_transport.h"

struct ps_transport_ops {
	int (*send)(ps_transport *t, const ps_peer *to, const void *head,
		    size_t hlen, const void *tensor, size_t tlen);
	int (*recv)(ps_transport *t, ps_frame *out, int timeout_ms);
	const char *(*endpoint)(const ps_transport *t);
	void (*destroy)(ps_transport *t);
	/* Optional: wait until any of ts[n] (all of this backend) may have a
	 * message; PS_OK or PS_ETIMEDOUT. NULL: ps_transport_wait_any()
	 * naps instead. */
	int (*wait_any)(ps_transport *const *ts, size_t n, int timeout_ms);
	/* Optional (NULL: no counters). */
	void (*refusals)(const ps_transport *t, ps_transport_refusals *out);
	/* Optional, both or neither: a tensor buffer the backend can send
	 * without copying (its ops set to this table), and the send of one
	 * (b->len > 0; b made by this backend). NULL: the generic layer
	 * mallocs buffers and sends them through send, which copies. */
	int (*tensor_new)(ps_transport *t, size_t len, ps_tensor_buf **out);
	int (*send_tensor)(ps_transport *t, const ps_peer *to,
			   const void *head, size_t hlen, ps_tensor_buf *b);
	/* Optional: hand the tensor frame of f, the last message received
	 * on t, to the caller as a buffer (refs 1), without copying it;
	 * PS_EINVAL when it cannot (the bytes are not aligned for floats,
	 * or already taken). NULL: ps_transport_take_tensor() copies. */
	int (*take_tensor)(ps_transport *t, const ps_frame *f,
			   ps_tensor_buf **out);
	/* Optional, both or neither: tensors through shared memory
	 * (ps_transport_shared_host(), ps_transport_lend_to()). NULL:
	 * never. */
	const char *(*shared_host)(const ps_transport *t);
	void (*lend_to)(ps_transport *t, const ps_peer *to, int on);
};

/* A backend embeds this as the first member of its tensor buffer. */
struct ps_tensor_buf {
	/* The backend that made it; NULL for the generic layer's. */
	const struct ps_transport_ops *ops;
	void (*release)(ps_tensor_buf *b); /* frees b */
	void *data;
	size_t len;
	/* Handles the owning thread holds (ps_tensor_buf_share()); release
	 * runs when the last is destroyed. Backends set it to 1. */
	int refs;
};

/* Fill in a new buffer's common part, with one hold (the caller's). */
static inline void ps_tensor_buf_init(ps_tensor_buf *b,
				      const struct ps_transport_ops *ops,
				      void (*release)(ps_tensor_buf *),
				      void *data, size_t len)
{
	b->ops = ops;
	b->release = release;
	b->data = data;
	b->len = len;
	b->refs = 1;
}

struct ps_pending_send;

/* Backends calloc their transport and set ops; the rest belongs to the
 * generic layer (ps_transport.c) and starts zeroed. */
struct ps_transport {
	const struct ps_transport_ops *ops;
	ps_transport_counters count;
	double delay; /* seconds each send is held; 0: none */
	struct ps_pending_send *pending, *pending_tail; /* FIFO, by due time */
};

/* A backend counts a message whose tensor went (out) or came through
 * shared memory. */
void ps_transport_count_shared(ps_transport *t, int out);

/* ZeroMQ backend (ps_transport_zmq.c). */
int ps_transport_zmq_listen(ps_transport **out, const char *endpoint,
			    const ps_transport_opts *opts, ps_err *e);
int ps_transport_zmq_connect(ps_transport **out, const char *endpoint,
			     const ps_transport_opts *opts, ps_err *e);

/* MPI backend (ps_transport_mpi.c): "mpi://R" connects to rank R; the
 * endpoint "mpi://" followed by '*' listens for any rank. Initializes MPI
 * if needed. */
int ps_transport_mpi_listen(ps_transport **out, const char *endpoint,
			    const ps_transport_opts *opts, ps_err *e);
int ps_transport_mpi_connect(ps_transport **out, const char *endpoint,
			     const ps_transport_opts *opts, ps_err *e);

#endif
