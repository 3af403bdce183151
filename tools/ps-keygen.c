/*
 * ps-keygen: make CURVE key pairs for ps-server and its clients. For each
 * name it writes NAME.key (the public key, to hand out) and
 * NAME.key_secret (mode 0600, to keep) as Z85 text. Key files and their
 * checks are common/ps_curve; the generator is libzmq's, reached through
 * the ZeroMQ transport.
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "ps_cli.h"
#include "ps_curve.h"
#include "ps_transport.h"

/* A name is one file name, not a path: letters, digits, '.', '_', '-',
 * not starting with '.'. */
static int name_ok(const char *s, size_t n)
{
	if (n == 0 || n > 200 || s[0] == '.')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		      c == '-'))
			return 0;
	}
	return 1;
}

int main(int argc, char **argv)
{
	const char *names = NULL, *dir = ".";
	int force = 0, quiet = 0;
	const ps_cli_opt opts[] = {
		{"names", PS_CLI_STRING, &names, "LIST",
		 "comma-separated key names, e.g. server,worker-0,worker-1: writes "
		 "NAME.key and NAME.key_secret for each",
		 0, -1, NULL},
		{"dir", PS_CLI_STRING, &dir, "DIR",
		 "directory to write the key files in (made if missing, mode 0700)",
		 0, -1, NULL},
		{"force", PS_CLI_FLAG, &force, NULL,
		 "replace existing key files (default: refuse, and write nothing)",
		 0, -1, NULL},
		{"quiet", PS_CLI_FLAG, &quiet, NULL,
		 "print nothing on success", 0, -1, NULL},
		{NULL, 0, NULL, NULL, NULL, 0, 0, NULL},
	};
	ps_err e = {0};
	const char *p;
	int rc;

	rc = ps_cli_parse(
		"ps-keygen",
		"Make CURVE key pairs for ps-server, ps-worker and evaluators: NAME.key\n"
		"(public: give it to the other side) and NAME.key_secret (secret, mode\n"
		"0600: keep it). The server takes --curve-secret server.key_secret and\n"
		"--curve-authorized DIR (the clients' NAME.key files); each client takes\n"
		"--curve-secret NAME.key_secret and --curve-server-key server.key.",
		opts, argc, argv, &e);
	if (rc == PS_CLI_HELP)
		return 0;
	if (rc == PS_OK && !names)
		rc = ps_err_set(&e, PS_EINVAL, "--names is required (try --help)");
	/* Check every name, and that no file would be replaced, before
	 * writing any key. */
	for (p = names; rc == PS_OK && p;) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		char path[4096];
		struct stat st;
		if (!name_ok(p, n))
			rc = ps_err_set(&e, PS_EINVAL,
					"--names: '%.*s' is not a key name "
					"(letters, digits, '.', '_', '-'; not "
					"starting with '.')",
					(int)n, p);
		for (int k = 0; rc == PS_OK && !force && k < 2; k++) {
			snprintf(path, sizeof path, "%s/%.*s%s", dir, (int)n, p,
				 k ? PS_CURVE_SECRET_SUFFIX
				   : PS_CURVE_PUBLIC_SUFFIX);
			if (lstat(path, &st) == 0)
				rc = ps_err_set(&e, PS_EINVAL,
						"%s exists: nothing written "
						"(--force replaces key files)",
						path);
		}
		p = comma ? comma + 1 : NULL;
	}
	if (rc != PS_OK) {
		fprintf(stderr, "ps-keygen: %s\n", e.msg);
		return 2;
	}
	if (mkdir(dir, 0700) != 0) {
		struct stat st;
		if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
			fprintf(stderr, "ps-keygen: cannot make directory %s\n",
				dir);
			return 1;
		}
	}
	for (p = names; p;) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		uint8_t pub[PS_CURVE_KEY_LEN], sec[PS_CURVE_KEY_LEN];
		char base[4096], z85[PS_CURVE_Z85_LEN + 1];

		if ((size_t)snprintf(base, sizeof base, "%s/%.*s", dir, (int)n,
				     p) >= sizeof base) {
			fprintf(stderr, "ps-keygen: %s: path too long\n", dir);
			return 1;
		}
		rc = ps_transport_curve_keypair(pub, sec, &e);
		if (rc == PS_OK)
			rc = ps_curve_keypair_write(base, pub, sec, force, &e);
		memset(sec, 0, sizeof sec);
		if (rc != PS_OK) {
			fprintf(stderr, "ps-keygen: %s\n", e.msg);
			return 1;
		}
		ps_curve_z85_encode(z85, pub);
		if (!quiet)
			printf("%s%s %s\n", base, PS_CURVE_PUBLIC_SUFFIX, z85);
		p = comma ? comma + 1 : NULL;
	}
	return 0;
}
