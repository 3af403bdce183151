/*
 * ps_clip: gradient clipping, applied by a worker to its minibatch
 * gradient before the push: by global L2 norm (rescale the whole vector
 * when its norm exceeds a bound) and by value (clamp every element).
 */
#ifndef PS_CLIP_H
#define PS_CLIP_H

#include <stddef.h>

/* Scale g[n] by max_norm / ||g|| when ||g|| > max_norm (max_norm > 0).
 * Returns the norm before clipping. */
double ps_clip_norm(float *g, size_t n, double max_norm);

/* Clamp every g[i] into [-max_value, max_value] (max_value > 0). Returns
 * how many elements were changed. */
size_t ps_clip_value(float *g, size_t n, double max_value);

#endif
