/*
 * ps_mpi: what the rest of pserver needs from MPI besides the transport:
 * knowing whether mpirun started this process, initializing and finishing
 * MPI once, this rank and the world size, and the collective exchanges
 * that let ranks learn their roles and peers. Implemented, with the MPI
 * transport backend, in ps_transport_mpi.c, the only file that includes
 * mpi.h.
 */
#ifndef PS_MPI_H
#define PS_MPI_H

#include <stddef.h>

#include "ps_error.h"

/* 1 when the environment says mpirun (or another PMI launcher) started
 * this process; it does not initialize MPI. */
int ps_mpi_launched(void);

/* Initialize MPI once (later calls do nothing) with errors returned, not
 * fatal. Errors: PS_ETRANSPORT (e->msg has MPI's message). */
int ps_mpi_init(ps_err *e) PS_WUR;

/* Finish MPI if this process initialized it. Collective: every rank calls
 * it before exiting. Safe to call more than once. */
void ps_mpi_finalize(void);

/* This process's rank in MPI_COMM_WORLD and the world's size; -1 and 0
 * before ps_mpi_init(). */
int ps_mpi_rank(void);
int ps_mpi_size(void);

/* Collective: every rank gives its role code; roles[size] receives all of
 * them in rank order. Errors: PS_ETRANSPORT. */
int ps_mpi_allgather_int(int mine, int *all, ps_err *e) PS_WUR;

/* Collective: every rank gives a string of at most stride - 1 bytes;
 * all[size * stride] receives them in rank order, NUL-terminated.
 * Errors: PS_EINVAL (string too long), PS_ETRANSPORT. */
int ps_mpi_allgather_str(const char *mine, char *all, size_t stride,
			 ps_err *e) PS_WUR;

/* The MPI transport's framing, exposed for tests: one MPI message holds a
 * 16-byte header (magic "PSM1", u32 envelope length, u64 tensor length,
 * little-endian), the envelope padded to a multiple of 8, then the tensor
 * (so that it is 8-byte aligned in the receive buffer). */
#define PS_MPI_FRAME_HEADER 16

/* Bytes a frame of these lengths takes; 0 when too large for MPI's int
 * count. */
size_t ps_mpi_frame_size(size_t hlen, size_t tlen);

/* Write a frame into buf[ps_mpi_frame_size(hlen, tlen)]. With tensor
 * NULL, the header and envelope only: the caller's tlen bytes already lie
 * where the tensor goes. */
void ps_mpi_frame_pack(unsigned char *buf, const void *head, size_t hlen,
		       const void *tensor, size_t tlen);

/* Find the envelope and tensor in a received frame. Errors: PS_EPROTO
 * (bad magic, lengths that do not add up to len). Borrowed pointers into
 * buf. */
int ps_mpi_frame_parse(const unsigned char *buf, size_t len,
		       const unsigned char **head, size_t *hlen,
		       const unsigned char **tensor, size_t *tlen) PS_WUR;

#endif
