"""Fused parameter updates for rnnfast.optim: one pass over each parameter's values
instead of a dozen NumPy operations and their temporaries (the C in
csrc/rnnfast_adam.h, built without fused multiply-adds so that it gives bitwise the
NumPy form's values)."""

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
