"""rnnfast: fast CPU kernels for recurrent neural networks.

Vanilla RNN (tanh / relu), LSTM and GRU, forward pass and backpropagation
through time, NumPy in and NumPy out, with PyTorch's parameter layout.
``rnnfast.reference`` holds the same functions in plain NumPy.
"""

from ._openmp import passive_wait_while_loading

with passive_wait_while_loading():
    from . import _kernels  # noqa: F401  (loads the OpenMP runtime: see _openmp)

from . import reference
from ._pool import cached_bytes, set_cache_limit
from ._types import Cache, GRUGrads, LSTMGrads, RNNGrads
from .functional import (gru_backward, gru_forward, lstm_backward, lstm_forward,
                         rnn_backward, rnn_forward)
from .io import CheckpointError, load, save
from .layers import GRU, LSTM, RNN
from .linear import Linear
from .losses import cross_entropy, mse_loss
from .optim import SGD, Adam, AdamW, clip_grad_norm

from . import models  # noqa: E402  (ready models, built on everything above)

__version__ = "0.1.0"

__all__ = ["rnn_forward", "rnn_backward", "lstm_forward", "lstm_backward",
           "gru_forward", "gru_backward", "RNNGrads", "LSTMGrads", "GRUGrads", "Cache",
           "RNN", "LSTM", "GRU", "Linear", "mse_loss", "cross_entropy",
           "SGD", "Adam", "AdamW", "clip_grad_norm", "save", "load", "CheckpointError",
           "cached_bytes", "set_cache_limit", "reference", "models"]
