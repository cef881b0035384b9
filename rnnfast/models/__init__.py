"""Ready models for the two jobs rnnfast is for, built on the layers, losses and
optimizers: :class:`CharLM`, a character-level language model that trains on text and
generates more of it, and :class:`Forecaster`, which predicts the next values of a
time series. Both ``fit``, ``save`` and ``load`` (checkpoints that also resume training)."""

from .charlm import CharLM
from .forecaster import Forecaster

__all__ = ["CharLM", "Forecaster"]
