/*
 * Unit tests for ps_optim: every kind's first three updates against values
 * worked out by hand (the arithmetic written out below in double), L2 and
 * L1 regularization, AdamW's decoupled decay, the learning-rate schedules,
 * per-weight state, and the configurations ps_optim_new() must refuse.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "ps_optim.h"

static void assert_floats_equal(const float *got, const float *want, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!(got[i] == want[i]))
			fail_msg("index %zu: got %.9g, want %.9g", i,
				 (double)got[i], (double)want[i]);
}

/*
 * Float32 results against hand arithmetic in double. A float operation
 * rounds to within 2^-24 (6e-8) of its exact result, relative. Every value
 * checked is at most about 20 such operations on numbers below 4 in
 * magnitude, and the divisions and square roots of the adaptive kinds are
 * well conditioned, so the error stays within a few ulps of the weights'
 * scale (the largest seen is 5.9e-8, one ulp at 1). 1e-6 * max(1, |want|)
 * leaves a wide margin for that and is still far below what a wrong
 * formula changes here: swapping momentum for Nesterov, dropping a bias
 * correction or a decay term each moves some weight by 1e-3 or more.
 */
static void assert_close(const float *got, const double *want, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		double tol = 1e-6 * fmax(1.0, fabs(want[i]));
		if (!(fabs((double)got[i] - want[i]) <= tol))
			fail_msg("index %zu: got %.9g, want %.9g (off by %.3g)",
				 i, (double)got[i], want[i],
				 fabs((double)got[i] - want[i]));
	}
}

static ps_optim *new_optim(const ps_optim_config *cfg, size_t n)
{
	ps_optim *o = NULL;
	ps_err e = { 0, "" };

	if (ps_optim_new(&o, n, cfg, &e) != PS_OK)
		fail_msg("ps_optim_new: %s", e.msg);
	assert_non_null(o);
	return o;
}

/* Every hyper-parameter at its conventional value. */
static ps_optim_config full_config(enum ps_optim_kind kind, double lr)
{
	ps_optim_config c = { .kind = kind, .lr = lr, .momentum = 0.9,
			      .beta1 = 0.9, .beta2 = 0.999, .rho = 0.9,
			      .eps = 1e-8 };
	return c;
}

/* The common problem of the by-hand tests: three weights, three pushes. */
static const float W0[3] = { 1.0f, -2.0f, 0.5f };
static const float G1[3] = { 0.5f, -1.0f, 0.25f };
static const float G2[3] = { 0.25f, 0.5f, -1.0f };
static const float G3[3] = { -0.5f, 1.0f, 0.5f };

/* Apply G1, G2, G3 as updates 0, 1, 2 to W0 and check after each. */
static void expect_three(const ps_optim_config *cfg, const double *w1,
			 const double *w2, const double *w3)
{
	ps_optim *o = new_optim(cfg, 3);
	float w[3];

	memcpy(w, W0, sizeof w);
	ps_optim_apply(o, w, G1, 3, 0);
	assert_close(w, w1, 3);
	ps_optim_apply(o, w, G2, 3, 1);
	assert_close(w, w2, 3);
	ps_optim_apply(o, w, G3, 3, 2);
	assert_close(w, w3, 3);
	ps_optim_destroy(&o);
	assert_null(o);
}

static void test_optim_sgd_three_updates_by_hand(void **state)
{
	ps_optim_config cfg = { .kind = PS_OPTIM_SGD, .lr = 0.25 };
	ps_optim *o = NULL;
	ps_err e = { 0, "" };
	float w[5] = { 1.0f, -2.0f, 0.5f, 3.0f, 0.0f };
	const float g1[5] = { 4.0f, -1.0f, 2.0f, 0.0f, 8.0f };
	const float g2[5] = { -2.0f, 0.5f, 1.0f, 6.0f, -4.0f };
	const float g3[5] = { 1.0f, 2.0f, -0.5f, -2.0f, 0.25f };
	/* w -= 0.25 * g, by hand (dyadic numbers, so float is exact):
	 *   after g1: 1-1=0, -2+0.25=-1.75, 0.5-0.5=0, 3-0=3, 0-2=-2
	 *   after g2: 0+0.5=0.5, -1.75-0.125=-1.875, 0-0.25=-0.25,
	 *             3-1.5=1.5, -2+1=-1
	 *   after g3: 0.5-0.25=0.25, -1.875-0.5=-2.375, -0.25+0.125=-0.125,
	 *             1.5+0.5=2, -1-0.0625=-1.0625 */
	const float w1[5] = { 0.0f, -1.75f, 0.0f, 3.0f, -2.0f };
	const float w2[5] = { 0.5f, -1.875f, -0.25f, 1.5f, -1.0f };
	const float w3[5] = { 0.25f, -2.375f, -0.125f, 2.0f, -1.0625f };

	(void)state;
	assert_int_equal(ps_optim_new(&o, 5, &cfg, &e), PS_OK);
	assert_non_null(o);
	ps_optim_apply(o, w, g1, 5, 0);
	assert_floats_equal(w, w1, 5);
	ps_optim_apply(o, w, g2, 5, 1);
	assert_floats_equal(w, w2, 5);
	ps_optim_apply(o, w, g3, 5, 2);
	assert_floats_equal(w, w3, 5);
	ps_optim_destroy(&o);
	assert_null(o);
}

/* The same problem as the other kinds, lr 0.1: w -= 0.1 * g. */
static void test_optim_sgd_common_problem_by_hand(void **state)
{
	ps_optim_config cfg = { .kind = PS_OPTIM_SGD, .lr = 0.1 };
	const double w1[3] = { 1 - 0.1 * 0.5, -2 - 0.1 * -1, 0.5 - 0.1 * 0.25 };
	const double w2[3] = { w1[0] - 0.1 * 0.25, w1[1] - 0.1 * 0.5,
			       w1[2] - 0.1 * -1 };
	const double w3[3] = { w2[0] - 0.1 * -0.5, w2[1] - 0.1 * 1,
			       w2[2] - 0.1 * 0.5 };

	(void)state;
	expect_three(&cfg, w1, w2, w3);
}

static void test_optim_momentum_three_updates_by_hand(void **state)
{
	ps_optim_config cfg = { .kind = PS_OPTIM_MOMENTUM, .lr = 0.1,
				.momentum = 0.9 };
	/* v = 0.9 v + g, from v = 0; w -= 0.1 v */
	const double v1[3] = { 0.5, -1, 0.25 };
	const double v2[3] = { 0.9 * 0.5 + 0.25, 0.9 * -1 + 0.5,
			       0.9 * 0.25 - 1 };
	const double v3[3] = { 0.9 * v2[0] - 0.5, 0.9 * v2[1] + 1,
			       0.9 * v2[2] + 0.5 };
	const double w1[3] = { 1 - 0.1 * v1[0], -2 - 0.1 * v1[1],
			       0.5 - 0.1 * v1[2] };
	const double w2[3] = { w1[0] - 0.1 * v2[0], w1[1] - 0.1 * v2[1],
			       w1[2] - 0.1 * v2[2] };
	const double w3[3] = { w2[0] - 0.1 * v3[0], w2[1] - 0.1 * v3[1],
			       w2[2] - 0.1 * v3[2] };

	(void)state;
	expect_three(&cfg, w1, w2, w3);
}

static void test_optim_nesterov_three_updates_by_hand(void **state)
{
	ps_optim_config cfg = { .kind = PS_OPTIM_NESTEROV, .lr = 0.1,
				.momentum = 0.9 };
	/* v = 0.9 v + g as for momentum; w -= 0.1 (g + 0.9 v) */
	const double v1[3] = { 0.5, -1, 0.25 };
	const double v2[3] = { 0.9 * 0.5 + 0.25, 0.9 * -1 + 0.5,
			       0.9 * 0.25 - 1 };
	const double v3[3] = { 0.9 * v2[0] - 0.5, 0.9 * v2[1] + 1,
			       0.9 * v2[2] + 0.5 };
	const double w1[3] = { 1 - 0.1 * (0.5 + 0.9 * v1[0]),
			       -2 - 0.1 * (-1 + 0.9 * v1[1]),
			       0.5 - 0.1 * (0.25 + 0.9 * v1[2]) };
	const double w2[3] = { w1[0] - 0.1 * (0.25 + 0.9 * v2[0]),
			       w1[1] - 0.1 * (0.5 + 0.9 * v2[1]),
			       w1[2] - 0.1 * (-1 + 0.9 * v2[2]) };
	const double w3[3] = { w2[0] - 0.1 * (-0.5 + 0.9 * v3[0]),
			       w2[1] - 0.1 * (1 + 0.9 * v3[1]),
			       w2[2] - 0.1 * (0.5 + 0.9 * v3[2]) };

	(void)state;
	expect_three(&cfg, w1, w2, w3);
}

static void test_optim_adagrad_three_updates_by_hand(void **state)
{
	ps_optim_config cfg = { .kind = PS_OPTIM_ADAGRAD, .lr = 0.1,
				.eps = 1e-8 };
	/* s += g^2; w -= 0.1 g / (sqrt(s) + 1e-8) */
	const double s1[3] = { 0.25, 1, 0.0625 };
	const double s2[3] = { 0.25 + 0.0625, 1 + 0.25, 0.0625 + 1 };
	const double s3[3] = { s2[0] + 0.25, s2[1] + 1, s2[2] + 0.25 };
	const double w1[3] = { 1 - 0.1 * 0.5 / (sqrt(s1[0]) + 1e-8),
			       -2 - 0.1 * -1 / (sqrt(s1[1]) + 1e-8),
			       0.5 - 0.1 * 0.25 / (sqrt(s1[2]) + 1e-8) };
	const double w2[3] = { w1[0] - 0.1 * 0.25 / (sqrt(s2[0]) + 1e-8),
			       w1[1] - 0.1 * 0.5 / (sqrt(s2[1]) + 1e-8),
			       w1[2] - 0.1 * -1 / (sqrt(s2[2]) + 1e-8) };
	const double w3[3] = { w2[0] - 0.1 * -0.5 / (sqrt(s3[0]) + 1e-8),
			       w2[1] - 0.1 * 1 / (sqrt(s3[1]) + 1e-8),
			       w2[2] - 0.1 * 0.5 / (sqrt(s3[2]) + 1e-8) };

	(void)state;
	expect_three(&cfg, w1, w2, w3);
}

static void test_optim_rmsprop_three_updates_by_hand(void **state)
{
	ps_optim_config cfg = { .kind = PS_OPTIM_RMSPROP, .lr = 0.1,
				.rho = 0.9, .eps = 1e-8 };
	/* s = 0.9 s + 0.1 g^2; w -= 0.1 g / (sqrt(s) + 1e-8) */
	const double s1[3] = { 0.1 * 0.25, 0.1 * 1, 0.1 * 0.0625 };
	const double s2[3] = { 0.9 * s1[0] + 0.1 * 0.0625,
			       0.9 * s1[1] + 0.1 * 0.25,
			       0.9 * s1[2] + 0.1 * 1 };
	const double s3[3] = { 0.9 * s2[0] + 0.1 * 0.25,
			       0.9 * s2[1] + 0.1 * 1,
			       0.9 * s2[2] + 0.1 * 0.25 };
	const double w1[3] = { 1 - 0.1 * 0.5 / (sqrt(s1[0]) + 1e-8),
			       -2 - 0.1 * -1 / (sqrt(s1[1]) + 1e-8),
			       0.5 - 0.1 * 0.25 / (sqrt(s1[2]) + 1e-8) };
	const double w2[3] = { w1[0] - 0.1 * 0.25 / (sqrt(s2[0]) + 1e-8),
			       w1[1] - 0.1 * 0.5 / (sqrt(s2[1]) + 1e-8),
			       w1[2] - 0.1 * -1 / (sqrt(s2[2]) + 1e-8) };
	const double w3[3] = { w2[0] - 0.1 * -0.5 / (sqrt(s3[0]) + 1e-8),
			       w2[1] - 0.1 * 1 / (sqrt(s3[1]) + 1e-8),
			       w2[2] - 0.1 * 0.5 / (sqrt(s3[2]) + 1e-8) };

	(void)state;
	expect_three(&cfg, w1, w2, w3);
}

/*
 * Adam's step mhat / (sqrt(vhat) + eps) for G1, G2, G3 with beta1 0.9,
 * beta2 0.999, eps 1e-8, by hand: m = 0.9 m + 0.1 g, v = 0.999 v +
 * 0.001 g^2, and the bias corrections 1 - 0.9^k, 1 - 0.999^k of steps
 * k = 1, 2, 3 written out. Shared by the adam and adamw tests, which
 * differ only in what they do with weight decay.
 */
static void adam_steps_by_hand(double d1[3], double d2[3], double d3[3])
{
	const double m1[3] = { 0.1 * 0.5, 0.1 * -1, 0.1 * 0.25 };
	const double v1[3] = { 0.001 * 0.25, 0.001 * 1, 0.001 * 0.0625 };
	const double m2[3] = { 0.9 * m1[0] + 0.1 * 0.25,
			       0.9 * m1[1] + 0.1 * 0.5,
			       0.9 * m1[2] + 0.1 * -1 };
	const double v2[3] = { 0.999 * v1[0] + 0.001 * 0.0625,
			       0.999 * v1[1] + 0.001 * 0.25,
			       0.999 * v1[2] + 0.001 * 1 };
	const double m3[3] = { 0.9 * m2[0] + 0.1 * -0.5,
			       0.9 * m2[1] + 0.1 * 1,
			       0.9 * m2[2] + 0.1 * 0.5 };
	const double v3[3] = { 0.999 * v2[0] + 0.001 * 0.25,
			       0.999 * v2[1] + 0.001 * 1,
			       0.999 * v2[2] + 0.001 * 0.25 };
	const double bc1[3] = { 1 - 0.9, 1 - 0.9 * 0.9, 1 - 0.9 * 0.9 * 0.9 };
	const double bc2[3] = { 1 - 0.999, 1 - 0.999 * 0.999,
				1 - 0.999 * 0.999 * 0.999 };

	for (int j = 0; j < 3; j++) {
		d1[j] = (m1[j] / bc1[0]) / (sqrt(v1[j] / bc2[0]) + 1e-8);
		d2[j] = (m2[j] / bc1[1]) / (sqrt(v2[j] / bc2[1]) + 1e-8);
		d3[j] = (m3[j] / bc1[2]) / (sqrt(v3[j] / bc2[2]) + 1e-8);
	}
}

static void test_optim_adam_three_updates_by_hand(void **state)
{
	ps_optim_config cfg = { .kind = PS_OPTIM_ADAM, .lr = 0.1,
				.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8 };
	double d1[3], d2[3], d3[3];

	(void)state;
	adam_steps_by_hand(d1, d2, d3);
	/* Step 1 with bias correction is lr * g / (|g| + eps): 0.1 each. */
	assert_true(fabs(d1[0] - 1) < 1e-7 && fabs(d1[1] + 1) < 1e-7);
	{
		const double w1[3] = { 1 - 0.1 * d1[0], -2 - 0.1 * d1[1],
				       0.5 - 0.1 * d1[2] };
		const double w2[3] = { w1[0] - 0.1 * d2[0],
				       w1[1] - 0.1 * d2[1],
				       w1[2] - 0.1 * d2[2] };
		const double w3[3] = { w2[0] - 0.1 * d3[0],
				       w2[1] - 0.1 * d3[1],
				       w2[2] - 0.1 * d3[2] };

		expect_three(&cfg, w1, w2, w3);
	}
}

/* AdamW: w -= lr * wd * w (0.1 * 0.1 = 0.01 of w), then Adam's step on
 * the raw gradient. */
static void test_optim_adamw_three_updates_by_hand(void **state)
{
	ps_optim_config cfg = { .kind = PS_OPTIM_ADAMW, .lr = 0.1,
				.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
				.weight_decay = 0.1 };
	double d1[3], d2[3], d3[3];

	(void)state;
	adam_steps_by_hand(d1, d2, d3);
	{
		const double w1[3] = { 1 - 0.01 * 1 - 0.1 * d1[0],
				       -2 - 0.01 * -2 - 0.1 * d1[1],
				       0.5 - 0.01 * 0.5 - 0.1 * d1[2] };
		const double w2[3] = { w1[0] - 0.01 * w1[0] - 0.1 * d2[0],
				       w1[1] - 0.01 * w1[1] - 0.1 * d2[1],
				       w1[2] - 0.01 * w1[2] - 0.1 * d2[2] };
		const double w3[3] = { w2[0] - 0.01 * w2[0] - 0.1 * d3[0],
				       w2[1] - 0.01 * w2[1] - 0.1 * d3[1],
				       w2[2] - 0.01 * w2[2] - 0.1 * d3[2] };

		expect_three(&cfg, w1, w2, w3);
	}
}

/* eps is added to the square root, not under it: with eps 0.5 (large, so
 * that it shows) the first update of adagrad and adam is
 * lr g / (|g| + 0.5), and rmsprop's lr g / (sqrt(0.1 g^2) + 0.5). */
static void test_optim_eps_outside_sqrt(void **state)
{
	const double ada[3] = { 1 - 0.1 * 0.5 / (0.5 + 0.5),
				-2 - 0.1 * -1 / (1 + 0.5),
				0.5 - 0.1 * 0.25 / (0.25 + 0.5) };
	const double rms[3] = { 1 - 0.1 * 0.5 / (sqrt(0.1 * 0.25) + 0.5),
				-2 - 0.1 * -1 / (sqrt(0.1 * 1) + 0.5),
				0.5 - 0.1 * 0.25 / (sqrt(0.1 * 0.0625) + 0.5) };
	const enum ps_optim_kind kinds[3] = { PS_OPTIM_ADAGRAD,
					      PS_OPTIM_RMSPROP, PS_OPTIM_ADAM };

	(void)state;
	for (int i = 0; i < 3; i++) {
		ps_optim_config cfg = full_config(kinds[i], 0.1);
		ps_optim *o;
		float w[3];

		cfg.eps = 0.5;
		o = new_optim(&cfg, 3);
		memcpy(w, W0, sizeof w);
		ps_optim_apply(o, w, G1, 3, 0);
		assert_close(w, kinds[i] == PS_OPTIM_RMSPROP ? rms : ada, 3);
		ps_optim_destroy(&o);
	}
}

/* With a zero gradient, AdamW shrinks w by exactly lr * wd * w, while
 * Adam with L2 normalizes the decay gradient wd * w like any other and
 * moves each weight by about lr whatever wd is. */
static void test_optim_adamw_decay_differs_from_adam_l2(void **state)
{
	ps_optim_config cw = { .kind = PS_OPTIM_ADAMW, .lr = 0.1,
			       .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
			       .weight_decay = 0.1 };
	ps_optim_config ca = cw;
	const float zero[3] = { 0, 0, 0 };
	float w[3];
	ps_optim *o;

	(void)state;
	ca.kind = PS_OPTIM_ADAM;
	o = new_optim(&cw, 3);
	memcpy(w, W0, sizeof w);
	ps_optim_apply(o, w, zero, 3, 0);
	{
		/* w (1 - 0.1 * 0.1); the moments stay 0. */
		const double want1[3] = { 1 * 0.99, -2 * 0.99, 0.5 * 0.99 };
		/* Step 2, k = 2: m = 0.1 g, v = 0.001 g^2,
		 * mhat = 0.1 g / (1 - 0.81), vhat = 0.001 g^2 / (1 - 0.998001) */
		const double want2[3] = {
			want1[0] * 0.99 - 0.1 * (0.1 * 0.5 / 0.19) /
				(sqrt(0.001 * 0.25 / 0.001999) + 1e-8),
			want1[1] * 0.99 - 0.1 * (0.1 * -1 / 0.19) /
				(sqrt(0.001 * 1 / 0.001999) + 1e-8),
			want1[2] * 0.99 - 0.1 * (0.1 * 0.25 / 0.19) /
				(sqrt(0.001 * 0.0625 / 0.001999) + 1e-8),
		};

		assert_close(w, want1, 3);
		ps_optim_apply(o, w, G1, 3, 1);
		assert_close(w, want2, 3);
	}
	ps_optim_destroy(&o);

	o = new_optim(&ca, 3);
	memcpy(w, W0, sizeof w);
	ps_optim_apply(o, w, zero, 3, 0);
	{
		/* g' = 0.1 w; step 1 is lr g' / (|g'| + eps) */
		const double want1[3] = { 1 - 0.1 * 0.1 / (0.1 + 1e-8),
					  -2 - 0.1 * -0.2 / (0.2 + 1e-8),
					  0.5 - 0.1 * 0.05 / (0.05 + 1e-8) };

		assert_close(w, want1, 3);
	}
	ps_optim_destroy(&o);
}

/* L2, coupled: g' = g + wd * w, through SGD's own loop (not saxpy) and
 * through momentum, where the decay term enters the velocity. */
static void test_optim_weight_decay_by_hand(void **state)
{
	ps_optim_config cfg = { .kind = PS_OPTIM_SGD, .lr = 0.1,
				.weight_decay = 0.5 };
	ps_optim *o;
	float w[3];

	(void)state;
	{
		const double w1[3] = { 1 - 0.1 * (0.5 + 0.5 * 1),
				       -2 - 0.1 * (-1 + 0.5 * -2),
				       0.5 - 0.1 * (0.25 + 0.5 * 0.5) };
		const double w2[3] = { w1[0] - 0.1 * (0.25 + 0.5 * w1[0]),
				       w1[1] - 0.1 * (0.5 + 0.5 * w1[1]),
				       w1[2] - 0.1 * (-1 + 0.5 * w1[2]) };
		const double w3[3] = { w2[0] - 0.1 * (-0.5 + 0.5 * w2[0]),
				       w2[1] - 0.1 * (1 + 0.5 * w2[1]),
				       w2[2] - 0.1 * (0.5 + 0.5 * w2[2]) };

		expect_three(&cfg, w1, w2, w3);
	}

	cfg.kind = PS_OPTIM_MOMENTUM;
	cfg.momentum = 0.9;
	o = new_optim(&cfg, 3);
	memcpy(w, W0, sizeof w);
	ps_optim_apply(o, w, G1, 3, 0);
	ps_optim_apply(o, w, G2, 3, 1);
	{
		const double v1[3] = { 0.5 + 0.5 * 1, -1 + 0.5 * -2,
				       0.25 + 0.5 * 0.5 };
		const double w1[3] = { 1 - 0.1 * v1[0], -2 - 0.1 * v1[1],
				       0.5 - 0.1 * v1[2] };
		const double v2[3] = { 0.9 * v1[0] + 0.25 + 0.5 * w1[0],
				       0.9 * v1[1] + 0.5 + 0.5 * w1[1],
				       0.9 * v1[2] - 1 + 0.5 * w1[2] };
		const double w2[3] = { w1[0] - 0.1 * v2[0],
				       w1[1] - 0.1 * v2[1],
				       w1[2] - 0.1 * v2[2] };

		assert_close(w, w2, 3);
	}
	ps_optim_destroy(&o);
}

/* L1, coupled: g' = g + l1 * sign(w) with sign(0) = 0. A weight at 0 with
 * a zero gradient stays exactly 0; one at 0 with a gradient moves by the
 * gradient alone, and from then on feels l1 with the sign it got. */
static void test_optim_l1_by_hand(void **state)
{
	ps_optim_config cfg = { .kind = PS_OPTIM_SGD, .lr = 0.1, .l1 = 0.25 };
	ps_optim *o = new_optim(&cfg, 4);
	float w[4] = { 1.0f, -2.0f, 0.0f, 0.0f };
	const float g1[4] = { 0.5f, -1.0f, 0.25f, 0.0f };
	const float g2[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
	const double want1[4] = { 1 - 0.1 * (0.5 + 0.25),
				  -2 - 0.1 * (-1 - 0.25),
				  0 - 0.1 * (0.25 + 0), 0 };
	const double want2[4] = { want1[0] - 0.1 * 0.25,
				  want1[1] - 0.1 * -0.25,
				  want1[2] - 0.1 * -0.25, 0 };

	(void)state;
	ps_optim_apply(o, w, g1, 4, 0);
	assert_close(w, want1, 4);
	assert_true(w[3] == 0.0f);
	ps_optim_apply(o, w, g2, 4, 1);
	assert_close(w, want2, 4);
	assert_true(w[3] == 0.0f);
	ps_optim_destroy(&o);

	/* L1 and L2 together add up: g' = g + 0.5 w + 0.25 sign(w). */
	cfg.weight_decay = 0.5;
	o = new_optim(&cfg, 4);
	w[0] = 1.0f;
	w[1] = -2.0f;
	w[2] = 0.0f;
	w[3] = 0.0f;
	ps_optim_apply(o, w, g1, 4, 0);
	{
		const double want[4] = { 1 - 0.1 * (0.5 + 0.5 + 0.25),
					 -2 - 0.1 * (-1 - 1 - 0.25),
					 0 - 0.1 * 0.25, 0 };

		assert_close(w, want, 4);
	}
	ps_optim_destroy(&o);
}

/* For every kind, regularization is the same as pushing the regularized
 * gradient g + wd * w + l1 * sign(w) (AdamW: l1 only; its decay is
 * decoupled, tested above). Both runs do the same float operations, so
 * they must agree bit for bit, state included, over three updates; for
 * SGD, where one run is BLAS's saxpy and the other our loop, dyadic
 * numbers and lr 0.25 keep every operation exact. */
static void test_optim_regularization_is_coupled_for_every_kind(void **state)
{
	(void)state;
	for (int k = PS_OPTIM_SGD; k <= PS_OPTIM_ADAMW; k++) {
		ps_optim_config plain = full_config(k, 0.25);
		ps_optim_config reg = plain;
		ps_optim *a, *b;
		float wa[4] = { 1.0f, -2.0f, 0.0f, 0.5f };
		float wb[4] = { 1.0f, -2.0f, 0.0f, 0.5f };
		const float *gs[3] = { G1, G2, G3 };

		reg.l1 = 0.25;
		if (k != PS_OPTIM_ADAMW)
			reg.weight_decay = 0.5;
		a = new_optim(&reg, 4);
		b = new_optim(&plain, 4);
		for (int t = 0; t < 3; t++) {
			float g[4], gb[4];

			memcpy(g, gs[t], 3 * sizeof(float));
			g[3] = 0.25f;
			for (int i = 0; i < 4; i++) {
				float s = wb[i] > 0 ? 0.25f
					: wb[i] < 0 ? -0.25f
						    : 0.0f;
				gb[i] = g[i] + (float)reg.weight_decay * wb[i] +
					s;
			}
			ps_optim_apply(a, wa, g, 4, (uint64_t)t);
			ps_optim_apply(b, wb, gb, 4, (uint64_t)t);
			if (memcmp(wa, wb, sizeof wa) != 0)
				fail_msg("%s, update %d: %.9g %.9g %.9g %.9g "
					 "vs %.9g %.9g %.9g %.9g",
					 ps_optim_names[k], t, (double)wa[0],
					 (double)wa[1], (double)wa[2],
					 (double)wa[3], (double)wb[0],
					 (double)wb[1], (double)wb[2],
					 (double)wb[3]);
		}
		ps_optim_destroy(&a);
		ps_optim_destroy(&b);
	}
}

/* The schedule scales every kind (AdamW's decoupled decay included): a
 * step schedule from 0.5 halving every update gives 0.25 at t = 1, which
 * must do exactly what a constant 0.25 does at t = 0, and not what 0.5
 * does. */
static void test_optim_schedule_scales_every_kind(void **state)
{
	(void)state;
	for (int k = PS_OPTIM_SGD; k <= PS_OPTIM_ADAMW; k++) {
		ps_optim_config sched = full_config(k, 0.5);
		ps_optim_config quarter = full_config(k, 0.25);
		ps_optim_config half = full_config(k, 0.5);
		ps_optim *a, *b, *c;
		float wa[3], wb[3], wc[3];

		sched.schedule = PS_LR_STEP;
		sched.decay_steps = 1;
		sched.gamma = 0.5;
		sched.weight_decay = quarter.weight_decay =
			half.weight_decay = 0.125;
		a = new_optim(&sched, 3);
		b = new_optim(&quarter, 3);
		c = new_optim(&half, 3);
		memcpy(wa, W0, sizeof wa);
		memcpy(wb, W0, sizeof wb);
		memcpy(wc, W0, sizeof wc);
		ps_optim_apply(a, wa, G1, 3, 1);
		ps_optim_apply(b, wb, G1, 3, 0);
		ps_optim_apply(c, wc, G1, 3, 0);
		if (memcmp(wa, wb, sizeof wa) != 0)
			fail_msg("%s: scheduled rate 0.25 differs from 0.25",
				 ps_optim_names[k]);
		if (wa[0] == wc[0] || wa[1] == wc[1] || wa[2] == wc[2])
			fail_msg("%s: rate 0.25 moved a weight as 0.5 did",
				 ps_optim_names[k]);
		ps_optim_destroy(&a);
		ps_optim_destroy(&b);
		ps_optim_destroy(&c);
	}
}

/* State belongs to weights: apply_range(begin) uses entries begin.. and
 * leaves the others alone. Momentum, lr 0.1, mu 0.9, all w = 1, g = 1. */
static void test_optim_state_is_per_weight(void **state)
{
	ps_optim_config cfg = { .kind = PS_OPTIM_MOMENTUM, .lr = 0.1,
				.momentum = 0.9 };
	ps_optim *o = new_optim(&cfg, 4);
	float w[4] = { 1, 1, 1, 1 };
	const float g[2] = { 1, 1 };

	(void)state;
	/* Weights 0, 1: v = 1, w = 1 - 0.1. */
	ps_optim_apply_range(o, w, g, 0, 2, 0);
	{
		const double want[4] = { 0.9, 0.9, 1, 1 };
		assert_close(w, want, 4);
	}
	/* Weights 1, 2: weight 1 has v = 0.9 * 1 + 1 = 1.9, weight 2 starts
	 * from v = 0; weights 0 and 3 are not touched. */
	ps_optim_apply_range(o, w + 1, g, 1, 2, 1);
	{
		const double want[4] = { 0.9, 0.9 - 0.1 * 1.9, 1 - 0.1 * 1, 1 };
		assert_close(w, want, 4);
	}
	/* ps_optim_apply is the range from 0: weight 0 has v = 1, weight 1
	 * has v = 1.9. */
	ps_optim_apply(o, w, g, 2, 2);
	{
		const double want[4] = { 0.9 - 0.1 * (0.9 * 1 + 1),
					 0.9 - 0.1 * 1.9 - 0.1 * (0.9 * 1.9 + 1),
					 0.9, 1 };
		assert_close(w, want, 4);
	}
	/* And the last weight alone, fresh. */
	ps_optim_apply_range(o, w + 3, g, 3, 1, 3);
	assert_true(fabsf(w[3] - 0.9f) < 1e-6f);
	ps_optim_destroy(&o);
}

/* Adam's bias correction counts the optimizer's own updates, not the
 * server's version t, and an empty update is no update. */
static void test_optim_adam_counts_its_own_updates(void **state)
{
	ps_optim_config cfg = full_config(PS_OPTIM_ADAM, 0.1);
	ps_optim *o = new_optim(&cfg, 2);
	float w[2] = { 1, 1 };
	const float g[1] = { 1 };

	(void)state;
	ps_optim_apply_range(o, w, g, 0, 0, 0); /* nothing */
	/* k = 1 although t = 100: step lr * 1 / (1 + eps) */
	ps_optim_apply_range(o, w, g, 0, 1, 100);
	/* k = 2 on weight 1, whose moments are fresh: m = 0.1, v = 0.001,
	 * mhat = 0.1 / (1 - 0.81), vhat = 0.001 / (1 - 0.998001) */
	ps_optim_apply_range(o, w + 1, g, 1, 1, 101);
	{
		const double want[2] = {
			1 - 0.1 * 1 / (1 + 1e-8),
			1 - 0.1 * (0.1 / 0.19) / (sqrt(0.001 / 0.001999) + 1e-8),
		};
		assert_close(w, want, 2);
	}
	ps_optim_destroy(&o);
}

/* The server applies a push to a sub-range: apply must touch only the n
 * weights it is given. */
static void test_optim_sgd_touches_only_its_range(void **state)
{
	ps_optim_config cfg = { .kind = PS_OPTIM_SGD, .lr = 0.5 };
	ps_optim *o = NULL;
	ps_err e = { 0, "" };
	float w[6] = { 1, 1, 1, 1, 1, 1 };
	const float g[2] = { 2, -2 };
	const float want[6] = { 1, 1, 0, 2, 1, 1 };

	(void)state;
	assert_int_equal(ps_optim_new(&o, 6, &cfg, &e), PS_OK);
	ps_optim_apply(o, w + 2, g, 2, 0);
	assert_floats_equal(w, want, 6);
	ps_optim_apply(o, w, g, 0, 1);
	assert_floats_equal(w, want, 6);
	ps_optim_destroy(&o);
}

/* The kernels run over a vectorized block (a multiple of 16 weights) and
 * a scalar tail. For every kind, with and without regularization, 37
 * weights in one call (block 32, tail 5) must come out bit for bit as the
 * same weights updated in ranges of 5 (all tail), each range by its own
 * optimizer so that Adam's step count is the same; and the guard floats
 * on either side of the range stay untouched. (Plain SGD is left out: it
 * is OpenBLAS's saxpy, whose kernels may fuse multiply and add in the
 * vector part and not in the scalar one.) */
static void test_optim_block_and_tail_agree(void **state)
{
	enum { N = 37, PIECE = 5, PIECES = (N + PIECE - 1) / PIECE };

	(void)state;
	for (int k = PS_OPTIM_SGD; k <= PS_OPTIM_ADAMW; k++) {
		for (int reg = 0; reg < 2; reg++) {
			ps_optim_config cfg = full_config(k, 0.01);
			ps_optim *bulk, *piece[PIECES];
			float wb[N + 2], wp[N + 2], g[N];

			if (k == PS_OPTIM_SGD && !reg)
				continue;
			cfg.weight_decay = reg ? 0.01 : 0;
			cfg.l1 = reg ? 0.001 : 0;
			bulk = new_optim(&cfg, N);
			for (int p = 0; p < PIECES; p++)
				piece[p] = new_optim(&cfg, N);
			for (int i = 0; i < N + 2; i++)
				wb[i] = wp[i] = (float)((i * 7) % 11 - 5) * 0.1f;
			for (int t = 0; t < 3; t++) {
				for (int i = 0; i < N; i++)
					g[i] = (float)(((i + t) * 5) % 13 - 6) *
					       0.01f;
				ps_optim_apply(bulk, wb + 1, g, N, (uint64_t)t);
				for (int p = 0; p < PIECES; p++) {
					size_t b = (size_t)p * PIECE;
					size_t len = N - b < PIECE ? N - b
								   : PIECE;
					ps_optim_apply_range(piece[p],
							     wp + 1 + b, g + b,
							     b, len,
							     (uint64_t)t);
				}
			}
			if (memcmp(wb, wp, sizeof wb) != 0)
				fail_msg("%s%s: block and tail differ",
					 ps_optim_names[k],
					 reg ? " with L1 and L2" : "");
			assert_true(wb[0] == -0.5f && wb[N + 1] == wp[N + 1]);
			assert_true(wb[N + 1] ==
				    (float)(((N + 1) * 7) % 11 - 5) * 0.1f);
			ps_optim_destroy(&bulk);
			for (int p = 0; p < PIECES; p++)
				ps_optim_destroy(&piece[p]);
		}
	}
}

static void expect_config_refused(const ps_optim_config *cfg)
{
	static char sentinel;
	ps_optim *o = (ps_optim *)(void *)&sentinel; /* must become NULL */
	ps_err e = { 0, "" };

	assert_int_equal(ps_optim_new(&o, 4, cfg, &e), PS_EINVAL);
	assert_null(o);
	assert_int_equal(e.code, PS_EINVAL);
	assert_true(e.msg[0] != '\0');
}

/* Refused, with a message naming the parameter. */
static void expect_refused_naming(const ps_optim_config *cfg,
				  const char *name)
{
	ps_optim *o = NULL;
	ps_err e = { 0, "" };

	assert_int_equal(ps_optim_new(&o, 4, cfg, &e), PS_EINVAL);
	assert_null(o);
	if (!strstr(e.msg, name))
		fail_msg("message '%s' does not name '%s'", e.msg, name);
}

static void expect_refused(double lr, int kind)
{
	ps_optim_config cfg = { .kind = (enum ps_optim_kind)kind, .lr = lr };

	expect_config_refused(&cfg);
}

static void test_optim_new_rejects_bad_lr(void **state)
{
	(void)state;
	expect_refused(0.0, PS_OPTIM_SGD);
	expect_refused(-0.0, PS_OPTIM_SGD);
	expect_refused(-0.1, PS_OPTIM_SGD);
	expect_refused(NAN, PS_OPTIM_SGD);
	expect_refused(-NAN, PS_OPTIM_SGD);
	expect_refused(INFINITY, PS_OPTIM_SGD);
	expect_refused(-INFINITY, PS_OPTIM_SGD);
}

static void test_optim_new_rejects_unknown_kind(void **state)
{
	(void)state;
	expect_refused(0.1, PS_OPTIM_ADAMW + 1);
	expect_refused(0.1, -1);
}

static void test_optim_new_accepts_tiny_and_large_lr(void **state)
{
	ps_optim_config cfg = { .kind = PS_OPTIM_SGD, .lr = 1e-30 };
	ps_optim *o = NULL;

	(void)state;
	assert_int_equal(ps_optim_new(&o, 1, &cfg, NULL), PS_OK);
	ps_optim_destroy(&o);
	cfg.lr = 1e6;
	assert_int_equal(ps_optim_new(&o, 1, &cfg, NULL), PS_OK);
	ps_optim_destroy(&o);
}

/* Values outside [0, 1): negative, 1 and above, NaN, infinite. */
static const double not_in_unit[] = { -0.1, -1e-300, 1.0, 1.5, NAN,
				      INFINITY, -INFINITY };
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static void test_optim_new_rejects_bad_hyperparameters(void **state)
{
	/* 1e300 is finite but not as a float, and 1e-300 is 0 as one. */
	static const double bad_nonneg[] = { -1e-300, -0.1, 1e300, NAN,
					     INFINITY, -INFINITY };
	static const double bad_eps[] = { 0.0, -0.0, -1e-8, 1e-300, 1e300,
					  NAN, INFINITY };
	ps_optim_config c;

	(void)state;
	for (size_t i = 0; i < COUNT(not_in_unit); i++) {
		c = full_config(PS_OPTIM_MOMENTUM, 0.1);
		c.momentum = not_in_unit[i];
		expect_refused_naming(&c, "momentum");
		c = full_config(PS_OPTIM_ADAM, 0.1);
		c.beta1 = not_in_unit[i];
		expect_refused_naming(&c, "beta1");
		c = full_config(PS_OPTIM_ADAM, 0.1);
		c.beta2 = not_in_unit[i];
		expect_refused_naming(&c, "beta2");
		c = full_config(PS_OPTIM_RMSPROP, 0.1);
		c.rho = not_in_unit[i];
		expect_refused_naming(&c, "rho");
		/* Out-of-range values are refused whatever the kind. */
		c = full_config(PS_OPTIM_SGD, 0.1);
		c.beta2 = not_in_unit[i];
		expect_refused_naming(&c, "beta2");
	}
	for (size_t i = 0; i < COUNT(bad_eps); i++) {
		for (int k = PS_OPTIM_ADAGRAD; k <= PS_OPTIM_ADAMW; k++) {
			c = full_config(k, 0.1);
			c.eps = bad_eps[i];
			expect_refused_naming(&c, "eps");
		}
	}
	for (size_t i = 0; i < COUNT(bad_nonneg); i++) {
		c = full_config(PS_OPTIM_ADAMW, 0.1);
		c.weight_decay = bad_nonneg[i];
		expect_refused_naming(&c, "weight decay");
		c = full_config(PS_OPTIM_SGD, 0.1);
		c.l1 = bad_nonneg[i];
		expect_refused_naming(&c, "l1");
	}
	c = full_config(PS_OPTIM_NESTEROV, 0.1);
	c.momentum = 0;
	expect_refused_naming(&c, "nesterov");
	expect_refused_naming(&c, "momentum");
}

/* The edges of the ranges are accepted, and so is a zero-initialized
 * record for SGD and momentum (plain SGD), which read no eps. */
static void test_optim_new_accepts_boundary_values(void **state)
{
	ps_optim_config c;
	ps_optim *o = NULL;

	(void)state;
	for (int k = PS_OPTIM_SGD; k <= PS_OPTIM_ADAMW; k++) {
		c = full_config(k, 0.1);
		c.beta1 = c.beta2 = c.rho = 0;
		c.momentum = k == PS_OPTIM_NESTEROV ? 1e-9 : 0;
		c.weight_decay = c.l1 = 0;
		c.eps = 1e-30;
		assert_int_equal(ps_optim_new(&o, 3, &c, NULL), PS_OK);
		ps_optim_destroy(&o);
		c.beta1 = c.beta2 = c.rho = c.momentum = 0.999999;
		c.weight_decay = c.l1 = 1e6;
		assert_int_equal(ps_optim_new(&o, 3, &c, NULL), PS_OK);
		ps_optim_destroy(&o);
	}
	memset(&c, 0, sizeof c);
	c.lr = 0.1;
	assert_int_equal(ps_optim_new(&o, 3, &c, NULL), PS_OK);
	ps_optim_destroy(&o);
	c.kind = PS_OPTIM_MOMENTUM;
	assert_int_equal(ps_optim_new(&o, 3, &c, NULL), PS_OK);
	ps_optim_destroy(&o);
	/* Zero means zero: adam without eps is refused, not defaulted. */
	c.kind = PS_OPTIM_ADAM;
	expect_refused_naming(&c, "eps");
}

/* State too large to address is PS_ENOMEM, not a crash; SGD has none. */
static void test_optim_new_reports_state_too_large(void **state)
{
	ps_optim_config c;
	ps_optim *o = NULL;
	ps_err e = { 0, "" };

	(void)state;
	c = full_config(PS_OPTIM_ADAM, 0.1);
	assert_int_equal(ps_optim_new(&o, SIZE_MAX / 4, &c, &e), PS_ENOMEM);
	assert_null(o);
	assert_int_equal(e.code, PS_ENOMEM);
	c = full_config(PS_OPTIM_MOMENTUM, 0.1);
	assert_int_equal(ps_optim_new(&o, SIZE_MAX / 2, &c, &e), PS_ENOMEM);
	assert_null(o);
	c = full_config(PS_OPTIM_SGD, 0.1);
	assert_int_equal(ps_optim_new(&o, SIZE_MAX, &c, &e), PS_OK);
	ps_optim_destroy(&o);
	/* n = 0 allocates nothing and is fine. */
	c = full_config(PS_OPTIM_ADAMW, 0.1);
	assert_int_equal(ps_optim_new(&o, 0, &c, &e), PS_OK);
	ps_optim_destroy(&o);
}

static ps_optim *new_sched(enum ps_lr_schedule sched, double decay,
			   double gamma, double warmup)
{
	ps_optim_config cfg = { .kind = PS_OPTIM_SGD, .lr = 0.5,
				.schedule = sched, .decay_steps = decay,
				.gamma = gamma, .warmup = warmup };
	ps_optim *o = NULL;
	ps_err e = { 0, "" };

	assert_int_equal(ps_optim_new(&o, 2, &cfg, &e), PS_OK);
	assert_non_null(o);
	return o;
}

static void test_optim_lr_schedules_by_hand(void **state)
{
	ps_optim *o;

	(void)state;
	o = new_sched(PS_LR_CONST, 0, 0, 0);
	assert_true(ps_optim_lr(o, 0) == 0.5);
	assert_true(ps_optim_lr(o, 1000000) == 0.5);
	ps_optim_destroy(&o);
	/* 0.5 / sqrt(1 + t/1): t = 3 -> 0.25, t = 15 -> 0.125 */
	o = new_sched(PS_LR_INVSQRT, 1, 0, 0);
	assert_true(ps_optim_lr(o, 0) == 0.5);
	assert_true(ps_optim_lr(o, 3) == 0.25);
	assert_true(ps_optim_lr(o, 15) == 0.125);
	ps_optim_destroy(&o);
	/* 0.5 * 0.5^(t/2): t = 2 -> 0.25, t = 4 -> 0.125 */
	o = new_sched(PS_LR_EXP, 2, 0.5, 0);
	assert_true(ps_optim_lr(o, 2) == 0.25);
	assert_true(ps_optim_lr(o, 4) == 0.125);
	ps_optim_destroy(&o);
	/* 0.5 * 0.5^floor(t/2): constant within a step */
	o = new_sched(PS_LR_STEP, 2, 0.5, 0);
	assert_true(ps_optim_lr(o, 0) == 0.5);
	assert_true(ps_optim_lr(o, 1) == 0.5);
	assert_true(ps_optim_lr(o, 2) == 0.25);
	assert_true(ps_optim_lr(o, 3) == 0.25);
	assert_true(ps_optim_lr(o, 4) == 0.125);
	ps_optim_destroy(&o);
	/* Warm-up over 4 updates: lr/4, 2lr/4, 3lr/4, lr, then lr. */
	o = new_sched(PS_LR_CONST, 0, 0, 4);
	assert_true(ps_optim_lr(o, 0) == 0.125);
	assert_true(ps_optim_lr(o, 1) == 0.25);
	assert_true(ps_optim_lr(o, 2) == 0.375);
	assert_true(ps_optim_lr(o, 3) == 0.5);
	assert_true(ps_optim_lr(o, 4) == 0.5);
	ps_optim_destroy(&o);
}

/* apply must use the rate of the update number it is given. */
static void test_optim_apply_uses_scheduled_lr(void **state)
{
	ps_optim *o = new_sched(PS_LR_STEP, 1, 0.5, 0);
	float w[2] = { 1.0f, -1.0f };
	const float g[2] = { 1.0f, 2.0f };

	(void)state;
	ps_optim_apply(o, w, g, 2, 0); /* lr 0.5 */
	assert_true(w[0] == 0.5f && w[1] == -2.0f);
	ps_optim_apply(o, w, g, 2, 2); /* lr 0.125 */
	assert_true(w[0] == 0.375f && w[1] == -2.25f);
	ps_optim_destroy(&o);
}

static void test_optim_new_rejects_bad_schedule(void **state)
{
	ps_optim_config c = { .kind = PS_OPTIM_SGD, .lr = 0.1 };

	(void)state;
	c.schedule = PS_LR_INVSQRT;
	c.decay_steps = 0;
	expect_config_refused(&c);
	c.decay_steps = -1;
	expect_config_refused(&c);
	c.decay_steps = NAN;
	expect_config_refused(&c);
	c.decay_steps = INFINITY;
	expect_config_refused(&c);
	c.schedule = PS_LR_EXP;
	c.decay_steps = 10;
	c.gamma = 0;
	expect_config_refused(&c);
	c.gamma = 1.5;
	expect_config_refused(&c);
	c.gamma = NAN;
	expect_config_refused(&c);
	c.schedule = PS_LR_STEP;
	expect_config_refused(&c);
	c.schedule = (enum ps_lr_schedule)(PS_LR_STEP + 1);
	c.gamma = 0.5;
	expect_config_refused(&c);
	c.schedule = PS_LR_CONST;
	c.warmup = -1;
	expect_config_refused(&c);
	c.warmup = NAN;
	expect_config_refused(&c);
	c.warmup = INFINITY;
	expect_config_refused(&c);
}

static void test_optim_names_in_enum_order(void **state)
{
	(void)state;
	assert_string_equal(ps_optim_names[PS_OPTIM_SGD], "sgd");
	assert_string_equal(ps_optim_names[PS_OPTIM_MOMENTUM], "momentum");
	assert_string_equal(ps_optim_names[PS_OPTIM_NESTEROV], "nesterov");
	assert_string_equal(ps_optim_names[PS_OPTIM_ADAGRAD], "adagrad");
	assert_string_equal(ps_optim_names[PS_OPTIM_RMSPROP], "rmsprop");
	assert_string_equal(ps_optim_names[PS_OPTIM_ADAM], "adam");
	assert_string_equal(ps_optim_names[PS_OPTIM_ADAMW], "adamw");
	assert_null(ps_optim_names[PS_OPTIM_ADAMW + 1]);
	assert_string_equal(ps_lr_schedule_names[PS_LR_CONST], "const");
	assert_string_equal(ps_lr_schedule_names[PS_LR_INVSQRT], "invsqrt");
	assert_string_equal(ps_lr_schedule_names[PS_LR_EXP], "exp");
	assert_string_equal(ps_lr_schedule_names[PS_LR_STEP], "step");
	assert_null(ps_lr_schedule_names[PS_LR_STEP + 1]);
}

/* The startup log line: the kind and the parameters it reads. */
static void test_optim_describe_names_every_parameter(void **state)
{
	ps_optim_config c = full_config(PS_OPTIM_ADAM, 0.001);
	char buf[256], small[12];

	(void)state;
	assert_string_equal(ps_optim_describe(&c, buf, sizeof buf),
			    "adam: lr 0.001 (const), beta1 0.9, beta2 0.999, "
			    "eps 1e-08, weight decay 0, l1 0");
	c = full_config(PS_OPTIM_NESTEROV, 0.5);
	c.schedule = PS_LR_EXP;
	c.decay_steps = 3000;
	c.gamma = 0.5;
	c.warmup = 100;
	c.weight_decay = 1e-4;
	c.l1 = 1e-5;
	assert_string_equal(ps_optim_describe(&c, buf, sizeof buf),
			    "nesterov: lr 0.5 (exp, decay steps 3000, gamma "
			    "0.5, warm-up 100), momentum 0.9, weight decay "
			    "0.0001, l1 1e-05");
	c = full_config(PS_OPTIM_ADAMW, 0.1);
	c.weight_decay = 0.01;
	assert_non_null(strstr(ps_optim_describe(&c, buf, sizeof buf),
			       "weight decay 0.01 (decoupled)"));
	c = full_config(PS_OPTIM_RMSPROP, 0.1);
	assert_non_null(strstr(ps_optim_describe(&c, buf, sizeof buf),
			       ", rho 0.9, eps 1e-08,"));
	/* Truncated, still terminated; an invalid kind is described too. */
	assert_string_equal(ps_optim_describe(&c, small, sizeof small),
			    "rmsprop: lr");
	c.kind = (enum ps_optim_kind)42;
	assert_non_null(strstr(ps_optim_describe(&c, buf, sizeof buf),
			       "optimizer 42: lr 0.1"));
	assert_true(ps_optim_describe(&c, buf, 0) == buf);
}

static void test_optim_destroy_accepts_null(void **state)
{
	ps_optim *o = NULL;

	(void)state;
	ps_optim_destroy(NULL);
	ps_optim_destroy(&o);
	assert_null(o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_optim_sgd_three_updates_by_hand),
		cmocka_unit_test(test_optim_sgd_common_problem_by_hand),
		cmocka_unit_test(test_optim_momentum_three_updates_by_hand),
		cmocka_unit_test(test_optim_nesterov_three_updates_by_hand),
		cmocka_unit_test(test_optim_adagrad_three_updates_by_hand),
		cmocka_unit_test(test_optim_rmsprop_three_updates_by_hand),
		cmocka_unit_test(test_optim_adam_three_updates_by_hand),
		cmocka_unit_test(test_optim_adamw_three_updates_by_hand),
		cmocka_unit_test(test_optim_eps_outside_sqrt),
		cmocka_unit_test(test_optim_adamw_decay_differs_from_adam_l2),
		cmocka_unit_test(test_optim_weight_decay_by_hand),
		cmocka_unit_test(test_optim_l1_by_hand),
		cmocka_unit_test(test_optim_regularization_is_coupled_for_every_kind),
		cmocka_unit_test(test_optim_schedule_scales_every_kind),
		cmocka_unit_test(test_optim_state_is_per_weight),
		cmocka_unit_test(test_optim_adam_counts_its_own_updates),
		cmocka_unit_test(test_optim_sgd_touches_only_its_range),
		cmocka_unit_test(test_optim_block_and_tail_agree),
		cmocka_unit_test(test_optim_new_rejects_bad_lr),
		cmocka_unit_test(test_optim_new_rejects_unknown_kind),
		cmocka_unit_test(test_optim_new_accepts_tiny_and_large_lr),
		cmocka_unit_test(test_optim_new_rejects_bad_hyperparameters),
		cmocka_unit_test(test_optim_new_accepts_boundary_values),
		cmocka_unit_test(test_optim_new_reports_state_too_large),
		cmocka_unit_test(test_optim_lr_schedules_by_hand),
		cmocka_unit_test(test_optim_apply_uses_scheduled_lr),
		cmocka_unit_test(test_optim_new_rejects_bad_schedule),
		cmocka_unit_test(test_optim_names_in_enum_order),
		cmocka_unit_test(test_optim_describe_names_every_parameter),
		cmocka_unit_test(test_optim_destroy_accepts_null),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
