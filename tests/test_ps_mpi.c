/*
 * Unit tests for the MPI transport's framing (ps_mpi.h) and its refusal of
 * mpi:// endpoints outside mpirun, which run without mpirun: no MPI call
 * is made. Transport behaviour under mpirun is covered
 * by tests/integration/test_mpi.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ps_mpi.h"
#include "ps_transport.h"

static void roundtrip(size_t hlen, size_t tlen)
{
	unsigned char *head = malloc(hlen + 1), *tensor = malloc(tlen + 1);
	size_t size = ps_mpi_frame_size(hlen, tlen), gh, gt;
	unsigned char *buf;
	const unsigned char *ph, *pt;

	assert_non_null(head);
	assert_non_null(tensor);
	for (size_t i = 0; i < hlen; i++)
		head[i] = (unsigned char)(i * 7 + 1);
	for (size_t i = 0; i < tlen; i++)
		tensor[i] = (unsigned char)(i * 13 + 5);
	assert_true(size >= PS_MPI_FRAME_HEADER + hlen + tlen);
	buf = malloc(size);
	assert_non_null(buf);
	ps_mpi_frame_pack(buf, head, hlen, tensor, tlen);
	assert_int_equal(ps_mpi_frame_parse(buf, size, &ph, &gh, &pt, &gt),
			 PS_OK);
	assert_int_equal(gh, hlen);
	assert_int_equal(gt, tlen);
	assert_memory_equal(ph, head, hlen);
	if (tlen) {
		assert_memory_equal(pt, tensor, tlen);
		/* The tensor starts 8-byte aligned relative to the frame. */
		assert_int_equal((size_t)(pt - buf) % 8, 0);
	} else {
		assert_null(pt);
	}
	free(buf);
	free(head);
	free(tensor);
}

static void test_mpi_frame_roundtrip(void **state)
{
	(void)state;
	roundtrip(0, 0);
	roundtrip(1, 0);
	roundtrip(7, 4);
	roundtrip(8, 40000);
	roundtrip(33, 4 * 1024 * 1024);
}

/* Packed with no tensor pointer, a frame takes the tensor bytes already
 * in place after the envelope (a send from a tensor buffer's headroom):
 * they are left as they are, and the header counts them. */
static void test_mpi_frame_pack_in_place(void **state)
{
	unsigned char head[13] = "in-place head";
	size_t tlen = 4000, size = ps_mpi_frame_size(sizeof head, tlen), gh, gt;
	size_t front = size - tlen;
	unsigned char *buf = malloc(size);
	const unsigned char *ph, *pt;

	(void)state;
	assert_non_null(buf);
	for (size_t i = 0; i < tlen; i++)
		buf[front + i] = (unsigned char)(i * 31 + 3);
	ps_mpi_frame_pack(buf, head, sizeof head, NULL, tlen);
	assert_int_equal(ps_mpi_frame_parse(buf, size, &ph, &gh, &pt, &gt),
			 PS_OK);
	assert_int_equal(gh, sizeof head);
	assert_memory_equal(ph, head, sizeof head);
	assert_ptr_equal(pt, buf + front);
	assert_int_equal(gt, tlen);
	for (size_t i = 0; i < tlen; i++)
		assert_int_equal(pt[i], (unsigned char)(i * 31 + 3));
	free(buf);
}

static void test_mpi_frame_rejects_damage(void **state)
{
	unsigned char head[10] = "envelope!", tensor[16] = {1, 2, 3};
	size_t size = ps_mpi_frame_size(sizeof head, sizeof tensor), gh, gt;
	unsigned char *buf = malloc(size + 8);
	const unsigned char *ph, *pt;

	(void)state;
	assert_non_null(buf);
	ps_mpi_frame_pack(buf, head, sizeof head, tensor, sizeof tensor);
	/* Every shorter or longer length is refused. */
	for (size_t len = 0; len < size + 8; len++)
		if (len != size)
			assert_int_equal(ps_mpi_frame_parse(buf, len, &ph, &gh,
							    &pt, &gt),
					 PS_EPROTO);
	/* A wrong magic, and lengths that lie, are refused. */
	buf[0] ^= 1;
	assert_int_equal(ps_mpi_frame_parse(buf, size, &ph, &gh, &pt, &gt),
			 PS_EPROTO);
	buf[0] ^= 1;
	buf[4] ^= 0x40;
	assert_int_equal(ps_mpi_frame_parse(buf, size, &ph, &gh, &pt, &gt),
			 PS_EPROTO);
	buf[4] ^= 0x40;
	buf[15] = 0xff;
	assert_int_equal(ps_mpi_frame_parse(buf, size, &ph, &gh, &pt, &gt),
			 PS_EPROTO);
	free(buf);
}

static void test_mpi_frame_size_limits(void **state)
{
	(void)state;
	assert_int_equal(ps_mpi_frame_size(0, 0), PS_MPI_FRAME_HEADER);
	assert_int_equal(ps_mpi_frame_size(1, 4), PS_MPI_FRAME_HEADER + 8 + 4);
	/* MPI counts are ints: a frame past 2^31 - 1 bytes cannot be sent. */
	assert_int_equal(ps_mpi_frame_size(16, (size_t)INT32_MAX), 0);
	assert_int_equal(ps_mpi_frame_size((size_t)1 << 40, 0), 0);
}

static void test_mpi_not_launched_without_mpirun(void **state)
{
	(void)state;
	unsetenv("OMPI_COMM_WORLD_SIZE");
	unsetenv("PMI_SIZE");
	unsetenv("PMIX_RANK");
	assert_false(ps_mpi_launched());
	setenv("OMPI_COMM_WORLD_SIZE", "3", 1);
	assert_true(ps_mpi_launched());
	unsetenv("OMPI_COMM_WORLD_SIZE");
	/* Nothing initialized MPI here. */
	assert_int_equal(ps_mpi_rank(), -1);
	assert_int_equal(ps_mpi_size(), 0);
}

/* Bug: outside mpirun, MPI made a world of one rank, so a server listened
 * for nobody and a client on mpi://0 talked to itself ("expected welcome,
 * got hello"). Both are refused before MPI is initialized. */
static void test_mpi_endpoints_refused_outside_mpirun(void **state)
{
	ps_transport *t = NULL;
	ps_err e = {0, ""};

	(void)state;
	unsetenv("OMPI_COMM_WORLD_SIZE");
	unsetenv("PMI_SIZE");
	unsetenv("PMIX_RANK");
	assert_int_equal(ps_transport_listen(&t, "mpi://*", NULL, &e),
			 PS_EINVAL);
	assert_null(t);
	assert_non_null(strstr(e.msg, "needs a job started by mpirun"));
	assert_int_equal(ps_transport_connect(&t, "mpi://0", NULL, &e),
			 PS_EINVAL);
	assert_null(t);
	assert_int_equal(ps_mpi_rank(), -1); /* MPI was not initialized */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mpi_frame_roundtrip),
		cmocka_unit_test(test_mpi_frame_pack_in_place),
		cmocka_unit_test(test_mpi_frame_rejects_damage),
		cmocka_unit_test(test_mpi_frame_size_limits),
		cmocka_unit_test(test_mpi_not_launched_without_mpirun),
		cmocka_unit_test(test_mpi_endpoints_refused_outside_mpirun),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
