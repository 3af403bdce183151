/*
 * ps_transport: dispatch to the backend chosen by the endpoint: tcp://
 * and ipc:// belong to ZeroMQ, mpi:// to MPI. inproc:// is not offered:
 * each transport has its own ZeroMQ context, and inproc only connects
 * sockets of one context. Above the backends it counts messages and
 * bytes, and emulates a link delay by holding sends in a queue.
 */
#include "ps_transport.h"

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "ps_log.h"
#include "ps_transport_impl.h"

/* A send held by the link delay: the message copied, due at `due`
 * (ps_now() seconds). */
struct ps_pending_send {
	struct ps_pending_send *next;
	double due;
	int to_peer; /* 0: the connecting side's server (to == NULL) */
	ps_peer to;
	size_t hlen, tlen;
	uint8_t data[]; /* head, then tensor */
};

static double default_delay;

/* Process-wide sums; a transport belongs to one thread, but a process
 * may run several transports on several threads. */
static _Atomic uint64_t total_msgs_in, total_msgs_out, total_bytes_in,
	total_bytes_out, total_delayed, total_delayed_failed, total_shared_in,
	total_shared_out;

void ps_transport_set_default_delay(double seconds)
{
	default_delay = seconds > 0 ? seconds : 0;
}

void ps_transport_stats(const ps_transport *t, ps_transport_counters *out)
{
	if (t) {
		*out = t->count;
		return;
	}
	out->msgs_in = atomic_load_explicit(&total_msgs_in,
					    memory_order_relaxed);
	out->msgs_out = atomic_load_explicit(&total_msgs_out,
					     memory_order_relaxed);
	out->bytes_in = atomic_load_explicit(&total_bytes_in,
					     memory_order_relaxed);
	out->bytes_out = atomic_load_explicit(&total_bytes_out,
					      memory_order_relaxed);
	out->delayed = atomic_load_explicit(&total_delayed,
					    memory_order_relaxed);
	out->delayed_failed = atomic_load_explicit(&total_delayed_failed,
						   memory_order_relaxed);
	out->shared_in = atomic_load_explicit(&total_shared_in,
					      memory_order_relaxed);
	out->shared_out = atomic_load_explicit(&total_shared_out,
					       memory_order_relaxed);
}

void ps_transport_count_shared(ps_transport *t, int out)
{
	if (out) {
		t->count.shared_out++;
		atomic_fetch_add_explicit(&total_shared_out, 1,
					  memory_order_relaxed);
	} else {
		t->count.shared_in++;
		atomic_fetch_add_explicit(&total_shared_in, 1,
					  memory_order_relaxed);
	}
}

static void count_out(ps_transport *t, size_t bytes)
{
	t->count.msgs_out++;
	t->count.bytes_out += bytes;
	atomic_fetch_add_explicit(&total_msgs_out, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&total_bytes_out, bytes,
				  memory_order_relaxed);
}

static void count_in(ps_transport *t, size_t bytes)
{
	t->count.msgs_in++;
	t->count.bytes_in += bytes;
	atomic_fetch_add_explicit(&total_msgs_in, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&total_bytes_in, bytes, memory_order_relaxed);
}

void ps_transport_setup_process(void)
{
#ifdef __GLIBC__
	/* 32 MB is as far as glibc would raise the mmap threshold by itself
	 * (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit, mallopt(3)); setting it
	 * also stops glibc from moving it. */
	mallopt(M_MMAP_THRESHOLD, 32 << 20);
	mallopt(M_TRIM_THRESHOLD, 256 << 20);
	/* Messages above that threshold (a model of more than 8M floats)
	 * would still be mapped afresh each time: 9M-float pushes ran at
	 * 3.7/s against 20/s for 7M. With no mmap at all every buffer comes
	 * from the heap and is reused. */
	mallopt(M_MMAP_MAX, 0);
#endif
}

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
		rc = ps_transport_mpi_listen(out, endpoint, opts, e);
	} else {
		rc = ps_transport_zmq_listen(out, endpoint, opts, e);
	}
	if (rc == PS_OK)
		(*out)->delay = default_delay;
	return rc;
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
		rc = ps_transport_mpi_connect(out, endpoint, opts, e);
	} else {
		rc = ps_transport_zmq_connect(out, endpoint, opts, e);
	}
	if (rc == PS_OK)
		(*out)->delay = default_delay;
	return rc;
}

const char *ps_transport_endpoint(const ps_transport *t)
{
	return t->ops->endpoint(t);
}

/* Send the held messages that are due by `now` (all of them with
 * now = INFINITY), in order. A backend queue that is full (PS_ETIMEDOUT)
 * stops the flush and keeps the rest for the next call; any other failure
 * drops that message and counts it, as a link would lose it: its sender
 * was told PS_OK long ago. */
static void flush_due(ps_transport *t, double now)
{
	struct ps_pending_send *p;

	while ((p = t->pending) != NULL && p->due <= now) {
		int rc = t->ops->send(t, p->to_peer ? &p->to : NULL, p->data,
				      p->hlen, p->tlen ? p->data + p->hlen : NULL,
				      p->tlen);
		if (rc == PS_ETIMEDOUT)
			return;
		if (rc == PS_OK) {
			count_out(t, p->hlen + p->tlen);
		} else {
			t->count.delayed_failed++;
			atomic_fetch_add_explicit(&total_delayed_failed, 1,
						  memory_order_relaxed);
		}
		t->pending = p->next;
		if (!t->pending)
			t->pending_tail = NULL;
		free(p);
	}
}

static int hold(ps_transport *t, const ps_peer *to, const void *head,
		size_t hlen, const void *tensor, size_t tlen)
{
	struct ps_pending_send *p = malloc(sizeof *p + hlen + tlen);

	if (!p)
		return PS_ENOMEM;
	p->next = NULL;
	p->due = ps_now() + t->delay;
	p->to_peer = to != NULL;
	if (to)
		p->to = *to;
	p->hlen = hlen;
	p->tlen = tlen;
	if (hlen)
		memcpy(p->data, head, hlen);
	if (tlen)
		memcpy(p->data + hlen, tensor, tlen);
	if (t->pending_tail)
		t->pending_tail->next = p;
	else
		t->pending = p;
	t->pending_tail = p;
	t->count.delayed++;
	atomic_fetch_add_explicit(&total_delayed, 1, memory_order_relaxed);
	return PS_OK;
}

int ps_transport_send(ps_transport *t, const ps_peer *to, const void *head,
		      size_t hlen, const void *tensor, size_t tlen)
{
	int rc;

	if (t->delay > 0) {
		rc = hold(t, to, head, hlen, tensor, tlen);
		flush_due(t, ps_now());
		return rc;
	}
	rc = t->ops->send(t, to, head, hlen, tensor, tlen);
	if (rc == PS_OK)
		count_out(t, hlen + tlen);
	return rc;
}

/* The generic tensor buffer: the struct and its bytes in one block. The
 * struct's size is a multiple of its pointers' alignment, so the bytes
 * after it are aligned for floats. */
static void plain_release(ps_tensor_buf *b)
{
	free(b);
}

static int plain_new(size_t len, ps_tensor_buf **out)
{
	ps_tensor_buf *b;

	if (len > SIZE_MAX - sizeof *b)
		return PS_ENOMEM;
	b = malloc(sizeof *b + len);
	if (!b)
		return PS_ENOMEM;
	ps_tensor_buf_init(b, NULL, plain_release, b + 1, len);
	*out = b;
	return PS_OK;
}

int ps_transport_tensor_new(ps_transport *t, size_t len, ps_tensor_buf **out)
{
	*out = NULL;
	if (t->ops->tensor_new)
		return t->ops->tensor_new(t, len, out);
	return plain_new(len, out);
}

int ps_transport_take_tensor(ps_transport *t, const ps_frame *f,
			     ps_tensor_buf **out)
{
	int rc;

	*out = NULL;
	if (!f->tensor || f->tensor_len == 0)
		return PS_EINVAL;
	if (t->ops->take_tensor && t->ops->take_tensor(t, f, out) == PS_OK)
		return PS_OK;
	/* The backend cannot hand it over: a copy. */
	rc = plain_new(f->tensor_len, out);
	if (rc == PS_OK)
		memcpy((*out)->data, f->tensor, f->tensor_len);
	return rc;
}

void *ps_tensor_buf_data(ps_tensor_buf *b)
{
	return b->data;
}

size_t ps_tensor_buf_len(const ps_tensor_buf *b)
{
	return b->len;
}

ps_tensor_buf *ps_tensor_buf_share(ps_tensor_buf *b)
{
	b->refs++;
	return b;
}

void ps_tensor_buf_destroy(ps_tensor_buf **bp)
{
	if (!bp || !*bp)
		return;
	if (--(*bp)->refs == 0)
		(*bp)->release(*bp);
	*bp = NULL;
}

int ps_transport_send_tensor(ps_transport *t, const ps_peer *to,
			     const void *head, size_t hlen, ps_tensor_buf *b)
{
	int rc;

	/* A held send copies the message whatever the backend; a buffer
	 * from another backend, or no backend support, is copied by send. */
	if (t->delay > 0 || b->len == 0 || !t->ops->send_tensor ||
	    b->ops != t->ops)
		return ps_transport_send(t, to, head, hlen, b->data, b->len);
	rc = t->ops->send_tensor(t, to, head, hlen, b);
	if (rc == PS_OK)
		count_out(t, hlen + b->len);
	return rc;
}

/* With messages held, the backend is asked to wait only until the next
 * one is due, so that it leaves on time while the caller waits for
 * replies; the caller's own timeout is kept overall. */
int ps_transport_recv(ps_transport *t, ps_frame *out, int timeout_ms)
{
	double deadline = timeout_ms < 0 ? INFINITY
					 : ps_now() + timeout_ms / 1000.0;
	int rc;

	for (;;) {
		double now = ps_now(), wait;
		int ms;

		flush_due(t, now);
		wait = deadline - now;
		if (t->pending && t->pending->due - now < wait)
			wait = t->pending->due - now;
		if (wait < 0)
			wait = 0;
		ms = isinf(wait) ? -1
		     : wait > 1e6 ? 1000000000
				  : (int)ceil(wait * 1000.0);
		rc = t->ops->recv(t, out, ms);
		if (rc == PS_OK)
			count_in(t, out->head_len + out->tensor_len);
		if (rc != PS_ETIMEDOUT || ps_now() >= deadline ||
		    timeout_ms == 0)
			break;
	}
	flush_due(t, ps_now());
	return rc;
}

int ps_transport_wait_any(ps_transport *const *ts, size_t n, int timeout_ms)
{
	struct timespec nap = {0, 200000}; /* 0.2 ms */
	int same = n > 0 && ts[0]->ops->wait_any;

	for (size_t i = 1; same && i < n; i++)
		same = ts[i]->ops == ts[0]->ops;
	if (same)
		return ts[0]->ops->wait_any(ts, n, timeout_ms);
	if (timeout_ms > 0)
		nanosleep(&nap, NULL);
	return PS_OK;
}

const char *ps_transport_shared_host(const ps_transport *t)
{
	return t->ops->shared_host ? t->ops->shared_host(t) : "";
}

int ps_transport_shares_with(const ps_transport *t, const char *peer_host)
{
	const char *own = ps_transport_shared_host(t);
	return own[0] != '\0' && peer_host && strcmp(own, peer_host) == 0;
}

void ps_transport_lend_to(ps_transport *t, const ps_peer *to, int on)
{
	if (t->ops->lend_to)
		t->ops->lend_to(t, to, on);
}

void ps_transport_get_refusals(const ps_transport *t, ps_transport_refusals *out)
{
	memset(out, 0, sizeof *out);
	if (t->ops->refusals)
		t->ops->refusals(t, out);
}

void ps_transport_destroy(ps_transport **tp)
{
	ps_transport *t;

	if (!tp || !*tp)
		return;
	t = *tp;
	/* Held messages leave at their due time, as they would have. */
	while (t->pending) {
		double left = t->pending->due - ps_now();
		if (left > 0) {
			struct timespec ts = {
				.tv_sec = (time_t)left,
				.tv_nsec = (long)((left - (double)(time_t)left) * 1e9)};
			nanosleep(&ts, NULL);
		}
		flush_due(t, t->pending->due);
		if (t->pending && t->pending->due <= ps_now()) {
			/* The backend's queue stays full: give up on the
			 * rest rather than spin. */
			struct ps_pending_send *p = t->pending;
			t->pending = p->next;
			free(p);
			t->count.delayed_failed++;
			atomic_fetch_add_explicit(&total_delayed_failed, 1,
						  memory_order_relaxed);
		}
	}
	t->pending_tail = NULL;
	t->ops->destroy(t);
	*tp = NULL;
}
