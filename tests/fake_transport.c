/*
 * fake_transport: the recording ps_transport behind tests/fake_transport.h.
 * Records use plain malloc, not cmocka's test_malloc: cmocka checks for
 * leaks when a test body returns, before its teardown, and would free
 * (then teardown free again) what a fixture legitimately still holds.
 * Leaks of the fake show up under the sanitizer build instead.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "fake_transport.h"
#include "ps_transport_impl.h"

struct fake_transport {
	struct ps_transport base; /* first: ps_transport * points here */
	fake_sent *sent;
	size_t count, cap;
	size_t fail_left;
	int fail_rc;
	size_t refused;
	ps_transport_refusals stats;
	fake_send_hook hook;
	void *hook_arg;
};

static const struct ps_transport_ops fake_ops;

/* The fake behind t; a test failure if t is some other transport. */
static struct fake_transport *fake_of(const ps_transport *t)
{
	assert_non_null(t);
	assert_ptr_equal(t->ops, &fake_ops);
	return (struct fake_transport *)(uintptr_t)t;
}

static int fake_send(ps_transport *t, const ps_peer *to, const void *head,
		     size_t hlen, const void *tensor, size_t tlen)
{
	struct fake_transport *f = fake_of(t);
	fake_sent *r;

	if (f->fail_left > 0) {
		f->fail_left--;
		f->refused++;
		return f->fail_rc;
	}
	if (f->count == f->cap) {
		size_t cap = f->cap ? 2 * f->cap : 16;
		fake_sent *grown = realloc(f->sent, cap * sizeof *grown);
		if (!grown)
			return PS_ENOMEM;
		f->sent = grown;
		f->cap = cap;
	}
	r = &f->sent[f->count];
	memset(r, 0, sizeof *r);
	if (to) {
		r->has_peer = 1;
		r->to = *to;
	}
	/* One extra byte so that an empty envelope still gets a buffer. */
	r->head = malloc(hlen + 1);
	if (!r->head)
		return PS_ENOMEM;
	memcpy(r->head, head, hlen);
	r->head_len = hlen;
	if (tlen > 0) {
		r->tensor = malloc(tlen);
		if (!r->tensor) {
			free(r->head);
			return PS_ENOMEM;
		}
		memcpy(r->tensor, tensor, tlen);
		r->tensor_len = tlen;
	}
	f->count++;
	if (f->hook)
		f->hook(f->hook_arg, r);
	return PS_OK;
}

static int fake_recv(ps_transport *t, ps_frame *out, int timeout_ms)
{
	(void)fake_of(t);
	(void)timeout_ms;
	memset(out, 0, sizeof *out);
	return PS_ETIMEDOUT;
}

static const char *fake_endpoint(const ps_transport *t)
{
	(void)fake_of(t);
	return "fake://";
}

void fake_transport_clear(ps_transport *t)
{
	struct fake_transport *f = fake_of(t);

	for (size_t i = 0; i < f->count; i++) {
		free(f->sent[i].head);
		free(f->sent[i].tensor);
	}
	f->count = 0;
}

static void fake_destroy(ps_transport *t)
{
	struct fake_transport *f = fake_of(t);

	fake_transport_clear(t);
	free(f->sent);
	free(f);
}

static void fake_refusals(const ps_transport *t, ps_transport_refusals *out)
{
	*out = fake_of(t)->stats;
}

void fake_transport_set_refusals(ps_transport *t, const ps_transport_refusals *st)
{
	fake_of(t)->stats = *st;
}

static const struct ps_transport_ops fake_ops = {
	.send = fake_send,
	.recv = fake_recv,
	.endpoint = fake_endpoint,
	.destroy = fake_destroy,
	.refusals = fake_refusals,
};

int fake_transport_new(ps_transport **out)
{
	struct fake_transport *f = calloc(1, sizeof *f);

	*out = NULL;
	if (!f)
		return PS_ENOMEM;
	f->base.ops = &fake_ops;
	*out = &f->base;
	return PS_OK;
}

size_t fake_transport_count(const ps_transport *t)
{
	return fake_of(t)->count;
}

const fake_sent *fake_transport_sent(const ps_transport *t, size_t i)
{
	const struct fake_transport *f = fake_of(t);

	if (i >= f->count)
		fail_msg("send #%zu asked for, only %zu recorded", i, f->count);
	return &f->sent[i];
}

int fake_transport_decode(const ps_transport *t, size_t i, ps_msg *out)
{
	const fake_sent *r = fake_transport_sent(t, i);
	ps_err e = { 0, "" };

	return ps_wire_decode(r->head, r->head_len, out, &e);
}

void fake_transport_fail_next(ps_transport *t, size_t n, int rc)
{
	struct fake_transport *f = fake_of(t);

	f->fail_left = n;
	f->fail_rc = rc;
}

void fake_transport_on_send(ps_transport *t, fake_send_hook hook, void *arg)
{
	struct fake_transport *f = fake_of(t);

	f->hook = hook;
	f->hook_arg = arg;
}

size_t fake_transport_refused(const ps_transport *t)
{
	return fake_of(t)->refused;
}
