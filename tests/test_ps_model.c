/*
 * Unit tests for ps_model: gradients of every kind against central finite
 * differences, losses known in closed form, seeded initialization, spec
 * and label rejections, and chunked evaluation. Datasets are built by
 * hand (ps_dataset is a transparent record), so no loader is linked in.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ps_model.h"
#include "ps_model_impl.h"
#include "ps_rng.h"

static ps_model_spec make_spec(const char *name, uint32_t in, uint32_t out,
			       uint64_t seed)
{
	ps_model_spec s;

	memset(&s, 0, sizeof s);
	strncpy(s.name, name, sizeof s.name - 1);
	s.input_dim = in;
	s.output_dim = out;
	s.init_seed = seed;
	return s;
}

static ps_model *new_model(const char *name, uint32_t in, uint32_t out,
			   uint64_t seed)
{
	ps_model_spec s = make_spec(name, in, out, seed);
	ps_model *m = NULL;
	ps_err e = { 0, "" };

	assert_int_equal(ps_model_new(&m, &s, &e), PS_OK);
	assert_non_null(m);
	return m;
}

static float *fill_normal(ps_rng *r, size_t n, double scale)
{
	float *v = test_malloc(n * sizeof *v);

	for (size_t i = 0; i < n; i++)
		v[i] = (float)(scale * ps_rng_normal(r));
	return v;
}

static float *fill_labels(ps_rng *r, size_t n, uint32_t classes)
{
	float *v = test_malloc(n * sizeof *v);

	for (size_t i = 0; i < n; i++)
		v[i] = (float)ps_rng_below(r, classes);
	return v;
}

static double loss_at(ps_model *m, const float *w, const float *x,
		      const float *y, size_t n)
{
	float *g = test_malloc(ps_model_num_params(m) * sizeof *g);
	double loss = NAN;

	assert_int_equal(ps_model_loss_grad(m, w, x, y, n, g, &loss), PS_OK);
	test_free(g);
	return loss;
}

/*
 * Compare the analytic gradient with (L(w+h) - L(w-h)) / (2h), one
 * parameter at a time. The step is the one float32 can actually take,
 * (float)(w+h) - (float)(w-h), computed in double, so representation
 * error of w +- h does not count against the model.
 *
 * Why the bound: the loss is accumulated in double but from float32
 * logits/predictions, so an evaluated L carries an absolute error of a few
 * float32 ulps of its terms, delta ~ 1e-7 for the O(1) values here. The
 * difference quotient turns that into delta / h ~ 1e-5 at h = 1e-2.
 * Truncation adds h^2/6 * |L'''|, and with |x|, |w| = O(1) the third
 * derivative is O(1), so also ~ 2e-5. Together < 5e-5 absolute.
 * The test divides by max(|fd| + |an|, 1e-2) (gradients near zero would
 * otherwise make any rounding look like a 100% error) and requires
 * < 1e-2: at least 20x above the ~5e-5 / 1e-2 = 5e-3 worst case of the
 * floor, far above the ~1e-4 typical, yet a wrong factor, sign, index or
 * transposition gives errors of order 1.
 */
#define FD_STEP 1e-2
#define FD_FLOOR 1e-2
#define FD_TOL 1e-2

static double check_gradient(ps_model *m, float *w, const float *x,
			     const float *y, size_t n)
{
	size_t np = ps_model_num_params(m);
	float *grad = test_malloc(np * sizeof *grad);
	double loss = NAN;
	double worst = 0.0;

	assert_int_equal(ps_model_loss_grad(m, w, x, y, n, grad, &loss),
			 PS_OK);
	for (size_t j = 0; j < np; j++) {
		float w0 = w[j];
		float wp = (float)(w0 + FD_STEP);
		float wm = (float)(w0 - FD_STEP);
		double lp, lm, fd, an, err;

		w[j] = wp;
		lp = loss_at(m, w, x, y, n);
		w[j] = wm;
		lm = loss_at(m, w, x, y, n);
		w[j] = w0;
		fd = (lp - lm) / ((double)wp - (double)wm);
		an = grad[j];
		err = fabs(fd - an) / fmax(fabs(fd) + fabs(an), FD_FLOOR);
		if (err >= FD_TOL)
			print_error("param %zu: analytic %.9g, finite difference %.9g, rel err %.3g\n",
				    j, an, fd, err);
		assert_true(err < FD_TOL);
		if (err > worst)
			worst = err;
	}
	test_free(grad);
	return worst;
}

static void test_model_softmax_gradient_matches_finite_differences(void **state)
{
	const uint32_t dim = 5, k = 3;
	const size_t n = 4;
	ps_model *m = new_model("softmax", dim, k, 1);
	ps_rng r;
	float *w, *x, *y;

	(void)state;
	ps_rng_seed(&r, 42);
	/* Weights large enough that the probabilities are far from uniform,
	 * so every term of the gradient is exercised. */
	w = fill_normal(&r, ps_model_num_params(m), 0.5);
	x = fill_normal(&r, n * dim, 1.0);
	y = fill_labels(&r, n, k);
	check_gradient(m, w, x, y, n);
	test_free(w);
	test_free(x);
	test_free(y);
	ps_model_destroy(&m);
}

static void test_model_linear_gradient_matches_finite_differences(void **state)
{
	const uint32_t dim = 3;
	const size_t n = 5;
	ps_model *m = new_model("linear", dim, 1, 1);
	ps_rng r;
	float *w, *x, *y;

	(void)state;
	ps_rng_seed(&r, 7);
	w = fill_normal(&r, ps_model_num_params(m), 1.0);
	x = fill_normal(&r, n * dim, 1.0);
	y = fill_normal(&r, n, 1.0);
	check_gradient(m, w, x, y, n);
	test_free(w);
	test_free(x);
	test_free(y);
	ps_model_destroy(&m);
}

/* At W = 0, b = 0 every class has probability 1/K: the loss is log K
 * whatever x is, and db_c = 1/K - (share of rows labelled c). */
static void test_model_softmax_loss_at_zero_is_log_k(void **state)
{
	const uint32_t dim = 3, k = 4;
	const size_t n = 6;
	const float y[6] = { 0, 1, 1, 3, 3, 3 };
	const double share[4] = { 1.0 / 6, 2.0 / 6, 0.0, 3.0 / 6 };
	ps_model *m = new_model("softmax", dim, k, 1);
	size_t np = ps_model_num_params(m);
	float *w = test_calloc(np, sizeof *w);
	float *g = test_malloc(np * sizeof *g);
	double loss = NAN;
	ps_rng r;
	float *x;

	(void)state;
	ps_rng_seed(&r, 3);
	x = fill_normal(&r, n * dim, 2.0);
	assert_int_equal(ps_model_loss_grad(m, w, x, y, n, g, &loss), PS_OK);
	assert_true(fabs(loss - log((double)k)) < 1e-6);
	for (uint32_t c = 0; c < k; c++)
		assert_true(fabs(g[k * dim + c] - (1.0 / k - share[c])) < 1e-6);
	test_free(x);
	test_free(g);
	test_free(w);
	ps_model_destroy(&m);
}

/* w = (1, 2, -1), b = 0.5:
 *   x = (1,0,0), y = 1: pred 1.5, r =  0.5
 *   x = (0,1,1), y = 0: pred 1.5, r =  1.5
 *   x = (1,1,1), y = 3: pred 2.5, r = -0.5
 * loss = 0.5 * (0.25 + 2.25 + 0.25) / 3 = 0.458333...
 * dw = X^T r / 3 = (0, 1/3, 1/3), db = mean r = 0.5 */
static void test_model_linear_loss_by_hand(void **state)
{
	const float w[4] = { 1, 2, -1, 0.5f };
	const float x[9] = { 1, 0, 0, 0, 1, 1, 1, 1, 1 };
	const float y[3] = { 1, 0, 3 };
	const double want[4] = { 0, 1.0 / 3, 1.0 / 3, 0.5 };
	ps_model *m = new_model("linear", 3, 1, 0);
	float g[4];
	double loss = NAN;

	(void)state;
	assert_int_equal(ps_model_num_params(m), 4);
	assert_int_equal(ps_model_loss_grad(m, w, x, y, 3, g, &loss), PS_OK);
	assert_true(fabs(loss - 2.75 / 6) < 1e-12);
	for (int j = 0; j < 4; j++)
		assert_true(fabs(g[j] - want[j]) < 1e-6);
	ps_model_destroy(&m);
}

static void test_model_init_is_deterministic(void **state)
{
	const uint32_t dim = 7, k = 5;
	ps_model *a = new_model("softmax", dim, k, 1234);
	ps_model *b = new_model("softmax", dim, k, 1234);
	ps_model *c = new_model("softmax", dim, k, 1235);
	ps_model *lin = new_model("linear", dim, 1, 99);
	size_t np = ps_model_num_params(a);
	float *wa = test_malloc(np * sizeof *wa);
	float *wb = test_malloc(np * sizeof *wb);
	float *wc = test_malloc(np * sizeof *wc);
	float wl[8];
	double sq = 0.0;

	(void)state;
	ps_model_init(a, wa);
	ps_model_init(b, wb);
	ps_model_init(c, wc);
	assert_memory_equal(wa, wb, np * sizeof *wa);
	assert_memory_not_equal(wa, wc, dim * k * sizeof *wa);
	/* Small but not zero weights, zero bias. */
	for (size_t i = 0; i < (size_t)dim * k; i++) {
		assert_true(fabsf(wa[i]) < 0.1f);
		sq += (double)wa[i] * wa[i];
	}
	assert_true(sq > 0.0);
	for (uint32_t i = 0; i < k; i++)
		assert_true(wa[dim * k + i] == 0.0f);

	memset(wl, 0xff, sizeof wl);
	ps_model_init(lin, wl);
	for (int i = 0; i < 8; i++)
		assert_true(wl[i] == 0.0f);

	test_free(wa);
	test_free(wb);
	test_free(wc);
	ps_model_destroy(&a);
	ps_model_destroy(&b);
	ps_model_destroy(&c);
	ps_model_destroy(&lin);
}

static void test_model_num_params_follow_layout(void **state)
{
	ps_model *lin = new_model("linear", 10, 1, 0);
	ps_model *soft = new_model("softmax", 784, 10, 0);

	(void)state;
	assert_int_equal(ps_model_num_params(lin), 11);
	assert_int_equal(ps_model_num_params(soft), 7850);
	assert_string_equal(ps_model_get_spec(soft)->name, "softmax");
	assert_int_equal(ps_model_get_spec(soft)->input_dim, 784);
	assert_int_equal(ps_model_get_spec(soft)->output_dim, 10);
	ps_model_destroy(&lin);
	ps_model_destroy(&soft);
}

static void expect_rejected(const ps_model_spec *s, const char *needle)
{
	ps_model *m = NULL;
	ps_err e = { 0, "" };

	assert_int_equal(ps_model_new(&m, s, &e), PS_EINVAL);
	assert_null(m);
	assert_int_equal(e.code, PS_EINVAL);
	if (!strstr(e.msg, needle))
		print_error("message '%s' lacks '%s'\n", e.msg, needle);
	assert_non_null(strstr(e.msg, needle));
}

static void test_model_new_rejects_unknown_name(void **state)
{
	ps_model_spec s = make_spec("lasso", 3, 1, 0);
	ps_model *m = NULL;
	ps_err e = { 0, "" };

	(void)state;
	expect_rejected(&s, "lasso");
	/* The message lists what would have worked. */
	assert_int_equal(ps_model_new(&m, &s, &e), PS_EINVAL);
	assert_non_null(strstr(e.msg, "linear"));
	assert_non_null(strstr(e.msg, "softmax"));
	/* A NULL ps_err is allowed. */
	assert_int_equal(ps_model_new(&m, &s, NULL), PS_EINVAL);
	assert_null(m);
}

static void test_model_new_rejects_zero_dims(void **state)
{
	ps_model_spec s;

	(void)state;
	s = make_spec("softmax", 0, 3, 0);
	expect_rejected(&s, "input_dim");
	s = make_spec("softmax", 3, 0, 0);
	expect_rejected(&s, "output_dim");
	s = make_spec("linear", 0, 1, 0);
	expect_rejected(&s, "input_dim");
	s = make_spec("linear", 3, 0, 0);
	expect_rejected(&s, "output_dim");
}

static void test_model_new_rejects_wrong_output_dim(void **state)
{
	ps_model_spec s;

	(void)state;
	s = make_spec("linear", 3, 2, 0);
	expect_rejected(&s, "output_dim must be 1");
	s = make_spec("softmax", 3, 1, 0);
	expect_rejected(&s, "output_dim >= 2");
}

static void test_model_new_rejects_absurd_sizes(void **state)
{
	ps_model_spec s;

	(void)state;
	/* (2^20 + 1) * 2^12 > 2^31 */
	s = make_spec("softmax", 1u << 20, 1u << 12, 0);
	expect_rejected(&s, "at most");
	s = make_spec("softmax", UINT32_MAX, UINT32_MAX, 0);
	expect_rejected(&s, "at most");
	s = make_spec("linear", UINT32_MAX, 1, 0);
	expect_rejected(&s, "at most");
}

/* The cap itself is allowed: a model holds no weights, so this allocates
 * nothing large. */
static void test_model_new_accepts_size_at_cap(void **state)
{
	ps_model *m = new_model("linear", (uint32_t)(PS_MODEL_PARAMS_MAX - 1),
				1, 0);

	(void)state;
	assert_int_equal(ps_model_num_params(m), PS_MODEL_PARAMS_MAX);
	ps_model_destroy(&m);
}

static void test_model_new_rejects_unterminated_strings(void **state)
{
	ps_model_spec s;

	(void)state;
	s = make_spec("softmax", 3, 2, 0);
	memset(s.name, 'x', sizeof s.name);
	expect_rejected(&s, "NUL-terminated");
	s = make_spec("softmax", 3, 2, 0);
	memset(s.hidden, '1', sizeof s.hidden);
	expect_rejected(&s, "NUL-terminated");
}

static void test_model_new_rejects_hidden_for_flat_models(void **state)
{
	ps_model_spec s;

	(void)state;
	s = make_spec("softmax", 3, 2, 0);
	strcpy(s.hidden, "128");
	expect_rejected(&s, "no hidden layers");
	s = make_spec("linear", 3, 1, 0);
	strcpy(s.hidden, "16,16");
	expect_rejected(&s, "no hidden layers");
}

static void test_model_destroy_accepts_null(void **state)
{
	ps_model *m = NULL;

	(void)state;
	ps_model_destroy(NULL);
	ps_model_destroy(&m);
	m = new_model("linear", 2, 1, 0);
	ps_model_destroy(&m);
	assert_null(m);
}

static void test_model_label_out_of_range(void **state)
{
	const float bad[] = { 3.0f, -1.0f, 1.5f, NAN, INFINITY, 1e9f };
	const float w[12] = { 0 };
	const float x[6] = { 1, 2, 3, 4, 5, 6 };
	ps_model *m = new_model("softmax", 3, 3, 0);
	float g[12];
	double loss = 1234.0;

	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		/* A bad label in the second row still fails the batch. */
		float y[2] = { 0.0f, bad[i] };
		memset(g, 0, sizeof g);
		assert_int_equal(ps_model_loss_grad(m, w, x, y, 2, g, &loss),
				 PS_EINVAL);
		assert_true(loss == 1234.0);
	}
	{
		float y[2] = { 2.0f, 0.0f };
		assert_int_equal(ps_model_loss_grad(m, w, x, y, 2, g, &loss),
				 PS_OK);
		assert_int_equal(ps_model_loss_grad(m, w, x, y, 0, g, &loss),
				 PS_EINVAL);
	}
	ps_model_destroy(&m);
}

/* W = I, b = 0 on two classes, so the predicted class is the larger
 * coordinate and the loss of a row is log(1 + e^-(z_label - z_other)):
 *   (2,0) label 0: right, margin  2
 *   (0,2) label 1: right, margin  2
 *   (1,0) label 0: right, margin  1
 *   (3,0) label 1: wrong, margin -3
 * accuracy 3/4. */
static void test_model_evaluate_accuracy_known(void **state)
{
	float w[6] = { 1, 0, 0, 1, 0, 0 };
	float x[8] = { 2, 0, 0, 2, 1, 0, 3, 0 };
	float y[4] = { 0, 1, 0, 1 };
	ps_dataset d = { .n = 4, .dim = 2, .classes = 2, .x = x, .y = y };
	ps_model *m = new_model("softmax", 2, 2, 0);
	ps_model_eval ev;
	double want = (2 * log1p(exp(-2.0)) + log1p(exp(-1.0)) +
		       log1p(exp(3.0))) / 4;

	(void)state;
	assert_int_equal(ps_model_evaluate(m, w, &d, &ev), PS_OK);
	assert_int_equal(ev.n, 4);
	assert_true(fabs(ev.accuracy - 0.75) < 1e-12);
	assert_true(fabs(ev.loss - want) < 1e-6);
	ps_model_destroy(&m);
}

static void test_model_evaluate_linear_has_no_accuracy(void **state)
{
	const float w[4] = { 1, 2, -1, 0.5f };
	float x[9] = { 1, 0, 0, 0, 1, 1, 1, 1, 1 };
	float y[3] = { 1, 0, 3 };
	ps_dataset d = { .n = 3, .dim = 3, .classes = 0, .x = x, .y = y };
	ps_model *m = new_model("linear", 3, 1, 0);
	ps_model_eval ev;

	(void)state;
	assert_int_equal(ps_model_evaluate(m, w, &d, &ev), PS_OK);
	assert_true(isnan(ev.accuracy));
	assert_true(fabs(ev.loss - 2.75 / 6) < 1e-12);
	assert_int_equal(ev.n, 3);
	ps_model_destroy(&m);
}

static void test_model_evaluate_rejects_dim_mismatch(void **state)
{
	float x[6] = { 0 };
	float y[2] = { 0, 1 };
	float w[8] = { 0 };
	ps_dataset d = { .n = 2, .dim = 3, .classes = 2, .x = x, .y = y };
	ps_model *m = new_model("softmax", 2, 2, 0);
	ps_model_eval ev = { .loss = 7.0, .accuracy = 7.0, .n = 7 };

	(void)state;
	assert_int_equal(ps_model_evaluate(m, w, &d, &ev), PS_EINVAL);
	d.dim = 2;
	d.n = 0;
	assert_int_equal(ps_model_evaluate(m, w, &d, &ev), PS_EINVAL);
	/* Labels are checked on the evaluation path too. */
	d.n = 2;
	y[1] = 2.0f;
	assert_int_equal(ps_model_evaluate(m, w, &d, &ev), PS_EINVAL);
	assert_true(ev.loss == 7.0 && ev.n == 7);
	ps_model_destroy(&m);
}

/* Evaluation walks the data in chunks (and a partial last one); its mean
 * loss must be the single-batch mean, and its accuracy the argmax count. */
static void test_model_evaluate_chunks_match_one_batch(void **state)
{
	const uint32_t dim = 4, k = 3;
	const size_t n = 2500;
	ps_model *m = new_model("softmax", dim, k, 0);
	size_t np = ps_model_num_params(m);
	ps_model_eval ev;
	size_t hits = 0;
	double loss;
	ps_rng r;
	float *w, *x, *y;

	(void)state;
	ps_rng_seed(&r, 11);
	w = fill_normal(&r, np, 1.0);
	x = fill_normal(&r, n * dim, 1.0);
	y = fill_labels(&r, n, k);
	for (size_t i = 0; i < n; i++) {
		double best = -INFINITY;
		size_t arg = 0;
		for (uint32_t c = 0; c < k; c++) {
			double z = w[dim * k + c];
			for (uint32_t j = 0; j < dim; j++)
				z += (double)w[c * dim + j] * x[i * dim + j];
			if (z > best) {
				best = z;
				arg = c;
			}
		}
		hits += arg == (size_t)y[i];
	}
	loss = loss_at(m, w, x, y, n);
	{
		ps_dataset d = { .n = n, .dim = dim, .classes = k, .x = x,
				 .y = y };
		assert_int_equal(ps_model_evaluate(m, w, &d, &ev), PS_OK);
	}
	assert_int_equal(ev.n, n);
	assert_true(fabs(ev.loss - loss) < 1e-6 * loss);
	assert_true(fabs(ev.accuracy - (double)hits / n) < 1e-12);
	test_free(w);
	test_free(x);
	test_free(y);
	ps_model_destroy(&m);
}

/* Batches of different sizes on one model: the scratch grows for the big
 * one and is reused for the small ones, with the results a fresh model
 * gives. */
static void test_model_scratch_reuse_across_batch_sizes(void **state)
{
	const uint32_t dim = 6, k = 4;
	const size_t sizes[] = { 2, 300, 3, 1 };
	ps_model *m = new_model("softmax", dim, k, 5);
	size_t np = ps_model_num_params(m);
	float *w = test_malloc(np * sizeof *w);
	float *g1 = test_malloc(np * sizeof *g1);
	float *g2 = test_malloc(np * sizeof *g2);
	ps_rng r;
	float *x, *y;

	(void)state;
	ps_model_init(m, w);
	ps_rng_seed(&r, 17);
	x = fill_normal(&r, 300 * dim, 1.0);
	y = fill_labels(&r, 300, k);
	for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
		ps_model *fresh = new_model("softmax", dim, k, 5);
		double l1 = NAN, l2 = NAN;
		assert_int_equal(ps_model_loss_grad(m, w, x, y, sizes[t], g1,
						    &l1),
				 PS_OK);
		assert_int_equal(ps_model_loss_grad(fresh, w, x, y, sizes[t],
						    g2, &l2),
				 PS_OK);
		assert_true(fabs(l1 - l2) < 1e-9);
		for (size_t j = 0; j < np; j++)
			assert_true(fabsf(g1[j] - g2[j]) < 1e-6f);
		ps_model_destroy(&fresh);
	}
	test_free(x);
	test_free(y);
	test_free(w);
	test_free(g1);
	test_free(g2);
	ps_model_destroy(&m);
}

/* A batch whose scratch size does not fit in size_t is PS_ENOMEM, not a
 * wrapped small allocation. Driven through the internal seam because no
 * real batch that large can be built in a test. */
static void test_model_scratch_overflow_is_enomem(void **state)
{
	ps_model *m = new_model("softmax", 2, 2, 0);
	float *p = NULL;

	(void)state;
	assert_int_equal(ps_model_scratch(m, 0, SIZE_MAX / 2, 3, &p),
			 PS_ENOMEM);
	assert_null(p);
	assert_int_equal(ps_model_scratch(m, 0, 4, 3, &p), PS_OK);
	assert_non_null(p);
	ps_model_destroy(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_model_softmax_gradient_matches_finite_differences),
		cmocka_unit_test(test_model_linear_gradient_matches_finite_differences),
		cmocka_unit_test(test_model_softmax_loss_at_zero_is_log_k),
		cmocka_unit_test(test_model_linear_loss_by_hand),
		cmocka_unit_test(test_model_init_is_deterministic),
		cmocka_unit_test(test_model_num_params_follow_layout),
		cmocka_unit_test(test_model_new_rejects_unknown_name),
		cmocka_unit_test(test_model_new_rejects_zero_dims),
		cmocka_unit_test(test_model_new_rejects_wrong_output_dim),
		cmocka_unit_test(test_model_new_rejects_absurd_sizes),
		cmocka_unit_test(test_model_new_accepts_size_at_cap),
		cmocka_unit_test(test_model_new_rejects_unterminated_strings),
		cmocka_unit_test(test_model_new_rejects_hidden_for_flat_models),
		cmocka_unit_test(test_model_destroy_accepts_null),
		cmocka_unit_test(test_model_label_out_of_range),
		cmocka_unit_test(test_model_evaluate_accuracy_known),
		cmocka_unit_test(test_model_evaluate_linear_has_no_accuracy),
		cmocka_unit_test(test_model_evaluate_rejects_dim_mismatch),
		cmocka_unit_test(test_model_evaluate_chunks_match_one_batch),
		cmocka_unit_test(test_model_scratch_reuse_across_batch_sizes),
		cmocka_unit_test(test_model_scratch_overflow_is_enomem),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
