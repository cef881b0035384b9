"""Peak memory of one call of rnnfast or PyTorch, each measured in a fresh Python
process: ``python -m rnnfast._bench_memory SPEC`` prints one JSON line.

Method. The child imports NumPy, rnnfast and (when measuring it) PyTorch, limits
every thread pool to the benchmark's thread count, builds the problem (inputs,
parameters, ``dy``; for PyTorch the module and tensors), and makes one untimed call of
the same kind on a one-step problem of the same B, D and H, so that lazy
initialisation (thread pools, oneDNN, allocator arenas) happens before the
measurement. After a garbage collection it reads its resident set size (``VmRSS``
in ``/proc/self/status``) and resets the kernel's peak-RSS mark (writing ``5`` to
``/proc/self/clear_refs``), makes the measured call, keeps its results alive and reads
the peak (``VmHWM``). The peak *extra* memory is ``VmHWM - VmRSS`` before the call:
every page the call touched that was not resident before, whoever allocated it
(NumPy arrays, buffers inside the kernels, PyTorch's allocator, thread stacks),
outputs and gradients included. The child runs with glibc's mmap threshold fixed
at 128 KiB (``MALLOC_MMAP_THRESHOLD_``), so every large buffer gets fresh pages and
gives them back when freed: memory freed before the call cannot be reused unseen,
and the RSS before it holds live data only. Counting pages rather than NumPy
allocations (tracemalloc) is what makes rnnfast and PyTorch comparable. Where the peak mark
cannot be reset (no ``/proc``, not Linux) the child falls back on ``ru_maxrss``
after the call less ``ru_maxrss`` before it, which is too low when an earlier peak
was higher; the row's ``method`` says which was used.

Calls: ``training`` is one forward with ``training=True`` and one backward (PyTorch:
``y.backward(dy)``, ``x`` and the initial states requiring grad); ``inference`` is one
forward with ``training=False`` (PyTorch: under ``torch.inference_mode()``).
"""

import gc
import json
import os
import resource
import subprocess
import sys

import numpy as np

__all__ = ["measure_peak", "training_row", "inference_row", "outputs_bytes"]

MIB = 2 ** 20
LONG_FACTOR = 10      # inference rows also measure T * LONG_FACTOR steps
# fixed glibc mmap threshold: every buffer of 128 KiB or more gets pages of its own,
# returned when it is freed; NumPy leaves transparent huge pages alone
CHILD_ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "NUMPY_MADVISE_HUGEPAGE": "0"}
_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


# ----------------------------------------------------------------------------- child

def _status_kib(field):
    with open(_STATUS) as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not found in {_STATUS}")


def _reset_peak():
    """Reset the peak-RSS mark (VmHWM); False where the system does not allow it."""
    try:
        with open(_CLEAR_REFS, "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def _max_rss_bytes():
    scale = 1 if sys.platform == "darwin" else 1024       # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _peak_extra_bytes(call):
    """``(bytes, method)``: the peak memory ``call()`` adds to the process."""
    gc.collect()
    if _reset_peak():
        before = _status_kib("VmRSS")
        results = call()
        peak = _status_kib("VmHWM")
        del results
        return (peak - before) * 1024, "VmHWM - VmRSS (peak reset through clear_refs)"
    before = _max_rss_bytes()
    results = call()
    peak = _max_rss_bytes()
    del results
    return peak - before, "ru_maxrss after - ru_maxrss before"


def _callable(spec, shape):
    """The call ``spec`` asks for, on a fresh problem of ``shape``."""
    from ._bench_peers import make_problem, runner

    problem = make_problem(spec["cell"], shape, np.dtype(spec["dtype"]).type)
    chosen = runner(spec["impl"], problem, spec["threads"])
    if spec["run"] == "inference":
        return chosen.infer
    if chosen.reset is None:
        return chosen.train

    def train():
        chosen.reset()
        return chosen.train()
    return train


def measure_in_this_process(spec):
    """Measure ``spec`` (impl, cell, shape, run, dtype, threads) here; the process
    should be fresh. Returns ``{"peak_bytes": ..., "method": ...}``."""
    from threadpoolctl import threadpool_limits

    if spec["impl"] == "torch":
        import torch
        torch.set_num_threads(spec["threads"])
    _, B, D, H = spec["shape"]
    warm_up = _callable(spec, (1, B, D, H))
    call = _callable(spec, tuple(spec["shape"]))
    with threadpool_limits(limits=spec["threads"]):
        warm_up()
        del warm_up
        peak, method = _peak_extra_bytes(call)
    return {"peak_bytes": peak, "method": method}


# ----------------------------------------------------------------------------- parent

def measure_peak(impl, cell, shape, run, dtype, threads, timeout=600):
    """Peak extra memory of one ``run`` (``"training"`` or ``"inference"``) of ``impl``
    (``"rnnfast"`` or ``"torch"``) in a fresh process importing the same rnnfast as
    this one. Returns ``{"peak_bytes": ..., "method": ...}``.

    Raises
    ------
    RuntimeError
        The child failed; the message holds the end of its stderr.
    """
    import rnnfast

    spec = {"impl": impl, "cell": cell, "shape": list(shape), "run": run,
            "dtype": np.dtype(dtype).name, "threads": threads}
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(rnnfast.__file__)))
    env = dict(os.environ, **CHILD_ALLOCATOR_ENV)
    env["PYTHONPATH"] = os.pathsep.join(
        [package_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    done = subprocess.run([sys.executable, "-m", "rnnfast._bench_memory", json.dumps(spec)],
                          env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement {spec} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def outputs_bytes(cell, shape, run, dtype):
    """Bytes of what a call must return: ``y`` (T, B, H) and the final states
    (S, B, H) for inference; ``y``, ``dx`` (T, B, D), the initial-state gradients
    (S, B, H) and the parameter gradients (G*H*(D + H + 2)) for training."""
    from ._bench_peers import CELLS

    family, _, gates = CELLS[cell]
    T, B, D, H = shape
    states = 2 if family == "lstm" else 1
    count = T * B * H + states * B * H
    if run == "training":
        count += T * B * D + gates * H * (D + H + 2)
    return count * np.dtype(dtype).itemsize


def training_row(cell, shape, dtype, threads, impls):
    """Peak extra memory of one forward + backward for each of ``impls``."""
    peaks = {impl: measure_peak(impl, cell, shape, "training", dtype, threads)
             for impl in impls}
    peak_mib = {impl: peaks[impl]["peak_bytes"] / MIB for impl in impls}
    return {
        "mode": "memory", "run": "training", "cell": cell, "shape": list(shape),
        "dtype": np.dtype(dtype).name, "threads": threads,
        "peak_mib": peak_mib,
        "ratios": {impl: peak_mib[impl] / peak_mib["rnnfast"]
                   for impl in impls if impl != "rnnfast" and peak_mib["rnnfast"] > 0},
        "outputs_mib": outputs_bytes(cell, shape, "training", dtype) / MIB,
        "method": peaks["rnnfast"]["method"],
    }


def inference_row(cell, shape, dtype, threads):
    """rnnfast's peak extra memory of one ``training=False`` forward at T and at
    ``LONG_FACTOR * T`` steps, and what it is beyond the outputs."""
    T, B, D, H = shape
    measured = {}
    for steps in (T, LONG_FACTOR * T):
        at = (steps, B, D, H)
        peak = measure_peak("rnnfast", cell, at, "inference", dtype, threads)
        outputs = outputs_bytes(cell, at, "inference", dtype)
        measured[steps] = {"shape": list(at), "peak_mib": peak["peak_bytes"] / MIB,
                           "outputs_mib": outputs / MIB,
                           "beyond_outputs_mib": (peak["peak_bytes"] - outputs) / MIB,
                           "method": peak["method"]}
    short, long = measured[T], measured[LONG_FACTOR * T]
    return {
        "mode": "memory", "run": "inference", "cell": cell, "shape": list(shape),
        "dtype": np.dtype(dtype).name, "threads": threads,
        "peak_mib": {"rnnfast": short["peak_mib"]},
        "outputs_mib": short["outputs_mib"],
        "beyond_outputs_mib": short["beyond_outputs_mib"],
        "long": {key: long[key] for key in ("shape", "peak_mib", "outputs_mib",
                                            "beyond_outputs_mib")},
        "method": short["method"],
    }


if __name__ == "__main__":
    print(json.dumps(measure_in_this_process(json.loads(sys.argv[1]))))
