/*
 * ps_metrics: JSON-lines writer for periodic measurements. Each line is
 * flushed whole, so a reader polling the file (the launcher) sees whole
 * lines, at worst without the newest.
 */
#include "ps_metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ps_json.h"
#include "ps_log.h"

struct ps_metrics {
	FILE *f;
	double every;
	double t_open;   /* ps_now() at open */
	double next_due; /* ps_now() seconds */
	double prev;     /* ps_now() of the previous line; < 0: none */
	int failed;
};

int ps_metrics_open(ps_metrics **out, const char *path, double every,
		    ps_err *e)
{
	ps_metrics *m = NULL;
	int rc = PS_OK;

	*out = NULL;
	if (!(every > 0)) {
		rc = ps_err_set(e, PS_EINVAL,
				"metrics interval must be positive, not %g",
				every);
		goto out;
	}
	m = calloc(1, sizeof *m);
	if (!m) {
		rc = ps_err_set(e, PS_ENOMEM, "out of memory");
		goto out;
	}
	m->f = fopen(path, "w");
	if (!m->f) {
		rc = ps_err_set(e, PS_EIO, "cannot write %s", path);
		goto out;
	}
	m->every = every;
	m->t_open = m->next_due = ps_now();
	m->prev = -1;
	*out = m;
	m = NULL;
out:
	free(m);
	return rc;
}

void ps_metrics_close(ps_metrics **mp)
{
	if (!mp || !*mp)
		return;
	fclose((*mp)->f);
	free(*mp);
	*mp = NULL;
}

int ps_metrics_due(const ps_metrics *m, double now)
{
	return m && !m->failed && now >= m->next_due;
}

double ps_metrics_begin(ps_metrics *m, double now)
{
	struct timespec wall;
	double dt = m->prev >= 0 ? now - m->prev : 0;

	timespec_get(&wall, TIME_UTC);
	fprintf(m->f, "{\"time\": %.3f, \"unix_time\": %.3f", now - m->t_open,
		(double)wall.tv_sec + (double)wall.tv_nsec / 1e9);
	m->prev = now;
	while (m->next_due <= now)
		m->next_due += m->every;
	return dt;
}

void ps_metrics_u64(ps_metrics *m, const char *key, uint64_t v)
{
	fprintf(m->f, ", \"%s\": %llu", key, (unsigned long long)v);
}

void ps_metrics_num(ps_metrics *m, const char *key, double v)
{
	fprintf(m->f, ", \"%s\": ", key);
	ps_json_number(m->f, v);
}

void ps_metrics_hist(ps_metrics *m, const char *key,
		     const char *const *labels, const uint64_t *counts,
		     size_t n)
{
	fprintf(m->f, ", \"%s\": {", key);
	for (size_t i = 0; i < n; i++)
		fprintf(m->f, "%s\"%s\": %llu", i ? ", " : "", labels[i],
			(unsigned long long)counts[i]);
	fputc('}', m->f);
}

void ps_metrics_transport(ps_metrics *m, const ps_transport_counters *c)
{
	ps_metrics_u64(m, "bytes_in", c->bytes_in);
	ps_metrics_u64(m, "bytes_out", c->bytes_out);
	ps_metrics_u64(m, "msgs_in", c->msgs_in);
	ps_metrics_u64(m, "msgs_out", c->msgs_out);
	ps_metrics_u64(m, "msgs_shared_in", c->shared_in);
	ps_metrics_u64(m, "msgs_shared_out", c->shared_out);
}

int ps_metrics_end(ps_metrics *m)
{
	fputs("}\n", m->f);
	if (fflush(m->f) != 0 || ferror(m->f)) {
		m->failed = 1;
		return PS_EIO;
	}
	return PS_OK;
}
