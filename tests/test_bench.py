"""The kernel benchmark (``rnnfast.benchmark``, run by ``rnnfast bench`` and
``bench/bench_kernels.py``): smoke runs of every mode on tiny shapes (JSON layout,
positive measurements, target verdicts present) and the equivalence of each peer's
implementation (PyTorch, JAX, ONNX Runtime) with rnnfast, outputs and gradients.
Timings themselves are never asserted (see DESIGN.md)."""

import json

import numpy as np
import pytest

import rnnfast.plot
from rnnfast import _bench_peers as peers
from rnnfast import benchmark as bench

from conftest import assert_close, run_rnnfast

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
GRAD_NAMES = ("dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh")


def tiny_config(**options):
    """One thread, a few short measurements, a small sgemm."""
    settings = bench.TimingSettings(min_time=0.002, min_runs=2, warmup=1, max_runs=5,
                                    turn_time=0.001)
    defaults = {"threads": 1, "settings": settings, "cells": ("lstm",),
                "shapes": ((6, 2, 5, 4),), "sgemm_size": 128}
    return bench.BenchmarkConfig(**{**defaults, **options})


def expected_peers(mode, threads=1):
    """The peers that must have times in ``mode``'s rows here."""
    return {name for name in bench.MODE_PEERS[mode] if peers.peer_runs_at(name, threads)}


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    """``main --quick`` on one small LSTM shape with every peer, and its printed tables."""
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    status = bench.main(["--quick", "--cells", "lstm", "--shapes", "10,1,8,8",
                         "--threads", "1", "--min-time", "0.002", "--quiet",
                         "--json", str(path)])
    assert status == 0
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------- smoke runs

def test_quick_run_writes_json_with_times_of_every_installed_peer(quick_results):
    results = quick_results
    assert results["machine"]["threads"] == 1
    assert "OPENBLAS_CORETYPE" in results["machine"]["env"]
    sgemm = results["sgemm"]
    assert sgemm["n"] == bench.QUICK_SGEMM_SIZE and sgemm["threads"] == 1
    assert len(sgemm["gflops_measured"]) == 1 + len(bench.QUICK_MODES)
    assert sgemm["gflops"] == max(sgemm["gflops_measured"]) > 0
    trips = results["machine"]["round_trip_us"]         # None: no free core for it
    assert len(trips) == 1 + len(bench.QUICK_MODES)
    assert all(trip is None or 0 < trip < 1e5 for trip in trips)
    assert results["settings"]["modes"] == list(bench.QUICK_MODES)
    assert set(results["targets"]) == set(bench.QUICK_MODES)
    rows = results["rows"]
    assert [(r["mode"], r["cell"], r["shape"]) for r in rows] == [
        ("inference", "lstm", [10, 1, 8, 8]), ("training", "lstm", [10, 1, 8, 8])]
    for row in rows:
        mode, times = row["mode"], row["times_ms"]
        assert set(times) == {"rnnfast", "reference", *bench.MODE_PEERS[mode]}
        assert times["rnnfast"] > 0 and times["reference"] > 0
        present = {name for name in bench.MODE_PEERS[mode] if times[name] is not None}
        assert present == expected_peers(mode)
        assert all(times[name] > 0 for name in present)
        assert all(row["max_diff"][name] < 1e-5 for name in present)
        if present:
            assert row["best_peer"] in present
            assert row["speedup"] == pytest.approx(times[row["best_peer"]] / times["rnnfast"])
        else:
            assert row["best_peer"] is None and row["speedup"] is None
        assert row["sgemm_fraction"] == pytest.approx(row["gflops"] / sgemm["gflops"])
        assert row["target"].startswith(">= 1.5x" if mode == "inference" else ">= 2x")
        assert row["target_met"] in (True, False, None)
        assert (row["target_met"] is None) == (not present)


def test_tables_have_a_target_verdict_per_row(quick_results):
    text = bench.format_tables(quick_results)
    assert text.startswith("Machine: ")
    assert "sgemm peak: " in text
    assert "Round trip between two threads: " in text
    for mode in bench.QUICK_MODES:
        assert f"### {mode}" in text
        assert f"Target: {bench._bench_report.TARGETS[mode]}." in text
    lines = [line for line in text.splitlines() if line.startswith("| lstm | 10,1,8,8 |")]
    assert len(lines) == 2
    assert all(line.endswith(("| ✓ |", "| ✗ |", "| — |")) for line in lines)


def test_stream_mode_times_one_call_per_step():
    config = tiny_config(modes=("stream",), cells=("gru",), stream_hidden=(8, 200),
                         stream_steps=5)
    rows = bench.run_benchmark(config)["rows"]
    assert [(r["mode"], r["shape"]) for r in rows] == [
        ("stream", [5, 1, 8, 8]), ("stream", [5, 1, 200, 200])]
    for row in rows:
        times = row["times_us"]
        assert times["rnnfast"] > 0
        present = {name for name in bench.PEERS if times[name] is not None}
        assert present == expected_peers("stream")
        assert set(row["speedups"]) == present
        assert all(row["max_diff"][name] < 1e-5 for name in present)
    small, large = rows
    assert small["target"] == "<= 2 µs, >= 3x onnxruntime, >= 20x torch"
    assert small["target_met"] in (True, False, None)
    assert large["target"] is None and large["target_met"] is None   # no target above 128


def test_memory_mode_measures_peaks_in_fresh_processes():
    shape = (100, 8, 64, 64)
    config = tiny_config(modes=("memory",), shapes=(shape,), peers=())
    training, inference = bench.run_benchmark(config)["rows"]
    assert training["run"] == "training" and set(training["peak_mib"]) == {"rnnfast"}
    # the results are alive when the peak is read: it cannot be below their size
    assert training["peak_mib"]["rnnfast"] >= training["outputs_mib"] > 0
    assert inference["run"] == "inference"
    assert inference["long"]["shape"] == [1000, 8, 64, 64]
    assert inference["long"]["outputs_mib"] > 9 * inference["outputs_mib"]
    assert inference["long"]["peak_mib"] >= inference["long"]["outputs_mib"]
    assert inference["beyond_outputs_mib"] == pytest.approx(
        inference["peak_mib"]["rnnfast"] - inference["outputs_mib"])
    assert inference["target_met"] in (True, False)
    assert training["method"].startswith(("VmHWM", "ru_maxrss"))


def test_scaling_mode_sweeps_lengths_and_thread_counts():
    config = tiny_config(modes=("scaling",), cells=("rnn_tanh",), peers=("torch",),
                         scaling_shape=(4, 2, 5, 4), lengths=(4, 8), threads_list=(1,))
    rows = bench.run_benchmark(config)["rows"]
    lengths = [r for r in rows if r["sweep"] == "length"]
    threads = [r for r in rows if r["sweep"] == "threads"]
    assert [(r["run"], r["shape"][0]) for r in lengths] == [
        ("training", 4), ("training", 8), ("inference", 4), ("inference", 8)]
    assert [(r["run"], r["threads"]) for r in threads] == [("training", 1), ("inference", 1)]
    for first, second in (lengths[:2], lengths[2:]):
        assert first["per_step_vs_shortest"] == 1.0
        assert second["per_step_vs_shortest"] == pytest.approx(
            second["rnnfast_us_per_step"] / first["rnnfast_us_per_step"])
        assert second["rnnfast_us_per_step"] == pytest.approx(
            second["times_ms"]["rnnfast"] * 1e3 / 8)
        assert first["target_met"] is True
    for row in threads:
        assert row["speedup_vs_first"]["rnnfast"] == 1.0
        assert "onnxruntime" not in row["speedup_vs_first"]   # not asked for


def test_missing_peer_leaves_columns_empty_and_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(peers._imported, "jax", None)
    status = bench.main(["--quick", "--modes", "training", "--cells", "gru", "--shapes",
                         "4,1,3,2", "--peers", "jax", "--no-reference", "--threads", "1",
                         "--min-time", "0.001", "--quiet"])
    assert status == 0
    out, err = capsys.readouterr()
    assert 'jax: jax not installed, its columns stay empty (pip install "rnnfast[bench]")' in err
    assert "| gru | 4,1,3,2 |" in out
    assert "jax ms" not in out


@pytest.mark.parametrize("chosen", [None, ("OMP_WAIT_POLICY", "PASSIVE"),
                                    ("GOMP_SPINCOUNT", "1000")])
def test_rerun_gives_pytorch_gnu_openmp_default_spin_unless_a_policy_is_chosen(
        monkeypatch, chosen):
    """Where PyTorch shares rnnfast's passive runtime the command reruns itself with
    GNU OpenMP's default spin count: not OMP_WAIT_POLICY=ACTIVE, whose threads spin
    for minutes and take a core from the BLAS, JAX and ONNX Runtime pools."""
    executed = []
    monkeypatch.setattr(bench, "import_peer", lambda name: object())
    monkeypatch.setattr(bench, "torch_has_own_openmp", lambda torch: False)
    monkeypatch.setattr(bench.os, "execve",
                        lambda path, argv, env: executed.append((argv, env)))
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    if chosen is not None:
        monkeypatch.setenv(*chosen)
    bench.rerun_on_equal_openmp(("torch",), 2)
    if chosen is not None:
        assert executed == []
        return
    [(argv, env)] = executed
    assert argv[1:] == bench.sys.orig_argv[1:]
    assert env["GOMP_SPINCOUNT"] == "300000"
    assert "OMP_WAIT_POLICY" not in env


def test_plot_draws_a_png_or_says_how_to_get_matplotlib(quick_results, tmp_path,
                                                         monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "speedups.png"
    bench._write_plot(path, quick_results)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def unavailable():
        raise rnnfast.plot.PlotUnavailable("plotting needs matplotlib: pip install x")

    monkeypatch.setattr(rnnfast.plot, "require_matplotlib", unavailable)
    bench._write_plot(tmp_path / "none.png", quick_results)
    assert "no plot: plotting needs matplotlib: pip install x" in capsys.readouterr().err
    assert not (tmp_path / "none.png").exists()


def test_rnnfast_bench_command_is_short_by_default(tmp_path):
    """``rnnfast bench`` runs the short version (inference and training at the two
    smallest shapes); its options are the benchmark's."""
    path = tmp_path / "bench.json"
    done = run_rnnfast(["bench", "--cells", "gru", "--threads", "1", "--peers",
                        "--no-reference", "--min-time", "0.002", "--quiet", "--json", path],
                       cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "| cell | T,B,D,H | rnnfast ms | best peer |" in done.stdout
    rows = json.loads(path.read_text())["rows"]
    assert [(r["mode"], r["shape"]) for r in rows] == [
        (mode, list(shape)) for mode in bench.QUICK_MODES for shape in bench.QUICK_SHAPES]
    assert all(r["best_peer"] is None and r["target_met"] is None for r in rows)

    for bad, message in ((["--threads", "0"], "--threads: expected a positive integer, got 0"),
                         (["--threads-list", "1,x"],
                          "--threads-list: expected positive integers separated by commas, "
                          "got '1,x'"),
                         (["--modes", "fastest"], "--modes: invalid choice: 'fastest'")):
        done = run_rnnfast(["bench", *bad], cwd=tmp_path, timeout=60)
        assert done.returncode == 2
        assert message in done.stderr


# ----------------------------------------------------------------------------- peers

def test_onnx_gate_order_maps_pytorch_blocks():
    H = 2
    labelled = np.repeat(np.arange(4.0), H)[:, None]        # row block k holds k
    assert peers._onnx_gates(labelled, "lstm")[::H, 0].tolist() == [0, 3, 1, 2]   # i o f c
    assert peers._onnx_gates(labelled[:3 * H], "gru")[::H, 0].tolist() == [1, 0, 2]  # z r h
    assert peers._onnx_gates(labelled[:H], "rnn")[::H, 0].tolist() == [0]


@pytest.mark.parametrize("cell", CELLS)
def test_onnxruntime_model_equals_rnnfast(cell):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    problem = peers.make_problem(cell, (5, 3, 4, 6), seed=1)
    expected = peers.runner("rnnfast", problem, 1).infer()
    assert_close(peers.runner("onnxruntime", problem, 1).infer(), expected, np.float32, "y")
    assert peers.runner("onnxruntime", peers.make_problem(cell, (5, 3, 4, 6), np.float64),
                        1) is None                           # float32 kernels only


@pytest.mark.parametrize("peer", ["torch", "jax"])
@pytest.mark.parametrize("cell", CELLS)
def test_peer_outputs_and_gradients_equal_rnnfast(peer, cell):
    """In float64 the peers' cell math must agree with rnnfast's to rounding."""
    pytest.importorskip(peer)
    if not peers.peer_runs_at(peer, 1):
        pytest.skip(f"{peer} runs with another thread count in this process")
    problem = peers.make_problem(cell, (5, 3, 4, 6), np.float64, seed=2)
    ours, theirs = peers.runner("rnnfast", problem, 1), peers.runner(peer, problem, 1)
    assert_close(peers.as_numpy(theirs.infer()), ours.infer(), np.float64, "y")
    expected, got = ours.gradients(), theirs.gradients()
    names = GRAD_NAMES + (("dc0",) if cell == "lstm" else ())
    assert sorted(got) == sorted(expected) == sorted(names)
    for name in names:
        assert_close(got[name], expected[name], np.float64, name)


@pytest.mark.parametrize("peer", bench.PEERS)
@pytest.mark.parametrize("cell", ("rnn_relu", "lstm", "gru"))
def test_peer_streams_equal_rnnfast_stream(peer, cell):
    """Each peer's one-step calls, its state fed back, give rnnfast's stream outputs."""
    if peers.import_peer(peer) is None:
        pytest.skip(f"{peer} is not installed")
    if not peers.peer_runs_at(peer, 1):
        pytest.skip(f"{peer} runs with another thread count in this process")
    problem = peers.make_problem(cell, (6, 1, 5, 5), seed=3)
    expected = np.stack(peers.stream_callable("rnnfast", problem, 1)())
    got = [peers.as_numpy(y).reshape(1, 5) for y in peers.stream_callable(peer, problem, 1)()]
    assert_close(np.stack(got), expected, np.float32, f"{peer} stream")


def test_stream_problems_need_a_batch_of_one():
    with pytest.raises(ValueError, match=r"stream problems have B = 1, got shape \(6, 2, 5, 5\)"):
        peers.stream_callable("rnnfast", peers.make_problem("gru", (6, 2, 5, 5)), 1)
