/*
 * Unit tests for ps_curve: Z85 against RFC 32's vector and its error
 * cases, key files (good, blank-padded, every way to be wrong, the mode
 * warning, a secret key where a public one is expected and the reverse),
 * writing key pairs, key sets, loading an authorized directory, and the
 * ZAP decision on every kind of request. Files live in a mkdtemp
 * directory; no ZeroMQ.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ps_curve.h"
#include "ps_error.h"
#include "test_rmtree.h"

static char tmpdir[] = "/tmp/test_ps_curve.XXXXXX";

#define TPATH(var, name)                                                       \
	char var[PATH_MAX];                                                    \
	snprintf(var, sizeof var, "%s/%s", tmpdir, name)

/* A key pair from the ZeroMQ guide's examples: 40 Z85 characters each. */
static const char pub_z85[] = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
static const char sec_z85[] = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6";

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

static void write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(path, mode), 0);
}

static void key_of(uint8_t key[PS_CURVE_KEY_LEN], uint8_t fill)
{
	memset(key, fill, PS_CURVE_KEY_LEN);
}

/* --- Z85 ------------------------------------------------------------------ */

/* RFC 32: the bytes 86 4F D2 6F B5 59 F7 5B are "HelloWorld". */
static void test_curve_z85_rfc_vector(void **state)
{
	(void)state;
	static const uint8_t hello[8] = {0x86, 0x4F, 0xD2, 0x6F,
					 0xB5, 0x59, 0xF7, 0x5B};
	uint8_t key[PS_CURVE_KEY_LEN] = {0}, back[PS_CURVE_KEY_LEN];
	char text[PS_CURVE_Z85_LEN + 1];

	memcpy(key, hello, sizeof hello);
	ps_curve_z85_encode(text, key);
	assert_int_equal(strlen(text), PS_CURVE_Z85_LEN);
	assert_memory_equal(text, "HelloWorld", 10);
	/* Zero bytes are '0's. */
	assert_string_equal(text + 10, "000000000000000000000000000000");
	assert_int_equal(ps_curve_z85_decode(back, text, PS_CURVE_Z85_LEN),
			 PS_OK);
	assert_memory_equal(back, key, sizeof key);
}

static void test_curve_z85_round_trip(void **state)
{
	(void)state;
	uint8_t key[PS_CURVE_KEY_LEN], back[PS_CURVE_KEY_LEN];
	char text[PS_CURVE_Z85_LEN + 1];

	assert_int_equal(ps_curve_z85_decode(key, pub_z85, PS_CURVE_Z85_LEN),
			 PS_OK);
	ps_curve_z85_encode(text, key);
	assert_string_equal(text, pub_z85);
	for (int fill = 0; fill < 256; fill += 51) {
		key_of(key, (uint8_t)fill);
		ps_curve_z85_encode(text, key);
		assert_int_equal(ps_curve_z85_decode(back, text, strlen(text)),
				 PS_OK);
		assert_memory_equal(back, key, sizeof key);
	}
	/* All ones is the largest value a group of five may have. */
	key_of(key, 0xff);
	ps_curve_z85_encode(text, key);
	assert_memory_equal(text, "%nSc0", 5);
}

static void test_curve_z85_refuses_bad_text(void **state)
{
	(void)state;
	uint8_t key[PS_CURVE_KEY_LEN], before[PS_CURVE_KEY_LEN];
	char text[PS_CURVE_Z85_LEN + 1];

	key_of(key, 7);
	memcpy(before, key, sizeof key);
	assert_int_equal(ps_curve_z85_decode(key, pub_z85, 39), PS_EINVAL);
	assert_int_equal(ps_curve_z85_decode(key, pub_z85, 41), PS_EINVAL);
	/* Characters outside the alphabet: quote, comma, space, NUL. */
	const char bad[] = "\", \0";
	for (size_t i = 0; i < sizeof bad - 1 + 1; i++) {
		memcpy(text, pub_z85, sizeof text);
		text[17] = bad[i];
		assert_int_equal(ps_curve_z85_decode(key, text, PS_CURVE_Z85_LEN),
				 PS_EINVAL);
	}
	/* A group worth more than 32 bits ("%nSc1" is 2^32). */
	memcpy(text, pub_z85, sizeof text);
	memcpy(text + 5, "%nSc1", 5);
	assert_int_equal(ps_curve_z85_decode(key, text, PS_CURVE_Z85_LEN),
			 PS_EINVAL);
	memcpy(text + 5, "#####", 5);
	assert_int_equal(ps_curve_z85_decode(key, text, PS_CURVE_Z85_LEN),
			 PS_EINVAL);
	/* A refused decode leaves the key alone. */
	assert_memory_equal(key, before, sizeof key);
}

/* --- key files ------------------------------------------------------------ */

static void test_curve_key_read_good_files(void **state)
{
	(void)state;
	uint8_t key[PS_CURVE_KEY_LEN], want[PS_CURVE_KEY_LEN];
	unsigned warnings = 99;
	char text[128];
	TPATH(pub, "good.key");
	TPATH(padded, "padded.key");
	TPATH(sec, "good.key_secret");
	TPATH(other, "any-name");

	assert_int_equal(ps_curve_z85_decode(want, pub_z85, PS_CURVE_Z85_LEN),
			 PS_OK);
	snprintf(text, sizeof text, "%s\n", pub_z85);
	write_file(pub, text, 0644);
	assert_int_equal(ps_curve_key_read(key, pub, PS_CURVE_PUBLIC,
					   &warnings, NULL),
			 PS_OK);
	assert_memory_equal(key, want, sizeof key);
	assert_int_equal(warnings, 0);
	snprintf(text, sizeof text, " \t\r\n%s \r\n\n", pub_z85);
	write_file(padded, text, 0644);
	assert_int_equal(ps_curve_key_read(key, padded, PS_CURVE_PUBLIC, NULL,
					   NULL),
			 PS_OK);
	assert_memory_equal(key, want, sizeof key);
	/* Without a newline, and under a name of no particular form. */
	write_file(other, pub_z85, 0600);
	assert_int_equal(ps_curve_key_read(key, other, PS_CURVE_SECRET,
					   &warnings, NULL),
			 PS_OK);
	assert_int_equal(warnings, 0);
	snprintf(text, sizeof text, "%s\n", sec_z85);
	write_file(sec, text, 0600);
	assert_int_equal(ps_curve_key_read(key, sec, PS_CURVE_SECRET,
					   &warnings, NULL),
			 PS_OK);
	assert_int_equal(ps_curve_z85_decode(want, sec_z85, PS_CURVE_Z85_LEN),
			 PS_OK);
	assert_memory_equal(key, want, sizeof key);
	assert_int_equal(warnings, 0);
}

static void test_curve_key_read_warns_on_loose_secret(void **state)
{
	(void)state;
	uint8_t key[PS_CURVE_KEY_LEN];
	unsigned warnings = 0;
	TPATH(sec, "loose.key_secret");
	TPATH(grp, "group.key_secret");
	TPATH(pub, "loose.key");

	write_file(sec, sec_z85, 0644);
	assert_int_equal(ps_curve_key_read(key, sec, PS_CURVE_SECRET,
					   &warnings, NULL),
			 PS_OK);
	assert_int_equal(warnings, PS_CURVE_WARN_MODE);
	write_file(grp, sec_z85, 0640);
	warnings = 0;
	assert_int_equal(ps_curve_key_read(key, grp, PS_CURVE_SECRET,
					   &warnings, NULL),
			 PS_OK);
	assert_int_equal(warnings, PS_CURVE_WARN_MODE);
	/* A public key may be read by anyone. */
	write_file(pub, pub_z85, 0644);
	assert_int_equal(ps_curve_key_read(key, pub, PS_CURVE_PUBLIC,
					   &warnings, NULL),
			 PS_OK);
	assert_int_equal(warnings, 0);
	/* NULL warnings is allowed. */
	assert_int_equal(ps_curve_key_read(key, sec, PS_CURVE_SECRET, NULL,
					   NULL),
			 PS_OK);
}

static void expect_read_error(const char *path, enum ps_curve_key_kind kind,
			      int want, const char *in_msg)
{
	uint8_t key[PS_CURVE_KEY_LEN], before[PS_CURVE_KEY_LEN];
	ps_err e = {0, ""};

	key_of(key, 0x5a);
	memcpy(before, key, sizeof key);
	assert_int_equal(ps_curve_key_read(key, path, kind, NULL, &e), want);
	assert_int_equal(e.code, want);
	if (!strstr(e.msg, in_msg))
		fail_msg("'%s' does not say '%s'", e.msg, in_msg);
	assert_memory_equal(key, before, sizeof key);
}

static void test_curve_key_read_refuses_bad_files(void **state)
{
	(void)state;
	char text[1024];
	TPATH(missing, "missing.key");
	TPATH(empty, "empty.key");
	TPATH(shortk, "short.key");
	TPATH(longk, "long.key");
	TPATH(two, "two.key");
	TPATH(badch, "badchar.key");
	TPATH(big, "big.key");
	TPATH(dir, "adir.key");
	TPATH(sec, "mixup.key_secret");
	TPATH(pub, "mixup.key");

	expect_read_error(missing, PS_CURVE_PUBLIC, PS_ENOENT, missing);
	write_file(empty, "", 0644);
	expect_read_error(empty, PS_CURVE_PUBLIC, PS_EFORMAT, "0 characters");
	write_file(shortk, "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf\n", 0644);
	expect_read_error(shortk, PS_CURVE_PUBLIC, PS_EFORMAT, "39 characters");
	snprintf(text, sizeof text, "%sA\n", pub_z85);
	write_file(longk, text, 0644);
	expect_read_error(longk, PS_CURVE_PUBLIC, PS_EFORMAT, "41 characters");
	snprintf(text, sizeof text, "%s\n%s\n", pub_z85, pub_z85);
	write_file(two, text, 0644);
	expect_read_error(two, PS_CURVE_PUBLIC, PS_EFORMAT, "81 characters");
	snprintf(text, sizeof text, "%s\n", pub_z85);
	text[3] = '"';
	write_file(badch, text, 0644);
	expect_read_error(badch, PS_CURVE_PUBLIC, PS_EFORMAT, "Z85");
	memset(text, 'a', sizeof text - 1);
	text[sizeof text - 1] = '\0';
	write_file(big, text, 0644);
	expect_read_error(big, PS_CURVE_PUBLIC, PS_EFORMAT, "too large");
	assert_int_equal(mkdir(dir, 0700), 0);
	expect_read_error(dir, PS_CURVE_PUBLIC, PS_EIO, "not a regular file");
	/* Named like the other kind: refused before it is opened. */
	write_file(sec, sec_z85, 0600);
	expect_read_error(sec, PS_CURVE_PUBLIC, PS_EINVAL, "secret key file");
	write_file(pub, pub_z85, 0644);
	expect_read_error(pub, PS_CURVE_SECRET, PS_EINVAL, "public key file");
	/* Unreadable (root reads whatever the mode). */
	if (geteuid() != 0) {
		TPATH(locked, "locked.key");
		write_file(locked, pub_z85, 0000);
		expect_read_error(locked, PS_CURVE_PUBLIC, PS_EIO, locked);
	}
}

static void test_curve_keypair_write(void **state)
{
	(void)state;
	uint8_t pub[PS_CURVE_KEY_LEN], sec[PS_CURVE_KEY_LEN];
	uint8_t pub2[PS_CURVE_KEY_LEN], sec2[PS_CURVE_KEY_LEN];
	uint8_t got[PS_CURVE_KEY_LEN];
	unsigned warnings = 1;
	struct stat st;
	ps_err e = {0, ""};
	TPATH(base, "pair");
	TPATH(pub_path, "pair.key");
	TPATH(sec_path, "pair.key_secret");
	TPATH(nodir, "no-such-dir/pair");

	key_of(pub, 1);
	key_of(sec, 2);
	assert_int_equal(ps_curve_keypair_write(base, pub, sec, 0, &e), PS_OK);
	assert_int_equal(stat(pub_path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);
	assert_int_equal(st.st_size, PS_CURVE_Z85_LEN + 1);
	assert_int_equal(stat(sec_path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(ps_curve_key_read(got, pub_path, PS_CURVE_PUBLIC, NULL,
					   &e),
			 PS_OK);
	assert_memory_equal(got, pub, sizeof got);
	assert_int_equal(ps_curve_key_read(got, sec_path, PS_CURVE_SECRET,
					   &warnings, &e),
			 PS_OK);
	assert_memory_equal(got, sec, sizeof got);
	assert_int_equal(warnings, 0);

	/* Existing files are kept unless overwrite. */
	key_of(pub2, 3);
	key_of(sec2, 4);
	assert_int_equal(ps_curve_keypair_write(base, pub2, sec2, 0, &e),
			 PS_EINVAL);
	assert_non_null(strstr(e.msg, "exists"));
	assert_int_equal(ps_curve_key_read(got, sec_path, PS_CURVE_SECRET, NULL,
					   &e),
			 PS_OK);
	assert_memory_equal(got, sec, sizeof got);
	assert_int_equal(ps_curve_keypair_write(base, pub2, sec2, 1, &e), PS_OK);
	assert_int_equal(ps_curve_key_read(got, pub_path, PS_CURVE_PUBLIC, NULL,
					   &e),
			 PS_OK);
	assert_memory_equal(got, pub2, sizeof got);
	assert_int_equal(stat(sec_path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);

	/* A directory that does not exist. */
	assert_int_equal(ps_curve_keypair_write(nodir, pub, sec, 0, &e), PS_EIO);
	assert_non_null(strstr(e.msg, "no-such-dir"));
}

/* --- key sets ------------------------------------------------------------- */

static void test_curve_keyset_basics(void **state)
{
	(void)state;
	ps_curve_keyset *ks = NULL, *copy = NULL;
	uint8_t a[PS_CURVE_KEY_LEN], b[PS_CURVE_KEY_LEN], c[PS_CURVE_KEY_LEN];

	key_of(a, 10);
	key_of(b, 20);
	key_of(c, 30);
	assert_int_equal(ps_curve_keyset_new(&ks), PS_OK);
	assert_int_equal(ps_curve_keyset_count(ks), 0);
	assert_false(ps_curve_keyset_contains(ks, a));
	assert_int_equal(ps_curve_keyset_add(ks, c), PS_OK);
	assert_int_equal(ps_curve_keyset_add(ks, a), PS_OK);
	assert_int_equal(ps_curve_keyset_add(ks, c), PS_OK); /* again */
	assert_int_equal(ps_curve_keyset_count(ks), 2);
	assert_true(ps_curve_keyset_contains(ks, a));
	assert_false(ps_curve_keyset_contains(ks, b));
	assert_true(ps_curve_keyset_contains(ks, c));
	/* One byte off is another key. */
	b[0] = 10;
	assert_false(ps_curve_keyset_contains(ks, b));

	assert_int_equal(ps_curve_keyset_copy(&copy, ks), PS_OK);
	ps_curve_keyset_destroy(&ks);
	assert_null(ks);
	assert_int_equal(ps_curve_keyset_count(copy), 2);
	assert_true(ps_curve_keyset_contains(copy, a));
	assert_true(ps_curve_keyset_contains(copy, c));
	ps_curve_keyset_destroy(&copy);
	/* NULL is an empty set; destroy accepts NULL. */
	assert_false(ps_curve_keyset_contains(NULL, a));
	assert_int_equal(ps_curve_keyset_count(NULL), 0);
	ps_curve_keyset_destroy(NULL);
	ps_curve_keyset_destroy(&copy);
}

static void test_curve_keyset_is_bounded(void **state)
{
	(void)state;
	ps_curve_keyset *ks = NULL;
	uint8_t key[PS_CURVE_KEY_LEN] = {0};

	assert_int_equal(ps_curve_keyset_new(&ks), PS_OK);
	/* Increasing keys: each goes at the end, so this stays quick. */
	for (uint32_t i = 0; i < PS_CURVE_KEYS_MAX; i++) {
		key[0] = (uint8_t)(i >> 16);
		key[1] = (uint8_t)(i >> 8);
		key[2] = (uint8_t)i;
		assert_int_equal(ps_curve_keyset_add(ks, key), PS_OK);
	}
	assert_int_equal(ps_curve_keyset_count(ks), PS_CURVE_KEYS_MAX);
	key[3] = 1;
	assert_int_equal(ps_curve_keyset_add(ks, key), PS_ERANGE);
	/* A key already there is no new key. */
	key[3] = 0;
	assert_int_equal(ps_curve_keyset_add(ks, key), PS_OK);
	assert_int_equal(ps_curve_keyset_count(ks), PS_CURVE_KEYS_MAX);
	ps_curve_keyset_destroy(&ks);
}

static void test_curve_keyset_load_dir(void **state)
{
	(void)state;
	ps_curve_keyset *ks = NULL;
	uint8_t a[PS_CURVE_KEY_LEN], b[PS_CURVE_KEY_LEN];
	char text[PS_CURVE_Z85_LEN + 2];
	ps_err e = {0, ""};
	TPATH(dir, "authorized");
	TPATH(akey, "authorized/worker-0.key");
	TPATH(bkey, "authorized/worker-1.key");
	TPATH(dup, "authorized/copy-of-0.key");
	TPATH(secret, "authorized/worker-0.key_secret");
	TPATH(note, "authorized/README");
	TPATH(empty, "empty");
	TPATH(only_secret, "only-secret");
	TPATH(only_secret_file, "only-secret/x.key_secret");
	TPATH(broken, "broken");
	TPATH(broken_file, "broken/bad.key");

	assert_int_equal(mkdir(dir, 0700), 0);
	key_of(a, 0x11);
	key_of(b, 0x22);
	ps_curve_z85_encode(text, a);
	write_file(akey, text, 0644);
	write_file(dup, text, 0644);
	ps_curve_z85_encode(text, b);
	strcat(text, "\n");
	write_file(bkey, text, 0644);
	/* Ignored: a secret key (with a warning) and other files. */
	write_file(secret, sec_z85, 0600);
	write_file(note, "the workers' keys\n", 0644);
	assert_int_equal(ps_curve_keyset_load_dir(&ks, dir, &e), PS_OK);
	assert_int_equal(ps_curve_keyset_count(ks), 2);
	assert_true(ps_curve_keyset_contains(ks, a));
	assert_true(ps_curve_keyset_contains(ks, b));
	ps_curve_keyset_destroy(&ks);

	/* Errors leave *out NULL and name the culprit. */
	ks = (ps_curve_keyset *)&e; /* not NULL before the call */
	assert_int_equal(ps_curve_keyset_load_dir(&ks, "/nonexistent/keys", &e),
			 PS_ENOENT);
	assert_null(ks);
	assert_non_null(strstr(e.msg, "/nonexistent/keys"));
	assert_int_equal(mkdir(empty, 0700), 0);
	assert_int_equal(ps_curve_keyset_load_dir(&ks, empty, &e), PS_EINVAL);
	assert_null(ks);
	assert_non_null(strstr(e.msg, "no public key file"));
	assert_int_equal(mkdir(only_secret, 0700), 0);
	write_file(only_secret_file, sec_z85, 0600);
	assert_int_equal(ps_curve_keyset_load_dir(&ks, only_secret, &e),
			 PS_EINVAL);
	assert_null(ks);
	assert_int_equal(mkdir(broken, 0700), 0);
	write_file(broken_file, "not a key\n", 0644);
	assert_int_equal(ps_curve_keyset_load_dir(&ks, broken, &e), PS_EFORMAT);
	assert_null(ks);
	assert_non_null(strstr(e.msg, "bad.key"));
	/* A file where the directory should be. */
	assert_int_equal(ps_curve_keyset_load_dir(&ks, akey, &e), PS_EIO);
	assert_null(ks);
}

/* --- ZAP ------------------------------------------------------------------ */

/* A ZAP request as libzmq sends it for a CURVE client. */
typedef struct zap_req {
	ps_zap_frame f[8];
	size_t n;
} zap_req;

static void frame_str(ps_zap_frame *f, const char *s)
{
	f->data = (const uint8_t *)s;
	f->len = strlen(s);
}

static zap_req curve_request(const uint8_t *key)
{
	zap_req r;
	memset(&r, 0, sizeof r);
	frame_str(&r.f[0], "1.0");
	frame_str(&r.f[1], "42");
	frame_str(&r.f[2], "pserver");
	frame_str(&r.f[3], "127.0.0.1");
	frame_str(&r.f[4], "");
	frame_str(&r.f[5], "CURVE");
	r.f[6].data = key;
	r.f[6].len = PS_CURVE_KEY_LEN;
	r.n = 7;
	return r;
}

static ps_curve_keyset *one_key_set(const uint8_t *key)
{
	ps_curve_keyset *ks = NULL;
	assert_int_equal(ps_curve_keyset_new(&ks), PS_OK);
	assert_int_equal(ps_curve_keyset_add(ks, key), PS_OK);
	return ks;
}

static void test_curve_zap_allows_authorized_key(void **state)
{
	(void)state;
	uint8_t key[PS_CURVE_KEY_LEN];
	char z85[PS_CURVE_Z85_LEN + 1];
	ps_zap_reply r;

	key_of(key, 0x33);
	ps_curve_keyset *ks = one_key_set(key);
	zap_req q = curve_request(key);
	ps_curve_zap_decide(ks, q.f, q.n, &r);
	assert_int_equal(r.verdict, PS_ZAP_ALLOW);
	assert_string_equal(r.status, "200");
	ps_curve_z85_encode(z85, key);
	assert_string_equal(r.user_id, z85);
	assert_true(r.have_key);
	assert_memory_equal(r.key, key, sizeof key);
	assert_string_equal(r.address, "127.0.0.1");
	ps_curve_keyset_destroy(&ks);
}

static void test_curve_zap_refuses_other_key(void **state)
{
	(void)state;
	uint8_t key[PS_CURVE_KEY_LEN], other[PS_CURVE_KEY_LEN];
	ps_zap_reply r;

	key_of(key, 0x33);
	key_of(other, 0x33);
	other[31] ^= 1;
	ps_curve_keyset *ks = one_key_set(key);
	zap_req q = curve_request(other);
	ps_curve_zap_decide(ks, q.f, q.n, &r);
	assert_int_equal(r.verdict, PS_ZAP_DENY_KEY);
	assert_string_equal(r.status, "400");
	assert_string_equal(r.user_id, "");
	/* The refused key is there for the log. */
	assert_true(r.have_key);
	assert_memory_equal(r.key, other, sizeof other);
	/* An empty set (or none) lets nobody in. */
	ps_curve_keyset_destroy(&ks);
	assert_int_equal(ps_curve_keyset_new(&ks), PS_OK);
	ps_curve_zap_decide(ks, q.f, q.n, &r);
	assert_int_equal(r.verdict, PS_ZAP_DENY_KEY);
	ps_curve_zap_decide(NULL, q.f, q.n, &r);
	assert_int_equal(r.verdict, PS_ZAP_DENY_KEY);
	assert_string_equal(r.status, "400");
	ps_curve_keyset_destroy(&ks);
}

static void test_curve_zap_refuses_other_mechanisms(void **state)
{
	(void)state;
	uint8_t key[PS_CURVE_KEY_LEN];
	ps_zap_reply r;

	key_of(key, 0x44);
	ps_curve_keyset *ks = one_key_set(key);
	zap_req q = curve_request(key);
	frame_str(&q.f[5], "NULL");
	q.n = 6;
	ps_curve_zap_decide(ks, q.f, q.n, &r);
	assert_int_equal(r.verdict, PS_ZAP_DENY_MECHANISM);
	assert_string_equal(r.status, "400");
	assert_false(r.have_key);
	/* PLAIN, even with the right bytes as its "password". */
	q = curve_request(key);
	frame_str(&q.f[5], "PLAIN");
	q.f[7] = q.f[6];
	q.n = 8;
	ps_curve_zap_decide(ks, q.f, q.n, &r);
	assert_int_equal(r.verdict, PS_ZAP_DENY_MECHANISM);
	assert_string_equal(r.status, "400");
	/* Case matters. */
	q = curve_request(key);
	frame_str(&q.f[5], "curve");
	ps_curve_zap_decide(ks, q.f, q.n, &r);
	assert_int_equal(r.verdict, PS_ZAP_DENY_MECHANISM);
	ps_curve_keyset_destroy(&ks);
}

static void test_curve_zap_malformed_requests(void **state)
{
	(void)state;
	uint8_t key[PS_CURVE_KEY_LEN];
	ps_zap_reply r;

	key_of(key, 0x55);
	ps_curve_keyset *ks = one_key_set(key);
	zap_req q = curve_request(key);

	/* Another version. */
	frame_str(&q.f[0], "2.0");
	ps_curve_zap_decide(ks, q.f, q.n, &r);
	assert_int_equal(r.verdict, PS_ZAP_BAD_REQUEST);
	assert_string_equal(r.status, "500");
	/* Too few frames, down to none. */
	for (size_t n = 0; n < 6; n++) {
		q = curve_request(key);
		ps_curve_zap_decide(ks, q.f, n, &r);
		assert_int_equal(r.verdict, PS_ZAP_BAD_REQUEST);
		assert_string_equal(r.status, "500");
	}
	ps_curve_zap_decide(ks, NULL, 0, &r);
	assert_int_equal(r.verdict, PS_ZAP_BAD_REQUEST);
	/* CURVE without its key, with a short one, or with extra frames:
	 * never allowed, even when the first 32 bytes would match. */
	q = curve_request(key);
	q.n = 6;
	ps_curve_zap_decide(ks, q.f, q.n, &r);
	assert_int_equal(r.verdict, PS_ZAP_BAD_REQUEST);
	q = curve_request(key);
	q.f[6].len = 31;
	ps_curve_zap_decide(ks, q.f, q.n, &r);
	assert_int_equal(r.verdict, PS_ZAP_BAD_REQUEST);
	uint8_t longer[PS_CURVE_KEY_LEN + 1];
	memcpy(longer, key, sizeof key);
	longer[PS_CURVE_KEY_LEN] = 0;
	q = curve_request(longer);
	q.f[6].len = sizeof longer;
	ps_curve_zap_decide(ks, q.f, q.n, &r);
	assert_int_equal(r.verdict, PS_ZAP_BAD_REQUEST);
	q = curve_request(key);
	frame_str(&q.f[7], "extra");
	q.n = 8;
	ps_curve_zap_decide(ks, q.f, q.n, &r);
	assert_int_equal(r.verdict, PS_ZAP_BAD_REQUEST);
	ps_curve_keyset_destroy(&ks);
}

/* The address goes into a log line: control characters are replaced and
 * an over-long one is cut. */
static void test_curve_zap_address_is_printable(void **state)
{
	(void)state;
	uint8_t key[PS_CURVE_KEY_LEN];
	char addr[200];
	ps_zap_reply r;

	key_of(key, 0x66);
	ps_curve_keyset *ks = one_key_set(key);
	zap_req q = curve_request(key);
	frame_str(&q.f[3], "10.0.0.1\n\033[31m");
	ps_curve_zap_decide(ks, q.f, q.n, &r);
	assert_string_equal(r.address, "10.0.0.1??[31m");
	memset(addr, 'x', sizeof addr - 1);
	addr[sizeof addr - 1] = '\0';
	frame_str(&q.f[3], addr);
	ps_curve_zap_decide(ks, q.f, q.n, &r);
	assert_int_equal(strlen(r.address), sizeof r.address - 1);
	assert_int_equal(r.verdict, PS_ZAP_ALLOW);
	ps_curve_keyset_destroy(&ks);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_curve_z85_rfc_vector),
		cmocka_unit_test(test_curve_z85_round_trip),
		cmocka_unit_test(test_curve_z85_refuses_bad_text),
		cmocka_unit_test(test_curve_key_read_good_files),
		cmocka_unit_test(test_curve_key_read_warns_on_loose_secret),
		cmocka_unit_test(test_curve_key_read_refuses_bad_files),
		cmocka_unit_test(test_curve_keypair_write),
		cmocka_unit_test(test_curve_keyset_basics),
		cmocka_unit_test(test_curve_keyset_is_bounded),
		cmocka_unit_test(test_curve_keyset_load_dir),
		cmocka_unit_test(test_curve_zap_allows_authorized_key),
		cmocka_unit_test(test_curve_zap_refuses_other_key),
		cmocka_unit_test(test_curve_zap_refuses_other_mechanisms),
		cmocka_unit_test(test_curve_zap_malformed_requests),
		cmocka_unit_test(test_curve_zap_address_is_printable),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
