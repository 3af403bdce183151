/*
 * ps_cluster: a process's place in a job started by mpirun. Every rank
 * says which role it plays (server, trainer, evaluator); from that each
 * learns the server ranks (one per shard, in rank order), how many
 * trainers there are and its own trainer index, and the servers'
 * endpoints.
 * Nothing has to be configured by hand. Built on ps_mpi.h.
 */
#ifndef PS_CLUSTER_H
#define PS_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "ps_error.h"

enum ps_cluster_role {
	PS_CLUSTER_SERVER = 0,
	PS_CLUSTER_TRAINER = 1,
	PS_CLUSTER_EVALUATOR = 2,
};

/* Plain value record. */
typedef struct ps_cluster {
	int world_rank, world_size;
	int server_rank;       /* the first server's world rank */
	uint32_t num_servers;  /* server shards: server ranks in rank order */
	uint32_t server_index; /* a server's shard index */
	uint32_t num_trainers;
	uint32_t num_evaluators;
	uint32_t trainer_index; /* this rank's place among trainers */
} ps_cluster;

/* Initialize MPI and exchange roles (collective: every rank of the job
 * calls it once, in the same order as ps_cluster_share_endpoint()).
 * Errors: PS_ETRANSPORT, PS_EINVAL (no server or no trainer in the job). */
int ps_cluster_join(ps_cluster *c, enum ps_cluster_role role,
		    ps_err *e) PS_WUR;

/* Collective: each server gives its endpoint (e.g. "tcp://host:port"),
 * every other rank gives ""; every rank receives the servers' endpoints
 * in shard order, separated by commas, into endpoint[len] ("" when a
 * server gave ""). Errors: PS_EINVAL (too long), PS_ETRANSPORT. */
int ps_cluster_share_endpoint(const ps_cluster *c, const char *mine,
			      char *endpoint, size_t len, ps_err *e) PS_WUR;

/* Finish MPI (collective). */
void ps_cluster_leave(void);

#endif
