"""Bidirectional layers: rnnfast's two directions at once against one after the other,
and against PyTorch's bidirectional modules and ONNX Runtime's bidirectional nodes, at
equal thread counts.

For each cell and shape (T, B, D, H), one bidirectional layer holding the same weights
in every implementation, in ``inference`` (the forward alone) and ``training`` (forward
and backward of dL/dy = ``dy``):

* ``at once``: rnnfast as it runs: the two directions side by side where
  ``rnnfast._threads.pairs_directions`` says so, each on half the threads;
* ``in turn``: rnnfast with that pairing off, one direction after the other, each on
  all the threads;
* ``torch``: ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` with ``bidirectional=True``;
* ``onnxruntime``: one node with ``direction="bidirectional"`` (inference, float32).

Timings as in ``bench_kernels.py``: the implementations take turns, the best call
counts; but ONNX Runtime is timed after the others, on its own: its thread pool keeps
spinning after its runs and took a core from whatever ran next in the process (the
directions at once, which need both cores, ran up to 1.6x slower in some processes,
LSTM B = 1, H = 128 0.65-0.83 ms against 0.45-0.49 in others). A peer that is not
installed leaves its column empty. Each implementation's
output (in training: dx) must match rnnfast's within the float32 tolerance, or the run
fails. Where PyTorch would share rnnfast's passive OpenMP runtime, the script runs
itself again with ``GOMP_SPINCOUNT=300000``, as ``bench_kernels.py`` does.

Run it from the repository root with rnnfast built or installed::

    python bench/bench_bidirectional.py                 # the full table
    python bench/bench_bidirectional.py --quick         # smoke run, seconds
    python bench/bench_bidirectional.py --cells lstm --modes training --json bi.json

``main(argv)`` returns the exit status.
"""

import argparse
import contextlib
import importlib
import sys

import numpy as np

import rnnfast
from rnnfast import _threads
from rnnfast._argtypes import positive_float, shape as shape_argument
from rnnfast._bench_machine import (TimingSettings, limited_threads, machine_info, time_best,
                                    time_interleaved, write_json)
from rnnfast._bench_peers import (CELLS, ONNX_OPERATOR, ONNX_OPSET, _onnx_gates, as_numpy,
                                  import_peer, onnx_session)
from rnnfast.benchmark import rerun_on_equal_openmp

LAYERS = {"rnn": rnnfast.RNN, "lstm": rnnfast.LSTM, "gru": rnnfast.GRU}
MODES = ("inference", "training")
SHAPES = ((100, 1, 64, 64), (100, 1, 128, 128), (100, 4, 128, 128), (100, 16, 128, 128),
          (100, 64, 256, 256))
QUICK_SHAPES = ((20, 1, 8, 16), (20, 4, 8, 16))
IMPLEMENTATIONS = ("at once", "in turn", "torch", "onnxruntime")
TOLERANCE = 2e-4   # float32, relative to the largest magnitude


def make_layer(cell, shape, seed=0):
    """A one-layer bidirectional rnnfast layer of ``cell`` for ``shape``."""
    family, nonlinearity, _ = CELLS[cell]
    options = {"nonlinearity": nonlinearity} if family == "rnn" else {}
    _, _, D, H = shape
    return LAYERS[family](D, H, bidirectional=True, seed=seed, **options)


def torch_runner(layer, cell, x, dy):
    """``(infer, train)`` of the PyTorch module with the layer's weights; train returns
    dx."""
    torch = import_peer("torch")
    family, nonlinearity, _ = CELLS[cell]
    options = {"nonlinearity": nonlinearity} if family == "rnn" else {}
    module = getattr(torch.nn, family.upper())(layer.input_size, layer.hidden_size,
                                               bidirectional=True, **options)
    with torch.no_grad():
        for name, value in layer.params.items():
            getattr(module, name).copy_(torch.from_numpy(value))
    x_tensor = torch.from_numpy(x.copy()).requires_grad_(True)
    dy_tensor = torch.from_numpy(dy)

    def infer():
        with torch.inference_mode():
            return module(x_tensor)[0]

    def train():
        module.zero_grad(set_to_none=True)
        x_tensor.grad = None
        module(x_tensor)[0].backward(dy_tensor)
        return x_tensor.grad

    return infer, train


def onnx_runner(layer, cell, x):
    """``infer`` of one bidirectional ONNX node with the layer's weights; None in
    float64."""
    if x.dtype != np.float32:
        return None
    onnx = importlib.import_module("onnx")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    family, nonlinearity, _ = CELLS[cell]
    T, B, D = x.shape
    H = layer.hidden_size

    def stacked(name):   # (2, ...) forward then reverse, gates in ONNX's order
        return np.stack([_onnx_gates(layer.params[f"{name}_l0{suffix}"], family)
                         for suffix in ("", "_reverse")])
    weights = {"W": stacked("weight_ih"), "R": stacked("weight_hh"),
               "B": np.concatenate([stacked("bias_ih"), stacked("bias_hh")], axis=1)}
    attributes = {"hidden_size": H, "direction": "bidirectional"}
    if family == "rnn":
        attributes["activations"] = ["Relu" if nonlinearity == "relu" else "Tanh"] * 2
    if family == "gru":
        attributes["linear_before_reset"] = 1     # r * (h W_hn^T + b_hn), as PyTorch
    node = helper.make_node(ONNX_OPERATOR[family], ["X", "W", "R", "B"], ["Y"], **attributes)
    float_type = onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        [node], f"bidirectional_{cell}",
        [helper.make_tensor_value_info("X", float_type, [T, B, D])],
        [helper.make_tensor_value_info("Y", float_type, [T, 2, B, H])],
        [numpy_helper.from_array(a, name) for name, a in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    session = onnx_session(model, _threads.max_threads())

    def infer():   # (T, 2, B, H) -> (T, B, 2H): the directions side by side
        y = session.run(["Y"], {"X": x})[0]
        return np.concatenate([y[:, 0], y[:, 1]], axis=2)

    return infer


@contextlib.contextmanager
def directions_in_turn():
    """Within the block rnnfast runs the directions one after the other."""
    pairs_directions = _threads.pairs_directions
    _threads.pairs_directions = lambda *args: False
    try:
        yield
    finally:
        _threads.pairs_directions = pairs_directions


def measure(cell, shape, mode, settings):
    """One row: best times in seconds per implementation (None where it cannot run)
    and whether every output matched rnnfast's."""
    rng = np.random.default_rng(1)
    T, B, D, H = shape
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    dy = rng.standard_normal((T, B, 2 * H)).astype(np.float32)
    layer = make_layer(cell, shape)
    layer.train(mode == "training")

    def rnnfast_call():
        y, _ = layer(x)
        return layer.backward(dy)[0] if mode == "training" else y

    def in_turn():
        with directions_in_turn():
            return rnnfast_call()

    calls = {"at once": rnnfast_call, "in turn": in_turn}
    if import_peer("torch") is not None:
        infer, train = torch_runner(layer, cell, x, dy)
        calls["torch"] = train if mode == "training" else infer
    if mode == "inference" and import_peer("onnxruntime") is not None:
        infer = onnx_runner(layer, cell, x)
        if infer is not None:
            calls["onnxruntime"] = infer
    expected = np.array(rnnfast_call())
    scale = max(1.0, float(np.abs(expected).max()))
    agree = all(np.abs(as_numpy(call()) - expected).max() <= TOLERANCE * scale
                for call in calls.values())
    times = time_interleaved({name: (call, None) for name, call in calls.items()
                              if name != "onnxruntime"}, settings)
    if "onnxruntime" in calls:   # last and alone (module docstring)
        times["onnxruntime"] = time_best(calls["onnxruntime"], settings)
    return {"cell": cell, "mode": mode, "shape": list(shape), "agree": agree,
            "seconds": {name: times[name][0] if name in times else None
                        for name in IMPLEMENTATIONS}}


def format_table(rows, threads):
    lines = [f"Bidirectional layers, one layer, float32, {threads} threads (ms, best call)",
             "",
             "| cell | mode | T,B,D,H | at once | in turn | torch | onnxruntime "
             "| at once vs in turn | vs best peer | outputs agree |",
             "|---|---|---|--:|--:|--:|--:|--:|--:|---|"]
    for row in rows:
        seconds = row["seconds"]
        peers = [seconds[name] for name in ("torch", "onnxruntime") if seconds[name]]
        cells = [f"{1e3 * seconds[name]:.3f}" if seconds[name] else "—"
                 for name in IMPLEMENTATIONS]
        versus_peer = f"{min(peers) / seconds['at once']:.2f}x" if peers else "—"
        lines.append(f"| {row['cell']} | {row['mode']} | {','.join(map(str, row['shape']))} | "
                     f"{' | '.join(cells)} | {seconds['in turn'] / seconds['at once']:.2f}x | "
                     f"{versus_peer} | {'yes' if row['agree'] else 'NO'} |")
    return "\n".join(lines)


def build_parser():
    parser = argparse.ArgumentParser(
        description="rnnfast's bidirectional layers: the two directions at once against "
                    "one after the other, PyTorch and ONNX Runtime.")
    parser.add_argument("--cells", default="lstm,gru",
                        help=f"comma-separated, from {', '.join(CELLS)} (default lstm,gru)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help="comma-separated, from inference, training (default both)")
    parser.add_argument("--shapes", nargs="+", type=shape_argument, default=None,
                        help="T,B,D,H each (default: %s)"
                             % " ".join(",".join(map(str, s)) for s in SHAPES))
    parser.add_argument("--min-time", type=positive_float, default=0.3,
                        help="seconds of timed calls per implementation (default 0.3)")
    parser.add_argument("--quick", action="store_true",
                        help="two small shapes, LSTM only, briefly: a smoke run of seconds")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return parser


def main(argv=None, rerun=False):
    """Command-line entry point; returns the exit status (1 where outputs disagree)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    cells = ["lstm"] if args.quick else [c.strip() for c in args.cells.split(",") if c.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not cells or set(cells) - set(CELLS):
        parser.error(f"--cells: choose from {', '.join(CELLS)}, got {args.cells!r}")
    if not modes or set(modes) - set(MODES):
        parser.error(f"--modes: choose from {', '.join(MODES)}, got {args.modes!r}")
    shapes = args.shapes or (QUICK_SHAPES if args.quick else SHAPES)
    threads = _threads.max_threads()
    if rerun:
        rerun_on_equal_openmp(("torch",), threads)
    settings = (TimingSettings(min_time=0.01, min_runs=2) if args.quick
                else TimingSettings(min_time=args.min_time))
    rows = []
    with limited_threads(threads):
        for cell in cells:
            for mode in modes:
                for shape in shapes:
                    rows.append(measure(cell, shape, mode, settings))
    print(format_table(rows, threads))
    if args.json:
        write_json(args.json, {"machine": machine_info(threads, ("torch", "onnxruntime")),
                               "threads": threads, "rows": rows})
    if not all(row["agree"] for row in rows):
        print("error: an implementation's outputs differ from rnnfast's", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(rerun=True))
