"""Build the Cython extensions. Metadata lives in pyproject.toml.

Environment switches:
- RNNFAST_NATIVE=1: compile for this machine's CPU (-march=native); not for wheels.
- RNNFAST_OPENMP=0: build without OpenMP (the kernels then run on one thread).
- RNNFAST_DEBUG=1: memory-safety build, for tests only: Cython bounds, wraparound and
  initialization checks on, and the C compiled and linked with AddressSanitizer and
  UndefinedBehaviorSanitizer (-O1 -g); the buffer pool keeps nothing unless told to.
  Python is not instrumented, so run it with the ASan runtime preloaded; README's
  "Memory-safety build" has the commands.
OpenMP is used when the compiler accepts -fopenmp, and left out otherwise.
"""

import glob
import os
import subprocess
import sys
import sysconfig
import tempfile

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("RNNFAST_DEBUG") == "1"
SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
            "-fno-sanitize-recover=undefined"]

COMPILER_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
}


def compile_args():
    if sys.platform == "win32":
        return ["/O2"]
    if DEBUG:
        return (["-O1", "-g", "-fno-math-errno", "-fno-trapping-math",
                 "-DRNNFAST_POOL_KEEP_NOTHING"] + SANITIZE)
    args = ["-O3", "-g0", "-fno-math-errno", "-fno-trapping-math", "-Wno-unused-function"]
    if os.environ.get("RNNFAST_NATIVE") == "1":
        args.append("-march=native")
    return args


def openmp_flags():
    """-fopenmp if the C compiler builds and links a small OpenMP program with it."""
    if os.environ.get("RNNFAST_OPENMP") == "0" or sys.platform == "win32":
        return []
    compiler = (sysconfig.get_config_var("CC") or "cc").split()
    source = "#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n"
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "probe.c")
        with open(path, "w") as file:
            file.write(source)
        try:
            command = compiler + ["-fopenmp", path, "-o", os.path.join(folder, "probe")]
            result = subprocess.run(command, capture_output=True)
        except OSError:
            return []
    return ["-fopenmp"] if result.returncode == 0 else []


OPENMP = openmp_flags()


def extension(name, parallel=False, numpy_api=False, flags=()):
    openmp = OPENMP if parallel else []
    include_dirs = ["csrc"]
    macros = []
    if numpy_api:
        import numpy

        include_dirs.append(numpy.get_include())
        macros.append(("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"))
    return Extension(
        f"rnnfast.{name}",
        [f"rnnfast/{name}.pyx"],
        depends=sorted(glob.glob("csrc/*.h")),  # rebuild when a C header changes
        include_dirs=include_dirs,
        define_macros=macros,
        extra_compile_args=compile_args() + openmp + list(flags),
        extra_link_args=openmp + (SANITIZE if DEBUG else []),
    )


setup(
    ext_modules=cythonize(
        [extension("_blas"), extension("_pool", numpy_api=True), extension("_helpers"),
         extension("_kernels", parallel=True, numpy_api=True),
         extension("_products", parallel=True),
         # the maximum and the sum of a row of logits vectorise as OpenMP simd reductions
         extension("_losses", flags=[] if sys.platform == "win32" else ["-fopenmp-simd"]),
         extension("_dropout"), extension("_sampling", numpy_api=True),
         # bitwise the NumPy form's updates: no a * b + c contracted into one rounding;
         # the sums of squares vectorise as OpenMP simd reductions
         extension("_updates", numpy_api=True, flags=[] if sys.platform == "win32"
                   else ["-ffp-contract=off", "-fopenmp-simd"]),
         extension("_stream", parallel=True, numpy_api=True)],
        compiler_directives=COMPILER_DIRECTIVES,
        force=DEBUG or None,  # regenerate the C: the directives differ from a normal build
    ),
)
