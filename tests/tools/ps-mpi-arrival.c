/*
 * ps-mpi-arrival: a message that arrived while the receiving rank made no
 * MPI call must be seen by its next receive, even one that does not wait
 * (timeout 0). Open MPI's MPI_Iprobe matches before it progresses, so a
 * single probe misses such a message; the MPI transport probes twice.
 * Run as mpirun -np 2 ps-mpi-arrival DIR (the integration tests do).
 *
 * The ranks take turns through files in DIR, not MPI, so that rank 0
 * makes no MPI call between rank 1's send and its own receive: for each
 * case (a small message, sent eagerly, and a 1 MB one, which Open MPI
 * sends by rendezvous), rank 1 sends and then creates DIR/sent-K; rank 0
 * waits for that file, receives with timeout 0, checks the message and
 * creates DIR/got-K. Rank 0 sends nothing, so no send of its own makes
 * MPI progress behind the test's back. Exit 0 when every check held, 1
 * naming the first that did not.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <unistd.h>

#include "ps_mpi.h"
#include "ps_transport.h"

#define BIG (256 * 1024) /* floats: 1 MB, past any eager limit */
#define WAIT_SECONDS 20

static const char *dir;

static int fail(int rank, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int fail(int rank, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "ps-mpi-arrival: rank %d: ", rank);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

static void path_of(char *buf, size_t cap, const char *what, int k)
{
	snprintf(buf, cap, "%s/%s-%d", dir, what, k);
}

static int touch(const char *what, int k)
{
	char p[4096];
	FILE *f;
	path_of(p, sizeof p, what, k);
	f = fopen(p, "w");
	return f && fclose(f) == 0 ? 0 : -1;
}

/* Wait for the file without any MPI call. 0 when it appeared. */
static int await(const char *what, int k)
{
	struct timespec nap = {0, 1000000};
	char p[4096];
	path_of(p, sizeof p, what, k);
	for (int i = 0; i < WAIT_SECONDS * 1000; i++) {
		if (access(p, F_OK) == 0)
			return 0;
		nanosleep(&nap, NULL);
	}
	return -1;
}

static float *big_pattern(void)
{
	float *x = malloc(BIG * sizeof *x);
	for (size_t i = 0; x && i < BIG; i++)
		x[i] = (float)(i % 1013);
	return x;
}

/* The cases, in turn: case k's message is head cases[k] and, for the
 * large one, the tensor big[BIG]. */
static const char *const cases[] = {"small", "large"};
#define NCASES 2

static size_t tensor_bytes(int k)
{
	return k == 1 ? BIG * sizeof(float) : 0;
}

static int receiver(ps_transport *t, const float *big)
{
	ps_frame f;

	for (int k = 0; k < NCASES; k++) {
		size_t hlen = strlen(cases[k]), tlen = tensor_bytes(k);
		if (await("sent", k) != 0)
			return fail(0, "rank 1 never sent the %s message",
				    cases[k]);
		if (ps_transport_recv(t, &f, 0) != PS_OK)
			return fail(0, "the %s message had arrived, and a "
				       "receive without wait did not see it",
				    cases[k]);
		if (f.head_len != hlen || memcmp(f.head, cases[k], hlen) != 0 ||
		    f.tensor_len != tlen ||
		    (tlen && memcmp(f.tensor, big, tlen) != 0))
			return fail(0, "the %s message damaged", cases[k]);
		if (touch("got", k) != 0)
			return fail(0, "cannot create a file in DIR");
	}
	return 0;
}

static int sender(ps_transport *t, const float *big)
{
	for (int k = 0; k < NCASES; k++) {
		if (ps_transport_send(t, NULL, cases[k], strlen(cases[k]), big,
				      tensor_bytes(k)) != PS_OK)
			return fail(1, "cannot send the %s message", cases[k]);
		if (touch("sent", k) != 0)
			return fail(1, "cannot create a file in DIR");
		if (await("got", k) != 0)
			return fail(1, "rank 0 never received the %s message",
				    cases[k]);
	}
	return 0;
}

int main(int argc, char **argv)
{
	ps_transport_opts o = {0, 2000, NULL};
	ps_transport *t = NULL;
	ps_err e = {0, ""};
	float *big = NULL;
	int rank, rc;

	if (argc != 2) {
		fprintf(stderr, "usage: mpirun -np 2 ps-mpi-arrival DIR\n");
		return 2;
	}
	dir = argv[1];
	if (ps_mpi_init(&e) != PS_OK) {
		fprintf(stderr, "ps-mpi-arrival: %s\n", e.msg);
		return 1;
	}
	rank = ps_mpi_rank();
	if (ps_mpi_size() != 2) {
		ps_mpi_finalize();
		return fail(rank, "run as 2 ranks: mpirun -np 2 ps-mpi-arrival DIR");
	}
	big = big_pattern();
	rc = !big ? PS_ENOMEM
	     : rank == 0 ? ps_transport_listen(&t, "mpi://*", &o, &e)
			 : ps_transport_connect(&t, "mpi://0", &o, &e);
	if (rc != PS_OK) {
		fprintf(stderr, "ps-mpi-arrival: %s\n",
			big ? e.msg : "out of memory");
		free(big);
		ps_mpi_finalize();
		return 1;
	}
	rc = rank == 0 ? receiver(t, big) : sender(t, big);
	ps_transport_destroy(&t);
	free(big);
	/* A rank that failed exits without finalizing, which ends the job
	 * instead of leaving its peer waiting in MPI_Finalize. */
	if (rc != 0)
		return rc;
	ps_mpi_finalize();
	printf("ps-mpi-arrival: rank %d: ok\n", rank);
	return 0;
}
