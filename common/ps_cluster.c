/*
 * ps_cluster: two collectives at start-up. Roles are exchanged as ints;
 * endpoints as fixed-size strings, so that every rank takes part in the
 * same MPI_Allgather calls in the same order.
 */
#include "ps_cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ps_mpi.h"

#define ENDPOINT_MAX 256

int ps_cluster_join(ps_cluster *c, enum ps_cluster_role role, ps_err *e)
{
	int *roles = NULL;
	int rc;

	memset(c, 0, sizeof *c);
	c->server_rank = -1;
	rc = ps_mpi_init(e);
	if (rc != PS_OK)
		return rc;
	c->world_rank = ps_mpi_rank();
	c->world_size = ps_mpi_size();
	roles = calloc((size_t)c->world_size, sizeof *roles);
	if (!roles)
		return ps_err_set(e, PS_ENOMEM, "out of memory");
	rc = ps_mpi_allgather_int((int)role, roles, e);
	if (rc != PS_OK)
		goto out;
	for (int r = 0; r < c->world_size; r++) {
		if (roles[r] == PS_CLUSTER_SERVER) {
			if (c->server_rank < 0)
				c->server_rank = r;
			if (r < c->world_rank)
				c->server_index++;
			c->num_servers++;
		} else if (roles[r] == PS_CLUSTER_EVALUATOR) {
			c->num_evaluators++;
		} else if (roles[r] == PS_CLUSTER_TRAINER) {
			if (r < c->world_rank)
				c->trainer_index++;
			c->num_trainers++;
		}
	}
	if (c->num_servers == 0)
		rc = ps_err_set(e, PS_EINVAL,
				"the mpirun job has no ps-server rank");
	else if (c->num_trainers == 0)
		rc = ps_err_set(e, PS_EINVAL,
				"the mpirun job has no training ps-worker rank");
out:
	free(roles);
	return rc;
}

int ps_cluster_share_endpoint(const ps_cluster *c, const char *mine,
			      char *endpoint, size_t len, ps_err *e)
{
	char *all = calloc((size_t)c->world_size, ENDPOINT_MAX);
	int rc;

	if (!all)
		return ps_err_set(e, PS_ENOMEM, "out of memory");
	rc = ps_mpi_allgather_str(mine, all, ENDPOINT_MAX, e);
	if (rc == PS_OK && len > 0)
		endpoint[0] = '\0';
	/* Only servers publish something: in rank order, the shards. One
	 * that failed published "", and then the list is "". */
	for (int r = 0, k = 0; rc == PS_OK && r < c->world_size; r++) {
		const char *theirs = all + (size_t)r * ENDPOINT_MAX;
		size_t used = strlen(endpoint);
		if (theirs[0] == '\0')
			continue;
		if (used + strlen(theirs) + 2 > len)
			rc = ps_err_set(e, PS_EINVAL, "endpoints too long: %s",
					theirs);
		else
			snprintf(endpoint + used, len - used, "%s%s",
				 k ? "," : "", theirs);
		if (++k == (int)c->num_servers)
			break;
	}
	if (rc == PS_OK) {
		uint32_t n = endpoint[0] ? 1 : 0;
		for (const char *p = endpoint; *p; p++)
			n += *p == ',';
		if (n != c->num_servers)
			endpoint[0] = '\0';
	}
	free(all);
	return rc;
}

void ps_cluster_leave(void)
{
	ps_mpi_finalize();
}
