/* rnnfast: fused elementwise gate math for one time step of RNN, LSTM and GRU.
 *
 * Plain C, no Python. Every function works on one step of a batch: B rows of
 * H hidden units, row-major. Shape legend: B = batch, H = hidden units, and a row
 * of stacked gates holds G*H values in PyTorch's gate order (LSTM i f g o,
 * GRU r z n).
 *
 * Variable lengths: row b is active at time t when t < lengths[b]. An inactive
 * row outputs nothing new: its state is carried (forward) and its gradient passes
 * through unchanged (backward), while its gate gradients are written as zeros so
 * the weight-gradient GEMMs after the time loop can run over every row.
 *
 * The bodies live in rnnfast_gates_impl.h, included once per precision:
 * functions ending in _f32 take float, those ending in _f64 take double.
 */
#ifndef RNNFAST_GATES_H
#define RNNFAST_GATES_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "rnnfast_math.h"

#if defined(__GNUC__) || defined(__clang__) || defined(_MSC_VER)
#define RNNFAST_RESTRICT __restrict
#else
#define RNNFAST_RESTRICT
#endif

/* The gate passes are compiled for several x86-64 levels and the best one the
 * CPU supports is picked at load time (GCC function multi-versioning), so a
 * portable wheel still runs AVX2 / AVX-512 code where it can. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(RNNFAST_NO_CLONES)
#define RNNFAST_CLONES \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RNNFAST_CLONES
#endif

#define RNNFAST_REAL float
#define RNNFAST_FN(name) name##_f32
#define RNNFAST_SIGMOID rnnfast_sigmoidf
#define RNNFAST_TANH rnnfast_tanhf
#include "rnnfast_gates_impl.h"
#undef RNNFAST_REAL
#undef RNNFAST_FN
#undef RNNFAST_SIGMOID
#undef RNNFAST_TANH

#define RNNFAST_REAL double
#define RNNFAST_FN(name) name##_f64
#define RNNFAST_SIGMOID rnnfast_sigmoid
#define RNNFAST_TANH rnnfast_tanh
#include "rnnfast_gates_impl.h"
#undef RNNFAST_REAL
#undef RNNFAST_FN
#undef RNNFAST_SIGMOID
#undef RNNFAST_TANH

#endif /* RNNFAST_GATES_H */
