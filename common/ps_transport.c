/*
 * ps_transport: dispatch to the backend chosen by the endpoint: tcp://
 * and ipc:// belong to ZeroMQ, mpi:// to MPI. inproc:// is not offered:
 * each transport has its own ZeroMQ context, and inproc only connects
 * sockets of one context.
 */
#include "ps_transport.h"

#include <string.h>

#include "ps_transport_impl.h"

int ps_peer_equal(const ps_peer *a, const ps_peer *b)
{
	return a->len == b->len && memcmp(a->id, b->id, a->len) == 0;
}

/* libzmq takes a tcp port modulo 65536 ("tcp://127.0.0.1:99999" binds
 * port 34463), so the port is checked here: "*" or 0 .. 65535. An
 * endpoint without any port is left for ZeroMQ to refuse. */
static int tcp_port_ok(const char *endpoint)
{
	const char *port = strrchr(endpoint + 6, ':');
	unsigned long v = 0;
	size_t n;

	if (!port || strcmp(port + 1, "*") == 0)
		return 1;
	port++;
	n = strspn(port, "0123456789");
	if (n == 0 || n > 5 || port[n] != '\0')
		return 0;
	for (size_t i = 0; i < n; i++)
		v = v * 10 + (unsigned long)(port[i] - '0');
	return v <= 65535;
}

static int check_endpoint(const char *endpoint, ps_err *e)
{
	if (!endpoint || (strncmp(endpoint, "tcp://", 6) != 0 &&
			  strncmp(endpoint, "ipc://", 6) != 0 &&
			  strncmp(endpoint, "mpi://", 6) != 0))
		return ps_err_set(e, PS_EINVAL,
				  "endpoint '%s': expected tcp://HOST:PORT, ipc://PATH or mpi://RANK",
				  endpoint ? endpoint : "(null)");
	if (strncmp(endpoint, "tcp://", 6) == 0 && !tcp_port_ok(endpoint))
		return ps_err_set(e, PS_EINVAL,
				  "endpoint '%s': port must be * or 0..65535",
				  endpoint);
	return PS_OK;
}

/* CURVE is a ZeroMQ mechanism; MPI messages travel inside the job,
 * whose isolation they rely on (docs/SECURITY.md). */
static int curve_not_mpi(const char *endpoint, ps_err *e)
{
	return ps_err_set(e, PS_EINVAL,
			  "%s: CURVE keys apply to ZeroMQ endpoints (tcp://, "
			  "ipc://); the MPI transport relies on the cluster's "
			  "isolation",
			  endpoint);
}

int ps_transport_listen(ps_transport **out, const char *endpoint,
			const ps_transport_opts *opts, ps_err *e)
{
	int rc;

	/* As the backends do: *out is NULL on every failure, so a caller's
	 * cleanup can always destroy it. */
	*out = NULL;
	rc = check_endpoint(endpoint, e);
	if (rc != PS_OK)
		return rc;
	if (strncmp(endpoint, "mpi://", 6) == 0) {
		if (opts && opts->curve)
			return curve_not_mpi(endpoint, e);
		return ps_transport_mpi_listen(out, endpoint, opts, e);
	}
	return ps_transport_zmq_listen(out, endpoint, opts, e);
}

int ps_transport_connect(ps_transport **out, const char *endpoint,
			 const ps_transport_opts *opts, ps_err *e)
{
	int rc;

	/* As the backends do: *out is NULL on every failure, so a caller's
	 * cleanup can always destroy it. */
	*out = NULL;
	rc = check_endpoint(endpoint, e);
	if (rc != PS_OK)
		return rc;
	if (strncmp(endpoint, "mpi://", 6) == 0) {
		if (opts && opts->curve)
			return curve_not_mpi(endpoint, e);
		return ps_transport_mpi_connect(out, endpoint, opts, e);
	}
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

void ps_transport_get_stats(const ps_transport *t, ps_transport_stats *out)
{
	memset(out, 0, sizeof *out);
	if (t->ops->stats)
		t->ops->stats(t, out);
}

void ps_transport_destroy(ps_transport **tp)
{
	if (!tp || !*tp)
		return;
	(*tp)->ops->destroy(*tp);
	*tp = NULL;
}
