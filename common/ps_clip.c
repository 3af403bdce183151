/*
 * ps_clip: the norm comes from CBLAS snrm2 (which guards against overflow
 * in the sum of squares); the rescale is sscal.
 */
#include "ps_clip.h"

#include <cblas.h>
#include <math.h>

double ps_clip_norm(float *g, size_t n, double max_norm)
{
	double sumsq = 0.0, norm;
	size_t at;

	/* CBLAS lengths are int: combine the norms of int-sized pieces. */
	for (at = 0; at < n;) {
		int k = n - at > (size_t)1 << 30 ? 1 << 30 : (int)(n - at);
		double part = cblas_snrm2(k, g + at, 1);
		sumsq += part * part;
		at += (size_t)k;
	}
	norm = sqrt(sumsq);
	if (norm > max_norm) {
		float scale = (float)(max_norm / norm);
		for (at = 0; at < n;) {
			int k = n - at > (size_t)1 << 30 ? 1 << 30
							 : (int)(n - at);
			cblas_sscal(k, scale, g + at, 1);
			at += (size_t)k;
		}
	}
	return norm;
}

size_t ps_clip_value(float *g, size_t n, double max_value)
{
	const float hi = (float)max_value, lo = -hi;
	size_t changed = 0;

	for (size_t i = 0; i < n; i++) {
		float x = g[i];
		float y = x > hi ? hi : (x < lo ? lo : x);
		changed += y != x;
		g[i] = y;
	}
	return changed;
}
