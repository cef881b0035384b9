"""``CharLM``: a character-level language model that learns a text and writes more of it.

Model, for characters ``x_1 .. x_T`` with ids in ``[0, V)``::

    e_t      = onehot(x_t)                       (V,)   no embedding table
    h_t      = RNN(e_t, h_{t-1})                 (H,)   LSTM, GRU or tanh RNN, L layers
    logits_t = h_t W^T + b                       (V,)   rnnfast.Linear
    loss     = mean_t -log softmax(logits_t)[x_{t+1}]   nats per character

Bits per character are ``loss / ln 2``. The one-hot input makes the recurrent layer's
(G*H, V) input weight the embedding table: in training the kernels see one-hot rows
and look the projection up in it (and sum its gradient from the gate gradients'
rows) instead of multiplying by x, and backward skips the gradient of the input.

Training is char-rnn's truncated BPTT (see :mod:`rnnfast.text`): the training text is
cut into B streams, each batch is T steps of all of them, the recurrent state carries
from one batch into the next within an epoch (starting from zeros at each epoch), Adam
with gradient-norm clipping updates the weights after every batch, and the
validation text (the end of the text) is evaluated at the end of every epoch and of
the run.

Reproducibility: the seed fixes the initial weights (through the layers' seeds) and
the dropout masks (the recurrent layer's generator); the batches are deterministic.
A checkpoint written during or after ``fit`` holds everything the run depends on
(weights, optimizer moments, the dropout generator's state, the position in the data,
the carried state, the history and the time spent), so loading it and calling
``fit(text, resume=True)`` continues bit for bit as if the run had never stopped.
"""

import errno
import math
import numbers
import os
import sys
import time
from dataclasses import dataclass, field
from typing import List, NamedTuple, Optional

import numpy as np

from .. import _sampling
from .._threads import blas_on_one_thread
from .._training import (StopOnInterrupt, TimeBudget, generator_state, progress_bar,
                         restore_generator)
from ..io import CheckpointError, load, save
from ..layers import GRU, LSTM, RNN
from ..linear import Linear, positive_int, seed_value
from ..losses import cross_entropy
from ..optim import Adam, clip_grad_norm
from ..text import TokenStreams, Vocabulary, split_text, text_digest

__all__ = ["CharLM", "Evaluation", "History", "describe_evaluation"]

CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
FORMAT = "rnnfast-charlm"
VERSION = 1

# Settings of a training run (fixed for its whole life, resumed runs included) and
# their defaults for a new run.
RUN_DEFAULTS = {"seq_len": 100, "batch_size": 32, "lr": 2e-3, "clip": 5.0,
                "val_fraction": 0.1}

_EVAL_STEPS = 256          # steps per forward call when evaluating (memory only)
_SMOOTHING_STEPS = 20      # steps averaged into the loss the progress bar shows
_LN2 = math.log(2.0)


# ----------------------------------------------------------------------------- results

class Evaluation(NamedTuple):
    """The model's loss on a text."""

    loss: float                    # mean cross-entropy, nats per character
    bits_per_character: float      # loss / ln 2
    characters: int                # how many characters were predicted


@dataclass
class History:
    """What a training run recorded (resumed parts included).

    Attributes
    ----------
    step_loss : list of float
        The training loss (nats per character) of every step, in order.
    evaluations : list of dict
        One per evaluation (the end of each epoch, and the end of the run when it
        stopped within an epoch), with keys ``step``, ``epoch`` (epochs done, a
        fraction within one), ``characters`` (trained so far), ``train_loss`` and
        ``train_bpc`` (mean over the steps since the previous evaluation),
        ``val_loss`` and ``val_bpc`` (nan without validation text),
        ``chars_per_second`` (since the previous evaluation) and ``elapsed`` (seconds
        of training so far).
    stop_reason : str or None
        Why the last ``fit`` call stopped: ``"epochs"``, ``"max_steps"``,
        ``"time_budget"`` or ``"interrupted"`` (Ctrl-C).
    """

    step_loss: List[float] = field(default_factory=list)
    evaluations: List[dict] = field(default_factory=list)
    stop_reason: Optional[str] = None

    def to_state(self):
        """Plain values and arrays for a checkpoint."""
        return {"step_loss": np.asarray(self.step_loss, dtype=np.float64),
                "evaluations": [dict(record) for record in self.evaluations],
                "stop_reason": self.stop_reason}

    @classmethod
    def from_state(cls, state):
        return cls([float(loss) for loss in state["step_loss"]],
                   [dict(record) for record in state["evaluations"]], state["stop_reason"])


def describe_evaluation(record):
    """One line for an entry of ``History.evaluations``."""
    validation = ("no validation text" if math.isnan(record["val_loss"]) else
                  f"validation loss {record['val_loss']:.4f} "
                  f"({record['val_bpc']:.3f} bits/char)")
    return (f"epoch {record['epoch']:.2f}, step {record['step']}: "
            f"train loss {record['train_loss']:.4f} ({record['train_bpc']:.3f} bits/char), "
            f"{validation}, {record['chars_per_second']:,.0f} chars/s, "
            f"{record['elapsed']:.1f} s")


# ----------------------------------------------------------------------------- checks

def _number(name, value, *, low, low_open, allow_inf=False):
    """``value`` as a float above ``low`` (``> low`` if ``low_open`` else ``>= low``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    below = value <= low if low_open else value < low
    if math.isnan(value) or below or (math.isinf(value) and not allow_inf):
        relation = ">" if low_open else ">="
        raise ValueError(f"{name} must be a finite number {relation} {low:g}, got {value!r}")
    return value


def _fraction(name, value):
    """``value`` as a float in [0, 1)."""
    value = _number(name, value, low=0.0, low_open=False)
    if value >= 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


def _optional(check, name, value, **options):
    return None if value is None else check(name, value, **options)


def _text(name, value):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    return value


# ----------------------------------------------------------------------------- the run

@dataclass
class _Run:
    """A training run: its settings, where it stands, and what it needs to go on."""

    settings: dict             # RUN_DEFAULTS' keys, plus the text's "digest" and "length"
    stop: dict                 # limits: "epochs", "time_budget", "max_steps" -> or None
    optimizer: Adam
    epoch: int = 0             # completed epochs
    batch: int = 0             # the next batch of the current epoch
    step: int = 0              # optimizer steps taken
    characters: int = 0        # characters trained on
    state: object = None       # recurrent state carried into the next batch, or None
    history: History = field(default_factory=History)
    elapsed: float = 0.0       # seconds of training, resumed parts included

    def to_state(self):
        state = self.state
        return {"settings": dict(self.settings), "stop": dict(self.stop),
                "optimizer": self.optimizer.state_dict(),
                "position": {"epoch": self.epoch, "batch": self.batch, "step": self.step,
                             "characters": self.characters},
                "state": list(state) if isinstance(state, tuple) else state,
                "history": self.history.to_state(), "elapsed": self.elapsed}


# ----------------------------------------------------------------------------- the model

class CharLM:
    """A character-level language model: one-hot characters, recurrent layers, a
    linear read-out and a softmax over the vocabulary.

    Parameters
    ----------
    vocabulary : Vocabulary or str
        The characters the model reads and writes; a str gives the vocabulary of its
        characters (pass the whole text, validation part included).
    cell : {"lstm", "gru", "rnn"}
        The recurrent cell (``"rnn"``: tanh).
    hidden_size : int, H
    num_layers : int, L
    dropout : float in [0, 1)
        Dropout on the outputs of every recurrent layer but the last, in training;
        needs ``num_layers >= 2``.
    seed : int >= 0 or None
        Fixes the initial weights and the dropout masks; None draws one from the
        operating system (``config()["seed"]`` tells which, so the run can be repeated).

    Attributes
    ----------
    vocabulary : Vocabulary
    rnn : rnnfast.LSTM, GRU or RNN with input size V
    head : rnnfast.Linear (H -> V)
    history : History or None
        The training run's record, once ``fit`` ran (or a checkpoint of a run loaded).
    """

    def __init__(self, vocabulary, cell="lstm", hidden_size=256, num_layers=2, dropout=0.0,
                 seed=None):
        if not isinstance(vocabulary, Vocabulary):
            vocabulary = Vocabulary.from_text(_text("vocabulary", vocabulary))
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(map(repr, CELLS))}, "
                             f"got {cell!r}")
        hidden_size = positive_int("hidden_size", hidden_size)
        num_layers = positive_int("num_layers", num_layers)
        dropout = _fraction("dropout", dropout)
        if dropout > 0 and num_layers == 1:
            raise ValueError(f"dropout applies between recurrent layers, so dropout="
                             f"{dropout} needs num_layers >= 2, got num_layers=1")
        seed = seed_value(seed)
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        self.vocabulary = vocabulary
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        self.seed = seed
        rnn_seed, head_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))
        V = len(vocabulary)
        self.rnn = CELLS[cell](V, hidden_size, num_layers, dropout=dropout, seed=rnn_seed)
        self.head = Linear(hidden_size, V, seed=head_seed)
        self._one_hot_table = np.eye(V, dtype=self.rnn.dtype)     # row i: onehot(i)
        self._run = None

    def config(self):
        """The constructor's arguments (JSON values): ``CharLM(**config)`` builds the
        same untrained model."""
        return {"vocabulary": self.vocabulary.characters, "cell": self.cell,
                "hidden_size": self.hidden_size, "num_layers": self.num_layers,
                "dropout": self.dropout, "seed": self.seed}

    def __repr__(self):
        return (f"CharLM({len(self.vocabulary)} characters, cell={self.cell!r}, "
                f"hidden_size={self.hidden_size}, num_layers={self.num_layers}, "
                f"dropout={self.dropout}, seed={self.seed})")

    @property
    def history(self):
        """The training run's :class:`History`, or None before any ``fit``."""
        return None if self._run is None else self._run.history

    @property
    def run_settings(self):
        """The training run's settings (``seq_len``, ``batch_size``, ``lr``, ``clip``,
        ``val_fraction``) as a new dict, or None before any ``fit``."""
        return None if self._run is None else {name: self._run.settings[name]
                                               for name in RUN_DEFAULTS}

    # ------------------------------------------------------------------ computation

    def _one_hot(self, ids):
        """ids (T, B) -> (T, B, V) one-hot rows of the layers' dtype."""
        return self._one_hot_table[ids]

    def _train_step(self, run, inputs, targets):
        """One truncated-BPTT update on a batch: inputs, targets (T, B). Returns the
        loss (nats per character) and the final state, carried into the next batch."""
        optimizer = run.optimizer
        optimizer.zero_grad()
        y, state = self.rnn(self._one_hot(inputs), run.state)         # y (T, B, H)
        loss, dlogits = cross_entropy(self.head(y), targets)         # logits (T, B, V)
        # BPTT within the batch only: no gradient flows into the carried state, nor
        # into the one-hot inputs
        self.rnn.backward(self.head.backward(dlogits), input_grad=False)
        if run.settings["clip"] > 0:
            clip_grad_norm([self.rnn, self.head], run.settings["clip"])
        optimizer.step()
        return loss, state

    def evaluate(self, text, batch_size=32):
        """The model's cross-entropy on ``text``, read as ``fit`` reads it.

        The text is cut into ``min(batch_size, len(text) - 1)`` streams, each read
        from a zero state with the state carried along (see :mod:`rnnfast.text`); no
        dropout, nothing is updated.

        Parameters
        ----------
        text : str, at least 2 characters, all in the vocabulary
        batch_size : int, the number of streams B

        Returns
        -------
        Evaluation
        """
        text = _text("text", text)
        batch_size = positive_int("batch_size", batch_size)
        if len(text) < 2:
            raise ValueError(f"text must hold at least 2 characters to predict one from "
                             f"the other, got {len(text)}")
        ids = self.vocabulary.encode(text, "text")
        streams = TokenStreams(ids, min(batch_size, len(ids) - 1))
        was_training = self.rnn.training
        self.rnn.eval()
        try:
            total, state = 0.0, None
            for index in range(streams.batch_count(_EVAL_STEPS)):
                inputs, targets = streams.batch(index, _EVAL_STEPS)
                y, state = self.rnn(self._one_hot(inputs), state)
                total += _negative_log_likelihood(self.head(y), targets)
        finally:
            self.rnn.train(was_training)
        loss = total / streams.characters
        return Evaluation(loss, loss / _LN2, streams.characters)

    # ------------------------------------------------------------------ generation

    def generate(self, prime="", length=200, temperature=1.0, top_k=None, seed=None):
        """Sample ``length`` characters that continue ``prime``.

        The prime is read one character at a time through the recurrent layer's
        ``stream()``; then each new character is drawn from
        ``softmax(logits / temperature)``, restricted to the ``top_k`` most likely
        characters when given, and fed back in. Without a prime, generation starts as
        after a newline (or after the vocabulary's first character when the text had
        no newline).

        Parameters
        ----------
        prime : str, characters of the vocabulary
        length : int >= 0, how many characters to generate
        temperature : float > 0
            Below 1 sharpens the distribution (safer, more repetitive text), above 1
            flattens it.
        top_k : int >= 1 or None (all characters)
        seed : int >= 0 or None (fresh randomness)
            Fixes the sample: the same model, arguments and seed give the same text.

        Returns
        -------
        str, the ``length`` new characters (without the prime)
        """
        prime = _text("prime", prime)
        if isinstance(length, bool) or not isinstance(length, numbers.Integral) or length < 0:
            raise ValueError(f"length must be an integer >= 0, got {length!r}")
        temperature = _number("temperature", temperature, low=0.0, low_open=True)
        top_k = _optional(positive_int, "top_k", top_k)
        rng = np.random.default_rng(seed_value(seed))
        prime_ids = self.vocabulary.encode(prime, "prime")
        if len(prime_ids) == 0:
            start = "\n" if "\n" in self.vocabulary else self.vocabulary.characters[0]
            prime_ids = self.vocabulary.encode(start)
        # One step a character: the stream writes h (1, H) into one buffer, from which
        # the sampler computes the head's logits h W^T + b (V,) and draws, in C. The
        # first layer reads a character as the column of its W_ih (stream.lookup): the
        # one-hot row's product, unless W_ih holds inf or NaN, whose products with the
        # row's zeros are NaN.
        stream = self.rnn.stream(1)
        if np.isfinite(self.rnn.params["weight_ih_l0"]).all():
            step = stream.lookup
        else:
            inputs = self._one_hot_table[:, None, :]                         # (V, 1, V)
            step = lambda character, out: stream(inputs[character], out)     # noqa: E731
        output = np.empty((1, self.hidden_size), self.rnn.dtype)
        weight, bias = (np.ascontiguousarray(self.head.params[name], output.dtype)
                        for name in ("weight", "bias"))
        sampler = _sampling.HeadSampler(weight, bias, output, temperature, top_k or 0)
        for character in prime_ids:
            step(character, output)
        generated = []
        for _ in range(length):
            character = sampler.draw(rng.random())
            generated.append(character)
            step(character, output)
        return self.vocabulary.decode(generated)

    # ------------------------------------------------------------------ training

    def fit(self, text, *, seq_len=None, batch_size=None, lr=None, clip=None,
            val_fraction=None, epochs=None, time_budget=None, max_steps=None, resume=False,
            checkpoint=None, checkpoint_every=60.0, quiet=False):
        """Train on ``text``, or continue a run.

        The end of the text (``val_fraction`` of it) is kept for validation, the rest
        is trained on with truncated BPTT (see the module docstring).

        Parameters
        ----------
        text : str
            Every character must be in the vocabulary.
        seq_len : int, T, the steps per batch and of backpropagation [100]
        batch_size : int, B, the number of parallel streams [32]
        lr : float > 0, Adam's learning rate [2e-3]
        clip : float >= 0, the maximal global gradient norm; 0 does not clip [5.0]
        val_fraction : float in [0, 1), the share of the text kept for validation [0.1]
            These five are the run's settings. None gives the default in brackets for
            a new run and the run's own value with ``resume``; a resumed run refuses
            other values.
        epochs : int >= 1, or None
        time_budget : float > 0 (seconds of training), or None
        max_steps : int >= 1, or None
            The run stops when it has done ``epochs`` epochs, spent ``time_budget``
            seconds or taken ``max_steps`` steps, whichever comes first, counting
            what a resumed run did before. Without any of them a new run trains one
            epoch and a resumed run keeps the limits it had.
        resume : bool
            Continue the model's run (from a checkpoint loaded with :meth:`load`, or
            the last ``fit``) exactly where it stopped, on the same text. Otherwise a
            new run starts from the current weights, with a fresh optimizer.
        checkpoint : str or os.PathLike, or None
            Where to write checkpoints (atomically): every ``checkpoint_every``
            seconds and when the run stops, Ctrl-C included.
        checkpoint_every : float > 0, seconds
        quiet : bool
            Without it, a progress bar on stderr (on a terminal) shows the loss, the
            bits per character and the characters per second, and every epoch prints
            one line of :func:`describe_evaluation` to stdout.

        Returns
        -------
        History
            Also in ``model.history``. Ctrl-C stops after the current step (a second
            Ctrl-C aborts); ``fit`` then writes the checkpoint and returns normally,
            with ``stop_reason == "interrupted"``.
        """
        text = _text("text", text)
        settings = {"seq_len": _optional(positive_int, "seq_len", seq_len),
                    "batch_size": _optional(positive_int, "batch_size", batch_size),
                    "lr": _optional(_number, "lr", lr, low=0.0, low_open=True),
                    "clip": _optional(_number, "clip", clip, low=0.0, low_open=False),
                    "val_fraction": _optional(_fraction, "val_fraction", val_fraction)}
        stop = {"epochs": _optional(positive_int, "epochs", epochs),
                "time_budget": _optional(_number, "time_budget", time_budget, low=0.0,
                                         low_open=True),
                "max_steps": _optional(positive_int, "max_steps", max_steps)}
        checkpoint_every = _number("checkpoint_every", checkpoint_every, low=0.0,
                                   low_open=True, allow_inf=True)
        if checkpoint is not None:
            _check_directory(checkpoint)
        run = self._resumed_run(text, settings) if resume else \
            self._new_run(text, settings, stop)
        train_text, val_text = split_text(text, run.settings["val_fraction"])
        if 0 < len(val_text) < 2:
            raise ValueError(f"val_fraction={run.settings['val_fraction']} leaves "
                             f"{len(val_text)} character(s) of the {len(text)} for "
                             f"validation; it needs at least 2 (or val_fraction=0)")
        ids = self.vocabulary.encode(text, "text")                      # (N,)
        streams = TokenStreams(ids[:len(train_text)], run.settings["batch_size"])
        if resume and any(value is not None for value in stop.values()):
            run.stop = stop
        self._run = run
        self.rnn.train()
        return self._train(run, streams, val_text, checkpoint, checkpoint_every, quiet)

    def _new_run(self, text, settings, stop):
        settings = {name: RUN_DEFAULTS[name] if value is None else value
                    for name, value in settings.items()}
        settings.update(digest=text_digest(text), length=len(text))
        if all(value is None for value in stop.values()):
            stop = dict(stop, epochs=1)
        optimizer = Adam([self.rnn, self.head], lr=settings["lr"])
        return _Run(settings, stop, optimizer)

    def _resumed_run(self, text, settings):
        run = self._run
        if run is None:
            raise ValueError("resume=True needs a run to continue: load a checkpoint "
                             "written by fit, or call fit without resume first")
        conflicts = [f"{name}={value!r} (the run has {run.settings[name]!r})"
                     for name, value in settings.items()
                     if value is not None and value != run.settings[name]]
        if conflicts:
            raise ValueError(f"a resumed run keeps its settings; got "
                             f"{', '.join(conflicts)}")
        if text_digest(text) != run.settings["digest"]:
            raise ValueError(f"text differs from the text the run was trained on "
                             f"({run.settings['length']} characters, SHA-256 "
                             f"{run.settings['digest'][:16]}...; got {len(text)} "
                             f"characters): resume on the same text")
        return run

    def _train(self, run, streams, val_text, checkpoint, checkpoint_every, quiet):
        """The loop of ``fit``: steps until a stop condition, evaluations at epoch ends
        and at the end, checkpoints, progress."""
        seq_len = run.settings["seq_len"]
        batches = streams.batch_count(seq_len)
        budget = TimeBudget(run.stop["time_budget"], spent=run.elapsed)
        started, start_characters = time.perf_counter(), run.characters
        last_saved = started
        with progress_bar(_total_steps(run.stop, batches), desc="training", unit="step",
                          quiet=quiet, initial=run.step) as bar, StopOnInterrupt() as stop, \
                blas_on_one_thread():
            while True:
                reason = _stop_reason(run, batches, budget, stop.requested)
                if reason is not None:
                    break
                inputs, targets = streams.batch(run.batch, seq_len)
                loss, run.state = self._train_step(run, inputs, targets)
                run.history.step_loss.append(loss)
                run.step += 1
                run.batch += 1
                run.characters += inputs.size
                bar.set_postfix_str(_progress_text(run.history.step_loss,
                                                   run.characters - start_characters,
                                                   time.perf_counter() - started),
                                    refresh=False)
                bar.update(1)
                if run.batch == batches:                   # the end of an epoch
                    run.epoch, run.batch, run.state = run.epoch + 1, 0, None
                    run.elapsed = budget.elapsed()
                    record = self._evaluation_record(run, batches, val_text)
                    if not quiet:
                        _print_line(bar, describe_evaluation(record))
                if checkpoint is not None and \
                        time.perf_counter() - last_saved >= checkpoint_every:
                    run.elapsed = budget.elapsed()
                    self.save(checkpoint)
                    last_saved = time.perf_counter()
            run.history.stop_reason = reason
            run.elapsed = budget.elapsed()
            evaluated = run.history.evaluations
            if run.step > (evaluated[-1]["step"] if evaluated else 0):
                self._evaluation_record(run, batches, val_text)
            if checkpoint is not None:
                self.save(checkpoint)
        return run.history

    def _evaluation_record(self, run, batches, val_text):
        """Evaluate, append the record to the history and return it."""
        history = run.history
        previous = history.evaluations[-1] if history.evaluations else \
            {"step": 0, "characters": 0, "elapsed": 0.0}
        train_loss = float(np.mean(history.step_loss[previous["step"]:]))
        val_loss = (self.evaluate(val_text, run.settings["batch_size"]).loss if val_text
                    else math.nan)
        seconds = run.elapsed - previous["elapsed"]
        record = {"step": run.step, "epoch": run.epoch + run.batch / batches,
                  "characters": run.characters,
                  "train_loss": train_loss, "train_bpc": train_loss / _LN2,
                  "val_loss": val_loss, "val_bpc": val_loss / _LN2,
                  "chars_per_second": ((run.characters - previous["characters"]) / seconds
                                       if seconds > 0 else math.nan),
                  "elapsed": run.elapsed}
        history.evaluations.append(record)
        return record

    # ------------------------------------------------------------------ checkpoints

    def save(self, path):
        """Write the model, and its training run if there is one, to ``path``
        atomically (an ``.npz`` of ``rnnfast.save``; no pickle). :meth:`load` reads
        it back; ``fit(text, resume=True)`` continues the run."""
        save(path, {"format": FORMAT, "version": VERSION, "config": self.config(),
                    "rnn": self.rnn, "head": self.head,
                    "dropout_rng": generator_state(self.rnn._rng),
                    "run": None if self._run is None else self._run.to_state()})

    @classmethod
    def load(cls, path):
        """A model from a checkpoint written by :meth:`save` (or by ``fit``).

        Raises
        ------
        OSError
            The file cannot be read.
        rnnfast.CheckpointError (a ValueError)
            It is not a valid CharLM checkpoint; the message names the file.
        """
        content = load(path)
        try:
            return cls._from_checkpoint(content)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            detail = f"missing entry {exc}" if isinstance(exc, KeyError) else str(exc)
            raise CheckpointError(f"cannot load {str(path)!r} as a CharLM: {detail}") from None

    @classmethod
    def _from_checkpoint(cls, content):
        if not isinstance(content, dict) or content.get("format") != FORMAT:
            got = content.get("format") if isinstance(content, dict) else None
            raise ValueError(f"it is not a CharLM checkpoint (format {got!r}, expected "
                             f"{FORMAT!r})")
        if content["version"] != VERSION:
            raise ValueError(f"CharLM checkpoint version {content['version']!r} is not "
                             f"supported (this rnnfast reads version {VERSION})")
        model = cls(**content["config"])
        for name in ("rnn", "head"):
            getattr(model, name).load_state_dict(content[name].state_dict())
        restore_generator(model.rnn._rng, content["dropout_rng"])
        if content["run"] is not None:
            model._run = model._restored_run(content["run"])
        return model

    def _restored_run(self, state):
        optimizer = Adam([self.rnn, self.head])
        optimizer.load_state_dict(state["optimizer"])
        position = state["position"]
        settings = dict(state["settings"])
        missing = set(RUN_DEFAULTS) - set(settings)
        if missing:
            raise ValueError(f"the run's settings lack {sorted(missing)}")
        return _Run(settings, dict(state["stop"]), optimizer,
                    epoch=int(position["epoch"]), batch=int(position["batch"]),
                    step=int(position["step"]), characters=int(position["characters"]),
                    state=self._carried_state(state["state"], settings["batch_size"]),
                    history=History.from_state(state["history"]),
                    elapsed=float(state["elapsed"]))

    def _carried_state(self, saved, batch_size):
        """A saved carried state (None, h, or [h, c] for the LSTM) in the layer's form,
        each part checked to be (L, B, H)."""
        if saved is None:
            return None
        parts = saved if isinstance(saved, list) else [saved]
        shape = (self.num_layers, batch_size, self.hidden_size)
        if len(parts) != len(self.rnn._state_names) or not all(
                isinstance(part, np.ndarray) and part.shape == shape for part in parts):
            raise ValueError(f"the carried state must be {len(self.rnn._state_names)} "
                             f"array(s) of shape {shape}")
        return tuple(parts) if len(parts) > 1 else parts[0]


# ----------------------------------------------------------------------------- helpers

def _negative_log_likelihood(logits, targets):
    """Sum over positions of -log softmax(logits)[target], in float64.

    logits (T, B, V), targets (T, B) ids.
    """
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=-1))                       # (T, B)
    picked = np.take_along_axis(z, targets[..., None], axis=-1)[..., 0]
    return float(np.sum(log_norm - picked))


def _check_directory(path):
    """FileNotFoundError now, rather than after training, if ``path``'s directory is
    missing."""
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, "the checkpoint's directory does not exist",
                                directory)


def _total_steps(stop, batches):
    """The run's last step when the limits in steps or epochs fix it, else None."""
    limits = [limit for limit in (stop["max_steps"],
                                  None if stop["epochs"] is None else stop["epochs"] * batches)
              if limit is not None]
    return min(limits) if limits else None


def _stop_reason(run, batches, budget, interrupted):
    """Why the run must stop before its next step, or None."""
    if interrupted:
        return "interrupted"
    if run.stop["max_steps"] is not None and run.step >= run.stop["max_steps"]:
        return "max_steps"
    if run.stop["epochs"] is not None and run.epoch >= run.stop["epochs"]:
        return "epochs"
    if budget.expired():
        return "time_budget"
    return None


def _progress_text(step_loss, characters, seconds):
    loss = float(np.mean(step_loss[-_SMOOTHING_STEPS:]))
    rate = characters / seconds if seconds > 0 else 0.0
    return f"loss {loss:.3f}, {loss / _LN2:.3f} bits/char, {rate:,.0f} chars/s"


def _print_line(bar, line):
    """A line on stdout, above the progress bar, flushed so that pipes see it now."""
    bar.write(line, file=sys.stdout)
    sys.stdout.flush()
