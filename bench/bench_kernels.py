"""Benchmark rnnfast's RNN / LSTM / GRU kernels against PyTorch and the NumPy reference.

For each cell and shape (T, B, D, H) this times

* inference: one forward call with ``training=False`` (PyTorch: under
  ``torch.inference_mode()``), and
* training: a forward call with ``training=True`` followed by backward with a
  random ``dy`` and ``dh_T=None`` (PyTorch: ``y.backward(dy)`` with ``x`` and ``h0``
  requiring grad, so ``dx`` and ``dh0`` are computed as rnnfast computes them),

for rnnfast, for PyTorch when it is importable (``torch.nn.RNN`` / ``LSTM`` / ``GRU``
holding the same weights) and for ``rnnfast.reference`` on small shapes (it is
slow). Each measurement is the best of several runs after a warm-up, repeated
until about 0.3 s were spent and at least 3 runs were made, the implementations
taking turns so that other work on the machine hits them alike; everything runs in
one process with the same thread count for every implementation
(``torch.set_num_threads`` and ``threadpoolctl.threadpool_limits``, which covers
the OpenBLAS that rnnfast reaches through ``scipy.linalg.cython_blas`` and the
OpenMP runtime its batch-parallel kernels use).

It prints a Markdown table (``torch/rnnfast`` > 1 means rnnfast is faster) under a
line describing the machine, and with ``--json PATH`` writes every result as JSON.

Run it from the repository root with rnnfast installed (``pip install ".[bench]"``)::

    python bench/bench_kernels.py                 # full table
    python bench/bench_kernels.py --quick         # smoke run, seconds
    python bench/bench_kernels.py --cells lstm --shapes 100,64,256,256 \\
        --threads 1 --json results.json

``main(argv)`` and ``run_benchmark(...)`` are importable, for the ``rnnfast`` command.
"""

import argparse
import gc
import json
import math
import os
import platform
import sys
import time
import warnings
from contextlib import ExitStack, contextmanager

import numpy as np
import scipy

import rnnfast
import rnnfast.reference

try:
    import torch
except ImportError:  # PyTorch is optional: its columns stay empty
    torch = None

try:
    import threadpoolctl
except ImportError:  # optional too, but then BLAS threads are not limited
    threadpoolctl = None

__all__ = ["CELLS", "DEFAULT_CELLS", "SHAPES", "QUICK_SHAPES", "TimingSettings",
           "machine_info", "make_problem", "time_interleaved", "time_best", "benchmark_case",
           "run_benchmark", "format_table", "main"]

# cell name -> (functional-API family, nonlinearity, number of stacked gates)
CELLS = {
    "rnn_tanh": ("rnn", "tanh", 1),
    "rnn_relu": ("rnn", "relu", 1),
    "lstm": ("lstm", None, 4),
    "gru": ("gru", None, 3),
}
CELL_ALIASES = {"rnn": "rnn_tanh", "tanh": "rnn_tanh", "relu": "rnn_relu"}
DEFAULT_CELLS = ("rnn_tanh", "lstm", "gru")

# (T, B, D, H)
SHAPES = ((100, 1, 32, 32), (100, 16, 64, 64), (100, 32, 128, 128),
          (100, 64, 256, 256), (50, 64, 512, 512))
QUICK_SHAPES = SHAPES[:2]

MODES = ("inference", "training")
REFERENCE_MAX_HIDDEN = 64
# a 1-minute load average above this many per usable CPU when the benchmark starts
# means other work is running (or just ran) on the machine
BUSY_LOAD_PER_CPU = 0.5
# a float32 forward that differs from PyTorch's by more than this is reported
OUTPUT_MISMATCH_TOLERANCE = {np.float32: 1e-3, np.float64: 1e-9}


class TimingSettings:
    """How long to measure: ``warmup`` untimed calls, then timed calls until at
    least ``min_runs`` were made and ``min_time`` seconds were spent (at most
    ``max_runs``); the result is the fastest call."""

    def __init__(self, min_time=0.3, min_runs=3, warmup=1, max_runs=1000):
        self.min_time = min_time
        self.min_runs = min_runs
        self.warmup = warmup
        self.max_runs = max_runs

    @classmethod
    def quick(cls):
        return cls(min_time=0.02, min_runs=2, warmup=1, max_runs=50)

    def as_dict(self):
        return {"min_time_s": self.min_time, "min_runs": self.min_runs,
                "warmup": self.warmup, "max_runs": self.max_runs}


# ----------------------------------------------------------------------------- machine

def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count()


def load_average():
    """1-, 5- and 15-minute load averages: other work on the machine skews timings."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def blas_info():
    """The thread pools threadpoolctl sees (BLAS and OpenMP), or None without it."""
    if threadpoolctl is None:
        return None
    keys = ("user_api", "internal_api", "prefix", "version", "architecture",
            "threading_layer", "num_threads", "filepath")
    return [{k: pool[k] for k in keys if k in pool} for pool in threadpoolctl.threadpool_info()]


def machine_info(threads):
    """What was measured on: CPU, thread counts, library versions, BLAS, environment.

    ``bench_threads.py`` records the same."""
    env_keys = ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                "MKL_NUM_THREADS", "GOTO_NUM_THREADS")
    info = {
        "cpu_model": _cpu_model(),
        "processor": platform.processor(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": _usable_cpus(),
        "threads": threads,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "rnnfast": getattr(rnnfast, "__version__", None),
        "rnnfast_path": os.path.dirname(rnnfast.__file__),
        "torch": torch.__version__ if torch is not None else None,
        "threadpoolctl": threadpoolctl.__version__ if threadpoolctl is not None else None,
        "blas": blas_info(),
        "env": {k: os.environ.get(k) for k in env_keys},
        "load_average": load_average(),
    }
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        info["torch_parallel_info"] = torch.__config__.parallel_info()
        info["torch_mkldnn"] = bool(torch.backends.mkldnn.is_available()
                                    and torch.backends.mkldnn.enabled)
    return info


def _threads_text(count):
    return f"{count} thread" if count == 1 else f"{count} threads"


def machine_summary(info):
    """One line naming the machine, for the table's header."""
    def pool(p):
        name = p.get("internal_api", "?")
        version = p.get("version")
        arch = p.get("architecture")
        where = os.path.basename(os.path.dirname(p.get("filepath", ""))) or "?"
        details = ", ".join(str(s) for s in (version, arch, _threads_text(p.get("num_threads")))
                            if s)
        return f"{name} from {where} ({details})"

    blas = info["blas"]
    blas_text = ("; ".join(pool(p) for p in blas) if blas is not None
                 else "threadpoolctl missing, BLAS threads not limited")
    versions = f"numpy {info['numpy']}, scipy {info['scipy']}, torch {info['torch'] or '-'}"
    coretype = info["env"]["OPENBLAS_CORETYPE"]
    load = info.get("load_average")
    load_text = f"; load average at start {load[0]:.2f}" if load else ""
    return (f"Machine: {info['cpu_model']} ({info['machine']}), {info['cpu_count']} CPUs "
            f"({info['usable_cpus']} usable), {_threads_text(info['threads'])} used; "
            f"Python {info['python']}, {versions}, rnnfast {info['rnnfast']}; "
            f"BLAS/OpenMP: {blas_text}; "
            f"OPENBLAS_CORETYPE={coretype if coretype is not None else 'unset'}{load_text}")


@contextmanager
def limited_threads(threads):
    """Limit PyTorch and every loaded BLAS / OpenMP pool to ``threads`` threads.

    Libraries must already be loaded: threadpoolctl acts on loaded pools only.
    """
    with ExitStack() as stack:
        if torch is not None:
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            stack.callback(torch.set_num_threads, previous)
        if threadpoolctl is not None:
            stack.enter_context(threadpoolctl.threadpool_limits(limits=threads))
        else:
            warnings.warn("threadpoolctl is not installed: BLAS thread counts are not "
                          "limited", RuntimeWarning, stacklevel=3)
        yield


# ----------------------------------------------------------------------------- problems

def make_problem(cell, shape, dtype=np.float32, seed=0):
    """Random inputs, initial states, parameters (PyTorch's init range) and ``dy``."""
    _, _, gates = CELLS[cell]
    T, B, D, H = shape
    rng = np.random.default_rng(seed)
    bound = 1.0 / math.sqrt(H)

    def uniform(*dims):
        return rng.uniform(-bound, bound, dims).astype(dtype)

    return {
        "cell": cell,
        "shape": shape,
        "x": rng.standard_normal((T, B, D)).astype(dtype),
        "h0": (0.5 * rng.standard_normal((B, H))).astype(dtype),
        "c0": (0.5 * rng.standard_normal((B, H))).astype(dtype) if cell == "lstm" else None,
        "w_ih": uniform(gates * H, D),
        "w_hh": uniform(gates * H, H),
        "b_ih": uniform(gates * H),
        "b_hh": uniform(gates * H),
        "dy": rng.standard_normal((T, B, H)).astype(dtype),
    }


def numpy_callables(module, problem):
    """``(infer, train)`` for a module with the functional API (rnnfast or its reference).

    ``infer()`` returns the outputs ``y``; ``train()`` runs forward and backward.
    """
    family, nonlinearity, _ = CELLS[problem["cell"]]
    p = problem
    params = (p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"])
    if family == "lstm":
        forward, backward = module.lstm_forward, module.lstm_backward
        states = (p["h0"], p["c0"])
        extra_grads = (None, None)        # dh_T, dc_T
        options = {}
    else:
        forward = getattr(module, f"{family}_forward")
        backward = getattr(module, f"{family}_backward")
        states = (p["h0"],)
        extra_grads = (None,)             # dh_T
        options = {"nonlinearity": nonlinearity} if family == "rnn" else {}
    x, dy = p["x"], p["dy"]

    def infer():
        return forward(x, *states, *params, training=False, **options)[0]

    def train():
        cache = forward(x, *states, *params, training=True, **options)[-1]
        return backward(dy, *extra_grads, cache)

    return infer, train


def torch_callables(problem):
    """``(infer, train, reset)`` running the matching ``torch.nn`` module with the same
    weights. ``reset()`` drops the gradients between training calls (set to None, so
    backward allocates fresh ones as rnnfast does); it is not timed."""
    family, nonlinearity, _ = CELLS[problem["cell"]]
    p = problem
    _, _, D, H = p["shape"]
    dtype = torch.float64 if p["x"].dtype == np.float64 else torch.float32
    if family == "rnn":
        module = torch.nn.RNN(D, H, nonlinearity=nonlinearity)
    else:
        module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[family](D, H)
    module = module.to(dtype)
    torch_names = {"weight_ih_l0": "w_ih", "weight_hh_l0": "w_hh",
                   "bias_ih_l0": "b_ih", "bias_hh_l0": "b_hh"}
    with torch.no_grad():
        for torch_name, name in torch_names.items():
            getattr(module, torch_name).copy_(torch.from_numpy(p[name]))

    def tensor(a, grad):
        return torch.from_numpy(a.copy()).requires_grad_(grad)

    x, dy = tensor(p["x"], True), tensor(p["dy"], False)
    h0 = tensor(p["h0"][None], True)
    hx = (h0, tensor(p["c0"][None], True)) if family == "lstm" else h0
    leaves = (x, *hx) if family == "lstm" else (x, h0)

    def infer():
        with torch.inference_mode():
            return module(x, hx)[0]

    def train():
        y = module(x, hx)[0]
        y.backward(dy)

    def reset():
        module.zero_grad(set_to_none=True)
        for leaf in leaves:
            leaf.grad = None

    return infer, train, reset


# ----------------------------------------------------------------------------- timing

@contextmanager
def _gc_paused():
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def time_interleaved(candidates, settings):
    """Best wall-clock time in seconds, and the number of timed runs, of each candidate.

    ``candidates`` maps a name to ``(fn, before)``; ``before()`` (or None) runs untimed
    before every call of ``fn()``, warm-up included. The candidates take turns, one
    call each per round, so a burst of other work on the machine hits all of them
    alike; a candidate leaves the rounds once it has at least ``settings.min_runs``
    runs and ``settings.min_time`` seconds (or ``settings.max_runs`` runs). The
    garbage collector is off while timing. Returns ``{name: (best, runs)}``.
    """
    for fn, before in candidates.values():
        for _ in range(settings.warmup):
            if before is not None:
                before()
            fn()
    best = dict.fromkeys(candidates, math.inf)
    spent = dict.fromkeys(candidates, 0.0)
    runs = dict.fromkeys(candidates, 0)

    def unfinished(name):
        return runs[name] < settings.max_runs and (runs[name] < settings.min_runs
                                                   or spent[name] < settings.min_time)

    with _gc_paused():
        pending = [name for name in candidates if unfinished(name)]
        while pending:
            for name in pending:
                fn, before = candidates[name]
                if before is not None:
                    before()
                start = time.perf_counter()
                fn()
                elapsed = time.perf_counter() - start
                best[name] = min(best[name], elapsed)
                spent[name] += elapsed
                runs[name] += 1
            pending = [name for name in pending if unfinished(name)]
    return {name: (best[name], runs[name]) for name in candidates}


def time_best(fn, settings, before=None):
    """Best wall-clock time of ``fn()`` in seconds, and the number of timed runs."""
    return time_interleaved({"fn": (fn, before)}, settings)["fn"]


def _max_abs_diff(ours, theirs):
    return float(np.max(np.abs(np.asarray(ours, np.float64)
                               - theirs.detach().numpy().astype(np.float64))))


def benchmark_case(cell, shape, settings, *, dtype=np.float32, impl=None, use_torch=True,
                   use_reference=True):
    """Time one cell at one shape; returns one row (a dict) per mode.

    ``impl`` is the module timed in the rnnfast column (default ``rnnfast``).
    Times are in milliseconds, None where an implementation was not run.
    """
    impl = rnnfast if impl is None else impl
    problem = make_problem(cell, shape, dtype)
    timed = {"rnnfast": numpy_callables(impl, problem)}
    resets = {}
    if use_reference:
        timed["reference"] = numpy_callables(rnnfast.reference, problem)
    mismatch = None
    if use_torch and torch is not None:
        infer, train, reset = torch_callables(problem)
        timed["torch"] = (infer, train)
        resets["torch"] = reset
        mismatch = _max_abs_diff(timed["rnnfast"][0](), infer())
        if mismatch > OUTPUT_MISMATCH_TOLERANCE[np.dtype(dtype).type]:
            warnings.warn(f"{cell} {shape}: rnnfast's output differs from PyTorch's by "
                          f"{mismatch:.3g}", RuntimeWarning, stacklevel=2)

    rows = []
    for mode_index, mode in enumerate(MODES):
        row = {"cell": cell, "shape": list(shape), "mode": mode,
               "dtype": np.dtype(dtype).name, "max_abs_diff_y_vs_torch": mismatch}
        candidates = {name: (fns[mode_index], resets.get(name) if mode == "training" else None)
                      for name, fns in timed.items()}
        times = time_interleaved(candidates, settings)
        for name in ("rnnfast", "torch", "reference"):
            best, runs = times.get(name, (None, None))
            row[f"{name}_ms"] = best * 1e3 if best is not None else None
            row[f"{name}_runs"] = runs
        row["torch_over_rnnfast"] = (row["torch_ms"] / row["rnnfast_ms"]
                                     if row["torch_ms"] is not None else None)
        rows.append(row)
    return rows


def run_benchmark(cells=DEFAULT_CELLS, shapes=SHAPES, *, threads=None, settings=None,
                  dtype=np.float32, impl=None, use_torch=True, use_reference=True,
                  reference_max_hidden=REFERENCE_MAX_HIDDEN, progress=None):
    """Run every cell at every shape under one thread limit.

    Returns ``{"machine": ..., "settings": ..., "rows": [...]}``; ``progress``, if
    given, is called with each finished row.
    """
    threads = threads or os.cpu_count()
    settings = settings or TimingSettings()
    rows = []
    with limited_threads(threads):
        info = machine_info(threads)
        for cell in cells:
            for shape in shapes:
                with_reference = use_reference and shape[3] <= reference_max_hidden
                for row in benchmark_case(cell, shape, settings, dtype=dtype, impl=impl,
                                          use_torch=use_torch,
                                          use_reference=with_reference):
                    rows.append(row)
                    if progress is not None:
                        progress(row)
    info["load_average_after"] = load_average()
    return {
        "machine": info,
        "settings": dict(settings.as_dict(), dtype=np.dtype(dtype).name,
                         impl=(impl or rnnfast).__name__,
                         reference_max_hidden=reference_max_hidden if use_reference else None),
        "rows": rows,
    }


# ----------------------------------------------------------------------------- output

def _ms(value):
    return "—" if value is None else (f"{value:.3f}" if value < 10 else f"{value:.1f}")


def _geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def format_table(results):
    """The machine line, a Markdown table of all rows and a speed-up summary."""
    lines = [machine_summary(results["machine"]), ""]
    impl = results["settings"].get("impl", "rnnfast")
    first = "rnnfast ms" if impl == "rnnfast" else f"rnnfast ms ({impl})"
    lines.append(f"| cell | T,B,D,H | mode | {first} | torch ms | torch/rnnfast "
                 "| reference ms |")
    lines.append("|---|---|---|--:|--:|--:|--:|")
    for row in results["rows"]:
        ratio = row["torch_over_rnnfast"]
        lines.append(f"| {row['cell']} | {','.join(map(str, row['shape']))} | {row['mode']} "
                     f"| {_ms(row['rnnfast_ms'])} | {_ms(row['torch_ms'])} "
                     f"| {'—' if ratio is None else f'{ratio:.2f}'} "
                     f"| {_ms(row['reference_ms'])} |")
    for mode in MODES:
        ratios = [r["torch_over_rnnfast"] for r in results["rows"]
                  if r["mode"] == mode and r["torch_over_rnnfast"] is not None]
        if ratios:
            lines.append("")
            lines.append(f"{mode}: torch/rnnfast geometric mean {_geomean(ratios):.2f}, "
                         f"min {min(ratios):.2f}, max {max(ratios):.2f} "
                         f"over {len(ratios)} rows (>1: rnnfast faster)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line

def _parse_shape(text):
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected T,B,D,H (four positive integers), "
                                         f"got {text!r}")
    return shape


def _parse_cell(text):
    cell = CELL_ALIASES.get(text, text)
    if cell not in CELLS:
        raise argparse.ArgumentTypeError(f"unknown cell {text!r}; choose from "
                                         f"{', '.join(CELLS)} (or rnn = rnn_tanh)")
    return cell


def build_parser():
    parser = argparse.ArgumentParser(
        prog="bench_kernels.py",
        description="Time rnnfast's RNN/LSTM/GRU forward (inference) and forward+backward "
                    "(training) against PyTorch and the NumPy reference.")
    parser.add_argument("--cells", nargs="+", type=_parse_cell, metavar="CELL",
                        help=f"cells to run (default: {' '.join(DEFAULT_CELLS)}; "
                             f"also rnn_relu)")
    parser.add_argument("--shapes", nargs="+", type=_parse_shape, metavar="T,B,D,H",
                        help="shapes to run (default: the five standard shapes; "
                             "--quick: the first two)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads for every implementation (default: %(default)s)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="dtype of inputs and parameters (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: small shapes, few repeats")
    parser.add_argument("--min-time", type=float,
                        help="seconds to spend per measurement (default 0.3, --quick 0.02)")
    parser.add_argument("--min-runs", type=int,
                        help="timed runs per measurement at least (default 3, --quick 2)")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference")
    parser.add_argument("--reference-max-hidden", type=int, default=REFERENCE_MAX_HIDDEN,
                        help="run the reference only where H <= this (default: %(default)s)")
    parser.add_argument("--json", metavar="PATH", help="write all results as JSON to PATH")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    # development aid: time the reference in the rnnfast column
    parser.add_argument("--impl", choices=("rnnfast", "reference"), default="rnnfast",
                        help=argparse.SUPPRESS)
    return parser


def main(argv=None):
    """Command-line entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    settings = TimingSettings.quick() if args.quick else TimingSettings()
    if args.min_time is not None:
        settings.min_time = args.min_time
    if args.min_runs is not None:
        settings.min_runs = args.min_runs
    shapes = args.shapes or (QUICK_SHAPES if args.quick else SHAPES)
    cells = args.cells or DEFAULT_CELLS
    impl = rnnfast if args.impl == "rnnfast" else rnnfast.reference
    if not args.no_torch and torch is None:
        print("torch is not importable: its columns stay empty", file=sys.stderr)

    def progress(row):
        if not args.quiet:
            print(f"  {row['cell']:8} {','.join(map(str, row['shape'])):>16} "
                  f"{row['mode']:9}  rnnfast {_ms(row['rnnfast_ms']):>8} ms  "
                  f"torch {_ms(row['torch_ms']):>8} ms  reference "
                  f"{_ms(row['reference_ms']):>8} ms", file=sys.stderr, flush=True)

    results = run_benchmark(cells, shapes, threads=args.threads, settings=settings,
                            dtype=np.dtype(args.dtype).type, impl=impl,
                            use_torch=not args.no_torch, use_reference=not args.no_reference,
                            reference_max_hidden=args.reference_max_hidden,
                            progress=progress)
    machine = results["machine"]
    load = machine["load_average"]
    if load and load[0] > BUSY_LOAD_PER_CPU * (machine["usable_cpus"] or 1):
        print(f"warning: the 1-minute load average was {load[0]:.2f} when the benchmark "
              "started; other work on the machine skews the timings", file=sys.stderr)
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
