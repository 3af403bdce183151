/*
 * fuzz_server: libFuzzer harness for the server's handling of received
 * messages (server/ps_server.c ps_server_handle), answering through the
 * fake transport of the unit tests. Each input configures a small server
 * and feeds it a sequence of frames from four peers:
 *   byte 0: configuration (consistency mode, optimizer, model, workers,
 *           delay compensation: see configure())
 *   then records of: 1 byte peer (bits 0-1: which of 4 peers; bit 2:
 *           tensor at an odd address), 2 bytes envelope length, 2 bytes
 *           tensor length (both little-endian, cut to what is there),
 *           the envelope, the tensor.
 * Before the records the harness itself says hello for worker 0 (peer 0),
 * worker 1 (peer 1, when there are two) and an evaluator (peer 2), so that
 * the model exists and pulls, pushes, byes and stops reach their handlers;
 * peer 3 is a stranger. Besides not crashing, every reply the server sends
 * must decode and carry the tensor its message says.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_transport.h"
#include "ps_log.h"
#include "ps_model.h"
#include "ps_server.h"
#include "ps_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define NPEERS 4

/* Small models of every kind, so that a push touches real weights. */
static const ps_model_spec specs[4] = {
	{ .name = "softmax", .input_dim = 4, .output_dim = 3, .init_seed = 1 },
	{ .name = "mlp", .input_dim = 3, .output_dim = 2, .init_seed = 2,
	  .hidden = "4", .activation = "relu" },
	{ .name = "linear", .input_dim = 3, .output_dim = 1, .init_seed = 3 },
	{ .name = "logistic", .input_dim = 2, .output_dim = 1, .init_seed = 4 },
};

static const enum ps_optim_kind optims[4] = {
	PS_OPTIM_SGD, PS_OPTIM_NESTEROV, PS_OPTIM_ADAM, PS_OPTIM_ADAGRAD,
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	/* Refusals are logged; millions of runs need no log, but a look at
	 * one input does (PS_FUZZ_LOG=1). */
	ps_log_setup("fuzz", getenv("PS_FUZZ_LOG") ? PS_LOG_DEBUG
						   : PS_LOG_ERROR);
	return 0;
}

static ps_peer make_peer(unsigned k)
{
	ps_peer p;

	memset(&p, 0, sizeof p);
	p.len = 5;
	p.id[1] = 'p';
	p.id[4] = (uint8_t)('0' + k);
	return p;
}

/* bits 0-1 consistency (async, bsp, ssp:1, async with the staleness-aware
 * rate), bit 2 delay compensation, bit 3 two workers, bits 4-5 the model,
 * bits 6-7 the optimizer. */
static void configure(uint8_t c, ps_server_config *cfg, ps_model_spec *spec)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->num_workers = c & 8 ? 2 : 1;
	switch (c & 3) {
	case 1:
		cfg->consistency = PS_CONSISTENCY_BSP;
		break;
	case 2:
		cfg->consistency = PS_CONSISTENCY_SSP;
		cfg->ssp_bound = 1;
		break;
	case 3:
		cfg->staleness_lr = 1;
		break;
	}
	cfg->dc_lambda = c & 4 ? 0.5 : 0;
	cfg->optim.kind = optims[c >> 6 & 3];
	cfg->optim.lr = 0.1;
	cfg->optim.momentum = 0.9;
	cfg->optim.beta1 = 0.9;
	cfg->optim.beta2 = 0.999;
	cfg->optim.rho = 0.9;
	cfg->optim.eps = 1e-8;
	*spec = specs[c >> 4 & 3];
}

/* Every reply must be a message a client can decode, with a tensor that
 * fits it; then forget them. */
static void check_replies(ps_transport *t)
{
	size_t n = fake_transport_count(t);
	ps_err e = {0};
	ps_msg m;

	for (size_t i = 0; i < n; i++) {
		const fake_sent *r = fake_transport_sent(t, i);
		if (!r->has_peer || ps_wire_decode(r->head, r->head_len, &m,
						   &e) != PS_OK ||
		    ps_wire_check_tensor(&m, r->tensor_len, &e) != PS_OK) {
			fprintf(stderr, "fuzz_server: reply %zu invalid: %s\n",
				i, e.msg);
			abort();
		}
	}
	fake_transport_clear(t);
}

static void say_hello(ps_server *s, ps_transport *t, const ps_peer *from,
		      enum ps_role role, uint32_t rank,
		      const ps_model_spec *spec)
{
	uint8_t buf[PS_WIRE_HEAD_MAX];
	size_t len = 0;
	ps_frame f;
	ps_msg m;

	ps_msg_init(&m, PS_MSG_HELLO, 1, 0);
	m.u.hello.role = role;
	m.u.hello.rank = rank;
	m.u.hello.model = *spec;
	if (ps_wire_encode(&m, buf, sizeof buf, &len) != PS_OK)
		abort();
	memset(&f, 0, sizeof f);
	f.from = *from;
	f.head = buf;
	f.head_len = len;
	if (ps_server_handle(s, &f) != PS_OK)
		abort();
	check_replies(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ps_transport *t = NULL;
	ps_server *s = NULL;
	ps_server_config cfg;
	ps_model_spec spec;
	ps_peer peers[NPEERS];
	ps_err e = {0};
	size_t pos = 1;

	if (size < 1)
		return 0;
	configure(data[0], &cfg, &spec);
	for (unsigned k = 0; k < NPEERS; k++)
		peers[k] = make_peer(k);
	if (fake_transport_new(&t) != PS_OK ||
	    ps_server_new(&s, &cfg, t, &e) != PS_OK)
		abort();
	for (uint32_t r = 0; r < cfg.num_workers; r++)
		say_hello(s, t, &peers[r], PS_ROLE_WORKER, r, &spec);
	say_hello(s, t, &peers[2], PS_ROLE_EVALUATOR, 0, &spec);

	while (pos + 5 <= size) {
		uint8_t who = data[pos];
		size_t hlen = (size_t)data[pos + 1] | (size_t)data[pos + 2] << 8;
		size_t tlen = (size_t)data[pos + 3] | (size_t)data[pos + 4] << 8;
		size_t odd = who & 4 ? 1 : 0;
		uint8_t *head, *tensor;
		ps_frame f;

		pos += 5;
		if (hlen > size - pos)
			hlen = size - pos;
		if (tlen > size - pos - hlen)
			tlen = size - pos - hlen;
		/* Exactly sized copies, as a transport's receive buffers: a
		 * read past either is caught. */
		head = malloc(hlen ? hlen : 1);
		tensor = malloc(tlen + odd ? tlen + odd : 1);
		if (!head || !tensor)
			abort();
		memcpy(head, data + pos, hlen);
		memcpy(tensor + odd, data + pos + hlen, tlen);
		pos += hlen + tlen;

		memset(&f, 0, sizeof f);
		f.from = peers[who & 3];
		f.head = head;
		f.head_len = hlen;
		f.tensor = tlen ? tensor + odd : NULL;
		f.tensor_len = tlen;
		(void)ps_server_handle(s, &f);
		check_replies(t);
		free(head);
		free(tensor);
	}
	ps_server_destroy(&s);
	ps_transport_destroy(&t);
	return 0;
}
