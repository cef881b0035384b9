"""Show that rnnfast's kernels release the GIL: K Python threads calling them at once
against the same calls made one after another on one thread.

Each of K Python threads makes ``--calls`` calls on its own inputs; the serial run
makes the same K * calls calls, one thread, same inputs. Speed-up = serial time /
threaded time. Were the GIL held during the kernels, it would stay near 1 whatever K;
released, it approaches min(K, cores), less the share of each call spent in Python
(argument checks, allocations) that the threads take in turn.

All the parallelism must come from the Python threads, so:

* every call runs under ``rnnfast._threads.capped(1)``: its kernels (a stream's steps
  too) run on the calling thread, with no OpenMP team and no helper thread sharing its
  steps, whatever the batch, the thresholds of rnnfast._threads and each thread's
  OpenMP limit (which a library may have set in the main thread only: importing
  PyTorch caps it there). So the serial and threaded runs compute alike and give
  bitwise the same results;
* BLAS (the input projection and weight-gradient GEMMs go through scipy's OpenBLAS)
  is held at one thread with threadpoolctl for the whole run.

Workloads, per cell (``rnn_tanh``, ``rnn_relu``, ``lstm``, ``gru``):

* ``training``: ``<cell>_forward(training=True)`` then ``<cell>_backward``;
* ``inference``: ``<cell>_forward(training=False)``;
* ``stream``: T steps through a one-layer ``layer.stream(B)``, one stream per thread
  on one shared layer (a "call" is the whole sequence). Each step is a T = 1 kernel
  call, so whatever a call does outside the kernels' nogil sections weighs most here.

Two controls run through the same harness first, to calibrate the machine: a NumPy
matrix product (releases the GIL: shows how much parallelism the machine gives right
now; other work on it pulls this below min(K, cores)) and a pure-Python loop (holds
the GIL: about 1x). ``--no-controls`` skips them.

Each threaded run's results are compared with the serial ones (``results_equal_serial``
in the JSON: bitwise equality is expected). Times are the best of ``--repeat`` runs,
serial and threaded taking turns; the load average before and after is recorded.
Timings belong here, never in the test suite (DESIGN.md); ``tests/test_robustness.py``
only smoke-tests ``--quick``.

Run it from the repository root with rnnfast built or installed::

    python bench/bench_threads.py                       # full table
    python bench/bench_threads.py --quick               # smoke run, seconds
    python bench/bench_threads.py --cells lstm --modes training --shape 100,4,64,128 \\
        --threads 1,2,4 --json threads.json

``main(argv)`` returns the exit status; ``run_benchmark(...)`` returns the results.
"""

import argparse
import sys
import threading
import time

import numpy as np
from threadpoolctl import threadpool_limits

import rnnfast
from rnnfast import _threads, benchmark
from rnnfast._bench_machine import write_json
from rnnfast.benchmark import load_average

__all__ = ["CELLS", "MODES", "CONTROLS", "make_workload", "make_control", "time_serial",
           "time_threaded", "on_calling_thread", "measure", "run_benchmark", "format_table",
           "main"]

# cell name -> (functional family, forward keyword arguments, layer class, layer kwargs)
CELLS = {
    "rnn_tanh": ("rnn", {"nonlinearity": "tanh"}, rnnfast.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": ("rnn", {"nonlinearity": "relu"}, rnnfast.RNN, {"nonlinearity": "relu"}),
    "lstm": ("lstm", {}, rnnfast.LSTM, {}),
    "gru": ("gru", {}, rnnfast.GRU, {}),
}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
MODES = ("training", "inference", "stream")
DEFAULT_CELLS = ("rnn_tanh", "lstm", "gru")
DEFAULT_SHAPE = (100, 4, 64, 128)   # T, B, D, H
QUICK_SHAPE = (50, 4, 32, 64)
DEFAULT_THREADS = (1, 2, 4)
QUICK_THREADS = (1, 2)
# control name -> what it shows
CONTROLS = {"numpy_matmul": "GIL released: the parallelism the machine gives now",
            "python_loop": "GIL held: about 1x"}


# ----------------------------------------------------------------------------- workloads

def make_workload(cell, mode, shape, dtype, seed):
    """A function making one call of ``mode`` on inputs of its own (seeded), returning
    the arrays it produced (for the comparison with the serial run)."""
    T, B, D, H = shape
    family, forward_kwargs, layer_class, layer_kwargs = CELLS[cell]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, D)).astype(dtype)
    if mode == "stream":
        layer = _shared_layer(layer_class, D, H, dtype, tuple(sorted(layer_kwargs.items())))
        stream = layer.stream(B)

        def call():
            stream.reset()
            return [np.stack([stream(x[t]) for t in range(T)])]
        return call

    G = GATES[family]
    bound = 1 / np.sqrt(H)
    params = [rng.uniform(-bound, bound, size).astype(dtype)
              for size in ((G * H, D), (G * H, H), (G * H,), (G * H,))]
    states = [rng.standard_normal((B, H)).astype(dtype)
              for _ in range(2 if family == "lstm" else 1)]
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    forward = getattr(rnnfast, f"{family}_forward")
    backward = getattr(rnnfast, f"{family}_backward")
    no_state_grads = [None] * len(states)

    if mode == "inference":
        def call():
            return list(forward(x, *states, *params, training=False, **forward_kwargs)[:-1])
        return call

    def call():
        *outputs, cache = forward(x, *states, *params, **forward_kwargs)
        return outputs + list(backward(dy, *no_state_grads, cache))
    return call


def make_control(name, seed):
    """A call of a control workload, about a millisecond or a few: a 256 x 256 float32
    matrix product, or a pure-Python loop of 100,000 additions."""
    if name == "numpy_matmul":
        a = np.random.default_rng(seed).standard_normal((256, 256)).astype(np.float32)

        def call():
            return [a @ a]
        return call

    def call():
        total = 0
        for i in range(100_000):
            total += i
        return [np.array(total)]
    return call


_layers = {}


def _shared_layer(layer_class, D, H, dtype, layer_kwargs):
    """One layer per configuration, shared by every thread's stream (streams only read
    its parameters)."""
    key = (layer_class, D, H, np.dtype(dtype).name, layer_kwargs)
    if key not in _layers:
        _layers[key] = layer_class(D, H, dtype=dtype, seed=0, **dict(layer_kwargs)).eval()
    return _layers[key]


# ----------------------------------------------------------------------------- timing

def time_serial(calls_by_thread, calls):
    """Every thread's calls one after another on this thread: (seconds, last results)."""
    results = []
    start = time.perf_counter()
    for call in calls_by_thread:
        for _ in range(calls):
            out = call()
        results.append(out)
    return time.perf_counter() - start, results


def time_threaded(calls_by_thread, calls):
    """One Python thread per entry, started together: (seconds, last results)."""
    count = len(calls_by_thread)
    barrier = threading.Barrier(count + 1)
    results = [None] * count
    errors = []

    def worker(index, call):
        try:
            barrier.wait()
            for _ in range(calls):
                out = call()
            results[index] = out
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k, call), daemon=True)
               for k, call in enumerate(calls_by_thread)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed, results


def _equal(first, second):
    return all(len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))
               for a, b in zip(first, second))


def on_calling_thread(call):
    """``call`` with its kernels held on the thread that makes it (see the module doc)."""
    def run():
        with _threads.capped(1):
            return call()
    return run


def measure(cell, mode, threads, calls, repeat, factory):
    """Serial against ``threads`` Python threads, best of ``repeat`` each;
    ``factory(seed)`` makes one thread's call."""
    calls_by_thread = [on_calling_thread(factory(k)) for k in range(threads)]
    for call in calls_by_thread:  # warm-up: first-call costs out of the timings
        call()
    serial, threaded, equal = [], [], True
    for _ in range(repeat):
        seconds, serial_results = time_serial(calls_by_thread, calls)
        serial.append(seconds)
        seconds, threaded_results = time_threaded(calls_by_thread, calls)
        threaded.append(seconds)
        equal = equal and _equal(serial_results, threaded_results)
    best_serial, best_threaded = min(serial), min(threaded)
    speedup = best_serial / best_threaded if best_threaded > 0 else float("nan")
    return {"cell": cell, "mode": mode, "threads": threads, "calls_per_thread": calls,
            "total_calls": threads * calls, "serial_s": float(best_serial),
            "threaded_s": float(best_threaded), "speedup": float(speedup),
            "efficiency": float(speedup / threads), "results_equal_serial": bool(equal)}


# ----------------------------------------------------------------------------- driver

def machine_info():
    """rnnfast.benchmark's machine description, its load average taken as the one before."""
    info = benchmark.machine_info(threads=None)
    info["load_average_before"] = info.pop("load_average")
    return info


def run_benchmark(cells, modes, shape, thread_counts, calls, repeat, dtype=np.float32,
                  progress=None, controls=True):
    """Every (cell, mode, thread count), after the controls; returns {"machine",
    "settings", "controls", "rows"}."""
    T, B, D, H = shape
    machine = machine_info()  # before the limits: the pools as the user has them
    rows, control_rows = [], []
    with threadpool_limits(limits=1, user_api="blas"):
        for name in (CONTROLS if controls else ()):
            for threads in thread_counts:
                row = measure("control", name, threads, calls, repeat,
                              lambda seed, n=name: make_control(n, seed))
                control_rows.append(row)
                if progress is not None:
                    progress(row)
        for cell in cells:
            for mode in modes:
                for threads in thread_counts:
                    row = measure(cell, mode, threads, calls, repeat,
                                  lambda seed, c=cell, m=mode: make_workload(c, m, shape, dtype,
                                                                             seed))
                    rows.append(row)
                    if progress is not None:
                        progress(row)
    machine["load_average_after"] = load_average()
    settings = {"shape": {"T": T, "B": B, "D": D, "H": H}, "dtype": np.dtype(dtype).name,
                "cells": list(cells), "modes": list(modes), "threads": list(thread_counts),
                "calls_per_thread": calls, "repeat": repeat, "blas_threads": 1,
                "kernel_threads_per_call": 1}
    return {"machine": machine, "settings": settings, "controls": control_rows, "rows": rows}


def _load_text(load):
    return "?" if not load else f"{load[0]:.2f}"


def format_table(results):
    machine, settings = results["machine"], results["settings"]
    shape = settings["shape"]
    lines = [f"Python threads calling rnnfast at once vs one after another: T={shape['T']} "
             f"B={shape['B']} D={shape['D']} H={shape['H']} {settings['dtype']}, "
             f"{settings['calls_per_thread']} calls per thread, best of {settings['repeat']}; "
             f"{machine['usable_cpus']} usable CPUs, BLAS on 1 thread, "
             f"{settings['kernel_threads_per_call']} kernel thread per call; 1-minute load "
             f"average {_load_text(machine.get('load_average_before'))} before, "
             f"{_load_text(machine.get('load_average_after'))} after.",
             "",
             "| cell | mode | threads | calls | serial ms | threaded ms | speed-up | "
             "efficiency | same results |",
             "|---|---|--:|--:|--:|--:|--:|--:|---|"]
    for r in results.get("controls", []) + results["rows"]:
        lines.append(f"| {r['cell']} | {r['mode']} | {r['threads']} | {r['total_calls']} | "
                     f"{1e3 * r['serial_s']:.1f} | {1e3 * r['threaded_s']:.1f} | "
                     f"{r['speedup']:.2f}x | {100 * r['efficiency']:.0f}% | "
                     f"{'yes' if r['results_equal_serial'] else 'NO'} |")
    return "\n".join(lines)


def _int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _names(choices):
    def parse(text):
        names = [v.strip() for v in text.split(",") if v.strip()]
        unknown = [n for n in names if n not in choices]
        if not names or unknown:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}; "
                                             f"got {text!r}")
        return names
    return parse


def build_parser():
    parser = argparse.ArgumentParser(
        description="Python threads calling rnnfast's kernels at once vs serially: "
                    "speed-up near min(threads, cores) shows the GIL released.")
    parser.add_argument("--cells", type=_names(tuple(CELLS)), default=None,
                        help=f"comma-separated, from {', '.join(CELLS)} "
                             f"(default {','.join(DEFAULT_CELLS)}; --quick: lstm)")
    parser.add_argument("--modes", type=_names(MODES), default=list(MODES),
                        help=f"comma-separated, from {', '.join(MODES)} (default all)")
    parser.add_argument("--shape", type=_int_list, default=None,
                        help=f"T,B,D,H (default {','.join(map(str, DEFAULT_SHAPE))}; "
                             f"--quick: {','.join(map(str, QUICK_SHAPE))})")
    parser.add_argument("--threads", type=_int_list, default=None,
                        help="Python thread counts (default 1,2,4; --quick: 1,2)")
    parser.add_argument("--calls", type=int, default=None,
                        help="calls per thread per run (default 20; --quick: 3)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="runs, the best counts (default 5; --quick: 2)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--quick", action="store_true",
                        help="a small shape and few calls: a smoke run of seconds")
    parser.add_argument("--no-controls", action="store_true",
                        help="skip the NumPy matmul and pure-Python loop controls")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser


def main(argv=None):
    """Command-line entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    shape = tuple(args.shape or (QUICK_SHAPE if args.quick else DEFAULT_SHAPE))
    if len(shape) != 4:
        parser.error(f"--shape takes T,B,D,H, got {','.join(map(str, shape))}")
    cells = args.cells or (["lstm"] if args.quick else list(DEFAULT_CELLS))
    threads = args.threads or list(QUICK_THREADS if args.quick else DEFAULT_THREADS)
    calls = args.calls or (3 if args.quick else 20)
    repeat = args.repeat or (2 if args.quick else 5)
    if calls < 1 or repeat < 1:
        parser.error("--calls and --repeat must be at least 1")

    def progress(row):
        if not args.quiet:
            print(f"  {row['cell']:8} {row['mode']:9} {row['threads']} threads: serial "
                  f"{1e3 * row['serial_s']:.1f} ms, threaded {1e3 * row['threaded_s']:.1f} ms, "
                  f"{row['speedup']:.2f}x", file=sys.stderr, flush=True)

    results = run_benchmark(cells, args.modes, shape, threads, calls, repeat,
                            dtype=np.dtype(args.dtype).type, progress=progress,
                            controls=not args.no_controls)
    print(format_table(results))
    if args.json:
        write_json(args.json, results)
    load = results["machine"]["load_average_before"]
    if load and load[0] > 0.5 * (results["machine"]["usable_cpus"] or 1):
        print(f"warning: the 1-minute load average was {load[0]:.2f} at the start; "
              f"other work on the machine lowers the speed-ups (see the numpy_matmul "
              f"control)", file=sys.stderr)
    if not all(row["results_equal_serial"] for row in results["rows"]):
        print("error: threaded results differ from the serial ones", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
