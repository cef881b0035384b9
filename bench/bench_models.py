"""Whole training steps of small models, rnnfast against PyTorch, at equal thread counts.

A step is what a training loop does per batch: zero the gradients, forward, loss,
backward, clip the gradient norm, one Adam step. Both libraries hold the same model
with the same weights and see the same batch, float32:

* ``char``: a character model like ``rnnfast demo``'s (without its dropout): one-hot
  characters (V = 103 columns) into L recurrent layers of H units, a Linear layer to V
  logits at every position, softmax cross-entropy over all T*B positions, gradient
  norm clipped at 5. No gradient of the one-hot input is wanted (rnnfast: ``input_grad=False``;
  PyTorch: the input does not require grad). rnnfast looks the input projection of
  one-hot rows up (rnnfast.functional), where PyTorch multiplies by them;
* ``series``: a forecaster's network: one value per step into one recurrent layer, a
  Linear layer from its last state to one output, mean squared error, clipped at 1.

Before timing, one forward and backward of each must agree: the loss and every
gradient within 2e-4 of the largest magnitude, or the run fails. The two take turns
(as in ``bench_kernels.py``); the best step counts. rnnfast's steps hold BLAS at one
thread, as its ready models' training loops do. Where PyTorch would share rnnfast's
passive OpenMP runtime, the script runs itself again with ``GOMP_SPINCOUNT=300000``,
as ``bench_kernels.py`` does.

Run it from the repository root with rnnfast built or installed, and PyTorch::

    python bench/bench_models.py                 # the full table
    python bench/bench_models.py --quick         # smoke run, seconds
    python bench/bench_models.py --json models.json

``main(argv)`` returns the exit status.
"""

import argparse
import sys
from typing import NamedTuple

import numpy as np

import rnnfast
from rnnfast import _threads
from rnnfast._argtypes import positive_float
from rnnfast._bench_machine import (TimingSettings, limited_threads, machine_info,
                                    time_interleaved, write_json)
from rnnfast._bench_peers import import_peer
from rnnfast.benchmark import rerun_on_equal_openmp

LAYERS = {"lstm": rnnfast.LSTM, "gru": rnnfast.GRU, "rnn": rnnfast.RNN}
TOLERANCE = 2e-4   # float32, relative to the largest magnitude
LEARNING_RATE = 2e-3


class Model(NamedTuple):
    kind: str        # "char" or "series"
    cell: str
    layers: int      # L
    hidden: int      # H
    steps: int       # T
    batch: int       # B
    inputs: int      # D: the one-hot width V, or 1


MODELS = (Model("char", "lstm", 1, 192, 50, 32, 103),
          Model("char", "lstm", 2, 192, 50, 32, 103),
          Model("char", "gru", 2, 192, 50, 32, 103),
          Model("char", "lstm", 2, 256, 100, 32, 103),
          Model("series", "lstm", 1, 32, 24, 64, 1),
          Model("series", "gru", 1, 32, 24, 64, 1),
          Model("series", "lstm", 1, 32, 24, 1, 1))   # online: one sequence a step
QUICK_MODELS = (Model("char", "lstm", 2, 16, 10, 4, 20),
                Model("series", "lstm", 1, 8, 6, 8, 1))


def batch(model, rng):
    """Inputs x (T, B, D) float32 and targets: class ids (T, B) for ``char``, values
    (B, 1) for ``series``."""
    T, B, D = model.steps, model.batch, model.inputs
    if model.kind == "char":
        ids = rng.integers(0, D, (T + 1, B))
        return np.eye(D, dtype=np.float32)[ids[:-1]], ids[1:]
    return (rng.standard_normal((T, B, 1)).astype(np.float32),
            rng.standard_normal((B, 1)).astype(np.float32))


class RnnfastStep:
    """The model in rnnfast; ``grads()`` runs forward and backward, ``__call__`` a step."""

    def __init__(self, model, x, targets):
        self.model, self.x, self.targets = model, x, targets
        outputs = model.inputs if model.kind == "char" else 1
        self.rnn = LAYERS[model.cell](model.inputs, model.hidden, num_layers=model.layers,
                                      seed=0)
        self.head = rnnfast.Linear(model.hidden, outputs, seed=1)
        self.modules = [self.rnn, self.head]
        self.optimizer = rnnfast.Adam(self.modules, lr=LEARNING_RATE)
        self.clip = 5.0 if model.kind == "char" else 1.0

    def grads(self):
        """Loss after forward and backward from zeroed gradients."""
        self.optimizer.zero_grad()
        y, state = self.rnn(self.x)                                  # y (T, B, H)
        if self.model.kind == "char":
            loss, d_logits = rnnfast.cross_entropy(self.head(y), self.targets)
            self.rnn.backward(self.head.backward(d_logits), input_grad=False)
            return loss
        h_n = state[0] if isinstance(state, tuple) else state        # (L, B, H)
        loss, d_out = rnnfast.mse_loss(self.head(h_n[-1]), self.targets)
        dh_n = np.zeros_like(h_n)
        dh_n[-1] = self.head.backward(d_out)
        self.rnn.backward(None, (dh_n, None) if isinstance(state, tuple) else dh_n,
                          input_grad=False)
        return loss

    def __call__(self):
        with _threads.blas_on_one_thread():
            self.grads()
            rnnfast.clip_grad_norm(self.modules, self.clip)
            self.optimizer.step()


class TorchStep:
    """The same model, weights and batch in PyTorch."""

    def __init__(self, ours, x, targets):
        torch = import_peer("torch")
        self.torch, self.model = torch, ours.model
        model = ours.model
        self.rnn = getattr(torch.nn, model.cell.upper())(model.inputs, model.hidden,
                                                         num_layers=model.layers)
        self.head = torch.nn.Linear(model.hidden, ours.head.out_features)
        for module, source in ((self.rnn, ours.rnn), (self.head, ours.head)):
            module.load_state_dict({name: torch.from_numpy(value.copy())
                                    for name, value in source.params.items()})
        self.parameters = list(self.rnn.parameters()) + list(self.head.parameters())
        self.optimizer = torch.optim.Adam(self.parameters, lr=LEARNING_RATE)
        self.x = torch.from_numpy(x)
        self.targets = torch.from_numpy(targets)
        self.clip = ours.clip

    def grads(self):
        torch = self.torch
        self.optimizer.zero_grad(set_to_none=False)
        y, state = self.rnn(self.x)
        if self.model.kind == "char":
            logits = self.head(y)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                     self.targets.reshape(-1))
        else:
            h_n = state[0] if isinstance(state, tuple) else state
            loss = torch.nn.functional.mse_loss(self.head(h_n[-1]), self.targets)
        loss.backward()
        return loss.detach().item()

    def __call__(self):
        self.grads()
        self.torch.nn.utils.clip_grad_norm_(self.parameters, self.clip)
        self.optimizer.step()


def agree(ours, theirs):
    """Whether one forward and backward of each give the same loss and gradients."""
    loss, their_loss = ours.grads(), theirs.grads()
    if abs(loss - their_loss) > TOLERANCE * max(1.0, abs(their_loss)):
        return False
    for module, torch_module in ((ours.rnn, theirs.rnn), (ours.head, theirs.head)):
        for name, parameter in torch_module.named_parameters():
            expected = parameter.grad.numpy()
            scale = max(1.0, float(np.abs(expected).max()))
            if np.abs(module.grads[name] - expected).max() > TOLERANCE * scale:
                return False
    return True


def measure(model, settings):
    """One row: best seconds per step of each library and whether they agree."""
    x, targets = batch(model, np.random.default_rng(0))
    ours = RnnfastStep(model, x, targets)
    row = {**model._asdict(), "agree": None, "seconds": {"rnnfast": None, "torch": None}}
    candidates = {"rnnfast": (ours, None)}
    if import_peer("torch") is not None:
        theirs = TorchStep(ours, x, targets)
        row["agree"] = agree(ours, theirs)
        candidates["torch"] = (theirs, None)
    for name, (best, _) in time_interleaved(candidates, settings).items():
        row["seconds"][name] = best
    return row


def format_table(rows, threads):
    lines = [f"Training steps of whole models, float32, {threads} threads (ms per step, "
             f"best step)",
             "",
             "| model | cell | L x H | T,B,D | rnnfast ms | torch ms | speed-up "
             "| rnnfast positions/s | agree |",
             "|---|---|---|---|--:|--:|--:|--:|---|"]
    for row in rows:
        ours, theirs = row["seconds"]["rnnfast"], row["seconds"]["torch"]
        speed_up = f"{theirs / ours:.2f}x" if theirs else "—"
        agreement = "—" if row["agree"] is None else ("yes" if row["agree"] else "NO")
        lines.append(
            f"| {row['kind']} | {row['cell']} | {row['layers']} x {row['hidden']} | "
            f"{row['steps']},{row['batch']},{row['inputs']} | {1e3 * ours:.2f} | "
            f"{f'{1e3 * theirs:.2f}' if theirs else '—'} | {speed_up} | "
            f"{row['steps'] * row['batch'] / ours:,.0f} | {agreement} |")
    return "\n".join(lines)


def build_parser():
    parser = argparse.ArgumentParser(
        description="Training steps of whole small models (a character model, a "
                    "forecaster's network): rnnfast against PyTorch.")
    parser.add_argument("--min-time", type=positive_float, default=1.0,
                        help="seconds of timed steps per library and model (default 1)")
    parser.add_argument("--quick", action="store_true",
                        help="two tiny models, briefly: a smoke run of seconds")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return parser


def main(argv=None, rerun=False):
    """Command-line entry point; returns the exit status (1 where the libraries
    disagree)."""
    args = build_parser().parse_args(argv)
    threads = _threads.max_threads()
    if rerun:
        rerun_on_equal_openmp(("torch",), threads)
    settings = (TimingSettings(min_time=0.01, min_runs=2) if args.quick
                else TimingSettings(min_time=args.min_time, turn_time=0.1))
    with limited_threads(threads):
        rows = [measure(model, settings) for model in (QUICK_MODELS if args.quick
                                                       else MODELS)]
    print(format_table(rows, threads))
    if args.json:
        write_json(args.json, {"machine": machine_info(threads, ("torch",)),
                               "threads": threads, "rows": rows})
    if any(row["agree"] is False for row in rows):
        print("error: rnnfast's loss or gradients differ from PyTorch's", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(rerun=True))
