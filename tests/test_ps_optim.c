/*
 * Unit tests for ps_optim: SGD updates against values worked out by hand
 * (dyadic numbers, so float arithmetic is exact and equality is the right
 * check), the learning-rate schedules at points where their formulas give
 * exact values, and the configurations ps_optim_new() must refuse.
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

static void test_optim_sgd_three_updates_by_hand(void **state)
{
	ps_optim_config cfg = { .kind = PS_OPTIM_SGD, .lr = 0.25 };
	ps_optim *o = NULL;
	ps_err e = { 0, "" };
	float w[5] = { 1.0f, -2.0f, 0.5f, 3.0f, 0.0f };
	const float g1[5] = { 4.0f, -1.0f, 2.0f, 0.0f, 8.0f };
	const float g2[5] = { -2.0f, 0.5f, 1.0f, 6.0f, -4.0f };
	const float g3[5] = { 1.0f, 2.0f, -0.5f, -2.0f, 0.25f };
	/* w -= 0.25 * g, by hand:
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
	expect_refused(0.1, PS_OPTIM_SGD + 1);
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

static ps_optim *new_sched(enum ps_lr_schedule sched, double decay,
			   double gamma, double warmup)
{
	ps_optim_config cfg = { .kind = PS_OPTIM_SGD, .lr = 0.5,
				.schedule = sched, .decay_steps = decay,
				.gamma = gamma, .warmup = warmup };
	ps_optim *o = NULL;
	ps_err e = { 0, "" };

	assert_int_equal(ps_optim_new(&o, 1, &cfg, &e), PS_OK);
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
	assert_null(ps_optim_names[PS_OPTIM_SGD + 1]);
	assert_string_equal(ps_lr_schedule_names[PS_LR_CONST], "const");
	assert_string_equal(ps_lr_schedule_names[PS_LR_INVSQRT], "invsqrt");
	assert_string_equal(ps_lr_schedule_names[PS_LR_EXP], "exp");
	assert_string_equal(ps_lr_schedule_names[PS_LR_STEP], "step");
	assert_null(ps_lr_schedule_names[PS_LR_STEP + 1]);
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
		cmocka_unit_test(test_optim_sgd_touches_only_its_range),
		cmocka_unit_test(test_optim_new_rejects_bad_lr),
		cmocka_unit_test(test_optim_new_rejects_unknown_kind),
		cmocka_unit_test(test_optim_new_accepts_tiny_and_large_lr),
		cmocka_unit_test(test_optim_lr_schedules_by_hand),
		cmocka_unit_test(test_optim_apply_uses_scheduled_lr),
		cmocka_unit_test(test_optim_new_rejects_bad_schedule),
		cmocka_unit_test(test_optim_names_in_enum_order),
		cmocka_unit_test(test_optim_destroy_accepts_null),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
