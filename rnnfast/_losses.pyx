"""Softmax cross-entropy for rnnfast.losses in one pass over the logits (the C in
csrc/rnnfast_losses.h) instead of a dozen NumPy operations and their temporaries."""

from cython cimport floating
from libc.stdint cimport int64_t

cdef extern from "rnnfast_losses.h" nogil:
    double softmax_cross_entropy_f32(Py_ssize_t rows, Py_ssize_t C, const float *logits,
                                     const int64_t *targets, int64_t ignore_index,
                                     float scale, float *dlogits)
    double softmax_cross_entropy_f64(Py_ssize_t rows, Py_ssize_t C, const double *logits,
                                     const int64_t *targets, int64_t ignore_index,
                                     double scale, double *dlogits)


def softmax_cross_entropy(const floating[:, ::1] logits, const int64_t[::1] targets,
                          int64_t ignore_index, floating[:, ::1] dlogits):
    """Mean softmax cross-entropy over the rows whose target is not ``ignore_index``.

    logits and dlogits (N, C), targets (N,). Returns ``(loss, bad_row)``: with every
    target in [0, C) or ``ignore_index``, the mean over the n counted rows of
    -log softmax(row)[target] (accumulated in double; nan when none counts),
    dlogits = (softmax(logits) - onehot(targets)) / n on them and 0 on the others,
    and bad_row = -1; else bad_row is the first row whose target is neither, and
    nothing is computed.
    """
    cdef Py_ssize_t rows = logits.shape[0], C = logits.shape[1], r
    cdef Py_ssize_t counted = 0, bad_row = -1
    cdef int64_t target
    cdef double total = 0.0
    if not (targets.shape[0] == dlogits.shape[0] == rows and dlogits.shape[1] == C):
        raise ValueError(f"softmax_cross_entropy: logits {rows, C}, targets "
                         f"{targets.shape[0]}, dlogits {dlogits.shape[0], dlogits.shape[1]}")
    with nogil:
        for r in range(rows):
            target = targets[r]
            if target != ignore_index:
                if target < 0 or target >= C:
                    bad_row = r
                    break
                counted += 1
        if bad_row < 0 and rows > 0 and C > 0:
            if floating is float:
                total = softmax_cross_entropy_f32(rows, C, &logits[0, 0], &targets[0],
                                                  ignore_index, <float>(1.0 / max(counted, 1)),
                                                  &dlogits[0, 0])
            else:
                total = softmax_cross_entropy_f64(rows, C, &logits[0, 0], &targets[0],
                                                  ignore_index, 1.0 / max(counted, 1),
                                                  &dlogits[0, 0])
    if bad_row >= 0:
        return float("nan"), bad_row
    return (total / counted if counted else float("nan")), -1
