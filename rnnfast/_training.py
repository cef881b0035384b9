"""What every long training loop of the ready models shares: a progress bar that
stays silent when asked or when nobody watches, Ctrl-C that stops after the current
step instead of in the middle of an update, a wall-clock budget that survives a
resume, and random generators whose state goes into a checkpoint.
"""

import signal
import sys
import threading
import time

import numpy as np

__all__ = ["progress_bar", "StopOnInterrupt", "TimeBudget", "generator_state",
           "restore_generator"]


def progress_bar(total=None, *, desc=None, unit="it", quiet=False, file=None, **options):
    """A ``tqdm`` bar on ``file`` (default ``sys.stderr``), disabled with ``quiet`` or
    when ``file`` is not a terminal, so logs and pipes get no control characters.

    ``total`` may be None (no known end: the bar counts). Extra keyword arguments go
    to ``tqdm``. The bar is a context manager; ``bar.update(n)``,
    ``bar.set_postfix_str(text)`` and ``bar.write(line)`` work whether or not it is
    shown (``bar.write`` prints the line either way, above a shown bar).
    """
    from tqdm.auto import tqdm

    file = sys.stderr if file is None else file
    shown = not quiet and _is_terminal(file)
    return tqdm(total=total, desc=desc, unit=unit, file=file, disable=not shown,
                dynamic_ncols=True, leave=True, **options)


def _is_terminal(file):
    try:
        return file.isatty()
    except (AttributeError, ValueError):   # no isatty, or a closed file
        return False


class StopOnInterrupt:
    """Turn the first Ctrl-C into a request to stop at the next safe point.

    ::

        with StopOnInterrupt() as stop:
            for batch in batches:
                train_step(batch)          # never interrupted half way
                if stop.requested:
                    break

    Inside the block the first SIGINT only sets ``requested`` (and prints ``message``
    to stderr); a second one raises ``KeyboardInterrupt`` as usual, for a loop that
    never reaches its check. The previous handler is restored on exit. Signal
    handlers belong to the main thread: elsewhere this does nothing and Ctrl-C keeps
    its default behaviour.
    """

    def __init__(self, message="stopping after the current step (Ctrl-C again to abort)"):
        self.message = message
        self.requested = False
        self._previous = None
        self._installed = False

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.message:
            print(f"\n{self.message}", file=sys.stderr, flush=True)

    def __enter__(self):
        self.requested = False
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc_info):
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
        return False


class TimeBudget:
    """A wall-clock budget in seconds (None: unlimited) that may start part-spent.

    ``spent`` seconds were used before (a resumed run carries them over);
    ``elapsed()`` counts them plus the time since construction and ``expired()``
    says whether the budget is used up.
    """

    def __init__(self, seconds=None, spent=0.0):
        if seconds is not None and not seconds > 0:
            raise ValueError(f"time budget must be a positive number of seconds or None, "
                             f"got {seconds!r}")
        self.seconds = None if seconds is None else float(seconds)
        self._spent = float(spent)
        self._start = time.perf_counter()

    def elapsed(self):
        return self._spent + time.perf_counter() - self._start

    def expired(self):
        return self.seconds is not None and self.elapsed() >= self.seconds


def generator_state(generator):
    """The state of a ``numpy.random.Generator`` as plain JSON values (a dict), for a
    checkpoint; :func:`restore_generator` puts it back."""
    return _plain(generator.bit_generator.state)


def restore_generator(generator, state):
    """Set ``generator`` to a state from :func:`generator_state` (same bit generator
    type). Raises ``ValueError`` for a state of another kind."""
    expected = type(generator.bit_generator).__name__
    if not isinstance(state, dict) or state.get("bit_generator") != expected:
        got = state.get("bit_generator") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"random generator state must be a {expected} state, got {got!r}")
    generator.bit_generator.state = state


def _plain(value):
    """``value`` with NumPy scalars and arrays turned into Python numbers and lists."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
