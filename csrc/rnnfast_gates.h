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

#define RNNFAST_REAL float
#define RNNFAST_FN(name) name##_f32
#define RNNFAST_EXP expf
#define RNNFAST_TANH tanhf
#include "rnnfast_gates_impl.h"
#undef RNNFAST_REAL
#undef RNNFAST_FN
#undef RNNFAST_EXP
#undef RNNFAST_TANH

#define RNNFAST_REAL double
#define RNNFAST_FN(name) name##_f64
#define RNNFAST_EXP exp
#define RNNFAST_TANH tanh
#include "rnnfast_gates_impl.h"
#undef RNNFAST_REAL
#undef RNNFAST_FN
#undef RNNFAST_EXP
#undef RNNFAST_TANH

#endif /* RNNFAST_GATES_H */
