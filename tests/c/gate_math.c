/* Accuracy of csrc/rnnfast_math.h against libm (double for the float functions,
 * long double for the double ones) on a sweep of inputs, and what it makes of NaN
 * and infinities. Prints "ok" and exits 0 when every bound holds; otherwise prints
 * each error that misses its bound. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "rnnfast_math.h"

/* float inputs: every FLOAT_STRIDE-th bit pattern, with both signs, so every
 * exponent is visited */
#define FLOAT_STRIDE 997u
#define DOUBLE_POINTS 2000000

static int failures = 0;

static void check_error(const char *what, double measured, double bound)
{
    if (!(measured <= bound)) {
        printf("%s: %.3g, bound %.3g\n", what, measured, bound);
        failures++;
    }
}

static void check(const char *what, int holds)
{
    if (!holds) {
        printf("does not hold: %s\n", what);
        failures++;
    }
}

static float float_of_bits(uint32_t bits, int negative)
{
    float x;
    memcpy(&x, &bits, sizeof x);
    return negative ? -x : x;
}

static void single_precision(void)
{
    double exp_rel = 0, sigmoid_abs = 0, sigmoid_rel = 0, tanh_abs = 0, tanh_rel = 0;
    for (uint32_t bits = 0; bits < 0x7F800000u; bits += FLOAT_STRIDE)
        for (int negative = 0; negative < 2; negative++) {
            float x = float_of_bits(bits, negative);
            if (x >= -87.0f && x <= 88.0f) {
                double e = exp((double)x);
                exp_rel = fmax(exp_rel, fabs(rnnfast_expf(x) - e) / e);
            }
            if (x >= -80.0f && x <= 80.0f) {
                double s = 1.0 / (1.0 + exp(-(double)x)), t = tanh((double)x);
                double error = fabs(rnnfast_sigmoidf(x) - s);
                sigmoid_abs = fmax(sigmoid_abs, error);
                sigmoid_rel = fmax(sigmoid_rel, error / s);
                error = fabs(rnnfast_tanhf(x) - t);
                tanh_abs = fmax(tanh_abs, error);
                if (fabsf(x) >= 0.01f)   /* below, (e - 1) loses digits to cancellation */
                    tanh_rel = fmax(tanh_rel, error / fabs(t));
            }
        }
    check_error("rnnfast_expf relative error on [-87, 88]", exp_rel, 3e-7);
    check_error("rnnfast_sigmoidf absolute error", sigmoid_abs, 1.5e-7);
    check_error("rnnfast_sigmoidf relative error on [-80, 80]", sigmoid_rel, 4e-7);
    check_error("rnnfast_tanhf absolute error", tanh_abs, 2e-7);
    check_error("rnnfast_tanhf relative error where |x| >= 0.01", tanh_rel, 5e-6);

    check("float: NaN in, NaN out", isnan(rnnfast_expf(NAN)) && isnan(rnnfast_sigmoidf(NAN))
          && isnan(rnnfast_tanhf(NAN)));
    check("float: sigmoid(inf) = 1, 0 <= sigmoid(-inf) < 1e-37",
          rnnfast_sigmoidf(INFINITY) == 1.0f && rnnfast_sigmoidf(-INFINITY) >= 0.0f
          && rnnfast_sigmoidf(-INFINITY) < 1e-37f);
    check("float: tanh(+-inf) = +-1",
          rnnfast_tanhf(INFINITY) == 1.0f && rnnfast_tanhf(-INFINITY) == -1.0f);
    check("float: exp(inf) finite, 0 <= exp(-inf) < 1e-37", isfinite(rnnfast_expf(INFINITY))
          && rnnfast_expf(-INFINITY) >= 0.0f && rnnfast_expf(-INFINITY) < 1e-37f);
}

static void double_precision(void)
{
    long double exp_rel = 0, sigmoid_abs = 0, tanh_abs = 0;
    for (int i = 0; i <= DOUBLE_POINTS; i++) {
        double x = -708.0 + 1417.0 * i / DOUBLE_POINTS;
        long double e = expl((long double)x);
        exp_rel = fmaxl(exp_rel, fabsl(rnnfast_exp(x) - e) / e);
        x = -40.0 + 80.0 * i / DOUBLE_POINTS;
        long double s = 1.0L / (1.0L + expl(-(long double)x));
        sigmoid_abs = fmaxl(sigmoid_abs, fabsl(rnnfast_sigmoid(x) - s));
        tanh_abs = fmaxl(tanh_abs, fabsl(rnnfast_tanh(x) - tanhl((long double)x)));
    }
    check_error("rnnfast_exp relative error on [-708, 709]", (double)exp_rel, 1e-15);
    check_error("rnnfast_sigmoid absolute error", (double)sigmoid_abs, 4e-16);
    check_error("rnnfast_tanh absolute error", (double)tanh_abs, 4e-16);

    check("double: NaN in, NaN out", isnan(rnnfast_exp(NAN)) && isnan(rnnfast_sigmoid(NAN))
          && isnan(rnnfast_tanh(NAN)));
    check("double: sigmoid(inf) = 1, 0 <= sigmoid(-inf) < 1e-300, tanh(+-inf) = +-1",
          rnnfast_sigmoid(INFINITY) == 1.0 && rnnfast_sigmoid(-INFINITY) >= 0.0
          && rnnfast_sigmoid(-INFINITY) < 1e-300 && rnnfast_tanh(INFINITY) == 1.0
          && rnnfast_tanh(-INFINITY) == -1.0);
}

int main(void)
{
    single_precision();
    double_precision();
    if (failures)
        return 1;
    printf("ok\n");
    return 0;
}
