"""The vectorisable exp, sigmoid and tanh of the gate passes (csrc/rnnfast_math.h),
checked in C against libm: their accuracy over a sweep of inputs and what they make
of NaN and infinities (tests/c/gate_math.c)."""

import pytest

from conftest import run_c_test


@pytest.mark.parametrize("sanitizer", [None, "undefined"])
def test_gate_math_is_accurate_and_keeps_nan(tmp_path, sanitizer):
    run_c_test(tmp_path, "gate_math", sanitizer)
