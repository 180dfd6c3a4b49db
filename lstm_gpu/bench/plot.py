"""PNG plot: time per step against batch size, one line per path, one panel per case family.

matplotlib is an optional extra (``pip install 'lstm-gpu[plot]'``); it is imported only when
a plot is asked for, with the non-interactive Agg backend.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

from .engine import OK, Result
from .report import section_title

MISSING = ("--plot needs matplotlib, an optional extra: pip install 'lstm-gpu[plot]' "
           "(or pip install matplotlib)")


class PlotUnavailable(RuntimeError):
    pass


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise PlotUnavailable(MISSING) from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def series(results: Sequence[Result]) -> "OrderedDict[str, OrderedDict[str, list]]":
    """{panel title: {path label: [(batch, median, q1, q3), ...]}} in seconds per step, for
    the timed results."""
    panels: "OrderedDict[str, OrderedDict[str, list]]" = OrderedDict()
    for r in results:
        if r.status == OK:
            lines = panels.setdefault(section_title(r), OrderedDict())
            t = r.case.timesteps
            lines.setdefault(r.label, []).append(
                (r.case.batch, r.stats.median / t, r.stats.q1 / t, r.stats.q3 / t))
    return panels


def plot(results: Sequence[Result], path, *, title: str) -> None:
    """Write the PNG to `path`. Raises PlotUnavailable without matplotlib."""
    plt = _pyplot()
    panels = series(results)
    n = max(len(panels), 1)
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 4.4 * rows), squeeze=False)
    for ax, (panel, lines) in zip(axes.flat, panels.items()):
        for label, points in lines.items():
            points.sort()
            xs, med, q1, q3 = (list(v) for v in zip(*points))
            ys = [m * 1e6 for m in med]
            spread = [[(m - lo) * 1e6 for m, lo in zip(med, q1)],
                      [(hi - m) * 1e6 for m, hi in zip(med, q3)]]
            ax.errorbar(xs, ys, yerr=spread, marker="o", capsize=3, label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("time per step (µs): median, quartiles")
        ax.set_title(panel, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if not panels:
        axes.flat[0].set_visible(True)
        axes.flat[0].text(0.5, 0.5, "no path ran", ha="center", va="center")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
