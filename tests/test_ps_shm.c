/*
 * Unit tests for ps_shm: segments lent and taken back, reuse only when
 * nobody holds a segment, the pool's bounds, a receiver in another
 * process (fork), and every descriptor a receiver must refuse.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ps_error.h"
#include "ps_shm.h"

/* The descriptor's fields, as ps_shm.c lays them out. */
struct desc {
	uint32_t magic, version;
	int32_t pid, fd;
	uint64_t ino, gen, len;
	uint32_t flags, unused;
};

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed + i * 7);
}

static void test_shm_lend_attach_detach(void **state)
{
	ps_shm_pool *p = NULL;
	ps_shm_maps *m = NULL;
	ps_shm_seg *s = NULL;
	ps_shm_view v;
	uint8_t desc[PS_SHM_DESC_LEN], want[100000];
	ps_err e = {0};
	(void)state;

	assert_int_equal(ps_shm_pool_new(&p), PS_OK);
	assert_int_equal(ps_shm_maps_new(&m), PS_OK);
	assert_int_equal(ps_shm_seg_get(p, sizeof want, &s), PS_OK);
	assert_true(ps_shm_seg_room(s) >= sizeof want);
	assert_int_equal((uintptr_t)ps_shm_seg_data(s) % 64, 0);
	fill(want, sizeof want, 3);
	memcpy(ps_shm_seg_data(s), want, sizeof want);
	assert_int_equal(ps_shm_seg_holds(s), 0);
	ps_shm_seg_lend(s, sizeof want, 0, desc);
	assert_int_equal(ps_shm_seg_holds(s), 1);

	assert_int_equal(ps_shm_attach(m, desc, sizeof desc, 0, &v, &e), PS_OK);
	/* Another mapping of the same bytes. */
	assert_ptr_not_equal(v.data, ps_shm_seg_data(s));
	assert_int_equal(v.len, sizeof want);
	assert_true(v.writable);
	assert_memory_equal(v.data, want, sizeof want);
	/* What the receiver writes, the sender sees. */
	((uint8_t *)v.data)[5] = 0xAB;
	assert_int_equal(((uint8_t *)ps_shm_seg_data(s))[5], 0xAB);
	assert_int_equal(ps_shm_maps_count(m), 1);
	ps_shm_detach(&v);
	assert_null(v.map);
	assert_int_equal(ps_shm_seg_holds(s), 0);
	ps_shm_detach(&v); /* a cleared view: no-op */

	/* A second lend, kept by the sender: read-only to the receiver,
	 * and the mapping is found again rather than made anew. */
	ps_shm_seg_lend(s, 10, 1, desc);
	assert_int_equal(ps_shm_attach(m, desc, sizeof desc, 0, &v, &e), PS_OK);
	assert_false(v.writable);
	assert_int_equal(v.len, 10);
	assert_int_equal(ps_shm_maps_count(m), 1);
	ps_shm_detach(&v);
	ps_shm_seg_put(&s);
	assert_null(s);
	ps_shm_maps_destroy(&m);
	ps_shm_pool_release(&p);
	assert_null(p);
}

static void test_shm_reuse_only_when_free(void **state)
{
	ps_shm_pool *p = NULL;
	ps_shm_maps *m = NULL;
	ps_shm_seg *a = NULL, *b = NULL, *c = NULL;
	ps_shm_view v;
	uint8_t d1[PS_SHM_DESC_LEN];
	ps_err e = {0};
	void *a_data;
	(void)state;

	assert_int_equal(ps_shm_pool_new(&p), PS_OK);
	assert_int_equal(ps_shm_maps_new(&m), PS_OK);
	assert_int_equal(ps_shm_seg_get(p, 5000, &a), PS_OK);
	a_data = ps_shm_seg_data(a);
	ps_shm_seg_lend(a, 5000, 0, d1);
	ps_shm_seg_put(&a);
	/* Lent: not handed out again. */
	assert_int_equal(ps_shm_seg_get(p, 5000, &b), PS_OK);
	assert_ptr_not_equal(ps_shm_seg_data(b), a_data);
	ps_shm_seg_put(&b);
	assert_int_equal(ps_shm_attach(m, d1, sizeof d1, 0, &v, &e), PS_OK);
	ps_shm_detach(&v);
	/* Free again: the smallest segment that fits is reused (both have
	 * the same room; either will do, but no third one is made). */
	assert_int_equal(ps_shm_seg_get(p, 5000, &a), PS_OK);
	assert_int_equal(ps_shm_seg_get(p, 5000, &b), PS_OK);
	assert_int_equal(ps_shm_seg_get(p, 5000, &c), PS_OK);
	assert_true(ps_shm_seg_data(a) == a_data || ps_shm_seg_data(b) == a_data);
	assert_ptr_not_equal(ps_shm_seg_data(c), a_data);
	/* The old descriptor names an earlier use of the segment: stale. */
	assert_int_equal(ps_shm_attach(m, d1, sizeof d1, 0, &v, &e), PS_EPROTO);
	assert_non_null(strstr(e.msg, "stale"));
	assert_null(v.map);
	ps_shm_seg_put(&a);
	ps_shm_seg_put(&b);
	ps_shm_seg_put(&c);
	ps_shm_maps_destroy(&m);
	ps_shm_pool_release(&p);
}

/* Segments held by the sender keep the pool after its owner lets go,
 * and a view keeps its mapping after the maps are destroyed. */
static void test_shm_outlive_owners(void **state)
{
	ps_shm_pool *p = NULL;
	ps_shm_maps *m = NULL;
	ps_shm_seg *s = NULL;
	ps_shm_view v;
	uint8_t desc[PS_SHM_DESC_LEN];
	ps_err e = {0};
	(void)state;

	assert_int_equal(ps_shm_pool_new(&p), PS_OK);
	assert_int_equal(ps_shm_maps_new(&m), PS_OK);
	assert_int_equal(ps_shm_seg_get(p, 64, &s), PS_OK);
	memset(ps_shm_seg_data(s), 0x5A, 64);
	ps_shm_seg_lend(s, 64, 0, desc);
	assert_int_equal(ps_shm_attach(m, desc, sizeof desc, 0, &v, &e), PS_OK);
	ps_shm_pool_release(&p);
	ps_shm_maps_destroy(&m);
	memset(ps_shm_seg_data(s), 0x33, 32);
	assert_int_equal(((uint8_t *)v.data)[0], 0x33);
	assert_int_equal(((uint8_t *)v.data)[63], 0x5A);
	ps_shm_seg_put(&s); /* frees the segment and the pool */
	/* The receiver's mapping keeps the memory. */
	assert_int_equal(((uint8_t *)v.data)[40], 0x5A);
	ps_shm_detach(&v);
}

static void test_shm_pool_bounds(void **state)
{
	ps_shm_pool *p = NULL;
	ps_shm_seg *s[65] = {0};
	int n = 0, rc = PS_OK;
	(void)state;

	assert_int_equal(ps_shm_pool_new(&p), PS_OK);
	while (n < 65 && (rc = ps_shm_seg_get(p, 100, &s[n])) == PS_OK)
		n++;
	assert_int_equal(rc, PS_ERANGE);
	assert_int_equal(n, 64);
	/* One freed: to be had again. */
	ps_shm_seg_put(&s[10]);
	assert_int_equal(ps_shm_seg_get(p, 100, &s[10]), PS_OK);
	/* At the bound, an idle segment too small makes room for a larger
	 * one. */
	ps_shm_seg_put(&s[20]);
	assert_int_equal(ps_shm_seg_get(p, 100000, &s[20]), PS_OK);
	assert_true(ps_shm_seg_room(s[20]) >= 100000);
	for (int i = 0; i < n; i++)
		ps_shm_seg_put(&s[i]);
	/* More than the pool's bytes at once. */
	assert_int_equal(ps_shm_seg_get(p, (size_t)2 << 30, &s[0]), PS_ERANGE);
	ps_shm_pool_release(&p);
}

/* A receiver in another process reads the bytes, writes an answer into
 * them and lets go; the sender sees both. */
static void test_shm_other_process(void **state)
{
	ps_shm_pool *p = NULL;
	ps_shm_seg *s = NULL;
	uint8_t desc[PS_SHM_DESC_LEN];
	int status = 0;
	pid_t child;
	(void)state;

	assert_int_equal(ps_shm_pool_new(&p), PS_OK);
	assert_int_equal(ps_shm_seg_get(p, 40000, &s), PS_OK);
	fill(ps_shm_seg_data(s), 40000, 9);
	ps_shm_seg_lend(s, 40000, 0, desc);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		ps_shm_maps *m = NULL;
		ps_shm_view v;
		ps_err e = {0};
		uint8_t want[40000];
		fill(want, sizeof want, 9);
		if (ps_shm_maps_new(&m) != PS_OK ||
		    ps_shm_attach(m, desc, sizeof desc, 0, &v, &e) != PS_OK)
			_exit(10);
		if (memcmp(v.data, want, sizeof want) != 0)
			_exit(11);
		((uint8_t *)v.data)[0] = 0xEE;
		ps_shm_detach(&v);
		ps_shm_maps_destroy(&m);
		_exit(0);
	}
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(((uint8_t *)ps_shm_seg_data(s))[0], 0xEE);
	assert_int_equal(ps_shm_seg_holds(s), 0);
	ps_shm_seg_put(&s);
	ps_shm_pool_release(&p);
}

static int attach_fails(ps_shm_maps *m, const struct desc *d, size_t n,
			size_t max_len, ps_err *e)
{
	ps_shm_view v;
	int rc = ps_shm_attach(m, d, n, max_len, &v, e);
	assert_null(v.map);
	return rc;
}

/* good, aimed at file descriptor fd of this process (and its inode):
 * what attaching it gives. */
static int fd_refused(ps_shm_maps *m, const struct desc *good, int fd)
{
	struct desc d = *good;
	struct stat st;
	ps_err e = {0};

	assert_int_equal(fstat(fd, &st), 0);
	d.fd = fd;
	d.ino = (uint64_t)st.st_ino;
	return attach_fails(m, &d, sizeof d, 0, &e);
}

static void test_shm_refuses_bad_descriptors(void **state)
{
	ps_shm_pool *p = NULL;
	ps_shm_maps *m = NULL;
	ps_shm_seg *s = NULL;
	struct desc good, d;
	ps_err e = {0};
	(void)state;

	assert_int_equal(ps_shm_pool_new(&p), PS_OK);
	assert_int_equal(ps_shm_maps_new(&m), PS_OK);
	assert_int_equal(ps_shm_seg_get(p, 1000, &s), PS_OK);
	ps_shm_seg_lend(s, 1000, 0, (uint8_t *)&good);

	/* Wrong size, magic, version, flags, length 0. */
	assert_int_equal(attach_fails(m, &good, sizeof good - 1, 0, &e), PS_EPROTO);
	d = good;
	d.magic ^= 1;
	assert_int_equal(attach_fails(m, &d, sizeof d, 0, &e), PS_EPROTO);
	d = good;
	d.version = 2;
	assert_int_equal(attach_fails(m, &d, sizeof d, 0, &e), PS_EPROTO);
	d = good;
	d.flags = 6;
	assert_int_equal(attach_fails(m, &d, sizeof d, 0, &e), PS_EPROTO);
	d = good;
	d.len = 0;
	assert_int_equal(attach_fails(m, &d, sizeof d, 0, &e), PS_EPROTO);
	/* No such process, no such file. */
	d = good;
	d.pid = 0x7ffffff0;
	assert_int_equal(attach_fails(m, &d, sizeof d, 0, &e), PS_ENOENT);
	assert_non_null(strstr(e.msg, "another machine"));
	d = good;
	d.fd = 100000;
	assert_int_equal(attach_fails(m, &d, sizeof d, 0, &e), PS_ENOENT);
	/* Another inode. */
	d = good;
	d.ino++;
	assert_int_equal(attach_fails(m, &d, sizeof d, 0, &e), PS_EPROTO);

	/* A pipe is not opened at all; an ordinary file is not a segment,
	 * whatever it holds; nor is a memfd that could shrink under its
	 * reader. */
	{
		int pfd[2];
		FILE *tmp = tmpfile();
		int mfd = memfd_create("unsealed", MFD_CLOEXEC);

		assert_int_equal(pipe(pfd), 0);
		assert_non_null(tmp);
		assert_true(mfd >= 0);
		assert_int_equal(ftruncate(fileno(tmp), 8192), 0);
		assert_int_equal(ftruncate(mfd, 8192), 0);
		assert_int_equal(fd_refused(m, &good, pfd[0]), PS_EAUTH);
		assert_int_equal(fd_refused(m, &good, fileno(tmp)), PS_EAUTH);
		assert_int_equal(fd_refused(m, &good, mfd), PS_EAUTH);
		close(pfd[0]);
		close(pfd[1]);
		fclose(tmp);
		close(mfd);
	}
	assert_int_equal(ps_shm_maps_count(m), 0);
	/* Longer than the segment. */
	d = good;
	d.len = 1u << 20;
	assert_int_equal(attach_fails(m, &d, sizeof d, 0, &e), PS_EPROTO);

	/* Over the receiver's bound: refused, and the hold given back. */
	assert_int_equal(ps_shm_seg_holds(s), 1);
	assert_int_equal(attach_fails(m, &good, sizeof good, 999, &e), PS_ERANGE);
	assert_int_equal(ps_shm_seg_holds(s), 0);
	/* With no hold left, the descriptor is not taken again. */
	assert_int_equal(attach_fails(m, &good, sizeof good, 0, &e), PS_EPROTO);

	ps_shm_seg_put(&s);
	ps_shm_maps_destroy(&m);
	ps_shm_pool_release(&p);
}

/* This machine's name for the protocol: the boot id and the PID
 * namespace, the same for every call and every process of it here. */
static void test_shm_host(void **state)
{
	char a[PS_SHM_HOST_MAX], b[PS_SHM_HOST_MAX], small[8];
	(void)state;

	assert_int_equal(ps_shm_host(a, sizeof a), PS_OK);
	assert_int_equal(ps_shm_host(b, sizeof b), PS_OK);
	assert_string_equal(a, b);
	assert_int_equal(strlen(a), 36 + strlen("/pid:[]") +
					    strcspn(strchr(a, '[') + 1, "]"));
	assert_non_null(strstr(a, "/pid:["));
	assert_int_equal(ps_shm_host(small, sizeof small), PS_ERANGE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shm_lend_attach_detach),
		cmocka_unit_test(test_shm_reuse_only_when_free),
		cmocka_unit_test(test_shm_outlive_owners),
		cmocka_unit_test(test_shm_pool_bounds),
		cmocka_unit_test(test_shm_other_process),
		cmocka_unit_test(test_shm_refuses_bad_descriptors),
		cmocka_unit_test(test_shm_host),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
