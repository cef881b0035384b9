"""Drawing the next id of a generated sequence from a row of logits in one compiled
pass (for rnnfast.models.charlm), instead of a dozen NumPy operations on a vector of
a hundred values, which cost 7 us a character."""

from cython cimport floating
from libc.math cimport INFINITY, exp, isnan
from libc.stdlib cimport free, malloc


def sample_softmax(const floating[::1] logits, double temperature, Py_ssize_t top_k,
                   double u):
    """The id drawn from softmax(logits / temperature) with the uniform number u.

    logits (V,), temperature > 0, top_k in [1, V] or 0 for all, u in [0, 1). The
    weights are w_i = exp(z_i - max z), z = logits / temperature, computed in double,
    and 0 outside the top_k largest logits (of equal logits at the k-th largest value,
    the smaller ids are kept); the draw is the first id whose running sum of weights
    exceeds u * sum(w), or the last id of positive weight where rounding leaves none.
    Logits of +inf (a softmax's limit) share all the weight. ValueError for a NaN
    logit, or where every kept logit is -inf.
    """
    cdef Py_ssize_t V = logits.shape[0], i, ties_left = 0, chosen = -1
    cdef double threshold = -INFINITY, z_max = -INFINITY, total = 0.0, weight, target
    cdef double *cumulative
    if V == 0:
        raise ValueError("logits must hold at least one value")
    for i in range(V):
        if isnan(logits[i]):
            raise ValueError(f"logits must not hold NaN, got NaN at {i}")
    if 0 < top_k < V:
        threshold = kth_largest(logits, top_k)
        ties_left = top_k
        for i in range(V):
            if logits[i] > threshold:
                ties_left -= 1
    cumulative = <double *>malloc(V * sizeof(double))
    if cumulative == NULL:
        raise MemoryError()
    try:
        # cumulative[i] is first 1 where id i is kept, else 0; z_max the largest kept z
        for i in range(V):
            cumulative[i] = logits[i] > threshold or (logits[i] == threshold
                                                     and ties_left > 0)
            if cumulative[i] == 0:
                continue
            if logits[i] == threshold:
                ties_left -= 1
            if logits[i] / temperature > z_max:
                z_max = logits[i] / temperature
        if z_max == -INFINITY:
            raise ValueError("every logit kept is -inf: no id can be drawn")
        # cumulative[i] = sum over kept j <= i of exp(z_j - z_max)
        for i in range(V):
            if cumulative[i] != 0:
                if z_max == INFINITY:
                    weight = 1.0 if logits[i] == INFINITY else 0.0
                else:
                    weight = exp(logits[i] / temperature - z_max)
                total += weight
                if weight > 0:
                    chosen = i
            cumulative[i] = total
        target = u * total
        for i in range(V):
            if cumulative[i] > target:
                return i
        return chosen
    finally:
        free(cumulative)


cdef double kth_largest(const floating[::1] values, Py_ssize_t k) except? -1:
    """The k-th largest of ``values`` (1 <= k <= their count), by quickselect on a
    copy: the values below the pivot, then those equal to it, then those above."""
    cdef Py_ssize_t n = values.shape[0], low = 0, high = n, i, below, equal, wanted
    cdef double pivot, value
    cdef double *copy = <double *>malloc(n * sizeof(double))
    if copy == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            copy[i] = values[i]
        wanted = n - k                  # its index in ascending order
        while True:
            # partition copy[low:high] around its middle value into < pivot, == pivot
            # and > pivot (a three-way Dutch flag partition)
            pivot = copy[low + (high - low) // 2]
            below, equal, i = low, low, high
            while equal < i:
                value = copy[equal]
                if value < pivot:
                    copy[equal], copy[below] = copy[below], value
                    below += 1
                    equal += 1
                elif value > pivot:
                    i -= 1
                    copy[equal], copy[i] = copy[i], value
                else:
                    equal += 1
            if wanted < below:
                high = below
            elif wanted < equal:
                return pivot
            else:
                low = equal
    finally:
        free(copy)
