/*
 * ps_server: the event loop and message handlers. Invariants:
 *  - weights hold `version` updates; every applied push (async, ssp) or
 *    combined step (bsp) bumps version by 1;
 *  - a message is acted on only after it decoded, its tensor matched its
 *    range, and its sender matched a registered peer;
 *  - nothing a peer sends can make the server exit or block: refusals are
 *    counted and answered, replies never wait on a slow peer.
 */
#include "ps_server.h"

#include <cblas.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ps_checkpoint.h"
#include "ps_json.h"
#include "ps_log.h"
#include "ps_shard.h"
#include "ps_wire.h"

/* Worker ids in envelopes: rank + 1 for workers (0 means "none"), and
 * EVAL_ID_BASE + k for evaluators. */
#define EVAL_ID_BASE 0x10000u
#define MAX_EVALUATORS 16

/* A pull held back by bsp/ssp until the slower trainers catch up. */
typedef struct waiting_pull {
	int active;
	uint64_t request_id, begin, end, clock;
	uint64_t held_seq, held_version; /* the pull's claim */
} waiting_pull;

typedef struct peer_slot {
	int registered;
	int done;
	ps_peer peer;
	uint64_t pushes, samples, pulls;
	uint64_t clock;       /* trainers: pushes made (the next push's clock) */
	waiting_pull waiting; /* trainers under bsp/ssp */
	float *bsp_grad;      /* bsp: this clock's gradient, whole range */
	uint32_t bsp_batch;   /* bsp: its batch size; 0 when none yet */
	float *dc_pulled;     /* dc-asgd: the weights last sent to it */
	double last_heard;    /* ps_now() of its last message */
	int lost;             /* trainers: dropped after worker_timeout */
	uint64_t last_seq;    /* highest push seq applied */
	uint64_t seq_mask;    /* bit i: seq last_seq - 1 - i applied */
	/* Trainers: the last Weights reply, what a claim of held weights
	 * refers to (told 0: none since it registered). */
	int told;
	uint64_t told_version, told_begin, told_end;
	float told_lr;
} peer_slot;

struct ps_server {
	ps_server_config cfg;
	ps_transport *t;
	ps_model_spec spec;
	int have_model;
	float *w;
	float *scratch; /* aligned copy of a misaligned gradient */
	/* This shard's weights are [base, base + n) of a model of total;
	 * w[i] is weight base + i. Wire ranges are absolute. */
	uint64_t n, base, total;
	ps_optim *optim;
	peer_slot *workers; /* [num_workers] */
	peer_slot evals[MAX_EVALUATORS];
	uint32_t num_evals;
	ps_server_stats st;
	uint64_t bsp_clock;   /* bsp: combined steps applied so far */
	double t_first_hello, t_done;
	double train_seconds_before; /* from the checkpoint resumed from */
	double t_checkpoint;         /* ps_now() of the last checkpoint */
	uint64_t acks_counted;       /* for drop_ack_every */
	uint64_t pulls_counted;      /* for drop_pull_every */
	/* The last change of the weights, when it was a trainer's push
	 * applied as plain w -= lr * g (worker_id 0: something else last
	 * changed them): what a claim of held weights is checked against. */
	struct {
		uint32_t worker_id;
		uint64_t seq, version, begin, end;
		float lr;
	} last_step;
	uint8_t out[PS_WIRE_HEAD_MAX];
};

int ps_consistency_parse(const char *text, enum ps_consistency *mode,
			 uint32_t *bound, ps_err *e)
{
	char *end = NULL;
	unsigned long long v;

	*bound = 0;
	if (strcmp(text, "async") == 0) {
		*mode = PS_CONSISTENCY_ASYNC;
		return PS_OK;
	}
	if (strcmp(text, "bsp") == 0) {
		*mode = PS_CONSISTENCY_BSP;
		return PS_OK;
	}
	if (strncmp(text, "ssp:", 4) == 0 && text[4] >= '0' && text[4] <= '9') {
		v = strtoull(text + 4, &end, 10);
		if (*end == '\0' && v <= 1000000) {
			*mode = v == 0 ? PS_CONSISTENCY_BSP : PS_CONSISTENCY_SSP;
			*bound = (uint32_t)v;
			return PS_OK;
		}
	}
	return ps_err_set(e, PS_EINVAL,
			  "consistency '%s': expected async, bsp or ssp:S "
			  "(S a staleness bound from 0 to 1000000)",
			  text);
}

int ps_server_new(ps_server **out, const ps_server_config *cfg,
		  ps_transport *t, ps_err *e)
{
	ps_server *s = NULL;
	int rc = PS_OK;

	*out = NULL;
	if (cfg->num_workers == 0)
		return ps_err_set(e, PS_EINVAL, "need at least one worker");
	if (cfg->num_shards > 0 && cfg->shard >= cfg->num_shards)
		return ps_err_set(e, PS_EINVAL, "shard %u of %u: expected 0 to %u",
				  cfg->shard, cfg->num_shards,
				  cfg->num_shards - 1);
	if (cfg->consistency == PS_CONSISTENCY_SSP && cfg->ssp_bound == 0)
		return ps_err_set(e, PS_EINVAL, "ssp needs a bound >= 1");
	if (cfg->worker_timeout > 0 && cfg->heartbeat >= cfg->worker_timeout)
		return ps_err_set(e, PS_EINVAL,
				  "heartbeat interval %g s must be below the "
				  "worker timeout %g s",
				  cfg->heartbeat, cfg->worker_timeout);
	if (!(isfinite(cfg->dc_lambda) && cfg->dc_lambda >= 0))
		return ps_err_set(e, PS_EINVAL,
				  "delay-compensation lambda must be >= 0, got %g",
				  cfg->dc_lambda);
	s = calloc(1, sizeof *s);
	if (!s)
		return ps_err_set(e, PS_ENOMEM, "out of memory");
	s->cfg = *cfg;
	if (s->cfg.num_shards == 0)
		s->cfg.num_shards = 1;
	s->t = t;
	s->workers = calloc(cfg->num_workers, sizeof *s->workers);
	if (!s->workers) {
		rc = ps_err_set(e, PS_ENOMEM, "out of memory");
		goto out;
	}
	/* Validate the optimizer settings now rather than at first hello. */
	rc = ps_optim_new(&s->optim, 1, &cfg->optim, e);
	if (rc != PS_OK)
		goto out;
	ps_optim_destroy(&s->optim);
out:
	if (rc != PS_OK)
		ps_server_destroy(&s);
	*out = s;
	return rc;
}

void ps_server_destroy(ps_server **sp)
{
	ps_server *s;
	if (!sp || !*sp)
		return;
	s = *sp;
	ps_optim_destroy(&s->optim);
	for (uint32_t r = 0; s->workers && r < s->cfg.num_workers; r++) {
		free(s->workers[r].bsp_grad);
		free(s->workers[r].dc_pulled);
	}
	free(s->w);
	free(s->scratch);
	free(s->workers);
	free(s);
	*sp = NULL;
}

/* Reply to `to` with an encoded message and optional tensor. A reply that
 * cannot be queued (peer gone, queue full) is counted and dropped. */
static void reply(ps_server *s, const ps_peer *to, const ps_msg *m,
		  const void *tensor, size_t tlen)
{
	size_t len = 0;
	int rc = ps_wire_encode(m, s->out, sizeof s->out, &len);
	if (rc == PS_OK)
		rc = ps_transport_send(s->t, to, s->out, len, tensor, tlen);
	if (rc != PS_OK) {
		s->st.rejects.send_failed++;
		ps_log_debug("reply %s not sent: %s", ps_msg_kind_name(m->kind),
			     ps_strerror(rc));
	}
}

static int reject(ps_server *s, const ps_frame *f, uint64_t request_id,
		  int rc, enum ps_wire_errcode code, const char *why)
{
	ps_msg m;

	switch (code) {
	case PS_WIRE_ERR_VERSION:
		s->st.rejects.version++;
		break;
	case PS_WIRE_ERR_UNKNOWN_WORKER:
		s->st.rejects.unknown_worker++;
		break;
	case PS_WIRE_ERR_BAD_LENGTH:
		s->st.rejects.bad_length++;
		break;
	case PS_WIRE_ERR_NONFINITE:
		s->st.rejects.nonfinite++;
		break;
	case PS_WIRE_ERR_MODEL_MISMATCH:
		s->st.rejects.model_mismatch++;
		break;
	case PS_WIRE_ERR_BAD_RANK:
		s->st.rejects.bad_rank++;
		break;
	default:
		s->st.rejects.malformed++;
		break;
	}
	s->st.rejects_total++;
	/* Rate-limit by powers of two so a flood cannot fill the log. */
	if ((s->st.rejects_total & (s->st.rejects_total - 1)) == 0)
		ps_log_warn("rejected message #%" PRIu64 ": %s",
			    s->st.rejects_total, why);
	ps_msg_init(&m, PS_MSG_ERROR, request_id, 0);
	m.u.error.code = code;
	snprintf(m.u.error.message, sizeof m.u.error.message, "%s", why);
	if (f->from.len > 0)
		reply(s, &f->from, &m, NULL, 0);
	return rc;
}

void ps_server_count_malformed(ps_server *s, const ps_frame *f)
{
	(void)reject(s, f, 0, PS_EPROTO, PS_WIRE_ERR_MALFORMED,
		     "message whose frames could not be read (a wrong number, "
		     "or a tensor in shared memory that could not be mapped)");
}

/* "mlp 784-256,128-10 relu seed 1", for messages. */
static void describe_spec(const ps_model_spec *m, char *buf, size_t len)
{
	snprintf(buf, len, "%s %u-%s%s%u%s%s seed %" PRIu64, m->name,
		 m->input_dim, m->hidden, m->hidden[0] ? "-" : "",
		 m->output_dim, m->activation[0] ? " " : "", m->activation,
		 m->init_seed);
}

static int spec_equal(const ps_model_spec *a, const ps_model_spec *b)
{
	return strcmp(a->name, b->name) == 0 &&
	       strcmp(a->hidden, b->hidden) == 0 &&
	       strcmp(a->activation, b->activation) == 0 &&
	       a->input_dim == b->input_dim && a->output_dim == b->output_dim &&
	       a->init_seed == b->init_seed;
}

/* The first hello sizes and initializes the model. */
static int create_model(ps_server *s, const ps_model_spec *spec, ps_err *e)
{
	ps_model *m = NULL;
	float *all = NULL;
	uint64_t end;
	int rc = ps_model_new(&m, spec, e);
	if (rc != PS_OK)
		return rc;
	s->total = ps_model_num_params(m);
	if (s->cfg.max_params > 0 && s->total > s->cfg.max_params) {
		rc = ps_err_set(e, PS_ERANGE,
				"a model of %" PRIu64 " parameters is larger than "
				"the largest message (%" PRIu64 " parameters; "
				"--max-message-mb)",
				s->total, s->cfg.max_params);
		goto out;
	}
	ps_shard_range(s->total, s->cfg.num_shards, s->cfg.shard, &s->base,
		       &end);
	s->n = end - s->base;
	if (s->n == 0) {
		rc = ps_err_set(e, PS_EINVAL,
				"the model has %" PRIu64 " parameters: too few "
				"for %u shards", s->total, s->cfg.num_shards);
		goto out;
	}
	s->w = malloc(s->n * sizeof *s->w);
	s->scratch = malloc(s->n * sizeof *s->scratch);
	all = malloc(s->total * sizeof *all);
	if (!s->w || !s->scratch || !all) {
		rc = ps_err_set(e, PS_ENOMEM, "out of memory for %" PRIu64
					      " weights", s->n);
		goto out;
	}
	for (uint32_t r = 0; r < s->cfg.num_workers; r++) {
		peer_slot *w = &s->workers[r];
		if (s->cfg.consistency == PS_CONSISTENCY_BSP)
			w->bsp_grad = malloc(s->n * sizeof *w->bsp_grad);
		if (s->cfg.dc_lambda > 0)
			w->dc_pulled = malloc(s->n * sizeof *w->dc_pulled);
		if ((s->cfg.consistency == PS_CONSISTENCY_BSP && !w->bsp_grad) ||
		    (s->cfg.dc_lambda > 0 && !w->dc_pulled)) {
			rc = ps_err_set(e, PS_ENOMEM,
					"out of memory for per-worker copies of %"
					PRIu64 " weights", s->n);
			goto out;
		}
	}
	/* Every shard initializes the whole model the same way (same seed)
	 * and keeps its slice. */
	ps_model_init(m, all);
	memcpy(s->w, all + s->base, s->n * sizeof *s->w);
	/* Until its first pull, a trainer's weights are the initial ones
	 * (hello gives none): delay compensation never reads garbage. */
	for (uint32_t r = 0; r < s->cfg.num_workers; r++)
		if (s->workers[r].dc_pulled)
			memcpy(s->workers[r].dc_pulled, s->w,
			       s->n * sizeof *s->w);
	rc = ps_optim_new(&s->optim, s->n, &s->cfg.optim, e);
	if (rc != PS_OK)
		goto out;
	s->spec = *spec;
	s->have_model = 1;
	ps_log_info("model %s %ux%u: %" PRIu64 " parameters; shard %u of %u "
		    "owns [%" PRIu64 ", %" PRIu64 "), %" PRIu64 " weights",
		    spec->name, spec->input_dim, spec->output_dim, s->total,
		    s->cfg.shard, s->cfg.num_shards, s->base, s->base + s->n,
		    s->n);
out:
	free(all);
	if (rc != PS_OK) {
		free(s->w);
		free(s->scratch);
		s->w = s->scratch = NULL;
		s->n = s->base = s->total = 0;
		for (uint32_t r = 0; r < s->cfg.num_workers; r++) {
			free(s->workers[r].bsp_grad);
			free(s->workers[r].dc_pulled);
			s->workers[r].bsp_grad = s->workers[r].dc_pulled = NULL;
		}
	}
	ps_model_destroy(&m);
	return rc;
}

/* A trainer's hello: a first registration, or the same rank again (a
 * restarted worker process, a reconnection, or a worker whose server was
 * restarted). It gets a clock the others are not waiting on and carries on
 * from the slot's push sequence. */
static void rejoin_worker(ps_server *s, peer_slot *slot,
			  const ps_msg_hello *h)
{
	uint32_t rank = (uint32_t)(slot - s->workers);

	if (!slot->registered) {
		s->st.workers_seen++;
	} else {
		s->st.rejoins++;
		ps_log_warn("worker %u registered again%s; its old connection "
			    "is dropped",
			    rank, slot->lost ? " after it was dropped" : "");
	}
	/* Updates this worker saw acknowledged that the checkpoint we
	 * resumed from lacks: lost with the server that acknowledged them. */
	if (h->rejoin && h->applied_pushes > slot->pushes) {
		s->st.updates_lost += h->applied_pushes - slot->pushes;
		ps_log_warn("worker %u: %" PRIu64 " of its acknowledged updates "
			    "are not in the checkpoint resumed from",
			    rank, h->applied_pushes - slot->pushes);
	}
	if (slot->done) {
		slot->done = 0;
		s->st.workers_done--;
		s->t_done = 0;
	}
	slot->lost = 0;
	slot->waiting.active = 0; /* its old connection's pull */
	if (s->cfg.consistency == PS_CONSISTENCY_BSP) {
		slot->clock = s->bsp_clock + (slot->bsp_batch ? 1 : 0);
	} else if (s->cfg.consistency == PS_CONSISTENCY_SSP) {
		uint64_t slowest = UINT64_MAX;
		for (uint32_t r = 0; r < s->cfg.num_workers; r++) {
			const peer_slot *o = &s->workers[r];
			if (r != rank && o->registered && !o->done && !o->lost &&
			    o->clock < slowest)
				slowest = o->clock;
		}
		if (slowest != UINT64_MAX && slot->clock < slowest)
			slot->clock = slowest;
	}
}

static int handle_hello(ps_server *s, const ps_frame *f, const ps_msg *in)
{
	const ps_msg_hello *h = &in->u.hello;
	peer_slot *slot = NULL;
	uint32_t id;
	ps_msg m;
	ps_err e = {0};
	char why[300];

	/* Check the rank before anything else: a refused hello must leave
	 * no state behind, and the first hello would size the model. */
	if (h->role == PS_ROLE_WORKER && h->rank >= s->cfg.num_workers) {
		snprintf(why, sizeof why, "hello: rank %u outside [0, %u)",
			 h->rank, s->cfg.num_workers);
		return reject(s, f, in->request_id, PS_ERANGE,
			      PS_WIRE_ERR_BAD_RANK, why);
	}
	if (!s->have_model) {
		int rc = create_model(s, &h->model, &e);
		if (rc != PS_OK) {
			snprintf(why, sizeof why, "hello: %s", e.msg);
			return reject(s, f, in->request_id, rc,
				      PS_WIRE_ERR_MALFORMED, why);
		}
	} else if (!spec_equal(&s->spec, &h->model)) {
		char mine[128], theirs[128];
		describe_spec(&s->spec, mine, sizeof mine);
		describe_spec(&h->model, theirs, sizeof theirs);
		snprintf(why, sizeof why,
			 "hello: model %s differs from the server's %s", theirs,
			 mine);
		return reject(s, f, in->request_id, PS_EINVAL,
			      PS_WIRE_ERR_MODEL_MISMATCH, why);
	}

	if (h->role == PS_ROLE_WORKER) {
		slot = &s->workers[h->rank];
		id = h->rank + 1;
		rejoin_worker(s, slot, h);
	} else {
		uint32_t k, free_k = MAX_EVALUATORS;
		for (k = 0; k < s->num_evals; k++) {
			if (ps_peer_equal(&s->evals[k].peer, &f->from))
				break;
			if (s->evals[k].lost && free_k == MAX_EVALUATORS)
				free_k = k;
		}
		/* A slot whose evaluator was dropped as silent is taken
		 * again before a new one: peers that connect and go quiet
		 * cannot use up the slots for good. */
		if (k == s->num_evals && free_k < MAX_EVALUATORS) {
			k = free_k;
			memset(&s->evals[k], 0, sizeof s->evals[k]);
		}
		if (k == MAX_EVALUATORS)
			return reject(s, f, in->request_id, PS_ERANGE,
				      PS_WIRE_ERR_BAD_RANK,
				      "hello: too many evaluators");
		if (k == s->num_evals)
			s->num_evals++;
		slot = &s->evals[k];
		slot->lost = 0;
		id = EVAL_ID_BASE + k;
	}
	slot->registered = 1;
	slot->told = 0; /* a process registering holds no weights yet */
	slot->peer = f->from;
	slot->last_heard = ps_now();
	/* Training time runs from the first trainer's hello: an evaluator
	 * that connects early does not count. */
	if (h->role == PS_ROLE_WORKER && s->t_first_hello == 0)
		s->t_first_hello = ps_now();
	ps_log_info("%s %u joined", h->role == PS_ROLE_WORKER ? "worker"
							     : "evaluator",
		    h->role == PS_ROLE_WORKER ? h->rank : id - EVAL_ID_BASE);

	ps_msg_init(&m, PS_MSG_WELCOME, in->request_id, id);
	m.u.welcome.worker_id = id;
	m.u.welcome.num_params = s->total;
	m.u.welcome.begin = s->base;
	m.u.welcome.end = s->base + s->n;
	m.u.welcome.version = s->st.version;
	m.u.welcome.num_workers = s->cfg.num_workers;
	m.u.welcome.shard = s->cfg.shard;
	m.u.welcome.num_shards = s->cfg.num_shards;
	m.u.welcome.heartbeat_seconds = s->cfg.heartbeat;
	/* Tensors through shared memory only between two sides that take
	 * them, on the same machine. */
	snprintf(m.u.welcome.shm_host, sizeof m.u.welcome.shm_host, "%s",
		 ps_transport_shared_host(s->t));
	ps_transport_lend_to(s->t, &f->from,
			     ps_transport_shares_with(s->t, h->shm_host));
	if (h->role == PS_ROLE_WORKER) {
		m.u.welcome.clock = slot->clock;
		m.u.welcome.last_seq = slot->last_seq;
		m.u.welcome.pushes = slot->pushes;
	}
	reply(s, &f->from, &m, NULL, 0);
	return PS_OK;
}

/* The registered slot that sent this message, or NULL. */
static peer_slot *sender(ps_server *s, const ps_frame *f, const ps_msg *in)
{
	peer_slot *slot = NULL;
	uint32_t id = in->worker_id;

	if (id >= 1 && id <= s->cfg.num_workers)
		slot = &s->workers[id - 1];
	else if (id >= EVAL_ID_BASE && id - EVAL_ID_BASE < s->num_evals)
		slot = &s->evals[id - EVAL_ID_BASE];
	/* A dropped trainer must register again: that gives it a clock
	 * the others are not waiting on. */
	if (!slot || !slot->registered || slot->lost ||
	    !ps_peer_equal(&slot->peer, &f->from))
		return NULL;
	return slot;
}

static int check_range(ps_server *s, const ps_frame *f, const ps_msg *in,
		       uint64_t begin, uint64_t end)
{
	char why[160];
	if (begin >= s->base && end <= s->base + s->n)
		return PS_OK;
	snprintf(why, sizeof why,
		 "%s: range [%" PRIu64 ", %" PRIu64
		 ") outside the server's [%" PRIu64 ", %" PRIu64 ")",
		 ps_msg_kind_name(in->kind), begin, end, s->base,
		 s->base + s->n);
	return reject(s, f, in->request_id, PS_ERANGE, PS_WIRE_ERR_MALFORMED,
		      why);
}

/* The smallest clock among trainers that have not said bye and were not
 * dropped (trainers that have not said hello yet count with clock 0), or
 * UINT64_MAX when there is none. */
static uint64_t slowest_clock(const ps_server *s)
{
	uint64_t min = UINT64_MAX;
	for (uint32_t r = 0; r < s->cfg.num_workers; r++)
		if (!s->workers[r].done && !s->workers[r].lost &&
		    s->workers[r].clock < min)
			min = s->workers[r].clock;
	return min;
}

/* May a trainer's pull for `clock` be answered now? After an early stop
 * no push is applied any more, so nothing would ever release a held-back
 * pull: every pull is answered then, and its stop flag ends the trainer. */
static int pull_ready(const ps_server *s, uint64_t clock)
{
	uint64_t slowest;

	if (s->st.stopped)
		return 1;
	switch (s->cfg.consistency) {
	case PS_CONSISTENCY_BSP:
		return clock <= s->bsp_clock;
	case PS_CONSISTENCY_SSP:
		slowest = slowest_clock(s);
		return slowest == UINT64_MAX || clock <= slowest + s->cfg.ssp_bound;
	case PS_CONSISTENCY_ASYNC:
		break;
	}
	return 1;
}

/* The rate at which a push arriving now would be applied as w -= lr * g,
 * exactly as the optimizer's kernel does it (float32); 0 when the update
 * is anything else. */
static float sgd_lr(const ps_server *s)
{
	const ps_optim_config *o = &s->cfg.optim;

	if (o->kind != PS_OPTIM_SGD || o->weight_decay != 0 || o->l1 != 0 ||
	    s->cfg.staleness_lr || s->cfg.dc_lambda > 0 ||
	    s->cfg.consistency == PS_CONSISTENCY_BSP || s->st.stopped)
		return 0.0f;
	return (float)ps_optim_lr(s->optim, s->st.version);
}

/* With unchanged, the reply says the weights are those the pull claimed
 * to hold, and carries none. */
static void send_weights(ps_server *s, const ps_peer *to, uint32_t worker_id,
			 uint64_t request_id, uint64_t begin, uint64_t end,
			 int unchanged)
{
	ps_msg m;

	ps_msg_init(&m, PS_MSG_WEIGHTS, request_id, worker_id);
	m.u.weights.version = s->st.version;
	m.u.weights.begin = begin;
	m.u.weights.end = end;
	m.u.weights.training_done = ps_server_training_done(s);
	m.u.weights.stop = s->st.stopped;
	m.u.weights.sgd_lr = sgd_lr(s);
	m.u.weights.unchanged = unchanged;
	if (s->t_first_hello > 0)
		m.u.weights.train_seconds =
			(s->t_done > 0 ? s->t_done : ps_now()) - s->t_first_hello;
	if (worker_id >= 1 && worker_id <= s->cfg.num_workers) {
		peer_slot *slot = &s->workers[worker_id - 1];
		slot->told = 1;
		slot->told_version = s->st.version;
		slot->told_begin = begin;
		slot->told_end = end;
		slot->told_lr = m.u.weights.sgd_lr;
	}
	if (unchanged)
		reply(s, to, &m, NULL, 0);
	else
		reply(s, to, &m, s->w + (begin - s->base),
		      (size_t)(end - begin) * sizeof(float));
}

/* Does the trainer in slot (worker id) hold these weights already? It
 * says it holds the reply at held_version for [begin, end) plus its own
 * push held_seq added at that reply's rate. That is the server's weights
 * now exactly when the one update since that reply was that push, over
 * that range, applied as plain SGD at that same rate: the trainer did
 * the same float operations on the same values. */
static int holds_weights(const ps_server *s, const peer_slot *slot,
			 uint32_t id, uint64_t begin, uint64_t end,
			 uint64_t held_seq, uint64_t held_version)
{
	return held_seq != 0 && slot->told && !s->st.stopped &&
	       slot->told_version == held_version &&
	       slot->told_begin == begin && slot->told_end == end &&
	       slot->told_lr > 0.0f && s->st.version == held_version + 1 &&
	       s->last_step.worker_id == id && s->last_step.seq == held_seq &&
	       s->last_step.version == s->st.version &&
	       s->last_step.begin == begin && s->last_step.end == end &&
	       s->last_step.lr == slot->told_lr;
}

/* Answer a trainer's pull: record how far ahead of the slowest trainer
 * it runs, and keep the weights it gets for delay compensation. */
static void answer_trainer_pull(ps_server *s, uint32_t rank,
				uint64_t request_id, uint64_t begin,
				uint64_t end, uint64_t clock,
				uint64_t held_seq, uint64_t held_version)
{
	peer_slot *slot = &s->workers[rank];
	uint64_t slowest = slowest_clock(s);
	int unchanged = holds_weights(s, slot, rank + 1, begin, end, held_seq,
				      held_version);

	/* After an early stop pulls are answered whatever the bound: they
	 * say stop, and do not count as a lead. */
	if (!s->st.stopped && slowest != UINT64_MAX && clock > slowest &&
	    clock - slowest > s->st.clock_lead_max)
		s->st.clock_lead_max = clock - slowest;
	if (slot->dc_pulled)
		memcpy(slot->dc_pulled + (begin - s->base),
		       s->w + (begin - s->base),
		       (size_t)(end - begin) * sizeof(float));
	if (s->cfg.drop_pull_every &&
	    ++s->pulls_counted % s->cfg.drop_pull_every == 0) {
		s->st.pulls_dropped++; /* fault injection: "lost" on the way */
		return;
	}
	if (unchanged)
		s->st.pulls_unchanged++;
	send_weights(s, &slot->peer, rank + 1, request_id, begin, end,
		     unchanged);
}

/* Answer the held-back pulls that the last event made possible. */
static void serve_waiting_pulls(ps_server *s)
{
	for (uint32_t r = 0; r < s->cfg.num_workers; r++) {
		waiting_pull *wp = &s->workers[r].waiting;
		if (wp->active && pull_ready(s, wp->clock)) {
			wp->active = 0;
			answer_trainer_pull(s, r, wp->request_id, wp->begin,
					    wp->end, wp->clock, wp->held_seq,
					    wp->held_version);
		}
	}
}

static int handle_pull(ps_server *s, const ps_frame *f, const ps_msg *in,
		       peer_slot *slot)
{
	const ps_msg_pull *p = &in->u.pull;
	uint32_t id = in->worker_id;
	int rc = check_range(s, f, in, p->begin, p->end);

	if (rc != PS_OK)
		return rc;
	slot->pulls++;
	s->st.pulls++;
	if (id < 1 || id > s->cfg.num_workers) {
		/* Evaluators never wait, and claim nothing. */
		send_weights(s, &f->from, id, in->request_id, p->begin, p->end,
			     0);
		return PS_OK;
	}
	if (pull_ready(s, p->clock)) {
		answer_trainer_pull(s, id - 1, in->request_id, p->begin, p->end,
				    p->clock, p->held_seq, p->held_version);
		return PS_OK;
	}
	if (slot->waiting.active)
		return reject(s, f, in->request_id, PS_EPROTO,
			      PS_WIRE_ERR_MALFORMED,
			      "pull: another pull of this worker is already waiting");
	slot->waiting = (waiting_pull){.active = 1,
				       .request_id = in->request_id,
				       .begin = p->begin,
				       .end = p->end,
				       .clock = p->clock,
				       .held_seq = p->held_seq,
				       .held_version = p->held_version};
	s->st.pulls_waited++;
	return PS_OK;
}

static unsigned staleness_bucket(uint64_t tau)
{
	unsigned b = 0;
	while (tau > 0 && b < 7) {
		tau >>= 1;
		b++;
	}
	return b;
}

/* DC-ASGD (Zheng et al. 2017): g += lambda * g * g * (w_now - w_pulled),
 * a first-order correction for the updates applied since the worker
 * pulled. g is the server's scratch copy. */
static void compensate_delay(ps_server *s, const peer_slot *slot, float *g,
			     uint64_t begin, size_t count)
{
	const float lambda = (float)s->cfg.dc_lambda;
	const float *restrict now = s->w + (begin - s->base);
	const float *restrict then = slot->dc_pulled + (begin - s->base);

	for (size_t i = 0; i < count; i++)
		g[i] += lambda * g[i] * g[i] * (now[i] - then[i]);
}

/* bsp: once every live trainer has pushed for this clock, apply the
 * batch-size-weighted mean of their gradients as one step. Summed in rank
 * order, so the result does not depend on arrival order. */
static void bsp_try_step(ps_server *s)
{
	uint64_t total = 0;
	int first = 1;
	double t0;

	for (uint32_t r = 0; r < s->cfg.num_workers; r++) {
		const peer_slot *w = &s->workers[r];
		if (!w->done && !w->lost && w->bsp_batch == 0)
			return; /* still waiting for this one */
		total += w->bsp_batch;
	}
	if (total == 0)
		return;
	for (uint32_t r = 0; r < s->cfg.num_workers; r++) {
		peer_slot *w = &s->workers[r];
		float share;
		if (w->bsp_batch == 0)
			continue;
		share = (float)((double)w->bsp_batch / (double)total);
		/* A plain loop, not cblas_saxpy: BLAS kernels round the
		 * vector body and the tail differently (fused or not), so a
		 * weight's result would depend on where the shard's range
		 * starts, and S = 1, 2, 3 would not give the same weights. */
		if (first)
			for (uint64_t i = 0; i < s->n; i++)
				s->scratch[i] = share * w->bsp_grad[i];
		else
			for (uint64_t i = 0; i < s->n; i++)
				s->scratch[i] += share * w->bsp_grad[i];
		first = 0;
		w->bsp_batch = 0;
	}
	t0 = ps_now();
	ps_optim_apply_range(s->optim, s->w, s->scratch, 0, (size_t)s->n,
			     s->st.version);
	s->st.apply_seconds += ps_now() - t0;
	s->st.version++;
	s->st.model_version = s->st.version;
	s->st.bsp_steps++;
	s->bsp_clock++;
}

/* Has push seq of this trainer been applied? 1 yes, 0 no, -1 too old to
 * tell (more than 64 below the newest). Seq 0 is never remembered. */
static int seq_seen(const peer_slot *w, uint64_t seq)
{
	uint64_t d;

	if (seq > w->last_seq)
		return 0;
	if (seq == w->last_seq)
		return 1;
	d = w->last_seq - seq;
	if (d > 64)
		return -1;
	return (int)((w->seq_mask >> (d - 1)) & 1);
}

static void seq_mark(peer_slot *w, uint64_t seq)
{
	uint64_t d;

	if (seq > w->last_seq) {
		d = seq - w->last_seq;
		w->seq_mask = d >= 64 ? 0 : w->seq_mask << d;
		if (w->last_seq > 0 && d <= 64)
			w->seq_mask |= (uint64_t)1 << (d - 1);
		w->last_seq = seq;
	} else if (seq < w->last_seq && w->last_seq - seq <= 64) {
		w->seq_mask |= (uint64_t)1 << (w->last_seq - seq - 1);
	}
}

/* A push sent again because its ack was lost: answer, apply nothing. */
static int answer_repeat(ps_server *s, const ps_frame *f, const ps_msg *in,
			 int seen)
{
	ps_msg m;
	char why[120];

	if (seen < 0) {
		s->st.too_old++;
		snprintf(why, sizeof why,
			 "push: seq %" PRIu64 " is too old to tell whether it "
			 "was applied; dropped", in->u.push.seq);
		ps_msg_init(&m, PS_MSG_ERROR, in->request_id, in->worker_id);
		m.u.error.code = PS_WIRE_ERR_TOO_OLD;
		snprintf(m.u.error.message, sizeof m.u.error.message, "%s", why);
		reply(s, &f->from, &m, NULL, 0);
		return PS_ERANGE;
	}
	s->st.duplicates++;
	ps_log_debug("push seq %" PRIu64 " of worker %u applied before; "
		     "acknowledged again", in->u.push.seq, in->worker_id - 1);
	ps_msg_init(&m, PS_MSG_ACK, in->request_id, in->worker_id);
	m.u.ack.version = s->st.version;
	m.u.ack.seq = in->u.push.seq;
	m.u.ack.duplicate = 1;
	m.u.ack.stop = s->st.stopped;
	reply(s, &f->from, &m, NULL, 0);
	return PS_OK;
}

static int handle_push(ps_server *s, const ps_frame *f, const ps_msg *in,
		       peer_slot *slot)
{
	const ps_msg_push *p = &in->u.push;
	const float *g;
	size_t count = (size_t)(p->end - p->begin), bad = 0;
	uint64_t tau;
	char why[160];
	ps_msg m;
	int ack_now, ack_later;
	int rc = check_range(s, f, in, p->begin, p->end);

	if (rc != PS_OK)
		return rc;
	if (s->st.stopped) {
		/* Not a fault of the worker: it learns of the stop here. */
		s->st.pushes_after_stop++;
		ps_msg_init(&m, PS_MSG_ERROR, in->request_id, in->worker_id);
		m.u.error.code = PS_WIRE_ERR_SHUTTING_DOWN;
		snprintf(m.u.error.message, sizeof m.u.error.message, "%.200s",
			 s->st.stop_reason);
		reply(s, &f->from, &m, NULL, 0);
		return PS_ESHUTDOWN;
	}
	if (p->base_version > s->st.version) {
		snprintf(why, sizeof why,
			 "push: base version %" PRIu64
			 " is ahead of the server's %" PRIu64,
			 p->base_version, s->st.version);
		return reject(s, f, in->request_id, PS_EPROTO,
			      PS_WIRE_ERR_MALFORMED, why);
	}
	if (ps_wire_check_finite(f->tensor, count, &bad) != PS_OK) {
		snprintf(why, sizeof why,
			 "push from client %u: gradient[%zu] is not finite; "
			 "push dropped",
			 in->worker_id, (size_t)p->begin + bad);
		return reject(s, f, in->request_id, PS_ENONFINITE,
			      PS_WIRE_ERR_NONFINITE, why);
	}
	/* After the content checks, so that a hostile push is refused for
	 * what is wrong with it whoever sends it. */
	if (in->worker_id > s->cfg.num_workers || slot->done || count == 0) {
		snprintf(why, sizeof why, "push: %s",
			 count == 0 ? "empty range"
			 : slot->done ? "worker already said bye"
				      : "evaluators only pull");
		return reject(s, f, in->request_id, PS_EPROTO,
			      PS_WIRE_ERR_MALFORMED, why);
	}
	/* Before the clock checks: a repeat carries the clock it had. */
	if (p->seq != 0) {
		int seen = seq_seen(slot, p->seq);
		if (seen != 0)
			return answer_repeat(s, f, in, seen);
	}
	if (s->cfg.consistency != PS_CONSISTENCY_ASYNC && p->clock != slot->clock) {
		snprintf(why, sizeof why,
			 "push: clock %" PRIu64 ", expected %" PRIu64,
			 p->clock, slot->clock);
		return reject(s, f, in->request_id, PS_EPROTO,
			      PS_WIRE_ERR_MALFORMED, why);
	}
	if (s->cfg.consistency == PS_CONSISTENCY_BSP &&
	    (p->begin != s->base || p->end != s->base + s->n)) {
		return reject(s, f, in->request_id, PS_EPROTO,
			      PS_WIRE_ERR_MALFORMED,
			      "push: under bsp a push covers the whole range");
	}
	/* A trainer that pushes clock c + 1 before step c was applied has
	 * not waited in a pull between its pushes (--fetch-every above
	 * --push-every): keeping its push would overwrite the gradient of
	 * clock c that step c still needs. */
	if (s->cfg.consistency == PS_CONSISTENCY_BSP && slot->bsp_batch != 0) {
		snprintf(why, sizeof why,
			 "push: clock %" PRIu64 " before step %" PRIu64
			 " was applied; under bsp a trainer must pull between "
			 "pushes (--fetch-every <= --push-every)",
			 p->clock, p->clock - 1);
		return reject(s, f, in->request_id, PS_EPROTO,
			      PS_WIRE_ERR_MALFORMED, why);
	}
	tau = s->st.version - p->base_version;
	/* Every check has passed: the push will be applied, here, before
	 * the server reads another message. Outside bsp its ack (the
	 * version it makes, counted up front) goes out now, so that ZeroMQ
	 * sends it from its I/O thread while this thread applies the step:
	 * the round trip no longer waits for the step. A later reply to
	 * any peer is sent after the step, so nobody can see the ack's
	 * version without its update. Under bsp the ack comes after the
	 * gradient is stored, as before (no step is taken here). */
	ps_msg_init(&m, PS_MSG_ACK, in->request_id, in->worker_id);
	m.u.ack.version = s->cfg.consistency == PS_CONSISTENCY_BSP
				  ? s->st.version
				  : s->st.version + 1;
	m.u.ack.staleness = tau;
	m.u.ack.seq = p->seq;
	m.u.ack.stop = s->st.stopped;
	if (s->cfg.drop_ack_every &&
	    ++s->acks_counted % s->cfg.drop_ack_every == 0) {
		s->st.acks_dropped++; /* fault injection: "lost" on the way */
		ack_now = ack_later = 0;
	} else {
		ack_now = s->cfg.consistency != PS_CONSISTENCY_BSP;
		ack_later = !ack_now;
	}
	if (ack_now)
		reply(s, &f->from, &m, NULL, 0);
	if (s->cfg.consistency == PS_CONSISTENCY_BSP) {
		/* Kept aside; applied with the others' in bsp_try_step(). */
		memcpy(slot->bsp_grad, f->tensor, count * sizeof(float));
		slot->bsp_batch = p->batch_size;
	} else {
		g = (const float *)(const void *)f->tensor;
		if ((uintptr_t)f->tensor % _Alignof(float) != 0 ||
		    s->cfg.dc_lambda > 0) {
			memcpy(s->scratch, f->tensor, count * sizeof(float));
			g = s->scratch;
		}
		if (s->cfg.dc_lambda > 0)
			compensate_delay(s, slot, s->scratch, p->begin, count);
		/* What this step is, for claims of held weights: plain SGD at
		 * the rate sgd_lr() announces (the kernel's own float), or
		 * something else (0). */
		s->last_step.lr = sgd_lr(s);
		s->last_step.worker_id = s->last_step.lr > 0.0f ? in->worker_id : 0;
		s->last_step.seq = p->seq;
		s->last_step.begin = p->begin;
		s->last_step.end = p->end;
		s->last_step.version = s->st.version + 1;
		double t0 = ps_now();
		ps_optim_apply_scaled(s->optim, s->w + (p->begin - s->base), g,
				      (size_t)(p->begin - s->base), count,
				      s->st.version,
				      s->cfg.staleness_lr && tau > 1
					      ? 1.0 / (double)tau
					      : 1.0);
		s->st.apply_seconds += ps_now() - t0;
		s->st.version++;
		s->st.model_version = s->st.version;
	}
	s->st.samples += p->batch_size;
	s->st.staleness_sum += (double)tau;
	if (tau > s->st.staleness_max)
		s->st.staleness_max = tau;
	s->st.staleness_hist[staleness_bucket(tau)]++;
	s->st.pushes_applied++;
	slot->pushes++;
	slot->samples += p->batch_size;
	slot->clock++;
	if (p->seq != 0)
		seq_mark(slot, p->seq);
	if (ack_later)
		reply(s, &f->from, &m, NULL, 0);
	if (s->cfg.consistency == PS_CONSISTENCY_BSP)
		bsp_try_step(s);
	serve_waiting_pulls(s);
	return PS_OK;
}

static int handle_bye(ps_server *s, const ps_frame *f, const ps_msg *in,
		      peer_slot *slot)
{
	ps_msg m;
	int is_worker = in->worker_id >= 1 && in->worker_id <= s->cfg.num_workers;

	if (!slot->done) {
		slot->done = 1;
		if (is_worker) {
			s->st.workers_done++;
			ps_log_info("worker %u finished: %" PRIu64
				    " pushes, %" PRIu64 " samples (%u of %u done)",
				    in->worker_id - 1, slot->pushes,
				    slot->samples, s->st.workers_done,
				    s->cfg.num_workers);
			if (ps_server_training_done(s)) {
				s->t_done = ps_now();
				ps_log_info("training done: %" PRIu64
					    " updates", s->st.version);
			}
		}
	}
	ps_msg_init(&m, PS_MSG_BYE, in->request_id, in->worker_id);
	reply(s, &f->from, &m, NULL, 0);
	/* A trainer that left no longer holds the others back. */
	if (is_worker && s->cfg.consistency == PS_CONSISTENCY_BSP)
		bsp_try_step(s);
	serve_waiting_pulls(s);
	return PS_OK;
}

/* An evaluator asks to stop training, possibly handing back the best
 * weights it saw. From then on pushes are refused with SHUTTING_DOWN and
 * every reply tells trainers to stop. */
static int handle_stop(ps_server *s, const ps_frame *f, const ps_msg *in)
{
	const ps_msg_stop *p = &in->u.stop;
	size_t count = (size_t)(p->end - p->begin), bad = 0;
	char why[160];
	ps_msg m;
	int rc;

	if (in->worker_id < EVAL_ID_BASE)
		return reject(s, f, in->request_id, PS_EPROTO,
			      PS_WIRE_ERR_MALFORMED,
			      "stop: only an evaluator may stop training");
	if (f->tensor_len > 0) {
		rc = check_range(s, f, in, p->begin, p->end);
		if (rc != PS_OK)
			return rc;
		if (p->best_version > s->st.version) {
			snprintf(why, sizeof why,
				 "stop: best version %" PRIu64
				 " is ahead of the server's %" PRIu64,
				 p->best_version, s->st.version);
			return reject(s, f, in->request_id, PS_EPROTO,
				      PS_WIRE_ERR_MALFORMED, why);
		}
		if (ps_wire_check_finite(f->tensor, count, &bad) != PS_OK)
			return reject(s, f, in->request_id, PS_ENONFINITE,
				      PS_WIRE_ERR_NONFINITE,
				      "stop: best weights are not finite");
	}
	if (!s->st.stopped) {
		s->st.stopped = 1;
		snprintf(s->st.stop_reason, sizeof s->st.stop_reason, "%s",
			 p->reason[0] ? p->reason : "stopped by an evaluator");
		if (f->tensor_len > 0) {
			memcpy(s->w + (p->begin - s->base), f->tensor,
			       f->tensor_len);
			s->last_step.worker_id = 0;
			s->st.weights_restored = 1;
			s->st.model_version = p->best_version;
		}
		ps_log_info("early stop at version %" PRIu64 ": %s%s",
			    s->st.version, s->st.stop_reason,
			    s->st.weights_restored
				    ? "; keeping the best weights"
				    : "");
	}
	ps_msg_init(&m, PS_MSG_ACK, in->request_id, in->worker_id);
	m.u.ack.version = s->st.version;
	m.u.ack.stop = 1;
	reply(s, &f->from, &m, NULL, 0);
	/* Trainers held back by bsp/ssp learn of the stop now. */
	serve_waiting_pulls(s);
	return PS_OK;
}

static int handle_heartbeat(ps_server *s, const ps_frame *f,
			    const ps_msg *in, const peer_slot *slot)
{
	ps_msg m;

	ps_msg_init(&m, PS_MSG_HEARTBEAT, in->request_id, in->worker_id);
	m.u.heartbeat.version = s->st.version;
	/* Which pull of this trainer is held back, so that it can tell a
	 * pull that waits from one that was lost (an evaluator's slot never
	 * holds one). */
	if (slot->waiting.active)
		m.u.heartbeat.pull_waiting = slot->waiting.request_id;
	reply(s, &f->from, &m, NULL, 0);
	return PS_OK;
}

int ps_server_handle(ps_server *s, const ps_frame *f)
{
	ps_msg in;
	ps_err e = {0};
	peer_slot *slot;
	int rc = ps_wire_decode(f->head, f->head_len, &in, &e);

	if (rc == PS_EVERSION)
		return reject(s, f, in.request_id, rc, PS_WIRE_ERR_VERSION,
			      e.msg);
	if (rc != PS_OK)
		return reject(s, f, in.request_id, rc, PS_WIRE_ERR_MALFORMED,
			      e.msg);
	rc = ps_wire_check_tensor(&in, f->tensor_len, &e);
	if (rc != PS_OK)
		return reject(s, f, in.request_id, rc, PS_WIRE_ERR_BAD_LENGTH,
			      e.msg);
	if (in.kind == PS_MSG_HELLO)
		return handle_hello(s, f, &in);
	slot = sender(s, f, &in);
	if (!slot) {
		char why[96];
		snprintf(why, sizeof why,
			 "%s from unknown worker id %u (say hello first)",
			 ps_msg_kind_name(in.kind), in.worker_id);
		return reject(s, f, in.request_id, PS_EUNKNOWN_WORKER,
			      PS_WIRE_ERR_UNKNOWN_WORKER, why);
	}
	slot->last_heard = ps_now();
	switch (in.kind) {
	case PS_MSG_HEARTBEAT:
		return handle_heartbeat(s, f, &in, slot);
	case PS_MSG_PULL:
		return handle_pull(s, f, &in, slot);
	case PS_MSG_PUSH:
		return handle_push(s, f, &in, slot);
	case PS_MSG_BYE:
		return handle_bye(s, f, &in, slot);
	case PS_MSG_STOP:
		return handle_stop(s, f, &in);
	default: {
		char why[64];
		snprintf(why, sizeof why, "a server does not accept %s",
			 ps_msg_kind_name(in.kind));
		return reject(s, f, in.request_id, PS_EPROTO,
			      PS_WIRE_ERR_MALFORMED, why);
	}
	}
}

int ps_server_training_done(const ps_server *s)
{
	for (uint32_t r = 0; r < s->cfg.num_workers; r++)
		if (!s->workers[r].done && !s->workers[r].lost)
			return 0;
	return 1;
}

void ps_server_check_liveness(ps_server *s, double now)
{
	int dropped = 0;

	if (s->cfg.worker_timeout <= 0)
		return;
	for (uint32_t r = 0; r < s->cfg.num_workers; r++) {
		peer_slot *w = &s->workers[r];
		/* A rank that never registered, worker_timeout after the
		 * first one did, died starting (or is slow: it registers
		 * when it comes, like a restarted one). */
		double since = w->registered ? w->last_heard : s->t_first_hello;
		if (w->done || w->lost || s->t_first_hello == 0 ||
		    now - since <= s->cfg.worker_timeout)
			continue;
		w->lost = 1;
		w->waiting.active = 0;
		s->st.workers_lost++;
		dropped = 1;
		if (w->registered)
			ps_log_warn("worker %u lost: nothing heard for %.1f s; "
				    "carrying on without it (%" PRIu64
				    " pushes applied from it)",
				    r, now - w->last_heard, w->pushes);
		else
			ps_log_warn("worker %u has not registered %.1f s after "
				    "the first one; carrying on without it until "
				    "it does", r, now - since);
	}
	/* Evaluators too, so that their slots can be taken again. */
	for (uint32_t k = 0; k < s->num_evals; k++) {
		peer_slot *v = &s->evals[k];
		if (!v->registered || v->done || v->lost ||
		    now - v->last_heard <= s->cfg.worker_timeout)
			continue;
		v->lost = 1;
		ps_log_warn("evaluator %u dropped: nothing heard for %.1f s", k,
			    now - v->last_heard);
	}
	if (!dropped)
		return;
	/* Nobody waits for the dropped: a step or a held pull may be due. */
	if (s->cfg.consistency == PS_CONSISTENCY_BSP)
		bsp_try_step(s);
	serve_waiting_pulls(s);
	if (ps_server_training_done(s) && s->t_done == 0) {
		s->t_done = now;
		ps_log_info("training done: %" PRIu64 " updates (%u worker(s) "
			    "lost)", s->st.version, s->st.workers_lost);
	}
}

/* Every evaluator that said hello has said bye, and at least as many as
 * were announced have come: one that is still loading its data when the
 * trainers finish must not find the server gone. */
static int evaluators_done(const ps_server *s)
{
	if (s->num_evals < s->cfg.num_evaluators)
		return 0;
	for (uint32_t k = 0; k < s->num_evals; k++)
		if (!s->evals[k].done && !s->evals[k].lost)
			return 0;
	return 1;
}

int ps_server_restore(ps_server *s, const ps_checkpoint *ck, ps_err *e)
{
	float *state;
	size_t count;
	uint64_t steps;
	int rc;

	if (s->have_model)
		return ps_err_set(e, PS_EINVAL, "the model is already set");
	if (ck->num_workers != s->cfg.num_workers)
		return ps_err_set(e, PS_EINVAL,
				  "the checkpoint is of a run with %u workers, "
				  "this one has %u",
				  ck->num_workers, s->cfg.num_workers);
	if (ck->optim_kind != (uint32_t)s->cfg.optim.kind)
		return ps_err_set(e, PS_EINVAL,
				  "the checkpoint holds %s optimizer state, "
				  "this run uses %s",
				  ps_optim_names[ck->optim_kind],
				  ps_optim_names[s->cfg.optim.kind]);
	rc = create_model(s, &ck->spec, e);
	if (rc != PS_OK)
		return rc;
	ps_optim_state(s->optim, &state, &count, &steps);
	if (s->total != ck->total || s->base != ck->begin || s->n != ck->n ||
	    count != ck->state_count) {
		/* create_model() cut them from the spec and the shard count:
		 * the file holds another cut, or contradicts its own model. */
		rc = ps_err_set(e, PS_EINVAL,
				"the checkpoint holds [%" PRIu64 ", %" PRIu64
				") of %" PRIu64 " weights (shard %u of %u); "
				"this server owns [%" PRIu64 ", %" PRIu64
				") of %" PRIu64 " (shard %u of %u)",
				ck->begin, ck->begin + ck->n, ck->total,
				ck->shard, ck->num_shards, s->base,
				s->base + s->n, s->total, s->cfg.shard,
				s->cfg.num_shards);
		free(s->w);
		free(s->scratch);
		s->w = s->scratch = NULL;
		ps_optim_destroy(&s->optim);
		s->have_model = 0;
		s->n = 0;
		return rc;
	}
	memcpy(s->w, ck->w, s->n * sizeof *s->w);
	s->last_step.worker_id = 0;
	if (count)
		memcpy(state, ck->state, count * sizeof *state);
	ps_optim_set_steps(s->optim, ck->optim_steps);
	for (uint32_t r = 0; r < s->cfg.num_workers; r++) {
		peer_slot *w = &s->workers[r];
		const ps_checkpoint_worker *c = &ck->workers[r];
		w->clock = c->clock;
		w->last_seq = c->last_seq;
		w->seq_mask = c->seq_mask;
		w->pushes = c->pushes;
		w->samples = c->samples;
		w->done = c->done;
		if (c->done)
			s->st.workers_done++;
		if (w->dc_pulled)
			memcpy(w->dc_pulled, s->w, s->n * sizeof *s->w);
	}
	/* A checkpoint of a finished run is resumed to train more: every
	 * worker is expected again. Of a run cut short, only those that had
	 * not said bye are. */
	if (s->st.workers_done == s->cfg.num_workers) {
		for (uint32_t r = 0; r < s->cfg.num_workers; r++)
			s->workers[r].done = 0;
		s->st.workers_done = 0;
		ps_log_info("the checkpoint is of a finished run: expecting "
			    "every worker again");
	}
	s->st.version = ck->version;
	s->st.model_version = ck->model_version;
	s->st.samples = ck->samples;
	s->st.pulls = ck->pulls;
	s->st.pushes_applied = ck->pushes_applied;
	s->st.bsp_steps = ck->bsp_steps;
	s->bsp_clock = ck->bsp_clock;
	s->st.staleness_max = ck->staleness_max;
	memcpy(s->st.staleness_hist, ck->staleness_hist,
	       sizeof s->st.staleness_hist);
	s->st.staleness_sum = ck->staleness_sum;
	s->st.updates_lost = ck->updates_lost;
	s->train_seconds_before = ck->train_seconds;
	s->st.resumed = 1;
	s->st.resumed_version = ck->version;
	s->st.checkpoint_version = ck->version;
	s->t_checkpoint = ps_now();
	return PS_OK;
}

int ps_server_checkpoint(ps_server *s, ps_err *e)
{
	ps_checkpoint ck;
	ps_checkpoint_worker *workers = NULL;
	ps_server_stats st;
	float *state;
	size_t count;
	char path[4096];
	int rc;

	if (!s->cfg.checkpoint_dir)
		return ps_err_set(e, PS_EINVAL, "no checkpoint directory");
	if (!s->have_model)
		return ps_err_set(e, PS_EINVAL, "no model yet: nothing to save");
	workers = calloc(s->cfg.num_workers, sizeof *workers);
	if (!workers)
		return ps_err_set(e, PS_ENOMEM, "out of memory");
	ps_server_get_stats(s, &st);
	memset(&ck, 0, sizeof ck);
	ck.spec = s->spec;
	ck.w = s->w;
	ck.n = s->n;
	ck.begin = s->base;
	ck.total = s->total;
	ck.shard = s->cfg.shard;
	ck.num_shards = s->cfg.num_shards;
	ck.version = st.version;
	ck.model_version = st.model_version;
	ck.optim_kind = (uint32_t)s->cfg.optim.kind;
	ps_optim_state(s->optim, &state, &count, &ck.optim_steps);
	ck.state = state;
	ck.state_count = count;
	ck.consistency = (uint32_t)s->cfg.consistency;
	ck.num_workers = s->cfg.num_workers;
	for (uint32_t r = 0; r < s->cfg.num_workers; r++) {
		const peer_slot *w = &s->workers[r];
		workers[r] = (ps_checkpoint_worker){w->clock, w->last_seq,
						    w->seq_mask, w->pushes,
						    w->samples, w->done};
	}
	ck.workers = workers;
	ck.samples = st.samples;
	ck.pulls = st.pulls;
	ck.pushes_applied = st.pushes_applied;
	ck.bsp_steps = st.bsp_steps;
	ck.bsp_clock = s->bsp_clock;
	ck.staleness_max = st.staleness_max;
	memcpy(ck.staleness_hist, st.staleness_hist, sizeof ck.staleness_hist);
	ck.updates_lost = st.updates_lost;
	ck.staleness_sum = st.staleness_sum;
	ck.train_seconds = st.train_seconds;
	rc = ps_checkpoint_dir(s->cfg.checkpoint_dir, s->cfg.num_shards,
			       s->cfg.shard, path, sizeof path, e);
	if (rc == PS_OK)
		rc = ps_checkpoint_save(path, &ck, s->cfg.checkpoint_keep, path,
					sizeof path, e);
	/* The manifest says how the checkpoints are cut, for a resume onto
	 * another shard count. */
	if (rc == PS_OK && s->cfg.shard == 0)
		rc = ps_checkpoint_write_manifest(s->cfg.checkpoint_dir, &ck, e);
	free(workers);
	s->t_checkpoint = ps_now();
	if (rc != PS_OK)
		return rc;
	s->st.checkpoints++;
	s->st.checkpoint_version = st.version;
	ps_log_debug("checkpoint at version %" PRIu64 ": %s", st.version, path);
	return PS_OK;
}

/* Is a periodic checkpoint due? Under bsp only between steps: a stored
 * gradient that a checkpoint would not hold was already acknowledged. */
static int checkpoint_due(const ps_server *s, double now)
{
	if (!s->cfg.checkpoint_dir || !s->have_model ||
	    s->st.version == s->st.checkpoint_version)
		return 0;
	if (s->cfg.consistency == PS_CONSISTENCY_BSP)
		for (uint32_t r = 0; r < s->cfg.num_workers; r++)
			if (s->workers[r].bsp_batch)
				return 0;
	return (s->cfg.checkpoint_updates &&
		s->st.version - s->st.checkpoint_version >=
			s->cfg.checkpoint_updates) ||
	       (s->cfg.checkpoint_seconds > 0 &&
		now - s->t_checkpoint >= s->cfg.checkpoint_seconds);
}

int ps_server_run(ps_server *s, volatile int *stop, ps_err *e)
{
	double last_msg = ps_now();
	ps_frame f;
	int rc;

	while (!*stop) {
		double now;
		rc = ps_transport_recv(s->t, &f, 200);
		now = ps_now();
		if (rc == PS_OK) {
			last_msg = now;
			(void)ps_server_handle(s, &f);
		} else if (rc == PS_EPROTO) {
			last_msg = now;
			ps_server_count_malformed(s, &f);
		} else if (rc != PS_ETIMEDOUT && rc != PS_EINTR) {
			return ps_err_set(e, rc, "receive failed: %s",
					  ps_strerror(rc));
		}
		ps_server_check_liveness(s, now);
		if (s->cfg.tick)
			s->cfg.tick(s->cfg.tick_arg, s, now);
		if (checkpoint_due(s, now)) {
			ps_err ce = {0};
			/* A failed checkpoint is not the end of training:
			 * say so, and try again at the next one. */
			if (ps_server_checkpoint(s, &ce) != PS_OK)
				ps_log_error("checkpoint failed: %s", ce.msg);
		}
		if (ps_server_training_done(s) &&
		    (evaluators_done(s) || now - s->t_done >= s->cfg.eval_grace))
			return PS_OK;
		if (s->cfg.idle_timeout > 0 &&
		    now - last_msg > s->cfg.idle_timeout)
			return ps_err_set(e, PS_ETIMEDOUT,
					  "no message from any worker for %.0f s "
					  "(%u of %u workers finished); giving up",
					  s->cfg.idle_timeout,
					  s->st.workers_done,
					  s->cfg.num_workers);
	}
	return ps_err_set(e, PS_EINTR, "stopped by a signal");
}

void ps_server_get_stats(const ps_server *s, ps_server_stats *out)
{
	*out = s->st;
	out->train_seconds = s->train_seconds_before;
	if (s->t_first_hello > 0)
		out->train_seconds +=
			(s->t_done > 0 ? s->t_done : ps_now()) - s->t_first_hello;
}

void ps_server_range(const ps_server *s, uint64_t *begin, uint64_t *end,
		     uint64_t *total)
{
	*begin = s->base;
	*end = s->base + s->n;
	*total = s->total;
}

int ps_server_weights(const ps_server *s, const float **w, uint64_t *n,
		      const ps_model_spec **spec)
{
	if (!s->have_model)
		return PS_EINVAL;
	*w = s->w;
	*n = s->n;
	*spec = &s->spec;
	return PS_OK;
}

void ps_server_write_stats_json(const ps_server *s, FILE *f)
{
	ps_server_stats st;
	const ps_server_rejects *r = &st.rejects;
	ps_transport_refusals ts;
	uint64_t applied;

	ps_server_get_stats(s, &st);
	applied = st.pushes_applied;
	fprintf(f, "{\n  \"updates\": %" PRIu64 ",\n  \"samples\": %" PRIu64
		   ",\n  \"pulls\": %" PRIu64 ",\n",
		st.version, st.samples, st.pulls);
	fprintf(f, "  \"train_seconds\": %.3f,\n  \"samples_per_second\": %.1f,\n",
		st.train_seconds,
		st.train_seconds > 0 ? (double)st.samples / st.train_seconds : 0.0);
	fprintf(f, "  \"staleness_mean\": %.4f,\n  \"staleness_max\": %" PRIu64
		   ",\n  \"staleness_histogram\": {",
		applied ? st.staleness_sum / (double)applied : 0.0,
		st.staleness_max);
	static const char *const buckets[8] = {"0",     "1",     "2-3",
					       "4-7",   "8-15",  "16-31",
					       "32-63", "64+"};
	for (int i = 0; i < 8; i++)
		fprintf(f, "%s\"%s\": %" PRIu64, i ? ", " : "", buckets[i],
			st.staleness_hist[i]);
	fprintf(f, "},\n  \"workers\": %u,\n  \"workers_done\": %u,\n",
		s->cfg.num_workers, st.workers_done);
	/* Connections the transport refused (CURVE) count as rejections. */
	ps_transport_get_refusals(s->t, &ts);
	fprintf(f, "  \"rejected\": {\"total\": %" PRIu64
		   ", \"malformed\": %" PRIu64 ", \"version\": %" PRIu64
		   ", \"unknown_worker\": %" PRIu64 ", \"bad_length\": %" PRIu64
		   ", \"nonfinite\": %" PRIu64 ", \"model_mismatch\": %" PRIu64
		   ", \"bad_rank\": %" PRIu64 ", \"send_failed\": %" PRIu64
		   ", \"unauthorized\": %" PRIu64
		   ", \"handshake_failed\": %" PRIu64 "},\n",
		st.rejects_total + ts.unauthorized + ts.handshake_failed,
		r->malformed, r->version, r->unknown_worker,
		r->bad_length, r->nonfinite, r->model_mismatch, r->bad_rank,
		r->send_failed, ts.unauthorized, ts.handshake_failed);
	fprintf(f, "  \"consistency\": \"%s\",\n  \"ssp_bound\": %u,\n"
		   "  \"pushes\": %" PRIu64 ",\n  \"bsp_steps\": %" PRIu64
		   ",\n  \"pulls_waited\": %" PRIu64
		   ",\n  \"pulls_unchanged\": %" PRIu64 ",\n"
		   "  \"clock_lead_max\": %" PRIu64 ",\n"
		   "  \"staleness_lr\": %s,\n  \"dc_lambda\": %g,\n",
		s->cfg.consistency == PS_CONSISTENCY_BSP   ? "bsp"
		: s->cfg.consistency == PS_CONSISTENCY_SSP ? "ssp"
							   : "async",
		s->cfg.ssp_bound, st.pushes_applied, st.bsp_steps,
		st.pulls_waited, st.pulls_unchanged, st.clock_lead_max,
		s->cfg.staleness_lr ? "true" : "false", s->cfg.dc_lambda);
	fprintf(f, "  \"stopped_early\": %s,\n  \"stop_reason\": ",
		st.stopped ? "true" : "false");
	ps_json_string(f, st.stopped ? st.stop_reason : NULL);
	fprintf(f, ",\n  \"weights_restored\": %s,\n  \"model_version\": %" PRIu64
		   ",\n  \"pushes_after_stop\": %" PRIu64 ",\n",
		st.weights_restored ? "true" : "false", st.model_version,
		st.pushes_after_stop);
	fprintf(f, "  \"workers_lost\": %u,\n  \"rejoins\": %u,\n"
		   "  \"duplicates\": %" PRIu64 ",\n  \"too_old\": %" PRIu64
		   ",\n  \"acks_dropped\": %" PRIu64 ",\n"
		   "  \"pulls_dropped\": %" PRIu64 ",\n"
		   "  \"checkpoints\": %" PRIu64 ",\n"
		   "  \"checkpoint_version\": %" PRIu64 ",\n"
		   "  \"resumed\": %s,\n  \"resumed_version\": %" PRIu64
		   ",\n  \"updates_lost\": %" PRIu64 ",\n",
		st.workers_lost, st.rejoins, st.duplicates, st.too_old,
		st.acks_dropped, st.pulls_dropped, st.checkpoints,
		st.checkpoint_version,
		st.resumed ? "true" : "false", st.resumed_version,
		st.updates_lost);
	fprintf(f, "  \"shard\": %u,\n  \"num_shards\": %u,\n"
		   "  \"range\": [%" PRIu64 ", %" PRIu64 "],\n"
		   "  \"num_params\": %" PRIu64 ",\n"
		   "  \"apply_seconds\": %.6f,\n",
		s->cfg.shard, s->cfg.num_shards, s->base, s->base + s->n,
		s->total, st.apply_seconds);
	fprintf(f, "  \"per_worker\": [");
	for (uint32_t i = 0; i < s->cfg.num_workers; i++)
		fprintf(f, "%s{\"rank\": %u, \"pushes\": %" PRIu64
			   ", \"samples\": %" PRIu64 ", \"done\": %s"
			   ", \"lost\": %s, \"last_seq\": %" PRIu64 "}",
			i ? ", " : "", i, s->workers[i].pushes,
			s->workers[i].samples,
			s->workers[i].done ? "true" : "false",
			s->workers[i].lost ? "true" : "false",
			s->workers[i].last_seq);
	fprintf(f, "]\n}\n");
}
