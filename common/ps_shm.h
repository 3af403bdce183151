/*
 * ps_shm: tensors lent between processes of one machine through shared
 * memory, so that a message carries a small descriptor instead of the
 * bytes. The sending side keeps a pool of segments, each a sealed memfd
 * mapped into its address space; the receiving side opens a segment
 * through /proc/PID/fd/FD (the same user, on the same machine), maps it
 * once and keeps the mapping for later messages.
 *
 * Each segment starts with a header in the shared memory whose count of
 * holds says how many receivers still read it: a lend adds one before the
 * descriptor is sent, a receiver's detach takes it away, and the sender
 * reuses a segment only when it holds it no more itself and no receiver
 * does. A descriptor whose message is lost (a peer gone) leaves its
 * segment held for good; the pool is bounded, and a sender that finds no
 * segment sends the bytes in the message as before.
 *
 * A receiver trusts a descriptor no more than a message: before opening
 * the file it names it checks that it is a memfd (a regular file on the
 * kernel's memfd mount) of this user with the inode named, so that no
 * device or pipe of another process is ever opened; then that it is
 * sealed against shrinking (so that a sender cannot make a mapped page
 * vanish under the reader), with the header's magic and generation and
 * room for the length. It trusts the bytes as it trusts a message's: a peer of the
 * same user on the same machine could as well write into its memory.
 */
#ifndef PS_SHM_H
#define PS_SHM_H

#include <stddef.h>
#include <stdint.h>

#include "ps_error.h"

/* Bytes of a descriptor on the wire. */
#define PS_SHM_DESC_LEN 48

/* Sending side: this process's segments. Belongs to one thread. */
typedef struct ps_shm_pool ps_shm_pool;
/* A segment of a pool, held by the sender until ps_shm_seg_put(). */
typedef struct ps_shm_seg ps_shm_seg;

/* A new, empty pool. Errors: PS_ENOMEM. The caller holds it until
 * ps_shm_pool_release(); its segments may outlive that hold. */
int ps_shm_pool_new(ps_shm_pool **out) PS_WUR;

/* The owner's hold on *pp released; the pool goes with the last segment
 * the sender still holds (segments only lent are unmapped with it: a
 * receiver's mapping keeps their memory). Accepts NULL and *pp == NULL;
 * sets *pp to NULL. */
void ps_shm_pool_release(ps_shm_pool **pp);

/* A segment of p with room for len bytes that neither the sender nor any
 * receiver holds: one that is free again, or a new one. Errors: PS_ERANGE
 * (the pool is at its bounds of segments or bytes: send the bytes another
 * way), PS_ENOMEM, PS_EIO (memfd_create,
 * ftruncate or mmap failed). The caller holds the result. */
int ps_shm_seg_get(ps_shm_pool *p, size_t len, ps_shm_seg **out) PS_WUR;

/* The segment's bytes (aligned for any scalar type) and room. */
void *ps_shm_seg_data(ps_shm_seg *s);
size_t ps_shm_seg_room(const ps_shm_seg *s);

/* One receiver more for the first len bytes of s (len <= room), whose
 * descriptor is written to desc. keep says that the sender still reads
 * the bytes itself (a receiver must then not write them). */
void ps_shm_seg_lend(ps_shm_seg *s, size_t len, int keep,
		     uint8_t desc[PS_SHM_DESC_LEN]);

/* Take back a lend whose descriptor was never sent. */
void ps_shm_seg_unlend(ps_shm_seg *s);

/* Receivers that still hold s. */
uint32_t ps_shm_seg_holds(const ps_shm_seg *s);

/* The sender's hold on *sp released: the segment is free again once no
 * receiver holds it. Accepts NULL and *sp == NULL; sets *sp to NULL. */
void ps_shm_seg_put(ps_shm_seg **sp);

/* Receiving side: the segments of other processes mapped so far.
 * Belongs to one thread. */
typedef struct ps_shm_maps ps_shm_maps;

/* Errors: PS_ENOMEM, PS_EIO (this kernel makes no memfds). Caller owns
 * the result; release with ps_shm_maps_destroy(). */
int ps_shm_maps_new(ps_shm_maps **out) PS_WUR;

/* Unmap what no view still uses; the rest goes with its last view.
 * Accepts NULL and *mp == NULL; sets *mp to NULL. */
void ps_shm_maps_destroy(ps_shm_maps **mp);

/* The bytes a descriptor lends. Plain value record but for map. */
typedef struct ps_shm_view {
	void *data;
	size_t len;
	int writable; /* the sender does not read them any more */
	struct ps_shm_map *map;
	_Atomic uint32_t *holds; /* in the sender's header */
} ps_shm_view;

/* Map (or find mapped) the segment desc[n] names and check it (see the
 * top of this file); at most max_len bytes (0: no bound). The caller
 * holds the view until ps_shm_detach(). Errors: PS_EPROTO (not a
 * descriptor, or one that does not match its segment), PS_ERANGE (longer
 * than max_len), PS_ENOENT (no such process or file: the sender is on
 * another machine, or gone), PS_EAUTH (not a sealed memfd of this user),
 * PS_ENOMEM, PS_EIO; e->msg says which. */
int ps_shm_attach(ps_shm_maps *m, const void *desc, size_t n,
		  size_t max_len, ps_shm_view *out, ps_err *e) PS_WUR;

/* Release the hold of v on its segment. v->map == NULL is a no-op, and
 * v is cleared. Any thread that owns v. */
void ps_shm_detach(ps_shm_view *v);

/* Segments mapped now (for tests). */
size_t ps_shm_maps_count(const ps_shm_maps *m);

/* Room for ps_shm_host()'s name, with its NUL. */
#define PS_SHM_HOST_MAX 96

/* Who can map this process's segments: "BOOT_ID/pid:[N]", the kernel's
 * boot id and this process's PID namespace. Two processes with the same
 * see each other in /proc; the protocol compares them before lending.
 * Errors: PS_EIO (no /proc, or no boot id), PS_ERANGE (len too small). */
int ps_shm_host(char *buf, size_t len) PS_WUR;

#endif
