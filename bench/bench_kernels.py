"""Benchmark rnnfast's RNN / LSTM / GRU kernels against PyTorch and the NumPy reference:
the full table by default (``--quick`` for a short run, ``--help`` for the options).
The benchmark itself is ``rnnfast.benchmark`` (also run by ``rnnfast bench``)."""

import sys

from rnnfast.benchmark import main

if __name__ == "__main__":
    sys.exit(main(rerun=True))
