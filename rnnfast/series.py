"""Time series for forecasting, in plain NumPy: one numeric column read from a CSV
file, forecast windows, the scaling a forecaster trains in, the naive baselines a
forecast must beat, and the error metrics.

Conventions
-----------
A series is a 1-D float64 array ``values`` of n observations, equally spaced and in
time order. A forecast is made at an *origin* ``t``: the index of the last observed
value. It reads the ``window`` values ``values[t - window + 1 : t + 1]`` and predicts
the ``horizon`` values ``values[t + 1 : t + horizon + 1]``. Arrays of forecasts are
``(N, horizon)``, one row per origin.

Baselines, for origin t and step h = 1 .. horizon:

- persistence:     ``f[t, h] = values[t]``
- seasonal naive:  ``f[t, h] = values[t + h - period * ceil(h / period)]``, the last
  observed value at the same phase of the period (the value one period earlier for
  h <= period)
- moving average:  ``f[t, h] = mean(values[t - window + 1 : t + 1])``, a flat forecast
  at the mean of the window the model reads
"""

import csv
import datetime
import math
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["Series", "read_csv_series", "parse_where", "parse_date", "regular_step",
           "future_dates", "format_date", "forecast_origins", "windows_at", "targets_at",
           "difference_scale", "to_relative", "from_relative", "persistence_forecast",
           "seasonal_naive_forecast", "moving_average_forecast", "rmse", "mae", "score",
           "holdout_start"]

# Formats tried, in order, for a date column that ``datetime.fromisoformat`` does
# not read; a column is read with the first format that parses all of its values
# (so 01/02/2000 is month/day/year).
DATE_FORMATS = (
    "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d",
    "%b %d %Y", "%B %d %Y", "%b %d, %Y", "%B %d, %Y",
    "%d %b %Y", "%d %B %Y", "%d-%b-%Y",
    "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y",
    "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y",
    "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y",
    "%Y%m%d",
)
ISO_FORMAT = "ISO 8601"


# ----------------------------------------------------------------------------- reading

@dataclass(frozen=True, eq=False)
class Series:
    """One column of a CSV file.

    Attributes
    ----------
    values : ndarray of shape (n,), float64, in time order
    dates : ndarray of shape (n,), datetime64[s], increasing; or None without a date
        column
    column : str, the column's name
    source : str, the file it was read from
    """

    values: np.ndarray
    dates: Optional[np.ndarray]
    column: str
    source: str

    def __len__(self):
        return len(self.values)


def parse_where(text):
    """``"COLUMN=VALUE"`` -> ``("COLUMN", "VALUE")``, both stripped of spaces.

    Raises ``ValueError`` without an ``=`` or with an empty column name.
    """
    column, separator, value = str(text).partition("=")
    column, value = column.strip(), value.strip()
    if not separator or not column:
        raise ValueError(f"where filter must look like COLUMN=VALUE (e.g. symbol=AAPL), "
                         f"got {text!r}")
    return column, value


def read_csv_series(path, column, *, date_column=None, where=None):
    """Read the numeric column ``column`` of the CSV file ``path``.

    The first row is the header. With ``where``, only the rows whose columns hold the
    given values are kept (long-format files, e.g. ``{"symbol": "AAPL"}``). With
    ``date_column``, its values are parsed as dates (ISO 8601 such as ``2010-01-01`` or
    ``2010-01-01T06:00``, ``2010/01/01 00:00``, ``Jan 1 2000``, ``01/31/2000`` and the
    other forms of ``DATE_FORMATS``; one format for the whole column; time zones are
    converted to UTC) and the rows are sorted by date (stably).

    Parameters
    ----------
    path : str or os.PathLike
    column : str
    date_column : str or None
    where : mapping column -> str, or None
        Values are compared as strings, after stripping surrounding spaces.

    Returns
    -------
    Series

    Raises
    ------
    OSError
        The file cannot be opened (FileNotFoundError for a missing file).
    ValueError
        The file has no header, a named column is missing (the message lists the
        available ones), no row is left, a row is short of fields, a value is not a
        finite number (the message gives the line), a date does not parse, or two
        rows share a date.
    """
    path = os.fspath(path)
    where = dict(where or {})
    header, rows = _read_rows(path)
    index = _column_indices(path, header, column, date_column, where)
    rows = [(line, row) for line, row in rows
            if all(_cell(path, line, row, index[name], name) == value
                   for name, value in where.items())]
    if not rows:
        raise ValueError(_no_rows_message(path, column, where))
    lines = [line for line, _ in rows]
    values = np.array([_number(path, line, _cell(path, line, row, index[column], column),
                               column)
                       for line, row in rows], dtype=np.float64)
    dates = None
    if date_column is not None:
        texts = [_cell(path, line, row, index[date_column], date_column)
                 for line, row in rows]
        dates = _parse_date_column(path, date_column, texts, lines)
        order = np.argsort(dates, kind="stable")
        values, dates = values[order], dates[order]
        lines = [lines[i] for i in order]
        _check_unique_dates(path, date_column, dates, lines)
    return Series(values=values, dates=dates, column=column, source=path)


def _read_rows(path):
    """(header, [(line number, fields)]) of a CSV file; blank lines are skipped."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            header = next(reader, None)
            rows = [(reader.line_num, row) for row in reader if row]
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path!r} is not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start})") from None
    except csv.Error as exc:
        raise ValueError(f"{path!r} is not a readable CSV file: {exc}") from None
    if not header or not any(name.strip() for name in header):
        raise ValueError(f"{path!r} is empty: expected a header row naming the columns")
    return [name.strip() for name in header], rows


def _column_indices(path, header, column, date_column, where):
    """{name: field index} of every column named by the arguments."""
    wanted = {column: "column", **{name: "where column" for name in where}}
    if date_column is not None:
        wanted[date_column] = "date column"
    index = {}
    for name, role in wanted.items():
        if name not in header:
            available = ", ".join(repr(field) for field in header)
            raise ValueError(f"{path!r} has no {role} {name!r}; its columns are: "
                             f"{available}")
        index[name] = header.index(name)
    return index


def _cell(path, line, row, index, name):
    if index >= len(row):
        fields = f"{len(row)} field" + ("" if len(row) == 1 else "s")
        raise ValueError(f"{path!r} line {line} has {fields}, so no value for column "
                         f"{name!r} (field {index + 1})")
    return row[index].strip()


def _number(path, line, text, column):
    try:
        value = float(text)
    except ValueError:
        shown = "an empty value" if not text else repr(text)
        raise ValueError(f"{path!r} line {line}: column {column!r} holds {shown}, not a "
                         f"number") from None
    if not math.isfinite(value):
        raise ValueError(f"{path!r} line {line}: column {column!r} holds {text!r}, not a "
                         f"finite number")
    return value


def _no_rows_message(path, column, where):
    if not where:
        return f"{path!r} has no values in column {column!r}: the file has only a header"
    condition = " and ".join(f"{name}={value}" for name, value in where.items())
    return f"{path!r} has no rows where {condition}, so column {column!r} has no values"


def _check_unique_dates(path, date_column, dates, lines):
    """ValueError naming the first two lines that share a date (dates sorted)."""
    same = np.flatnonzero(dates[1:] == dates[:-1])
    if same.size:
        first = same[0]
        raise ValueError(f"{path!r}: lines {lines[first]} and {lines[first + 1]} have the "
                         f"same {date_column!r} {format_date(dates[first])}; a series needs "
                         f"one value per date (for a file holding several series, keep "
                         f"one with a where filter such as symbol=AAPL)")


# ----------------------------------------------------------------------------- dates

def parse_date(text, date_format=ISO_FORMAT):
    """``text`` as a ``numpy.datetime64[s]`` (naive; aware times converted to UTC).

    ``date_format`` is ``ISO_FORMAT`` (``datetime.fromisoformat``) or a ``strptime``
    format. Raises ``ValueError`` when ``text`` does not match.
    """
    if date_format == ISO_FORMAT:
        moment = datetime.datetime.fromisoformat(text)
    else:
        moment = datetime.datetime.strptime(text, date_format)
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return np.datetime64(moment, "s")


def _parse_date_column(path, date_column, texts, lines):
    """datetime64[s] array of ``texts``, all with the first format that reads them all."""
    first_failure = None
    for date_format in (ISO_FORMAT,) + DATE_FORMATS:
        try:
            parse_date(texts[0], date_format)
        except ValueError:
            continue
        dates, failed = _parse_all(texts, date_format)
        if failed is None:
            return dates
        if first_failure is None or failed > first_failure:
            first_failure = failed
    bad = 0 if first_failure is None else first_failure
    raise ValueError(f"{path!r} line {lines[bad]}: column {date_column!r} holds "
                     f"{texts[bad]!r}, not a date in a format the column's other values "
                     f"share (ISO 8601 such as 2010-01-31, 2010/01/31 06:00, Jan 31 2010, "
                     f"01/31/2010, ...)")


def _parse_all(texts, date_format):
    """(dates, None), or (None, index of the first text ``date_format`` cannot read)."""
    dates = np.empty(len(texts), dtype="datetime64[s]")
    for i, text in enumerate(texts):
        try:
            dates[i] = parse_date(text, date_format)
        except ValueError:
            return None, i
    return dates, None


def regular_step(dates):
    """The spacing of ``dates`` when it is regular, else None.

    Returns ``("months", k)`` for dates on the same day of the month and time of day,
    k calendar months apart (monthly, quarterly, yearly data), ``("seconds", s)`` for
    a constant spacing of s seconds, and None for fewer than two dates or irregular
    spacing.
    """
    if dates is None or len(dates) < 2:
        return None
    months = dates.astype("datetime64[M]")
    offsets = dates - months.astype(dates.dtype)          # time since the month began
    month_steps = np.diff(months.astype(np.int64))
    if np.all(offsets == offsets[0]) and month_steps[0] > 0 and np.all(
            month_steps == month_steps[0]):
        return ("months", int(month_steps[0]))
    seconds = np.diff(dates.astype("datetime64[s]").astype(np.int64))
    if seconds[0] > 0 and np.all(seconds == seconds[0]):
        return ("seconds", int(seconds[0]))
    return None


def future_dates(last, step, count):
    """The ``count`` dates after ``last`` at ``step`` (from :func:`regular_step`),
    as datetime64[s] of shape (count,)."""
    last = np.datetime64(last, "s")
    unit, size = step
    ahead = size * np.arange(1, count + 1)
    if unit == "months":
        month = last.astype("datetime64[M]")
        offset = last - month.astype("datetime64[s]")
        return (month + ahead).astype("datetime64[s]") + offset
    return last + ahead.astype("timedelta64[s]")


def format_date(date):
    """``YYYY-MM-DD``, with ``HH:MM`` (and ``:SS``) when the time of day is not 0."""
    text = str(np.datetime64(date, "s")).replace("T", " ")
    if text.endswith(" 00:00:00"):
        return text[:-9]
    return text[:-3] if text.endswith(":00") else text


# ----------------------------------------------------------------------------- windows

def _as_values(values):
    values = np.asarray(values)
    if values.ndim != 1 or values.dtype.kind not in "biuf":
        raise TypeError(f"values must be a 1-D array of numbers, got "
                        f"{values.dtype} array of shape {values.shape}")
    return values.astype(np.float64, copy=False)


def forecast_origins(n, window, horizon, first=None):
    """Origins t (int64 array) with a full window and every target inside a series of
    n values: ``max(first, window - 1) <= t <= n - horizon - 1``."""
    low = window - 1 if first is None else max(first, window - 1)
    return np.arange(low, n - horizon, dtype=np.int64)


def windows_at(values, origins, window):
    """The windows ending at ``origins``: ``(N, window)``, row i =
    ``values[origins[i] - window + 1 : origins[i] + 1]``."""
    values = _as_values(values)
    origins = np.asarray(origins, dtype=np.int64)
    if origins.size and (origins.min() < window - 1 or origins.max() >= len(values)):
        raise ValueError(f"origins must lie in [{window - 1}, {len(values) - 1}] for "
                         f"windows of {window} values in a series of {len(values)}, "
                         f"got [{origins.min()}, {origins.max()}]")
    return values[origins[:, None] + np.arange(1 - window, 1)]


def targets_at(values, origins, horizon):
    """The values after ``origins``: ``(N, horizon)``, row i =
    ``values[origins[i] + 1 : origins[i] + horizon + 1]``."""
    values = _as_values(values)
    origins = np.asarray(origins, dtype=np.int64)
    if origins.size and (origins.min() < 0 or origins.max() + horizon >= len(values)):
        raise ValueError(f"origins must lie in [0, {len(values) - horizon - 1}] for "
                         f"{horizon} targets in a series of {len(values)}, got "
                         f"[{origins.min()}, {origins.max()}]")
    return values[origins[:, None] + np.arange(1, horizon + 1)]


def holdout_start(n, test_fraction, history, horizon=1):
    """Index of the first test value when the last ``test_fraction`` of n values is held
    out: ``n - round(test_fraction * n)``.

    ``history`` is how many values a forecast reads up to its origin (the window, or
    the period if longer): the training part must hold at least that many. The test
    part must hold at least ``horizon`` values. Raises ``ValueError`` otherwise.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), "
                         f"got {test_fraction}")
    held_out = int(round(test_fraction * n))
    if held_out < horizon:
        raise ValueError(f"holding out {test_fraction:g} of {n} values for testing keeps "
                         f"{held_out}, fewer than the horizon of {horizon}: the series is "
                         f"too short or the test fraction too small")
    start = n - held_out
    if start < history:
        raise ValueError(f"the series has {n} values: after holding out the last "
                         f"{held_out} for testing, {start} remain, fewer than the "
                         f"{history} a forecast reads")
    return start


# ----------------------------------------------------------------------------- scaling

def difference_scale(values):
    """The typical size of one step of the series: the standard deviation of its first
    differences ``values[i + 1] - values[i]``; the standard deviation of the values
    when the differences are all equal, and 1 for a constant series."""
    values = _as_values(values)
    for candidate in (np.diff(values), values):
        scale = float(np.std(candidate)) if candidate.size else 0.0
        if scale > 0 and math.isfinite(scale):
            return scale
    return 1.0


def to_relative(windows, scale, futures=None):
    """Windows (and their futures) relative to each window's last value, in units of
    ``scale``: ``(windows - last) / scale`` and ``(futures - last) / scale``.

    Parameters
    ----------
    windows : ndarray of shape (N, window)
    scale : float > 0
    futures : ndarray of shape (N, horizon), or None

    Returns
    -------
    inputs : ndarray of shape (N, window); its last column is 0
    targets : ndarray of shape (N, horizon), or None without ``futures``
    """
    last = windows[:, -1:]                                  # (N, 1)
    inputs = (windows - last) / scale
    targets = None if futures is None else (futures - last) / scale
    return inputs, targets


def from_relative(windows, outputs, scale):
    """Inverse of :func:`to_relative` for forecasts: ``last + outputs * scale``,
    (N, horizon) in the series' units."""
    return windows[:, -1:] + np.asarray(outputs, dtype=np.float64) * scale


# ----------------------------------------------------------------------------- baselines

def _history_check(origins, needed, name):
    if origins.size and origins.min() < needed - 1:
        raise ValueError(f"{name} reads {needed} values up to its origin, so origins must "
                         f"be >= {needed - 1}, got {origins.min()}")


def persistence_forecast(values, origins, horizon):
    """Last value carried forward: ``(N, horizon)``, every step ``values[t]``."""
    values = _as_values(values)
    origins = np.asarray(origins, dtype=np.int64)
    return np.repeat(values[origins][:, None], horizon, axis=1)


def seasonal_naive_forecast(values, origins, horizon, period):
    """The last observed value at the same phase: step h (1-based) of origin t is
    ``values[t + h - period * ceil(h / period)]``; ``(N, horizon)``."""
    values = _as_values(values)
    origins = np.asarray(origins, dtype=np.int64)
    _history_check(origins, period, "the seasonal naive forecast")
    steps = np.arange(1, horizon + 1)
    lags = period * -(-steps // period)                    # period * ceil(h / period)
    return values[origins[:, None] + steps - lags]


def moving_average_forecast(values, origins, horizon, window):
    """The mean of the last ``window`` values, flat over the horizon; ``(N, horizon)``."""
    values = _as_values(values)
    origins = np.asarray(origins, dtype=np.int64)
    _history_check(origins, window, "the moving average")
    means = windows_at(values, origins, window).mean(axis=1)
    return np.repeat(means[:, None], horizon, axis=1)


# ----------------------------------------------------------------------------- metrics

def _errors(forecast, truth):
    forecast, truth = np.asarray(forecast, np.float64), np.asarray(truth, np.float64)
    if forecast.shape != truth.shape:
        raise ValueError(f"forecast and truth must have the same shape, got "
                         f"{forecast.shape} and {truth.shape}")
    if forecast.size == 0:
        raise ValueError("forecast and truth are empty: no error to measure")
    return forecast - truth


def rmse(forecast, truth):
    """Root mean squared error over every origin and step: ``sqrt(mean((f - y)**2))``."""
    return float(np.sqrt(np.mean(_errors(forecast, truth) ** 2)))


def mae(forecast, truth):
    """Mean absolute error over every origin and step: ``mean(|f - y|)``."""
    return float(np.mean(np.abs(_errors(forecast, truth))))


def score(forecast, truth):
    """``{"rmse": rmse(forecast, truth), "mae": mae(forecast, truth)}``."""
    return {"rmse": rmse(forecast, truth), "mae": mae(forecast, truth)}
