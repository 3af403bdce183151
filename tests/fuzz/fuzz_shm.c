/*
 * fuzz_shm: libFuzzer harness for ps_shm_attach(), the receiver's check
 * of a descriptor of a tensor in shared memory (common/ps_shm.c), whose
 * bytes come from the network. Input: a flag byte, then the descriptor
 * (what is there, up to 48 bytes and beyond: a wrong length is an input
 * too). Flag bit 0 points the descriptor's process, file descriptor and
 * inode at a segment this harness lends, so that the checks of the
 * header, the use count and the length are reached; bit 1 copies the
 * segment's use count too; bit 2 adds a hold first, as a lend does. A
 * view that attaches must lie inside the segment: every byte of it is
 * read. The segment's holds are set back to 0 after each input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ps_shm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ROOM 5000

static ps_shm_pool *pool;
static ps_shm_seg *seg;
static ps_shm_maps *maps;
static uint8_t real[PS_SHM_DESC_LEN]; /* a lend of seg, taken back */

static void setup(void)
{
	if (ps_shm_pool_new(&pool) != PS_OK ||
	    ps_shm_seg_get(pool, ROOM, &seg) != PS_OK ||
	    ps_shm_maps_new(&maps) != PS_OK)
		abort();
	memset(ps_shm_seg_data(seg), 0x42, ps_shm_seg_room(seg));
	ps_shm_seg_lend(seg, ROOM, 0, real);
	ps_shm_seg_unlend(seg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t desc[2 * PS_SHM_DESC_LEN] = {0}, flags;
	size_t n;
	ps_shm_view v;
	ps_err e = {0};

	if (!pool)
		setup();
	if (size < 1)
		return 0;
	flags = data[0];
	n = size - 1 < sizeof desc ? size - 1 : sizeof desc;
	memcpy(desc, data + 1, n);
	if (flags & 1) /* pid, fd, inode: offsets 8 to 24 */
		memcpy(desc + 8, real + 8, 16);
	if (flags & 2) /* the use count */
		memcpy(desc + 24, real + 24, 8);
	if (flags & 4) {
		uint8_t ignored[PS_SHM_DESC_LEN];
		ps_shm_seg_lend(seg, ROOM, 0, ignored);
	}
	if (ps_shm_attach(maps, desc, n, (flags & 8) ? 100 : 0, &v, &e) ==
	    PS_OK) {
		volatile uint8_t sum = 0;
		if (v.len == 0 || v.len > ps_shm_seg_room(seg))
			abort();
		for (size_t i = 0; i < v.len; i++)
			sum ^= ((const uint8_t *)v.data)[i];
		(void)sum;
		ps_shm_detach(&v);
	} else if (v.map || e.msg[0] == '\0') {
		abort(); /* a refusal maps nothing and says why */
	}
	while (ps_shm_seg_holds(seg) > 0)
		ps_shm_seg_unlend(seg);
	return 0;
}
