"""The benchmark's verdicts and output: the performance target of each row, the
Markdown tables (one per mode), the progress lines and the speed-up figure.

Every function here reads rows as ``rnnfast.benchmark`` makes them (see its module
docstring for the JSON layout) and measures nothing.
"""

import math
import os

__all__ = ["TARGETS", "speed_target", "stream_target", "length_target", "memory_target",
           "machine_summary", "format_tables", "describe_row", "plot_speedups"]

# mode -> the rule its rows are held to
TARGETS = {
    "inference": "rnnfast >= 1.5x the fastest of torch, JAX and ONNX Runtime for H <= 64, "
                 ">= 1.0x for larger H",
    "training": "rnnfast >= 2x the faster of torch and JAX for H <= 128; for larger H "
                ">= 1.1x and >= 80% of the sgemm peak (3x the forward's matrix FLOPs)",
    "stream": "<= 2 µs per call for H <= 64; >= 3x ONNX Runtime and >= 20x torch for "
              "H <= 128",
    "memory": "training=False keeps O(B*H) beyond its outputs: the peak beyond the "
              "outputs at 10*T is at most 1.25x (+1 MiB) that at T",
    "scaling": "linear in T: the time per step at each T is at most 1.25x that at the "
               "shortest T",
}
LENGTH_TOLERANCE = 1.25
MEMORY_TOLERANCE = (1.25, 1.0)   # factor, MiB


# ----------------------------------------------------------------------------- targets

def _at_least(value, bound):
    return None if value is None else value >= bound


def _all_met(checks):
    """False if any check failed, None (unknown) if any could not be made, else True."""
    if any(check is False for check in checks):
        return False
    return None if any(check is None for check in checks) else True


def speed_target(mode, H, speedup, sgemm_fraction=None):
    """``(rule, met)`` of an inference or training row at hidden size H; ``speedup``
    is the best peer's time over rnnfast's (None without peers)."""
    if mode == "inference":
        bound = 1.5 if H <= 64 else 1.0
        return f">= {bound:.1f}x best peer", _at_least(speedup, bound)
    if H <= 128:
        return ">= 2x best peer", _at_least(speedup, 2.0)
    return (">= 1.1x best peer, >= 80% sgemm",
            _all_met([_at_least(speedup, 1.1), _at_least(sgemm_fraction, 0.8)]))


def stream_target(H, rnnfast_us, speedups):
    """``(rule, met)`` of a stream row; ``speedups`` maps a peer to its time per call
    over rnnfast's. Rows with H > 128 have no target: ``(None, None)``."""
    if H > 128:
        return None, None
    peer_rule = ">= 3x onnxruntime, >= 20x torch"
    checks = [_at_least(speedups.get("onnxruntime"), 3.0), _at_least(speedups.get("torch"), 20.0)]
    if H <= 64:
        return f"<= 2 µs, {peer_rule}", _all_met(checks + [rnnfast_us <= 2.0])
    return peer_rule, _all_met(checks)


def length_target(per_step_ratio):
    """``(rule, met)`` of a length-scaling row: its time per step over the shortest
    T's."""
    return f"per step <= {LENGTH_TOLERANCE}x shortest T", per_step_ratio <= LENGTH_TOLERANCE


def memory_target(beyond_mib, beyond_long_mib):
    """``(rule, met)`` of an inference memory row: peak memory beyond the outputs at T
    and at 10*T, in MiB."""
    factor, slack = MEMORY_TOLERANCE
    met = beyond_long_mib <= factor * max(beyond_mib, 0.0) + slack
    return f"beyond outputs at 10T <= {factor}x at T + {slack:g} MiB", met


# ----------------------------------------------------------------------------- numbers

def _ms(value):
    if value is None:
        return "—"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _us(value):
    if value is None:
        return "—"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _ratio(value):
    return "—" if value is None else f"{value:.2f}"


def _percent(value):
    return "—" if value is None else f"{100 * value:.0f}%"


def _mib(value):
    return "—" if value is None else f"{value:.1f}"


def _met(value):
    return {True: "✓", False: "✗", None: "—"}[value]


def _shape(shape):
    return ",".join(map(str, shape))


def _geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


# columns of words, aligned left; numbers align right
_TEXT_COLUMNS = {"cell", "T,B,D,H", "run", "best peer", "target", "met"}


def _markdown(header, rows):
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if name in _TEXT_COLUMNS else "--:" for name in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return lines


# ----------------------------------------------------------------------------- tables

def _threads_text(count):
    return f"{count} thread" if count == 1 else f"{count} threads"


def machine_summary(info):
    """One line naming the machine (``rnnfast.benchmark.machine_info``), for the
    tables' header."""
    def pool(p):
        name = p.get("internal_api", "?")
        where = os.path.basename(os.path.dirname(p.get("filepath", ""))) or "?"
        details = ", ".join(str(s) for s in (p.get("version"), p.get("architecture"),
                                              _threads_text(p.get("num_threads"))) if s)
        return f"{name} from {where} ({details})"

    blas = info["blas"]
    blas_text = ("; ".join(pool(p) for p in blas) if blas is not None
                 else "threadpoolctl missing, BLAS threads not limited")
    versions = ", ".join(f"{name} {version}" for name, version in info["versions"].items())
    coretype = info["env"]["OPENBLAS_CORETYPE"]
    load = info.get("load_average")
    load_text = f"; load average at start {load[0]:.2f}" if load else ""
    return (f"Machine: {info['cpu_model']} ({info['machine']}), {info['cpu_count']} CPUs "
            f"({info['usable_cpus']} usable), {_threads_text(info['threads'])} used; "
            f"Python {info['python']}, {versions}; BLAS/OpenMP: {blas_text}; "
            f"OPENBLAS_CORETYPE={coretype if coretype is not None else 'unset'}{load_text}")


def _speed_table(rows, mode, implementations):
    header = (["cell", "T,B,D,H"] + [f"{name} ms" for name in implementations]
              + ["best peer", "speed-up", "GFLOP/s", "% sgemm", "target", "met"])
    body = [[r["cell"], _shape(r["shape"])]
            + [_ms(r["times_ms"].get(name)) for name in implementations]
            + [r["best_peer"] or "—", _ratio(r["speedup"]), f"{r['gflops']:.1f}",
               _percent(r["sgemm_fraction"]), r["target"] or "—", _met(r["target_met"])]
            for r in rows]
    return _markdown(header, body)


def _stream_table(rows, peers):
    header = (["cell", "H", "rnnfast µs"] + [f"{name} µs" for name in peers]
              + [f"{name}/rnnfast" for name in peers] + ["target", "met"])
    body = [[r["cell"], str(r["shape"][3]), _us(r["times_us"]["rnnfast"])]
            + [_us(r["times_us"].get(name)) for name in peers]
            + [_ratio(r["speedups"].get(name)) for name in peers]
            + [r["target"] or "—", _met(r["target_met"])]
            for r in rows]
    return _markdown(header, body)


def _memory_tables(rows):
    training = [r for r in rows if r["run"] == "training"]
    inference = [r for r in rows if r["run"] == "inference"]
    lines = []
    if training:
        lines.append("Peak memory of one forward + backward (MiB, beyond the inputs):")
        lines.append("")
        lines += _markdown(
            ["cell", "T,B,D,H", "rnnfast MiB", "torch MiB", "torch/rnnfast",
             "outputs + gradients MiB"],
            [[r["cell"], _shape(r["shape"]), _mib(r["peak_mib"]["rnnfast"]),
              _mib(r["peak_mib"].get("torch")), _ratio(r["ratios"].get("torch")),
              _mib(r["outputs_mib"])] for r in training])
    if inference:
        if lines:
            lines.append("")
        lines.append("rnnfast inference (training=False) at T and 10*T: peak memory beyond "
                     "the inputs, and beyond the outputs (MiB):")
        lines.append("")
        lines += _markdown(
            ["cell", "T,B,D,H", "peak", "outputs", "beyond outputs", "10T peak",
             "10T outputs", "10T beyond outputs", "target", "met"],
            [[r["cell"], _shape(r["shape"]), _mib(r["peak_mib"]["rnnfast"]),
              _mib(r["outputs_mib"]), _mib(r["beyond_outputs_mib"]),
              _mib(r["long"]["peak_mib"]), _mib(r["long"]["outputs_mib"]),
              _mib(r["long"]["beyond_outputs_mib"]), r["target"], _met(r["target_met"])]
             for r in inference])
    return lines


def _scaling_tables(rows, implementations):
    lengths = [r for r in rows if r["sweep"] == "length"]
    threads = [r for r in rows if r["sweep"] == "threads"]
    lines = []
    if lengths:
        lines.append("Time against the sequence length T:")
        lines.append("")
        lines += _markdown(
            ["cell", "run", "T,B,D,H"] + [f"{name} ms" for name in implementations]
            + ["rnnfast µs/step", "per step vs shortest T", "target", "met"],
            [[r["cell"], r["run"], _shape(r["shape"])]
             + [_ms(r["times_ms"].get(name)) for name in implementations]
             + [_us(r["rnnfast_us_per_step"]), _ratio(r["per_step_vs_shortest"]),
                r["target"], _met(r["target_met"])] for r in lengths])
    if threads:
        if lines:
            lines.append("")
        lines.append("Time against the thread count (speed-up over the first count in "
                     "brackets):")
        lines.append("")
        lines += _markdown(
            ["cell", "run", "T,B,D,H", "threads"] + [f"{name} ms" for name in implementations],
            [[r["cell"], r["run"], _shape(r["shape"]), str(r["threads"])]
             + [_with_speedup(r["times_ms"].get(name), r["speedup_vs_first"].get(name))
                for name in implementations] for r in threads])
    return lines


def _with_speedup(ms, speedup):
    return _ms(ms) if speedup is None else f"{_ms(ms)} ({speedup:.2f}x)"


def _speed_summary(rows):
    ratios = [r["speedup"] for r in rows if r["speedup"] is not None]
    met = [r["target_met"] for r in rows if r["target"] is not None]
    parts = []
    if ratios:
        parts.append(f"speed-up over the best peer: geometric mean {_geomean(ratios):.2f}, "
                     f"min {min(ratios):.2f}, max {max(ratios):.2f} over {len(ratios)} rows "
                     "(>1: rnnfast faster)")
    if met:
        parts.append(f"targets met in {sum(m is True for m in met)} of {len(met)} rows"
                     + (f" ({sum(m is None for m in met)} undecided: a peer missing)"
                        if any(m is None for m in met) else ""))
    return "; ".join(parts)


def _present(rows, names, key):
    """The names among ``names`` with a time in at least one row."""
    return [name for name in names if any(r[key].get(name) is not None for r in rows)]


def format_tables(results, peers):
    """The machine line, the sgemm peak and one Markdown table per mode measured,
    each under a heading with its target rule and followed by a summary line.
    ``peers`` names the peers in column order."""
    lines = [machine_summary(results["machine"])]
    sgemm = results.get("sgemm")
    if sgemm is not None:
        lines.append(f"sgemm peak: {sgemm['gflops']:.1f} GFLOP/s ({sgemm['n']}x{sgemm['n']} "
                     f"float32, {sgemm['routine']}, {_threads_text(sgemm['threads'])}; "
                     f"best of {', '.join(f'{g:.1f}' for g in sgemm['gflops_measured'])}, "
                     f"measured before the modes and after each)")
    trips = results["machine"].get("round_trip_us")
    if trips:
        lines.append("Round trip between two threads: " + ", ".join(
            "— (no free core)" if t is None else f"{t:.2f} µs" for t in trips)
            + " (before the modes and after each; where it grows, cores far apart slow "
              "the work threads share)")
    for mode in results["settings"]["modes"]:
        rows = [r for r in results["rows"] if r["mode"] == mode]
        if not rows:
            continue
        lines += ["", f"### {mode}", "", f"Target: {TARGETS[mode]}.", ""]
        if mode in ("inference", "training"):
            names = _present(rows, ["rnnfast", *peers, "reference"], "times_ms")
            lines += _speed_table(rows, mode, names)
            summary = _speed_summary(rows)
        elif mode == "stream":
            lines += _stream_table(rows, _present(rows, peers, "times_us"))
            summary = _speed_summary(rows)
        elif mode == "memory":
            lines += _memory_tables(rows)
            summary = None
        else:
            lines += _scaling_tables(rows, _present(rows, ["rnnfast", *peers], "times_ms"))
            summary = None
        if summary:
            lines += ["", summary]
    return "\n".join(lines)


def describe_row(row):
    """One progress line for a finished row."""
    what = f"{row['mode']:9} {row['cell']:8} {_shape(row['shape']):>16}"
    if row["mode"] == "memory":
        return f"{what} {row['run']:9} rnnfast {_mib(row['peak_mib']['rnnfast'])} MiB"
    if row["mode"] == "stream":
        times = "  ".join(f"{name} {_us(t)} µs" for name, t in row["times_us"].items())
    else:
        times = "  ".join(f"{name} {_ms(t)} ms" for name, t in row["times_ms"].items())
    if row["mode"] == "scaling":
        what += f" {row['run']:9} {row['threads']} thr"
    return f"{what}  {times}"


# ----------------------------------------------------------------------------- figure

def plot_speedups(path, results):
    """A PNG of rnnfast's speed-up over the best peer against the hidden size H, one
    panel per mode (inference, training, stream), one line per cell.

    Raises ``rnnfast.plot.PlotUnavailable`` without matplotlib.
    """
    from .plot import new_figure, save_png
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")
    modes = [m for m in ("inference", "training", "stream")
             if any(r["mode"] == m and r["speedup"] is not None for r in results["rows"])]
    figure = new_figure(4.2 * max(len(modes), 1), 4.2)
    for k, mode in enumerate(modes):
        axes = figure.add_subplot(1, len(modes), k + 1)
        rows = [r for r in results["rows"] if r["mode"] == mode and r["speedup"] is not None]
        for cell in dict.fromkeys(r["cell"] for r in rows):
            points = sorted((r["shape"][3], r["speedup"]) for r in rows if r["cell"] == cell)
            axes.plot(*zip(*points), marker="o", label=cell)
        axes.axhline(1.0, color="0.5", linewidth=1.0, linestyle="--")
        axes.set_xscale("log", base=2)
        axes.set_yscale("log")
        axes.set_xticks(sorted({r["shape"][3] for r in rows}))
        axes.xaxis.set_major_formatter(plain)
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.yaxis.set_major_formatter(plain)
        axes.yaxis.set_minor_formatter(plain)
        axes.set_xlabel("hidden size H")
        axes.set_ylabel("best peer time / rnnfast time")
        axes.set_title(mode)
        axes.grid(alpha=0.3, which="both")
        axes.legend()
    save_png(figure, path)
