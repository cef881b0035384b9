"""Streaming inference: one time step of a stack of unidirectional RNN / LSTM / GRU
layers per call, the state kept between calls (the engine of ``layer.stream()``).

Shape legend: L = layers, B = batch, D = input features, H = hidden units,
G = stacked gates (RNN 1, LSTM 4, GRU 3), S = state arrays (1, or 2 for the LSTM).

Built for the cost of one call from Python, where a step of a small layer is a few
hundred nanoseconds of arithmetic: the runner holds every buffer, and a call checks
the input with a handful of C comparisons, checks that ``params`` still holds the
arrays it bound (identity only: in-place updates need no check and take effect at
once), runs each layer's step straight on the parameter arrays and returns a new
(B, H) array, or writes into the caller's (``out``: 0.07 us less a call, a fifth of
an RNN step at H = 32); ``lookup(i, out)`` takes a one-hot row as the input of a
batch of 1, whose first product is then a column of W_ih. Per layer, with the input
v of the step (x, or the layer below's h):

    gates = b_hh + v W_ih^T + h W_hh^T     (B, G*H)   RNN, LSTM: two GEMMs, beta = 1
    gates = v W_ih^T;  hh = h W_hh^T       (B, G*H)   GRU: r * (h W_hn^T + b_hn) needs hh
    then the fused gate pass of csrc/ (with b_ih) writes the new h (and c).

The GIL is released only when a step has enough arithmetic to pay for it. A layer's
products are cut by output columns into parts small enough for BLAS to compute them
straight from the weights (BLAS_DIRECT_OUTPUTS), and from 16384 multiply-adds a step
(B*G*H*(D+H); 64 KiB of float weights at B = 1) the parts run on the threads rnnfast
may use: the calling thread and spinning helper threads (rnnfast._helpers).
Each thread then reads only its columns of W_ih and W_hh, which stay in its core's
L2 from one step to the next. A batch too large for such parts (more than 21 rows
at most sizes) computes its products transposed, C^T = W_ih v^T + W_hh h^T, on the
packed kernel of csrc/rnnfast_gemm.h: the weights are its left operand, read in
place (so in-place updates still take effect at once), and only v^T and h^T, a few
KiB, are packed at each step; the threads split the rows of W and write their
columns of C back transposed (weights small for the batch go to BLAS whole; see
TRANSPOSED_MIN_WEIGHT_BYTES_PER_ROW). The gate pass runs on the calling thread. A
runner is not meant to be shared between threads: each stream owns its state.
"""

cimport numpy as cnp
import numpy as np
from cython cimport floating
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset

from ._blas cimport gemm, NoTrans, Trans
from ._gates cimport *
from ._helpers cimport run_parts, thread_cap
from ._helpers import helper_threads

cnp.import_array()

cdef enum:
    # A step with fewer multiply-adds than this runs holding the GIL: releasing and
    # taking it back costs about as much as the step.
    NOGIL_MIN_MULTIPLY_ADDS = 65536
    # A layer's step splits its products over threads with at least this many
    # multiply-adds per thread. Measured on a 2-core VM, a call from Python, B = 1,
    # D = H, 1 -> 2 threads: RNN H = 64 (8192 in all) 0.62 -> 0.75 us, so not split;
    # GRU H = 64 (24576) 1.36 -> 1.17; LSTM H = 64 and RNN H = 128 (32768) 1.6 ->
    # 1.3 us; GRU H = 128 4.4 -> 2.7 us; LSTM H = 128 5.6 -> 3.4 us.
    MIN_MULTIPLY_ADDS_PER_THREAD = 8192
    # OpenBLAS computes a product v W^T of at most this many outputs (B * columns)
    # straight from W; a larger one is packed first, and may be split over BLAS's
    # own threads. Measured here (one thread, K = 128): B = 1 55 GFLOP/s up to 1024
    # columns, 6 from 2048; B = 8 92 up to 128 columns, 36 from 256. So a step's
    # products are cut into parts of at most this many outputs, whatever the threads.
    BLAS_DIRECT_OUTPUTS = 1024
    # Parts narrower than this (from a batch of more than 21 rows) are not worth the
    # calls: such a step runs its products transposed (large_batch), or, where the
    # weights are small for its batch (fewer bytes than this per row), goes to BLAS
    # whole. Measured on a 2-core VM against BLAS whole, float32, D = H, 2 threads:
    # LSTM H = 128, B = 24, 32, 64, 128 1.20, 1.44, 1.21, 1.12x as many steps a
    # second; LSTM H = 256, B = 64 1.23x; GRU H = 128, B = 64 1.17x; RNN H = 128, B =
    # 64 1.13x; RNN H = 64, B = 64 (512 bytes a row) 1.28x; LSTM H = 32, B = 64 (512)
    # 1.43x; but RNN H = 64, B = 128 (256 bytes a row) 0.96x, B = 256 0.8x, RNN
    # H = 32, B = 64 (128) 0.95x.
    MIN_COLUMNS_PER_PART = 32
    TRANSPOSED_MIN_WEIGHT_BYTES_PER_ROW = 512


ctypedef struct StepProducts:
    # One layer's step products, split by output columns n0:n1 of N = G*H:
    #   out_ih[:, n0:n1] = init[n0:n1] + v (B, Din) @ w_ih[n0:n1].T
    #   out_hh[:, n0:n1] (+)= h (B, H) @ w_hh[n0:n1].T
    # init is b_hh (RNN, LSTM: out_hh is out_ih, the sum) or NULL for zeros (GRU:
    # out_hh is its own array, zeroed first).
    # Where ``columns`` is not NULL, v is one-hot: row b's 1 at columns[b], and the
    # w_ih product is w_ih[n0:n1, columns[b]] for each row.
    Py_ssize_t B, N, Din, H, parts, align
    const void *v
    const int64_t *columns
    const void *w_ih
    const void *h
    const void *w_hh
    const void *init
    void *out_ih
    void *out_hh

ctypedef struct TransposedProducts:
    # One layer's step products for a large batch, rows m0:m1 of N = G*H per part:
    #   ct[m0:m1] = w_ih[m0:m1] @ v^T (+ w_hh[m0:m1] @ h^T)      (m1-m0, B)
    # then out_ih[:, m0:m1] = ct[m0:m1]^T + init[m0:m1] (init NULL for 0). With
    # ``separate`` (GRU) out_ih takes the w_ih product alone, out_hh the w_hh one.
    # packed_v, packed_h: v^T (Din, B) and h^T (H, B) packed for gemm_packed.
    Py_ssize_t B, N, Din, H, parts, align
    bint separate
    const void *w_ih
    const void *w_hh
    const void *init
    const void *packed_v
    const void *packed_h
    void *ct
    void *out_ih
    void *out_hh

cpdef enum CellKind:
    RNN_TANH = 0
    RNN_RELU = 1
    LSTM = 2
    GRU = 3

GATES = {RNN_TANH: 1, RNN_RELU: 1, LSTM: 4, GRU: 3}


cdef class StepRunner:
    """One step of an L-layer unidirectional cell per call.

    Parameters
    ----------
    kind : CellKind
    params : dict, the layer's ``params`` (read at every call)
    names : sequence of L*4 parameter names, per layer ``w_ih, w_hh, b_ih, b_hh``;
        None for a missing bias (a layer built with ``bias=False``)
    bind : callable, ``bind(arrays)`` with the arrays now in ``params`` under
        ``names`` (None where the name is None) checks their dtype, shape and layout
        and raises if they do not fit; the runner calls it whenever ``params``
        holds an array it has not bound yet
    convert : callable, ``convert(x_t)`` returns x_t as a C-contiguous (B, D) array
        of the layer's dtype or raises; called for any other input
    states : ndarray (S, L, B, H), the state entering the next step, updated in place
    input_size, hidden_size : int, D and H
    """

    cdef readonly int kind
    cdef readonly Py_ssize_t layers, batch, input_size, hidden_size, gates_per_unit
    cdef int typenum
    cdef object params, bind_callback, convert_callback
    cdef tuple names
    cdef list bound                     # the arrays bound, in the order of names
    cdef cnp.ndarray states             # (S, L, B, H) the state entering the step
    cdef cnp.ndarray next_states        # (S, L, B, H) the state the step writes
    cdef cnp.ndarray gates              # (B, G*H) workspace
    cdef cnp.ndarray hh                 # (B, G*H) workspace of the GRU
    # a large batch (large_batch): v^T and h^T packed, and C^T (G*H, B); else None
    cdef cnp.ndarray packed_v, packed_h, ct
    cdef cnp.ndarray zero_bias          # (G*H,) for layers without biases
    cdef cnp.ndarray pointers           # (L, 4) uintptr: w_ih, w_hh, b_ih, b_hh
    cdef bint release_gil

    def __init__(self, int kind, dict params, names, bind, convert, cnp.ndarray states,
                 Py_ssize_t input_size, Py_ssize_t hidden_size):
        if kind not in GATES:
            raise ValueError(f"unknown cell kind {kind}")
        self.kind = kind
        self.gates_per_unit = GATES[kind]
        self.layers = states.shape[1]
        self.batch = states.shape[2]
        self.input_size = input_size
        self.hidden_size = hidden_size
        if (states.ndim != 4 or states.shape[0] != (2 if kind == LSTM else 1)
                or states.shape[3] != hidden_size or not states.flags.c_contiguous
                or states.dtype.num not in (cnp.NPY_FLOAT, cnp.NPY_DOUBLE)):
            raise ValueError(f"states must be a C-contiguous float array of shape "
                             f"(S, L, B, H), got {states.dtype} {np.shape(states)}")
        if len(names) != 4 * self.layers:
            raise ValueError(f"names must hold 4 names per layer, got {len(names)}")
        self.typenum = states.dtype.num
        self.params = params
        self.names = tuple(names)
        self.bind_callback = bind
        self.convert_callback = convert
        self.bound = [None] * len(self.names)
        self.states = states
        self.next_states = states.copy()
        GH = self.gates_per_unit * hidden_size
        self.gates = np.zeros((self.batch, GH), states.dtype)
        self.hh = np.zeros((self.batch, GH), states.dtype)
        if large_batch(self.batch, GH, 64 // states.dtype.itemsize):
            size = packed_size_f32 if self.typenum == cnp.NPY_FLOAT else packed_size_f64
            self.packed_v = np.empty(size(max(input_size, hidden_size), self.batch),
                                     states.dtype)
            self.packed_h = np.empty(size(hidden_size, self.batch), states.dtype)
            self.ct = np.empty((GH, self.batch), states.dtype)
        self.zero_bias = np.zeros(GH, states.dtype)
        self.pointers = np.zeros((self.layers, 4), np.uintp)
        self.release_gil = (self.batch * GH * (input_size + self.layers * hidden_size)
                            >= NOGIL_MIN_MULTIPLY_ADDS)

    def __call__(self, x_t, out=None):
        """One step: x_t (B, D) -> the last layer's new h (B, H), written into ``out``
        (an aligned, C-contiguous, writeable (B, H) array of the runner's dtype, which
        may share memory with x_t) and returned, or into a new array."""
        cdef cnp.ndarray x
        cdef cnp.ndarray y
        if not self._fits(x_t, self.input_size):
            x_t = self.convert_callback(x_t)
            if not self._fits(x_t, self.input_size):
                raise ValueError("the converted input does not fit the stream")
        x = <cnp.ndarray>x_t
        y = self._output(out)
        self._check_params()
        if self.typenum == cnp.NPY_FLOAT:
            run_step(self, <float *>cnp.PyArray_DATA(x), NULL, <float *>cnp.PyArray_DATA(y))
        else:
            run_step(self, <double *>cnp.PyArray_DATA(x), NULL, <double *>cnp.PyArray_DATA(y))
        return y

    def lookup(self, index, out=None):
        """One step of a stream of batch 1 whose input x_t is the one-hot row of
        ``index`` (0 <= index < D), as a character model reads text: the first layer's
        input projection x_t W_ih^T is column ``index`` of its W_ih, read alone, not a
        product over all D columns. Returns, or writes into ``out``, the new h (1, H),
        as a call does. The same result as a call with that one-hot x_t wherever W_ih
        is finite; where it holds inf or NaN outside that column, the product's zeros
        times them would make the call's result NaN, and the column's is not. (Layers
        of fewer than 32 gate columns compute their steps transposed, for which the
        column would round differently: there the step is the call's.)"""
        cdef cnp.ndarray y
        cdef cnp.ndarray x
        cdef int64_t column
        if self.batch != 1:
            raise ValueError(f"lookup() steps a stream of batch 1, got batch {self.batch}")
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an integer, got {type(index).__name__}")
        if not 0 <= index < self.input_size:
            raise ValueError(f"index must be in [0, {self.input_size}), got {index}")
        column = index
        if self.ct is not None:
            x = np.zeros((1, self.input_size), self.states.dtype)
            x[0, column] = 1
            return self(x, out)
        y = self._output(out)
        self._check_params()
        if self.typenum == cnp.NPY_FLOAT:
            run_step(self, <float *>NULL, &column, <float *>cnp.PyArray_DATA(y))
        else:
            run_step(self, <double *>NULL, &column, <double *>cnp.PyArray_DATA(y))
        return y

    cdef cnp.ndarray _output(self, object out):
        """``out`` where it can take a step's h, a new (B, H) array for None; else
        raises (_out_error)."""
        cdef cnp.npy_intp out_shape[2]
        if out is None:
            out_shape[0] = self.batch
            out_shape[1] = self.hidden_size
            return cnp.PyArray_EMPTY(2, out_shape, self.typenum, 0)
        if self._fits(out, self.hidden_size) and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out):
            return <cnp.ndarray>out
        raise self._out_error(out)

    cdef bint _fits(self, object array, Py_ssize_t columns):
        """``array`` is an aligned C-contiguous (B, columns) array of the runner's
        dtype."""
        cdef cnp.ndarray a
        if type(array) is not cnp.ndarray:
            return False
        a = <cnp.ndarray>array
        return (cnp.PyArray_TYPE(a) == self.typenum and cnp.PyArray_NDIM(a) == 2
                and cnp.PyArray_DIM(a, 0) == self.batch
                and cnp.PyArray_DIM(a, 1) == columns
                and cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISALIGNED(a))

    cdef _out_error(self, object out):
        """The TypeError or ValueError that says why ``out`` cannot take a step's h."""
        dtype = self.states.dtype
        shape = (self.batch, self.hidden_size)
        if type(out) is not np.ndarray:
            return TypeError(f"out must be None or a {dtype} ndarray of shape (B, H) = "
                             f"{shape}, got {type(out).__name__}")
        if out.dtype != dtype:
            return TypeError(f"out must have dtype {dtype}, got {out.dtype}")
        if out.shape != shape:
            return ValueError(f"out must have shape (B, H) = {shape}, got {out.shape}")
        if not out.flags.writeable:
            return ValueError("out must be writeable, got a read-only array")
        return ValueError(f"out must be C-contiguous and aligned, got strides "
                          f"{out.strides} (aligned: {out.flags.aligned})")

    cdef _check_params(self):
        """Rebind when ``params`` holds an array this runner has not bound."""
        cdef Py_ssize_t i
        cdef object name
        cdef dict params = self.params
        for i in range(len(self.names)):
            name = self.names[i]
            if name is not None and params.get(name) is not self.bound[i]:
                self._bind()
                return

    cdef _bind(self):
        arrays = [None if name is None else self.params.get(name) for name in self.names]
        self.bind_callback(arrays)
        cdef Py_ssize_t k, j
        cdef cnp.ndarray array
        for k in range(self.layers):
            for j in range(4):
                array = arrays[4 * k + j] if arrays[4 * k + j] is not None else self.zero_bias
                if not (cnp.PyArray_TYPE(array) == self.typenum
                        and cnp.PyArray_IS_C_CONTIGUOUS(array)):
                    raise ValueError("bind() accepted an array the stream cannot use")
                self.pointers[k, j] = <size_t>cnp.PyArray_DATA(array)
        self.bound = arrays


cdef void run_step(StepRunner runner, const floating *x, const int64_t *columns,
                   floating *out):
    """All layers, one step, then the new state becomes the entering state; the input
    is x (B, D), or the one-hot rows whose 1 is at ``columns`` (B,) where x is NULL."""
    cdef Py_ssize_t L = runner.layers, B = runner.batch, D = runner.input_size
    cdef Py_ssize_t H = runner.hidden_size, S = 2 if runner.kind == LSTM else 1
    cdef floating *states = <floating *>cnp.PyArray_DATA(runner.states)
    cdef floating *next_states = <floating *>cnp.PyArray_DATA(runner.next_states)
    cdef floating *gates = <floating *>cnp.PyArray_DATA(runner.gates)
    cdef floating *hh = <floating *>cnp.PyArray_DATA(runner.hh)
    cdef size_t *pointers = <size_t *>cnp.PyArray_DATA(runner.pointers)
    cdef int kind = runner.kind, G = runner.gates_per_unit
    cdef TransposedProducts large
    large.packed_v = large.packed_h = large.ct = NULL
    if runner.ct is not None:
        large.packed_v = cnp.PyArray_DATA(runner.packed_v)
        large.packed_h = cnp.PyArray_DATA(runner.packed_h)
        large.ct = cnp.PyArray_DATA(runner.ct)
    if runner.release_gil:
        with nogil:
            run_layers(kind, G, L, B, D, H, x, columns, states, next_states, gates, hh,
                       pointers, &large)
    else:
        run_layers(kind, G, L, B, D, H, x, columns, states, next_states, gates, hh, pointers,
                   &large)
    memcpy(states, next_states, S * L * B * H * sizeof(floating))
    memcpy(out, next_states + (L - 1) * B * H, B * H * sizeof(floating))


cdef void run_layers(int kind, Py_ssize_t G, Py_ssize_t L, Py_ssize_t B, Py_ssize_t D,
                     Py_ssize_t H, const floating *x, const int64_t *columns,
                     floating *states, floating *next_states, floating *gates, floating *hh,
                     const size_t *pointers, TransposedProducts *large) noexcept nogil:
    """Layer k reads v = x (k = 0) or the new h of layer k-1, (B, D or H), and the
    states[:, k] entering the step; it writes next_states[:, k]. Where x is NULL,
    ``columns`` (B,) gives the one-hot rows of v at layer 0, whose products then run
    in parts, never transposed. ``large``: the workspaces of a large batch (their
    pointers NULL otherwise), filled in here."""
    cdef Py_ssize_t k, Din, GH, multiply_adds, threads, even_parts
    # the calling thread's limit (rnnfast._threads.capped), else OpenMP's
    cdef Py_ssize_t max_threads = thread_cap() or rnnfast_max_threads()
    cdef StepProducts products
    cdef const floating *v = x
    cdef const floating *w_ih
    cdef const floating *w_hh
    cdef const floating *b_ih
    cdef const floating *b_hh
    cdef floating *h_prev
    cdef floating *h_out
    cdef unsigned int fpmode = rnnfast_fpmode_enter()
    GH = G * H
    for k in range(L):
        Din = D if k == 0 else H
        w_ih = <const floating *>pointers[4 * k]
        w_hh = <const floating *>pointers[4 * k + 1]
        b_ih = <const floating *>pointers[4 * k + 2]
        b_hh = <const floating *>pointers[4 * k + 3]
        h_prev = states + k * B * H
        h_out = next_states + k * B * H
        # GRU:       gates = v @ W_ih.T ;  hh = h_{t-1} @ W_hh.T        (B, 3H)
        # RNN, LSTM: gates = b_hh + v @ W_ih.T + h_{t-1} @ W_hh.T      (B, G*H)
        products.B, products.N, products.Din, products.H = B, GH, Din, H
        products.v, products.w_ih, products.h, products.w_hh = v, w_ih, h_prev, w_hh
        products.columns = columns if k == 0 else NULL
        products.init = b_hh
        if kind == GRU:
            products.init = NULL
        products.out_ih = gates
        products.out_hh = hh if kind == GRU else gates
        # a one-hot v costs a read of one of Din columns
        multiply_adds = B * GH * ((1 if products.columns != NULL else Din) + H)
        products.align = 64 // sizeof(floating)
        threads = min(max_threads, multiply_adds // MIN_MULTIPLY_ADDS_PER_THREAD)
        if (large.ct != NULL and products.columns == NULL
                and GH * (Din + H) * sizeof(floating)
                >= TRANSPOSED_MIN_WEIGHT_BYTES_PER_ROW * B):
            run_transposed(large, &products, v, h_prev, kind == GRU, max(threads, 1),
                           4 * multiply_adds + kind)
        else:
            # parts of at most BLAS_DIRECT_OUTPUTS outputs, their bounds rounded to
            # align; as many for each thread where they stay wide enough (5 parts on
            # 2 threads left one waiting for the last: 6 took LSTM H = 128, B = 8
            # from 17.5 to 15.2 us a step)
            products.parts = max(threads, ceil_div(B * GH, BLAS_DIRECT_OUTPUTS
                                                   - B * products.align))
            even_parts = ceil_div(products.parts, threads) * threads
            if threads > 1 and GH >= even_parts * MIN_COLUMNS_PER_PART:
                products.parts = even_parts
            if GH < products.parts * MIN_COLUMNS_PER_PART:
                products.parts = threads = 1    # BLAS whole: small weights, many threads
            # one part, or one thread: all on the calling thread
            # a kind of job for the helpers per layer shape and cell
            if floating is float:
                run_parts(step_products_part_f32, &products, products.parts, threads,
                          4 * multiply_adds + kind)
            else:
                run_parts(step_products_part_f64, &products, products.parts, threads,
                          4 * multiply_adds + kind)
        if kind == GRU:
            step_gru(B, H, gates, hh, b_ih, b_hh, h_prev, h_out)
        else:
            if kind == LSTM:
                step_lstm(B, H, gates, b_ih, h_prev, h_out, h_prev + L * B * H,
                          h_out + L * B * H)
            else:
                step_rnn(B, H, kind == RNN_RELU, gates, b_ih, h_prev, h_out)
        v = h_out
    rnnfast_fpmode_exit(fpmode)


cdef inline Py_ssize_t ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b if b > 0 else a


cdef bint large_batch(Py_ssize_t B, Py_ssize_t GH, Py_ssize_t align) noexcept nogil:
    """Whether a step of B rows and GH = G*H gate columns would need parts of fewer
    than MIN_COLUMNS_PER_PART columns to keep each within BLAS_DIRECT_OUTPUTS outputs:
    then its products run transposed (run_transposed)."""
    return GH < ceil_div(B * GH, BLAS_DIRECT_OUTPUTS - B * align) * MIN_COLUMNS_PER_PART


cdef void run_transposed(TransposedProducts *large, const StepProducts *products,
                         const floating *v, const floating *h, bint separate,
                         Py_ssize_t threads, int64_t kind_of_job) noexcept nogil:
    """A layer's step products for a large batch (see TransposedProducts; ``v`` and
    ``h`` are products.v and products.h, typed), the rows of the weights split over
    ``threads`` threads (``kind_of_job``: run_parts' size)."""
    large.B, large.N, large.Din, large.H = products.B, products.N, products.Din, products.H
    large.parts, large.align, large.separate = threads, products.align, separate
    large.w_ih, large.w_hh, large.init = products.w_ih, products.w_hh, products.init
    large.out_ih, large.out_hh = products.out_ih, products.out_hh
    # v^T (Din, B) and h^T (H, B): element (k, b) at v[b * Din + k]
    if floating is float:
        pack_panels_f32(large.Din, large.B, v, 1, large.Din, <float *>large.packed_v)
        pack_panels_f32(large.H, large.B, h, 1, large.H, <float *>large.packed_h)
        run_parts(transposed_part_f32, large, threads, threads, kind_of_job)
    else:
        pack_panels_f64(large.Din, large.B, v, 1, large.Din, <double *>large.packed_v)
        pack_panels_f64(large.H, large.B, h, 1, large.H, <double *>large.packed_h)
        run_parts(transposed_part_f64, large, threads, threads, kind_of_job)


cdef void transposed_part(const TransposedProducts *large, int part, const floating *w_ih,
                          const floating *w_hh, const floating *init, floating *ct,
                          floating *out_ih, floating *out_hh) noexcept nogil:
    """Rows m0:m1 of the transposed products (TransposedProducts), part ``part`` of
    ``parts``, its bounds on ``align`` rows (a cache line of out) but the last."""
    cdef Py_ssize_t B = large.B, N = large.N, Din = large.Din, H = large.H
    cdef Py_ssize_t m0 = N * part // large.parts // large.align * large.align
    cdef Py_ssize_t m1 = N
    if part + 1 < large.parts:
        m1 = N * (part + 1) // large.parts // large.align * large.align
    if m1 <= m0:
        return
    cdef const floating *packed_v = <const floating *>large.packed_v
    cdef const floating *packed_h = <const floating *>large.packed_h
    ct += m0 * B
    # ct[m0:m1] = w_ih[m0:m1] @ v^T (+ w_hh[m0:m1] @ h^T)            (m1-m0, B)
    packed_product(m1 - m0, B, Din, w_ih + m0 * Din, packed_v, ct, False)
    if not large.separate:
        packed_product(m1 - m0, B, H, w_hh + m0 * H, packed_h, ct, True)
    transpose_add(m1 - m0, B, ct, NULL if init == NULL else init + m0, out_ih + m0, N)
    if large.separate:
        packed_product(m1 - m0, B, H, w_hh + m0 * H, packed_h, ct, False)
        transpose_add(m1 - m0, B, ct, NULL, out_hh + m0, N)


cdef inline void packed_product(Py_ssize_t M, Py_ssize_t B, Py_ssize_t K, const floating *w,
                                const floating *packed, floating *ct,
                                bint accumulate) noexcept nogil:
    # ct (M, B) (+)= w (M, K) @ packed (K, B)
    if floating is float:
        if accumulate:
            gemm_packed_f32(M, B, K, w, K, packed, ct, B)
        else:
            gemm_packed_set_f32(M, B, K, w, K, packed, ct, B)
    else:
        if accumulate:
            gemm_packed_f64(M, B, K, w, K, packed, ct, B)
        else:
            gemm_packed_set_f64(M, B, K, w, K, packed, ct, B)


cdef inline void transpose_add(Py_ssize_t M, Py_ssize_t B, const floating *ct,
                               const floating *add, floating *out, Py_ssize_t N) noexcept nogil:
    # out[:, 0:M] (B rows, leading dimension N) = ct (M, B)^T + add (M,) per column
    if floating is float:
        transpose_add_f32(M, B, ct, B, add, out, N)
    else:
        transpose_add_f64(M, B, ct, B, add, out, N)


cdef void transposed_part_f32(void *job, int part) noexcept nogil:
    cdef TransposedProducts *large = <TransposedProducts *>job
    transposed_part(large, part, <const float *>large.w_ih, <const float *>large.w_hh,
                    <const float *>large.init, <float *>large.ct, <float *>large.out_ih,
                    <float *>large.out_hh)


cdef void transposed_part_f64(void *job, int part) noexcept nogil:
    cdef TransposedProducts *large = <TransposedProducts *>job
    transposed_part(large, part, <const double *>large.w_ih, <const double *>large.w_hh,
                    <const double *>large.init, <double *>large.ct, <double *>large.out_ih,
                    <double *>large.out_hh)


cdef void step_products_part(const StepProducts *products, int part, floating *out_ih,
                             floating *out_hh) noexcept nogil:
    """Columns n0:n1 of the step products (see StepProducts; ``out_ih``, ``out_hh``
    are its arrays, typed): part ``part`` of ``parts``, its bounds on ``align``
    columns (a cache line) but the last."""
    cdef Py_ssize_t B = products.B, N = products.N, Din = products.Din, H = products.H
    cdef Py_ssize_t n0 = 0, n1 = N, b
    cdef const floating *init = <const floating *>products.init
    if products.parts > 1:
        n0 = N * part // products.parts // products.align * products.align
        if part + 1 < products.parts:
            n1 = N * (part + 1) // products.parts // products.align * products.align
    if n1 <= n0:
        return
    for b in range(B):
        if init != NULL:
            memcpy(out_ih + b * N + n0, init + n0, (n1 - n0) * sizeof(floating))
        else:
            memset(out_ih + b * N + n0, 0, (n1 - n0) * sizeof(floating))
            memset(out_hh + b * N + n0, 0, (n1 - n0) * sizeof(floating))
    # out (B, n0:n1) += v (B, K) @ w[n0:n1].T,  w (N, K)
    if products.columns != NULL:   # v one-hot: the column of w at each row's 1
        for b in range(B):
            add_column(n1 - n0, Din, <const floating *>products.w_ih + n0 * Din
                       + products.columns[b], out_ih + b * N + n0)
    else:
        gemm(NoTrans, Trans, B, n1 - n0, Din, 1, <const floating *>products.v, Din,
             <const floating *>products.w_ih + n0 * Din, Din, 1, out_ih + n0, N)
    gemm(NoTrans, Trans, B, n1 - n0, H, 1, <const floating *>products.h, H,
         <const floating *>products.w_hh + n0 * H, H, 1, out_hh + n0, N)


cdef inline void add_column(Py_ssize_t n, Py_ssize_t stride, const floating *column,
                            floating *out) noexcept nogil:
    # out[i] += column[i * stride], i < n: a product's sum of one term (the others are
    # zeros), added once as BLAS adds the sum
    cdef Py_ssize_t i
    for i in range(n):
        out[i] += column[i * stride]


cdef void step_products_part_f32(void *job, int part) noexcept nogil:
    cdef StepProducts *products = <StepProducts *>job
    step_products_part(products, part, <float *>products.out_ih, <float *>products.out_hh)


cdef void step_products_part_f64(void *job, int part) noexcept nogil:
    cdef StepProducts *products = <StepProducts *>job
    step_products_part(products, part, <double *>products.out_ih,
                       <double *>products.out_hh)


cdef inline void step_rnn(Py_ssize_t B, Py_ssize_t H, int relu, const floating *pre,
                          const floating *bias, const floating *h_prev,
                          floating *h_out) noexcept nogil:
    if floating is float:
        rnn_step_forward_f32(B, H, relu, pre, bias, h_prev, h_out, NULL, 0)
    else:
        rnn_step_forward_f64(B, H, relu, pre, bias, h_prev, h_out, NULL, 0)


cdef inline void step_lstm(Py_ssize_t B, Py_ssize_t H, floating *gates, const floating *bias,
                           const floating *h_prev, floating *h_out, const floating *c_prev,
                           floating *c_out) noexcept nogil:
    if floating is float:
        lstm_step_forward_f32(B, H, gates, bias, h_prev, h_out, c_prev, c_out, NULL, 0)
    else:
        lstm_step_forward_f64(B, H, gates, bias, h_prev, h_out, c_prev, c_out, NULL, 0)


cdef inline void step_gru(Py_ssize_t B, Py_ssize_t H, floating *gates, const floating *hh,
                          const floating *b_ih, const floating *b_hh, const floating *h_prev,
                          floating *h_out) noexcept nogil:
    if floating is float:
        gru_step_forward_f32(B, H, gates, hh, b_ih, b_hh, NULL, h_prev, h_out, NULL, 0)
    else:
        gru_step_forward_f64(B, H, gates, hh, b_ih, b_hh, NULL, h_prev, h_out, NULL, 0)
