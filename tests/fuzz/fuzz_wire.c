/*
 * fuzz_wire: libFuzzer harness for the wire module's decoder and
 * validators (common/ps_wire.c), the parsers every byte from the network
 * goes through first. Input: a 2-byte little-endian envelope length L,
 * then the envelope (L bytes, cut to what is there), then the tensor
 * frame (the rest). Besides not crashing, every message that decodes must
 * encode again and decode to the same record.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ps_model.h"
#include "ps_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A decoded hello names a model: its spec checks (name, hidden-layer
 * list, sizes) are the server's next parser of these bytes. */
static void check_spec(const ps_model_spec *spec)
{
	ps_model *m = NULL;
	ps_err e = {0};

	if (ps_model_new(&m, spec, &e) == PS_OK) {
		if (ps_model_num_params(m) == 0)
			abort();
		ps_model_destroy(&m);
	}
}

/* proto3 leaves a field that equals zero out of the encoding, and
 * protobuf-c tests floating-point fields with == 0, so -0.0 comes back as
 * +0.0. Both mean the same to pserver. Every float and double field of
 * proto/ps.proto is listed here. */
static void positive_zeros(ps_msg *m)
{
	if (m->kind == PS_MSG_WEIGHTS && m->u.weights.train_seconds == 0)
		m->u.weights.train_seconds = 0;
	if (m->kind == PS_MSG_WEIGHTS && m->u.weights.sgd_lr == 0)
		m->u.weights.sgd_lr = 0;
	if (m->kind == PS_MSG_WELCOME && m->u.welcome.heartbeat_seconds == 0)
		m->u.welcome.heartbeat_seconds = 0;
	if (m->kind == PS_MSG_PUSH && m->u.push.loss == 0)
		m->u.push.loss = 0;
}

/* decode(encode(m)) must give back m, byte for byte but for the sign of
 * zeros: decode zeroes the record first, so padding and unused union
 * members are zero on both sides. */
static void check_round_trip(const ps_msg *decoded)
{
	uint8_t buf[PS_WIRE_HEAD_MAX];
	size_t len = 0;
	ps_msg m, again;
	ps_err e = {0};

	memcpy(&m, decoded, sizeof m); /* padding included */
	if (ps_wire_encode(&m, buf, sizeof buf, &len) != PS_OK)
		abort();
	if (ps_wire_decode(buf, len, &again, &e) != PS_OK)
		abort();
	positive_zeros(&m);
	positive_zeros(&again);
	if (memcmp(&m, &again, sizeof m) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t hlen, tlen, bad = 0;
	uint8_t *head = NULL, *tensor = NULL;
	ps_msg m;
	ps_err e = {0};
	int rc;

	if (size < 2)
		return 0;
	hlen = (size_t)data[0] | (size_t)data[1] << 8;
	data += 2;
	size -= 2;
	if (hlen > size)
		hlen = size;
	tlen = size - hlen;
	/* Copies of exactly the frame sizes, so that reading one byte past
	 * either is caught, as it would be past a transport's buffer. */
	head = malloc(hlen ? hlen : 1);
	tensor = malloc(tlen ? tlen : 1);
	if (!head || !tensor)
		goto out;
	memcpy(head, data, hlen);
	memcpy(tensor, data + hlen, tlen);

	rc = ps_wire_decode(head, hlen, &m, &e);
	if (rc != PS_OK)
		goto out;
	check_round_trip(&m);
	if (m.kind == PS_MSG_HELLO)
		check_spec(&m.u.hello.model);
	if (ps_wire_check_tensor(&m, tlen, &e) != PS_OK)
		goto out;
	/* A tensor that fits its message is a whole number of floats. */
	if (tlen % 4 != 0)
		abort();
	rc = ps_wire_check_finite(tensor, tlen / 4, &bad);
	if (rc != PS_OK && rc != PS_ENONFINITE)
		abort();
	if (rc == PS_ENONFINITE && bad >= tlen / 4)
		abort();
out:
	free(head);
	free(tensor);
	return 0;
}
