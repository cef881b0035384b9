"""What the benchmark measures with: the machine's description, the thread limits,
the timing loop and the machine's sgemm peak. Importing it imports no peer."""

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

from ._bench_peers import import_peer, jax_threads

try:
    import threadpoolctl
except ImportError:  # optional too, but then BLAS threads are not limited
    threadpoolctl = None

__all__ = ["TimingSettings", "usable_cpus", "load_average", "blas_info", "openmp_runtimes",
           "torch_has_own_openmp", "machine_info", "limited_threads", "time_interleaved",
           "time_best", "sgemm_peak"]


class TimingSettings:
    """How long to measure: ``warmup`` untimed calls, then timed calls until at
    least ``min_runs`` were made and ``min_time`` seconds were spent (at most
    ``max_runs``); the result is the fastest call. Candidates measured together take
    turns of about ``turn_time`` seconds (at least one call each)."""

    def __init__(self, min_time=0.3, min_runs=3, warmup=1, max_runs=1000, turn_time=0.02):
        self.min_time = min_time
        self.min_runs = min_runs
        self.warmup = warmup
        self.max_runs = max_runs
        self.turn_time = turn_time

    @classmethod
    def quick(cls):
        return cls(min_time=0.02, min_runs=2, warmup=1, max_runs=50, turn_time=0.005)

    def as_dict(self):
        return {"min_time_s": self.min_time, "min_runs": self.min_runs,
                "warmup": self.warmup, "max_runs": self.max_runs,
                "turn_time_s": self.turn_time}


def usable_cpus():
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count()


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


def openmp_runtimes():
    """Paths of the OpenMP runtimes loaded in this process (threadpoolctl's view)."""
    if threadpoolctl is None:
        return []
    return [pool["filepath"] for pool in threadpoolctl.threadpool_info()
            if pool["user_api"] == "openmp"]


def torch_has_own_openmp(torch):
    """Whether PyTorch runs on the OpenMP runtime it ships (``torch/lib``), or None
    where that cannot be told (no threadpoolctl, or no OpenMP runtime seen).

    rnnfast's kernels and PyTorch both load a runtime named ``libgomp.so.1``, and the
    first one loaded serves both: after ``import rnnfast`` that is rnnfast's.
    """
    runtimes = openmp_runtimes()
    if not runtimes:
        return None
    torch_lib = os.path.join(os.path.dirname(os.path.abspath(torch.__file__)), "lib")
    return any(os.path.abspath(path).startswith(torch_lib + os.sep) for path in runtimes)


def _versions(peers):
    """Versions of NumPy, SciPy, rnnfast and of the given (installed) peers."""
    versions = {"numpy": np.__version__, "scipy": scipy.__version__,
                "rnnfast": getattr(rnnfast, "__version__", None)}
    for name in peers:
        module = import_peer(name)
        if module is not None:
            versions[name] = module.__version__
    if "jax" in versions:
        versions["jaxlib"] = sys.modules["jaxlib"].__version__
    if "onnxruntime" in versions:
        versions["onnx"] = sys.modules["onnx"].__version__
    return versions


def machine_info(threads, peers=()):
    """What was measured on: CPU, thread counts, library versions (rnnfast's
    dependencies and the installed ``peers``), BLAS, environment, load average.

    ``bench/bench_threads.py`` records the same."""
    env_keys = ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "GOTO_NUM_THREADS",
                "XLA_FLAGS")
    info = {
        "cpu_model": _cpu_model(),
        "processor": platform.processor(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "threads": threads,
        "python": platform.python_version(),
        "versions": _versions(peers),
        "rnnfast_path": os.path.dirname(rnnfast.__file__),
        "threadpoolctl": threadpoolctl.__version__ if threadpoolctl is not None else None,
        "blas": blas_info(),
        "env": {k: os.environ.get(k) for k in env_keys},
        "load_average": load_average(),
    }
    torch = import_peer("torch") if "torch" in peers else None
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        info["torch_parallel_info"] = torch.__config__.parallel_info()
        info["torch_mkldnn"] = bool(torch.backends.mkldnn.is_available()
                                    and torch.backends.mkldnn.enabled)
        info["torch_openmp"] = openmp_runtimes()
        info["torch_own_openmp"] = torch_has_own_openmp(torch)
    if "jax" in peers and import_peer("jax") is not None:
        info["jax_threads"] = jax_threads(threads)
    return info


def write_json(path, results):
    """``results`` as indented JSON in the file ``path``, ending in a newline."""
    with open(path, "w") as file:
        json.dump(results, file, indent=2)
        file.write("\n")


@contextmanager
def limited_threads(threads, use_torch=True):
    """Limit PyTorch (if ``use_torch`` and installed) and every loaded BLAS / OpenMP
    pool to ``threads`` threads.

    Libraries must already be loaded: threadpoolctl acts on loaded pools only.
    """
    torch = import_peer("torch") if use_torch else None
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
    before every call of ``fn()``, warm-up included. The candidates take turns of
    consecutive calls lasting about ``settings.turn_time`` seconds, so a burst of other
    work on the machine hits all of them alike, while the thread pool one of them
    leaves spinning at the end of its turn slows at most the next one's first call;
    a candidate leaves the rounds once it has at least ``settings.min_runs`` runs and
    ``settings.min_time`` seconds (or ``settings.max_runs`` runs). The garbage
    collector is off while timing. Returns ``{name: (best, runs)}``.
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

    def turn(name):
        fn, before = candidates[name]
        turn_spent = 0.0
        while turn_spent < settings.turn_time and unfinished(name):
            if before is not None:
                before()
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            best[name] = min(best[name], elapsed)
            spent[name] += elapsed
            turn_spent += elapsed
            runs[name] += 1

    with _gc_paused():
        pending = [name for name in candidates if unfinished(name)]
        while pending:
            for name in pending:
                turn(name)
            pending = [name for name in pending if unfinished(name)]
    return {name: (best[name], runs[name]) for name in candidates}


def time_best(fn, settings, before=None):
    """Best wall-clock time of ``fn()`` in seconds, and the number of timed runs."""
    return time_interleaved({"fn": (fn, before)}, settings)["fn"]


def sgemm_peak(threads, settings, n):
    """The machine's float32 matrix-multiply throughput under the thread limit in force:
    ``C = A B`` with n x n matrices through ``scipy.linalg.blas.sgemm`` (the OpenBLAS
    rnnfast's kernels call), best of at least 10 runs and 3 * ``settings.min_time``
    seconds.

    Returns ``{"gflops", "n", "threads", "routine"}``.
    """
    from scipy.linalg import blas

    rng = np.random.default_rng(0)
    a, b = (np.asfortranarray(rng.standard_normal((n, n), dtype=np.float32)) for _ in "ab")
    c = np.zeros((n, n), np.float32, order="F")
    peak_settings = TimingSettings(min_time=3 * settings.min_time,
                                   min_runs=max(settings.min_runs, 10), warmup=settings.warmup)
    best, _ = time_best(lambda: blas.sgemm(1.0, a, b, beta=0.0, c=c, overwrite_c=True),
                        peak_settings)
    return {"gflops": 2 * n ** 3 / best / 1e9, "n": n, "threads": threads,
            "routine": "scipy.linalg.blas.sgemm"}
