"""PNG figures of training and forecasts, through matplotlib (``pip install
'rnnfast[plot]'``). Figures are drawn on matplotlib's Agg canvas without pyplot, so
no window opens and no global figure state is touched; files are written atomically.
"""

import sys

from .io import write_atomically

__all__ = ["PlotUnavailable", "require_matplotlib", "plot_path_or_none", "new_figure",
           "save_png", "plot_losses", "plot_forecast"]

INSTALL_HINT = "pip install 'rnnfast[plot]'  (or: pip install matplotlib)"


class PlotUnavailable(ImportError):
    """matplotlib is not installed; the message says how to get it."""


def require_matplotlib():
    """Import matplotlib, or raise :class:`PlotUnavailable` with the install command."""
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable(f"plotting needs matplotlib, which is not installed: "
                              f"{INSTALL_HINT}") from None
    return matplotlib


def plot_path_or_none(path, who):
    """``path`` where a figure can be drawn; None for no ``path``, and None after one
    line on stderr (``who: no plot: <how to install matplotlib>``) without
    matplotlib, so that a command goes on without its figure instead of failing."""
    if path is None:
        return None
    try:
        require_matplotlib()
    except PlotUnavailable as exc:
        print(f"{who}: no plot: {exc}", file=sys.stderr)
        return None
    return path


def new_figure(width=8.0, height=4.5):
    """A matplotlib Figure of ``width`` x ``height`` inches on an Agg canvas (no
    pyplot); PlotUnavailable without matplotlib."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure, path):
    """Write ``figure`` as PNG to ``path``, atomically."""
    write_atomically(path, lambda file: figure.savefig(file, format="png"))


def plot_losses(path, curves, *, xlabel="step", ylabel="loss", title=None, log_y=False):
    """Loss curves as a PNG.

    Parameters
    ----------
    path : str or os.PathLike, the PNG file
    curves : dict of label -> (x, y), sequences of equal length (e.g. ``"train"`` and
        ``"validation"`` against the step or the epoch)
    xlabel, ylabel, title : str
    log_y : bool, a logarithmic loss axis
    """
    figure = new_figure()
    axes = figure.add_subplot()
    for label, (x, y) in curves.items():
        axes.plot(x, y, label=label, marker="o" if len(x) < 30 else None)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    if log_y:
        axes.set_yscale("log")
    if title:
        axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    save_png(figure, path)


def plot_forecast(path, *, history, truth, forecasts, title=None, ylabel=None, xlabel=None):
    """A forecast against what happened, as a PNG.

    Parameters
    ----------
    path : str or os.PathLike, the PNG file
    history : (x, y), the observed series before the forecast (drawn in grey)
    truth : (x, y), the observed values over the forecast period (black)
    forecasts : dict of label -> (x, y), one line per forecaster (the model and any
        baselines), over the forecast period
    x values may be numbers or ``numpy.datetime64``.
    """
    figure = new_figure(10.0, 4.8)
    axes = figure.add_subplot()
    axes.plot(*history, color="0.6", linewidth=1.0, label="history")
    axes.plot(*truth, color="black", linewidth=1.4, label="truth")
    for label, (x, y) in forecasts.items():
        axes.plot(x, y, linewidth=1.2, label=label)
    if xlabel:
        axes.set_xlabel(xlabel)
    if ylabel:
        axes.set_ylabel(ylabel)
    if title:
        axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    save_png(figure, path)
