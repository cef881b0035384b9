"""Time-series subcommands: ``forecast`` trains a :class:`rnnfast.models.Forecaster` on
one column of a CSV file and scores it against naive baselines on the held-out end of
the series; ``predict`` forecasts the values after a series with a saved model.
"""

import argparse
import json
import os
import shlex
import sys
import time

import numpy as np

from .. import series
from ..io import write_atomically
from ..models.forecaster import CELLS, DEFAULT_WINDOW, PERIODS_PER_WINDOW, Forecaster
from ..plot import plot_forecast, plot_path_or_none
from .._argtypes import fraction, non_negative_int, open_fraction, positive_float, positive_int
from ._errors import CLIError

# Forecaster and Forecaster.fit defaults, shown in --help.
MODEL_DEFAULTS = {"horizon": 1, "cell": "lstm", "hidden": 32, "layers": 1, "seed": 0}
FIT_DEFAULTS = {"epochs": 60, "lr": 3e-3, "batch_size": 64, "val_fraction": 0.2,
                "patience": 10}
TEST_FRACTION = 0.2
PLOT_TEST_VALUES = 240      # held-out values drawn by --plot, at most
BASELINE_LABELS = {"persistence": "persistence", "seasonal_naive": "seasonal naive",
                   "moving_average": "moving average"}


def register(subparsers):
    _add_forecast(subparsers)
    _add_predict(subparsers)


# ----------------------------------------------------------------------------- parsers

def _where(text):
    """argparse type of ``--where COLUMN=VALUE``."""
    try:
        return series.parse_where(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_series_options(parser):
    parser.add_argument("csv", metavar="CSV", help="the CSV file (first row: column names)")
    parser.add_argument("--column", required=True, metavar="NAME",
                        help="the numeric column to forecast")
    parser.add_argument("--date-column", metavar="NAME",
                        help="a column of dates (ISO 2010-01-31, 2010/01/31 06:00, "
                             "Jan 31 2010, ...); rows are sorted by it")
    parser.add_argument("--where", type=_where, action="append", default=[],
                        metavar="COLUMN=VALUE",
                        help="keep only the rows where COLUMN holds VALUE (for files "
                             "holding several series, e.g. symbol=AAPL); repeatable")


def _add_forecast(subparsers):
    parser = subparsers.add_parser(
        "forecast", help="train a recurrent forecaster on a CSV column and compare it with "
                         "naive baselines on held-out data",
        description="Train a recurrent network to predict the next --horizon values of a "
                    "series from its last --window values, on all but the last "
                    "--test-fraction of the series, then score it on that held-out end "
                    "(RMSE and MAE in the series' units, over every forecast whose "
                    "targets lie there) against the persistence forecast (the last "
                    "value), the seasonal naive forecast (the value one period earlier; "
                    "with --period) and the moving average of the window.",
        epilog="The end of the training part validates each epoch and the best epoch's "
               "weights are kept, unless they beat the persistence forecast there by no "
               "more than noise: the model then forecasts persistence. Ctrl-C stops "
               "training early and goes on with the best weights so far.")
    _add_series_options(parser)
    model = parser.add_argument_group("model")
    model.add_argument("--window", type=positive_int, metavar="N",
                       help=f"values read per forecast (default: {PERIODS_PER_WINDOW} "
                            f"periods with --period, else {DEFAULT_WINDOW})")
    model.add_argument("--horizon", type=positive_int, default=MODEL_DEFAULTS["horizon"],
                       metavar="N", help="values predicted at once (default: %(default)s)")
    model.add_argument("--period", type=positive_int, metavar="N",
                       help="seasonal period in steps, e.g. 24 for hourly data with a "
                            "daily cycle, 12 for monthly data (default: none)")
    model.add_argument("--cell", choices=sorted(CELLS), default=MODEL_DEFAULTS["cell"],
                       help="recurrent cell (default: %(default)s)")
    model.add_argument("--hidden", type=positive_int, default=MODEL_DEFAULTS["hidden"],
                       metavar="N", help="hidden units per layer (default: %(default)s)")
    model.add_argument("--layers", type=positive_int, default=MODEL_DEFAULTS["layers"],
                       metavar="N", help="recurrent layers (default: %(default)s)")
    model.add_argument("--seed", type=non_negative_int, default=MODEL_DEFAULTS["seed"],
                       help="seed of the weights and the training order (default: "
                            "%(default)s)")
    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=positive_int, default=FIT_DEFAULTS["epochs"],
                          metavar="N", help="most epochs (default: %(default)s)")
    training.add_argument("--lr", type=positive_float, default=FIT_DEFAULTS["lr"],
                          help="Adam's learning rate (default: %(default)g)")
    training.add_argument("--batch-size", type=positive_int,
                          default=FIT_DEFAULTS["batch_size"], metavar="N",
                          help="windows per step (default: %(default)s)")
    training.add_argument("--val-fraction", type=fraction,
                          default=FIT_DEFAULTS["val_fraction"], metavar="F",
                          help="end of the training part that validates, in [0, 1) "
                               "(default: %(default)g)")
    training.add_argument("--patience", type=positive_int, default=FIT_DEFAULTS["patience"],
                          metavar="N", help="epochs without a better validation error "
                                            "before stopping (default: %(default)s)")
    output = parser.add_argument_group("evaluation and output")
    output.add_argument("--test-fraction", type=open_fraction, default=TEST_FRACTION,
                        metavar="F", help="end of the series held out for the evaluation, "
                                          "between 0 and 1 (default: %(default)g)")
    output.add_argument("--json", metavar="PATH", help="write the scores as JSON")
    output.add_argument("--plot", metavar="PNG",
                        help="draw the forecasts over the held-out part (needs matplotlib)")
    output.add_argument("--save", metavar="PATH",
                        help="write the trained model, for 'rnnfast predict'")
    output.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_forecast)


def _add_predict(subparsers):
    parser = subparsers.add_parser(
        "predict", help="forecast the values after the end of a CSV column with a saved "
                        "model",
        description="Forecast the next values of a series with a model saved by "
                    "'rnnfast forecast --save', from the last values of the column "
                    "(as many as the model's window). With --date-column and regularly "
                    "spaced dates, each forecast gets its date.")
    parser.add_argument("checkpoint", metavar="CKPT", help="the model (.npz)")
    _add_series_options(parser)
    parser.add_argument("--json", metavar="PATH", help="write the forecast as JSON")
    parser.set_defaults(handler=run_predict)


# ----------------------------------------------------------------------------- forecast

def run_forecast(args):
    for option in ("json", "plot", "save"):
        _check_output_directory(option, getattr(args, option))
    plot = plot_path_or_none(args.plot, "rnnfast forecast")
    data = _read_series(args)
    model = Forecaster(args.window, args.horizon, period=args.period, cell=args.cell,
                       hidden_size=args.hidden, num_layers=args.layers, seed=args.seed)
    start = series.holdout_start(len(data), args.test_fraction, model.history_length,
                                 model.horizon)
    print(_describe_data(data, start))
    print(_describe_model(model), flush=True)
    began = time.perf_counter()
    history = model.fit(data.values[:start], epochs=args.epochs, lr=args.lr,
                        batch_size=args.batch_size, val_fraction=args.val_fraction,
                        patience=args.patience, quiet=args.quiet)
    seconds = time.perf_counter() - began
    if history["stopped"] == "interrupted":
        print("rnnfast forecast: training interrupted; going on with the best weights so "
              "far", file=sys.stderr)
    print(_describe_training(history, seconds))
    origins, truth, forecasts = model.backtest(data.values, start)
    scores = {name: series.score(forecast, truth) for name, forecast in forecasts.items()}
    print()
    print(_score_table(scores, len(origins), model.horizon))
    if args.json is not None:
        _write_json(args.json, _forecast_report(args, data, model, start, len(origins),
                                                history, seconds, scores))
    if plot is not None:
        _plot(plot, _series_label(data, args.where), data, model, start, origins, forecasts,
              scores)
        print(f"plot written to {plot}")
    if args.save is not None:
        model.save(args.save)
        print(f"model written to {args.save}; forecast what follows the series with:\n"
              f"  {_predict_command(args)}")
    return 0


def _predict_command(args):
    """The ``rnnfast predict`` command line for the saved model and this series."""
    words = ["rnnfast", "predict", args.save, args.csv, "--column", args.column]
    if args.date_column is not None:
        words += ["--date-column", args.date_column]
    for column, value in args.where:
        words += ["--where", f"{column}={value}"]
    return " ".join(shlex.quote(word) for word in words)


def _check_output_directory(option, path):
    """CLIError before any work if ``path``'s directory does not exist."""
    if path is None:
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CLIError(f"--{option}: the directory {directory!r} does not exist")


def _read_series(args):
    return series.read_csv_series(args.csv, args.column, date_column=args.date_column,
                                  where=dict(args.where))


def _span(data, first, last):
    """' (DATE to DATE)' for rows first..last of a dated series, else ''."""
    if data.dates is None:
        return ""
    return (f" ({series.format_date(data.dates[first])} to "
            f"{series.format_date(data.dates[last])})")


def _describe_data(data, start):
    n = len(data)
    return (f"series: {data.source}, column {data.column!r}: {n} values{_span(data, 0, n - 1)}\n"
            f"train: first {start} values{_span(data, 0, start - 1)}; test: last "
            f"{n - start} values{_span(data, start, n - 1)}")


def _describe_model(model):
    layers = f"{model.num_layers} layer" + ("s" if model.num_layers > 1 else "")
    period = f", period {model.period}" if model.period is not None else ""
    return (f"model: {model.cell.upper()}, {model.hidden_size} hidden units, {layers}; "
            f"window {model.window}, horizon {model.horizon}{period}")


def _describe_training(history, seconds):
    reasons = {"epochs": "all epochs run", "interrupted": "interrupted",
               "patience": "stopped early: the validation error no longer improved"}
    text = (f"training: {history['epochs_run']} epochs in {seconds:.1f} s "
            f"({reasons[history['stopped']]}), {history['train_windows']} training and "
            f"{history['val_windows']} validation windows")
    if history["beats_persistence"] is None:
        return text + "; kept the last epoch's weights"
    if not history["beats_persistence"]:
        return text + ("; no epoch beat the persistence forecast on the validation "
                       "windows by more than noise, so the model forecasts persistence")
    best = history["best_epoch"]
    return (text + f"; kept epoch {best} (validation error "
            f"{history['val_loss'][best - 1]:.4g} vs {history['initial_val_loss']:.4g} for "
            f"persistence, in squared typical steps)")


def _best(scores, metric):
    """The names of the forecasters with the lowest ``metric`` (several on a tie, as
    when the model falls back to persistence)."""
    lowest = min(score[metric] for score in scores.values())
    return [name for name, score in scores.items() if score[metric] == lowest]


def _decimals(numbers):
    """Decimals that show 4 significant digits of the smallest of ``numbers``."""
    smallest = min((abs(x) for x in numbers if x != 0), default=1.0)
    return int(min(max(3 - np.floor(np.log10(smallest)), 0), 10))


def _score_table(scores, origins, horizon):
    """The scores as an aligned table, with the best forecaster per metric marked."""
    labels = {"model": "model", **BASELINE_LABELS}
    decimals = _decimals([value for score in scores.values() for value in score.values()])
    best = {metric: _best(scores, metric) for metric in ("rmse", "mae")}
    cells = [[labels[name], f"{score['rmse']:.{decimals}f}", f"{score['mae']:.{decimals}f}",
              " ".join(metric.upper() for metric in ("rmse", "mae") if name in best[metric])]
             for name, score in scores.items()]
    header = ["forecaster", "RMSE", "MAE", "best"]
    widths = [max(len(row[i]) for row in cells + [header]) for i in range(4)]
    steps = f"{horizon} steps each" if horizon > 1 else "1 step each"
    lines = [f"held-out evaluation: {origins} forecasts, {steps}, in the series' units"]
    for row in [header] + cells:
        lines.append(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}"
                     f"  {row[3]}".rstrip())
    return "\n".join(lines)


def _forecast_report(args, data, model, start, forecasts, history, seconds, scores):
    """The --json document."""
    baselines = {name: score for name, score in scores.items() if name != "model"}
    return {"model": scores["model"], "baselines": baselines,
            "best": {metric: _best(scores, metric) for metric in ("rmse", "mae")},
            "data": {"csv": data.source, "column": data.column, "where": dict(args.where),
                     "values": len(data), "train": start, "test": len(data) - start,
                     "forecasts": forecasts},
            "settings": {**model.config(), "epochs": args.epochs, "lr": args.lr,
                         "batch_size": args.batch_size, "val_fraction": args.val_fraction,
                         "patience": args.patience, "test_fraction": args.test_fraction},
            "training": {"epochs_run": history["epochs_run"],
                         "best_epoch": history["best_epoch"], "stopped": history["stopped"],
                         "beats_persistence": history["beats_persistence"],
                         "seconds": round(seconds, 3)}}


def _write_json(path, document):
    text = json.dumps(document, indent=2, allow_nan=False) + "\n"
    write_atomically(path, lambda file: file.write(text.encode("utf-8")))


def _series_label(data, where):
    """``file: column``, with the where filters: ``stocks.csv: price (symbol=AAPL)``."""
    filters = ", ".join(f"{column}={value}" for column, value in where)
    return (f"{os.path.basename(data.source)}: {data.column}"
            + (f" ({filters})" if filters else ""))


def _plot(path, label, data, model, start, origins, forecasts, scores):
    """The start of the held-out part (at most ``PLOT_TEST_VALUES`` values) with half
    as much history before it, and the forecasts of the model and of the best
    baseline there: blocks of ``horizon`` values made every ``horizon`` steps. The
    truth line starts at the last history value, so that the two join."""
    x = data.dates if data.dates is not None else np.arange(len(data))
    shown = min(len(data) - start, max(PLOT_TEST_VALUES, model.horizon))
    rows = np.arange(0, shown - model.horizon + 1, model.horizon)  # origins start-1, +H, ...
    covered = (origins[rows][:, None] + np.arange(1, model.horizon + 1)).ravel()  # (K*H,)
    baseline = _best({name: score for name, score in scores.items() if name != "model"},
                     "rmse")[0]
    lines = {f"{label} (RMSE {scores[name]['rmse']:.4g})":
             (x[covered], forecasts[name][rows].ravel())
             for name, label in (("model", "model"), (baseline, BASELINE_LABELS[baseline]))}
    ahead = (f"{model.horizon} steps ahead from every {model.horizon}th value"
             if model.horizon > 1 else "one step ahead")
    end = start + shown
    plot_forecast(path, history=(x[max(0, start - shown // 2):start],
                                 data.values[max(0, start - shown // 2):start]),
                  truth=(x[start - 1:end], data.values[start - 1:end]), forecasts=lines,
                  title=f"{label}, forecasts of the first {shown} of {len(data) - start} "
                        f"held-out values, {ahead}",
                  ylabel=data.column, xlabel="date" if data.dates is not None else "index")


# ----------------------------------------------------------------------------- predict

def run_predict(args):
    model = Forecaster.load(args.checkpoint)
    data = _read_series(args)
    if len(data) < model.window:
        raise CLIError(f"the model reads the last {model.window} values of a series, "
                           f"but column {data.column!r} of {data.source!r} has only "
                           f"{len(data)}")
    forecast = model.predict(data.values)
    dates = _forecast_dates(data, model.window, model.horizon)
    after = f" after {series.format_date(data.dates[-1])}" if data.dates is not None else ""
    print(f"next {model.horizon} value{'s' if model.horizon > 1 else ''} of "
          f"{data.column!r}{after}, from its last {model.window} values "
          f"({len(data)} read from {data.source}):")
    print(_forecast_table(forecast, dates))
    if data.dates is not None and dates is None:
        print(f"(the last {model.window} dates are not regularly spaced, so the forecasts "
              f"have no dates)")
    if args.json is not None:
        _write_json(args.json, {
            "column": data.column, "csv": data.source, "horizon": model.horizon,
            "last_date": None if data.dates is None else series.format_date(data.dates[-1]),
            "forecast": [{"step": step, "date": None if dates is None else
                          series.format_date(dates[step - 1]), "value": float(value)}
                         for step, value in enumerate(forecast, start=1)]})
    return 0


def _forecast_dates(data, window, horizon):
    """The dates of the forecasts when the window's dates are regularly spaced, else
    None."""
    if data.dates is None:
        return None
    step = series.regular_step(data.dates[-window:])
    return None if step is None else series.future_dates(data.dates[-1], step, horizon)


def _forecast_table(forecast, dates):
    decimals = _decimals(forecast)
    rows = [[str(step)] + ([] if dates is None else [series.format_date(dates[step - 1])])
            + [f"{value:.{decimals}f}"] for step, value in enumerate(forecast, start=1)]
    header = ["step"] + ([] if dates is None else ["date"]) + ["forecast"]
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(len(header))]
    lines = []
    for row in [header] + rows:
        cells = [row[0].rjust(widths[0])] + [cell.ljust(width) for cell, width in
                                             zip(row[1:-1], widths[1:-1])]
        lines.append("  ".join(cells + [row[-1].rjust(widths[-1])]))
    return "\n".join(lines)
