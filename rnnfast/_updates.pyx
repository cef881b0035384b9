"""Fused passes over parameters and gradients for rnnfast.optim, one each instead of
NumPy operations and their temporaries: the Adam / AdamW update (the C in
csrc/rnnfast_adam.h, built without fused multiply-adds so that it gives bitwise the
NumPy form's values) and the sum of squares of a gradient (csrc/rnnfast_norms.h)."""

from cython cimport floating

cdef extern from "rnnfast_adam.h" nogil:
    void adam_update_f32(Py_ssize_t n, float *param, const float *grad, float *exp_avg,
                         float *exp_avg_sq, int coupled, double weight_decay, int decoupled,
                         double decay, double weight, double beta2, double step_size,
                         double bias_correction2_sqrt, double eps)
    void adam_update_f64(Py_ssize_t n, double *param, const double *grad, double *exp_avg,
                         double *exp_avg_sq, int coupled, double weight_decay, int decoupled,
                         double decay, double weight, double beta2, double step_size,
                         double bias_correction2_sqrt, double eps)

cdef extern from "rnnfast_norms.h" nogil:
    double sum_of_squares_f32(Py_ssize_t n, const float *values)
    double sum_of_squares_f64(Py_ssize_t n, const double *values)


def adam_update(floating[::1] param, const floating[::1] grad, floating[::1] exp_avg,
                floating[::1] exp_avg_sq, bint coupled, double weight_decay, bint decoupled,
                double decay, double weight, double beta2, double step_size,
                double bias_correction2_sqrt, double eps):
    """One Adam / AdamW step on flat arrays of one dtype, in place (see the header)."""
    cdef Py_ssize_t n = param.shape[0]
    if not (grad.shape[0] == exp_avg.shape[0] == exp_avg_sq.shape[0] == n):
        raise ValueError(f"adam_update: arrays of {n}, {grad.shape[0]}, "
                         f"{exp_avg.shape[0]} and {exp_avg_sq.shape[0]} values")
    if n == 0:
        return
    with nogil:
        if floating is float:
            adam_update_f32(n, &param[0], &grad[0], &exp_avg[0], &exp_avg_sq[0], coupled,
                            weight_decay, decoupled, decay, weight, beta2, step_size,
                            bias_correction2_sqrt, eps)
        else:
            adam_update_f64(n, &param[0], &grad[0], &exp_avg[0], &exp_avg_sq[0], coupled,
                            weight_decay, decoupled, decay, weight, beta2, step_size,
                            bias_correction2_sqrt, eps)


def sum_of_squares(const floating[::1] values):
    """sum_k values[k]**2, accumulated in double (csrc/rnnfast_norms.h)."""
    cdef double total
    if values.shape[0] == 0:   # no element to point at
        return 0.0
    with nogil:
        if floating is float:
            total = sum_of_squares_f32(values.shape[0], &values[0])
        else:
            total = sum_of_squares_f64(values.shape[0], &values[0])
    return total
