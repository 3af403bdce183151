/*
 * ps_transport: dispatch to the backend chosen by the endpoint. Every
 * endpoint form today (tcp://, ipc://, inproc://) belongs to ZeroMQ.
 */
#include "ps_transport.h"

#include <string.h>

#include "ps_transport_impl.h"

int ps_peer_equal(const ps_peer *a, const ps_peer *b)
{
	return a->len == b->len && memcmp(a->id, b->id, a->len) == 0;
}

static int check_endpoint(const char *endpoint, ps_err *e)
{
	if (!endpoint || (strncmp(endpoint, "tcp://", 6) != 0 &&
			  strncmp(endpoint, "ipc://", 6) != 0 &&
			  strncmp(endpoint, "inproc://", 9) != 0))
		return ps_err_set(e, PS_EINVAL,
				  "endpoint '%s': expected tcp://HOST:PORT, ipc://PATH or inproc://NAME",
				  endpoint ? endpoint : "(null)");
	return PS_OK;
}

int ps_transport_listen(ps_transport **out, const char *endpoint,
			const ps_transport_opts *opts, ps_err *e)
{
	int rc = check_endpoint(endpoint, e);
	if (rc != PS_OK)
		return rc;
	return ps_transport_zmq_listen(out, endpoint, opts, e);
}

int ps_transport_connect(ps_transport **out, const char *endpoint,
			 const ps_transport_opts *opts, ps_err *e)
{
	int rc = check_endpoint(endpoint, e);
	if (rc != PS_OK)
		return rc;
	return ps_transport_zmq_connect(out, endpoint, opts, e);
}

const char *ps_transport_endpoint(const ps_transport *t)
{
	return t->ops->endpoint(t);
}

int ps_transport_send(ps_transport *t, const ps_peer *to, const void *head,
		      size_t hlen, const void *tensor, size_t tlen)
{
	return t->ops->send(t, to, head, hlen, tensor, tlen);
}

int ps_transport_recv(ps_transport *t, ps_frame *out, int timeout_ms)
{
	return t->ops->recv(t, out, timeout_ms);
}

void ps_transport_destroy(ps_transport **tp)
{
	if (!tp || !*tp)
		return;
	(*tp)->ops->destroy(*tp);
	*tp = NULL;
}
