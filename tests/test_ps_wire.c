/*
 * Unit tests for ps_wire: encode/decode round trips of every message kind,
 * every rejection decode documents (garbage, truncation, version, missing
 * body, bad ranges, bad role, over-long strings, oversize envelopes), the
 * tensor length and finiteness checks, and encoding errors. Envelopes that
 * ps_wire_encode() cannot produce are built by hand with the generated
 * protobuf-c API, which only this test (and ps_wire.c) include.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ps.pb-c.h"
#include "ps_error.h"
#include "ps_rng.h"
#include "ps_wire.h"

/* --- helpers ------------------------------------------------------------ */

static size_t encode_ok(const ps_msg *m, uint8_t *buf)
{
	size_t len = 0;
	assert_int_equal(ps_wire_encode(m, buf, PS_WIRE_HEAD_MAX, &len), PS_OK);
	assert_true(len > 0);
	assert_true(len <= PS_WIRE_HEAD_MAX);
	return len;
}

/* Encode m, decode it into out, expect PS_OK. */
static void roundtrip(const ps_msg *m, ps_msg *out)
{
	uint8_t buf[PS_WIRE_HEAD_MAX];
	ps_err e = {0, ""};
	size_t len = encode_ok(m, buf);
	int rc = ps_wire_decode(buf, len, out, &e);
	if (rc != PS_OK)
		fail_msg("decode of %s: %s (%s)", ps_msg_kind_name(m->kind),
			 ps_errname(rc), e.msg);
	assert_int_equal(out->protocol, PS_PROTOCOL_VERSION);
	assert_int_equal(out->kind, m->kind);
	assert_true(out->request_id == m->request_id);
	assert_int_equal(out->worker_id, m->worker_id);
}

/* Pack a hand-built envelope into buf[cap]. */
static size_t pack_env(const Ps__Envelope *env, uint8_t *buf, size_t cap)
{
	size_t need = ps__envelope__get_packed_size(env);
	assert_true(need <= cap);
	return ps__envelope__pack(env, buf);
}

/* Decode and expect code want; e.msg must mention `needle` if given. */
static void expect_decode(const uint8_t *buf, size_t len, int want,
			  const char *needle)
{
	ps_msg out;
	ps_err e = {0, ""};
	int rc = ps_wire_decode(buf, len, &out, &e);
	if (rc != want)
		fail_msg("decode gave %s (%s), expected %s", ps_errname(rc),
			 e.msg, ps_errname(want));
	if (want != PS_OK) {
		assert_int_equal(e.code, want);
		assert_true(strlen(e.msg) > 0);
		if (needle && !strstr(e.msg, needle))
			fail_msg("message '%s' lacks '%s'", e.msg, needle);
	}
}

static void fill_hello(ps_msg *m)
{
	ps_msg_init(m, PS_MSG_HELLO, 0x0123456789abcdefULL, 0);
	m->u.hello.role = PS_ROLE_EVALUATOR;
	m->u.hello.rank = 4000000000u;
	snprintf(m->u.hello.model.name, sizeof m->u.hello.model.name,
		 "softmax");
	snprintf(m->u.hello.model.hidden, sizeof m->u.hello.model.hidden,
		 "256,128");
	snprintf(m->u.hello.model.activation,
		 sizeof m->u.hello.model.activation, "tanh");
	m->u.hello.model.input_dim = 784;
	m->u.hello.model.output_dim = 10;
	m->u.hello.model.init_seed = 0xfeedfacecafebeefULL;
	snprintf(m->u.hello.shm_host, sizeof m->u.hello.shm_host,
		 "3f1c2e6a-0d5b-4f43-9a3e-7d2c1b0a9e8f/pid:[4026531836]");
}

static void fill_push(ps_msg *m)
{
	ps_msg_init(m, PS_MSG_PUSH, 77, 3);
	m->u.push.base_version = 1234567890123ULL;
	m->u.push.begin = 100;
	m->u.push.end = 7950;
	m->u.push.batch_size = 64;
	m->u.push.loss = 0.3141592f;
	m->u.push.clock = 99;
	m->u.push.seq = 1ULL << 40;
}

/* One message of every kind with non-trivial values. */
static int fill_kind(ps_msg *m, size_t i)
{
	switch (i) {
	case 0:
		fill_hello(m);
		return 1;
	case 1:
		ps_msg_init(m, PS_MSG_WELCOME, 5, 0);
		m->u.welcome.worker_id = 17;
		m->u.welcome.num_params = 7850;
		m->u.welcome.begin = 10;
		m->u.welcome.end = 7850;
		m->u.welcome.version = 31;
		m->u.welcome.num_workers = 8;
		m->u.welcome.shard = 2;
		m->u.welcome.num_shards = 3;
		snprintf(m->u.welcome.shm_host, sizeof m->u.welcome.shm_host,
			 "host-a");
		return 1;
	case 2:
		ps_msg_init(m, PS_MSG_PULL, 6, 9);
		m->u.pull.begin = 3;
		m->u.pull.end = 1ULL << 33;
		m->u.pull.clock = 12;
		m->u.pull.held_seq = 77;
		m->u.pull.held_version = 1ULL << 40;
		return 1;
	case 3:
		ps_msg_init(m, PS_MSG_WEIGHTS, 7, 9);
		m->u.weights.version = 424242;
		m->u.weights.begin = 0;
		m->u.weights.end = 7850;
		m->u.weights.training_done = 1;
		return 1;
	case 4:
		fill_push(m);
		return 1;
	case 5:
		ps_msg_init(m, PS_MSG_ACK, 8, 9);
		m->u.ack.version = 1000;
		m->u.ack.staleness = 3;
		m->u.ack.seq = 55;
		return 1;
	case 6:
		ps_msg_init(m, PS_MSG_ERROR, 9, 9);
		m->u.error.code = PS_WIRE_ERR_MODEL_MISMATCH;
		snprintf(m->u.error.message, sizeof m->u.error.message,
			 "model 'linear' differs from the server's 'softmax'");
		return 1;
	case 7:
		ps_msg_init(m, PS_MSG_BYE, 10, 9);
		m->u.bye.samples = 60000ULL * 5;
		m->u.bye.steps = 4690;
		return 1;
	default:
		return 0;
	}
}

/* --- round trips ---------------------------------------------------------- */

static void test_wire_roundtrip_hello(void **state)
{
	(void)state;
	ps_msg m, out;
	fill_hello(&m);
	roundtrip(&m, &out);
	assert_int_equal(out.u.hello.role, PS_ROLE_EVALUATOR);
	assert_int_equal(out.u.hello.rank, 4000000000u);
	assert_string_equal(out.u.hello.model.name, "softmax");
	assert_string_equal(out.u.hello.model.hidden, "256,128");
	assert_string_equal(out.u.hello.model.activation, "tanh");
	assert_int_equal(out.u.hello.model.input_dim, 784);
	assert_int_equal(out.u.hello.model.output_dim, 10);
	assert_true(out.u.hello.model.init_seed == 0xfeedfacecafebeefULL);
	assert_string_equal(out.u.hello.shm_host,
			    "3f1c2e6a-0d5b-4f43-9a3e-7d2c1b0a9e8f/pid:[4026531836]");

	/* A worker with empty hidden and activation strings. */
	m.u.hello.role = PS_ROLE_WORKER;
	m.u.hello.rank = 0;
	m.u.hello.model.hidden[0] = '\0';
	m.u.hello.model.activation[0] = '\0';
	roundtrip(&m, &out);
	assert_int_equal(out.u.hello.role, PS_ROLE_WORKER);
	assert_int_equal(out.u.hello.rank, 0);
	assert_string_equal(out.u.hello.model.hidden, "");
	assert_string_equal(out.u.hello.model.activation, "");
}

/* The activation travels as its own field: changing only it changes the
 * decoded spec, so a server can tell a ReLU network from a tanh one. */
static void test_wire_roundtrip_hello_activation(void **state)
{
	(void)state;
	ps_msg m, out;
	fill_hello(&m);
	/* NUL-padded, as the decoder writes them. */
	memset(m.u.hello.model.name, 0, sizeof m.u.hello.model.name);
	memset(m.u.hello.model.activation, 0,
	       sizeof m.u.hello.model.activation);
	strcpy(m.u.hello.model.name, "mlp");
	strcpy(m.u.hello.model.activation, "relu");
	roundtrip(&m, &out);
	assert_string_equal(out.u.hello.model.name, "mlp");
	assert_string_equal(out.u.hello.model.hidden, "256,128");
	assert_string_equal(out.u.hello.model.activation, "relu");
	/* Decoding leaves nothing behind the terminator. */
	assert_memory_equal(&out.u.hello.model, &m.u.hello.model,
			    sizeof m.u.hello.model);
}

static void test_wire_roundtrip_hello_longest_strings(void **state)
{
	(void)state;
	ps_msg m, out;
	fill_hello(&m);
	memset(m.u.hello.model.name, 'n', PS_MODEL_NAME_MAX - 1);
	m.u.hello.model.name[PS_MODEL_NAME_MAX - 1] = '\0';
	memset(m.u.hello.model.hidden, '9', PS_MODEL_HIDDEN_MAX - 1);
	m.u.hello.model.hidden[PS_MODEL_HIDDEN_MAX - 1] = '\0';
	memset(m.u.hello.model.activation, 'a', PS_MODEL_ACTIVATION_MAX - 1);
	m.u.hello.model.activation[PS_MODEL_ACTIVATION_MAX - 1] = '\0';
	roundtrip(&m, &out);
	assert_string_equal(out.u.hello.model.name, m.u.hello.model.name);
	assert_string_equal(out.u.hello.model.hidden, m.u.hello.model.hidden);
	assert_string_equal(out.u.hello.model.activation,
			    m.u.hello.model.activation);
}

static void test_wire_roundtrip_welcome(void **state)
{
	(void)state;
	ps_msg m, out;
	fill_kind(&m, 1);
	roundtrip(&m, &out);
	assert_int_equal(out.u.welcome.worker_id, 17);
	assert_int_equal(out.u.welcome.num_params, 7850);
	assert_int_equal(out.u.welcome.begin, 10);
	assert_int_equal(out.u.welcome.end, 7850);
	assert_int_equal(out.u.welcome.version, 31);
	assert_int_equal(out.u.welcome.num_workers, 8);
	assert_int_equal(out.u.welcome.shard, 2);
	assert_int_equal(out.u.welcome.num_shards, 3);
	assert_string_equal(out.u.welcome.shm_host, "host-a");
	m.u.welcome.shm_host[0] = '\0';
	roundtrip(&m, &out);
	assert_string_equal(out.u.welcome.shm_host, "");
}

static void test_wire_roundtrip_pull(void **state)
{
	(void)state;
	ps_msg m, out;
	fill_kind(&m, 2);
	roundtrip(&m, &out);
	assert_int_equal(out.u.pull.begin, 3);
	assert_true(out.u.pull.end == 1ULL << 33);
	assert_int_equal(out.u.pull.clock, 12);
	assert_int_equal(out.u.pull.held_seq, 77);
	assert_true(out.u.pull.held_version == 1ULL << 40);
}

static void test_wire_roundtrip_weights(void **state)
{
	(void)state;
	ps_msg m, out;
	fill_kind(&m, 3);
	roundtrip(&m, &out);
	assert_int_equal(out.u.weights.version, 424242);
	assert_int_equal(out.u.weights.begin, 0);
	assert_int_equal(out.u.weights.end, 7850);
	assert_int_equal(out.u.weights.training_done, 1);

	m.u.weights.training_done = 0;
	roundtrip(&m, &out);
	assert_int_equal(out.u.weights.training_done, 0);
	assert_int_equal(out.u.weights.version, 424242);

	/* Any non-zero value means done. */
	m.u.weights.training_done = 42;
	roundtrip(&m, &out);
	assert_int_equal(out.u.weights.training_done, 1);

	/* The announced rate arrives as the float it was, bit for bit. */
	assert_true(out.u.weights.sgd_lr == 0.0f);
	m.u.weights.sgd_lr = 0.1f;
	roundtrip(&m, &out);
	assert_memory_equal(&out.u.weights.sgd_lr, &m.u.weights.sgd_lr,
			    sizeof(float));

	assert_int_equal(out.u.weights.unchanged, 0);
	m.u.weights.unchanged = 1;
	roundtrip(&m, &out);
	assert_int_equal(out.u.weights.unchanged, 1);
}

static void test_wire_decode_weights_bad_sgd_lr(void **state)
{
	(void)state;
	uint8_t buf[PS_WIRE_HEAD_MAX];
	const float bad[] = {-0.5f, NAN, INFINITY, -INFINITY};
	ps_msg m;
	size_t len;

	/* A trainer adds its own push to its weights at this rate: nothing
	 * but a finite rate >= 0 is let through. */
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		ps_msg_init(&m, PS_MSG_WEIGHTS, 1, 1);
		m.u.weights.end = 4;
		m.u.weights.sgd_lr = bad[i];
		len = encode_ok(&m, buf);
		expect_decode(buf, len, PS_EPROTO, "sgd_lr");
	}
	m.u.weights.sgd_lr = 0.0f;
	len = encode_ok(&m, buf);
	expect_decode(buf, len, PS_OK, NULL);
}

static void test_wire_roundtrip_push(void **state)
{
	(void)state;
	ps_msg m, out;
	fill_push(&m);
	roundtrip(&m, &out);
	assert_true(out.u.push.base_version == 1234567890123ULL);
	assert_int_equal(out.u.push.begin, 100);
	assert_int_equal(out.u.push.end, 7950);
	assert_int_equal(out.u.push.batch_size, 64);
	assert_true(out.u.push.loss == 0.3141592f);
	assert_int_equal(out.u.push.clock, 99);
	assert_true(out.u.push.seq == 1ULL << 40);

	/* The loss is carried bit for bit, whatever its value. */
	const float losses[] = {0.0f, -1.5f, FLT_MIN, FLT_MAX, 1e-40f};
	for (size_t i = 0; i < sizeof losses / sizeof losses[0]; i++) {
		m.u.push.loss = losses[i];
		roundtrip(&m, &out);
		assert_memory_equal(&out.u.push.loss, &losses[i],
				    sizeof(float));
	}
}

static void test_wire_roundtrip_ack(void **state)
{
	(void)state;
	ps_msg m, out;
	fill_kind(&m, 5);
	roundtrip(&m, &out);
	assert_int_equal(out.u.ack.version, 1000);
	assert_int_equal(out.u.ack.staleness, 3);
	assert_int_equal(out.u.ack.seq, 55);
}

static void test_wire_roundtrip_error(void **state)
{
	(void)state;
	ps_msg m, out;
	fill_kind(&m, 6);
	roundtrip(&m, &out);
	assert_int_equal(out.u.error.code, PS_WIRE_ERR_MODEL_MISMATCH);
	assert_string_equal(out.u.error.message,
			    "model 'linear' differs from the server's 'softmax'");
}

static void test_wire_roundtrip_bye(void **state)
{
	(void)state;
	ps_msg m, out;
	fill_kind(&m, 7);
	roundtrip(&m, &out);
	assert_int_equal(out.u.bye.samples, 300000);
	assert_int_equal(out.u.bye.steps, 4690);
}

/* The server's answer says which pull of the trainer it holds back. */
static void test_wire_roundtrip_heartbeat(void **state)
{
	(void)state;
	ps_msg m, out;
	ps_msg_init(&m, PS_MSG_HEARTBEAT, 41, 2);
	m.u.heartbeat.version = 1234;
	m.u.heartbeat.pull_waiting = 39;
	roundtrip(&m, &out);
	assert_int_equal(out.kind, PS_MSG_HEARTBEAT);
	assert_int_equal(out.u.heartbeat.version, 1234);
	assert_int_equal(out.u.heartbeat.pull_waiting, 39);
}

static void test_wire_roundtrip_extreme_values(void **state)
{
	(void)state;
	ps_msg m, out;

	/* All-ones 64-bit fields survive the varint encoding. */
	ps_msg_init(&m, PS_MSG_ACK, UINT64_MAX, UINT32_MAX);
	m.u.ack.version = UINT64_MAX;
	m.u.ack.staleness = UINT64_MAX - 1;
	m.u.ack.seq = UINT64_MAX;
	roundtrip(&m, &out);
	assert_true(out.u.ack.version == UINT64_MAX);
	assert_true(out.u.ack.staleness == UINT64_MAX - 1);
	assert_true(out.u.ack.seq == UINT64_MAX);

	/* An empty range is a valid range. */
	ps_msg_init(&m, PS_MSG_PULL, 1, 1);
	m.u.pull.begin = m.u.pull.end = UINT64_MAX;
	roundtrip(&m, &out);
	assert_true(out.u.pull.begin == UINT64_MAX);
	assert_true(out.u.pull.end == UINT64_MAX);
}

static void test_wire_init_sets_version_and_zeroes(void **state)
{
	(void)state;
	ps_msg m;
	memset(&m, 0xab, sizeof m);
	ps_msg_init(&m, PS_MSG_BYE, 12, 34);
	assert_int_equal(m.protocol, PS_PROTOCOL_VERSION);
	assert_int_equal(m.kind, PS_MSG_BYE);
	assert_int_equal(m.request_id, 12);
	assert_int_equal(m.worker_id, 34);
	assert_int_equal(m.u.bye.samples, 0);
	assert_int_equal(m.u.bye.steps, 0);
	assert_int_equal(m.u.hello.model.name[0], 0);
}

static void test_wire_kind_names(void **state)
{
	(void)state;
	assert_string_equal(ps_msg_kind_name(PS_MSG_HELLO), "hello");
	assert_string_equal(ps_msg_kind_name(PS_MSG_WELCOME), "welcome");
	assert_string_equal(ps_msg_kind_name(PS_MSG_PULL), "pull");
	assert_string_equal(ps_msg_kind_name(PS_MSG_WEIGHTS), "weights");
	assert_string_equal(ps_msg_kind_name(PS_MSG_PUSH), "push");
	assert_string_equal(ps_msg_kind_name(PS_MSG_ACK), "ack");
	assert_string_equal(ps_msg_kind_name(PS_MSG_ERROR), "error");
	assert_string_equal(ps_msg_kind_name(PS_MSG_BYE), "bye");
	assert_string_equal(ps_msg_kind_name(PS_MSG_NONE), "none");
	assert_string_equal(ps_msg_kind_name((enum ps_msg_kind)99), "none");
}

static void test_wire_errcode_from(void **state)
{
	(void)state;
	assert_int_equal(ps_wire_errcode_from(PS_EPROTO),
			 PS_WIRE_ERR_MALFORMED);
	assert_int_equal(ps_wire_errcode_from(PS_EVERSION),
			 PS_WIRE_ERR_VERSION);
	assert_int_equal(ps_wire_errcode_from(PS_EUNKNOWN_WORKER),
			 PS_WIRE_ERR_UNKNOWN_WORKER);
	assert_int_equal(ps_wire_errcode_from(PS_ENONFINITE),
			 PS_WIRE_ERR_NONFINITE);
	assert_int_equal(ps_wire_errcode_from(PS_ESHUTDOWN),
			 PS_WIRE_ERR_SHUTTING_DOWN);
	assert_int_equal(ps_wire_errcode_from(PS_ENOMEM),
			 PS_WIRE_ERR_UNSPECIFIED);
	assert_int_equal(ps_wire_errcode_from(PS_OK), PS_WIRE_ERR_UNSPECIFIED);
}

/* The wire enums are defined to equal the proto's numbers. */
static void test_wire_enums_match_proto(void **state)
{
	(void)state;
	assert_int_equal(PS_MSG_HELLO, PS__ENVELOPE__BODY_HELLO);
	assert_int_equal(PS_MSG_WELCOME, PS__ENVELOPE__BODY_WELCOME);
	assert_int_equal(PS_MSG_PULL, PS__ENVELOPE__BODY_PULL);
	assert_int_equal(PS_MSG_WEIGHTS, PS__ENVELOPE__BODY_WEIGHTS);
	assert_int_equal(PS_MSG_PUSH, PS__ENVELOPE__BODY_PUSH);
	assert_int_equal(PS_MSG_ACK, PS__ENVELOPE__BODY_ACK);
	assert_int_equal(PS_MSG_ERROR, PS__ENVELOPE__BODY_ERROR);
	assert_int_equal(PS_MSG_BYE, PS__ENVELOPE__BODY_BYE);
	assert_int_equal(PS_ROLE_WORKER, PS__ROLE__ROLE_WORKER);
	assert_int_equal(PS_ROLE_EVALUATOR, PS__ROLE__ROLE_EVALUATOR);
	assert_int_equal(PS_WIRE_ERR_MALFORMED,
			 PS__ERROR_CODE__ERROR_MALFORMED);
	assert_int_equal(PS_WIRE_ERR_NONFINITE,
			 PS__ERROR_CODE__ERROR_NONFINITE);
	assert_int_equal(PS_WIRE_ERR_SHUTTING_DOWN,
			 PS__ERROR_CODE__ERROR_SHUTTING_DOWN);
}

/* --- encoding errors ------------------------------------------------------ */

static void test_wire_encode_too_small_buffer(void **state)
{
	(void)state;
	uint8_t buf[PS_WIRE_HEAD_MAX];
	ps_msg m;
	size_t need = 0, len = 12345;

	for (size_t i = 0; fill_kind(&m, i); i++) {
		need = encode_ok(&m, buf);
		len = 12345;
		assert_int_equal(ps_wire_encode(&m, buf, need - 1, &len),
				 PS_ERANGE);
		assert_int_equal(len, 12345); /* untouched */
		assert_int_equal(ps_wire_encode(&m, buf, 0, &len), PS_ERANGE);
		assert_int_equal(ps_wire_encode(&m, buf, need, &len), PS_OK);
		assert_int_equal(len, need);
	}
}

static void test_wire_encode_unknown_kind(void **state)
{
	(void)state;
	uint8_t buf[PS_WIRE_HEAD_MAX];
	ps_msg m;
	size_t len = 0;
	ps_msg_init(&m, PS_MSG_NONE, 1, 1);
	assert_int_equal(ps_wire_encode(&m, buf, sizeof buf, &len), PS_EINVAL);
	ps_msg_init(&m, (enum ps_msg_kind)19, 1, 1);
	assert_int_equal(ps_wire_encode(&m, buf, sizeof buf, &len), PS_EINVAL);
	ps_msg_init(&m, (enum ps_msg_kind)-1, 1, 1);
	assert_int_equal(ps_wire_encode(&m, buf, sizeof buf, &len), PS_EINVAL);
}

/* PS_WIRE_HEAD_MAX always suffices, even for the largest messages. */
static void test_wire_encode_largest_fits_head_max(void **state)
{
	(void)state;
	uint8_t buf[PS_WIRE_HEAD_MAX];
	ps_msg m, out;
	size_t len = 0;

	fill_hello(&m);
	m.request_id = UINT64_MAX;
	m.worker_id = UINT32_MAX;
	m.u.hello.rank = UINT32_MAX;
	m.u.hello.model.input_dim = m.u.hello.model.output_dim = UINT32_MAX;
	m.u.hello.model.init_seed = UINT64_MAX;
	/* Unterminated strings are cut at the array size, not overread. */
	memset(m.u.hello.model.name, 'a', sizeof m.u.hello.model.name);
	memset(m.u.hello.model.hidden, 'b', sizeof m.u.hello.model.hidden);
	memset(m.u.hello.model.activation, 'c',
	       sizeof m.u.hello.model.activation);
	assert_int_equal(ps_wire_encode(&m, buf, sizeof buf, &len), PS_OK);
	assert_int_equal(ps_wire_decode(buf, len, &out, NULL), PS_OK);
	assert_int_equal(strlen(out.u.hello.model.name), PS_MODEL_NAME_MAX - 1);
	assert_int_equal(strlen(out.u.hello.model.hidden),
			 PS_MODEL_HIDDEN_MAX - 1);
	assert_int_equal(strlen(out.u.hello.model.activation),
			 PS_MODEL_ACTIVATION_MAX - 1);

	ps_msg_init(&m, PS_MSG_ERROR, UINT64_MAX, UINT32_MAX);
	m.u.error.code = (enum ps_wire_errcode)INT32_MAX;
	memset(m.u.error.message, 'z', sizeof m.u.error.message);
	assert_int_equal(ps_wire_encode(&m, buf, sizeof buf, &len), PS_OK);
	assert_int_equal(ps_wire_decode(buf, len, &out, NULL), PS_OK);
	assert_int_equal(strlen(out.u.error.message), PS_WIRE_ERRMSG_MAX - 1);

	ps_msg_init(&m, PS_MSG_WELCOME, UINT64_MAX, UINT32_MAX);
	m.u.welcome.worker_id = UINT32_MAX;
	m.u.welcome.num_params = m.u.welcome.begin = m.u.welcome.end =
		m.u.welcome.version = UINT64_MAX;
	m.u.welcome.num_workers = m.u.welcome.shard = m.u.welcome.num_shards =
		UINT32_MAX;
	assert_int_equal(ps_wire_encode(&m, buf, sizeof buf, &len), PS_OK);
	roundtrip(&m, &out);
}

/* --- decoding rejections -------------------------------------------------- */

static void test_wire_decode_garbage(void **state)
{
	(void)state;
	uint8_t ff[64];
	memset(ff, 0xff, sizeof ff);
	expect_decode(ff, sizeof ff, PS_EPROTO, "Envelope");

	const char text[] = "GET / HTTP/1.1\r\nHost: example\r\n\r\n";
	expect_decode((const uint8_t *)text, sizeof text - 1, PS_EPROTO, NULL);

	/* A single byte: a tag without its value. */
	const uint8_t tag[] = {0x08};
	expect_decode(tag, sizeof tag, PS_EPROTO, NULL);

	/* Field number 0 is never valid. */
	const uint8_t zero[] = {0x00, 0x01};
	expect_decode(zero, sizeof zero, PS_EPROTO, NULL);

	/* A length-delimited body claiming more bytes than there are. */
	const uint8_t longlen[] = {0x08, 0x01, 0x72, 0x7f, 0x08};
	expect_decode(longlen, sizeof longlen, PS_EPROTO, NULL);
}

/* Random bytes must never crash the decoder, and nearly always fail. */
static void test_wire_decode_random_bytes_never_crash(void **state)
{
	(void)state;
	ps_rng r;
	uint8_t buf[256];
	int eproto = 0, trials = 20000;

	ps_rng_seed(&r, 2024);
	for (int t = 0; t < trials; t++) {
		size_t len = 1 + (size_t)ps_rng_below(&r, sizeof buf);
		for (size_t i = 0; i < len; i++)
			buf[i] = (uint8_t)ps_rng_next(&r);
		ps_msg out;
		ps_err e = {0, ""};
		int rc = ps_wire_decode(buf, len, &out, &e);
		if (rc != PS_OK && rc != PS_EPROTO && rc != PS_EVERSION)
			fail_msg("random bytes gave %s", ps_errname(rc));
		if (rc != PS_OK)
			assert_int_equal(e.code, rc);
		eproto += rc == PS_EPROTO;
	}
	assert_true(eproto > trials * 9 / 10);
}

/* Every single-byte corruption of every kind decodes to something sane. */
static void test_wire_decode_mutations_never_crash(void **state)
{
	(void)state;
	uint8_t buf[PS_WIRE_HEAD_MAX], mut[PS_WIRE_HEAD_MAX];
	ps_msg m, out;
	int failures = 0;

	for (size_t k = 0; fill_kind(&m, k); k++) {
		size_t len = encode_ok(&m, buf);
		for (size_t pos = 0; pos < len; pos++) {
			for (int bit = 0; bit < 8; bit++) {
				memcpy(mut, buf, len);
				mut[pos] ^= (uint8_t)(1u << bit);
				int rc = ps_wire_decode(mut, len, &out, NULL);
				if (rc != PS_OK && rc != PS_EPROTO &&
				    rc != PS_EVERSION)
					fail_msg("kind %zu pos %zu bit %d: %s",
						 k, pos, bit, ps_errname(rc));
				failures += rc != PS_OK;
			}
		}
	}
	assert_true(failures > 0);
}

/* A message cut anywhere fails. The body is the last field and always
 * length-delimited, so every non-empty proper prefix is either missing the
 * body or cut inside it. The empty prefix is a valid (all-default)
 * Envelope of protocol 0, so it is a version mismatch. */
static void test_wire_decode_truncated(void **state)
{
	(void)state;
	uint8_t buf[PS_WIRE_HEAD_MAX];
	ps_msg m, out;
	ps_err e;

	fill_push(&m);
	size_t len = encode_ok(&m, buf);
	assert_true(len > 20);
	for (size_t cut = 1; cut < len; cut++) {
		e.code = 0;
		int rc = ps_wire_decode(buf, cut, &out, &e);
		if (rc != PS_EPROTO)
			fail_msg("push cut to %zu of %zu bytes gave %s", cut,
				 len, ps_errname(rc));
		assert_int_equal(e.code, PS_EPROTO);
	}
	assert_int_equal(ps_wire_decode(buf, 0, &out, NULL), PS_EVERSION);
	assert_int_equal(ps_wire_decode(buf, len, &out, NULL), PS_OK);

	for (size_t k = 0; fill_kind(&m, k); k++) {
		len = encode_ok(&m, buf);
		for (size_t cut = 1; cut < len; cut++)
			assert_int_equal(ps_wire_decode(buf, cut, &out, NULL),
					 PS_EPROTO);
	}
}

static void test_wire_decode_wrong_version(void **state)
{
	(void)state;
	uint8_t buf[PS_WIRE_HEAD_MAX];
	ps_msg m, out;
	ps_err e = {0, ""};
	const uint32_t versions[] = {0, 2, 1000, UINT32_MAX};

	for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
		fill_push(&m);
		m.protocol = versions[i];
		m.request_id = 0xdeadbeef00000000ULL + i;
		m.worker_id = 41;
		size_t len = encode_ok(&m, buf);
		memset(&out, 0x5a, sizeof out);
		assert_int_equal(ps_wire_decode(buf, len, &out, &e),
				 PS_EVERSION);
		assert_int_equal(e.code, PS_EVERSION);
		assert_true(out.request_id == 0xdeadbeef00000000ULL + i);
		assert_int_equal(out.worker_id, 41);
		assert_int_equal(out.protocol, versions[i]);
		assert_non_null(strstr(e.msg, "expected 1"));
	}

	/* The version is checked before the body: a future protocol may
	 * use bodies this one does not know. */
	Ps__Envelope env = PS__ENVELOPE__INIT;
	env.protocol = 2;
	env.request_id = 99;
	size_t len = pack_env(&env, buf, sizeof buf);
	assert_int_equal(ps_wire_decode(buf, len, &out, NULL), PS_EVERSION);
	assert_int_equal(out.request_id, 99);
}

static void test_wire_decode_no_body(void **state)
{
	(void)state;
	uint8_t buf[PS_WIRE_HEAD_MAX];
	Ps__Envelope env = PS__ENVELOPE__INIT;
	env.protocol = PS_PROTOCOL_VERSION;
	env.request_id = 5;
	env.worker_id = 6;
	size_t len = pack_env(&env, buf, sizeof buf);
	expect_decode(buf, len, PS_EPROTO, "body");

	/* A body this protocol does not know (field 19, reserved for
	 * Barrier) is an unknown field: still no known body. */
	uint8_t future[PS_WIRE_HEAD_MAX];
	memcpy(future, buf, len);
	future[len] = (19 << 3) | 2; /* tag, two bytes as a varint */
	future[len + 1] = 0x01;
	future[len + 2] = 0x00; /* empty message */
	expect_decode(future, len + 3, PS_EPROTO, "body");
}

static void test_wire_decode_begin_after_end(void **state)
{
	(void)state;
	uint8_t buf[PS_WIRE_HEAD_MAX];
	ps_msg m;
	size_t len;

	ps_msg_init(&m, PS_MSG_PULL, 1, 1);
	m.u.pull.begin = 10;
	m.u.pull.end = 9;
	len = encode_ok(&m, buf);
	expect_decode(buf, len, PS_EPROTO, "pull: begin 10 > end 9");

	fill_push(&m);
	m.u.push.begin = UINT64_MAX;
	m.u.push.end = 0;
	len = encode_ok(&m, buf);
	expect_decode(buf, len, PS_EPROTO, "push: begin");

	ps_msg_init(&m, PS_MSG_WEIGHTS, 1, 1);
	m.u.weights.begin = 2;
	m.u.weights.end = 1;
	len = encode_ok(&m, buf);
	expect_decode(buf, len, PS_EPROTO, "weights: begin 2 > end 1");

	fill_kind(&m, 1);
	m.u.welcome.begin = 8000;
	m.u.welcome.end = 7000;
	len = encode_ok(&m, buf);
	expect_decode(buf, len, PS_EPROTO, "welcome: begin");
}

static void test_wire_decode_welcome_beyond_model(void **state)
{
	(void)state;
	uint8_t buf[PS_WIRE_HEAD_MAX];
	ps_msg m;
	fill_kind(&m, 1);
	m.u.welcome.end = m.u.welcome.num_params + 1;
	size_t len = encode_ok(&m, buf);
	expect_decode(buf, len, PS_EPROTO, "beyond");
	m.u.welcome.end = m.u.welcome.num_params;
	len = encode_ok(&m, buf);
	expect_decode(buf, len, PS_OK, NULL);
}

static void test_wire_decode_push_batch_size_zero(void **state)
{
	(void)state;
	uint8_t buf[PS_WIRE_HEAD_MAX];
	ps_msg m;
	fill_push(&m);
	m.u.push.batch_size = 0;
	size_t len = encode_ok(&m, buf);
	expect_decode(buf, len, PS_EPROTO, "batch_size");
	m.u.push.batch_size = 1;
	len = encode_ok(&m, buf);
	expect_decode(buf, len, PS_OK, NULL);
}

static void test_wire_decode_hello_bad_role(void **state)
{
	(void)state;
	uint8_t buf[PS_WIRE_HEAD_MAX];
	ps_msg m;
	const int roles[] = {PS_ROLE_UNSPECIFIED, 3, 99, -1};
	for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++) {
		fill_hello(&m);
		m.u.hello.role = (enum ps_role)roles[i];
		size_t len = encode_ok(&m, buf);
		expect_decode(buf, len, PS_EPROTO, "role");
	}
}

static void test_wire_decode_hello_without_model(void **state)
{
	(void)state;
	uint8_t buf[PS_WIRE_HEAD_MAX];
	Ps__Envelope env = PS__ENVELOPE__INIT;
	Ps__Hello hello = PS__HELLO__INIT;
	hello.role = PS__ROLE__ROLE_WORKER;
	env.protocol = PS_PROTOCOL_VERSION;
	env.body_case = PS__ENVELOPE__BODY_HELLO;
	env.hello = &hello;
	size_t len = pack_env(&env, buf, sizeof buf);
	expect_decode(buf, len, PS_EPROTO, "model");
}

/* A hello envelope built by hand with the given strings. */
static size_t hand_hello(uint8_t *buf, char *name, char *hidden)
{
	Ps__Envelope env = PS__ENVELOPE__INIT;
	Ps__Hello hello = PS__HELLO__INIT;
	Ps__ModelSpec spec = PS__MODEL_SPEC__INIT;
	spec.name = name;
	spec.hidden = hidden;
	spec.input_dim = 4;
	spec.output_dim = 1;
	hello.role = PS__ROLE__ROLE_WORKER;
	hello.model = &spec;
	env.protocol = PS_PROTOCOL_VERSION;
	env.request_id = 3;
	env.body_case = PS__ENVELOPE__BODY_HELLO;
	env.hello = &hello;
	return pack_env(&env, buf, PS_WIRE_HEAD_MAX);
}

static void test_wire_decode_overlong_model_name(void **state)
{
	(void)state;
	uint8_t buf[PS_WIRE_HEAD_MAX];
	char name[PS_MODEL_NAME_MAX + 100], hidden[PS_MODEL_HIDDEN_MAX + 100];
	ps_msg out;

	/* Longest that fits: 31 characters and the NUL. */
	memset(name, 'x', PS_MODEL_NAME_MAX - 1);
	name[PS_MODEL_NAME_MAX - 1] = '\0';
	size_t len = hand_hello(buf, name, (char *)"");
	assert_int_equal(ps_wire_decode(buf, len, &out, NULL), PS_OK);
	assert_string_equal(out.u.hello.model.name, name);

	/* One more is refused, and so is much more. */
	memset(name, 'x', PS_MODEL_NAME_MAX);
	name[PS_MODEL_NAME_MAX] = '\0';
	len = hand_hello(buf, name, (char *)"");
	expect_decode(buf, len, PS_EPROTO, "model name");
	memset(name, 'y', sizeof name - 1);
	name[sizeof name - 1] = '\0';
	len = hand_hello(buf, name, (char *)"");
	expect_decode(buf, len, PS_EPROTO, "model name");

	/* The same for the hidden layer string. */
	memset(hidden, '1', PS_MODEL_HIDDEN_MAX - 1);
	hidden[PS_MODEL_HIDDEN_MAX - 1] = '\0';
	len = hand_hello(buf, (char *)"linear", hidden);
	assert_int_equal(ps_wire_decode(buf, len, &out, NULL), PS_OK);
	assert_string_equal(out.u.hello.model.hidden, hidden);
	memset(hidden, '1', PS_MODEL_HIDDEN_MAX);
	hidden[PS_MODEL_HIDDEN_MAX] = '\0';
	len = hand_hello(buf, (char *)"linear", hidden);
	expect_decode(buf, len, PS_EPROTO, "hidden");
}

/* An activation longer than the spec's array is refused like the other
 * strings: the decoder never cuts a model description. */
static void test_wire_decode_overlong_activation(void **state)
{
	(void)state;
	uint8_t buf[PS_WIRE_HEAD_MAX];
	char act[PS_MODEL_ACTIVATION_MAX + 1];
	Ps__Envelope env = PS__ENVELOPE__INIT;
	Ps__Hello hello = PS__HELLO__INIT;
	Ps__ModelSpec spec = PS__MODEL_SPEC__INIT;
	ps_msg out;
	size_t len;

	spec.name = (char *)"mlp";
	spec.hidden = (char *)"8";
	spec.activation = act;
	spec.input_dim = 4;
	spec.output_dim = 2;
	hello.role = PS__ROLE__ROLE_WORKER;
	hello.model = &spec;
	env.protocol = PS_PROTOCOL_VERSION;
	env.body_case = PS__ENVELOPE__BODY_HELLO;
	env.hello = &hello;

	memset(act, 'r', PS_MODEL_ACTIVATION_MAX - 1);
	act[PS_MODEL_ACTIVATION_MAX - 1] = '\0';
	len = pack_env(&env, buf, sizeof buf);
	assert_int_equal(ps_wire_decode(buf, len, &out, NULL), PS_OK);
	assert_string_equal(out.u.hello.model.activation, act);

	memset(act, 'r', PS_MODEL_ACTIVATION_MAX);
	act[PS_MODEL_ACTIVATION_MAX] = '\0';
	len = pack_env(&env, buf, sizeof buf);
	expect_decode(buf, len, PS_EPROTO, "activation");
}

/* So is a shared-memory host longer than its array, in a hello and in a
 * welcome. */
static void test_wire_decode_overlong_shm_host(void **state)
{
	(void)state;
	uint8_t buf[PS_WIRE_HEAD_MAX];
	char host[PS_WIRE_SHM_HOST_MAX + 1];
	Ps__Envelope env = PS__ENVELOPE__INIT;
	Ps__Hello hello = PS__HELLO__INIT;
	Ps__Welcome welcome = PS__WELCOME__INIT;
	Ps__ModelSpec spec = PS__MODEL_SPEC__INIT;
	ps_msg out;
	size_t len;

	spec.name = (char *)"linear";
	spec.input_dim = 4;
	spec.output_dim = 1;
	hello.role = PS__ROLE__ROLE_WORKER;
	hello.model = &spec;
	hello.shared_memory_host = host;
	env.protocol = PS_PROTOCOL_VERSION;
	env.body_case = PS__ENVELOPE__BODY_HELLO;
	env.hello = &hello;
	memset(host, 'h', PS_WIRE_SHM_HOST_MAX - 1);
	host[PS_WIRE_SHM_HOST_MAX - 1] = '\0';
	len = pack_env(&env, buf, sizeof buf);
	assert_int_equal(ps_wire_decode(buf, len, &out, NULL), PS_OK);
	assert_string_equal(out.u.hello.shm_host, host);
	memset(host, 'h', PS_WIRE_SHM_HOST_MAX);
	host[PS_WIRE_SHM_HOST_MAX] = '\0';
	len = pack_env(&env, buf, sizeof buf);
	expect_decode(buf, len, PS_EPROTO, "shared_memory_host");

	welcome.shared_memory_host = host;
	env.body_case = PS__ENVELOPE__BODY_WELCOME;
	env.welcome = &welcome;
	len = pack_env(&env, buf, sizeof buf);
	expect_decode(buf, len, PS_EPROTO, "shared_memory_host");
}

/* An over-long error text is cut, not refused. */
static void test_wire_decode_overlong_error_message_is_cut(void **state)
{
	(void)state;
	uint8_t buf[PS_WIRE_HEAD_MAX];
	char text[1000];
	Ps__Envelope env = PS__ENVELOPE__INIT;
	Ps__Error err = PS__ERROR__INIT;
	ps_msg out;

	memset(text, 'e', sizeof text - 1);
	text[sizeof text - 1] = '\0';
	err.code = PS__ERROR_CODE__ERROR_BAD_RANK;
	err.message = text;
	env.protocol = PS_PROTOCOL_VERSION;
	env.body_case = PS__ENVELOPE__BODY_ERROR;
	env.error = &err;
	size_t len = pack_env(&env, buf, sizeof buf);
	assert_int_equal(ps_wire_decode(buf, len, &out, NULL), PS_OK);
	assert_int_equal(out.kind, PS_MSG_ERROR);
	assert_int_equal(out.u.error.code, PS_WIRE_ERR_BAD_RANK);
	assert_int_equal(strlen(out.u.error.message), PS_WIRE_ERRMSG_MAX - 1);
}

/* A valid Error envelope of exactly len bytes, padded by its text. */
static size_t error_env_of_size(uint8_t *buf, size_t cap, size_t want)
{
	Ps__Envelope env = PS__ENVELOPE__INIT;
	Ps__Error err = PS__ERROR__INIT;
	char *text = malloc(want + 1);
	assert_non_null(text);
	env.protocol = PS_PROTOCOL_VERSION;
	env.body_case = PS__ENVELOPE__BODY_ERROR;
	env.error = &err;
	err.message = text;
	/* Grow the text until the envelope has the wanted size; varint
	 * length prefixes grow in steps, so search rather than compute. */
	for (size_t n = 0; n <= want; n++) {
		memset(text, 'p', n);
		text[n] = '\0';
		if (ps__envelope__get_packed_size(&env) == want) {
			assert_true(want <= cap);
			size_t len = ps__envelope__pack(&env, buf);
			free(text);
			return len;
		}
	}
	free(text);
	fail_msg("no error envelope of %zu bytes", want);
	return 0;
}

static void test_wire_decode_oversize_envelope(void **state)
{
	(void)state;
	size_t cap = 3 * PS_WIRE_HEAD_MAX;
	uint8_t *buf = malloc(cap);
	ps_msg out;
	assert_non_null(buf);

	size_t len = error_env_of_size(buf, cap, PS_WIRE_HEAD_MAX);
	assert_int_equal(len, PS_WIRE_HEAD_MAX);
	assert_int_equal(ps_wire_decode(buf, len, &out, NULL), PS_OK);

	len = error_env_of_size(buf, cap, PS_WIRE_HEAD_MAX + 1);
	expect_decode(buf, len, PS_EPROTO, "exceeds");

	len = error_env_of_size(buf, cap, 2 * PS_WIRE_HEAD_MAX + 7);
	expect_decode(buf, len, PS_EPROTO, "exceeds");
	free(buf);
}

/* A decode failure never leaves stale fields of a previous message. */
static void test_wire_decode_clears_output(void **state)
{
	(void)state;
	ps_msg out;
	const uint8_t junk[] = {0xff, 0xff};
	memset(&out, 0x77, sizeof out);
	assert_int_equal(ps_wire_decode(junk, sizeof junk, &out, NULL),
			 PS_EPROTO);
	assert_int_equal(out.kind, PS_MSG_NONE);
	assert_int_equal(out.request_id, 0);
	assert_int_equal(out.u.push.end, 0);
}

/* --- tensor checks -------------------------------------------------------- */

static void test_wire_check_tensor_lengths(void **state)
{
	(void)state;
	ps_msg m;
	ps_err e = {0, ""};

	fill_push(&m); /* [100, 7950): 7850 floats */
	assert_int_equal(ps_wire_check_tensor(&m, 7850 * 4, &e), PS_OK);
	assert_int_equal(ps_wire_check_tensor(&m, 7850 * 4 + 1, &e),
			 PS_EPROTO);
	assert_int_equal(ps_wire_check_tensor(&m, 7850 * 4 - 1, &e),
			 PS_EPROTO);
	assert_int_equal(ps_wire_check_tensor(&m, 7851 * 4, &e), PS_EPROTO);
	assert_int_equal(ps_wire_check_tensor(&m, 7849 * 4, &e), PS_EPROTO);
	assert_int_equal(ps_wire_check_tensor(&m, 7850, &e), PS_EPROTO);
	assert_int_equal(ps_wire_check_tensor(&m, 0, &e), PS_EPROTO);
	assert_int_equal(e.code, PS_EPROTO);
	/* The message gives both lengths. */
	assert_non_null(strstr(e.msg, "31400"));
	assert_non_null(strstr(e.msg, "got 0"));
	assert_int_equal(ps_wire_check_tensor(&m, 7850 * 4, NULL), PS_OK);
	assert_int_equal(ps_wire_check_tensor(&m, 3, NULL), PS_EPROTO);

	ps_msg_init(&m, PS_MSG_WEIGHTS, 1, 1);
	m.u.weights.begin = 5;
	m.u.weights.end = 6;
	assert_int_equal(ps_wire_check_tensor(&m, 4, &e), PS_OK);
	assert_int_equal(ps_wire_check_tensor(&m, 8, &e), PS_EPROTO);
	assert_int_equal(ps_wire_check_tensor(&m, 0, &e), PS_EPROTO);

	/* An empty range has an empty tensor. */
	m.u.weights.begin = m.u.weights.end = 5;
	assert_int_equal(ps_wire_check_tensor(&m, 0, &e), PS_OK);
	assert_int_equal(ps_wire_check_tensor(&m, 4, &e), PS_EPROTO);

	/* Weights marked unchanged carry none, whatever their range. */
	m.u.weights.end = 6;
	m.u.weights.unchanged = 1;
	assert_int_equal(ps_wire_check_tensor(&m, 0, &e), PS_OK);
	assert_int_equal(ps_wire_check_tensor(&m, 4, &e), PS_EPROTO);
	assert_non_null(strstr(e.msg, "unchanged"));
}

static void test_wire_check_tensor_on_other_kinds(void **state)
{
	(void)state;
	ps_msg m;
	ps_err e = {0, ""};
	const enum ps_msg_kind kinds[] = {PS_MSG_HELLO, PS_MSG_WELCOME,
					  PS_MSG_PULL,	PS_MSG_ACK,
					  PS_MSG_ERROR, PS_MSG_BYE};
	for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
		ps_msg_init(&m, kinds[i], 1, 1);
		assert_int_equal(ps_wire_check_tensor(&m, 0, &e), PS_OK);
		assert_int_equal(ps_wire_check_tensor(&m, 4, &e), PS_EPROTO);
		assert_non_null(strstr(e.msg, ps_msg_kind_name(kinds[i])));
	}
	/* A pull for [0, 10) still carries no tensor. */
	ps_msg_init(&m, PS_MSG_PULL, 1, 1);
	m.u.pull.end = 10;
	assert_int_equal(ps_wire_check_tensor(&m, 40, &e), PS_EPROTO);
	assert_non_null(strstr(e.msg, "pull"));
	assert_non_null(strstr(e.msg, "40"));
}

/* (end - begin) * 4 must not wrap into a small number that matches. */
static void test_wire_check_tensor_huge_range(void **state)
{
	(void)state;
	ps_msg m;
	ps_err e = {0, ""};

	fill_push(&m);
	m.u.push.begin = 0;
	m.u.push.end = UINT64_MAX;
	assert_int_equal(ps_wire_check_tensor(&m, 0, &e), PS_EPROTO);
	assert_int_equal(ps_wire_check_tensor(&m, SIZE_MAX, &e), PS_EPROTO);
	assert_int_equal(ps_wire_check_tensor(&m, SIZE_MAX - 3, &e), PS_EPROTO);

	/* 2^62 floats: * 4 is 2^64, which wraps to 0 in 64 bits. */
	m.u.push.end = 1ULL << 62;
	assert_int_equal(ps_wire_check_tensor(&m, 0, &e), PS_EPROTO);
	/* 2^62 + 1 floats: * 4 wraps to 4. */
	m.u.push.end = (1ULL << 62) + 1;
	assert_int_equal(ps_wire_check_tensor(&m, 4, &e), PS_EPROTO);
	/* 2^63 + 2: * 4 wraps to 8. */
	m.u.push.begin = 1;
	m.u.push.end = (1ULL << 63) + 3;
	assert_int_equal(ps_wire_check_tensor(&m, 8, &e), PS_EPROTO);

	/* Largest range that fits size_t: checked, no wrap, no match. */
	m.u.push.begin = 0;
	m.u.push.end = SIZE_MAX / 4;
	assert_int_equal(ps_wire_check_tensor(&m, (SIZE_MAX / 4) * 4, &e),
			 PS_OK);
	assert_int_equal(ps_wire_check_tensor(&m, SIZE_MAX, &e), PS_EPROTO);

	ps_msg_init(&m, PS_MSG_WEIGHTS, 1, 1);
	m.u.weights.end = UINT64_MAX;
	assert_int_equal(ps_wire_check_tensor(&m, 0, &e), PS_EPROTO);
}

static void test_wire_check_finite_ok(void **state)
{
	(void)state;
	const float v[] = {0.0f,    -0.0f,	 1.0f,	  -1.0f,   FLT_MAX,
			   -FLT_MAX, FLT_MIN, 1e-45f, -1e-45f, 3.4e38f};
	size_t bad = 12345;
	assert_int_equal(ps_wire_check_finite(v, sizeof v / sizeof v[0], &bad),
			 PS_OK);
	assert_int_equal(bad, 12345); /* untouched */
	assert_int_equal(ps_wire_check_finite(v, 0, &bad), PS_OK);
	assert_int_equal(ps_wire_check_finite(NULL, 0, NULL), PS_OK);
}

static void test_wire_check_finite_bad_index(void **state)
{
	(void)state;
	enum { N = 1031 }; /* not a multiple of any vector width */
	float *v = malloc(N * sizeof *v);
	const uint32_t bad_bits[] = {
		0x7fc00000u, /* quiet NaN */
		0xffc00000u, /* negative NaN */
		0x7f800001u, /* signalling NaN */
		0x7fffffffu, /* NaN, all mantissa bits */
		0x7f800000u, /* +Inf */
		0xff800000u, /* -Inf */
	};
	const size_t positions[] = {0, 1, 3, 4, 7, 8, 15, 16, 17, 512, N - 2,
				    N - 1};
	assert_non_null(v);

	for (size_t b = 0; b < sizeof bad_bits / sizeof bad_bits[0]; b++) {
		for (size_t p = 0; p < sizeof positions / sizeof positions[0];
		     p++) {
			for (size_t i = 0; i < N; i++)
				v[i] = (float)i * 0.5f - 100.0f;
			memcpy(&v[positions[p]], &bad_bits[b], 4);
			size_t bad = 99999;
			assert_int_equal(ps_wire_check_finite(v, N, &bad),
					 PS_ENONFINITE);
			assert_int_equal(bad, positions[p]);
			assert_int_equal(ps_wire_check_finite(v, N, NULL),
					 PS_ENONFINITE);
			/* Outside the checked count it does not matter. */
			assert_int_equal(ps_wire_check_finite(v, positions[p],
							      &bad),
					 PS_OK);
		}
	}

	/* Several bad values: the first one is reported. */
	for (size_t i = 0; i < N; i++)
		v[i] = 1.0f;
	v[900] = INFINITY;
	v[300] = NAN;
	v[301] = -INFINITY;
	size_t bad = 0;
	assert_int_equal(ps_wire_check_finite(v, N, &bad), PS_ENONFINITE);
	assert_int_equal(bad, 300);
	free(v);
}

static void test_wire_check_finite_misaligned(void **state)
{
	(void)state;
	enum { N = 37 };
	uint8_t raw[N * 4 + 8];
	for (size_t off = 1; off < 4; off++) {
		for (size_t i = 0; i < N; i++) {
			float f = (float)i + 0.25f;
			memcpy(raw + off + 4 * i, &f, 4);
		}
		size_t bad = 0;
		assert_int_equal(ps_wire_check_finite(raw + off, N, &bad),
				 PS_OK);
		float nan = NAN;
		memcpy(raw + off + 4 * 29, &nan, 4);
		assert_int_equal(ps_wire_check_finite(raw + off, N, &bad),
				 PS_ENONFINITE);
		assert_int_equal(bad, 29);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wire_roundtrip_hello),
		cmocka_unit_test(test_wire_roundtrip_hello_longest_strings),
		cmocka_unit_test(test_wire_roundtrip_hello_activation),
		cmocka_unit_test(test_wire_roundtrip_welcome),
		cmocka_unit_test(test_wire_roundtrip_pull),
		cmocka_unit_test(test_wire_roundtrip_weights),
		cmocka_unit_test(test_wire_decode_weights_bad_sgd_lr),
		cmocka_unit_test(test_wire_roundtrip_push),
		cmocka_unit_test(test_wire_roundtrip_ack),
		cmocka_unit_test(test_wire_roundtrip_error),
		cmocka_unit_test(test_wire_roundtrip_bye),
		cmocka_unit_test(test_wire_roundtrip_heartbeat),
		cmocka_unit_test(test_wire_roundtrip_extreme_values),
		cmocka_unit_test(test_wire_init_sets_version_and_zeroes),
		cmocka_unit_test(test_wire_kind_names),
		cmocka_unit_test(test_wire_errcode_from),
		cmocka_unit_test(test_wire_enums_match_proto),
		cmocka_unit_test(test_wire_encode_too_small_buffer),
		cmocka_unit_test(test_wire_encode_unknown_kind),
		cmocka_unit_test(test_wire_encode_largest_fits_head_max),
		cmocka_unit_test(test_wire_decode_garbage),
		cmocka_unit_test(test_wire_decode_random_bytes_never_crash),
		cmocka_unit_test(test_wire_decode_mutations_never_crash),
		cmocka_unit_test(test_wire_decode_truncated),
		cmocka_unit_test(test_wire_decode_wrong_version),
		cmocka_unit_test(test_wire_decode_no_body),
		cmocka_unit_test(test_wire_decode_begin_after_end),
		cmocka_unit_test(test_wire_decode_welcome_beyond_model),
		cmocka_unit_test(test_wire_decode_push_batch_size_zero),
		cmocka_unit_test(test_wire_decode_hello_bad_role),
		cmocka_unit_test(test_wire_decode_hello_without_model),
		cmocka_unit_test(test_wire_decode_overlong_model_name),
		cmocka_unit_test(test_wire_decode_overlong_activation),
		cmocka_unit_test(test_wire_decode_overlong_shm_host),
		cmocka_unit_test(test_wire_decode_overlong_error_message_is_cut),
		cmocka_unit_test(test_wire_decode_oversize_envelope),
		cmocka_unit_test(test_wire_decode_clears_output),
		cmocka_unit_test(test_wire_check_tensor_lengths),
		cmocka_unit_test(test_wire_check_tensor_on_other_kinds),
		cmocka_unit_test(test_wire_check_tensor_huge_range),
		cmocka_unit_test(test_wire_check_finite_ok),
		cmocka_unit_test(test_wire_check_finite_bad_index),
		cmocka_unit_test(test_wire_check_finite_misaligned),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
