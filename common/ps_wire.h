/*
 * ps_wire: the protocol messages as plain C records, and their encoding to
 * and decoding from the protobuf Envelope of proto/ps.proto. This is the
 * only module that sees the generated protobuf-c code. Tensors (weights,
 * gradients) never pass through here: they travel as a separate raw
 * frame, checked by ps_wire_check_tensor().
 */
#ifndef PS_WIRE_H
#define PS_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "ps_error.h"
#include "ps_model.h"

#define PS_PROTOCOL_VERSION 1

/* Largest encoded envelope accepted or produced. Tensors are separate,
 * so envelopes stay small; anything larger is malformed. */
#define PS_WIRE_HEAD_MAX 2048

#define PS_WIRE_ERRMSG_MAX 256
/* Hello and Welcome's shared_memory_host, with its NUL. */
#define PS_WIRE_SHM_HOST_MAX 96

/* Values equal the Envelope oneof field numbers. */
enum ps_msg_kind {
	PS_MSG_NONE = 0,
	PS_MSG_HELLO = 10,
	PS_MSG_WELCOME = 11,
	PS_MSG_PULL = 12,
	PS_MSG_WEIGHTS = 13,
	PS_MSG_PUSH = 14,
	PS_MSG_ACK = 15,
	PS_MSG_ERROR = 16,
	PS_MSG_BYE = 17,
	PS_MSG_HEARTBEAT = 18,
	PS_MSG_STOP = 21,
};

enum ps_role {
	PS_ROLE_UNSPECIFIED = 0,
	PS_ROLE_WORKER = 1,
	PS_ROLE_EVALUATOR = 2,
};

/* Values equal proto ErrorCode. */
enum ps_wire_errcode {
	PS_WIRE_ERR_UNSPECIFIED = 0,
	PS_WIRE_ERR_MALFORMED = 1,
	PS_WIRE_ERR_VERSION = 2,
	PS_WIRE_ERR_UNKNOWN_WORKER = 3,
	PS_WIRE_ERR_BAD_LENGTH = 4,
	PS_WIRE_ERR_NONFINITE = 5,
	PS_WIRE_ERR_MODEL_MISMATCH = 6,
	PS_WIRE_ERR_BAD_RANK = 7,
	PS_WIRE_ERR_SHUTTING_DOWN = 8,
	PS_WIRE_ERR_TOO_OLD = 9,
};

typedef struct ps_msg_hello {
	enum ps_role role;
	uint32_t rank;
	ps_model_spec model;
	uint64_t applied_pushes; /* workers: applied since the last welcome */
	int rejoin;              /* registered with this run's server before */
	/* Takes tensors lent through shared memory, on this machine (see
	 * proto Hello); "" when not. */
	char shm_host[PS_WIRE_SHM_HOST_MAX];
} ps_msg_hello;

typedef struct ps_msg_welcome {
	uint32_t worker_id;
	uint64_t num_params, begin, end, version;
	uint32_t num_workers, shard, num_shards;
	/* Workers: this rank's standing, to carry on from (proto Welcome). */
	uint64_t clock, last_seq, pushes;
	double heartbeat_seconds;
	char shm_host[PS_WIRE_SHM_HOST_MAX]; /* as the hello's, the server's */
} ps_msg_welcome;

typedef struct ps_msg_pull {
	uint64_t begin, end, clock;
	uint64_t held_seq, held_version; /* see Pull in proto/ps.proto */
} ps_msg_pull;

typedef struct ps_msg_weights {
	uint64_t version, begin, end;
	int training_done;
	int stop;
	double train_seconds;
	float sgd_lr; /* >= 0 and finite; see Weights in proto/ps.proto */
	int unchanged; /* no tensor: the weights the pull said it holds */
} ps_msg_weights;

typedef struct ps_msg_push {
	uint64_t base_version, begin, end;
	uint32_t batch_size;
	float loss;
	uint64_t clock, seq;
} ps_msg_push;

typedef struct ps_msg_ack {
	uint64_t version, staleness, seq;
	int stop;
	int duplicate; /* seq was applied before: not applied again */
} ps_msg_ack;

typedef struct ps_msg_heartbeat {
	uint64_t version;
	uint64_t pull_waiting; /* request id of the pull held back; 0 none */
} ps_msg_heartbeat;

typedef struct ps_msg_error {
	enum ps_wire_errcode code;
	char message[PS_WIRE_ERRMSG_MAX];
} ps_msg_error;

typedef struct ps_msg_bye {
	uint64_t samples, steps;
} ps_msg_bye;

/* An evaluator's request to stop training early; when it carries a tensor
 * (end > begin), those weights replace the server's. */
typedef struct ps_msg_stop {
	char reason[PS_WIRE_ERRMSG_MAX];
	uint64_t best_version, begin, end;
} ps_msg_stop;

/* One protocol message, without its tensor. Plain value record. */
typedef struct ps_msg {
	uint32_t protocol;
	uint64_t request_id;
	uint32_t worker_id;
	enum ps_msg_kind kind;
	union {
		ps_msg_hello hello;
		ps_msg_welcome welcome;
		ps_msg_pull pull;
		ps_msg_weights weights;
		ps_msg_push push;
		ps_msg_ack ack;
		ps_msg_error error;
		ps_msg_bye bye;
		ps_msg_stop stop;
		ps_msg_heartbeat heartbeat;
	} u;
} ps_msg;

/* Start a message of the given kind: zeroed, protocol version set. */
void ps_msg_init(ps_msg *m, enum ps_msg_kind kind, uint64_t request_id,
		 uint32_t worker_id);

/* Name of a kind ("push"), for logs. */
const char *ps_msg_kind_name(enum ps_msg_kind kind);

/* Encode m into buf[cap]; *len gets the encoded size.
 * Errors: PS_EINVAL (unknown kind), PS_ERANGE (cap too small; cap of
 * PS_WIRE_HEAD_MAX always suffices). */
int ps_wire_encode(const ps_msg *m, uint8_t *buf, size_t cap,
		   size_t *len) PS_WUR;

/* Decode and validate an envelope. Fields are checked that can be checked
 * without server state: protocol version, a known body, begin <= end,
 * string lengths, role and batch size values.
 * Errors: PS_EPROTO (not a valid envelope, too large, a bad field; e->msg
 * says which), PS_EVERSION (valid envelope of another protocol version;
 * out->request_id is still filled so the error reply can echo it). */
int ps_wire_decode(const uint8_t *buf, size_t len, ps_msg *out,
		   ps_err *e) PS_WUR;

/* Check that a message's tensor frame fits it: push and weights need
 * exactly (end - begin) float32 values (weights marked unchanged none),
 * stop either none or exactly
 * (end - begin); every other kind needs none.
 * Errors: PS_EPROTO with e->msg giving both lengths. */
int ps_wire_check_tensor(const ps_msg *m, size_t tensor_bytes,
			 ps_err *e) PS_WUR;

/* PS_OK when all count float32 values at p (any alignment) are finite;
 * PS_ENONFINITE otherwise, with the first bad index in *bad_index. */
int ps_wire_check_finite(const void *p, size_t count,
			 size_t *bad_index) PS_WUR;

/* Protocol error code that a local error code maps to, for replies. */
enum ps_wire_errcode ps_wire_errcode_from(int ps_error);

#endif
