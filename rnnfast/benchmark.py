"""Benchmark rnnfast's RNN / LSTM / GRU kernels against PyTorch, JAX, ONNX Runtime and
the NumPy reference.

Shape legend: T = steps, B = batch, D = input features, H = hidden units, G = stacked
gates (RNN 1, LSTM 4, GRU 3).

Modes (``--modes``), float32 unless ``--dtype`` says otherwise, every implementation
with the same thread count:

* ``inference``: one forward pass per cell and shape (rnnfast ``training=False``);
  rnnfast against the fastest of PyTorch, JAX and ONNX Runtime.
* ``training``: forward and backpropagation through time from a random ``dy``, every
  parameter gradient, ``dx`` and the initial-state gradients; rnnfast against the
  faster of PyTorch and JAX, and the share of the machine's sgemm peak rnnfast
  reaches, counting 3x the forward's matrix FLOPs ``2*T*B*G*H*(D + H)``.
* ``stream``: ``layer.stream(1)`` fed one step per call from Python (B = 1, D = H),
  ``--stream-steps`` calls per measurement; microseconds per call against PyTorch
  (``module(x_t, state)`` under ``torch.inference_mode()``), a jitted JAX step and an
  ONNX Runtime session of a one-step model, each feeding its state back.
* ``memory``: peak memory of one forward + backward, rnnfast and PyTorch, and of
  rnnfast's ``training=False`` forward at T and 10*T steps, each measured in a fresh
  process (``rnnfast._bench_memory`` describes the method).
* ``scaling``: time against T (``--lengths`` at ``--scaling-shape``) and against the
  thread count (``--threads-list``, by default 1, 2, 4, ... up to 16 or the usable
  CPUs), training and inference.

How each implementation runs a cell is in ``rnnfast._bench_peers``; the peers are
imported on first use, and a missing one leaves its columns empty (one line on stderr
says so and how to install it). The sgemm peak is measured before the modes and
again after each, the highest throughput counting (other work on the machine can only
lower it; a row above 100% shows that every measurement was disturbed):
``scipy.linalg.blas.sgemm`` (the OpenBLAS rnnfast calls through
``scipy.linalg.cython_blas``) on n x n float32 matrices, best of several, at the
benchmark's thread count, in GFLOP/s.

Timing. Each measurement is the best wall-clock time of several calls after a warm-up
(which also compiles JAX's functions), repeated until ``--min-time`` seconds were
spent and ``--min-runs`` runs were made, the implementations taking turns of about
20 ms so that other work on the machine hits them alike. Thread counts: ``torch.set_num_threads``,
``threadpoolctl`` for the BLAS and OpenMP pools (rnnfast's among them), ONNX
Runtime's ``intra_op_num_threads``; XLA sizes JAX's pool once, when its backend
starts, so JAX runs only at the thread count it started with. Before timing, every
peer's outputs (inference, stream) or gradients (training) are compared with
rnnfast's; a difference above 1e-3 (float32) warns.

OpenMP. rnnfast loads its OpenMP runtime (``libgomp.so.1``) with a passive wait
policy unless ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is set (``rnnfast._openmp``).
PyTorch ships a runtime of the same name, and where rnnfast's was loaded first (here
always: the benchmark is part of rnnfast) PyTorch runs on it, wait policy included:
its several short parallel regions per time step then pay for waking sleeping
threads, most on a busy machine (measured on 2 busy cores, B = 16, H = 64, two
threads: 5-10x slower than on its own spinning runtime). The machine info records
the runtime PyTorch got (``torch_openmp``, ``torch_own_openmp``), and a line on
stderr says when PyTorch runs on rnnfast's passive runtime. So that both libraries
run alike, the command runs itself again with ``GOMP_SPINCOUNT=300000`` in that case:
GNU OpenMP's own default when no policy is set, PyTorch's usual condition (waiting
threads spin for a few milliseconds, then sleep). Not ``OMP_WAIT_POLICY=ACTIVE``:
its threads spin for minutes after every region, taking a core from the BLAS, JAX
and ONNX Runtime pools that run next (measured: the 2-thread sgemm at half speed
after a PyTorch call, and training at B = 16, H = 64 up to 1.7x slower for both
rnnfast and PyTorch). Setting ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` yourself
keeps your choice, and ``--threads 1`` takes OpenMP out of the comparison.
JAX and ONNX Runtime keep thread pools of their own.

Output: a line describing the machine, the sgemm peak, and one Markdown table per
mode whose rows say whether rnnfast meets the mode's target there (✓ / ✗, — where a
peer is missing); ``--json PATH`` writes everything, ``--plot PNG`` draws the
speed-ups against H. JSON layout:

* ``machine``: CPU, thread counts, library versions, BLAS/OpenMP pools, environment,
  load averages before and after, ``round_trip_us`` (before the modes and after each:
  microseconds for one thread's write to reach another and come back, null where the
  second thread found no free core; on a VM it grows several times where the host
  moves the vCPUs far apart, and work shared between threads slows); ``settings``:
  what was run;
  ``sgemm``: ``gflops``
  (the highest of ``gflops_measured``, before the modes and after each), ``n``,
  ``threads``, ``routine``; ``targets``: mode -> rule.
* ``rows``: one dict per measurement, each with ``mode``, ``cell``, ``shape``
  [T, B, D, H], ``dtype`` and ``threads``; then

  - inference, training: ``times_ms`` {implementation: best ms, null where not run},
    ``runs``, ``max_diff`` {peer: difference from rnnfast}, ``best_peer``,
    ``speedup`` (best peer's time / rnnfast's), ``speedups`` {peer: ...},
    ``gflops`` (rnnfast), ``sgemm_fraction``, ``target``, ``target_met``
    (true, false, or null where it cannot be decided);
  - stream: ``times_us`` per call instead of ``times_ms``, no FLOP counts;
  - memory: ``run`` (training / inference), ``peak_mib`` {implementation: MiB},
    ``outputs_mib``; training: ``ratios`` {peer: its peak / rnnfast's}; inference:
    ``beyond_outputs_mib`` and ``long`` (the same at 10*T), ``target``,
    ``target_met``;
  - scaling: ``sweep`` (``length`` or ``threads``), ``run``, ``times_ms``; length:
    ``rnnfast_us_per_step``, ``per_step_vs_shortest``, ``target``, ``target_met``;
    threads: ``speedup_vs_first`` {implementation: time at the first count / time}.

Run it with rnnfast installed (``pip install "rnnfast[bench]"`` adds the peers)::

    rnnfast bench                                   # short: inference and training
    rnnfast bench --full                            # every mode and standard shape
    python bench/bench_kernels.py                   # the same, full by default
    python bench/bench_kernels.py --modes stream --stream-hidden 32,64 --threads 1
    python bench/bench_kernels.py --cells lstm --shapes 100,64,256,256 \\
        --json results.json --plot speedups.png
"""

import argparse
import math
import os
import sys
import time
import warnings

import numpy as np

from . import _bench_memory, _bench_report, _helpers
from ._argtypes import positive_float, positive_int, shape as shape_argument
from ._bench_machine import (TimingSettings, limited_threads, load_average, machine_info,
                             openmp_runtimes, sgemm_peak, time_best, time_interleaved,
                             torch_has_own_openmp, usable_cpus, write_json)
from ._bench_peers import (CELLS, PEERS, as_numpy, import_peer, jax_threads, make_problem,
                           missing_peer_message, peer_runs_at, runner, stream_callable)
from ._openmp import WAIT_POLICY_VARIABLES

__all__ = ["CELLS", "PEERS", "MODES", "DEFAULT_CELLS", "SHAPES", "QUICK_SHAPES",
           "TimingSettings", "BenchmarkConfig", "machine_info", "load_average",
           "make_problem", "time_interleaved", "time_best", "sgemm_peak", "judge_speed_row",
           "speed_row",
           "stream_row", "run_benchmark", "format_tables", "add_arguments",
           "run_from_arguments", "main"]

CELL_ALIASES = {"rnn": "rnn_tanh", "tanh": "rnn_tanh", "relu": "rnn_relu"}
DEFAULT_CELLS = ("rnn_tanh", "lstm", "gru")

MODES = ("inference", "training", "stream", "memory", "scaling")
QUICK_MODES = ("inference", "training")
# the peers each timed mode compares with
MODE_PEERS = {"inference": PEERS, "training": ("torch", "jax"), "stream": PEERS}

# (T, B, D, H)
SHAPES = ((100, 1, 32, 32), (100, 16, 64, 64), (100, 32, 128, 128),
          (100, 64, 256, 256), (50, 64, 512, 512))
QUICK_SHAPES = SHAPES[:2]
STREAM_HIDDEN = (32, 64, 128, 256)
QUICK_STREAM_HIDDEN = (32, 64)
STREAM_STEPS = 100
SCALING_SHAPE = (100, 32, 128, 128)
QUICK_SCALING_SHAPE = (50, 16, 64, 64)
SCALING_LENGTHS = (50, 100, 200, 400)
QUICK_SCALING_LENGTHS = (25, 50, 100)
MAX_SCALING_THREADS = 16
SGEMM_SIZE = 2048
QUICK_SGEMM_SIZE = 1024

REFERENCE_MAX_HIDDEN = 64
# a 1-minute load average above this many per usable CPU when the benchmark starts
# means other work is running (or just ran) on the machine
BUSY_LOAD_PER_CPU = 0.5
# GNU OpenMP's spin count when neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT is set
# (libgomp's env.c), PyTorch's usual condition on its own runtime
GNU_OPENMP_DEFAULT_SPINCOUNT = "300000"
# a peer whose outputs or gradients differ from rnnfast's by more than this warns
MISMATCH_TOLERANCE = {np.dtype(np.float32): 1e-3, np.dtype(np.float64): 1e-9}


def default_threads_list():
    """1, 2, 4, ... up to 16 or the usable CPUs, whichever is fewer."""
    limit = min(MAX_SCALING_THREADS, usable_cpus() or 1)
    return tuple(2 ** k for k in range(int(math.log2(limit)) + 1))


class BenchmarkConfig:
    """What one benchmark run measures.

    Parameters
    ----------
    modes : sequence of names in ``MODES``
    cells : sequence of keys of ``CELLS``
    shapes : sequence of (T, B, D, H), for inference, training and memory
    threads : int, threads for every implementation (default: the usable CPUs)
    dtype : float32 or float64
    settings : TimingSettings
    peers : sequence of names in ``PEERS`` to compare with (those installed run)
    use_reference : bool, time ``rnnfast.reference`` where H <= ``reference_max_hidden``
    stream_hidden : sequence of H for the stream mode (B = 1, D = H)
    stream_steps : int, calls per stream measurement
    scaling_shape : (T, B, D, H) of the scaling mode (T is replaced by each length)
    lengths : sequence of T for the length sweep
    threads_list : sequence of thread counts for the thread sweep
    sgemm_size : int, n of the n x n x n sgemm that measures the peak
    """

    def __init__(self, *, modes=MODES, cells=DEFAULT_CELLS, shapes=SHAPES, threads=None,
                 dtype=np.float32, settings=None, peers=PEERS, use_reference=True,
                 reference_max_hidden=REFERENCE_MAX_HIDDEN, stream_hidden=STREAM_HIDDEN,
                 stream_steps=STREAM_STEPS, scaling_shape=SCALING_SHAPE,
                 lengths=SCALING_LENGTHS, threads_list=None, sgemm_size=SGEMM_SIZE):
        unknown = [m for m in modes if m not in MODES] + [c for c in cells if c not in CELLS]
        unknown += [p for p in peers if p not in PEERS]
        if unknown:
            raise ValueError(f"unknown modes, cells or peers {unknown}; modes are "
                             f"{MODES}, cells {tuple(CELLS)}, peers {PEERS}")
        if np.dtype(dtype) not in MISMATCH_TOLERANCE:
            raise ValueError(f"dtype must be float32 or float64, got {np.dtype(dtype).name}")
        self.modes = tuple(modes)
        self.cells = tuple(cells)
        self.shapes = tuple(tuple(s) for s in shapes)
        self.threads = threads or usable_cpus()
        self.dtype = np.dtype(dtype)
        self.settings = settings or TimingSettings()
        self.peers = tuple(peers)
        self.use_reference = use_reference
        self.reference_max_hidden = reference_max_hidden
        self.stream_hidden = tuple(stream_hidden)
        self.stream_steps = stream_steps
        self.scaling_shape = tuple(scaling_shape)
        self.lengths = tuple(lengths)
        self.threads_list = tuple(threads_list or default_threads_list())
        self.sgemm_size = sgemm_size

    def installed_peers(self):
        """The requested peers that are installed (imports them)."""
        return tuple(name for name in self.peers if import_peer(name) is not None)

    def peers_at(self, threads, mode):
        """The peers that run ``mode`` at ``threads`` threads."""
        return tuple(name for name in MODE_PEERS[mode]
                     if name in self.peers and peer_runs_at(name, threads))

    def most_threads(self):
        """The largest thread count the run uses."""
        return max((self.threads, *(self.threads_list if "scaling" in self.modes else ())))

    def as_dict(self):
        return {**self.settings.as_dict(), "modes": list(self.modes),
                "cells": list(self.cells), "shapes": [list(s) for s in self.shapes],
                "threads": self.threads, "dtype": self.dtype.name,
                "peers": list(self.peers),
                "reference_max_hidden": self.reference_max_hidden if self.use_reference
                else None,
                "stream_hidden": list(self.stream_hidden), "stream_steps": self.stream_steps,
                "scaling_shape": list(self.scaling_shape), "lengths": list(self.lengths),
                "threads_list": list(self.threads_list), "sgemm_size": self.sgemm_size}


# ----------------------------------------------------------------------------- rows

def forward_matrix_flops(cell, shape):
    """FLOPs of the forward's matrix products: 2*T*B*G*H*(D + H)."""
    T, B, D, H = shape
    return 2 * T * B * CELLS[cell][2] * H * (D + H)


def _largest_difference(ours, theirs):
    """max |theirs - ours| / max(1, max |ours|), in float64."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.max(np.abs(theirs - ours)) / max(1.0, float(np.max(np.abs(ours)))))


def _check_agreement(label, differences, dtype):
    """Warn about every peer whose difference from rnnfast exceeds the tolerance."""
    for name, difference in differences.items():
        if difference > MISMATCH_TOLERANCE[dtype]:
            warnings.warn(f"{label}: {name} differs from rnnfast by {difference:.3g}",
                          RuntimeWarning, stacklevel=3)


def _differences(mode, runners):
    """{peer: difference from rnnfast}: inference, of ``y``; training, the largest
    over all gradients (each relative to max(1, its largest magnitude))."""
    peers = [name for name in runners if name in PEERS]
    if mode == "inference":
        ours = as_numpy(runners["rnnfast"].infer())
        return {name: _largest_difference(ours, as_numpy(runners[name].infer()))
                for name in peers}
    ours = runners["rnnfast"].gradients()
    differences = {}
    for name in peers:
        theirs = runners[name].gradients()
        differences[name] = max(_largest_difference(ours[k], theirs[k]) for k in ours)
    return differences


def _best_peer(times, peers):
    """``(name, time)`` of the fastest peer timed, or (None, None)."""
    timed = {name: times[name] for name in peers if times.get(name) is not None}
    if not timed:
        return None, None
    name = min(timed, key=timed.get)
    return name, timed[name]


def judge_speed_row(row, sgemm_gflops):
    """Set an inference or training row's ``sgemm_fraction`` (None where
    ``sgemm_gflops`` is None), ``target`` and ``target_met``."""
    row["sgemm_fraction"] = None if sgemm_gflops is None else row["gflops"] / sgemm_gflops
    row["target"], row["target_met"] = _bench_report.speed_target(
        row["mode"], row["shape"][3], row["speedup"], row["sgemm_fraction"])
    return row


def speed_row(mode, cell, shape, config, threads, sgemm_gflops=None, with_reference=True):
    """Time one cell at one shape in ``mode`` (``"inference"`` or ``"training"``):
    rnnfast, the peers that run at ``threads`` and, for small H, the reference.

    Returns the row (see the module docstring), judged against ``sgemm_gflops``
    (see :func:`judge_speed_row`).
    """
    problem = make_problem(cell, shape, config.dtype.type)
    names = ["rnnfast", *config.peers_at(threads, mode)]
    if with_reference and config.use_reference and shape[3] <= config.reference_max_hidden:
        names.append("reference")
    runners = {name: runner(name, problem, threads) for name in names}
    runners = {name: r for name, r in runners.items()
               if r is not None and (mode == "inference" or r.train is not None)}
    differences = _differences(mode, runners)
    _check_agreement(f"{mode} {cell} {tuple(shape)}", differences, config.dtype)
    candidates = {name: (r.infer, None) if mode == "inference" else (r.train, r.reset)
                  for name, r in runners.items()}
    times = time_interleaved(candidates, config.settings)
    columns = ["rnnfast", *MODE_PEERS[mode], "reference"]
    times_ms = {name: times[name][0] * 1e3 if name in times else None for name in columns}
    best_peer, best_ms = _best_peer(times_ms, MODE_PEERS[mode])
    speedup = None if best_ms is None else best_ms / times_ms["rnnfast"]
    gflops = ((3 if mode == "training" else 1) * forward_matrix_flops(cell, shape)
              / (times_ms["rnnfast"] * 1e-3) / 1e9)
    return judge_speed_row({
        "mode": mode, "cell": cell, "shape": list(shape), "dtype": config.dtype.name,
        "threads": threads, "times_ms": times_ms,
        "runs": {name: times[name][1] for name in times},
        "max_diff": differences, "best_peer": best_peer, "speedup": speedup,
        "speedups": {name: times_ms[name] / times_ms["rnnfast"] for name in MODE_PEERS[mode]
                     if times_ms[name] is not None},
        "gflops": gflops,
    }, sgemm_gflops)


def stream_row(cell, hidden, config, threads):
    """Microseconds per ``stream(x_t)`` call of rnnfast and the peers: B = 1, D = H =
    ``hidden``, ``config.stream_steps`` calls per measurement."""
    steps = config.stream_steps
    problem = make_problem(cell, (steps, 1, hidden, hidden), config.dtype.type)
    runs = {name: stream_callable(name, problem, threads)
            for name in ("rnnfast", *config.peers_at(threads, "stream"))}
    runs = {name: run for name, run in runs.items() if run is not None}
    outputs = {name: np.stack([as_numpy(y).reshape(-1) for y in run()])
               for name, run in runs.items()}
    differences = {name: _largest_difference(outputs["rnnfast"], outputs[name])
                   for name in runs if name != "rnnfast"}
    _check_agreement(f"stream {cell} H={hidden}", differences, config.dtype)
    times = time_interleaved({name: (run, None) for name, run in runs.items()},
                             config.settings)
    times_us = {name: times[name][0] / steps * 1e6 if name in times else None
                for name in ("rnnfast", *PEERS)}
    speedups = {name: times_us[name] / times_us["rnnfast"] for name in PEERS
                if times_us[name] is not None}
    best_peer, best_us = _best_peer(times_us, PEERS)
    target, met = _bench_report.stream_target(hidden, times_us["rnnfast"], speedups)
    return {
        "mode": "stream", "cell": cell, "shape": [steps, 1, hidden, hidden],
        "dtype": config.dtype.name, "threads": threads, "times_us": times_us,
        "runs": {name: times[name][1] for name in times}, "max_diff": differences,
        "best_peer": best_peer,
        "speedup": None if best_us is None else best_us / times_us["rnnfast"],
        "speedups": speedups, "target": target, "target_met": met,
    }


def _scaling_row(row, sweep):
    """A speed row recast as a scaling row of ``sweep``."""
    kept = ("cell", "shape", "dtype", "threads", "runs", "max_diff")
    return {"mode": "scaling", "sweep": sweep, "run": row["mode"],
            **{key: row[key] for key in kept},
            "times_ms": {name: ms for name, ms in row["times_ms"].items()
                         if name != "reference"}}


def _length_rows(cell, config):
    """Training and inference at each T of ``config.lengths``: the time per step
    against the shortest T's."""
    _, B, D, H = config.scaling_shape
    for run in ("training", "inference"):
        shortest = None
        for T in config.lengths:
            row = _scaling_row(speed_row(run, cell, (T, B, D, H), config, config.threads,
                                         with_reference=False), "length")
            per_step = row["times_ms"]["rnnfast"] * 1e3 / T
            shortest = shortest or per_step
            row["rnnfast_us_per_step"] = per_step
            row["per_step_vs_shortest"] = per_step / shortest
            row["target"], row["target_met"] = _bench_report.length_target(
                row["per_step_vs_shortest"])
            yield row


def _thread_rows(cell, config):
    """Training and inference at each thread count of ``config.threads_list``: each
    implementation's speed-up over its time at the first count."""
    for run in ("training", "inference"):
        first = None
        for threads in config.threads_list:
            with limited_threads(threads, "torch" in config.peers):
                row = _scaling_row(speed_row(run, cell, config.scaling_shape, config, threads,
                                             with_reference=False), "threads")
            first = first or row["times_ms"]
            row["speedup_vs_first"] = {
                name: first[name] / ms for name, ms in row["times_ms"].items()
                if ms is not None and first.get(name) is not None}
            yield row


def _memory_rows(cell, shape, config):
    impls = ("rnnfast", "torch") if "torch" in config.installed_peers() else ("rnnfast",)
    yield _bench_memory.training_row(cell, shape, config.dtype, config.threads, impls)
    row = _bench_memory.inference_row(cell, shape, config.dtype, config.threads)
    row["target"], row["target_met"] = _bench_report.memory_target(
        row["beyond_outputs_mib"], row["long"]["beyond_outputs_mib"])
    yield row


def _mode_rows(mode, config, sgemm_gflops):
    """Every row of ``mode``, one at a time."""
    for cell in config.cells:
        if mode in ("inference", "training"):
            for shape in config.shapes:
                yield speed_row(mode, cell, shape, config, config.threads, sgemm_gflops)
        elif mode == "stream":
            for hidden in config.stream_hidden:
                yield stream_row(cell, hidden, config, config.threads)
        elif mode == "memory":
            for shape in config.shapes:
                yield from _memory_rows(cell, shape, config)
        else:
            yield from _length_rows(cell, config)
    if mode == "scaling":
        for cell in config.cells:
            yield from _thread_rows(cell, config)


def _round_trip_us(tries=5):
    """rnnfast._helpers.round_trip_us, tried again 0.1 s later while the second thread
    finds no free core (a library's thread pool may still spin after its last call);
    None if it never does."""
    for _ in range(tries):
        trip = _helpers.round_trip_us()
        if trip is not None:
            return trip
        time.sleep(0.1)
    return None


def run_benchmark(config, progress=None):
    """Measure the sgemm peak, then each mode of ``config`` in turn, measuring the
    peak again after each; the rows are judged against the highest peak.

    Returns ``{"machine", "settings", "sgemm", "targets", "rows"}`` (see the module
    docstring); ``progress``, if given, is called with each finished row.
    """
    peers = config.installed_peers()
    if "jax" in peers:
        jax_threads(config.threads)      # XLA's pool is sized once: at the run's count
    rows = []
    with limited_threads(config.threads, "torch" in peers):
        info = machine_info(config.threads, peers)
        info["round_trip_us"] = [_round_trip_us()]
        peaks = [sgemm_peak(config.threads, config.settings, config.sgemm_size)]
        for mode in config.modes:
            for row in _mode_rows(mode, config, max(p["gflops"] for p in peaks)):
                rows.append(row)
                if progress is not None:
                    progress(row)
            info["round_trip_us"].append(_round_trip_us())
            peaks.append(sgemm_peak(config.threads, config.settings, config.sgemm_size))
    info["load_average_after"] = load_average()
    measured = [p["gflops"] for p in peaks]
    sgemm = dict(peaks[0], gflops=max(measured), gflops_measured=measured)
    for row in rows:
        if row["mode"] in ("inference", "training"):
            judge_speed_row(row, sgemm["gflops"])
    return {"machine": info, "settings": config.as_dict(), "sgemm": sgemm,
            "targets": {mode: _bench_report.TARGETS[mode] for mode in config.modes},
            "rows": rows}


def format_tables(results):
    """The machine line, the sgemm peak and one Markdown table per mode."""
    return _bench_report.format_tables(results, PEERS)


# ----------------------------------------------------------------------------- command line

def _positive_int_list(text):
    try:
        return tuple(positive_int(part) for part in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, "
                                          f"got {text!r}") from None


def _parse_cell(text):
    cell = CELL_ALIASES.get(text, text)
    if cell not in CELLS:
        raise argparse.ArgumentTypeError(f"unknown cell {text!r}; choose from "
                                         f"{', '.join(CELLS)} (or rnn = rnn_tanh)")
    return cell


DESCRIPTION = ("Time rnnfast's RNN/LSTM/GRU kernels against PyTorch, JAX, ONNX Runtime and "
               "the NumPy reference: inference, training, streaming, memory and scaling.")


def build_parser(prog="bench_kernels.py"):
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    add_arguments(parser)
    return parser


def add_arguments(parser, short_by_default=False):
    """The benchmark's options on ``parser``. ``short_by_default``: the short run
    (``--quick``) is the default and ``--full`` asks for every mode and shape."""
    parser.add_argument("--modes", nargs="+", choices=MODES, metavar="MODE",
                        help=f"modes to run, from {', '.join(MODES)} (default: all; "
                             f"--quick: {' '.join(QUICK_MODES)})")
    parser.add_argument("--cells", nargs="+", type=_parse_cell, metavar="CELL",
                        help=f"cells to run (default: {' '.join(DEFAULT_CELLS)}; "
                             f"also rnn_relu)")
    parser.add_argument("--shapes", nargs="+", type=shape_argument, metavar="T,B,D,H",
                        help="shapes of inference, training and memory (default: the "
                             "five standard shapes; --quick: the first two)")
    parser.add_argument("--threads", type=positive_int, default=usable_cpus(),
                        help="threads for every implementation (default: %(default)s)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="dtype of inputs and parameters (default: %(default)s)")
    if short_by_default:
        parser.add_argument("--full", dest="quick", action="store_false",
                            help="every mode and standard shape, longer measurements "
                                 "(minutes)")
        parser.set_defaults(quick=True)
    else:
        parser.add_argument("--quick", action="store_true",
                            help="short run: inference and training at the two smallest "
                                 "shapes, few repeats")
    parser.add_argument("--peers", nargs="*", choices=PEERS, default=PEERS, metavar="PEER",
                        help=f"peers to compare with (default: {' '.join(PEERS)}; "
                             "--peers alone: rnnfast only)")
    parser.add_argument("--min-time", type=positive_float,
                        help="seconds to spend per measurement (default 0.3, --quick 0.02)")
    parser.add_argument("--min-runs", type=positive_int,
                        help="timed runs per measurement at least (default 3, --quick 2)")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference")
    parser.add_argument("--reference-max-hidden", type=positive_int,
                        default=REFERENCE_MAX_HIDDEN,
                        help="run the reference only where H <= this (default: %(default)s)")
    parser.add_argument("--stream-hidden", type=_positive_int_list, metavar="H,H,...",
                        help=f"hidden sizes of the stream mode (default: "
                             f"{','.join(map(str, STREAM_HIDDEN))}; --quick: "
                             f"{','.join(map(str, QUICK_STREAM_HIDDEN))})")
    parser.add_argument("--stream-steps", type=positive_int, default=STREAM_STEPS,
                        help="stream calls per measurement (default: %(default)s)")
    parser.add_argument("--scaling-shape", type=shape_argument, metavar="T,B,D,H",
                        help=f"shape of the scaling mode (default: "
                             f"{','.join(map(str, SCALING_SHAPE))}; --quick: "
                             f"{','.join(map(str, QUICK_SCALING_SHAPE))})")
    parser.add_argument("--lengths", type=_positive_int_list, metavar="T,T,...",
                        help=f"lengths of the scaling mode (default: "
                             f"{','.join(map(str, SCALING_LENGTHS))}; --quick: "
                             f"{','.join(map(str, QUICK_SCALING_LENGTHS))})")
    parser.add_argument("--threads-list", type=_positive_int_list, metavar="N,N,...",
                        help="thread counts of the scaling mode (default: 1, 2, 4, ... up "
                             f"to {MAX_SCALING_THREADS} or the usable CPUs: "
                             f"{','.join(map(str, default_threads_list()))})")
    parser.add_argument("--json", metavar="PATH", help="write all results as JSON to PATH")
    parser.add_argument("--plot", metavar="PNG",
                        help="draw rnnfast's speed-up over the best peer against H "
                             "(needs matplotlib)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def config_from_arguments(args):
    """The :class:`BenchmarkConfig` the parsed options describe."""
    settings = TimingSettings.quick() if args.quick else TimingSettings()
    if args.min_time is not None:
        settings.min_time = args.min_time
    if args.min_runs is not None:
        settings.min_runs = args.min_runs
    quick = args.quick
    return BenchmarkConfig(
        modes=args.modes or (QUICK_MODES if quick else MODES),
        cells=args.cells or DEFAULT_CELLS,
        shapes=args.shapes or (QUICK_SHAPES if quick else SHAPES),
        threads=args.threads, dtype=args.dtype, settings=settings, peers=args.peers,
        use_reference=not args.no_reference,
        reference_max_hidden=args.reference_max_hidden,
        stream_hidden=args.stream_hidden or (QUICK_STREAM_HIDDEN if quick else STREAM_HIDDEN),
        stream_steps=args.stream_steps,
        scaling_shape=args.scaling_shape or (QUICK_SCALING_SHAPE if quick else SCALING_SHAPE),
        lengths=args.lengths or (QUICK_SCALING_LENGTHS if quick else SCALING_LENGTHS),
        threads_list=args.threads_list,
        sgemm_size=QUICK_SGEMM_SIZE if quick else SGEMM_SIZE)


def _report_peer_notes(config):
    """One line on stderr per requested peer that will leave its columns empty or run
    in conditions other than its own."""
    for name in config.peers:
        if import_peer(name) is None:
            print(missing_peer_message(name), file=sys.stderr)
        elif name == "jax" and not peer_runs_at(name, config.threads):
            print(f"jax: its CPU thread pool was started with {jax_threads(config.threads)} "
                  f"threads in this process, not {config.threads}: its columns stay empty",
                  file=sys.stderr)
        elif name == "onnxruntime" and config.dtype != np.float32:
            print("onnxruntime: its RNN/LSTM/GRU kernels are float32 only, its columns "
                  "stay empty", file=sys.stderr)
        elif (name == "torch" and config.most_threads() > 1
              and torch_has_own_openmp(import_peer(name)) is False
              and not any(variable in os.environ for variable in WAIT_POLICY_VARIABLES)):
            print(f"torch: runs on rnnfast's OpenMP runtime ({', '.join(openmp_runtimes())}),"
                  f" whose threads sleep when they wait, not on its own spinning one; "
                  f"GOMP_SPINCOUNT={GNU_OPENMP_DEFAULT_SPINCOUNT} gives both libraries "
                  f"GNU OpenMP's default spin",
                  file=sys.stderr)


def rerun_on_equal_openmp(peers, threads):
    """Run this command again with ``GOMP_SPINCOUNT=300000`` where PyTorch (one of
    ``peers``) would otherwise share rnnfast's passive OpenMP runtime on up to
    ``threads`` threads: the comparison then runs both on the same runtime with
    PyTorch's usual policy, GNU OpenMP's default (see the module docstring). Does
    nothing when a wait policy is set already, when PyTorch runs on its own runtime or
    on one thread, or where Python does not record its command line (before 3.10)."""
    torch = import_peer("torch") if "torch" in peers else None
    if (torch is None or threads < 2 or not hasattr(sys, "orig_argv")
            or any(variable in os.environ for variable in WAIT_POLICY_VARIABLES)
            or torch_has_own_openmp(torch) is not False):
        return
    print(f"rerunning with GOMP_SPINCOUNT={GNU_OPENMP_DEFAULT_SPINCOUNT}, so that PyTorch, "
          "which shares rnnfast's OpenMP runtime here, keeps its usual wait policy",
          file=sys.stderr, flush=True)
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]],
              {**os.environ, "GOMP_SPINCOUNT": GNU_OPENMP_DEFAULT_SPINCOUNT})


def _write_plot(path, results):
    from .plot import PlotUnavailable

    try:
        _bench_report.plot_speedups(path, results)
    except PlotUnavailable as exc:
        print(f"no plot: {exc}", file=sys.stderr)


def main(argv=None, rerun=False):
    """Command-line entry point; returns the exit status. ``rerun``: see
    :func:`run_from_arguments`."""
    parser = build_parser()
    return run_from_arguments(parser.parse_args(argv), rerun=rerun)


def run_from_arguments(args, rerun=False):
    """Run the benchmark the parsed options describe; print the tables; 0.

    ``rerun=True`` (for the command line only: it replaces the process) lets the
    command run itself again where PyTorch would share rnnfast's passive OpenMP
    runtime (see the module docstring)."""
    config = config_from_arguments(args)
    if rerun:
        rerun_on_equal_openmp(config.peers, config.most_threads())
    _report_peer_notes(config)

    def progress(row):
        if not args.quiet:
            print("  " + _bench_report.describe_row(row), file=sys.stderr, flush=True)

    results = run_benchmark(config, progress)
    machine = results["machine"]
    load = machine["load_average"]
    if load and load[0] > BUSY_LOAD_PER_CPU * (machine["usable_cpus"] or 1):
        print(f"warning: the 1-minute load average was {load[0]:.2f} when the benchmark "
              "started; other work on the machine skews the timings", file=sys.stderr)
    print(format_tables(results))
    if args.json:
        write_json(args.json, results)
    if args.plot:
        _write_plot(args.plot, results)
    return 0


if __name__ == "__main__":
    sys.exit(main(rerun=True))
