"""Plots for the run and eval reports, as PNG bytes: titled, labelled, units on the axes.

matplotlib is imported on the first plot (Agg canvas, no pyplot state), never at import time.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any


def _figure(width: float = 8.0, height: float = 4.5) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - lazy
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any, ax: Any, title: str, xlabel: str, ylabel: str, empty: bool, counts: str = "") -> bytes:
    """Titles and axis labels, integer ticks on a `counts` axis ("x"/"y"), then the PNG bytes."""
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    if counts:
        (ax.xaxis if counts == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if empty:
        ax.text(0.5, 0.5, "nothing to plot", ha="center", va="center", transform=ax.transAxes)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def grouped_bars_png(
    groups: Sequence[str], series: Mapping[str, Sequence[float]], *, title: str, xlabel: str,
    ylabel: str, ymax: float | None = None, fmt: str = "{:.0f}",
) -> bytes:
    """Bars per group, one colour per series (a single series is a plain bar chart)."""
    fig = _figure(max(6.0, 0.6 * len(groups) * max(1, len(series)) + 2))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, labels=[fmt.format(v) for v in values], fontsize=8)
    long = max(map(len, groups), default=0) > 12 or sum(map(len, groups)) > 50
    ax.set_xticks(range(len(groups)), groups, rotation=30 if long else 0, ha="right" if long else "center")
    if ymax is not None:
        ax.set_ylim(0, ymax * 1.08)
    if len(series) > 1:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig, ax, title, xlabel, ylabel, not groups, "" if ymax else "y")


def stacked_barh_png(
    labels: Sequence[str], series: Mapping[str, Sequence[float]], *, title: str, xlabel: str, ylabel: str
) -> bytes:
    fig = _figure(8.0, max(3.0, 0.35 * len(labels) + 1.5))
    ax = fig.add_subplot()
    left = [0.0] * len(labels)
    for name, values in series.items():
        ax.barh(range(len(labels)), values, left=left, label=name)
        left = [a + b for a, b in zip(left, values)]
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig, ax, title, xlabel, ylabel, not labels, "x")


def histogram_png(
    values: Sequence[float], bins: int, *, title: str, xlabel: str, ylabel: str,
    span: tuple[float, float] | None = None,
) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    if values:
        ax.hist(values, bins=bins, range=span)
    return _png(fig, ax, title, xlabel, ylabel, not values, "y")


def heatmap_png(
    matrix: Sequence[Sequence[int]], rows: Sequence[str], cols: Sequence[str], *, title: str,
    xlabel: str, ylabel: str,
) -> bytes:
    """Counts as a colour grid, each cell annotated (a confusion matrix)."""
    fig = _figure(max(6.0, 0.55 * len(cols) + 3), max(4.5, 0.45 * len(rows) + 2.5))
    ax = fig.add_subplot()
    image = ax.imshow(matrix or [[0]], cmap="Blues", aspect="auto")
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    fig.colorbar(image, ax=ax, label="rows", ticks=MaxNLocator(integer=True))
    top = max((v for row in matrix for v in row), default=0)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                        color="white" if v > top / 2 else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    return _png(fig, ax, title, xlabel, ylabel, not matrix)


def throughput_png(points: Sequence[tuple[float, int, int]], buckets: int = 40) -> bytes:
    """Rows/s and output tokens/s over the run, from cumulative (seconds, rows, tokens) points.

    Rates are averaged over equal time buckets: rows reach the driver in bursts (a read chunk
    at a time), so per-point rates would be spikes and zeros."""
    fig = _figure(8.0, 5.5)
    ax_rows, ax_tokens = fig.subplots(2, 1, sharex=True)
    end = points[-1][0] if points else 0.0
    if end > 0:
        n = max(1, min(buckets, len(points) - 1))
        edges = [end * i / n for i in range(n + 1)]
        done = [_done_by(points, t) for t in edges]
        width = end / n
        ax_rows.stairs([(b[0] - a[0]) / width for a, b in zip(done, done[1:])], edges)
        ax_tokens.stairs([(b[1] - a[1]) / width for a, b in zip(done, done[1:])], edges, color="C1")
        for ax in (ax_rows, ax_tokens):
            ax.set_ylim(bottom=0)
    rows, tokens = (points[-1][1], points[-1][2]) if points else (0, 0)
    ax_rows.set(ylabel="rows/s", title=f"Throughput over time ({rows} rows, {tokens} output tokens)")
    return _png(fig, ax_tokens, "", "seconds since processing started (engine start included)", "output tokens/s", end <= 0)


def _done_by(points: Sequence[tuple[float, int, int]], t: float) -> tuple[float, float]:
    """Rows and tokens done at time t, linear between points (bursts spread over their gap)."""
    for (t0, r0, k0), (t1, r1, k1) in zip(points, points[1:]):
        if t <= t1:
            f = (t - t0) / (t1 - t0) if t1 > t0 else 1.0
            return r0 + f * (r1 - r0), k0 + f * (k1 - k0)
    return float(points[-1][1]), float(points[-1][2])


def token_lengths_png(
    prompt: Sequence[int] | Mapping[str, int], output: Sequence[int] | Mapping[str, int], bins: int = 30
) -> bytes:
    """Histograms of prompt and output tokens per row, side by side; each side is either the
    values or an exact value -> rows histogram (what manifests carry)."""
    fig = _figure(9.0, 4.0)
    axes = fig.subplots(1, 2)
    for ax, values, name in zip(axes, (prompt, output), ("Prompt", "Output")):
        if isinstance(values, Mapping):
            points, weights = [int(k) for k in values], list(values.values())
        else:
            points, weights = list(values), [1] * len(values)
        if points:
            ax.hist(points, bins=bins, weights=weights)
        ax.set(title=f"{name} tokens per row ({sum(weights)} rows)", xlabel="tokens", ylabel="rows")
    xlabel = "tokens (all attempts of the row)"
    return _png(fig, axes[1], axes[1].get_title(), xlabel, "rows", not prompt and not output, "y")
