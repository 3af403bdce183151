/*
 * ps_transport_mpi: the MPI backend of ps_transport and the MPI bootstrap
 * of ps_mpi.h. The only file that includes mpi.h.
 *
 * One logical message is one MPI message on MPI_COMM_WORLD with tag
 * PS_TAG (framing in ps_mpi.h). The listening side (a server) receives
 * from any source; the connecting side from its server's rank only, so a
 * process could hold one of each. Sends post MPI_Isend, so a send never
 * waits for the receiver: a plain send from a packed copy the transport
 * owns, a tensor buffer's from the buffer itself, which the send holds;
 * finished sends are reaped on every call. Receives probe with
 * MPI_Iprobe and nap between probes: a blocking MPI_Recv would spin a
 * core at 100% (Open MPI busy-polls), stealing it from a worker.
 */
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mpi.h>

#include "ps_log.h"
#include "ps_mpi.h"
#include "ps_transport_impl.h"

#define PS_TAG 7071
#define MAX_PENDING_SENDS 4096
#define FRAME_MAGIC 0x314d5350u /* "PSM1" little-endian */
/* How a receive waits (mt_recv(); docs/ARCHITECTURE.md, "The MPI
 * transport"): it probes without pause for SPIN_SECONDS; a client, which
 * only ever waits for the reply to its own request, then probes between
 * yields of its core until CLIENT_YIELD_SECONDS; then both nap 20 us
 * until SHORT_NAPS_SECONDS, and 200 us after that. */
#define SPIN_SECONDS 50e-6
#define CLIENT_YIELD_SECONDS 500e-6
#define SHORT_NAPS_SECONDS 3e-3

static int mpi_inited_here;
static int mpi_finalized;

/* --- framing ------------------------------------------------------------ */

static size_t pad8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

size_t ps_mpi_frame_size(size_t hlen, size_t tlen)
{
	size_t total;
	if (hlen > INT32_MAX || tlen > INT32_MAX)
		return 0;
	total = PS_MPI_FRAME_HEADER + pad8(hlen) + tlen;
	return total > INT32_MAX ? 0 : total;
}

void ps_mpi_frame_pack(unsigned char *buf, const void *head, size_t hlen,
		       const void *tensor, size_t tlen)
{
	uint32_t magic = FRAME_MAGIC, h = (uint32_t)hlen;
	uint64_t t = tlen;

	memcpy(buf, &magic, 4);
	memcpy(buf + 4, &h, 4);
	memcpy(buf + 8, &t, 8);
	if (hlen)
		memcpy(buf + PS_MPI_FRAME_HEADER, head, hlen);
	memset(buf + PS_MPI_FRAME_HEADER + hlen, 0, pad8(hlen) - hlen);
	if (tlen && tensor)
		memcpy(buf + PS_MPI_FRAME_HEADER + pad8(hlen), tensor, tlen);
}

int ps_mpi_frame_parse(const unsigned char *buf, size_t len,
		       const unsigned char **head, size_t *hlen,
		       const unsigned char **tensor, size_t *tlen)
{
	uint32_t magic, h;
	uint64_t t;

	if (len < PS_MPI_FRAME_HEADER)
		return PS_EPROTO;
	memcpy(&magic, buf, 4);
	memcpy(&h, buf + 4, 4);
	memcpy(&t, buf + 8, 8);
	if (magic != FRAME_MAGIC || h > len || t > len ||
	    PS_MPI_FRAME_HEADER + pad8(h) + t != len)
		return PS_EPROTO;
	*head = buf + PS_MPI_FRAME_HEADER;
	*hlen = h;
	*tensor = t ? buf + PS_MPI_FRAME_HEADER + pad8(h) : NULL;
	*tlen = (size_t)t;
	return PS_OK;
}

/* --- bootstrap ------------------------------------------------------------ */

int ps_mpi_launched(void)
{
	return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") ||
	       getenv("PMIX_RANK");
}

static int mpi_fail(ps_err *e, int code, const char *what)
{
	char msg[MPI_MAX_ERROR_STRING];
	int len = 0;
	if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS)
		snprintf(msg, sizeof msg, "MPI error %d", code);
	return ps_err_set(e, PS_ETRANSPORT, "%s: %s", what, msg);
}

int ps_mpi_init(ps_err *e)
{
	int flag = 0, provided, rc;

	MPI_Initialized(&flag);
	if (flag)
		return PS_OK;
	rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_SINGLE, &provided);
	if (rc != MPI_SUCCESS)
		return ps_err_set(e, PS_ETRANSPORT, "MPI_Init failed (%d)", rc);
	mpi_inited_here = 1;
	/* Network input and peers that vanish must come back as errors. */
	MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
	return PS_OK;
}

void ps_mpi_finalize(void)
{
	int flag = 0;
	if (!mpi_inited_here || mpi_finalized)
		return;
	MPI_Finalized(&flag);
	if (!flag)
		MPI_Finalize();
	mpi_finalized = 1;
}

int ps_mpi_rank(void)
{
	int flag = 0, r = -1;
	MPI_Initialized(&flag);
	if (flag)
		MPI_Comm_rank(MPI_COMM_WORLD, &r);
	return r;
}

int ps_mpi_size(void)
{
	int flag = 0, n = 0;
	MPI_Initialized(&flag);
	if (flag)
		MPI_Comm_size(MPI_COMM_WORLD, &n);
	return n;
}

int ps_mpi_allgather_int(int mine, int *all, ps_err *e)
{
	int rc = MPI_Allgather(&mine, 1, MPI_INT, all, 1, MPI_INT,
			       MPI_COMM_WORLD);
	return rc == MPI_SUCCESS ? PS_OK : mpi_fail(e, rc, "MPI_Allgather");
}

int ps_mpi_allgather_str(const char *mine, char *all, size_t stride,
			 ps_err *e)
{
	char *buf;
	size_t n = strlen(mine);
	int rc;

	if (n >= stride || stride > INT32_MAX)
		return ps_err_set(e, PS_EINVAL, "string too long to exchange: %s",
				  mine);
	buf = calloc(1, stride);
	if (!buf)
		return ps_err_set(e, PS_ENOMEM, "out of memory");
	memcpy(buf, mine, n);
	rc = MPI_Allgather(buf, (int)stride, MPI_CHAR, all, (int)stride,
			   MPI_CHAR, MPI_COMM_WORLD);
	free(buf);
	return rc == MPI_SUCCESS ? PS_OK : mpi_fail(e, rc, "MPI_Allgather");
}

/* --- transport ------------------------------------------------------------- */

/* A tensor buffer with room in front of the bytes for the frame's header
 * and envelope, so that a send packs those in front and posts the frame
 * where it lies: the tensor is not copied. Reference-counted by the
 * generic layer; each send in progress holds one reference. A received
 * frame the caller takes is one too, its room what the frame's header
 * and envelope took. */
#define TENSOR_HEADROOM 256 /* header + padded envelope; a push's is ~60 */

typedef struct mpi_tensor {
	ps_tensor_buf base;
	unsigned char *block; /* malloc'd: headroom, then the bytes */
	size_t room;          /* bytes of block before the data */
	int sending;          /* sends of it in progress */
} mpi_tensor;

typedef struct pending_send {
	MPI_Request req;
	unsigned char *buf;   /* a packed copy, or NULL */
	mpi_tensor *tensor;   /* a hold on the buffer sent, or NULL */
} pending_send;

typedef struct mpi_transport {
	struct ps_transport base;
	int listening;
	int server_rank;        /* connecting side: the only peer */
	int64_t max_message;
	unsigned char *rbuf;    /* the last received frame */
	size_t rcap;
	pending_send *sends;
	size_t nsends;
	char endpoint[64];
} mpi_transport;

/* Free the buffers of sends that have completed. */
static void reap_sends(mpi_transport *m)
{
	size_t i = 0;
	while (i < m->nsends) {
		int done = 0;
		MPI_Test(&m->sends[i].req, &done, MPI_STATUS_IGNORE);
		if (done) {
			mpi_tensor *mb = m->sends[i].tensor;
			free(m->sends[i].buf);
			if (mb) {
				ps_tensor_buf *b = &mb->base;
				mb->sending--;
				ps_tensor_buf_destroy(&b);
			}
			m->sends[i] = m->sends[--m->nsends];
		} else {
			i++;
		}
	}
}

static int peer_rank(const ps_peer *p)
{
	uint32_t r;
	memcpy(&r, p->id, 4);
	return (int)r;
}

/* The rank a send to `to` goes to (the connecting side: its server),
 * once finished sends are reaped and a slot is free for it. */
static int send_dest(mpi_transport *m, const ps_peer *to, int *dest)
{
	if (m->listening && (!to || to->len != 4))
		return PS_EINVAL;
	*dest = m->listening ? peer_rank(to) : m->server_rank;
	if (*dest < 0 || *dest >= ps_mpi_size())
		return PS_EUNKNOWN_WORKER;
	reap_sends(m);
	if (m->nsends == MAX_PENDING_SENDS)
		return PS_ETIMEDOUT; /* the peer is not receiving */
	return PS_OK;
}

/* Post frame[size] to dest, keeping what it lies in (a packed copy to
 * free, or a hold on a tensor buffer) until MPI_Test says it is sent. */
static int post(mpi_transport *m, int dest, unsigned char *frame,
		size_t size, unsigned char *copy, mpi_tensor *held)
{
	pending_send *p = &m->sends[m->nsends];

	if (MPI_Isend(frame, (int)size, MPI_BYTE, dest, PS_TAG, MPI_COMM_WORLD,
		      &p->req) != MPI_SUCCESS)
		return PS_ETRANSPORT;
	p->buf = copy;
	p->tensor = held;
	m->nsends++;
	return PS_OK;
}

static int mt_send(ps_transport *t, const ps_peer *to, const void *head,
		   size_t hlen, const void *tensor, size_t tlen)
{
	mpi_transport *m = (mpi_transport *)t;
	size_t size = ps_mpi_frame_size(hlen, tlen);
	unsigned char *buf;
	int dest, rc = send_dest(m, to, &dest);

	if (rc != PS_OK)
		return rc;
	if (size == 0)
		return PS_EINVAL;
	buf = malloc(size);
	if (!buf)
		return PS_ENOMEM;
	ps_mpi_frame_pack(buf, head, hlen, tensor, tlen);
	rc = post(m, dest, buf, size, buf, NULL);
	if (rc != PS_OK)
		free(buf);
	return rc;
}

static void mt_tensor_release(ps_tensor_buf *b)
{
	mpi_tensor *mb = (mpi_tensor *)b;
	free(mb->block);
	free(mb);
}

static int mt_tensor_new(ps_transport *t, size_t len, ps_tensor_buf **out)
{
	mpi_transport *m = (mpi_transport *)t;
	mpi_tensor *mb;

	if (len > SIZE_MAX - TENSOR_HEADROOM)
		return PS_ENOMEM;
	mb = calloc(1, sizeof *mb);
	if (!mb)
		return PS_ENOMEM;
	/* The headroom is a multiple of 8 and malloc aligns to 16, so the
	 * bytes are aligned for floats. */
	mb->block = malloc(TENSOR_HEADROOM + len);
	if (!mb->block) {
		free(mb);
		return PS_ENOMEM;
	}
	mb->room = TENSOR_HEADROOM;
	ps_tensor_buf_init(&mb->base, m->base.ops, mt_tensor_release,
			   mb->block + mb->room, len);
	*out = &mb->base;
	return PS_OK;
}

static int mt_send_tensor(ps_transport *t, const ps_peer *to,
			  const void *head, size_t hlen, ps_tensor_buf *b)
{
	mpi_transport *m = (mpi_transport *)t;
	mpi_tensor *mb = (mpi_tensor *)b;
	size_t front = PS_MPI_FRAME_HEADER + pad8(hlen);
	size_t size = ps_mpi_frame_size(hlen, b->len);
	unsigned char *frame;
	int dest, rc;

	/* The header in front is rewritten for every send: while an
	 * earlier send of the buffer may still be read by the receiver, or
	 * when the envelope does not fit, send a packed copy. */
	if (mb->sending > 0 || front > mb->room || size == 0)
		return mt_send(t, to, head, hlen, b->data, b->len);
	rc = send_dest(m, to, &dest);
	if (rc != PS_OK)
		return rc;
	frame = (unsigned char *)b->data - front;
	ps_mpi_frame_pack(frame, head, hlen, NULL, b->len);
	rc = post(m, dest, frame, size, NULL, mb);
	if (rc != PS_OK)
		return rc;
	mb->sending++;
	(void)ps_tensor_buf_share(b); /* the pending send's hold */
	return PS_OK;
}

/* The receive buffer goes to the caller with the frame in it; the next
 * receive allocates another. */
static int mt_take_tensor(ps_transport *t, const ps_frame *f,
			  ps_tensor_buf **out)
{
	mpi_transport *m = (mpi_transport *)t;
	mpi_tensor *mb;

	if (!m->rbuf || f->tensor < m->rbuf ||
	    f->tensor + f->tensor_len > m->rbuf + m->rcap)
		return PS_EINVAL;
	mb = calloc(1, sizeof *mb);
	if (!mb)
		return PS_ENOMEM;
	mb->block = m->rbuf;
	mb->room = (size_t)(f->tensor - m->rbuf);
	ps_tensor_buf_init(&mb->base, m->base.ops, mt_tensor_release,
			   (void *)f->tensor, f->tensor_len);
	m->rbuf = NULL;
	m->rcap = 0;
	*out = &mb->base;
	return PS_OK;
}

/* 0, or -1 when a signal handler ran meanwhile. */
static int nap(long ns)
{
	struct timespec ts = {0, ns};
	return nanosleep(&ts, NULL) == 0 || errno != EINTR ? 0 : -1;
}

static int mt_recv(ps_transport *t, ps_frame *out, int timeout_ms)
{
	mpi_transport *m = (mpi_transport *)t;
	double start = ps_now();
	double yield_until = m->listening ? SPIN_SECONDS : CLIENT_YIELD_SECONDS;
	int source = m->listening ? MPI_ANY_SOURCE : m->server_rank;
	MPI_Status st;
	int flag = 0, count = 0, paused = 1, too_large, rc;
	uint32_t from;

	memset(out, 0, sizeof *out);
	for (;;) {
		double waited;
		reap_sends(m);
		/* Open MPI's MPI_Iprobe looks for a match first and only then
		 * progresses, which moves what arrived into the queue it
		 * matches from. A message that came in while this process
		 * made no MPI call (in a nap, or in the caller between two
		 * receives) is found by the second probe, not the first. With
		 * one probe a receive with no timeout missed it, and one
		 * with a timeout found it a nap late: 1 trainer without
		 * --prefetch ran 12-13% slower. */
		rc = MPI_Iprobe(source, PS_TAG, MPI_COMM_WORLD, &flag, &st);
		if (rc == MPI_SUCCESS && !flag && paused)
			rc = MPI_Iprobe(source, PS_TAG, MPI_COMM_WORLD, &flag,
					&st);
		paused = 0;
		if (rc != MPI_SUCCESS)
			return PS_ETRANSPORT;
		if (flag)
			break;
		waited = ps_now() - start;
		if (timeout_ms >= 0 && waited >= timeout_ms / 1000.0)
			return PS_ETIMEDOUT;
		/* Phases by time, not by a count of probes (a failed probe
		 * takes tens of nanoseconds). A nap costs far more than it
		 * asks (timer slack 50 us, a VM waking its vCPU ~40 us, more
		 * under load). When both sides napped after a short spin,
		 * each woke late for the other's message and so made the
		 * other nap too, for every later message: small round trips
		 * took 0.5 ms instead of 3 us. A client that keeps probing
		 * (yielding, so that another process that wants the core
		 * gets it) longer than a server's nap answers at once, and
		 * the server finds the next request within its spin. A
		 * server naps sooner: what it waits for is a worker's
		 * computation, and napping leaves the core to that worker.
		 * A signal that lands in a nap ends the wait, as it ends
		 * ZeroMQ's poll; one that lands while probing is seen by the
		 * caller after the next message or timeout. */
		if (waited >= yield_until) {
			if (nap(waited < SHORT_NAPS_SECONDS ? 20000 : 200000))
				return PS_EINTR;
			paused = 1;
		} else if (waited >= SPIN_SECONDS)
			sched_yield();
	}
	MPI_Get_count(&st, MPI_BYTE, &count);
	from = (uint32_t)st.MPI_SOURCE;
	out->from.len = 4;
	memcpy(out->from.id, &from, 4);
	too_large = m->max_message > 0 && count > m->max_message;
	if (too_large) {
		/* Dropped, but received whole into a buffer of its own: Open
		 * MPI 4.1's shared-memory single-copy path writes all of a
		 * large message even into a shorter buffer, so receiving it
		 * truncated into a small one crashed the server. The peer is
		 * a rank of the same job, which allocated it too. */
		void *scratch = malloc((size_t)count);
		if (!scratch)
			return PS_ENOMEM;
		MPI_Recv(scratch, count, MPI_BYTE, st.MPI_SOURCE, PS_TAG,
			 MPI_COMM_WORLD, MPI_STATUS_IGNORE);
		free(scratch);
		return PS_EPROTO;
	}
	if ((size_t)count > m->rcap) {
		/* 64-byte aligned, so that the tensor lands 8-byte aligned. */
		void *nb = NULL;
		if (posix_memalign(&nb, 64, (size_t)count) != 0)
			return PS_ENOMEM;
		free(m->rbuf);
		m->rbuf = nb;
		m->rcap = (size_t)count;
	}
	rc = MPI_Recv(m->rbuf, count, MPI_BYTE, st.MPI_SOURCE, PS_TAG,
		      MPI_COMM_WORLD, MPI_STATUS_IGNORE);
	if (rc != MPI_SUCCESS)
		return PS_ETRANSPORT;
	if (ps_mpi_frame_parse(m->rbuf, (size_t)count, &out->head,
			       &out->head_len, &out->tensor,
			       &out->tensor_len) != PS_OK)
		return PS_EPROTO;
	return PS_OK;
}

static const char *mt_endpoint(const ps_transport *t)
{
	return ((const mpi_transport *)t)->endpoint;
}

static void mt_destroy(ps_transport *t)
{
	mpi_transport *m = (mpi_transport *)t;
	double deadline = ps_now() + 2.0;

	/* Give queued sends (a last reply, a bye) a moment to go out. */
	while (m->nsends > 0 && ps_now() < deadline) {
		reap_sends(m);
		if (m->nsends > 0)
			(void)nap(100000);
	}
	/* A send still pending goes to a peer that stopped receiving. MPI
	 * may read its buffer until it completes (Open MPI cannot cancel a
	 * send), so the request is released and the buffer left to the
	 * process's exit: freeing it here would be a use after free. */
	for (size_t i = 0; i < m->nsends; i++)
		MPI_Request_free(&m->sends[i].req);
	free(m->sends);
	free(m->rbuf);
	free(m);
}

static const struct ps_transport_ops mpi_ops = {
	.send = mt_send,
	.recv = mt_recv,
	.endpoint = mt_endpoint,
	.destroy = mt_destroy,
	.tensor_new = mt_tensor_new,
	.send_tensor = mt_send_tensor,
	.take_tensor = mt_take_tensor,
};

static int open_mpi(ps_transport **out, const char *endpoint, int listening,
		    const ps_transport_opts *opts, ps_err *e)
{
	mpi_transport *m = NULL;
	const char *rest = endpoint + 6; /* after "mpi://" */
	char *end = NULL;
	long rank = -1;
	int rc;

	*out = NULL;
	/* Outside mpirun MPI would start a singleton world of one rank: a
	 * server with nobody to serve, or a client talking to itself. */
	if (!ps_mpi_launched())
		return ps_err_set(e, PS_EINVAL,
				  "endpoint '%s': mpi:// needs a job started by mpirun",
				  endpoint);
	rc = ps_mpi_init(e);
	if (rc != PS_OK)
		return rc;
	if (!listening) {
		rank = strtol(rest, &end, 10);
		if (end == rest || *end != '\0' || rank < 0 ||
		    rank >= ps_mpi_size() || rank == ps_mpi_rank())
			return ps_err_set(e, PS_EINVAL,
					  "endpoint '%s': expected mpi://RANK with RANK in [0, %d), not this rank (%d)",
					  endpoint, ps_mpi_size(), ps_mpi_rank());
	} else if (strcmp(rest, "") != 0 && strcmp(rest, "*") != 0) {
		return ps_err_set(e, PS_EINVAL,
				  "endpoint '%s': a server listens on mpi://*",
				  endpoint);
	}
	m = calloc(1, sizeof *m);
	if (m)
		m->sends = calloc(MAX_PENDING_SENDS, sizeof *m->sends);
	if (!m || !m->sends) {
		free(m);
		return ps_err_set(e, PS_ENOMEM, "out of memory");
	}
	m->base.ops = &mpi_ops;
	m->listening = listening;
	m->server_rank = (int)rank;
	m->max_message = opts ? opts->max_message : 0;
	if (listening)
		snprintf(m->endpoint, sizeof m->endpoint, "mpi://%d",
			 ps_mpi_rank());
	else
		snprintf(m->endpoint, sizeof m->endpoint, "mpi://%ld", rank);
	*out = &m->base;
	return PS_OK;
}

int ps_transport_mpi_listen(ps_transport **out, const char *endpoint,
			    const ps_transport_opts *opts, ps_err *e)
{
	return open_mpi(out, endpoint, 1, opts, e);
}

int ps_transport_mpi_connect(ps_transport **out, const char *endpoint,
			     const ps_transport_opts *opts, ps_err *e)
{
	return open_mpi(out, endpoint, 0, opts, e);
}
