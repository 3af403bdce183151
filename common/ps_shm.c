/*
 * ps_shm: segments of shared memory lent between the processes of one
 * machine (see ps_shm.h). A segment is a memfd: it has no name to clean
 * up, lives while its sender keeps it open or a receiver keeps it mapped,
 * and is sealed so that its size cannot change under a reader.
 */
#include "ps_shm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bounds of a pool: beyond them the sender sends bytes, not segments. A
 * trainer has a push or two in flight and a server a reply to each
 * peer; segments held for good by lost messages must not grow a pool
 * without end. */
#define SEGS_MAX 64
#define IDLE_KEEP 8
#define POOL_BYTES_MAX ((size_t)1 << 30)
/* Segments of other processes a receiver keeps mapped. */
#define MAPS_MAX 128

#define HDR_LEN 64
#define SHM_MAGIC 0x4d485350u /* "PSHM" */
#define SHM_VERSION 1u
#define DESC_KEEP 1u

/* At the start of every segment, in the shared memory. The data follow
 * at HDR_LEN. */
struct shm_hdr {
	uint32_t magic;
	uint32_t version;
	_Atomic uint32_t holds; /* receivers that have not detached */
	uint32_t unused;
	uint64_t gen; /* which use of the segment this is */
};
_Static_assert(sizeof(struct shm_hdr) <= HDR_LEN, "header too long");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "holds must be lock-free to be shared");

/* A descriptor on the wire, in this machine's byte order. */
struct shm_desc {
	uint32_t magic;
	uint32_t version;
	int32_t pid;
	int32_t fd;
	uint64_t ino;
	uint64_t gen;
	uint64_t len;
	uint32_t flags;
	uint32_t unused;
};
_Static_assert(sizeof(struct shm_desc) == PS_SHM_DESC_LEN, "descriptor size");

struct ps_shm_seg {
	struct ps_shm_seg *next;
	ps_shm_pool *pool;
	int fd;
	uint64_t ino;
	struct shm_hdr *hdr; /* the mapping */
	size_t size;         /* of the mapping: HDR_LEN + room */
	int held;            /* by the sender */
};

struct ps_shm_pool {
	ps_shm_seg *segs;
	size_t nsegs, bytes;
	size_t held; /* segments the sender holds */
	int owned;   /* the owner has not released the pool */
	int32_t pid;
	uint64_t gen;
};

static size_t page_size(void)
{
	long p = sysconf(_SC_PAGESIZE);
	return p > 0 ? (size_t)p : 4096;
}

int ps_shm_pool_new(ps_shm_pool **out)
{
	ps_shm_pool *p = calloc(1, sizeof *p);

	*out = p;
	if (!p)
		return PS_ENOMEM;
	p->owned = 1;
	p->pid = (int32_t)getpid();
	return PS_OK;
}

static void seg_free(ps_shm_pool *p, ps_shm_seg *s)
{
	for (ps_shm_seg **at = &p->segs; *at; at = &(*at)->next)
		if (*at == s) {
			*at = s->next;
			break;
		}
	p->nsegs--;
	p->bytes -= s->size;
	munmap(s->hdr, s->size);
	close(s->fd);
	free(s);
}

static uint32_t holds_of(const ps_shm_seg *s)
{
	return atomic_load_explicit(&s->hdr->holds, memory_order_acquire);
}

void ps_shm_pool_release(ps_shm_pool **pp)
{
	ps_shm_pool *p;
	ps_shm_seg *s, *next;

	if (!pp || !*pp)
		return;
	p = *pp;
	*pp = NULL;
	p->owned = 0;
	for (s = p->segs; s; s = next) {
		next = s->next;
		if (!s->held)
			seg_free(p, s);
	}
	if (p->held == 0)
		free(p);
}

static int seg_new(ps_shm_pool *p, size_t len, ps_shm_seg **out)
{
	size_t pg = page_size();
	size_t size = (HDR_LEN + len + pg - 1) / pg * pg;
	ps_shm_seg *s;
	struct stat st;
	void *base;
	int fd;

	if (len > SIZE_MAX - HDR_LEN - pg)
		return PS_ERANGE;
	if (p->nsegs >= SEGS_MAX || size > POOL_BYTES_MAX - p->bytes)
		return PS_ERANGE;
	s = calloc(1, sizeof *s);
	if (!s)
		return PS_ENOMEM;
	fd = memfd_create("pserver-tensor", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0) {
		free(s);
		return PS_EIO;
	}
	if (ftruncate(fd, (off_t)size) != 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0 ||
	    fstat(fd, &st) != 0) {
		close(fd);
		free(s);
		return PS_EIO;
	}
	base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED) {
		close(fd);
		free(s);
		return PS_EIO;
	}
	s->pool = p;
	s->fd = fd;
	s->ino = (uint64_t)st.st_ino;
	s->hdr = base;
	s->size = size;
	s->hdr->magic = SHM_MAGIC;
	s->hdr->version = SHM_VERSION;
	atomic_init(&s->hdr->holds, 0);
	s->next = p->segs;
	p->segs = s;
	p->nsegs++;
	p->bytes += size;
	*out = s;
	return PS_OK;
}

int ps_shm_seg_get(ps_shm_pool *p, size_t len, ps_shm_seg **out)
{
	ps_shm_seg *best = NULL, *spare = NULL;
	size_t idle = 0;
	int rc;

	*out = NULL;
	for (ps_shm_seg *s = p->segs; s; s = s->next) {
		size_t room = s->size - HDR_LEN;
		if (s->held || holds_of(s) != 0)
			continue;
		idle++;
		if (room >= len) {
			if (!best || room < best->size - HDR_LEN)
				best = s;
		} else {
			spare = s;
		}
	}
	if (!best) {
		/* Idle segments too small for this length: let one go
		 * rather than keep them all, or to make room. */
		if (spare && (idle >= IDLE_KEEP || p->nsegs >= SEGS_MAX))
			seg_free(p, spare);
		rc = seg_new(p, len, &best);
		if (rc != PS_OK)
			return rc;
	}
	best->held = 1;
	best->hdr->gen = ++p->gen;
	p->held++;
	*out = best;
	return PS_OK;
}

void *ps_shm_seg_data(ps_shm_seg *s)
{
	return (uint8_t *)s->hdr + HDR_LEN;
}

size_t ps_shm_seg_room(const ps_shm_seg *s)
{
	return s->size - HDR_LEN;
}

void ps_shm_seg_lend(ps_shm_seg *s, size_t len, int keep,
		     uint8_t desc[PS_SHM_DESC_LEN])
{
	struct shm_desc d = {
		.magic = SHM_MAGIC,
		.version = SHM_VERSION,
		.pid = s->pool->pid,
		.fd = s->fd,
		.ino = s->ino,
		.gen = s->hdr->gen,
		.len = len,
		.flags = keep ? DESC_KEEP : 0,
	};

	atomic_fetch_add_explicit(&s->hdr->holds, 1, memory_order_acq_rel);
	memcpy(desc, &d, sizeof d);
}

void ps_shm_seg_unlend(ps_shm_seg *s)
{
	atomic_fetch_sub_explicit(&s->hdr->holds, 1, memory_order_acq_rel);
}

uint32_t ps_shm_seg_holds(const ps_shm_seg *s)
{
	return holds_of(s);
}

void ps_shm_seg_put(ps_shm_seg **sp)
{
	ps_shm_seg *s;
	ps_shm_pool *p;

	if (!sp || !*sp)
		return;
	s = *sp;
	*sp = NULL;
	p = s->pool;
	s->held = 0;
	p->held--;
	if (p->owned)
		return;
	seg_free(p, s);
	if (p->held == 0)
		free(p);
}

/* Receiving side. */

struct ps_shm_map {
	struct ps_shm_map *next;
	_Atomic uint32_t refs; /* 1 while listed, and 1 per view */
	int32_t pid, fd;
	uint64_t ino;
	uint8_t *base;
	size_t size;
	uint64_t used; /* tick of the last attach */
};

struct ps_shm_maps {
	struct ps_shm_map *list;
	size_t n;
	uint64_t tick;
	dev_t memfd_dev; /* the kernel's mount of every memfd */
};

int ps_shm_maps_new(ps_shm_maps **out)
{
	ps_shm_maps *m = calloc(1, sizeof *m);
	struct stat st;
	int fd;

	*out = NULL;
	if (!m)
		return PS_ENOMEM;
	/* Where memfds live, to tell a segment from any other file before
	 * opening it. */
	fd = memfd_create("pserver-probe", MFD_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) != 0) {
		if (fd >= 0)
			close(fd);
		free(m);
		return PS_EIO;
	}
	close(fd);
	m->memfd_dev = st.st_dev;
	*out = m;
	return PS_OK;
}

static void map_unref(struct ps_shm_map *mp)
{
	if (atomic_fetch_sub_explicit(&mp->refs, 1, memory_order_acq_rel) == 1) {
		munmap(mp->base, mp->size);
		free(mp);
	}
}

static void unlist(ps_shm_maps *m, struct ps_shm_map *mp)
{
	for (struct ps_shm_map **at = &m->list; *at; at = &(*at)->next)
		if (*at == mp) {
			*at = mp->next;
			break;
		}
	m->n--;
	map_unref(mp);
}

void ps_shm_maps_destroy(ps_shm_maps **mp)
{
	ps_shm_maps *m;

	if (!mp || !*mp)
		return;
	m = *mp;
	*mp = NULL;
	while (m->list)
		unlist(m, m->list);
	free(m);
}

size_t ps_shm_maps_count(const ps_shm_maps *m)
{
	return m->n;
}

/* Keep at most MAPS_MAX mappings: the least recently used that no view
 * holds goes first. */
static void evict(ps_shm_maps *m)
{
	while (m->n >= MAPS_MAX) {
		struct ps_shm_map *old = NULL;
		for (struct ps_shm_map *mp = m->list; mp; mp = mp->next)
			if (atomic_load(&mp->refs) == 1 &&
			    (!old || mp->used < old->used))
				old = mp;
		if (!old)
			return;
		unlist(m, old);
	}
}

static int map_segment(ps_shm_maps *m, const struct shm_desc *d,
		       struct ps_shm_map **out, ps_err *e)
{
	char path[64];
	struct stat st;
	struct ps_shm_map *mp;
	const struct shm_hdr *h;
	void *base;
	int fd, seals, err;

	snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)d->pid, (int)d->fd);
	/* Looked at before it is opened: a descriptor could name a device
	 * or a pipe of any process, whose open alone may do something. */
	if (stat(path, &st) != 0) {
		err = errno;
		if (err == EACCES || err == EPERM)
			return ps_err_set(e, PS_EAUTH,
					  "shared tensor %s: %s (another user's?)",
					  path, strerror(err));
		return ps_err_set(e, PS_ENOENT,
				  "shared tensor %s: %s (is the sender on "
				  "another machine, or gone?)",
				  path, strerror(err));
	}
	if (!S_ISREG(st.st_mode) || st.st_dev != m->memfd_dev ||
	    st.st_uid != geteuid())
		return ps_err_set(e, PS_EAUTH,
				  "shared tensor %s: not a memfd of this user",
				  path);
	if ((uint64_t)st.st_ino != d->ino)
		return ps_err_set(e, PS_EPROTO,
				  "shared tensor %s is not the segment named "
				  "(inode %llu)",
				  path, (unsigned long long)d->ino);
	fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		err = errno;
		return ps_err_set(e, err == EACCES || err == EPERM ? PS_EAUTH
								    : PS_ENOENT,
				  "shared tensor %s: %s", path, strerror(err));
	}
	/* The same file still (the sender could have closed it since). */
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
	    st.st_dev != m->memfd_dev || (uint64_t)st.st_ino != d->ino) {
		close(fd);
		return ps_err_set(e, PS_EPROTO,
				  "shared tensor %s changed while opened", path);
	}
	seals = fcntl(fd, F_GET_SEALS);
	if (st.st_uid != geteuid() || seals < 0 || !(seals & F_SEAL_SHRINK)) {
		close(fd);
		return ps_err_set(e, PS_EAUTH,
				  "shared tensor %s: not a sealed memfd of "
				  "this user",
				  path);
	}
	if (st.st_size < HDR_LEN || (uint64_t)st.st_size > SIZE_MAX) {
		close(fd);
		return ps_err_set(e, PS_EPROTO, "shared tensor %s: %lld bytes",
				  path, (long long)st.st_size);
	}
	base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_POPULATE, fd, 0);
	err = errno;
	close(fd);
	if (base == MAP_FAILED)
		return ps_err_set(e, err == ENOMEM ? PS_ENOMEM : PS_EIO,
				  "shared tensor %s: mmap: %s", path,
				  strerror(err));
	h = base;
	if (h->magic != SHM_MAGIC || h->version != SHM_VERSION) {
		munmap(base, (size_t)st.st_size);
		return ps_err_set(e, PS_EPROTO,
				  "shared tensor %s: no segment header", path);
	}
	mp = calloc(1, sizeof *mp);
	if (!mp) {
		munmap(base, (size_t)st.st_size);
		return ps_err_set(e, PS_ENOMEM, "out of memory");
	}
	evict(m);
	atomic_init(&mp->refs, 1);
	mp->pid = d->pid;
	mp->fd = d->fd;
	mp->ino = d->ino;
	mp->base = base;
	mp->size = (size_t)st.st_size;
	mp->next = m->list;
	m->list = mp;
	m->n++;
	*out = mp;
	return PS_OK;
}

/* Take one hold away, never below 0 (a peer's bad count stays its
 * own). */
static void drop_hold(_Atomic uint32_t *holds)
{
	uint32_t h = atomic_load_explicit(holds, memory_order_relaxed);

	while (h > 0 && !atomic_compare_exchange_weak_explicit(
				holds, &h, h - 1, memory_order_acq_rel,
				memory_order_relaxed))
		;
}

int ps_shm_attach(ps_shm_maps *m, const void *desc, size_t n,
		  size_t max_len, ps_shm_view *out, ps_err *e)
{
	struct shm_desc d;
	struct ps_shm_map *mp;
	struct shm_hdr *h;
	int rc;

	memset(out, 0, sizeof *out);
	if (n != sizeof d)
		return ps_err_set(e, PS_EPROTO,
				  "shared tensor descriptor of %zu bytes", n);
	memcpy(&d, desc, sizeof d);
	if (d.magic != SHM_MAGIC || d.version != SHM_VERSION || d.len == 0 ||
	    d.pid <= 0 || d.fd < 0 || (d.flags & ~DESC_KEEP) != 0)
		return ps_err_set(e, PS_EPROTO,
				  "not a shared tensor descriptor");
	for (mp = m->list; mp; mp = mp->next)
		if (mp->pid == d.pid && mp->fd == d.fd && mp->ino == d.ino)
			break;
	if (!mp) {
		rc = map_segment(m, &d, &mp, e);
		if (rc != PS_OK)
			return rc;
	}
	mp->used = ++m->tick;
	h = (struct shm_hdr *)mp->base;
	if (h->gen != d.gen || d.len > mp->size - HDR_LEN ||
	    atomic_load_explicit(&h->holds, memory_order_acquire) == 0)
		return ps_err_set(e, PS_EPROTO,
				  "shared tensor of process %d: stale or "
				  "inconsistent descriptor (use %llu, %llu bytes)",
				  (int)d.pid, (unsigned long long)d.gen,
				  (unsigned long long)d.len);
	if (max_len && d.len > max_len) {
		drop_hold(&h->holds);
		return ps_err_set(e, PS_ERANGE,
				  "shared tensor of %llu bytes: more than %zu",
				  (unsigned long long)d.len, max_len);
	}
	atomic_fetch_add_explicit(&mp->refs, 1, memory_order_relaxed);
	out->data = mp->base + HDR_LEN;
	out->len = (size_t)d.len;
	out->writable = !(d.flags & DESC_KEEP);
	out->map = mp;
	out->holds = &h->holds;
	return PS_OK;
}

int ps_shm_host(char *buf, size_t len)
{
	char boot[64], ns[64];
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
	ssize_t n;
	int ok;

	if (!f)
		return PS_EIO;
	ok = fgets(boot, sizeof boot, f) != NULL;
	fclose(f);
	n = readlink("/proc/self/ns/pid", ns, sizeof ns - 1);
	if (!ok || n <= 0)
		return PS_EIO;
	ns[n] = '\0';
	boot[strcspn(boot, "\n")] = '\0';
	if (boot[0] == '\0')
		return PS_EIO;
	if ((size_t)snprintf(buf, len, "%s/%s", boot, ns) >= len)
		return PS_ERANGE;
	return PS_OK;
}

void ps_shm_detach(ps_shm_view *v)
{
	if (!v->map)
		return;
	drop_hold(v->holds);
	map_unref(v->map);
	memset(v, 0, sizeof *v);
}
