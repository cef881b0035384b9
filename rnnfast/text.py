"""Text for character-level language models: reading files, the vocabulary, a demo
corpus that ships with Python, the training/validation split, and batches for
truncated backpropagation through time.

Shape legend: N = characters in a text, V = vocabulary size, B = streams (the batch),
T = steps per batch, S = steps per stream, ``S = (N - 1) // B``.

Batching (as char-rnn)
----------------------
The encoded text ``ids`` (N,) is cut into B contiguous streams of S characters; stream
b reads ``ids[b*S : (b+1)*S]`` and predicts the character after each one,
``ids[b*S+1 : (b+1)*S+1]``. A batch is T consecutive steps of all streams at once:
inputs (T, B) and targets (T, B). Consecutive batches continue each stream where the
previous batch stopped, so a model may carry its recurrent state from one batch into
the next within an epoch (no gradient crosses the boundary). The last batch of an
epoch is shorter when T does not divide S; the last ``N - 1 - B*S`` characters (fewer
than B) are never predicted.
"""

import hashlib
import importlib
import numbers
import os
import sys
from collections import Counter
from typing import NamedTuple

import numpy as np

__all__ = ["read_text", "Vocabulary", "Corpus", "builtin_corpus", "split_text",
           "TokenStreams", "text_digest"]


# ----------------------------------------------------------------------------- files

def read_text(paths):
    """The text of one file, or of several concatenated in order.

    Files are decoded as UTF-8 (a leading byte-order mark is dropped) and their line
    endings normalised to ``"\\n"``.

    Parameters
    ----------
    paths : str or os.PathLike, or a sequence of them

    Returns
    -------
    str

    Raises
    ------
    OSError
        A file cannot be read (``FileNotFoundError`` for a missing one), with its name.
    ValueError
        No file was given, a file is empty, or it is not UTF-8 text (the message names
        the file and the offset of the first invalid byte).
    """
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise ValueError("read_text needs at least one file, got none")
    return "".join(_read_file(path) for path in paths)


def _read_file(path):
    name = os.fsdecode(os.fspath(path))
    with open(name, "rb") as file:
        data = file.read()
    if not data:
        raise ValueError(f"{name!r} is empty: there is no text to learn from")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name!r} is not UTF-8 text: invalid byte 0x{data[exc.start]:02x} "
                         f"at offset {exc.start} (convert it, e.g. with iconv -t UTF-8)"
                         ) from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text:
        raise ValueError(f"{name!r} holds only a byte-order mark: there is no text to "
                         f"learn from")
    return text


def text_digest(text):
    """The SHA-256 of ``text``'s UTF-8 bytes, as hex: identifies a training text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------- vocabulary

class Vocabulary:
    """Characters and their integer ids, 0 to V-1, in code point order.

    Parameters
    ----------
    characters : str
        The characters of the vocabulary, each once (any order; they are sorted).
        ``Vocabulary.from_text(text)`` builds one from every character of a text.

    Characters outside the vocabulary cannot be encoded: :meth:`encode` raises a
    ``ValueError`` listing them (there is no "unknown" id; a model can only read and
    write the characters it was trained on).
    """

    def __init__(self, characters):
        if not isinstance(characters, str):
            raise TypeError(f"characters must be a str, got {type(characters).__name__}")
        if not characters:
            raise ValueError("a vocabulary needs at least one character, got ''")
        unique = sorted(set(characters))
        if len(unique) != len(characters):
            repeated = sorted(c for c, count in Counter(characters).items() if count > 1)
            raise ValueError(f"characters must be distinct, got {_show(repeated)} "
                             f"more than once")
        self.characters = "".join(unique)
        self._ids = {character: i for i, character in enumerate(self.characters)}
        # ids of the characters with code points < 128, looked up by byte: the fast path
        # of encode for (mostly) ASCII text.
        self._ascii_ids = np.full(128, -1, dtype=np.int32)
        for character, i in self._ids.items():
            if ord(character) < 128:
                self._ascii_ids[ord(character)] = i

    @classmethod
    def from_text(cls, text):
        """The vocabulary of every character in ``text`` (a non-empty str)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text:
            raise ValueError("text is empty: a vocabulary needs at least one character")
        return cls("".join(set(text)))

    def __len__(self):
        return len(self.characters)

    def __contains__(self, character):
        return character in self._ids

    def __eq__(self, other):
        return isinstance(other, Vocabulary) and other.characters == self.characters

    def __hash__(self):
        return hash(self.characters)

    def __repr__(self):
        return f"Vocabulary({len(self)} characters: {self.characters[:40]!r}...)"

    def unknown(self, text):
        """The distinct characters of ``text`` outside the vocabulary, sorted."""
        return sorted(set(text) - self._ids.keys())

    def encode(self, text, name="text"):
        """``text`` as ids.

        Parameters
        ----------
        text : str
        name : str, what to call ``text`` in an error message

        Returns
        -------
        ids : ndarray of int32, shape (len(text),)

        Raises
        ------
        ValueError
            ``text`` holds characters outside the vocabulary; the message lists them.
        """
        if not isinstance(text, str):
            raise TypeError(f"{name} must be a str, got {type(text).__name__}")
        missing = self.unknown(text)
        if missing:
            raise ValueError(f"{name} holds {len(missing)} character(s) outside the "
                             f"vocabulary of {len(self)}: {_show(missing)}")
        if text.isascii():
            return self._ascii_ids[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
        return np.fromiter(map(self._ids.__getitem__, text), dtype=np.int32,
                           count=len(text))

    def decode(self, ids):
        """The text of a sequence of ids in ``[0, V)``."""
        characters = self.characters
        return "".join(characters[i] for i in np.asarray(ids, dtype=np.int64).reshape(-1))


def _show(characters, limit=10):
    """Characters for an error message: their repr and code point, the first ``limit``."""
    shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in characters[:limit])
    return shown + (f" and {len(characters) - limit} more" if len(characters) > limit else "")


# ----------------------------------------------------------------------------- corpus

class Corpus(NamedTuple):
    """A text and a description of where it came from."""

    text: str
    source: str


# Standard-library modules whose docstrings make the fallback corpus: pure-Python
# modules present in every CPython build.
_FALLBACK_MODULES = ("argparse", "collections", "csv", "dataclasses", "datetime",
                     "decimal", "functools", "inspect", "itertools", "json", "logging",
                     "os", "pathlib", "random", "re", "shutil", "statistics", "string",
                     "subprocess", "textwrap", "threading", "typing", "unittest", "zipfile")


def builtin_corpus():
    """The demo corpus, read at run time from the running Python's own files.

    The Python documentation's topic pages (``pydoc_data.topics``, the text behind
    ``help("if")``: about 0.4 million characters of English prose with Python
    examples), joined in topic-name order, without the rows of their tables (lines
    drawn with ``|`` and ``+--``, mostly padding). Python builds without
    ``pydoc_data`` get the docstrings of a fixed list of standard-library modules and
    their public classes and functions instead.

    Returns
    -------
    Corpus
        ``text`` and ``source``, which says which of the two it is.
    """
    try:
        topics = importlib.import_module("pydoc_data.topics").topics
    except ImportError:
        return _docstring_corpus()
    pages = ("\n".join(line for line in topics[name].strip("\n").split("\n")
                       if not _is_table_row(line))
             for name in sorted(topics))
    text = "\n\n".join(pages) + "\n"
    version = ".".join(map(str, sys.version_info[:2]))
    return Corpus(text, f"the Python {version} documentation topics (pydoc_data.topics)")


def _is_table_row(line):
    """Whether ``line`` is a row or rule of a reStructuredText grid table."""
    return line.lstrip().startswith(("|", "+-", "+="))


def _docstring_corpus():
    docs = []
    for module_name in _FALLBACK_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        docs.append(module.__doc__ or "")
        for name in sorted(getattr(module, "__all__", ())):
            docs.append(getattr(getattr(module, name, None), "__doc__", None) or "")
    text = "\n\n".join(doc.strip("\n") for doc in docs if doc.strip()) + "\n"
    return Corpus(text, "docstrings of Python standard-library modules "
                        "(pydoc_data is not installed)")


# ----------------------------------------------------------------------------- split

def split_text(text, val_fraction):
    """Split ``text`` into a training part and the validation part that follows it.

    Parameters
    ----------
    text : str
    val_fraction : float in [0, 1)
        The share of characters, taken from the end, that goes to validation
        (``round(len(text) * val_fraction)``); 0 gives an empty validation part.

    Returns
    -------
    train, validation : str
    """
    if isinstance(val_fraction, (bool, np.bool_)) or not isinstance(val_fraction,
                                                                    numbers.Real):
        raise TypeError(f"val_fraction must be a number in [0, 1), got "
                        f"{type(val_fraction).__name__} {val_fraction!r}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    cut = len(text) - round(len(text) * val_fraction)
    return text[:cut], text[cut:]


# ----------------------------------------------------------------------------- batches

class TokenStreams:
    """An encoded text cut into B contiguous streams, served as (T, B) batches.

    Parameters
    ----------
    ids : integer ndarray of shape (N,)
        The encoded text, N >= B + 1.
    batch_size : int, B

    Attributes
    ----------
    inputs : ndarray of int32, shape (S, B)
        ``inputs[s, b] = ids[b*S + s]``: step s of stream b.
    targets : ndarray of int32, shape (S, B)
        ``targets[s, b] = ids[b*S + s + 1]``: the character that follows it.
    """

    def __init__(self, ids, batch_size):
        ids = np.asarray(ids)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise TypeError(f"ids must be a 1-D integer array, got {ids.dtype} array of "
                            f"shape {ids.shape}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
                or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if len(ids) < batch_size + 1:
            raise ValueError(f"a text of {len(ids)} characters is too short for "
                             f"batch_size {batch_size}: it needs at least batch_size + 1 "
                             f"= {batch_size + 1} characters (use a smaller batch_size "
                             f"or more text)")
        steps = (len(ids) - 1) // batch_size                   # S
        used = ids[:batch_size * steps + 1].astype(np.int32)
        self.batch_size = int(batch_size)
        self.steps = steps
        self.inputs = np.ascontiguousarray(used[:-1].reshape(batch_size, steps).T)
        self.targets = np.ascontiguousarray(used[1:].reshape(batch_size, steps).T)

    @property
    def characters(self):
        """The number of characters predicted in one pass, B * S."""
        return self.batch_size * self.steps

    def batch_count(self, seq_len):
        """Batches per pass with T = ``seq_len``: ceil(S / T)."""
        return -(-self.steps // seq_len)

    def batch(self, index, seq_len):
        """Batch ``index`` of a pass with T = ``seq_len`` steps.

        Returns
        -------
        inputs, targets : ndarray of int32, shape (T', B)
            T' = T, or fewer for the last batch.
        """
        start = index * seq_len
        if not 0 <= start < self.steps:
            raise IndexError(f"batch {index} is out of range: a pass has "
                             f"{self.batch_count(seq_len)} batches of {seq_len} steps")
        return (self.inputs[start:start + seq_len], self.targets[start:start + seq_len])
