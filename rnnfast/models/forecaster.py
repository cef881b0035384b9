"""``Forecaster``: a recurrent network that reads the last ``window`` values of a time
series and predicts the next ``horizon`` values at once.

Model
-----
For a forecast origin t (the index of the last observed value) with window
``w = values[t - window + 1 : t + 1]`` and ``s`` the training series' step size
(:func:`rnnfast.series.difference_scale`)::

    x_k = (w_k - w_last) / s             k = 1 .. window: (B, window), one feature per step
    h   = last hidden state of the recurrent layers over x                       (B, H)
    r   = h W_h^T + b + x W_x^T                                           (B, horizon)
    f_j = w_last + s * r_j               j = 1 .. horizon: the forecast

The network learns the change from the last value in units of a typical step. The
linear path ``x W_x^T`` over the window (as in LSTNet) carries what is linear in the
past values, such as repeating the last period, and the recurrent path the rest.
``W_h``, ``b`` and ``W_x`` start at zero, so training starts from r = 0, the
persistence forecast; every naive baseline of :mod:`rnnfast.series` is a value of
``W_x``. Shifts of the level, or a trend beyond the values seen in training, change
nothing in what the network reads.

Training minimises the mean squared error of ``r`` against ``(future - w_last) / s``
with Adam and gradient-norm clipping, on windows taken from the series given to
``fit``. The windows whose targets lie in its last ``val_fraction`` validate: after
every epoch the validation error is measured, the weights of the best epoch are kept
and training stops after ``patience`` epochs without improvement. Last, the kept
weights must beat the persistence forecast on the validation windows by more than
two standard errors of the difference (a Diebold-Mariano test,
``Forecaster._beats_persistence``), or training is judged to have found only noise
and the model falls back to persistence (the untrained weights).
"""

import numbers

import numpy as np

from .. import io, series
from .._threads import blas_on_one_thread
from .._training import StopOnInterrupt, progress_bar
from ..layers import GRU, LSTM, RNN
from ..linear import Linear
from ..losses import mse_loss
from ..optim import Adam, clip_grad_norm

__all__ = ["Forecaster"]

CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
CHECKPOINT_KIND = "rnnfast-forecaster"
CHECKPOINT_VERSION = 1
DEFAULT_WINDOW = 24          # values read per forecast without a period
PERIODS_PER_WINDOW = 2       # with a period, the default window covers this many
MIN_VALIDATION_WINDOWS = 8
PREDICT_BATCH = 4096         # windows per inference call


# ----------------------------------------------------------------------------- checks

def _integer(name, value, low=1):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _real(name, value, low, high=None, low_open=False, high_open=True):
    """``value`` as a float in the interval given by ``low`` and ``high``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    below = value <= low if low_open else value < low
    above = high is not None and (value >= high if high_open else value > high)
    if not np.isfinite(value) or below or above:
        interval = (("(" if low_open else "[") + f"{low:g}, "
                    + ("inf)" if high is None else f"{high:g}" + (")" if high_open else "]")))
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    return value


def _series_values(name, values):
    """``values`` (a sequence, an array or a :class:`rnnfast.series.Series`) as a 1-D
    float64 array of finite numbers."""
    if isinstance(values, series.Series):
        values = values.values
    try:
        array = np.asarray(values)
    except Exception as exc:   # ragged lists and the like
        raise TypeError(f"{name} must be a 1-D array of numbers ({exc})") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a 1-D array of real numbers, got dtype "
                        f"{array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (n,), got shape {array.shape}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        bad = int(np.flatnonzero(~np.isfinite(array))[0])
        raise ValueError(f"{name} must hold finite numbers, got {array[bad]} at index {bad}")
    return array


class _BestWeights:
    """The weights of the epoch with the lowest validation loss so far, starting from
    the untrained weights (epoch 0), which are also kept as ``initial_state``."""

    def __init__(self, loss, state):
        self.loss, self.epoch, self.state = loss, 0, state
        self.initial_state = state

    def offer(self, loss, epoch, current_state):
        """Keep ``current_state()`` (a copy of the weights) if ``loss`` is the lowest."""
        if loss < self.loss:
            self.loss, self.epoch, self.state = loss, epoch, current_state()


# ----------------------------------------------------------------------------- model

class Forecaster:
    """Predicts the next ``horizon`` values of a series from its last ``window`` values.

    Parameters
    ----------
    window : int or None
        Values read per forecast. None: ``2 * period`` with a period, else 24.
    horizon : int
        Values predicted at once (steps ahead).
    period : int or None
        The seasonal period in steps (24 for hourly data with a daily cycle, 12 for
        monthly data with a yearly one). It sets the default window and enables the
        seasonal naive baseline in :meth:`evaluate`.
    cell : "lstm", "gru" or "rnn"
    hidden_size : int
    num_layers : int
    seed : int
        Seeds the initial weights and the order of the training windows: the same
        seed and data give the same model, bit for bit.

    Attributes
    ----------
    scale : float or None
        The step size of the training series, set by :meth:`fit`.
    history : dict or None
        What :meth:`fit` returned.
    """

    def __init__(self, window=None, horizon=1, *, period=None, cell="lstm", hidden_size=32,
                 num_layers=1, seed=0):
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(map(repr, CELLS))}, "
                             f"got {cell!r}")
        self.period = None if period is None else _integer("period", period, low=2)
        if window is None:
            window = DEFAULT_WINDOW if self.period is None else PERIODS_PER_WINDOW * self.period
        self.window = _integer("window", window, low=2)
        self.horizon = _integer("horizon", horizon)
        self.cell = cell
        self.hidden_size = _integer("hidden_size", hidden_size)
        self.num_layers = _integer("num_layers", num_layers)
        self.seed = _integer("seed", seed, low=0)
        self.scale = None
        self.history = None
        weights_seed, order_seed = np.random.SeedSequence(self.seed).spawn(2)
        self._rnn = CELLS[cell](1, self.hidden_size, self.num_layers,
                                seed=int(weights_seed.generate_state(1)[0]))
        self._head = Linear(self.hidden_size, self.horizon)
        self._linear = Linear(self.window, self.horizon, bias=False)
        for module in (self._head, self._linear):
            for param in module.params.values():
                param.fill(0)              # r = 0 at the start: the persistence forecast
        self._order_rng = np.random.default_rng(order_seed)

    def config(self):
        """The constructor's arguments (JSON values)."""
        return {"window": self.window, "horizon": self.horizon, "period": self.period,
                "cell": self.cell, "hidden_size": self.hidden_size,
                "num_layers": self.num_layers, "seed": self.seed}

    @property
    def history_length(self):
        """Values a forecast and every baseline read up to the origin:
        ``max(window, period)``."""
        return max(self.window, self.period or 0)

    def __repr__(self):
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.config().items())
        return f"Forecaster({arguments})"

    # ------------------------------------------------------------------ network

    def _modules(self):
        return [self._rnn, self._head, self._linear]

    def _network(self, inputs):
        """Relative outputs r (B, horizon) for relative windows ``inputs`` (B, window)."""
        x = np.ascontiguousarray(inputs.T[:, :, None], dtype=self._rnn.dtype)  # (T, B, 1)
        _, state = self._rnn(x)
        h_n = state[0] if isinstance(state, tuple) else state                # (L, B, H)
        return self._head(h_n[-1]) + self._linear(inputs)

    def _network_backward(self, d_outputs, batch):
        """Backpropagate dL/dr (B, horizon) into every module's gradients."""
        dh_n = np.zeros((self.num_layers, batch, self.hidden_size), self._rnn.dtype)
        dh_n[-1] = self._head.backward(d_outputs)
        self._linear.backward(d_outputs, input_grad=False)
        self._rnn.backward(None, (dh_n, None) if self.cell == "lstm" else dh_n,
                           input_grad=False)

    def _relative_outputs(self, inputs):
        """r (N, horizon) for relative windows (N, window), in eval mode and in chunks."""
        self._rnn.eval()
        try:
            chunks = [self._network(inputs[i:i + PREDICT_BATCH])
                      for i in range(0, len(inputs), PREDICT_BATCH)]
        finally:
            self._rnn.train()
        return np.concatenate(chunks).astype(np.float64)

    # ------------------------------------------------------------------ training

    def fit(self, values, *, epochs=60, lr=3e-3, batch_size=64, val_fraction=0.2,
            patience=10, max_norm=1.0, quiet=True):
        """Train on the series ``values``, keeping the weights of the best validation
        epoch.

        The step size ``scale`` is measured on ``values`` and training continues from
        the current weights. A first Ctrl-C stops after the current batch (the best
        weights so far are kept); a second one raises ``KeyboardInterrupt``.

        Parameters
        ----------
        values : array-like of shape (n,) or Series
            The training part of the series, in time order.
        epochs : int
            Most passes over the training windows.
        lr : float > 0
            Adam's learning rate.
        batch_size : int
        val_fraction : float in [0, 1)
            The windows whose targets lie in this last fraction of ``values`` validate
            (at least 8 of them); the windows whose targets overlap theirs are left
            out of training. 0: no validation, the last epoch's weights are kept.
        patience : int
            Epochs without a better validation error before stopping.
        max_norm : float > 0
            Gradient-norm clipping threshold.
        quiet : bool
            No progress bar.

        Returns
        -------
        history : dict
            ``train_loss`` and ``val_loss`` (lists, one entry per epoch run: the mean
            squared error of the relative outputs r, in units of ``scale**2``; no
            ``val_loss`` entries without validation), ``initial_val_loss`` (before
            training: the persistence forecast's; None without validation),
            ``best_epoch`` (whose weights were kept; 0: the untrained weights, i.e.
            persistence), ``beats_persistence`` (whether the best epoch passed the
            test against persistence; None without validation), ``epochs_run``,
            ``stopped`` (``"epochs"``, ``"patience"`` or ``"interrupted"``),
            ``train_windows``, ``val_windows``.
        """
        values = _series_values("values", values)
        epochs = _integer("epochs", epochs)
        lr = _real("lr", lr, 0.0, low_open=True)
        batch_size = _integer("batch_size", batch_size)
        val_fraction = _real("val_fraction", val_fraction, 0.0, 1.0)
        patience = _integer("patience", patience)
        max_norm = _real("max_norm", max_norm, 0.0, low_open=True)

        train_origins, val_origins = self._split_origins(len(values), val_fraction)
        self.scale = series.difference_scale(values)
        train = self._relative_pairs(values, train_origins)
        val = self._relative_pairs(values, val_origins) if len(val_origins) else None
        history = {"train_loss": [], "val_loss": [],
                   "initial_val_loss": None if val is None else self._loss(*val),
                   "best_epoch": 0, "epochs_run": 0, "stopped": "epochs",
                   "beats_persistence": None, "train_windows": len(train_origins),
                   "val_windows": len(val_origins)}
        best = _BestWeights(history["initial_val_loss"], self._state_dicts())
        optimizer = Adam(self._modules(), lr=lr)
        with StopOnInterrupt() as stop, blas_on_one_thread(), \
                progress_bar(epochs, desc="training", unit="epoch", quiet=quiet) as bar:
            for epoch in range(1, epochs + 1):
                train_loss = self._train_epoch(optimizer, *train, batch_size, max_norm, stop)
                if stop.requested:
                    history["stopped"] = "interrupted"
                    break
                history["train_loss"].append(train_loss)
                history["epochs_run"] = epoch
                postfix = f"train {train_loss:.4f}"
                if val is not None:
                    val_loss = self._loss(*val)
                    history["val_loss"].append(val_loss)
                    best.offer(val_loss, epoch, self._state_dicts)
                    postfix += f"  val {val_loss:.4f}  best {best.loss:.4f}"
                bar.set_postfix_str(postfix)
                bar.update(1)
                if val is not None and epoch - best.epoch >= patience:
                    history["stopped"] = "patience"
                    break
        if val is None:
            history["best_epoch"] = history["epochs_run"]
        else:
            self._load_state_dicts(best.state)
            history["beats_persistence"] = best.epoch > 0 and self._beats_persistence(*val)
            if not history["beats_persistence"]:
                self._load_state_dicts(best.initial_state)
            history["best_epoch"] = best.epoch if history["beats_persistence"] else 0
        self.history = history
        return history

    def _beats_persistence(self, inputs, targets):
        """Whether the current weights forecast the validation windows better than the
        persistence forecast (r = 0), by the Diebold-Mariano test at two standard
        errors.

        Per window i the loss differential is ``d_i = mean_j(y_ij**2 - (r_ij -
        y_ij)**2)``. The windows' targets overlap for ``horizon > 1``, so the variance
        of ``mean(d)`` is the Newey-West estimate over lags below the horizon::

            var = (c_0 + 2 * sum_{k=1}^{horizon-1} (1 - k / horizon) c_k) / N,
            c_k = sum_i (d_i - mean(d)) (d_{i+k} - mean(d)) / N

        and the test is ``mean(d) > 2 * sqrt(var)``. On a short or unpredictable series
        (a random walk) this keeps the persistence forecast instead of a gain that is
        noise.
        """
        outputs = self._relative_outputs(inputs)
        differentials = np.mean(targets ** 2 - (outputs - targets) ** 2, axis=1)   # (N,)
        mean = float(np.mean(differentials))
        centred = differentials - mean
        count = len(differentials)
        lags = range(1, min(self.horizon, count))
        autocovariances = [centred[:count - k] @ centred[k:] / count for k in lags]
        variance = (centred @ centred / count + 2 * sum(
            (1 - k / self.horizon) * c for k, c in zip(lags, autocovariances))) / count
        return bool(mean > 2 * np.sqrt(max(variance, 0.0)))

    def _split_origins(self, n, val_fraction):
        """Training and validation origins of a series of n values (see ``fit``)."""
        origins = series.forecast_origins(n, self.window, self.horizon)
        if val_fraction == 0:
            validation = origins[:0]
        else:
            first_val_target = n - int(round(val_fraction * n))
            validation = origins[origins + 1 >= first_val_target]
            if len(validation) < MIN_VALIDATION_WINDOWS:
                validation = origins[len(origins) - MIN_VALIDATION_WINDOWS:]
        # a training window's last target comes before the first validation target
        first_target = validation[0] + 1 if len(validation) else n
        training = origins[origins + self.horizon < first_target]
        if len(training) < 1 or len(validation) < (MIN_VALIDATION_WINDOWS if val_fraction
                                                   else 0):
            raise ValueError(self._too_short_message(n, val_fraction))
        return training, validation

    def _too_short_message(self, n, val_fraction):
        reserve = (f" and {MIN_VALIDATION_WINDOWS} validation windows (val_fraction="
                   f"{val_fraction:g})") if val_fraction else ""
        needed = self.window + self.horizon + (
            MIN_VALIDATION_WINDOWS + self.horizon - 1 if val_fraction else 0)
        return (f"the training series has {n} values, too few for windows of "
                f"{self.window} values followed by {self.horizon} targets, with at least "
                f"one training window{reserve}: it needs at least {needed} values "
                f"(reduce the window or the horizon, or give more data)")

    def _relative_pairs(self, values, origins):
        """Relative inputs (N, window) and targets (N, horizon) at ``origins``."""
        windows = series.windows_at(values, origins, self.window)
        futures = series.targets_at(values, origins, self.horizon)
        return series.to_relative(windows, self.scale, futures)

    def _train_epoch(self, optimizer, inputs, targets, batch_size, max_norm, stop):
        """One pass over the windows in a random order; the mean batch loss."""
        order = self._order_rng.permutation(len(inputs))
        losses = []
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            optimizer.zero_grad()
            loss, d_outputs = mse_loss(self._network(inputs[batch]),
                                       targets[batch].astype(self._rnn.dtype))
            self._network_backward(d_outputs, len(batch))
            clip_grad_norm(self._modules(), max_norm)
            optimizer.step()
            losses.append(loss)
            if stop.requested:
                break
        return float(np.mean(losses))

    def _loss(self, inputs, targets):
        """Mean squared error of the relative outputs, in eval mode."""
        return float(np.mean((self._relative_outputs(inputs) - targets) ** 2))

    def _state_dicts(self):
        return [module.state_dict() for module in self._modules()]

    def _load_state_dicts(self, states):
        for module, state in zip(self._modules(), states):
            module.load_state_dict(state)

    # ------------------------------------------------------------------ forecasting

    def _require_fitted(self, action):
        if self.scale is None:
            raise ValueError(f"Forecaster.{action} needs a trained model: call fit() "
                             f"first or load a saved one")

    def predict(self, recent_values):
        """Forecast the ``horizon`` values that follow ``recent_values``.

        Parameters
        ----------
        recent_values : array-like of shape (n,), n >= window, or Series
            The series up to now; the last ``window`` values are read.

        Returns
        -------
        ndarray of shape (horizon,), float64
        """
        values = _series_values("recent_values", recent_values)
        if len(values) < self.window:
            raise ValueError(f"recent_values must hold at least window = {self.window} "
                             f"values, got {len(values)}")
        return self.predict_windows(values[None, -self.window:])[0]

    def predict_windows(self, windows):
        """Forecasts for a batch of windows.

        Parameters
        ----------
        windows : array-like of shape (N, window)
            Consecutive values of the series, the last one at the forecast origin.

        Returns
        -------
        ndarray of shape (N, horizon), float64
        """
        self._require_fitted("predict_windows")
        windows = np.asarray(windows, dtype=np.float64)
        if windows.ndim != 2 or windows.shape[1] != self.window:
            raise ValueError(f"windows must have shape (N, window) = (N, {self.window}), "
                             f"got {windows.shape}")
        inputs, _ = series.to_relative(windows, self.scale)
        return series.from_relative(windows, self._relative_outputs(inputs), self.scale)

    def backtest(self, values, start):
        """Forecasts of the model and of the baselines for every origin whose targets
        lie in ``values[start:]``, the weights fixed (the model reads the observed
        values before each origin, as it would in use).

        Parameters
        ----------
        values : array-like of shape (n,) or Series
            The whole series: history and held-out part.
        start : int
            Index of the first held-out value; at least ``history_length``.

        Returns
        -------
        origins : ndarray of shape (N,), int64, from ``start - 1`` to ``n - horizon - 1``
        truth : ndarray of shape (N, horizon)
        forecasts : dict name -> ndarray of shape (N, horizon)
            ``"model"``, ``"persistence"``, ``"seasonal_naive"`` (with a period) and
            ``"moving_average"`` (the mean of the last ``window`` values).
        """
        self._require_fitted("backtest")
        values = _series_values("values", values)
        start = _integer("start", start, low=0)
        n = len(values)
        if start < self.history_length or start > n - self.horizon:
            raise ValueError(f"start must lie in [{self.history_length}, "
                             f"{n - self.horizon}] for a series of {n} values, window "
                             f"{self.window}, horizon {self.horizon}"
                             + (f" and period {self.period}" if self.period else "")
                             + f"; got {start}")
        origins = series.forecast_origins(n, self.window, self.horizon, first=start - 1)
        forecasts = {"model": self.predict_windows(series.windows_at(values, origins,
                                                                     self.window)),
                     "persistence": series.persistence_forecast(values, origins,
                                                                self.horizon)}
        if self.period is not None:
            forecasts["seasonal_naive"] = series.seasonal_naive_forecast(
                values, origins, self.horizon, self.period)
        forecasts["moving_average"] = series.moving_average_forecast(
            values, origins, self.horizon, self.window)
        return origins, series.targets_at(values, origins, self.horizon), forecasts

    def evaluate(self, values, start):
        """RMSE and MAE, in the series' units, of the model and of each baseline over
        every held-out target (all origins of :meth:`backtest` and all horizon steps).

        Returns
        -------
        dict
            ``{"model": {"rmse": float, "mae": float}, "baselines": {"persistence":
            {...}, "seasonal_naive": {...} (with a period), "moving_average": {...}},
            "origins": N}``
        """
        origins, truth, forecasts = self.backtest(values, start)
        scores = {name: series.score(forecast, truth) for name, forecast in forecasts.items()}
        model = scores.pop("model")
        return {"model": model, "baselines": scores, "origins": len(origins)}

    # ------------------------------------------------------------------ checkpoints

    def save(self, path):
        """Write the trained model (weights, ``scale``, configuration and training
        history) to ``path`` with :func:`rnnfast.save` (atomic, no pickle)."""
        self._require_fitted("save")
        io.save(path, {"kind": CHECKPOINT_KIND, "version": CHECKPOINT_VERSION,
                       "config": self.config(), "scale": self.scale,
                       "history": self.history, "rnn": self._rnn, "head": self._head,
                       "linear": self._linear})

    @classmethod
    def load(cls, path):
        """A Forecaster from a file written by :meth:`save`.

        Raises
        ------
        rnnfast.CheckpointError
            The file is not an rnnfast checkpoint, or not a Forecaster's.
        OSError
            The file cannot be opened.
        """
        content = io.load(path)
        if not isinstance(content, dict) or content.get("kind") != CHECKPOINT_KIND:
            raise io.CheckpointError(f"{path!r} is an rnnfast checkpoint but not a "
                                     f"Forecaster's (no kind {CHECKPOINT_KIND!r})")
        if content.get("version") != CHECKPOINT_VERSION:
            raise io.CheckpointError(f"{path!r} holds a Forecaster of checkpoint version "
                                     f"{content.get('version')!r}; this rnnfast reads "
                                     f"version {CHECKPOINT_VERSION}")
        try:
            model = cls(**content["config"])
            model._rnn.load_state_dict(content["rnn"].state_dict())
            model._head.load_state_dict(content["head"].state_dict())
            model._linear.load_state_dict(content["linear"].state_dict())
            model.scale = _real("scale", content["scale"], 0.0, low_open=True)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise io.CheckpointError(f"{path!r} is not a valid Forecaster checkpoint "
                                     f"({type(exc).__name__}: {exc})") from None
        model.history = content.get("history")
        return model
