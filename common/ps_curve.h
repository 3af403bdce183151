/*
 * ps_curve: CURVE keys for the ZeroMQ transport, without ZeroMQ itself:
 * Z85 text (ZeroMQ RFC 32), key files, the set of client keys a server
 * lets in, and the ZAP decision (ZeroMQ RFC 27) on one handshake. The
 * ZeroMQ backend (ps_transport_zmq.c) makes key pairs and runs the
 * handshakes; docs/SECURITY.md says what CURVE protects and what not.
 */
#ifndef PS_CURVE_H
#define PS_CURVE_H

#include <stddef.h>
#include <stdint.h>

#include "ps_error.h"

#define PS_CURVE_KEY_LEN 32 /* a Curve25519 key, in bytes */
#define PS_CURVE_Z85_LEN 40 /* the same key as Z85 text */
/* Client keys one server accepts at most. */
#define PS_CURVE_KEYS_MAX 65536

/* File names ps-keygen writes: NAME.key (public, shareable) and
 * NAME.key_secret (secret, mode 0600). */
#define PS_CURVE_PUBLIC_SUFFIX ".key"
#define PS_CURVE_SECRET_SUFFIX ".key_secret"

/* key as 40 characters of Z85 and a NUL. */
void ps_curve_z85_encode(char out[PS_CURVE_Z85_LEN + 1],
			 const uint8_t key[PS_CURVE_KEY_LEN]);

/* Decode exactly PS_CURVE_Z85_LEN characters of text (len must be that)
 * into key. Errors: PS_EINVAL (wrong length, a character outside the Z85
 * alphabet, or a group of five worth more than 32 bits). */
int ps_curve_z85_decode(uint8_t key[PS_CURVE_KEY_LEN], const char *text,
			size_t len) PS_WUR;

enum ps_curve_key_kind {
	PS_CURVE_PUBLIC = 0,
	PS_CURVE_SECRET = 1,
};

/* Warnings ps_curve_key_read() reports through its flags. */
#define PS_CURVE_WARN_MODE 1u /* a secret key file group or others may read */

/* Read a key file: one 40-character Z85 key, blanks around it allowed.
 * A secret key file that group or others may read is still read, and
 * PS_CURVE_WARN_MODE set in *warnings (may be NULL; the caller warns).
 * A file named like the other kind (a public key given as a secret one,
 * NAME.key_secret given as a public one) is refused, since the mix-up
 * fails later with a far less clear error, or hands a secret around.
 * Errors: PS_ENOENT (no such file), PS_EIO (unreadable, not a regular
 * file), PS_EFORMAT (not one Z85 key of 40 characters), PS_EINVAL
 * (named like the other kind); e->msg names the file. */
int ps_curve_key_read(uint8_t key[PS_CURVE_KEY_LEN], const char *path,
		      enum ps_curve_key_kind kind, unsigned *warnings,
		      ps_err *e) PS_WUR;

/* Write base.key (mode 0644) and base.key_secret (mode 0600), each one
 * Z85 line, through temporary files renamed into place. Existing files
 * are kept unless overwrite. Errors: PS_EINVAL (a file exists and
 * !overwrite; nothing written), PS_EIO; e->msg names the file. */
int ps_curve_keypair_write(const char *base,
			   const uint8_t public_key[PS_CURVE_KEY_LEN],
			   const uint8_t secret_key[PS_CURVE_KEY_LEN],
			   int overwrite, ps_err *e) PS_WUR;

/* A set of public keys: the clients a server lets in. */
typedef struct ps_curve_keyset ps_curve_keyset;

/* An empty set. Errors: PS_ENOMEM. Caller owns the result; release with
 * ps_curve_keyset_destroy(). */
int ps_curve_keyset_new(ps_curve_keyset **out) PS_WUR;

/* A copy of ks. Errors: PS_ENOMEM. Caller owns the result. */
int ps_curve_keyset_copy(ps_curve_keyset **out,
			 const ps_curve_keyset *ks) PS_WUR;

/* Add key (a key already there is not added twice). Errors: PS_ENOMEM,
 * PS_ERANGE (PS_CURVE_KEYS_MAX keys already). */
int ps_curve_keyset_add(ps_curve_keyset *ks,
			const uint8_t key[PS_CURVE_KEY_LEN]) PS_WUR;

/* 1 when key is in ks, else 0. */
int ps_curve_keyset_contains(const ps_curve_keyset *ks,
			     const uint8_t key[PS_CURVE_KEY_LEN]);

size_t ps_curve_keyset_count(const ps_curve_keyset *ks);

/* Every public key file (NAME.key) in directory dir; other files are
 * ignored, and a secret key file (NAME.key_secret) there is logged as a
 * warning. Errors: PS_ENOENT (no such directory), PS_EIO (unreadable),
 * PS_EFORMAT (a .key file that is not a key), PS_EINVAL (no .key file at
 * all), PS_ERANGE (more than PS_CURVE_KEYS_MAX), PS_ENOMEM; e->msg names
 * the directory or file. Caller owns the result. */
int ps_curve_keyset_load_dir(ps_curve_keyset **out, const char *dir,
			     ps_err *e) PS_WUR;

/* Accepts NULL and *ksp == NULL; sets *ksp to NULL. */
void ps_curve_keyset_destroy(ps_curve_keyset **ksp);

/* One frame of a ZAP request. Borrowed. */
typedef struct ps_zap_frame {
	const uint8_t *data;
	size_t len;
} ps_zap_frame;

enum ps_zap_verdict {
	PS_ZAP_ALLOW = 0,       /* CURVE, and the client key is authorized */
	PS_ZAP_DENY_KEY,        /* CURVE with a key not in the set */
	PS_ZAP_DENY_MECHANISM,  /* NULL or PLAIN: no client key at all */
	PS_ZAP_BAD_REQUEST,     /* not a ZAP 1.0 request */
};

/* The answer to one ZAP request: the frames of the reply are "1.0",
 * the request id (frame 1 of the request, echoed), status, text,
 * user_id and an empty metadata frame. */
typedef struct ps_zap_reply {
	enum ps_zap_verdict verdict;
	const char *status;   /* "200", "400" or "500"; static */
	const char *text;     /* for the client's log; static */
	char user_id[PS_CURVE_Z85_LEN + 1]; /* the client key in Z85, or "" */
	int have_key;
	uint8_t key[PS_CURVE_KEY_LEN];      /* when have_key */
	char address[64];     /* the client's address, for logs, or "" */
} ps_zap_reply;

/* Decide a ZAP request of n frames (RFC 27: version "1.0", request id,
 * domain, address, routing id, mechanism, credentials...): allow a CURVE
 * client whose public key is in authorized, refuse everything else with
 * 400 (a malformed request with 500). Pure: no I/O. */
void ps_curve_zap_decide(const ps_curve_keyset *authorized,
			 const ps_zap_frame *req, size_t n,
			 ps_zap_reply *out);

#endif
