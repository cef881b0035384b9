"""``rnnfast forecast`` and ``rnnfast predict`` end to end, through ``python -m rnnfast``
in a subprocess, on small CSV files written for each test."""

import json
import math
import os

import numpy as np
import pytest

from conftest import run_rnnfast

FAST = ["--epochs", "3", "--hidden", "4", "--quiet"]


def monthly_csv(path, n=150, seed=0):
    """A noisy seasonal monthly series from January 2000, rows in reverse date order."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values = 20 + 5 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.5, n)
    months = np.datetime64("2000-01", "M") + t
    rows = [f"{month}-01,{value:.3f}" for month, value in zip(months, values)]
    path.write_text("month,sales\n" + "\n".join(reversed(rows)) + "\n", encoding="utf-8")
    return path


def assert_one_line_error(result, status=1):
    """The error line of a failed command: the only line on stderr for an error in the
    command (status 1), the line after the usage for a bad command line (status 2)."""
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("rnnfast") and ": error: " in lines[-1]
    if status == 1:
        assert len(lines) == 1, result.stderr
    return lines[-1]


def test_forecast_json_save_then_predict(tmp_path):
    monthly_csv(tmp_path / "sales.csv")
    result = run_rnnfast(["forecast", "sales.csv", "--column", "sales", "--date-column",
                          "month", "--period", "12", "--horizon", "2", "--json", "scores.json",
                          "--save", "model.npz", *FAST], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "train: first 120 values (2000-01-01 to 2009-12-01); test: last 30 values" \
        in result.stdout
    table = result.stdout[result.stdout.index("held-out evaluation"):].splitlines()
    assert table[1].split() == ["forecaster", "RMSE", "MAE", "best"]
    assert [line.split()[0] for line in table[2:6]] == ["model", "persistence", "seasonal",
                                                        "moving"]

    scores = json.loads((tmp_path / "scores.json").read_text())
    assert set(scores["model"]) == {"rmse", "mae"}
    assert set(scores["baselines"]) == {"persistence", "seasonal_naive", "moving_average"}
    for score in [scores["model"], *scores["baselines"].values()]:
        assert set(score) == {"rmse", "mae"}
        assert all(math.isfinite(value) and value > 0 for value in score.values())
    assert scores["data"]["train"] == 120 and scores["data"]["test"] == 30
    assert scores["data"]["forecasts"] == 30 - 2 + 1
    assert scores["settings"]["window"] == 24 and scores["settings"]["horizon"] == 2

    predicted = run_rnnfast(["predict", "model.npz", "sales.csv", "--column", "sales",
                             "--date-column", "month", "--json", "next.json"], cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert "next 2 values of 'sales' after 2012-06-01" in predicted.stdout
    forecast = json.loads((tmp_path / "next.json").read_text())["forecast"]
    assert [(row["step"], row["date"]) for row in forecast] == [(1, "2012-07-01"),
                                                                 (2, "2012-08-01")]
    for row in forecast:
        assert f"{row['date']}" in predicted.stdout and 10 < row["value"] < 30


def test_forecast_without_period_has_no_seasonal_baseline(tmp_path):
    monthly_csv(tmp_path / "sales.csv", n=100)
    result = run_rnnfast(["forecast", "sales.csv", "--column", "sales", "--window", "12",
                          "--json", "scores.json", *FAST], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert set(scores["baselines"]) == {"persistence", "moving_average"}
    assert "seasonal naive" not in result.stdout


def test_where_selects_one_series_of_a_long_file(tmp_path):
    rows = ["symbol,date,price"]
    for i, month in enumerate(np.datetime64("2000-01", "M") + np.arange(60)):
        rows += [f"A,{month}-01,{100 + i}", f"B,{month}-01,{-i}"]
    (tmp_path / "stocks.csv").write_text("\n".join(rows) + "\n")
    result = run_rnnfast(["forecast", "stocks.csv", "--column", "price", "--date-column",
                          "date", "--where", "symbol=A", "--window", "6", "--json", "s.json",
                          *FAST], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # a straight line rising by 1 a month: persistence is off by exactly 1
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["baselines"]["persistence"] == {"rmse": 1.0, "mae": 1.0}
    assert scores["data"]["where"] == {"symbol": "A"} and scores["data"]["values"] == 60


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    monthly_csv(tmp_path / "sales.csv", n=100)
    result = run_rnnfast(["forecast", "sales.csv", "--column", "sales", "--period", "12",
                          "--plot", "f.png", *FAST], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "f.png").read_bytes().startswith(b"\x89PNG")


def test_plot_without_matplotlib_warns_and_goes_on(tmp_path):
    blocker = tmp_path / "no_matplotlib" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('matplotlib is blocked here')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(blocker.parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                 if p]))
    monthly_csv(tmp_path / "sales.csv", n=100)
    result = run_rnnfast(["forecast", "sales.csv", "--column", "sales", "--window", "12",
                          "--plot", "f.png", *FAST], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "pip install 'rnnfast[plot]'" in result.stderr
    assert "held-out evaluation" in result.stdout and not (tmp_path / "f.png").exists()


BAD_FILES = {
    "text.csv": "month,sales,note\n2000-01-01,1,a\n2000-02-01,x,b\n",
    "header.csv": "month,sales\n",
    "short.csv": "sales\n" + "1\n" * 20,
}


@pytest.mark.parametrize("args, status, message", [
    (["absent.csv", "--column", "sales"], 1, "No such file or directory: 'absent.csv'"),
    (["text.csv", "--column", "price"], 1,
     "'text.csv' has no column 'price'; its columns are: 'month', 'sales', 'note'"),
    (["header.csv", "--column", "sales"], 1, "no values in column 'sales'"),
    (["text.csv", "--column", "sales"], 1, "line 3: column 'sales' holds 'x', not a number"),
    (["text.csv", "--column", "note"], 1, "line 2: column 'note' holds 'a', not a number"),
    (["short.csv", "--column", "sales"], 1, "the series has 20 values"),
    (["text.csv", "--column", "sales", "--where", "symbol=A"], 1,
     "has no where column 'symbol'"),
    (["text.csv", "--column", "sales", "--where", "AAPL"], 2, "COLUMN=VALUE"),
    (["text.csv", "--column", "sales", "--colour", "red"], 2, "unrecognized arguments"),
    (["text.csv", "--column", "sales", "--window", "0"], 2,
     "argument --window: expected a positive integer, got 0"),
    (["text.csv", "--column", "sales", "--test-fraction", "1.5"], 2,
     "argument --test-fraction: expected a fraction between 0 and 1"),
    (["text.csv", "--column", "sales", "--plot", "missing/f.png"], 1,
     "--plot: the directory"),
])
def test_forecast_bad_input(tmp_path, args, status, message):
    for name, content in BAD_FILES.items():
        (tmp_path / name).write_text(content)
    result = run_rnnfast(["forecast", *args], cwd=tmp_path, timeout=60)
    line = assert_one_line_error(result, status=status)
    assert message in line
    if status == 1:
        assert line.startswith("rnnfast forecast: error: ")


def test_predict_bad_input(tmp_path):
    monthly_csv(tmp_path / "sales.csv", n=30)
    (tmp_path / "model.npz").write_text("not a checkpoint")
    result = run_rnnfast(["predict", "model.npz", "sales.csv", "--column", "sales"],
                         cwd=tmp_path, timeout=60)
    assert assert_one_line_error(result).startswith("rnnfast predict: error: ")
    assert "not an rnnfast checkpoint" in result.stderr
    run_rnnfast(["forecast", "sales.csv", "--column", "sales", "--window", "12", "--save",
                 "model.npz", *FAST], cwd=tmp_path, check=True)
    monthly_csv(tmp_path / "recent.csv", n=5)
    short = run_rnnfast(["predict", "model.npz", "recent.csv", "--column", "sales"],
                        cwd=tmp_path, timeout=60)
    assert "reads the last 12 values of a series, but column 'sales' of 'recent.csv' has " \
           "only 5" in assert_one_line_error(short)
    missing = run_rnnfast(["predict", "model.npz", "sales.csv"], cwd=tmp_path, timeout=60)
    assert "--column" in assert_one_line_error(missing, status=2)
