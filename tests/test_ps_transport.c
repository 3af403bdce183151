/*
 * Unit tests for ps_transport over real ZeroMQ sockets: ipc:// in a
 * mkdtemp directory and tcp://127.0.0.1 on ephemeral ports. Every receive
 * has a bounded timeout and an alarm() watchdog ends the run if anything
 * blocks anyway. Covers envelope + tensor delivery both ways, peer ids,
 * the documented error codes, the max_message limit, and CURVE: keys,
 * authorized and refused clients, and what each side is told.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#include <pthread.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fake_transport.h"
#include "ps_error.h"
#include "ps_transport.h"
#include "test_rmtree.h"

#define WAIT_MS 5000 /* a message sent to a live peer arrives by then */

static char tmpdir[] = "/tmp/test_ps_transport.XXXXXX";

/* Short linger: destroy never waits for undelivered messages. */
static const ps_transport_opts quick = {0, 0, NULL};

static int group_setup(void **state)
{
	(void)state;
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	return test_rmtree(tmpdir);
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static ps_transport *listen_ok(const char *endpoint,
			       const ps_transport_opts *opts)
{
	ps_transport *t = NULL;
	ps_err e = {0, ""};
	int rc = ps_transport_listen(&t, endpoint, opts, &e);
	if (rc != PS_OK)
		fail_msg("listen %s: %s (%s)", endpoint, ps_errname(rc), e.msg);
	assert_non_null(t);
	return t;
}

static ps_transport *connect_ok(const char *endpoint,
				const ps_transport_opts *opts)
{
	ps_transport *t = NULL;
	ps_err e = {0, ""};
	int rc = ps_transport_connect(&t, endpoint, opts, &e);
	if (rc != PS_OK)
		fail_msg("connect %s: %s (%s)", endpoint, ps_errname(rc),
			 e.msg);
	assert_non_null(t);
	return t;
}

static void recv_ok(ps_transport *t, ps_frame *f)
{
	int rc = ps_transport_recv(t, f, WAIT_MS);
	if (rc != PS_OK)
		fail_msg("recv: %s", ps_errname(rc));
}

static void fill_pattern(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 131u + seed * 7u + (i >> 8));
}

/* The full exchange on one endpoint: client sends envelope + tensor, the
 * server sees both frames and a peer id, replies to that peer with its
 * own envelope + tensor, and the client receives it. */
static void exchange_with(const char *endpoint,
			  const ps_transport_opts *srv_opts,
			  const ps_transport_opts *cli_opts)
{
	ps_transport *srv = listen_ok(endpoint, srv_opts);
	ps_transport *cli = connect_ok(ps_transport_endpoint(srv), cli_opts);
	ps_frame f;
	uint8_t head[37], tensor[4000], rhead[11], rtensor[64];

	fill_pattern(head, sizeof head, 1);
	fill_pattern(tensor, sizeof tensor, 2);
	fill_pattern(rhead, sizeof rhead, 3);
	fill_pattern(rtensor, sizeof rtensor, 4);

	assert_int_equal(ps_transport_send(cli, NULL, head, sizeof head,
					   tensor, sizeof tensor),
			 PS_OK);
	/* The send copied both buffers. */
	memset(head, 0, sizeof head);
	memset(tensor, 0, sizeof tensor);

	recv_ok(srv, &f);
	fill_pattern(head, sizeof head, 1);
	fill_pattern(tensor, sizeof tensor, 2);
	assert_int_equal(f.head_len, sizeof head);
	assert_memory_equal(f.head, head, sizeof head);
	assert_int_equal(f.tensor_len, sizeof tensor);
	assert_memory_equal(f.tensor, tensor, sizeof tensor);
	assert_true(f.from.len > 0);
	assert_true(f.from.len <= PS_PEER_ID_MAX);
	ps_peer peer = f.from;

	assert_int_equal(ps_transport_send(srv, &peer, rhead, sizeof rhead,
					   rtensor, sizeof rtensor),
			 PS_OK);
	recv_ok(cli, &f);
	assert_int_equal(f.head_len, sizeof rhead);
	assert_memory_equal(f.head, rhead, sizeof rhead);
	assert_int_equal(f.tensor_len, sizeof rtensor);
	assert_memory_equal(f.tensor, rtensor, sizeof rtensor);
	assert_int_equal(f.from.len, 0); /* the connecting side's peer */

	/* Nothing else is pending on either side. */
	assert_int_equal(ps_transport_recv(cli, &f, 0), PS_ETIMEDOUT);
	assert_int_equal(ps_transport_recv(srv, &f, 0), PS_ETIMEDOUT);

	ps_transport_destroy(&cli);
	ps_transport_destroy(&srv);
	assert_null(cli);
	assert_null(srv);
}

static void exchange(const char *endpoint)
{
	exchange_with(endpoint, &quick, &quick);
}

/* --- delivery ----------------------------------------------------------- */

static void test_transport_tcp_exchange(void **state)
{
	(void)state;
	exchange("tcp://127.0.0.1:*");
}

static void test_transport_ipc_exchange(void **state)
{
	(void)state;
	char ep[PATH_MAX];
	snprintf(ep, sizeof ep, "ipc://%s/server.sock", tmpdir);
	exchange(ep);
}

static void test_transport_message_without_tensor(void **state)
{
	(void)state;
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &quick);
	ps_transport *cli = connect_ok(ps_transport_endpoint(srv), &quick);
	ps_frame f;
	const char hello[] = "envelope only";

	assert_int_equal(ps_transport_send(cli, NULL, hello, sizeof hello,
					   NULL, 0),
			 PS_OK);
	recv_ok(srv, &f);
	assert_int_equal(f.head_len, sizeof hello);
	assert_memory_equal(f.head, hello, sizeof hello);
	assert_null(f.tensor);
	assert_int_equal(f.tensor_len, 0);

	ps_peer peer = f.from;
	assert_int_equal(ps_transport_send(srv, &peer, "ok", 2, NULL, 0),
			 PS_OK);
	recv_ok(cli, &f);
	assert_int_equal(f.head_len, 2);
	assert_memory_equal(f.head, "ok", 2);
	assert_null(f.tensor);
	assert_int_equal(f.tensor_len, 0);

	ps_transport_destroy(&cli);
	ps_transport_destroy(&srv);
}

/* Several messages in flight arrive in order, each with its own frames,
 * and a large tensor arrives intact. */
static void test_transport_many_and_large(void **state)
{
	(void)state;
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &quick);
	ps_transport *cli = connect_ok(ps_transport_endpoint(srv), &quick);
	ps_frame f;
	enum { N = 50, BIG = 4 << 20 };
	uint8_t *big = malloc(BIG);
	assert_non_null(big);
	fill_pattern(big, BIG, 9);

	for (uint32_t i = 0; i < N; i++)
		assert_int_equal(ps_transport_send(cli, NULL, &i, sizeof i,
						   big, i % 2 ? 4 * i : 0),
				 PS_OK);
	assert_int_equal(ps_transport_send(cli, NULL, "big", 3, big, BIG),
			 PS_OK);
	for (uint32_t i = 0; i < N; i++) {
		recv_ok(srv, &f);
		uint32_t got;
		assert_int_equal(f.head_len, sizeof got);
		memcpy(&got, f.head, sizeof got);
		assert_int_equal(got, i);
		assert_int_equal(f.tensor_len, i % 2 ? 4 * i : 0);
		if (f.tensor_len)
			assert_memory_equal(f.tensor, big, f.tensor_len);
	}
	recv_ok(srv, &f);
	assert_int_equal(f.head_len, 3);
	assert_int_equal(f.tensor_len, BIG);
	assert_memory_equal(f.tensor, big, BIG);

	free(big);
	ps_transport_destroy(&cli);
	ps_transport_destroy(&srv);
}

/* Two clients: the server tells them apart and each reply reaches the
 * right one. */
static void test_transport_two_peers(void **state)
{
	(void)state;
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &quick);
	ps_transport *a = connect_ok(ps_transport_endpoint(srv), &quick);
	ps_transport *b = connect_ok(ps_transport_endpoint(srv), &quick);
	ps_frame f;
	ps_peer pa, pb;

	assert_int_equal(ps_transport_send(a, NULL, "A", 1, NULL, 0), PS_OK);
	recv_ok(srv, &f);
	assert_memory_equal(f.head, "A", 1);
	pa = f.from;
	assert_int_equal(ps_transport_send(b, NULL, "B", 1, NULL, 0), PS_OK);
	recv_ok(srv, &f);
	assert_memory_equal(f.head, "B", 1);
	pb = f.from;
	assert_false(ps_peer_equal(&pa, &pb));
	assert_true(ps_peer_equal(&pa, &pa));

	assert_int_equal(ps_transport_send(srv, &pb, "to-b", 4, NULL, 0),
			 PS_OK);
	assert_int_equal(ps_transport_send(srv, &pa, "to-a", 4, NULL, 0),
			 PS_OK);
	recv_ok(a, &f);
	assert_int_equal(f.head_len, 4);
	assert_memory_equal(f.head, "to-a", 4);
	recv_ok(b, &f);
	assert_int_equal(f.head_len, 4);
	assert_memory_equal(f.head, "to-b", 4);
	assert_int_equal(ps_transport_recv(a, &f, 0), PS_ETIMEDOUT);
	assert_int_equal(ps_transport_recv(b, &f, 0), PS_ETIMEDOUT);

	/* The same client keeps its id. */
	assert_int_equal(ps_transport_send(a, NULL, "A2", 2, NULL, 0), PS_OK);
	recv_ok(srv, &f);
	assert_true(ps_peer_equal(&f.from, &pa));

	ps_transport_destroy(&a);
	ps_transport_destroy(&b);
	ps_transport_destroy(&srv);
}

static void test_transport_peer_equal(void **state)
{
	(void)state;
	ps_peer a = {3, {1, 2, 3}}, b = {3, {1, 2, 3}}, c = {3, {1, 2, 4}},
		d = {2, {1, 2}}, z1 = {0, {0}}, z2 = {0, {9}};
	/* Bytes past len do not count. */
	b.id[5] = 77;
	assert_true(ps_peer_equal(&a, &b));
	assert_false(ps_peer_equal(&a, &c));
	assert_false(ps_peer_equal(&a, &d));
	assert_false(ps_peer_equal(&d, &a));
	assert_true(ps_peer_equal(&z1, &z2));
}

/* --- endpoints ------------------------------------------------------------ */

static void test_transport_endpoint_resolves_wildcard(void **state)
{
	(void)state;
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &quick);
	const char *ep = ps_transport_endpoint(srv);
	const char *prefix = "tcp://127.0.0.1:";
	assert_non_null(ep);
	assert_int_equal(strncmp(ep, prefix, strlen(prefix)), 0);
	assert_null(strchr(ep, '*'));
	char *end = NULL;
	long port = strtol(ep + strlen(prefix), &end, 10);
	assert_true(end != ep + strlen(prefix));
	assert_int_equal(*end, '\0');
	assert_true(port > 0 && port < 65536);

	/* The connecting side reports what it was given. */
	ps_transport *cli = connect_ok(ep, &quick);
	assert_string_equal(ps_transport_endpoint(cli), ep);

	/* Two wildcard listeners get two different ports. */
	ps_transport *srv2 = listen_ok("tcp://127.0.0.1:*", &quick);
	assert_string_not_equal(ps_transport_endpoint(srv2), ep);

	char ipc[PATH_MAX];
	snprintf(ipc, sizeof ipc, "ipc://%s/ep.sock", tmpdir);
	ps_transport *srv3 = listen_ok(ipc, &quick);
	assert_string_equal(ps_transport_endpoint(srv3), ipc);

	ps_transport_destroy(&cli);
	ps_transport_destroy(&srv);
	ps_transport_destroy(&srv2);
	ps_transport_destroy(&srv3);
}

static void test_transport_address_in_use(void **state)
{
	(void)state;
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &quick);
	ps_transport *again = (ps_transport *)&again;
	ps_err e = {0, ""};
	char ep[256];
	snprintf(ep, sizeof ep, "%s", ps_transport_endpoint(srv));

	assert_int_equal(ps_transport_listen(&again, ep, &quick, &e),
			 PS_EADDRINUSE);
	assert_null(again);
	assert_int_equal(e.code, PS_EADDRINUSE);
	assert_non_null(strstr(e.msg, ep));

	/* Once the first is gone the address is free again. */
	ps_transport_destroy(&srv);
	again = listen_ok(ep, &quick);
	ps_transport_destroy(&again);
}

static void test_transport_bad_endpoint(void **state)
{
	(void)state;
	const char *bad[] = {
		"",
		"localhost:5555",
		"udp://127.0.0.1:5555",
		"http://127.0.0.1:80",
		"tcp://",
		"tcp://127.0.0.1",
		"tcp://127.0.0.1:notaport",
		"tcp://127.0.0.1:99999", /* libzmq would bind port 34463 */
		"tcp://127.0.0.1:65536",
		"tcp://127.0.0.1:-1",
		"tcp://127.0.0.1:5555x",
		"tcp://127.0.0.1:",
		"tcp:/127.0.0.1:5555",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		ps_transport *t = (ps_transport *)&t;
		ps_err e = {0, ""};
		int rc = ps_transport_listen(&t, bad[i], &quick, &e);
		if (rc != PS_EINVAL)
			fail_msg("listen '%s': %s (%s)", bad[i],
				 ps_errname(rc), e.msg);
		assert_null(t);
		assert_int_equal(e.code, PS_EINVAL);
		assert_non_null(strstr(e.msg, bad[i]));

		t = (ps_transport *)&t;
		e.code = 0;
		rc = ps_transport_connect(&t, bad[i], &quick, &e);
		if (rc != PS_EINVAL)
			fail_msg("connect '%s': %s (%s)", bad[i],
				 ps_errname(rc), e.msg);
		assert_null(t);
		assert_int_equal(e.code, PS_EINVAL);
		assert_non_null(strstr(e.msg, bad[i]));
	}
	/* The scheme check applies to both sides. */
	ps_transport *t = NULL;
	assert_int_equal(ps_transport_connect(&t, "udp://127.0.0.1:1",
					      &quick, NULL),
			 PS_EINVAL);
	assert_int_equal(ps_transport_connect(&t, NULL, &quick, NULL),
			 PS_EINVAL);
	assert_int_equal(ps_transport_listen(&t, NULL, &quick, NULL),
			 PS_EINVAL);
	assert_null(t);
}

/* Binding an address this host does not have is refused, not a crash. */
static void test_transport_listen_foreign_address(void **state)
{
	(void)state;
	ps_transport *t = (ps_transport *)&t;
	ps_err e = {0, ""};
	int rc = ps_transport_listen(&t, "tcp://192.0.2.1:*", &quick, &e);
	assert_true(rc == PS_EINVAL || rc == PS_ETRANSPORT);
	assert_null(t);
	assert_non_null(strstr(e.msg, "192.0.2.1"));
}

/* --- receiving ------------------------------------------------------------ */

static void test_transport_recv_timeout(void **state)
{
	(void)state;
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &quick);
	ps_transport *cli = connect_ok(ps_transport_endpoint(srv), &quick);
	ps_frame f;

	memset(&f, 0x55, sizeof f);
	double t0 = now_ms();
	assert_int_equal(ps_transport_recv(srv, &f, 100), PS_ETIMEDOUT);
	double dt = now_ms() - t0;
	assert_true(dt >= 90);
	assert_true(dt < 3000);
	assert_null(f.head);
	assert_int_equal(f.head_len, 0);

	assert_int_equal(ps_transport_recv(srv, &f, 0), PS_ETIMEDOUT);
	t0 = now_ms();
	assert_int_equal(ps_transport_recv(cli, &f, 50), PS_ETIMEDOUT);
	assert_true(now_ms() - t0 >= 40);

	ps_transport_destroy(&cli);
	ps_transport_destroy(&srv);
}

/* What late_send() sends, and to whom, after how long. */
typedef struct late {
	ps_transport *from;
	ps_peer to; /* NULL peer: from is a client */
	int to_peer;
	int delay_ms;
	int rc;
} late;

static void *late_send(void *arg)
{
	late *l = arg;
	const struct timespec nap = {l->delay_ms / 1000,
				     (long)(l->delay_ms % 1000) * 1000000L};
	nanosleep(&nap, NULL);
	l->rc = ps_transport_send(l->from, l->to_peer ? &l->to : NULL, "late",
				  4, NULL, 0);
	return NULL;
}

/* A receive that has to wait is woken by the message, on either side:
 * the client's waits in slices between looks at its monitor, the
 * server's in one. Each socket is used by one thread only. */
static void test_transport_recv_wakes_on_message(void **state)
{
	(void)state;
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &quick);
	ps_transport *cli = connect_ok(ps_transport_endpoint(srv), &quick);
	ps_frame f;
	pthread_t th;
	late l = {0};
	double t0;

	assert_int_equal(ps_transport_send(cli, NULL, "hi", 2, NULL, 0), PS_OK);
	recv_ok(srv, &f);
	l.from = srv;
	l.to = f.from;
	l.to_peer = 1;
	l.delay_ms = 300;
	assert_int_equal(pthread_create(&th, NULL, late_send, &l), 0);
	t0 = now_ms();
	assert_int_equal(ps_transport_recv(cli, &f, 10000), PS_OK);
	assert_true(now_ms() - t0 >= 250);
	assert_true(now_ms() - t0 < 5000);
	assert_int_equal(f.head_len, 4);
	assert_memory_equal(f.head, "late", 4);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(l.rc, PS_OK);

	/* The other way: the server blocks without a limit. */
	memset(&l, 0, sizeof l);
	l.from = cli;
	l.delay_ms = 300;
	assert_int_equal(pthread_create(&th, NULL, late_send, &l), 0);
	t0 = now_ms();
	assert_int_equal(ps_transport_recv(srv, &f, -1), PS_OK);
	assert_true(now_ms() - t0 >= 250);
	assert_int_equal(f.head_len, 4);
	assert_memory_equal(f.head, "late", 4);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(l.rc, PS_OK);

	ps_transport_destroy(&cli);
	ps_transport_destroy(&srv);
}

/* A received frame stays valid until the next recv on the transport. */
static void test_transport_frame_valid_until_next_recv(void **state)
{
	(void)state;
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &quick);
	ps_transport *cli = connect_ok(ps_transport_endpoint(srv), &quick);
	ps_frame f1, f2;
	uint8_t t1[256], t2[256];
	fill_pattern(t1, sizeof t1, 5);
	fill_pattern(t2, sizeof t2, 6);

	assert_int_equal(ps_transport_send(cli, NULL, "one", 3, t1, sizeof t1),
			 PS_OK);
	assert_int_equal(ps_transport_send(cli, NULL, "two", 3, t2, sizeof t2),
			 PS_OK);
	recv_ok(srv, &f1);
	/* Using f1 after other work on other transports is fine. */
	assert_int_equal(ps_transport_recv(cli, &f2, 0), PS_ETIMEDOUT);
	assert_memory_equal(f1.head, "one", 3);
	assert_memory_equal(f1.tensor, t1, sizeof t1);
	recv_ok(srv, &f2);
	assert_memory_equal(f2.head, "two", 3);
	assert_memory_equal(f2.tensor, t2, sizeof t2);

	ps_transport_destroy(&cli);
	ps_transport_destroy(&srv);
}

/* A frame over max_message is dropped by ZeroMQ, which disconnects the
 * sender: the server's recv times out. The server keeps working, and the
 * client's socket reconnects by itself. */
static void test_transport_max_message_drops_oversize(void **state)
{
	(void)state;
	const ps_transport_opts limited = {1024, 0, NULL};
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &limited);
	ps_transport *cli = connect_ok(ps_transport_endpoint(srv), &quick);
	ps_frame f;
	uint8_t big[4096];
	fill_pattern(big, sizeof big, 8);

	/* Under the limit: delivered. */
	assert_int_equal(ps_transport_send(cli, NULL, "small", 5, big, 1000),
			 PS_OK);
	recv_ok(srv, &f);
	assert_int_equal(f.tensor_len, 1000);
	/* The limit is per frame: two frames of 1000 bytes pass. */
	assert_int_equal(ps_transport_send(cli, NULL, big, 1000, big, 1000),
			 PS_OK);
	recv_ok(srv, &f);
	assert_int_equal(f.head_len, 1000);
	assert_int_equal(f.tensor_len, 1000);

	/* Over it: never delivered. */
	assert_int_equal(ps_transport_send(cli, NULL, "huge", 4, big,
					   sizeof big),
			 PS_OK);
	assert_int_equal(ps_transport_recv(srv, &f, 500), PS_ETIMEDOUT);

	/* The server still serves, this client and a new one. */
	ps_transport *cli2 = connect_ok(ps_transport_endpoint(srv), &quick);
	assert_int_equal(ps_transport_send(cli2, NULL, "fresh", 5, big, 8),
			 PS_OK);
	recv_ok(srv, &f);
	assert_int_equal(f.head_len, 5);
	assert_memory_equal(f.head, "fresh", 5);
	assert_int_equal(f.tensor_len, 8);

	assert_int_equal(ps_transport_send(cli, NULL, "again", 5, NULL, 0),
			 PS_OK);
	recv_ok(srv, &f);
	assert_int_equal(f.head_len, 5);
	assert_memory_equal(f.head, "again", 5);

	ps_transport_destroy(&cli);
	ps_transport_destroy(&cli2);
	ps_transport_destroy(&srv);
}

/* --- sending errors ------------------------------------------------------- */

static void test_transport_send_unknown_peer(void **state)
{
	(void)state;
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &quick);
	ps_peer nobody = {6, {'n', 'o', 'b', 'o', 'd', 'y'}};
	assert_int_equal(ps_transport_send(srv, &nobody, "x", 1, NULL, 0),
			 PS_EUNKNOWN_WORKER);
	assert_int_equal(ps_transport_send(srv, &nobody, "x", 1, "tensor", 6),
			 PS_EUNKNOWN_WORKER);
	/* The listening side must say to whom. */
	assert_int_equal(ps_transport_send(srv, NULL, "x", 1, NULL, 0),
			 PS_EINVAL);

	/* A failed send leaves the socket usable. */
	ps_transport *cli = connect_ok(ps_transport_endpoint(srv), &quick);
	ps_frame f;
	assert_int_equal(ps_transport_send(cli, NULL, "hi", 2, NULL, 0), PS_OK);
	recv_ok(srv, &f);
	ps_peer peer = f.from;
	assert_int_equal(ps_transport_send(srv, &nobody, "x", 1, NULL, 0),
			 PS_EUNKNOWN_WORKER);
	assert_int_equal(ps_transport_send(srv, &peer, "yo", 2, NULL, 0),
			 PS_OK);
	recv_ok(cli, &f);
	assert_int_equal(f.head_len, 2);
	assert_memory_equal(f.head, "yo", 2);

	ps_transport_destroy(&cli);
	ps_transport_destroy(&srv);
}

/* A peer that has gone away becomes unknown once ZeroMQ notices. */
static void test_transport_send_to_departed_peer(void **state)
{
	(void)state;
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &quick);
	ps_transport *cli = connect_ok(ps_transport_endpoint(srv), &quick);
	ps_frame f;
	assert_int_equal(ps_transport_send(cli, NULL, "bye", 3, NULL, 0),
			 PS_OK);
	recv_ok(srv, &f);
	ps_peer peer = f.from;
	ps_transport_destroy(&cli);

	int rc = PS_OK;
	double t0 = now_ms();
	while (now_ms() - t0 < WAIT_MS) {
		rc = ps_transport_send(srv, &peer, "late", 4, NULL, 0);
		if (rc != PS_OK)
			break;
		usleep(10000);
	}
	assert_int_equal(rc, PS_EUNKNOWN_WORKER);
	ps_transport_destroy(&srv);
}

/* The listening side never blocks on a peer that does not read: once its
 * queue is full a send reports PS_ETIMEDOUT at once. */
static void test_transport_send_queue_full(void **state)
{
	(void)state;
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &quick);
	ps_transport *cli = connect_ok(ps_transport_endpoint(srv), &quick);
	ps_frame f;
	enum { CHUNK = 64 << 10, LIMIT = 20000 };
	uint8_t *chunk = calloc(1, CHUNK);
	assert_non_null(chunk);

	assert_int_equal(ps_transport_send(cli, NULL, "hi", 2, NULL, 0), PS_OK);
	recv_ok(srv, &f);
	ps_peer peer = f.from;

	int rc = PS_OK, sent = 0;
	double t0 = now_ms();
	while (sent < LIMIT && now_ms() - t0 < 20000) {
		rc = ps_transport_send(srv, &peer, "w", 1, chunk, CHUNK);
		if (rc != PS_OK)
			break;
		sent++;
	}
	assert_int_equal(rc, PS_ETIMEDOUT);
	assert_true(sent > 0);

	/* The client can still drain what was queued. */
	recv_ok(cli, &f);
	assert_int_equal(f.tensor_len, CHUNK);

	free(chunk);
	ps_transport_destroy(&cli);
	ps_transport_destroy(&srv);
}


/* --- CURVE ---------------------------------------------------------------- */

/* A key pair from the ZeroMQ guide's examples. */
static const char guide_public[] = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
static const char guide_secret[] = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6";

typedef struct keypair {
	uint8_t pub[PS_CURVE_KEY_LEN], sec[PS_CURVE_KEY_LEN];
} keypair;

static keypair new_keypair(void)
{
	keypair k;
	ps_err e = {0, ""};
	int rc = ps_transport_curve_keypair(k.pub, k.sec, &e);
	if (rc != PS_OK)
		fail_msg("keypair: %s", e.msg);
	return k;
}

/* A server with key pair `server` letting in `client`'s public key,
 * and the matching options for a client. */
typedef struct curve_setup {
	ps_curve_keyset *authorized;
	ps_transport_curve srv, cli;
	ps_transport_opts srv_opts, cli_opts;
} curve_setup;

static void curve_init(curve_setup *c, const keypair *server,
		       const keypair *client)
{
	memset(c, 0, sizeof *c);
	assert_int_equal(ps_curve_keyset_new(&c->authorized), PS_OK);
	assert_int_equal(ps_curve_keyset_add(c->authorized, client->pub),
			 PS_OK);
	memcpy(c->srv.secret_key, server->sec, PS_CURVE_KEY_LEN);
	c->srv.authorized = c->authorized;
	memcpy(c->cli.secret_key, client->sec, PS_CURVE_KEY_LEN);
	memcpy(c->cli.server_key, server->pub, PS_CURVE_KEY_LEN);
	c->srv_opts = quick;
	c->srv_opts.curve = &c->srv;
	c->cli_opts = quick;
	c->cli_opts.curve = &c->cli;
}

/* Serve the server (ZAP runs inside its recv) while waiting for the
 * client's receive to fail; returns the client's last status. */
static int client_outcome(ps_transport *srv, ps_transport *cli)
{
	ps_frame f;
	int rc = PS_ETIMEDOUT;
	double t0 = now_ms();
	while (rc == PS_ETIMEDOUT && now_ms() - t0 < WAIT_MS) {
		int srv_rc = ps_transport_recv(srv, &f, 20);
		if (srv_rc == PS_OK)
			fail_msg("the server received a message from a "
				 "client it should have refused");
		rc = ps_transport_recv(cli, &f, 0);
	}
	return rc;
}

static void test_transport_curve_keys(void **state)
{
	(void)state;
	uint8_t sec[PS_CURVE_KEY_LEN], pub[PS_CURVE_KEY_LEN];
	uint8_t derived[PS_CURVE_KEY_LEN];
	char z85[PS_CURVE_Z85_LEN + 1];
	ps_err e = {0, ""};

	assert_int_equal(ps_curve_z85_decode(sec, guide_secret,
					     PS_CURVE_Z85_LEN),
			 PS_OK);
	assert_int_equal(ps_transport_curve_public(derived, sec, &e), PS_OK);
	ps_curve_z85_encode(z85, derived);
	assert_string_equal(z85, guide_public);

	keypair a = new_keypair(), b = new_keypair();
	assert_memory_not_equal(a.pub, b.pub, PS_CURVE_KEY_LEN);
	assert_memory_not_equal(a.sec, b.sec, PS_CURVE_KEY_LEN);
	assert_int_equal(ps_transport_curve_public(pub, a.sec, &e), PS_OK);
	assert_memory_equal(pub, a.pub, PS_CURVE_KEY_LEN);
}

/* An authorized client exchanges messages as without CURVE, over tcp
 * and ipc, and nothing is counted as refused. */
static void test_transport_curve_exchange(void **state)
{
	(void)state;
	keypair server = new_keypair(), client = new_keypair();
	curve_setup c;
	char ep[PATH_MAX];

	curve_init(&c, &server, &client);
	exchange_with("tcp://127.0.0.1:*", &c.srv_opts, &c.cli_opts);
	snprintf(ep, sizeof ep, "ipc://%s/curve.sock", tmpdir);
	exchange_with(ep, &c.srv_opts, &c.cli_opts);

	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &c.srv_opts);
	ps_transport *cli = connect_ok(ps_transport_endpoint(srv), &c.cli_opts);
	ps_transport_refusals st;
	ps_frame f;
	assert_int_equal(ps_transport_send(cli, NULL, "x", 1, NULL, 0), PS_OK);
	recv_ok(srv, &f);
	ps_transport_get_refusals(srv, &st);
	assert_int_equal(st.unauthorized, 0);
	assert_int_equal(st.handshake_failed, 0);
	ps_transport_destroy(&cli);
	ps_transport_destroy(&srv);
	ps_curve_keyset_destroy(&c.authorized);
}

/* A client whose key is not in the set is refused by the ZAP handler:
 * its message never arrives, the server counts it once, and the client
 * learns why (PS_EAUTH, and again on every later receive). */
static void test_transport_curve_refuses_unknown_key(void **state)
{
	(void)state;
	keypair server = new_keypair(), client = new_keypair();
	keypair stranger = new_keypair();
	curve_setup c, s;
	ps_transport_refusals st;
	ps_frame f;

	curve_init(&c, &server, &client);
	curve_init(&s, &server, &stranger);
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &c.srv_opts);
	ps_transport *bad = connect_ok(ps_transport_endpoint(srv), &s.cli_opts);
	assert_int_equal(ps_transport_send(bad, NULL, "let me in", 9, NULL, 0),
			 PS_OK);
	assert_int_equal(client_outcome(srv, bad), PS_EAUTH);
	assert_int_equal(ps_transport_recv(bad, &f, 0), PS_EAUTH);
	ps_transport_get_refusals(srv, &st);
	assert_int_equal(st.unauthorized, 1);
	assert_int_equal(st.handshake_failed, 0);

	/* The authorized client is served all the while. */
	ps_transport *good = connect_ok(ps_transport_endpoint(srv), &c.cli_opts);
	assert_int_equal(ps_transport_send(good, NULL, "hi", 2, NULL, 0), PS_OK);
	recv_ok(srv, &f);
	assert_int_equal(f.head_len, 2);
	assert_memory_equal(f.head, "hi", 2);
	assert_int_equal(ps_transport_recv(srv, &f, 100), PS_ETIMEDOUT);

	/* A refused client's destroy does not linger. */
	double t0 = now_ms();
	ps_transport_destroy(&bad);
	assert_true(now_ms() - t0 < 500);
	ps_transport_destroy(&good);
	ps_transport_destroy(&srv);
	ps_curve_keyset_destroy(&c.authorized);
	ps_curve_keyset_destroy(&s.authorized);
}

/* A client without CURVE, and one with the wrong server key, fail their
 * handshakes: refused, counted, and told. */
static void test_transport_curve_refuses_plain_and_wrong_server(void **state)
{
	(void)state;
	keypair server = new_keypair(), client = new_keypair();
	keypair impostor = new_keypair();
	curve_setup c, w;
	ps_transport_refusals st;

	curve_init(&c, &server, &client);
	curve_init(&w, &impostor, &client); /* w.cli trusts the wrong key */
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &c.srv_opts);

	ps_transport *plain = connect_ok(ps_transport_endpoint(srv), &quick);
	assert_int_equal(ps_transport_send(plain, NULL, "x", 1, NULL, 0),
			 PS_OK);
	assert_int_equal(client_outcome(srv, plain), PS_EAUTH);
	ps_transport_destroy(&plain);
	ps_transport_get_refusals(srv, &st);
	assert_true(st.handshake_failed >= 1);
	assert_int_equal(st.unauthorized, 0);
	uint64_t before = st.handshake_failed;

	ps_transport *wrong = connect_ok(ps_transport_endpoint(srv), &w.cli_opts);
	assert_int_equal(ps_transport_send(wrong, NULL, "x", 1, NULL, 0),
			 PS_OK);
	assert_int_equal(client_outcome(srv, wrong), PS_EAUTH);
	ps_transport_destroy(&wrong);
	ps_transport_get_refusals(srv, &st);
	assert_true(st.handshake_failed > before);
	assert_int_equal(st.unauthorized, 0);

	ps_transport_destroy(&srv);
	ps_curve_keyset_destroy(&c.authorized);
	ps_curve_keyset_destroy(&w.authorized);
}

/* A CURVE client of a server without CURVE is told so at once; also
 * one that waits in a single long receive meanwhile, which blocks on the
 * data socket but reads the monitor in between: the refusal ends its
 * wait, rather than the wait's end telling it. */
static void test_transport_curve_client_of_plain_server(void **state)
{
	(void)state;
	keypair server = new_keypair(), client = new_keypair();
	curve_setup c;
	ps_transport_refusals st;
	ps_frame f;
	double t0;

	curve_init(&c, &server, &client);
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &quick);
	ps_transport *cli = connect_ok(ps_transport_endpoint(srv), &c.cli_opts);
	assert_int_equal(ps_transport_send(cli, NULL, "x", 1, NULL, 0), PS_OK);
	assert_int_equal(client_outcome(srv, cli), PS_EAUTH);
	/* A plain server keeps no such counters. */
	ps_transport_get_refusals(srv, &st);
	assert_int_equal(st.unauthorized + st.handshake_failed, 0);

	ps_transport *waiter = connect_ok(ps_transport_endpoint(srv),
					  &c.cli_opts);
	assert_int_equal(ps_transport_send(waiter, NULL, "x", 1, NULL, 0),
			 PS_OK);
	t0 = now_ms();
	assert_int_equal(ps_transport_recv(waiter, &f, 20000), PS_EAUTH);
	assert_true(now_ms() - t0 < 10000);
	assert_int_equal(ps_transport_recv(waiter, &f, 20000), PS_EAUTH);

	ps_transport_destroy(&waiter);
	ps_transport_destroy(&cli);
	ps_transport_destroy(&srv);
	ps_curve_keyset_destroy(&c.authorized);
}

static void test_transport_curve_bad_settings(void **state)
{
	(void)state;
	keypair server = new_keypair(), client = new_keypair();
	curve_setup c;
	ps_transport *t = NULL;
	ps_curve_keyset *empty = NULL;
	ps_err e = {0, ""};

	curve_init(&c, &server, &client);
	/* MPI endpoints take no keys, whether or not under mpirun. */
	assert_int_equal(ps_transport_listen(&t, "mpi://*", &c.srv_opts, &e),
			 PS_EINVAL);
	assert_null(t);
	assert_non_null(strstr(e.msg, "isolation"));
	assert_int_equal(ps_transport_connect(&t, "mpi://0", &c.cli_opts, &e),
			 PS_EINVAL);
	assert_null(t);
	/* A server that would let nobody in. */
	assert_int_equal(ps_curve_keyset_new(&empty), PS_OK);
	c.srv.authorized = empty;
	assert_int_equal(ps_transport_listen(&t, "tcp://127.0.0.1:*",
					     &c.srv_opts, &e),
			 PS_EINVAL);
	assert_null(t);
	c.srv.authorized = NULL;
	assert_int_equal(ps_transport_listen(&t, "tcp://127.0.0.1:*",
					     &c.srv_opts, &e),
			 PS_EINVAL);
	assert_null(t);
	ps_curve_keyset_destroy(&empty);
	ps_curve_keyset_destroy(&c.authorized);
}

/* --- lifetime ------------------------------------------------------------- */

/* glibc's own malloc, where mallinfo2() tells what it did (2.33 on);
 * AddressSanitizer replaces it. */
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
#define GLIBC_MALLINFO2 1
#endif
#if defined(__SANITIZE_ADDRESS__)
#undef GLIBC_MALLINFO2
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#undef GLIBC_MALLINFO2
#endif
#endif

static void test_transport_setup_process_keeps_large_buffers(void **state)
{
	(void)state;
#ifdef GLIBC_MALLINFO2
	enum { SIZE = 4 << 20 }; /* a 1M-float push */
	struct mallinfo2 before, during, after;
	unsigned char *p;

	ps_transport_setup_process();
	before = mallinfo2();
	p = malloc(SIZE);
	assert_non_null(p);
	memset(p, 1, SIZE);
	during = mallinfo2();
	free(p);
	after = mallinfo2();
	/* On the heap, not mapped on its own; kept once freed. */
	assert_int_equal(during.hblks, before.hblks);
	assert_true(after.fordblks >= SIZE);
#else
	skip();
#endif
}

static void test_transport_destroy_accepts_null(void **state)
{
	(void)state;
	ps_transport *t = NULL;
	ps_transport_destroy(NULL);
	ps_transport_destroy(&t);
	assert_null(t);
}

/* Default options (NULL) work; a connecting transport whose server never
 * appears is created, sends into its queue, and is destroyed promptly. */
static void test_transport_default_opts_and_absent_server(void **state)
{
	(void)state;
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", NULL);
	ps_transport *cli = connect_ok(ps_transport_endpoint(srv), NULL);
	ps_frame f;
	assert_int_equal(ps_transport_send(cli, NULL, "d", 1, NULL, 0), PS_OK);
	recv_ok(srv, &f);
	assert_memory_equal(f.head, "d", 1);
	ps_transport_destroy(&cli);
	ps_transport_destroy(&srv);

	char ep[PATH_MAX];
	snprintf(ep, sizeof ep, "ipc://%s/nobody-listens.sock", tmpdir);
	ps_transport *lonely = connect_ok(ep, &quick);
	assert_int_equal(ps_transport_send(lonely, NULL, "q", 1, NULL, 0),
			 PS_OK);
	assert_int_equal(ps_transport_recv(lonely, &f, 20), PS_ETIMEDOUT);
	double t0 = now_ms();
	ps_transport_destroy(&lonely);
	assert_true(now_ms() - t0 < 2000);
	assert_null(lonely);
}

/* --- counters and the emulated link delay --------------------------------- */

static void test_transport_counts_bytes_and_messages(void **state)
{
	(void)state;
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &quick);
	ps_transport *cli = connect_ok(ps_transport_endpoint(srv), &quick);
	ps_transport_counters before, c, all;
	uint8_t head[10] = {1}, tensor[100] = {2};
	ps_frame f;

	ps_transport_stats(NULL, &before);
	assert_int_equal(ps_transport_send(cli, NULL, head, sizeof head,
					   tensor, sizeof tensor),
			 PS_OK);
	recv_ok(srv, &f);
	assert_int_equal(ps_transport_send(srv, &f.from, head, 3, NULL, 0),
			 PS_OK);
	recv_ok(cli, &f);

	ps_transport_stats(cli, &c);
	assert_int_equal(c.msgs_out, 1);
	assert_int_equal(c.bytes_out, 110);
	assert_int_equal(c.msgs_in, 1);
	assert_int_equal(c.bytes_in, 3);
	assert_int_equal(c.delayed, 0);
	ps_transport_stats(srv, &c);
	assert_int_equal(c.bytes_in, 110);
	assert_int_equal(c.bytes_out, 3);
	/* The process totals cover both transports. */
	ps_transport_stats(NULL, &all);
	assert_int_equal(all.bytes_out - before.bytes_out, 113);
	assert_int_equal(all.bytes_in - before.bytes_in, 113);
	assert_int_equal(all.msgs_out - before.msgs_out, 2);

	ps_transport_destroy(&cli);
	ps_transport_destroy(&srv);
}

/* A held message is not on the wire until it is due and a call on its
 * transport flushes it; the send itself returns at once. */
static void test_transport_link_delay_holds_sends(void **state)
{
	(void)state;
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &quick);
	ps_transport *cli;
	ps_transport_counters c;
	uint8_t head[5] = {9, 8, 7, 6, 5};
	ps_frame f;
	double t0;

	ps_transport_set_default_delay(0.1);
	cli = connect_ok(ps_transport_endpoint(srv), &quick);
	ps_transport_set_default_delay(0);

	t0 = now_ms();
	assert_int_equal(ps_transport_send(cli, NULL, head, sizeof head, NULL,
					   0),
			 PS_OK);
	assert_true(now_ms() - t0 < 50);
	ps_transport_stats(cli, &c);
	assert_int_equal(c.delayed, 1);
	assert_int_equal(c.msgs_out, 0);
	/* Nothing calls the client meanwhile: the message stays held. */
	assert_int_equal(ps_transport_recv(srv, &f, 150), PS_ETIMEDOUT);
	ps_transport_stats(cli, &c);
	assert_int_equal(c.msgs_out, 0);

	/* A wait on the client sends it when due and keeps its own timeout
	 * (the message is overdue: it leaves at once). */
	t0 = now_ms();
	assert_int_equal(ps_transport_recv(cli, &f, 60), PS_ETIMEDOUT);
	assert_true(now_ms() - t0 >= 55);
	ps_transport_stats(cli, &c);
	assert_int_equal(c.msgs_out, 1);
	assert_int_equal(c.bytes_out, sizeof head);
	recv_ok(srv, &f);
	assert_int_equal(f.head_len, sizeof head);
	assert_memory_equal(f.head, head, sizeof head);

	ps_transport_destroy(&cli);
	ps_transport_destroy(&srv);
}

/* A wait on the holding side sends the held message while it waits: the
 * listening side's reply (to a peer) is on the wire when the wait ends,
 * although nothing arrived to wake it. */
static void test_transport_link_delay_recv_wakes_to_send(void **state)
{
	(void)state;
	ps_transport *srv;
	ps_transport *cli = NULL;
	uint8_t head[3] = {1, 2, 3};
	ps_frame f;
	double t0;

	ps_transport_set_default_delay(0.05);
	srv = listen_ok("tcp://127.0.0.1:*", &quick);
	ps_transport_set_default_delay(0);
	cli = connect_ok(ps_transport_endpoint(srv), &quick);

	/* The server sends first, so it needs the client's peer id. */
	assert_int_equal(ps_transport_send(cli, NULL, head, 1, NULL, 0), PS_OK);
	recv_ok(srv, &f);
	ps_peer peer = f.from;
	t0 = now_ms();
	assert_int_equal(ps_transport_send(srv, &peer, head, sizeof head, NULL,
					   0),
			 PS_OK);
	/* The server's wait of 300 ms sends the held reply at 50 ms. */
	assert_int_equal(ps_transport_recv(srv, &f, 300), PS_ETIMEDOUT);
	assert_true(now_ms() - t0 >= 290);
	recv_ok(cli, &f);
	assert_int_equal(f.head_len, sizeof head);
	{
		ps_transport_counters c;
		ps_transport_stats(srv, &c);
		assert_int_equal(c.delayed, 1);
		assert_int_equal(c.msgs_out, 1);
		assert_int_equal(c.delayed_failed, 0);
	}
	ps_transport_destroy(&cli);
	ps_transport_destroy(&srv);
}

/* Held messages leave in the order they were sent, with their tensors. */
static void test_transport_link_delay_keeps_order(void **state)
{
	(void)state;
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &quick);
	ps_transport *cli;
	uint8_t tensor[256];
	ps_frame f;

	ps_transport_set_default_delay(0.02);
	cli = connect_ok(ps_transport_endpoint(srv), &quick);
	ps_transport_set_default_delay(0);
	for (unsigned i = 0; i < 20; i++) {
		uint8_t head = (uint8_t)i;
		fill_pattern(tensor, sizeof tensor, i);
		assert_int_equal(ps_transport_send(cli, NULL, &head, 1, tensor,
						   i % 2 ? sizeof tensor : 0),
				 PS_OK);
	}
	assert_int_equal(ps_transport_recv(cli, &f, 100), PS_ETIMEDOUT);
	for (unsigned i = 0; i < 20; i++) {
		recv_ok(srv, &f);
		assert_int_equal(f.head_len, 1);
		assert_int_equal(f.head[0], i);
		assert_int_equal(f.tensor_len, i % 2 ? sizeof tensor : 0);
		if (i % 2) {
			fill_pattern(tensor, sizeof tensor, i);
			assert_memory_equal(f.tensor, tensor, sizeof tensor);
		}
	}
	ps_transport_destroy(&cli);
	ps_transport_destroy(&srv);
}

/* --- tensor buffers ------------------------------------------------------ */

/* A fresh tensor buffer of n bytes on t, filled with pattern seed. */
static ps_tensor_buf *tensor_buf_ok(ps_transport *t, size_t n, unsigned seed)
{
	ps_tensor_buf *b = NULL;

	assert_int_equal(ps_transport_tensor_new(t, n, &b), PS_OK);
	assert_non_null(b);
	assert_int_equal(ps_tensor_buf_len(b), n);
	assert_int_equal((uintptr_t)ps_tensor_buf_data(b) % _Alignof(float), 0);
	fill_pattern(ps_tensor_buf_data(b), n, seed);
	return b;
}

/* Over ZeroMQ one buffer is sent twice and released before either send
 * has reached the peer: both arrive whole, since each send holds its own
 * reference (the sanitizer build would see a use after free or a leak).
 * Small buffers, which ZeroMQ keeps inside the message, too. */
static void tensor_buf_sent_twice(size_t n)
{
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &quick);
	ps_transport *cli = connect_ok(ps_transport_endpoint(srv), &quick);
	ps_tensor_buf *b = tensor_buf_ok(cli, n, 5);
	uint8_t *want = malloc(n), head[7] = {1, 2, 3, 4, 5, 6, 7};
	ps_transport_counters c;
	ps_frame f;

	assert_non_null(want);
	fill_pattern(want, n, 5);
	assert_int_equal(ps_transport_send_tensor(cli, NULL, head, sizeof head,
						  b),
			 PS_OK);
	head[0] = 9;
	assert_int_equal(ps_transport_send_tensor(cli, NULL, head, sizeof head,
						  b),
			 PS_OK);
	ps_tensor_buf_destroy(&b);
	assert_null(b);
	ps_tensor_buf_destroy(&b); /* NULL is fine */
	ps_tensor_buf_destroy(NULL);
	for (int i = 0; i < 2; i++) {
		recv_ok(srv, &f);
		assert_int_equal(f.head_len, sizeof head);
		assert_int_equal(f.head[0], i == 0 ? 1 : 9);
		assert_int_equal(f.tensor_len, n);
		assert_memory_equal(f.tensor, want, n);
	}
	ps_transport_stats(cli, &c);
	assert_int_equal(c.msgs_out, 2);
	assert_int_equal(c.bytes_out, 2 * (sizeof head + n));
	free(want);
	ps_transport_destroy(&cli);
	ps_transport_destroy(&srv);
}

static void test_transport_tensor_buf_sent_twice_large(void **state)
{
	(void)state;
	tensor_buf_sent_twice(4 << 20);
}

static void test_transport_tensor_buf_sent_twice_small(void **state)
{
	(void)state;
	tensor_buf_sent_twice(8);
}

/* The listening side can send one to a peer too, and a buffer of length
 * 0 sends no tensor frame. */
static void test_transport_tensor_buf_from_listener_and_empty(void **state)
{
	(void)state;
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &quick);
	ps_transport *cli = connect_ok(ps_transport_endpoint(srv), &quick);
	ps_tensor_buf *b = tensor_buf_ok(srv, 4000, 6), *empty = NULL;
	uint8_t head[3] = {3, 2, 1}, want[4000];
	ps_frame f;

	fill_pattern(want, sizeof want, 6);
	assert_int_equal(ps_transport_send(cli, NULL, head, sizeof head, NULL,
					   0),
			 PS_OK);
	recv_ok(srv, &f);
	ps_peer peer = f.from;
	assert_int_equal(ps_transport_send_tensor(srv, &peer, head,
						  sizeof head, b),
			 PS_OK);
	recv_ok(cli, &f);
	assert_int_equal(f.tensor_len, sizeof want);
	assert_memory_equal(f.tensor, want, sizeof want);
	/* Without a peer the listening side refuses, as ps_transport_send. */
	assert_int_equal(ps_transport_send_tensor(srv, NULL, head, sizeof head,
						  b),
			 PS_EINVAL);

	assert_int_equal(ps_transport_tensor_new(cli, 0, &empty), PS_OK);
	assert_int_equal(ps_transport_send_tensor(cli, NULL, head, sizeof head,
						  empty),
			 PS_OK);
	recv_ok(srv, &f);
	assert_int_equal(f.head_len, sizeof head);
	assert_int_equal(f.tensor_len, 0);
	assert_null(f.tensor);

	ps_tensor_buf_destroy(&empty);
	ps_tensor_buf_destroy(&b);
	ps_transport_destroy(&cli);
	ps_transport_destroy(&srv);
}

/* A backend without tensor buffers of its own (the fake here, MPI in
 * production) gets plain ones, sent through its send, which copies: the
 * bytes sent do not change when the buffer does afterwards. A buffer of
 * another backend is sent from a copy the same way. */
static void test_transport_tensor_buf_plain_fallback(void **state)
{
	(void)state;
	ps_transport *fake = NULL;
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &quick);
	ps_transport *cli = connect_ok(ps_transport_endpoint(srv), &quick);
	ps_tensor_buf *plain, *zmq_made;
	uint8_t head[2] = {4, 2}, want[100];
	ps_transport_counters c;
	const fake_sent *r;

	assert_int_equal(fake_transport_new(&fake), PS_OK);
	plain = tensor_buf_ok(fake, sizeof want, 7);
	zmq_made = tensor_buf_ok(cli, sizeof want, 8);
	assert_int_equal(ps_transport_send_tensor(fake, NULL, head, sizeof head,
						  plain),
			 PS_OK);
	memset(ps_tensor_buf_data(plain), 0, sizeof want);
	assert_int_equal(ps_transport_send_tensor(fake, NULL, head, sizeof head,
						  zmq_made),
			 PS_OK);
	assert_int_equal(fake_transport_count(fake), 2);
	r = fake_transport_sent(fake, 0);
	fill_pattern(want, sizeof want, 7);
	assert_int_equal(r->tensor_len, sizeof want);
	assert_memory_equal(r->tensor, want, sizeof want);
	r = fake_transport_sent(fake, 1);
	fill_pattern(want, sizeof want, 8);
	assert_memory_equal(r->tensor, want, sizeof want);
	ps_transport_stats(fake, &c);
	assert_int_equal(c.msgs_out, 2);
	assert_int_equal(c.bytes_out, 2 * (sizeof head + sizeof want));

	/* A refused send is reported and counts nothing. */
	fake_transport_fail_next(fake, 1, PS_ETIMEDOUT);
	assert_int_equal(ps_transport_send_tensor(fake, NULL, head, sizeof head,
						  plain),
			 PS_ETIMEDOUT);
	ps_transport_stats(fake, &c);
	assert_int_equal(c.msgs_out, 2);

	/* The buffers outlive the transports that made them. */
	ps_transport_destroy(&fake);
	ps_transport_destroy(&cli);
	ps_transport_destroy(&srv);
	ps_tensor_buf_destroy(&plain);
	ps_tensor_buf_destroy(&zmq_made);
}

/* A received tensor frame taken over ZeroMQ is the received bytes
 * themselves when they are aligned for floats (no copy), a copy when
 * not; either way the caller's to write and to keep past the next
 * receive. A second hold (share) keeps the bytes until both are
 * destroyed (the sanitizer build sees a double free or a leak). */
static void test_transport_take_tensor_zmq(void **state)
{
	(void)state;
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &quick);
	ps_transport *cli = connect_ok(ps_transport_endpoint(srv), &quick);
	size_t sizes[] = {4 << 20, 40000, 8};
	uint8_t head[3] = {9, 8, 7};

	for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
		size_t n = sizes[k];
		uint8_t *want = malloc(n);
		ps_tensor_buf *b = NULL, *again;
		const uint8_t *at;
		ps_frame f;

		assert_non_null(want);
		fill_pattern(want, n, (unsigned)k + 20);
		assert_int_equal(ps_transport_send(cli, NULL, head, sizeof head,
						   want, n),
				 PS_OK);
		assert_int_equal(ps_transport_send(cli, NULL, head, sizeof head,
						   NULL, 0),
				 PS_OK);
		recv_ok(srv, &f);
		at = f.tensor;
		assert_int_equal(ps_transport_take_tensor(srv, &f, &b), PS_OK);
		assert_non_null(b);
		assert_int_equal(ps_tensor_buf_len(b), n);
		assert_int_equal((uintptr_t)ps_tensor_buf_data(b) %
					 _Alignof(float),
				 0);
		if (n > 64 && (uintptr_t)at % _Alignof(float) == 0)
			assert_ptr_equal(ps_tensor_buf_data(b), at);
		/* The next receive does not touch the taken bytes. */
		recv_ok(srv, &f);
		assert_int_equal(f.tensor_len, 0);
		assert_memory_equal(ps_tensor_buf_data(b), want, n);
		((uint8_t *)ps_tensor_buf_data(b))[0] ^= 0xff;
		again = ps_tensor_buf_share(b);
		assert_ptr_equal(again, b);
		ps_tensor_buf_destroy(&b);
		assert_null(b);
		assert_int_equal(((uint8_t *)ps_tensor_buf_data(again))[0],
				 want[0] ^ 0xff);
		ps_tensor_buf_destroy(&again);
		free(want);
	}
	ps_transport_destroy(&cli);
	ps_transport_destroy(&srv);
}

/* A backend that cannot hand a frame over (the fake) gives a copy; a
 * frame without a tensor is refused. */
static void test_transport_take_tensor_copies_otherwise(void **state)
{
	(void)state;
	ps_transport *fake = NULL;
	uint8_t bytes[100];
	ps_frame f;
	ps_tensor_buf *b = NULL;

	assert_int_equal(fake_transport_new(&fake), PS_OK);
	fill_pattern(bytes, sizeof bytes, 3);
	memset(&f, 0, sizeof f);
	assert_int_equal(ps_transport_take_tensor(fake, &f, &b), PS_EINVAL);
	assert_null(b);
	f.tensor = bytes;
	f.tensor_len = sizeof bytes;
	assert_int_equal(ps_transport_take_tensor(fake, &f, &b), PS_OK);
	assert_ptr_not_equal(ps_tensor_buf_data(b), bytes);
	assert_int_equal(ps_tensor_buf_len(b), sizeof bytes);
	assert_memory_equal(ps_tensor_buf_data(b), bytes, sizeof bytes);
	ps_tensor_buf_destroy(&b);
	ps_transport_destroy(&fake);
}

/* With a link delay the held message is a copy: the buffer may go before
 * the message leaves. */
static void test_transport_tensor_buf_held_by_link_delay(void **state)
{
	(void)state;
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &quick);
	ps_transport *cli;
	ps_tensor_buf *b;
	uint8_t head[1] = {1}, want[5000];
	ps_transport_counters c;
	ps_frame f;

	ps_transport_set_default_delay(0.05);
	cli = connect_ok(ps_transport_endpoint(srv), &quick);
	ps_transport_set_default_delay(0);
	b = tensor_buf_ok(cli, sizeof want, 9);
	assert_int_equal(ps_transport_send_tensor(cli, NULL, head, sizeof head,
						  b),
			 PS_OK);
	ps_tensor_buf_destroy(&b);
	ps_transport_stats(cli, &c);
	assert_int_equal(c.delayed, 1);
	/* The wait on the client sends it once due. */
	assert_int_equal(ps_transport_recv(cli, &f, 100), PS_ETIMEDOUT);
	recv_ok(srv, &f);
	fill_pattern(want, sizeof want, 9);
	assert_int_equal(f.tensor_len, sizeof want);
	assert_memory_equal(f.tensor, want, sizeof want);
	ps_transport_destroy(&cli);
	ps_transport_destroy(&srv);
}

/* Destroy sends what is still held (at its due time) before closing. */
static void test_transport_link_delay_destroy_sends_held(void **state)
{
	(void)state;
	static const ps_transport_opts lingering = {0, 2000, NULL};
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &quick);
	ps_transport *cli;
	uint8_t head[4] = {4, 3, 2, 1};
	ps_frame f;
	double t0;

	ps_transport_set_default_delay(0.05);
	cli = connect_ok(ps_transport_endpoint(srv), &lingering);
	ps_transport_set_default_delay(0);
	assert_int_equal(ps_transport_send(cli, NULL, head, sizeof head, NULL,
					   0),
			 PS_OK);
	t0 = now_ms();
	ps_transport_destroy(&cli);
	assert_true(now_ms() - t0 >= 40);
	assert_null(cli);
	recv_ok(srv, &f);
	assert_memory_equal(f.head, head, sizeof head);
	ps_transport_destroy(&srv);
}

/* --- tensors through shared memory ------------------------------------- */

/* Segments of shared memory mapped in this process now: the sender's and
 * the receiver's mappings of each, both in this one test process. */
static int shm_mappings(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	int n = 0;

	assert_non_null(f);
	while (fgets(line, sizeof line, f))
		n += strstr(line, "memfd:pserver-tensor") != NULL;
	fclose(f);
	return n;
}

/* With shared memory on both sides, each told to lend to the other: a
 * large tensor goes as a segment (mapped by the sender and by the
 * receiver), a small one in the message; both arrive whole either way. A
 * reply's segment is the receiver's to take and write; a kept buffer sent
 * twice arrives twice and is copied when taken, since its sender still
 * reads it. */
static void shm_exchange(const char *endpoint)
{
	ps_transport *srv, *cli;
	size_t big = 64 << 10, small = 1000;
	uint8_t *want = malloc(big), head[5] = {5, 4, 3, 2, 1};
	ps_tensor_buf *b = NULL, *kept;
	ps_transport_counters c;
	ps_frame f;
	int before = shm_mappings();

	assert_non_null(want);
	ps_transport_set_default_shm(1);
	srv = listen_ok(endpoint, &quick);
	cli = connect_ok(ps_transport_endpoint(srv), &quick);
	ps_transport_set_default_shm(0);
	/* Both on this machine, as the protocol would find. */
	assert_string_not_equal(ps_transport_shared_host(srv), "");
	assert_true(ps_transport_shares_with(srv, ps_transport_shared_host(cli)));
	assert_true(ps_transport_shares_with(cli, ps_transport_shared_host(srv)));
	assert_false(ps_transport_shares_with(cli, "another-boot/pid:[1]"));
	assert_false(ps_transport_shares_with(cli, ""));
	assert_false(ps_transport_shares_with(cli, NULL));
	ps_transport_lend_to(cli, NULL, 1);

	fill_pattern(want, big, 31);
	assert_int_equal(ps_transport_send(cli, NULL, head, sizeof head, want,
					   big),
			 PS_OK);
	assert_int_equal(ps_transport_send(cli, NULL, head, sizeof head, want,
					   small),
			 PS_OK);
	memset(want, 0, big); /* the send copied the bytes */
	recv_ok(srv, &f);
	fill_pattern(want, big, 31);
	assert_int_equal(f.head_len, sizeof head);
	assert_memory_equal(f.head, head, sizeof head);
	assert_int_equal(f.tensor_len, big);
	assert_memory_equal(f.tensor, want, big);
	assert_int_equal(shm_mappings(), before + 2);
	recv_ok(srv, &f);
	assert_int_equal(f.tensor_len, small);
	assert_memory_equal(f.tensor, want, small);
	assert_int_equal(shm_mappings(), before + 2);
	ps_transport_stats(cli, &c);
	assert_int_equal(c.msgs_out, 2);
	assert_int_equal(c.shared_out, 1);
	assert_int_equal(c.bytes_out, 2 * sizeof head + big + small);
	ps_transport_stats(srv, &c);
	assert_int_equal(c.shared_in, 1);
	assert_int_equal(c.bytes_in, 2 * sizeof head + big + small);

	/* A reply, taken as it is and written. */
	ps_transport_lend_to(srv, &f.from, 1);
	fill_pattern(want, big, 32);
	assert_int_equal(ps_transport_send(srv, &f.from, head, sizeof head,
					   want, big),
			 PS_OK);
	recv_ok(cli, &f);
	assert_int_equal(ps_transport_take_tensor(cli, &f, &b), PS_OK);
	assert_ptr_equal(ps_tensor_buf_data(b), f.tensor);
	assert_memory_equal(ps_tensor_buf_data(b), want, big);
	memset(ps_tensor_buf_data(b), 0x77, big);
	ps_tensor_buf_destroy(&b);

	/* A buffer of the client's, sent twice and kept. */
	kept = tensor_buf_ok(cli, big, 33);
	fill_pattern(want, big, 33);
	for (int i = 0; i < 2; i++)
		assert_int_equal(ps_transport_send_tensor(cli, NULL, head,
							  sizeof head, kept),
				 PS_OK);
	for (int i = 0; i < 2; i++) {
		recv_ok(srv, &f);
		assert_int_equal(f.tensor_len, big);
		assert_memory_equal(f.tensor, want, big);
	}
	assert_int_equal(ps_transport_take_tensor(srv, &f, &b), PS_OK);
	assert_ptr_not_equal(ps_tensor_buf_data(b), f.tensor);
	assert_memory_equal(ps_tensor_buf_data(b), want, big);
	ps_tensor_buf_destroy(&b);

	/* Buffers outlive their transports. */
	ps_transport_destroy(&cli);
	ps_transport_destroy(&srv);
	memset(ps_tensor_buf_data(kept), 1, big);
	ps_tensor_buf_destroy(&kept);
	assert_int_equal(shm_mappings(), before);
	free(want);
}

static void test_transport_shm_tcp(void **state)
{
	(void)state;
	shm_exchange("tcp://127.0.0.1:*");
}

static void test_transport_shm_ipc(void **state)
{
	char ep[128];
	(void)state;
	snprintf(ep, sizeof ep, "ipc://%s/shm.sock", tmpdir);
	shm_exchange(ep);
}

/* Nothing is lent until the sender is told that its peer takes it, and
 * a receiver that does not take shared memory drops such a message
 * (PS_EPROTO) and goes on. */
static void test_transport_shm_refused(void **state)
{
	ps_transport *srv = listen_ok("tcp://127.0.0.1:*", &quick), *cli;
	size_t big = 20 << 10;
	uint8_t *bytes = calloc(1, big), head[1] = {1};
	ps_transport_counters c;
	ps_tensor_buf *b;
	ps_frame f;
	(void)state;

	assert_non_null(bytes);
	assert_string_equal(ps_transport_shared_host(srv), "");
	assert_false(ps_transport_shares_with(srv, ""));
	ps_transport_lend_to(srv, NULL, 1); /* no-op */
	ps_transport_set_default_shm(1);
	cli = connect_ok(ps_transport_endpoint(srv), &quick);
	ps_transport_set_default_shm(0);
	/* Not told yet: in the message, also from a tensor buffer. */
	assert_int_equal(ps_transport_send(cli, NULL, head, 1, bytes, big), PS_OK);
	b = tensor_buf_ok(cli, big, 3);
	assert_int_equal(ps_transport_send_tensor(cli, NULL, head, 1, b), PS_OK);
	for (int i = 0; i < 2; i++) {
		recv_ok(srv, &f);
		assert_int_equal(f.tensor_len, big);
	}
	ps_transport_stats(cli, &c);
	assert_int_equal(c.shared_out, 0);
	/* Told wrongly: dropped by the receiver. */
	ps_transport_lend_to(cli, NULL, 1);
	assert_int_equal(ps_transport_send(cli, NULL, head, 1, bytes, big), PS_OK);
	assert_int_equal(ps_transport_send(cli, NULL, head, 1, bytes, 100), PS_OK);
	assert_int_equal(ps_transport_recv(srv, &f, WAIT_MS), PS_EPROTO);
	assert_true(f.from.len > 0); /* whom to tell */
	recv_ok(srv, &f);
	assert_int_equal(f.tensor_len, 100);
	/* Told to stop: in the message again. */
	ps_transport_lend_to(cli, NULL, 0);
	assert_int_equal(ps_transport_send_tensor(cli, NULL, head, 1, b), PS_OK);
	recv_ok(srv, &f);
	assert_int_equal(f.tensor_len, big);
	ps_tensor_buf_destroy(&b);
	ps_transport_destroy(&cli);
	ps_transport_destroy(&srv);
	free(bytes);
}

/* A listening side lends to the peers it was told of, up to 256, and to
 * no other. */
static void test_transport_shm_lends_to_peers_told(void **state)
{
	ps_transport *srv, *cli[2];
	size_t big = 20 << 10;
	uint8_t *bytes = calloc(1, big), head[1] = {1};
	ps_transport_counters c;
	ps_peer peer[2], other;
	ps_frame f;
	(void)state;

	assert_non_null(bytes);
	ps_transport_set_default_shm(1);
	srv = listen_ok("tcp://127.0.0.1:*", &quick);
	for (int i = 0; i < 2; i++) {
		cli[i] = connect_ok(ps_transport_endpoint(srv), &quick);
		assert_int_equal(ps_transport_send(cli[i], NULL, head, 1, NULL, 0),
				 PS_OK);
		recv_ok(srv, &f);
		peer[i] = f.from;
	}
	ps_transport_set_default_shm(0);
	ps_transport_lend_to(srv, &peer[1], 1);
	/* 256 others told after it: peer 1 is forgotten, the oldest. */
	for (int k = 0; k < 2; k++) {
		for (int i = 0; i < 2; i++) {
			assert_int_equal(ps_transport_send(srv, &peer[i], head, 1,
							   bytes, big),
					 PS_OK);
			recv_ok(cli[i], &f);
			assert_int_equal(f.tensor_len, big);
		}
		ps_transport_stats(srv, &c);
		assert_int_equal(c.shared_out, 1);
		memset(&other, 0, sizeof other);
		other.len = 5;
		for (int j = 0; j < 256 && k == 0; j++) {
			other.id[0] = (uint8_t)j;
			other.id[1] = 0xEE;
			ps_transport_lend_to(srv, &other, 1);
		}
	}
	for (int i = 0; i < 2; i++)
		ps_transport_destroy(&cli[i]);
	ps_transport_destroy(&srv);
	free(bytes);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		/* First, while glibc's thresholds are still its defaults. */
		cmocka_unit_test(test_transport_setup_process_keeps_large_buffers),
		cmocka_unit_test(test_transport_tcp_exchange),
		cmocka_unit_test(test_transport_ipc_exchange),
		cmocka_unit_test(test_transport_message_without_tensor),
		cmocka_unit_test(test_transport_many_and_large),
		cmocka_unit_test(test_transport_two_peers),
		cmocka_unit_test(test_transport_peer_equal),
		cmocka_unit_test(test_transport_endpoint_resolves_wildcard),
		cmocka_unit_test(test_transport_address_in_use),
		cmocka_unit_test(test_transport_bad_endpoint),
		cmocka_unit_test(test_transport_listen_foreign_address),
		cmocka_unit_test(test_transport_recv_timeout),
		cmocka_unit_test(test_transport_recv_wakes_on_message),
		cmocka_unit_test(test_transport_frame_valid_until_next_recv),
		cmocka_unit_test(test_transport_max_message_drops_oversize),
		cmocka_unit_test(test_transport_send_unknown_peer),
		cmocka_unit_test(test_transport_send_to_departed_peer),
		cmocka_unit_test(test_transport_send_queue_full),
		cmocka_unit_test(test_transport_destroy_accepts_null),
		cmocka_unit_test(test_transport_default_opts_and_absent_server),
		cmocka_unit_test(test_transport_counts_bytes_and_messages),
		cmocka_unit_test(test_transport_link_delay_holds_sends),
		cmocka_unit_test(test_transport_link_delay_recv_wakes_to_send),
		cmocka_unit_test(test_transport_link_delay_keeps_order),
		cmocka_unit_test(test_transport_link_delay_destroy_sends_held),
		cmocka_unit_test(test_transport_tensor_buf_sent_twice_large),
		cmocka_unit_test(test_transport_tensor_buf_sent_twice_small),
		cmocka_unit_test(test_transport_tensor_buf_from_listener_and_empty),
		cmocka_unit_test(test_transport_tensor_buf_plain_fallback),
		cmocka_unit_test(test_transport_tensor_buf_held_by_link_delay),
		cmocka_unit_test(test_transport_take_tensor_zmq),
		cmocka_unit_test(test_transport_take_tensor_copies_otherwise),
		cmocka_unit_test(test_transport_shm_tcp),
		cmocka_unit_test(test_transport_shm_ipc),
		cmocka_unit_test(test_transport_shm_refused),
		cmocka_unit_test(test_transport_shm_lends_to_peers_told),
		cmocka_unit_test(test_transport_curve_keys),
		cmocka_unit_test(test_transport_curve_exchange),
		cmocka_unit_test(test_transport_curve_refuses_unknown_key),
		cmocka_unit_test(test_transport_curve_refuses_plain_and_wrong_server),
		cmocka_unit_test(test_transport_curve_client_of_plain_server),
		cmocka_unit_test(test_transport_curve_bad_settings),
	};
	/* Watchdog: a hang anywhere ends the run with SIGALRM. */
	alarm(120);
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
