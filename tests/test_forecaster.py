"""Time series and the Forecaster: CSV reading, windows, baselines and metrics on
hand-checked series, and the model's training, forecasts, checkpoints, determinism and
argument checks."""

import signal

import numpy as np
import pytest

import rnnfast
from rnnfast import series
from rnnfast.models import Forecaster
from rnnfast.models import forecaster as forecaster_module


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def seasonal_series(seed, n=360, period=12, noise=0.5):
    """A seasonal series with a trend and white noise: the best forecast of each value
    is the seasonal mean, which no naive baseline gives."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return (10 + 4 * np.sin(2 * np.pi * t / period) + 2 * np.cos(4 * np.pi * t / period)
            + 0.02 * t + rng.normal(0, noise, n))


def small_model(**options):
    return Forecaster(**{"window": 12, "hidden_size": 4, **options})


# ----------------------------------------------------------------------------- CSV

def test_read_column_with_iso_dates_sorts_rows(tmp_path):
    path = write(tmp_path / "s.csv", "when,value,other\n2020-01-03,3.5,x\n2020-01-01,1,y\n"
                                     "\n2020-01-02 , -2e1 ,z\n")
    data = series.read_csv_series(path, "value", date_column="when")
    np.testing.assert_array_equal(data.values, [1.0, -20.0, 3.5])
    np.testing.assert_array_equal(data.dates, np.array(
        ["2020-01-01", "2020-01-02", "2020-01-03"], dtype="datetime64[s]"))
    assert (data.column, data.source, len(data)) == ("value", str(path), 3)


def test_read_column_without_dates_keeps_file_order(tmp_path):
    path = write(tmp_path / "s.csv", "a,b\n1,5\n2,4\n3,3\n")
    data = series.read_csv_series(path, "b")
    np.testing.assert_array_equal(data.values, [5.0, 4.0, 3.0])
    assert data.dates is None


@pytest.mark.parametrize("texts, expected", [
    (["2010/01/01 00:00", "2010/01/01 01:00"], ["2010-01-01T00:00", "2010-01-01T01:00"]),
    (["Jan 1 2000", "Feb 1 2000"], ["2000-01-01", "2000-02-01"]),
    (["2000-01-31T06:30:00", "2000-02-01T06:30:00"], ["2000-01-31T06:30", "2000-02-01T06:30"]),
    (["01/31/2000", "02/01/2000"], ["2000-01-31", "2000-02-01"]),
    (["31/01/2000", "01/02/2000"], ["2000-01-31", "2000-02-01"]),
    (["2000-01-01T01:00+01:00", "2000-01-01T02:00+01:00"], ["2000-01-01T00:00",
                                                            "2000-01-01T01:00"]),
])
def test_date_formats(tmp_path, texts, expected):
    rows = "".join(f'"{text}",{i}\n' for i, text in enumerate(texts))
    data = series.read_csv_series(write(tmp_path / "d.csv", "date,v\n" + rows), "v",
                                  date_column="date")
    np.testing.assert_array_equal(data.dates, np.array(expected, dtype="datetime64[s]"))


def test_where_filter_keeps_one_series_of_a_long_file(tmp_path):
    path = write(tmp_path / "stocks.csv", "symbol,date,price\nA,Feb 1 2000,2\nB,Jan 1 2000,9\n"
                                          "A,Jan 1 2000,1\nB,Feb 1 2000,8\n")
    data = series.read_csv_series(path, "price", date_column="date", where={"symbol": "A"})
    np.testing.assert_array_equal(data.values, [1.0, 2.0])
    with pytest.raises(ValueError, match=r"lines 3 and 4 have the same 'date' 2000-01-01.*"
                                         r"symbol=AAPL"):
        series.read_csv_series(path, "price", date_column="date")
    with pytest.raises(ValueError, match=r"no rows where symbol=C"):
        series.read_csv_series(path, "price", where={"symbol": "C"})


@pytest.mark.parametrize("text", ["symbol=AAPL", " symbol = AAPL "])
def test_parse_where(text):
    assert series.parse_where(text) == ("symbol", "AAPL")


@pytest.mark.parametrize("text", ["symbol", "=AAPL", ""])
def test_parse_where_refuses_malformed_filters(text):
    with pytest.raises(ValueError, match="COLUMN=VALUE"):
        series.parse_where(text)


@pytest.mark.parametrize("content, options, message", [
    ("a,b\n1,2\n", {"column": "c"}, r"has no column 'c'; its columns are: 'a', 'b'"),
    ("a,b\n1,2\n", {"column": "a", "date_column": "d"}, r"has no date column 'd'"),
    ("a,b\n1,2\n", {"column": "a", "where": {"s": "x"}}, r"has no where column 's'"),
    ("a,b\n", {"column": "a"}, r"no values in column 'a'"),
    ("", {"column": "a"}, r"is empty: expected a header row"),
    ("a,b\n1,2\n3,x\n", {"column": "b"}, r"line 3: column 'b' holds 'x', not a number"),
    ("a,b\n1,2\n3,\n", {"column": "b"}, r"line 3: column 'b' holds an empty value"),
    ("a,b\n1,nan\n", {"column": "b"}, r"line 2: column 'b' holds 'nan', not a finite"),
    ("a,b\n1,2\n3\n", {"column": "b"}, r"line 3 has 1 field, so no value for column 'b'"),
    ("d,v\n2000-01-01,1\nyesterday,2\n", {"column": "v", "date_column": "d"},
     r"line 3: column 'd' holds 'yesterday', not a date"),
])
def test_read_errors_name_file_column_and_line(tmp_path, content, options, message):
    path = write(tmp_path / "bad.csv", content)
    with pytest.raises(ValueError, match=message) as error:
        series.read_csv_series(path, **options)
    assert str(path) in str(error.value)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        series.read_csv_series(tmp_path / "absent.csv", "a")


def test_regular_step_and_future_dates():
    monthly = np.array(["2000-01-01", "2000-02-01", "2000-03-01"], dtype="datetime64[s]")
    assert series.regular_step(monthly) == ("months", 1)
    np.testing.assert_array_equal(series.future_dates(monthly[-1], ("months", 1), 2),
                                  np.array(["2000-04-01", "2000-05-01"], "datetime64[s]"))
    hourly = np.array(["2000-01-01T22", "2000-01-01T23"], dtype="datetime64[s]")
    assert series.regular_step(hourly) == ("seconds", 3600)
    assert series.format_date(series.future_dates(hourly[-1], ("seconds", 3600), 1)[0]) \
        == "2000-01-02"
    irregular = np.array(["2000-01-01", "2000-01-02", "2000-01-04"], dtype="datetime64[s]")
    assert series.regular_step(irregular) is None


# ----------------------------------------------------------------- windows and baselines

VALUES = np.array([1.0, 2.0, 4.0, 7.0, 11.0, 16.0])


def test_windows_and_targets():
    origins = series.forecast_origins(len(VALUES), window=3, horizon=2)
    np.testing.assert_array_equal(origins, [2, 3])
    np.testing.assert_array_equal(series.windows_at(VALUES, origins, 3),
                                  [[1, 2, 4], [2, 4, 7]])
    np.testing.assert_array_equal(series.targets_at(VALUES, origins, 2), [[7, 11], [11, 16]])
    np.testing.assert_array_equal(series.forecast_origins(6, 3, 2, first=3), [3])


def test_baselines_on_a_hand_checked_series():
    origins = np.array([2, 3])
    np.testing.assert_array_equal(series.persistence_forecast(VALUES, origins, 2),
                                  [[4, 4], [7, 7]])
    # period 2: steps 1, 2, 3 read t-1, t, t-1
    np.testing.assert_array_equal(series.seasonal_naive_forecast(VALUES, origins, 3, 2),
                                  [[2, 4, 2], [4, 7, 4]])
    np.testing.assert_allclose(series.moving_average_forecast(VALUES, origins, 2, 3),
                               [[7 / 3, 7 / 3], [13 / 3, 13 / 3]])
    with pytest.raises(ValueError, match="origins must be >= 3"):
        series.seasonal_naive_forecast(VALUES, origins, 1, 4)


def test_metrics():
    forecast, truth = np.array([[1.0, 2.0], [3.0, 3.0]]), np.array([[1.0, 4.0], [3.0, 2.0]])
    assert series.rmse(forecast, truth) == pytest.approx(np.sqrt(5 / 4))
    assert series.mae(forecast, truth) == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="same shape"):
        series.rmse(forecast, truth[:1])


def test_relative_scaling_round_trip():
    windows = np.array([[1.0, 3.0, 2.0]])
    inputs, targets = series.to_relative(windows, 2.0, np.array([[4.0, 0.0]]))
    np.testing.assert_array_equal(inputs, [[-0.5, 0.5, 0.0]])
    np.testing.assert_array_equal(targets, [[1.0, -1.0]])
    np.testing.assert_array_equal(series.from_relative(windows, targets, 2.0), [[4.0, 0.0]])
    assert series.difference_scale([0.0, 1.0, 2.0, 1.0, 0.0]) == 1.0    # steps +-1
    assert series.difference_scale([1.0, 2.0, 3.0]) == pytest.approx(np.std([1, 2, 3]))
    assert series.difference_scale([5.0, 5.0, 5.0]) == 1.0


def test_holdout_start():
    assert series.holdout_start(100, 0.2, history=24) == 80
    with pytest.raises(ValueError, match="fewer than the 24 a forecast reads"):
        series.holdout_start(25, 0.2, history=24)
    with pytest.raises(ValueError, match="fewer than the horizon of 30"):
        series.holdout_start(100, 0.2, history=24, horizon=30)


# ----------------------------------------------------------------------------- the model

@pytest.fixture(scope="module")
def trained():
    """A small model fitted on a seasonal series, and that series."""
    values = seasonal_series(0, n=240)
    model = Forecaster(period=12, hidden_size=8, seed=3)
    model.fit(values[:192], epochs=8)
    return model, values


def test_fit_predict_shapes_and_history(trained):
    model, values = trained
    assert model.window == 24 and model.history_length == 24
    assert model.predict(values).shape == (1,)
    assert model.predict_windows(np.stack([values[:24], values[1:25]])).shape == (2, 1)
    history = model.history
    assert history["epochs_run"] == len(history["train_loss"]) == len(history["val_loss"])
    assert history["val_windows"] >= 8 and history["train_windows"] > 100
    assert 0 <= history["best_epoch"] <= history["epochs_run"]


def test_multi_step_forecasts_with_every_cell():
    values = seasonal_series(1, n=120)
    for cell in ("gru", "rnn"):
        model = small_model(cell=cell, horizon=3, num_layers=2)
        model.fit(values[:100], epochs=2)
        assert model.predict(values).shape == (3,)
        report = model.evaluate(values, 100)
        assert report["origins"] == 120 - model.horizon - 99    # origins 99 .. 116
        assert set(report["baselines"]) == {"persistence", "moving_average"}


def test_save_load_round_trip(trained, tmp_path):
    model, values = trained
    model.save(tmp_path / "f.npz")
    loaded = Forecaster.load(tmp_path / "f.npz")
    assert loaded.config() == model.config()
    assert loaded.scale == model.scale and loaded.history == model.history
    windows = series.windows_at(values, np.arange(23, 239), 24)
    np.testing.assert_array_equal(loaded.predict_windows(windows),
                                  model.predict_windows(windows))


def test_load_refuses_other_checkpoints(tmp_path):
    rnnfast.save(tmp_path / "lstm.npz", {"lstm": rnnfast.LSTM(1, 2)})
    with pytest.raises(rnnfast.CheckpointError, match="not a Forecaster's"):
        Forecaster.load(tmp_path / "lstm.npz")


def test_same_seed_same_model_bit_for_bit():
    values = seasonal_series(2, n=150)
    forecasts = []
    for seed in (5, 5, 6):
        model = small_model(seed=seed)
        model.fit(values[:120], epochs=3)
        forecasts.append(model.predict_windows(series.windows_at(values, np.arange(11, 150),
                                                                 12)))
    assert np.array_equal(forecasts[0], forecasts[1])
    assert not np.array_equal(forecasts[0], forecasts[2])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beats_every_baseline_on_a_noisy_seasonal_series(seed):
    values = seasonal_series(seed)
    model = Forecaster(period=12, hidden_size=8, seed=seed)
    model.fit(values[:270], epochs=30)
    report = model.evaluate(values, 270)
    assert set(report["baselines"]) == {"persistence", "seasonal_naive", "moving_average"}
    for baseline in report["baselines"].values():
        assert report["model"]["rmse"] < 0.9 * baseline["rmse"]
        assert report["model"]["mae"] < 0.9 * baseline["mae"]


def test_random_walk_falls_back_to_persistence():
    values = np.cumsum(np.random.default_rng(0).normal(size=120))
    model = small_model()
    history = model.fit(values[:100], epochs=10)
    assert history["beats_persistence"] is False and history["best_epoch"] == 0
    origins, truth, forecasts = model.backtest(values, 100)
    np.testing.assert_allclose(forecasts["model"], forecasts["persistence"], rtol=0, atol=0)


def test_without_validation_keeps_the_last_epoch():
    model = small_model()
    history = model.fit(seasonal_series(0, n=80), epochs=2, val_fraction=0)
    assert history["val_windows"] == 0 and history["val_loss"] == []
    assert history["best_epoch"] == 2 and history["beats_persistence"] is None


def test_interrupt_stops_after_the_current_batch_and_keeps_the_best_weights(monkeypatch):
    calls = []

    def interrupting_loss(prediction, target):
        calls.append(None)
        if len(calls) == 5:              # during the second epoch (3 batches per epoch)
            signal.raise_signal(signal.SIGINT)
        return rnnfast.mse_loss(prediction, target)

    monkeypatch.setattr(forecaster_module, "mse_loss", interrupting_loss)
    values = seasonal_series(0, n=200)
    model = small_model(period=12)
    history = model.fit(values[:150], epochs=10, batch_size=40)
    assert len(calls) == 5
    assert history["stopped"] == "interrupted" and history["epochs_run"] == 1
    assert history["best_epoch"] in (0, 1)


@pytest.mark.parametrize("options, error, message", [
    ({"window": 1}, ValueError, "window must be >= 2, got 1"),
    ({"window": 2.5}, TypeError, "window must be an integer"),
    ({"horizon": 0}, ValueError, "horizon must be >= 1"),
    ({"period": 1}, ValueError, "period must be >= 2"),
    ({"cell": "transformer"}, ValueError, "cell must be one of 'lstm', 'gru', 'rnn'"),
    ({"hidden_size": 0}, ValueError, "hidden_size must be >= 1"),
    ({"seed": -1}, ValueError, "seed must be >= 0"),
])
def test_constructor_validation(options, error, message):
    with pytest.raises(error, match=message):
        Forecaster(**options)


@pytest.mark.parametrize("values, options, error, message", [
    (np.arange(30.0), {}, ValueError, r"training series has 30 values, too few .* at least 33"),
    (np.ones((10, 2)), {}, ValueError, r"values must be 1-D \(n,\), got shape \(10, 2\)"),
    (["a", "b"], {}, TypeError, "values must be a 1-D array of real numbers"),
    (np.r_[np.arange(50.0), np.nan], {}, ValueError, "finite numbers, got nan at index 50"),
    (np.arange(80.0), {"val_fraction": 1.0}, ValueError, r"val_fraction must be a finite "
                                                           r"number in \[0, 1\)"),
    (np.arange(80.0), {"lr": 0}, ValueError, r"lr must be a finite number in \(0, inf\)"),
    (np.arange(80.0), {"epochs": 0}, ValueError, "epochs must be >= 1"),
])
def test_fit_validation(values, options, error, message):
    with pytest.raises(error, match=message):
        small_model(window=24).fit(values, **options)


def test_forecasts_need_a_trained_model_and_enough_values(trained):
    with pytest.raises(ValueError, match=r"predict_windows needs a trained model"):
        small_model().predict(np.arange(20.0))
    model, values = trained
    with pytest.raises(ValueError, match="at least window = 24 values, got 10"):
        model.predict(values[:10])
    with pytest.raises(ValueError, match=r"windows must have shape \(N, window\) = \(N, 24\)"):
        model.predict_windows(values[None, :10])
    with pytest.raises(ValueError, match=r"start must lie in \[24, 239\]"):
        model.evaluate(values, 10)
