/*
 * ps-mpi-tensors: the MPI transport's tensor buffers, checked between two
 * real ranks (mpirun -np 2; the integration tests run it). Rank 1 sends
 * one buffer twice in a row, each time under its own envelope, and drops
 * it before either send can have finished: the second send finds the
 * first still pending and must go from a copy, so both arrive with their
 * own envelope and the buffer's bytes. Rank 0 takes the second frame's
 * tensor over (no copy: the bytes it received), writes to it, and sends
 * that buffer back under an envelope longer than the one it came with,
 * for which its room in front is too short: it must go from a copy, not
 * write in front of the buffer. Rank 1 takes the answer and checks it.
 * Exit 0 when every check held, 1 naming the first that did not.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ps_mpi.h"
#include "ps_transport.h"

#define N (256 * 1024) /* floats: 1 MB, past any eager limit */
#define WAIT_MS 20000

static int fail(int rank, const char *what)
{
	fprintf(stderr, "ps-mpi-tensors: rank %d: %s\n", rank, what);
	return 1;
}

static float pattern(size_t i, int k)
{
	return (float)((int)(i % 977) - 488) * 0.25f + (float)k;
}

static int check_pattern(const float *x, int k)
{
	for (size_t i = 0; i < N; i++)
		if (x[i] != pattern(i, k))
			return -1;
	return 0;
}

static int same_head(const ps_frame *f, const char *head)
{
	return f->head_len == strlen(head) &&
	       memcmp(f->head, head, f->head_len) == 0;
}

static int serve(ps_transport *t)
{
	static const char answer[] =
		"an envelope longer than the one the frame came with";
	ps_frame f;
	ps_tensor_buf *b = NULL;
	ps_peer from;
	const void *at;
	float *x;

	if (ps_transport_recv(t, &f, WAIT_MS) != PS_OK)
		return fail(0, "no first message");
	if (!same_head(&f, "first") || f.tensor_len != N * sizeof(float) ||
	    check_pattern((const float *)(const void *)f.tensor, 1) != 0)
		return fail(0, "first message damaged");
	if (ps_transport_recv(t, &f, WAIT_MS) != PS_OK)
		return fail(0, "no second message");
	if (!same_head(&f, "2nd") || f.tensor_len != N * sizeof(float) ||
	    check_pattern((const float *)(const void *)f.tensor, 1) != 0)
		return fail(0, "second message damaged");
	from = f.from;
	at = f.tensor;
	if (ps_transport_take_tensor(t, &f, &b) != PS_OK)
		return fail(0, "take failed");
	if (ps_tensor_buf_data(b) != at)
		return fail(0, "take copied the receive buffer");
	x = ps_tensor_buf_data(b);
	for (size_t i = 0; i < N; i++)
		x[i] += 1.0f;
	if (ps_transport_send_tensor(t, &from, answer, sizeof answer - 1, b) !=
	    PS_OK)
		return fail(0, "cannot send the taken buffer back");
	ps_tensor_buf_destroy(&b);
	/* The sender's last word, so that the answer is out before exit. */
	if (ps_transport_recv(t, &f, WAIT_MS) != PS_OK || !same_head(&f, "bye"))
		return fail(0, "no bye");
	return 0;
}

static int client(ps_transport *t)
{
	ps_tensor_buf *b = NULL, *got = NULL;
	ps_frame f;
	float *x;

	if (ps_transport_tensor_new(t, N * sizeof(float), &b) != PS_OK)
		return fail(1, "no tensor buffer");
	x = ps_tensor_buf_data(b);
	for (size_t i = 0; i < N; i++)
		x[i] = pattern(i, 1);
	if (ps_transport_send_tensor(t, NULL, "first", 5, b) != PS_OK ||
	    ps_transport_send_tensor(t, NULL, "2nd", 3, b) != PS_OK)
		return fail(1, "cannot send");
	ps_tensor_buf_destroy(&b);
	if (ps_transport_recv(t, &f, WAIT_MS) != PS_OK)
		return fail(1, "no answer");
	if (f.tensor_len != N * sizeof(float) ||
	    !same_head(&f, "an envelope longer than the one the frame came with"))
		return fail(1, "answer damaged");
	if (ps_transport_take_tensor(t, &f, &got) != PS_OK)
		return fail(1, "take failed");
	if (check_pattern(ps_tensor_buf_data(got), 2) != 0)
		return fail(1, "answer's bytes damaged");
	ps_tensor_buf_destroy(&got);
	if (ps_transport_send(t, NULL, "bye", 3, NULL, 0) != PS_OK)
		return fail(1, "cannot say bye");
	return 0;
}

int main(void)
{
	ps_transport_opts o = {0, 2000, NULL};
	ps_transport *t = NULL;
	ps_err e = {0, ""};
	int rank, rc;

	if (ps_mpi_init(&e) != PS_OK) {
		fprintf(stderr, "ps-mpi-tensors: %s\n", e.msg);
		return 1;
	}
	rank = ps_mpi_rank();
	if (ps_mpi_size() != 2) {
		ps_mpi_finalize();
		return fail(rank, "run as 2 ranks: mpirun -np 2 ps-mpi-tensors");
	}
	rc = rank == 0 ? ps_transport_listen(&t, "mpi://*", &o, &e)
		       : ps_transport_connect(&t, "mpi://0", &o, &e);
	if (rc != PS_OK) {
		fprintf(stderr, "ps-mpi-tensors: %s\n", e.msg);
		ps_mpi_finalize();
		return 1;
	}
	rc = rank == 0 ? serve(t) : client(t);
	ps_transport_destroy(&t);
	ps_mpi_finalize();
	if (rc == 0)
		printf("ps-mpi-tensors: rank %d: ok\n", rank);
	return rc;
}
