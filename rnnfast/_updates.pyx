"""Fused passes over parameters and gradients for rnnfast.optim, one each instead of
NumPy operations and their temporaries: the Adam / AdamW update (the C in
csrc/rnnfast_adam.h, built without fused multiply-adds so that it gives bitwise the
NumPy form's values), the sum of squares of a gradient (csrc/rnnfast_norms.h) and
the scaling of a gradient.

The functions take the list of all arrays of a step and loop in C, so a step costs
one call from Python and no memoryview per array: for a small model (an LSTM of 32
units and a linear head, six parameters) Adam's step took 28 us as a call per
parameter and the gradient clipping 11 us, mostly Python around arithmetic of
about 3 us; one call each, 10 and 6 us. An array that is not an aligned,
C-contiguous float32 / float64 ndarray (writeable where written) is left to NumPy,
here or by the caller."""

from libc.math cimport pow

import numpy as np

cimport numpy as cnp

cnp.import_array()

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
    void scale_f32(Py_ssize_t n, float *values, double factor)
    void scale_f64(Py_ssize_t n, double *values, double factor)


cdef inline int float_type(object array):
    """NPY_FLOAT32 or NPY_FLOAT64 for an ndarray of that dtype, else -1."""
    if not cnp.PyArray_Check(array):
        return -1
    cdef int type_num = cnp.PyArray_TYPE(<cnp.ndarray>array)
    return type_num if type_num == cnp.NPY_FLOAT32 or type_num == cnp.NPY_FLOAT64 else -1


cdef inline bint is_flat(object array, int type_num, Py_ssize_t size, bint written):
    """Whether ``array`` is an aligned, C-contiguous ndarray of ``type_num`` with
    ``size`` values, writeable where ``written``."""
    if float_type(array) != type_num:
        return False
    cdef cnp.ndarray flat = <cnp.ndarray>array
    return (cnp.PyArray_SIZE(flat) == size and cnp.PyArray_IS_C_CONTIGUOUS(flat)
            and cnp.PyArray_ISALIGNED(flat) and (not written or cnp.PyArray_ISWRITEABLE(flat)))


cdef inline Py_ssize_t size_of(object array):
    return cnp.PyArray_SIZE(<cnp.ndarray>array)


cdef inline void *data(object array):
    return cnp.PyArray_DATA(<cnp.ndarray>array)


def adam_updates(list entries, bint coupled, double weight_decay, bint decoupled,
                 double decay, double weight, double beta1, double beta2, double lr,
                 double eps):
    """One Adam / AdamW step, in place, for each entry (param, grad, exp_avg,
    exp_avg_sq, step) whose four arrays are flat (is_flat) and of the parameter's
    dtype and size, with step_size = lr / (1 - beta1**step) and
    bias_correction2_sqrt = (1 - beta2**step)**0.5 computed with C's pow, as Python's
    ``**`` computes them. The other arguments as in the header (weight = 1 - beta1).
    Returns the indices of the entries left for the NumPy form."""
    cdef list left = []
    cdef Py_ssize_t index, n
    cdef int type_num
    cdef double step, step_size, bias_correction2_sqrt
    cdef void *values[4]
    for index, (param, grad, exp_avg, exp_avg_sq, step_count) in enumerate(entries):
        type_num = float_type(param)
        n = size_of(param) if type_num >= 0 else -1
        if not (type_num >= 0 and is_flat(param, type_num, n, True)
                and is_flat(grad, type_num, n, False) and is_flat(exp_avg, type_num, n, True)
                and is_flat(exp_avg_sq, type_num, n, True)):
            left.append(index)
            continue
        step = <double>step_count
        step_size = lr / (1.0 - pow(beta1, step))
        bias_correction2_sqrt = pow(1.0 - pow(beta2, step), 0.5)
        values[0], values[1] = data(param), data(grad)
        values[2], values[3] = data(exp_avg), data(exp_avg_sq)
        with nogil:
            if type_num == cnp.NPY_FLOAT32:
                adam_update_f32(n, <float *>values[0], <const float *>values[1],
                                <float *>values[2], <float *>values[3], coupled, weight_decay,
                                decoupled, decay, weight, beta2, step_size,
                                bias_correction2_sqrt, eps)
            else:
                adam_update_f64(n, <double *>values[0], <const double *>values[1],
                                <double *>values[2], <double *>values[3], coupled,
                                weight_decay, decoupled, decay, weight, beta2, step_size,
                                bias_correction2_sqrt, eps)
    return left


def sum_of_squares(list arrays):
    """The sum over ``arrays`` of sum_k a[k]**2 in double, array by array in order and
    each in C order: flat float32 / float64 arrays in C (no float64 copy), others as
    C-ordered copies (of other dtypes, in float64 by NumPy)."""
    cdef double total = 0.0
    cdef int type_num
    cdef Py_ssize_t n
    cdef const void *values
    for array in arrays:
        type_num = float_type(array)
        if type_num < 0 or not is_flat(array, type_num, size_of(array), False):
            array = np.array(array, order="C")   # an aligned copy
            type_num = float_type(array)
            if type_num < 0:
                flat = array.reshape(-1).astype(np.float64)
                total += float(flat @ flat)
                continue
        n, values = size_of(array), data(array)
        with nogil:
            if type_num == cnp.NPY_FLOAT32:
                total += sum_of_squares_f32(n, <const float *>values)
            else:
                total += sum_of_squares_f64(n, <const double *>values)
    return total


def scale(list arrays, double factor):
    """``a *= factor`` in place for each of ``arrays``, as NumPy computes it (float32
    values times factor rounded to float32): flat ones in C, others by NumPy."""
    cdef int type_num
    cdef Py_ssize_t n
    cdef void *values
    for array in arrays:
        type_num = float_type(array)
        if type_num < 0 or not is_flat(array, type_num, size_of(array), True):
            with np.errstate(invalid="ignore"):   # inf * 0 = nan, as in torch
                array *= factor
            continue
        n, values = size_of(array), data(array)
        with nogil:
            if type_num == cnp.NPY_FLOAT32:
                scale_f32(n, <float *>values, factor)
            else:
                scale_f64(n, <double *>values, factor)
