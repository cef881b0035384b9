"""The training-loop support shared by the ready models (progress bars, Ctrl-C,
time budgets, generator states) and the PNG figures of ``rnnfast.plot``."""

import io
import json
import os
import signal
import stat
import threading

import numpy as np
import pytest

import rnnfast
from rnnfast import plot
from rnnfast._training import (StopOnInterrupt, TimeBudget, generator_state, progress_bar,
                               restore_generator)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_is_silent_when_quiet_or_not_on_a_terminal():
    for file, quiet, shown in [(io.StringIO(), False, False), (Terminal(), True, False),
                               (Terminal(), False, True)]:
        with progress_bar(10, desc="training", unit="step", quiet=quiet, file=file) as bar:
            bar.update(3)
            bar.set_postfix_str("loss 1.25")
            assert bar.disable is not shown
        assert ("loss 1.25" in file.getvalue()) is shown
        assert ("3/10" in file.getvalue()) is shown


def test_first_ctrl_c_requests_a_stop_and_the_second_interrupts(capsys):
    before = signal.getsignal(signal.SIGINT)
    with StopOnInterrupt(message="stopping soon") as stop:
        assert not stop.requested
        signal.raise_signal(signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
    assert "stopping soon" in capsys.readouterr().err
    with StopOnInterrupt() as again:          # reusable; starts without a request
        assert not again.requested


def test_stop_on_interrupt_outside_the_main_thread_leaves_signals_alone():
    before = signal.getsignal(signal.SIGINT)
    seen = []

    def worker():
        with StopOnInterrupt() as stop:
            seen.append((stop.requested, signal.getsignal(signal.SIGINT)))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [(False, before)]


def test_time_budget_counts_time_spent_before():
    unlimited = TimeBudget()
    assert not unlimited.expired() and unlimited.elapsed() >= 0
    assert TimeBudget(10.0, spent=10.0).expired()
    assert not TimeBudget(10.0, spent=9.0).expired()
    assert TimeBudget(5.0, spent=2.0).elapsed() >= 2.0
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="time budget must be a positive number"):
            TimeBudget(bad)


def test_generator_state_round_trips_through_json_and_checkpoints(tmp_path):
    rng = np.random.default_rng(123)
    rng.random(5)
    state = generator_state(rng)
    assert json.loads(json.dumps(state)) == state
    rnnfast.save(tmp_path / "rng.npz", {"rng": state})
    restored = np.random.default_rng(0)
    restore_generator(restored, rnnfast.load(tmp_path / "rng.npz")["rng"])
    assert np.array_equal(restored.random(4), rng.random(4))

    other = np.random.Generator(np.random.MT19937(0))
    with pytest.raises(ValueError, match="must be a MT19937 state, got 'PCG64'"):
        restore_generator(other, state)
    with pytest.raises(ValueError, match="must be a PCG64 state"):
        restore_generator(restored, [1, 2])


def test_plots_are_png_files(tmp_path):
    pytest.importorskip("matplotlib")
    losses = tmp_path / "losses.png"
    plot.plot_losses(losses, {"train": ([1, 2, 3], [2.0, 1.5, 1.2]),
                              "validation": ([1, 2, 3], [2.1, 1.7, 1.6])},
                     xlabel="epoch", title="loss", log_y=True)
    dates = np.arange("2020-01", "2020-07", dtype="datetime64[M]")
    forecast = tmp_path / "forecast.png"
    plot.plot_forecast(forecast, history=(dates[:4], [1.0, 2, 3, 4]),
                       truth=(dates[4:], [5.0, 6]), forecasts={"model": (dates[4:], [5.1, 5.8]),
                                                               "persistence": (dates[4:], [4, 4])},
                       title="forecast", ylabel="value")
    umask = os.umask(0)
    os.umask(umask)
    for path in (losses, forecast):
        assert path.read_bytes()[:8] == PNG_MAGIC
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask   # as open() would
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forecast.png", "losses.png"]


def test_without_matplotlib_plots_say_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    with pytest.raises(plot.PlotUnavailable, match=r"pip install 'rnnfast\[plot\]'"):
        plot.require_matplotlib()
    with pytest.raises(ImportError, match="matplotlib, which is not installed"):
        plot.plot_losses(tmp_path / "x.png", {"train": ([0], [1.0])})
    assert not list(tmp_path.iterdir())
