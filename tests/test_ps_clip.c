/*
 * Unit tests for ps_clip: norm clipping rescales to the bound and leaves
 * small gradients alone; value clipping clamps and counts.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ps_clip.h"

static void test_clip_norm_rescales_to_bound(void **state)
{
	float g[4] = {3, 4, 0, 0}; /* norm 5 */
	(void)state;
	assert_float_equal(ps_clip_norm(g, 4, 1.0), 5.0, 1e-6);
	assert_float_equal(g[0], 0.6f, 1e-6);
	assert_float_equal(g[1], 0.8f, 1e-6);
	assert_float_equal(g[2], 0.0f, 0);
	/* Now exactly at the bound (within rounding): unchanged. */
	assert_float_equal(ps_clip_norm(g, 4, 1.0), 1.0, 1e-6);
	assert_float_equal(g[0], 0.6f, 1e-6);
}

static void test_clip_norm_leaves_small_gradient(void **state)
{
	float g[3] = {0.1f, -0.2f, 0.2f}; /* norm 0.3 */
	(void)state;
	assert_float_equal(ps_clip_norm(g, 3, 1.0), 0.3, 1e-6);
	assert_float_equal(g[0], 0.1f, 0);
	assert_float_equal(g[1], -0.2f, 0);
	assert_float_equal(g[2], 0.2f, 0);
}

static void test_clip_norm_of_empty_is_zero(void **state)
{
	float g[1] = {7};
	(void)state;
	assert_float_equal(ps_clip_norm(g, 0, 1.0), 0.0, 0);
	assert_float_equal(g[0], 7.0f, 0);
}

static void test_clip_value_clamps_and_counts(void **state)
{
	float g[5] = {-3, -0.5f, 0, 0.5f, 2};
	(void)state;
	assert_int_equal(ps_clip_value(g, 5, 1.0), 2);
	assert_float_equal(g[0], -1.0f, 0);
	assert_float_equal(g[1], -0.5f, 0);
	assert_float_equal(g[2], 0.0f, 0);
	assert_float_equal(g[3], 0.5f, 0);
	assert_float_equal(g[4], 1.0f, 0);
	assert_int_equal(ps_clip_value(g, 5, 1.0), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_clip_norm_rescales_to_bound),
		cmocka_unit_test(test_clip_norm_leaves_small_gradient),
		cmocka_unit_test(test_clip_norm_of_empty_is_zero),
		cmocka_unit_test(test_clip_value_clamps_and_counts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
