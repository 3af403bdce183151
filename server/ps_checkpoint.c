/*
 * ps_checkpoint: the extra part's layout, version 1, all little-endian:
 *   u32 format (1), u32 num_workers, u32 optim_kind, u32 consistency,
 *   u32 shard, u32 num_shards, u64 begin, u64 total (the range held:
 *   [begin, begin + n) of total weights, n the model file's count),
 *   u64 version, optim_steps, state_count, samples, pulls,
 *       pushes_applied, bsp_steps, bsp_clock, staleness_max,
 *       updates_lost, staleness_hist[8],
 *   f64 staleness_sum, train_seconds,
 *   per worker: u64 clock, last_seq, seq_mask, pushes, samples, done,
 *   f32 state[state_count].
 * The reader checks the total length against these counts before it
 * allocates anything, so a corrupt count cannot ask for gigabytes.
 */
#include "ps_checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ps_json.h"
#include "ps_log.h"
#include "ps_modelfile.h"
#include "ps_shard.h"

/* 6 u32, 20 u64 and 2 f64; 6 u64 a worker. */
#define FIXED_BYTES ((uint64_t)200)
#define WORKER_BYTES ((uint64_t)48)
#define MAX_WORKERS 65535u
#define NUM_OPTIM_KINDS 7u
#define NAME_PREFIX "ckpt-"
#define NAME_SUFFIX ".psck"

/* A cursor over a byte buffer whose size was checked beforehand. */
typedef struct cursor {
	uint8_t *p;
} cursor;

static void put_u32(cursor *c, uint32_t v)
{
	memcpy(c->p, &v, 4);
	c->p += 4;
}

static void put_u64(cursor *c, uint64_t v)
{
	memcpy(c->p, &v, 8);
	c->p += 8;
}

static void put_f64(cursor *c, double v)
{
	memcpy(c->p, &v, 8);
	c->p += 8;
}

static uint32_t get_u32(cursor *c)
{
	uint32_t v;
	memcpy(&v, c->p, 4);
	c->p += 4;
	return v;
}

static uint64_t get_u64(cursor *c)
{
	uint64_t v;
	memcpy(&v, c->p, 8);
	c->p += 8;
	return v;
}

static double get_f64(cursor *c)
{
	double v;
	memcpy(&v, c->p, 8);
	c->p += 8;
	return v;
}

int ps_checkpoint_write(const char *path, const ps_checkpoint *ck, ps_err *e)
{
	uint64_t len = FIXED_BYTES + (uint64_t)ck->num_workers * WORKER_BYTES +
		       ck->state_count * 4;
	uint8_t *buf = malloc(len);
	cursor c;
	int rc;

	if (!buf)
		return ps_err_set(e, PS_ENOMEM, "out of memory for a checkpoint");
	c.p = buf;
	put_u32(&c, PS_CHECKPOINT_FORMAT);
	put_u32(&c, ck->num_workers);
	put_u32(&c, ck->optim_kind);
	put_u32(&c, ck->consistency);
	put_u32(&c, ck->shard);
	put_u32(&c, ck->num_shards);
	put_u64(&c, ck->begin);
	put_u64(&c, ck->total);
	put_u64(&c, ck->version);
	put_u64(&c, ck->optim_steps);
	put_u64(&c, ck->state_count);
	put_u64(&c, ck->samples);
	put_u64(&c, ck->pulls);
	put_u64(&c, ck->pushes_applied);
	put_u64(&c, ck->bsp_steps);
	put_u64(&c, ck->bsp_clock);
	put_u64(&c, ck->staleness_max);
	put_u64(&c, ck->updates_lost);
	for (int i = 0; i < 8; i++)
		put_u64(&c, ck->staleness_hist[i]);
	put_f64(&c, ck->staleness_sum);
	put_f64(&c, ck->train_seconds);
	for (uint32_t r = 0; r < ck->num_workers; r++) {
		const ps_checkpoint_worker *w = &ck->workers[r];
		put_u64(&c, w->clock);
		put_u64(&c, w->last_seq);
		put_u64(&c, w->seq_mask);
		put_u64(&c, w->pushes);
		put_u64(&c, w->samples);
		put_u64(&c, w->done ? 1 : 0);
	}
	if (ck->state_count)
		memcpy(c.p, ck->state, ck->state_count * 4);
	rc = ps_modelfile_write_checkpoint(path, &ck->spec, ck->model_version,
					   ck->w, ck->n, buf, len, e);
	free(buf);
	return rc;
}

void ps_checkpoint_release(ps_checkpoint *ck)
{
	free(ck->w);
	free(ck->state);
	free(ck->workers);
	memset(ck, 0, sizeof *ck);
}

int ps_checkpoint_read(const char *path, ps_checkpoint *ck, ps_err *e)
{
	void *extra = NULL;
	uint64_t len = 0, state_count;
	uint32_t format;
	cursor c;
	int rc;

	memset(ck, 0, sizeof *ck);
	rc = ps_modelfile_read_checkpoint(path, &ck->spec, &ck->model_version,
					  &ck->w, &ck->n, &extra, &len, e);
	if (rc != PS_OK)
		goto out;
	if (len < FIXED_BYTES) {
		rc = ps_err_set(e, PS_EFORMAT, "%s: server state of %" PRIu64
					       " bytes is too short",
				path, len);
		goto out;
	}
	c.p = extra;
	format = get_u32(&c);
	if (format != PS_CHECKPOINT_FORMAT) {
		rc = ps_err_set(e, PS_EFORMAT,
				"%s: server state format %u, expected %d", path,
				format, PS_CHECKPOINT_FORMAT);
		goto out;
	}
	ck->num_workers = get_u32(&c);
	ck->optim_kind = get_u32(&c);
	ck->consistency = get_u32(&c);
	ck->shard = get_u32(&c);
	ck->num_shards = get_u32(&c);
	ck->begin = get_u64(&c);
	ck->total = get_u64(&c);
	ck->version = get_u64(&c);
	ck->optim_steps = get_u64(&c);
	state_count = get_u64(&c);
	if (ck->num_workers == 0 || ck->num_workers > MAX_WORKERS ||
	    ck->optim_kind >= NUM_OPTIM_KINDS || ck->consistency > 2 ||
	    (state_count != 0 && state_count != ck->n &&
	     state_count != 2 * ck->n) ||
	    len != FIXED_BYTES + (uint64_t)ck->num_workers * WORKER_BYTES +
			   state_count * 4 ||
	    ck->model_version > ck->version || ck->num_shards == 0 ||
	    ck->shard >= ck->num_shards || ck->begin > ck->total ||
	    ck->n > ck->total - ck->begin) {
		rc = ps_err_set(e, PS_EFORMAT,
				"%s: inconsistent server state (%u workers, "
				"optimizer %u, %" PRIu64 " state floats for %"
				PRIu64 " weights, %" PRIu64 " bytes)",
				path, ck->num_workers, ck->optim_kind,
				state_count, ck->n, len);
		goto out;
	}
	ck->samples = get_u64(&c);
	ck->pulls = get_u64(&c);
	ck->pushes_applied = get_u64(&c);
	ck->bsp_steps = get_u64(&c);
	ck->bsp_clock = get_u64(&c);
	ck->staleness_max = get_u64(&c);
	ck->updates_lost = get_u64(&c);
	for (int i = 0; i < 8; i++)
		ck->staleness_hist[i] = get_u64(&c);
	ck->staleness_sum = get_f64(&c);
	ck->train_seconds = get_f64(&c);
	ck->workers = calloc(ck->num_workers, sizeof *ck->workers);
	if (state_count) {
		ck->state = malloc(state_count * sizeof(float));
		ck->state_count = state_count;
	}
	if (!ck->workers || (state_count && !ck->state)) {
		rc = ps_err_set(e, PS_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	for (uint32_t r = 0; r < ck->num_workers; r++) {
		ps_checkpoint_worker *w = &ck->workers[r];
		uint64_t done;
		w->clock = get_u64(&c);
		w->last_seq = get_u64(&c);
		w->seq_mask = get_u64(&c);
		w->pushes = get_u64(&c);
		w->samples = get_u64(&c);
		done = get_u64(&c);
		if (done > 1) {
			rc = ps_err_set(e, PS_EFORMAT,
					"%s: worker %u has a bad done flag",
					path, r);
			goto out;
		}
		w->done = (int)done;
	}
	if (state_count)
		memcpy(ck->state, c.p, state_count * 4);
out:
	free(extra);
	if (rc != PS_OK)
		ps_checkpoint_release(ck);
	return rc;
}

static int is_checkpoint_name(const char *name)
{
	size_t n = strlen(name), p = strlen(NAME_PREFIX), s = strlen(NAME_SUFFIX);
	if (n <= p + s || strncmp(name, NAME_PREFIX, p) != 0 ||
	    strcmp(name + n - s, NAME_SUFFIX) != 0)
		return 0;
	for (size_t i = p; i < n - s; i++)
		if (name[i] < '0' || name[i] > '9')
			return 0;
	return 1;
}

static int cmp_desc(const void *a, const void *b)
{
	/* Names hold zero-padded versions: byte order is version order. */
	return strcmp(*(char *const *)b, *(char *const *)a);
}

/* The checkpoint names in dir, newest first. Caller frees each and the
 * array. Errors: PS_ENOENT, PS_EIO, PS_ENOMEM. */
static int list_checkpoints(const char *dir, char ***out, size_t *count,
			    ps_err *e)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char **names = NULL;
	size_t n = 0, cap = 0;
	int rc = PS_OK;

	*out = NULL;
	*count = 0;
	if (!d)
		return ps_err_set(e, errno == ENOENT ? PS_ENOENT : PS_EIO,
				  "checkpoint directory %s: %s", dir,
				  strerror(errno));
	while ((de = readdir(d)) != NULL) {
		if (!is_checkpoint_name(de->d_name))
			continue;
		if (n == cap) {
			size_t ncap = cap ? 2 * cap : 16;
			char **t = realloc(names, ncap * sizeof *t);
			if (!t) {
				rc = ps_err_set(e, PS_ENOMEM, "out of memory");
				goto out;
			}
			names = t;
			cap = ncap;
		}
		names[n] = strdup(de->d_name);
		if (!names[n]) {
			rc = ps_err_set(e, PS_ENOMEM, "out of memory");
			goto out;
		}
		n++;
	}
	if (n > 1)
		qsort(names, n, sizeof *names, cmp_desc);
out:
	closedir(d);
	if (rc != PS_OK) {
		for (size_t i = 0; i < n; i++)
			free(names[i]);
		free(names);
		return rc;
	}
	*out = names;
	*count = n;
	return PS_OK;
}

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

int ps_checkpoint_save(const char *dir, const ps_checkpoint *ck, int keep,
		       char *written, size_t written_len, ps_err *e)
{
	char path[4096];
	char **names = NULL;
	size_t n = 0;
	int rc;

	if (snprintf(path, sizeof path, "%s/" NAME_PREFIX "%020" PRIu64
			   NAME_SUFFIX, dir, ck->version) >= (int)sizeof path)
		return ps_err_set(e, PS_EINVAL, "checkpoint path too long: %s",
				  dir);
	rc = ps_checkpoint_write(path, ck, e);
	if (rc != PS_OK)
		return rc;
	if (written)
		snprintf(written, written_len, "%s", path);
	/* Pruning is housekeeping: a failure leaves an extra file. */
	if (list_checkpoints(dir, &names, &n, NULL) == PS_OK) {
		for (size_t i = keep < 1 ? 1 : (size_t)keep; i < n; i++) {
			if (snprintf(path, sizeof path, "%s/%s", dir,
				     names[i]) < (int)sizeof path &&
			    unlink(path) != 0)
				ps_log_warn("cannot delete old checkpoint %s: %s",
					    path, strerror(errno));
		}
		free_names(names, n);
	}
	return PS_OK;
}

int ps_checkpoint_load_newest(const char *dir, ps_checkpoint *ck, char *path,
			      size_t len, ps_err *e)
{
	char **names = NULL;
	size_t n = 0;
	ps_err first = {0};
	int rc = list_checkpoints(dir, &names, &n, e);

	memset(ck, 0, sizeof *ck);
	if (rc != PS_OK)
		return rc;
	if (n == 0) {
		free_names(names, n);
		return ps_err_set(e, PS_ENOENT, "no checkpoint in %s", dir);
	}
	for (size_t i = 0; i < n; i++) {
		ps_err one = {0};
		if (snprintf(path, len, "%s/%s", dir, names[i]) >= (int)len) {
			rc = ps_err_set(&one, PS_EINVAL, "path too long: %s/%s",
					dir, names[i]);
		} else {
			rc = ps_checkpoint_read(path, ck, &one);
			if (rc == PS_OK)
				break;
		}
		ps_log_warn("checkpoint refused: %s", one.msg);
		if (i == 0)
			first = one;
	}
	free_names(names, n);
	if (rc != PS_OK)
		return ps_err_set(e, PS_EFORMAT,
				  "no valid checkpoint in %s (%zu refused; "
				  "the newest: %s)",
				  dir, n, first.msg);
	return PS_OK;
}

int ps_checkpoint_dir(const char *root, uint32_t num_shards, uint32_t shard,
		      char *out, size_t len, ps_err *e)
{
	int k = num_shards <= 1
			? snprintf(out, len, "%s", root)
			: snprintf(out, len, "%s/%u-shards/shard-%u", root,
				   num_shards, shard);
	if (k < 0 || (size_t)k >= len)
		return ps_err_set(e, PS_EINVAL, "checkpoint path too long: %s",
				  root);
	return PS_OK;
}

int ps_checkpoint_write_manifest(const char *root, const ps_checkpoint *ck,
				 ps_err *e)
{
	char path[4096], tmp[4200];
	FILE *f;
	int rc = PS_OK;

	if (snprintf(path, sizeof path, "%s/manifest.json", root) >=
	    (int)sizeof path)
		return ps_err_set(e, PS_EINVAL, "path too long: %s", root);
	snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
	f = fopen(tmp, "w");
	if (!f)
		return ps_err_set(e, PS_EIO, "%s: %s", tmp, strerror(errno));
	fprintf(f, "{\"model\": ");
	ps_json_string(f, ck->spec.name);
	fprintf(f, ", \"input_dim\": %u, \"output_dim\": %u, \"hidden\": ",
		ck->spec.input_dim, ck->spec.output_dim);
	ps_json_string(f, ck->spec.hidden);
	fprintf(f, ", \"activation\": ");
	ps_json_string(f, ck->spec.activation);
	fprintf(f, ", \"init_seed\": %" PRIu64 ",\n \"num_params\": %" PRIu64
		   ", \"num_shards\": %u, \"version\": %" PRIu64
		   ",\n \"ranges\": [",
		ck->spec.init_seed, ck->total, ck->num_shards, ck->version);
	for (uint32_t k = 0; k < ck->num_shards; k++) {
		uint64_t b, en;
		ps_shard_range(ck->total, ck->num_shards, k, &b, &en);
		fprintf(f, "%s[%" PRIu64 ", %" PRIu64 "]", k ? ", " : "", b, en);
	}
	fprintf(f, "]}\n");
	if (fflush(f) != 0 || fsync(fileno(f)) != 0)
		rc = ps_err_set(e, PS_EIO, "%s: %s", tmp, strerror(errno));
	if (fclose(f) != 0 && rc == PS_OK)
		rc = ps_err_set(e, PS_EIO, "%s: %s", tmp, strerror(errno));
	if (rc == PS_OK && rename(tmp, path) != 0)
		rc = ps_err_set(e, PS_EIO, "%s: %s", path, strerror(errno));
	if (rc != PS_OK)
		unlink(tmp);
	return rc;
}

/* The shard count of the newest checkpoints under root: the manifest's,
 * or 1 without one. */
static int manifest_shards(const char *root, uint32_t *num_shards, ps_err *e)
{
	char path[4096], buf[4096];
	const char *p;
	size_t got;
	FILE *f;
	unsigned long v;

	*num_shards = 1;
	if (snprintf(path, sizeof path, "%s/manifest.json", root) >=
	    (int)sizeof path)
		return ps_err_set(e, PS_EINVAL, "path too long: %s", root);
	f = fopen(path, "r");
	if (!f)
		return errno == ENOENT ? PS_OK
				       : ps_err_set(e, PS_EIO, "%s: %s", path,
						    strerror(errno));
	got = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[got] = '\0';
	p = strstr(buf, "\"num_shards\": ");
	if (!p)
		return ps_err_set(e, PS_EFORMAT, "%s: no num_shards", path);
	v = strtoul(p + strlen("\"num_shards\": "), NULL, 10);
	if (v < 1 || v > 65536)
		return ps_err_set(e, PS_EFORMAT, "%s: num_shards %lu", path, v);
	*num_shards = (uint32_t)v;
	return PS_OK;
}

/* Copy [b, e) of weights and optimizer state out of old shard `o` into
 * ck, which holds [ck->begin, ck->begin + ck->n). */
static void copy_overlap(ps_checkpoint *ck, const ps_checkpoint *o)
{
	uint64_t b = ck->begin > o->begin ? ck->begin : o->begin;
	uint64_t e = ck->begin + ck->n < o->begin + o->n ? ck->begin + ck->n
							: o->begin + o->n;
	uint64_t per = o->n ? o->state_count / o->n : 0;

	if (b >= e)
		return;
	memcpy(ck->w + (b - ck->begin), o->w + (b - o->begin),
	       (e - b) * sizeof(float));
	/* State is per-weight arrays one after the other (a, then b). */
	for (uint64_t j = 0; j < per; j++)
		memcpy(ck->state + j * ck->n + (b - ck->begin),
		       o->state + j * o->n + (b - o->begin),
		       (e - b) * sizeof(float));
}

static int recut(const char *root, uint32_t old_s, uint32_t num_shards,
		 uint32_t shard, ps_checkpoint *ck, char *from, size_t len,
		 ps_err *e)
{
	ps_checkpoint *old = calloc(old_s, sizeof *old);
	char dir[4096], path[4200];
	char **names = NULL;
	size_t count = 0;
	int rc = PS_OK, found = 0;

	memset(ck, 0, sizeof *ck);
	if (!old)
		return ps_err_set(e, PS_ENOMEM, "out of memory");
	/* Versions old shard 0 has, newest first; each tried on every shard. */
	rc = ps_checkpoint_dir(root, old_s, 0, dir, sizeof dir, e);
	if (rc == PS_OK)
		rc = list_checkpoints(dir, &names, &count, e);
	for (size_t i = 0; rc == PS_OK && i < count && !found; i++) {
		int ok = 1;
		for (uint32_t k = 0; k < old_s && ok; k++) {
			ps_err one = {0};
			if (ps_checkpoint_dir(root, old_s, k, dir, sizeof dir,
					      &one) != PS_OK ||
			    snprintf(path, sizeof path, "%s/%s", dir,
				     names[i]) >= (int)sizeof path ||
			    ps_checkpoint_read(path, &old[k], &one) != PS_OK ||
			    old[k].num_shards != old_s || old[k].shard != k ||
			    old[k].total != old[0].total ||
			    old[k].state_count / (old[k].n ? old[k].n : 1) !=
				    old[0].state_count /
					    (old[0].n ? old[0].n : 1)) {
				ps_log_warn("resharding: %s of %u shards refused: %s",
					    names[i], old_s,
					    one.msg[0] ? one.msg
						       : "another model or cut");
				ok = 0;
			}
		}
		if (!ok) {
			for (uint32_t k = 0; k < old_s; k++)
				ps_checkpoint_release(&old[k]);
			continue;
		}
		found = 1;
	}
	if (rc == PS_OK && !found)
		rc = ps_err_set(e, PS_EFORMAT,
				"no version that all %u old shards under %s "
				"checkpointed validly", old_s, root);
	if (rc == PS_OK) {
		uint64_t b, en, per = old[0].n ? old[0].state_count / old[0].n : 0;
		uint32_t first;
		const ps_checkpoint *src;
		ps_shard_range(old[0].total, num_shards, shard, &b, &en);
		first = ps_shard_of(old[0].total, old_s, b);
		src = &old[first];
		*ck = *src; /* counters, spec, workers' standing */
		ck->w = NULL;
		ck->state = NULL;
		ck->workers = NULL;
		ck->begin = b;
		ck->n = en - b;
		ck->shard = shard;
		ck->num_shards = num_shards;
		ck->state_count = per * ck->n;
		ck->w = calloc(ck->n ? ck->n : 1, sizeof(float));
		ck->state = per ? calloc(ck->state_count ? ck->state_count : 1,
					 sizeof(float))
				: NULL;
		ck->workers = calloc(src->num_workers ? src->num_workers : 1,
				     sizeof *ck->workers);
		if (!ck->w || (per && !ck->state) || !ck->workers) {
			rc = ps_err_set(e, PS_ENOMEM, "out of memory");
		} else {
			memcpy(ck->workers, src->workers,
			       src->num_workers * sizeof *ck->workers);
			for (uint32_t k = 0; k < old_s; k++)
				copy_overlap(ck, &old[k]);
			snprintf(from, len, "%s (%u shards, version %" PRIu64
				 ") recut for shard %u of %u",
				 root, old_s, ck->version, shard, num_shards);
		}
	}
	for (uint32_t k = 0; k < old_s; k++)
		ps_checkpoint_release(&old[k]);
	free(old);
	free_names(names, count);
	if (rc != PS_OK)
		ps_checkpoint_release(ck);
	return rc;
}

int ps_checkpoint_load_for(const char *root, uint32_t num_shards,
			   uint32_t shard, ps_checkpoint *ck, char *from,
			   size_t len, ps_err *e)
{
	char dir[4096];
	uint32_t old_s;
	int rc = manifest_shards(root, &old_s, e);

	memset(ck, 0, sizeof *ck);
	if (rc != PS_OK)
		return rc;
	if (old_s != num_shards)
		return recut(root, old_s, num_shards, shard, ck, from, len, e);
	rc = ps_checkpoint_dir(root, num_shards, shard, dir, sizeof dir, e);
	if (rc != PS_OK)
		return rc;
	return ps_checkpoint_load_newest(dir, ck, from, len, e);
}
