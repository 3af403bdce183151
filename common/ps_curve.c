/*
 * ps_curve: Z85, key files, key sets and the ZAP decision. Written from
 * ZeroMQ RFC 32 (Z85) and RFC 27 (ZAP). Key sets are sorted arrays of
 * 32-byte keys searched by bisection: a server checks one key per
 * handshake, and a set holds at most PS_CURVE_KEYS_MAX.
 */
#include "ps_curve.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ps_log.h"

static const char z85_chars[] = "0123456789abcdefghijklmnopqrstuvwxyz"
				"ABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

void ps_curve_z85_encode(char out[PS_CURVE_Z85_LEN + 1],
			 const uint8_t key[PS_CURVE_KEY_LEN])
{
	size_t o = 0;

	for (size_t i = 0; i < PS_CURVE_KEY_LEN; i += 4) {
		uint32_t v = (uint32_t)key[i] << 24 | (uint32_t)key[i + 1] << 16 |
			     (uint32_t)key[i + 2] << 8 | key[i + 3];
		for (int k = 4; k >= 0; k--) {
			out[o + (size_t)k] = z85_chars[v % 85];
			v /= 85;
		}
		o += 5;
	}
	out[o] = '\0';
}

static int z85_value(char c)
{
	const char *p = c ? strchr(z85_chars, c) : NULL;
	return p ? (int)(p - z85_chars) : -1;
}

int ps_curve_z85_decode(uint8_t key[PS_CURVE_KEY_LEN], const char *text,
			size_t len)
{
	uint8_t tmp[PS_CURVE_KEY_LEN];

	if (len != PS_CURVE_Z85_LEN)
		return PS_EINVAL;
	for (size_t i = 0, o = 0; i < len; i += 5, o += 4) {
		uint64_t v = 0;
		for (size_t k = 0; k < 5; k++) {
			int d = z85_value(text[i + k]);
			if (d < 0)
				return PS_EINVAL;
			v = v * 85 + (uint64_t)d;
		}
		if (v > UINT32_MAX)
			return PS_EINVAL;
		tmp[o] = (uint8_t)(v >> 24);
		tmp[o + 1] = (uint8_t)(v >> 16);
		tmp[o + 2] = (uint8_t)(v >> 8);
		tmp[o + 3] = (uint8_t)v;
	}
	/* Only a whole valid key reaches the caller. */
	memcpy(key, tmp, sizeof tmp);
	return PS_OK;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);
	return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int ps_curve_key_read(uint8_t key[PS_CURVE_KEY_LEN], const char *path,
		      enum ps_curve_key_kind kind, unsigned *warnings,
		      ps_err *e)
{
	/* A key file is 40 characters and a newline; anything much larger
	 * is not one, and is not read whole. */
	char buf[256];
	const char *what = kind == PS_CURVE_SECRET ? "secret" : "public";
	struct stat st;
	ssize_t got;
	size_t len = 0, b, t;
	int fd = -1, rc = PS_OK;

	if (warnings)
		*warnings = 0;
	if (kind == PS_CURVE_PUBLIC && ends_with(path, PS_CURVE_SECRET_SUFFIX))
		return ps_err_set(e, PS_EINVAL,
				  "%s is a secret key file: give the public one "
				  "(NAME" PS_CURVE_PUBLIC_SUFFIX ")",
				  path);
	if (kind == PS_CURVE_SECRET && ends_with(path, PS_CURVE_PUBLIC_SUFFIX))
		return ps_err_set(e, PS_EINVAL,
				  "%s is a public key file: give the secret one "
				  "(NAME" PS_CURVE_SECRET_SUFFIX ")",
				  path);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int err = errno;
		return ps_err_set(e, err == ENOENT ? PS_ENOENT : PS_EIO,
				  "cannot read %s key file %s: %s", what, path,
				  strerror(err));
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		rc = ps_err_set(e, PS_EIO, "%s key file %s: not a regular file",
				what, path);
		goto out;
	}
	if (kind == PS_CURVE_SECRET && warnings &&
	    (st.st_mode & (S_IRWXG | S_IRWXO)))
		*warnings |= PS_CURVE_WARN_MODE;
	while (len < sizeof buf) {
		got = read(fd, buf + len, sizeof buf - len);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			rc = ps_err_set(e, PS_EIO, "cannot read %s key file %s: %s",
					what, path, strerror(errno));
			goto out;
		}
		if (got == 0)
			break;
		len += (size_t)got;
	}
	if (len == sizeof buf) {
		rc = ps_err_set(e, PS_EFORMAT,
				"%s key file %s is too large: a key file holds "
				"one %d-character Z85 key",
				what, path, PS_CURVE_Z85_LEN);
		goto out;
	}
	for (b = 0; b < len && is_blank(buf[b]); b++)
		;
	for (t = len; t > b && is_blank(buf[t - 1]); t--)
		;
	if (t - b != PS_CURVE_Z85_LEN) {
		rc = ps_err_set(e, PS_EFORMAT,
				"%s key file %s holds %zu characters; a key is "
				"%d characters of Z85 (made by ps-keygen)",
				what, path, t - b, PS_CURVE_Z85_LEN);
		goto out;
	}
	if (ps_curve_z85_decode(key, buf + b, t - b) != PS_OK)
		rc = ps_err_set(e, PS_EFORMAT,
				"%s key file %s is not a Z85 key (a character "
				"outside the Z85 alphabet)",
				what, path);
out:
	close(fd);
	return rc;
}

/* Write one line of text to path through a temporary file with `mode`,
 * fsynced and renamed into place. */
static int write_key_file(const char *path, const char *line, mode_t mode,
			  ps_err *e)
{
	char tmp[4096];
	size_t len = strlen(line), done = 0;
	int fd, rc = PS_OK;

	if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path) >= sizeof tmp)
		return ps_err_set(e, PS_EINVAL, "key file name too long: %s",
				  path);
	/* mkstemp creates the file 0600: a secret is never readable by
	 * others, not even for a moment. */
	fd = mkstemp(tmp);
	if (fd < 0)
		return ps_err_set(e, PS_EIO, "cannot create %s: %s", tmp,
				  strerror(errno));
	while (done < len) {
		ssize_t n = write(fd, line + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = ps_err_set(e, PS_EIO, "cannot write %s: %s", tmp,
					strerror(errno));
			break;
		}
		done += (size_t)n;
	}
	if (rc == PS_OK && (fchmod(fd, mode) != 0 || fsync(fd) != 0))
		rc = ps_err_set(e, PS_EIO, "cannot write %s: %s", tmp,
				strerror(errno));
	if (close(fd) != 0 && rc == PS_OK)
		rc = ps_err_set(e, PS_EIO, "cannot write %s: %s", tmp,
				strerror(errno));
	if (rc == PS_OK && rename(tmp, path) != 0)
		rc = ps_err_set(e, PS_EIO, "cannot rename %s to %s: %s", tmp,
				path, strerror(errno));
	if (rc != PS_OK)
		unlink(tmp);
	return rc;
}

int ps_curve_keypair_write(const char *base,
			   const uint8_t public_key[PS_CURVE_KEY_LEN],
			   const uint8_t secret_key[PS_CURVE_KEY_LEN],
			   int overwrite, ps_err *e)
{
	char pub_path[4096], sec_path[4096];
	char line[PS_CURVE_Z85_LEN + 2];
	struct stat st;
	int rc;

	if ((size_t)snprintf(pub_path, sizeof pub_path, "%s" PS_CURVE_PUBLIC_SUFFIX,
			     base) >= sizeof pub_path ||
	    (size_t)snprintf(sec_path, sizeof sec_path, "%s" PS_CURVE_SECRET_SUFFIX,
			     base) >= sizeof sec_path)
		return ps_err_set(e, PS_EINVAL, "key file name too long: %s",
				  base);
	if (!overwrite) {
		if (lstat(pub_path, &st) == 0)
			return ps_err_set(e, PS_EINVAL,
					  "%s exists (remove it first, or overwrite)",
					  pub_path);
		if (lstat(sec_path, &st) == 0)
			return ps_err_set(e, PS_EINVAL,
					  "%s exists (remove it first, or overwrite)",
					  sec_path);
	}
	/* The secret first: a public key without its secret is useless, a
	 * secret without its public key can make it again. */
	ps_curve_z85_encode(line, secret_key);
	strcat(line, "\n");
	rc = write_key_file(sec_path, line, 0600, e);
	memset(line, 0, sizeof line);
	if (rc != PS_OK)
		return rc;
	ps_curve_z85_encode(line, public_key);
	strcat(line, "\n");
	return write_key_file(pub_path, line, 0644, e);
}

struct ps_curve_keyset {
	uint8_t (*keys)[PS_CURVE_KEY_LEN]; /* sorted by memcmp, no repeats */
	size_t count, cap;
};

int ps_curve_keyset_new(ps_curve_keyset **out)
{
	*out = calloc(1, sizeof **out);
	return *out ? PS_OK : PS_ENOMEM;
}

void ps_curve_keyset_destroy(ps_curve_keyset **ksp)
{
	if (!ksp || !*ksp)
		return;
	free((*ksp)->keys);
	free(*ksp);
	*ksp = NULL;
}

int ps_curve_keyset_copy(ps_curve_keyset **out, const ps_curve_keyset *ks)
{
	ps_curve_keyset *c = NULL;
	int rc = ps_curve_keyset_new(&c);

	if (rc != PS_OK)
		return rc;
	if (ks->count > 0) {
		c->keys = malloc(ks->count * sizeof *c->keys);
		if (!c->keys) {
			ps_curve_keyset_destroy(&c);
			return PS_ENOMEM;
		}
		memcpy(c->keys, ks->keys, ks->count * sizeof *c->keys);
		c->count = c->cap = ks->count;
	}
	*out = c;
	return PS_OK;
}

/* The index of key in ks, or where it would go (*found 0). */
static size_t find(const ps_curve_keyset *ks, const uint8_t *key, int *found)
{
	size_t lo = 0, hi = ks->count;

	*found = 0;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = memcmp(ks->keys[mid], key, PS_CURVE_KEY_LEN);
		if (c == 0) {
			*found = 1;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int ps_curve_keyset_add(ps_curve_keyset *ks,
			const uint8_t key[PS_CURVE_KEY_LEN])
{
	int found;
	size_t at = find(ks, key, &found);

	if (found)
		return PS_OK;
	if (ks->count == PS_CURVE_KEYS_MAX)
		return PS_ERANGE;
	if (ks->count == ks->cap) {
		size_t cap = ks->cap ? 2 * ks->cap : 16;
		void *p = realloc(ks->keys, cap * sizeof *ks->keys);
		if (!p)
			return PS_ENOMEM;
		ks->keys = p;
		ks->cap = cap;
	}
	memmove(ks->keys[at + 1], ks->keys[at],
		(ks->count - at) * sizeof *ks->keys);
	memcpy(ks->keys[at], key, PS_CURVE_KEY_LEN);
	ks->count++;
	return PS_OK;
}

int ps_curve_keyset_contains(const ps_curve_keyset *ks,
			     const uint8_t key[PS_CURVE_KEY_LEN])
{
	int found = 0;
	if (ks)
		(void)find(ks, key, &found);
	return found;
}

size_t ps_curve_keyset_count(const ps_curve_keyset *ks)
{
	return ks ? ks->count : 0;
}

int ps_curve_keyset_load_dir(ps_curve_keyset **out, const char *dir,
			     ps_err *e)
{
	ps_curve_keyset *ks = NULL;
	DIR *d = NULL;
	struct dirent *ent;
	char path[4096];
	int rc;

	*out = NULL;
	rc = ps_curve_keyset_new(&ks);
	if (rc != PS_OK)
		return ps_err_set(e, rc, "out of memory");
	d = opendir(dir);
	if (!d) {
		int err = errno;
		rc = ps_err_set(e, err == ENOENT ? PS_ENOENT : PS_EIO,
				"cannot read the authorized keys directory %s: %s",
				dir, strerror(err));
		goto out;
	}
	/* readdir's order is the file system's: the set is sorted anyway,
	 * and the first bad file found is reported whichever it is. */
	while ((ent = readdir(d)) != NULL) {
		uint8_t key[PS_CURVE_KEY_LEN];
		const char *name = ent->d_name;

		if (ends_with(name, PS_CURVE_SECRET_SUFFIX)) {
			ps_log_warn("%s/%s is a secret key; it is ignored (the "
				    "authorized directory holds public keys "
				    "only)",
				    dir, name);
			continue;
		}
		if (!ends_with(name, PS_CURVE_PUBLIC_SUFFIX) ||
		    strlen(name) == strlen(PS_CURVE_PUBLIC_SUFFIX))
			continue;
		if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >=
		    sizeof path) {
			rc = ps_err_set(e, PS_EINVAL, "path too long: %s/%s",
					dir, name);
			goto out;
		}
		rc = ps_curve_key_read(key, path, PS_CURVE_PUBLIC, NULL, e);
		if (rc != PS_OK)
			goto out;
		rc = ps_curve_keyset_add(ks, key);
		if (rc == PS_ERANGE) {
			rc = ps_err_set(e, rc,
					"%s holds more than %d keys", dir,
					PS_CURVE_KEYS_MAX);
			goto out;
		}
		if (rc != PS_OK) {
			rc = ps_err_set(e, rc, "out of memory");
			goto out;
		}
	}
	if (ks->count == 0)
		rc = ps_err_set(e, PS_EINVAL,
				"the authorized keys directory %s holds no public "
				"key file (NAME" PS_CURVE_PUBLIC_SUFFIX
				"): nobody could connect",
				dir);
out:
	if (d)
		closedir(d);
	if (rc != PS_OK)
		ps_curve_keyset_destroy(&ks);
	*out = ks;
	return rc;
}

static int frame_is(const ps_zap_frame *f, const char *s)
{
	size_t n = strlen(s);
	return f->len == n && (n == 0 || memcmp(f->data, s, n) == 0);
}

void ps_curve_zap_decide(const ps_curve_keyset *authorized,
			 const ps_zap_frame *req, size_t n,
			 ps_zap_reply *out)
{
	memset(out, 0, sizeof *out);
	out->verdict = PS_ZAP_BAD_REQUEST;
	out->status = "500";
	out->text = "malformed ZAP request";
	/* version, request id, domain, address, routing id, mechanism */
	if (n < 6 || !frame_is(&req[0], "1.0"))
		return;
	if (req[3].len > 0) {
		/* Printable characters only: it goes into a log line. */
		size_t k = 0;
		for (size_t i = 0; i < req[3].len && k + 1 < sizeof out->address;
		     i++) {
			uint8_t c = req[3].data[i];
			out->address[k++] = (char)(c >= 0x20 && c < 0x7f ? c : '?');
		}
		out->address[k] = '\0';
	}
	if (!frame_is(&req[5], "CURVE")) {
		out->verdict = PS_ZAP_DENY_MECHANISM;
		out->status = "400";
		out->text = "CURVE required";
		return;
	}
	if (n != 7 || req[6].len != PS_CURVE_KEY_LEN)
		return;
	memcpy(out->key, req[6].data, PS_CURVE_KEY_LEN);
	out->have_key = 1;
	if (!ps_curve_keyset_contains(authorized, out->key)) {
		out->verdict = PS_ZAP_DENY_KEY;
		out->status = "400";
		out->text = "client key not authorized";
		return;
	}
	out->verdict = PS_ZAP_ALLOW;
	out->status = "200";
	out->text = "OK";
	ps_curve_z85_encode(out->user_id, out->key);
}
