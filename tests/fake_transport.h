/*
 * fake_transport: a ps_transport for unit tests, linked into every test
 * binary. It records each ps_transport_send() (peer, envelope, tensor) for
 * the test to inspect, never receives anything (recv is PS_ETIMEDOUT), and
 * can be told to refuse the next sends. Tests drive a server by calling
 * ps_server_handle() with frames they build themselves.
 */
#ifndef FAKE_TRANSPORT_H
#define FAKE_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "ps_transport.h"
#include "ps_wire.h"

/* One recorded send. Borrowed: valid until fake_transport_clear() or
 * ps_transport_destroy() on the transport that recorded it. */
typedef struct fake_sent {
	int has_peer;     /* 0 when sent with to == NULL (connecting side) */
	ps_peer to;       /* all zero when !has_peer */
	uint8_t *head;    /* copy of the envelope bytes */
	size_t head_len;
	uint8_t *tensor;  /* copy of the tensor frame; NULL when tensor_len 0 */
	size_t tensor_len;
} fake_sent;

/* A fake transport whose endpoint is "fake://". Errors: PS_ENOMEM.
 * Caller owns the result; release with ps_transport_destroy(). */
int fake_transport_new(ps_transport **out) PS_WUR;

/* Sends recorded so far (refused ones are not recorded). */
size_t fake_transport_count(const ps_transport *t);

/* The i-th recorded send; a test failure when i is out of range.
 * Borrowed, as fake_sent says. */
const fake_sent *fake_transport_sent(const ps_transport *t, size_t i);

/* ps_wire_decode() of the i-th recorded envelope. Returns its result. */
int fake_transport_decode(const ps_transport *t, size_t i, ps_msg *out) PS_WUR;

/* Forget every recorded send. */
void fake_transport_clear(ps_transport *t);

/* Refuse the next n sends with error code rc (a PS_E* code), recording
 * nothing; n == 0 makes every send succeed again. */
void fake_transport_fail_next(ps_transport *t, size_t n, int rc);

/* Call hook(arg, record) after each send is recorded, while the sender
 * is still inside ps_transport_send(): a test sees what the sender had
 * done by the time the message left (NULL: no hook). */
typedef void (*fake_send_hook)(void *arg, const fake_sent *r);
void fake_transport_on_send(ps_transport *t, fake_send_hook hook, void *arg);

/* Sends refused so far by fake_transport_fail_next(). */
size_t fake_transport_refused(const ps_transport *t);

/* What ps_transport_get_refusals() reports from now on (all 0 at first). */
void fake_transport_set_refusals(ps_transport *t, const ps_transport_refusals *st);

#endif
