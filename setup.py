"""Build the Cython extensions. Metadata lives in pyproject.toml.

Environment switches:
- RNNFAST_NATIVE=1: compile for this machine's CPU (-march=native); not for wheels.
"""

import os
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

COMPILER_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "initializedcheck": False,
    "cdivision": True,
}


def compile_args():
    if sys.platform == "win32":
        return ["/O2"]
    args = ["-O3", "-g0", "-fno-math-errno", "-fno-trapping-math"]
    if os.environ.get("RNNFAST_NATIVE") == "1":
        args.append("-march=native")
    return args


def extension(name):
    return Extension(
        f"rnnfast.{name}",
        [f"rnnfast/{name}.pyx"],
        include_dirs=["csrc"],
        extra_compile_args=compile_args(),
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )


setup(
    ext_modules=cythonize(
        [extension("_blas"), extension("_kernels")],
        compiler_directives=COMPILER_DIRECTIVES,
    ),
)
