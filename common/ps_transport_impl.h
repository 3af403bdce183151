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
	/* Optional (NULL: no counters). */
	void (*stats)(const ps_transport *t, ps_transport_stats *out);
};

struct ps_transport {
	const struct ps_transport_ops *ops;
};

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
