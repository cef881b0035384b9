"""Drawing the next id of a generated sequence from a row of logits in one compiled
pass (for rnnfast.models.charlm), instead of a dozen NumPy operations on a vector of
a hundred values, which cost 7 us a character; ``HeadSampler`` also computes the
logits, an output layer's h W^T + b, in the same call."""

from cython cimport floating
from libc.math cimport INFINITY, exp, isnan
from libc.stdlib cimport free, malloc

cimport numpy as cnp
import numpy as np

from ._blas cimport gemm, NoTrans, Trans

cnp.import_array()


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
    cdef Py_ssize_t V = logits.shape[0]
    cdef double *work
    if V == 0:
        raise ValueError("logits must hold at least one value")
    work = <double *>malloc(2 * V * sizeof(double))
    if work == NULL:
        raise MemoryError()
    try:
        return draw(&logits[0], V, temperature, top_k, u, work)
    finally:
        free(work)


cdef class HeadSampler:
    """Draws ids from softmax((h W^T + b) / temperature), as ``sample_softmax`` does
    from an output layer's logits: h (1, H) is read at every draw from the array
    bound here (a stream's ``out``), W (V, H) and b (V,) are the layer's weight and
    bias (b may be None). All three aligned and C-contiguous, of one dtype (float32
    or float64),
    and kept, with a (V,) buffer of logits and the draw's workspace, for the
    sampler's life. One call per id: ``sampler.draw(u)``."""

    cdef cnp.ndarray weight, bias, hidden, logits_buffer
    cdef Py_ssize_t V, H, top_k
    cdef double temperature
    cdef bint single                   # float32, else float64
    cdef double *work                  # (2V,) the draw's workspace

    def __cinit__(self):
        self.work = NULL

    def __init__(self, weight, bias, hidden, double temperature, Py_ssize_t top_k):
        if not isinstance(weight, np.ndarray) or weight.dtype.num not in (cnp.NPY_FLOAT32,
                                                                          cnp.NPY_FLOAT64):
            raise TypeError(f"weight must be a float32 or float64 ndarray, got "
                            f"{getattr(weight, 'dtype', type(weight).__name__)}")
        dtype = weight.dtype
        if (weight.ndim != 2 or weight.shape[0] == 0 or not weight.flags.c_contiguous
                or not weight.flags.aligned):
            raise ValueError(f"weight must be an aligned, C-contiguous (V, H) array with "
                             f"V >= 1, got shape {weight.shape}")
        V, H = weight.shape[0], weight.shape[1]
        if max(V, H) > 2147483647:
            raise ValueError(f"weight must have fewer than 2**31 rows and columns, got "
                             f"shape {weight.shape}")
        for name, array, shape in (("bias", bias, (V,)), ("hidden", hidden, (1, H))):
            if array is None and name == "bias":
                continue
            if not isinstance(array, np.ndarray) or array.dtype != dtype:
                raise TypeError(f"{name} must be an ndarray of the weight's dtype {dtype}, "
                                f"got {getattr(array, 'dtype', type(array).__name__)}")
            if (array.shape != shape or not array.flags.c_contiguous
                    or not array.flags.aligned):
                raise ValueError(f"{name} must be an aligned, C-contiguous array of shape "
                                 f"{shape}, got shape {array.shape}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0 <= top_k <= V:
            raise ValueError(f"top_k must be in [0, {V}] (0: all), got {top_k}")
        free(self.work)                 # where __init__ runs again
        self.work = <double *>malloc(2 * V * sizeof(double))
        if self.work == NULL:
            self.weight = None          # draw() refuses to run
            raise MemoryError()
        self.weight, self.bias, self.hidden = weight, bias, hidden
        self.logits_buffer = np.empty(V, dtype)
        self.V, self.H, self.temperature, self.top_k = V, H, temperature, top_k
        self.single = dtype.num == cnp.NPY_FLOAT32

    def __dealloc__(self):
        free(self.work)

    def draw(self, double u):
        """The id drawn with the uniform number u in [0, 1) from the logits of the
        bound h now (``logits`` holds them after the call)."""
        if self.weight is None:
            raise ValueError("this HeadSampler was not initialised")
        if self.single:
            return head_draw(<float *>cnp.PyArray_DATA(self.weight),
                             <float *>self._bias_data(), <float *>cnp.PyArray_DATA(self.hidden),
                             <float *>cnp.PyArray_DATA(self.logits_buffer), self, u)
        return head_draw(<double *>cnp.PyArray_DATA(self.weight),
                         <double *>self._bias_data(), <double *>cnp.PyArray_DATA(self.hidden),
                         <double *>cnp.PyArray_DATA(self.logits_buffer), self, u)

    @property
    def logits(self):
        """(V,) the logits of the last draw (read-only view)."""
        view = self.logits_buffer.view()
        view.flags.writeable = False
        return view

    cdef void *_bias_data(self):
        return NULL if self.bias is None else cnp.PyArray_DATA(self.bias)


cdef Py_ssize_t head_draw(const floating *weight, const floating *bias,
                          const floating *hidden, floating *logits, HeadSampler sampler,
                          double u) except -1:
    """logits (V,) = hidden (1, H) @ weight (V, H)^T + bias, then draw()."""
    cdef Py_ssize_t v, V = sampler.V
    gemm(NoTrans, Trans, 1, <int>V, <int>sampler.H, 1, hidden, <int>sampler.H, weight,
         <int>sampler.H, 0, logits, <int>V)
    if bias != NULL:
        for v in range(V):
            logits[v] += bias[v]
    return draw(logits, V, sampler.temperature, sampler.top_k, u, sampler.work)


cdef Py_ssize_t draw(const floating *logits, Py_ssize_t V, double temperature,
                     Py_ssize_t top_k, double u, double *work) except -1:
    """sample_softmax's draw from logits (V,), V >= 1, with ``work`` (2V,) doubles."""
    cdef Py_ssize_t i, ties_left = 0, chosen = -1
    cdef double threshold = -INFINITY, z_max = -INFINITY, total = 0.0, weight, target
    cdef double *cumulative = work
    for i in range(V):
        if isnan(logits[i]):
            raise ValueError(f"logits must not hold NaN, got NaN at {i}")
    if 0 < top_k < V:
        threshold = kth_largest(logits, V, top_k, work + V)
        ties_left = top_k
        for i in range(V):
            if logits[i] > threshold:
                ties_left -= 1
    # cumulative[i] is first 1 where id i is kept, else 0; z_max the largest kept z
    for i in range(V):
        cumulative[i] = logits[i] > threshold or (logits[i] == threshold and ties_left > 0)
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


cdef double kth_largest(const floating *values, Py_ssize_t n, Py_ssize_t k,
                        double *copy) noexcept:
    """The k-th largest of values (n,), 1 <= k <= n, by quickselect on ``copy`` (n,):
    the values below the pivot, then those equal to it, then those above."""
    cdef Py_ssize_t low = 0, high = n, i, below, equal, wanted = n - k   # ascending index
    cdef double pivot, value
    for i in range(n):
        copy[i] = values[i]
    while True:
        # partition copy[low:high] around its middle value into < pivot, == pivot and
        # > pivot (a three-way Dutch flag partition)
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
