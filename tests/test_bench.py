"""Smoke test of bench/bench_kernels.py: a --quick run on the smallest shape writes JSON
with positive times. Timings themselves are never asserted (see DESIGN.md)."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCH_SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "bench_kernels.py"


def load_bench():
    if not BENCH_SCRIPT.is_file():
        pytest.skip(f"benchmark script not found at {BENCH_SCRIPT}")
    spec = importlib.util.spec_from_file_location("bench_kernels", BENCH_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_json_with_positive_times(tmp_path, capsys):
    bench = load_bench()
    path = tmp_path / "bench.json"
    status = bench.main(["--quick", "--cells", "lstm", "--shapes", "100,1,32,32",
                         "--threads", "1", "--min-time", "0.005", "--quiet",
                         "--json", str(path)])
    assert status == 0
    table = capsys.readouterr().out
    assert "| cell | T,B,D,H | mode | rnnfast ms" in table

    results = json.loads(path.read_text())
    assert results["machine"]["threads"] == 1
    assert "OPENBLAS_CORETYPE" in results["machine"]["env"]
    rows = results["rows"]
    assert [(r["cell"], r["shape"], r["mode"]) for r in rows] == [
        ("lstm", [100, 1, 32, 32], "inference"), ("lstm", [100, 1, 32, 32], "training")]
    for row in rows:
        assert row["rnnfast_ms"] > 0
        assert row["reference_ms"] > 0  # H = 32 is small enough for the reference
        if bench.torch is None:
            assert row["torch_ms"] is None
        else:
            assert row["torch_ms"] > 0
            assert row["torch_over_rnnfast"] > 0
