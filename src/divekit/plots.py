"""Plots written as PNG files (matplotlib's Agg backend: no display needed).

Inside a Jupyter kernel the backend is left alone, so the notebooks' figures show inline; anywhere
else Agg is chosen before pyplot is imported, so no command ever opens a window.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
)

SeriesKey = str | tuple[str, str]  # a name, or (model, split) with split "train", "validation" or "test"
SPLIT_STYLES = {"train": "--", "validation": "-", "val": "-", "test": ":"}
IDENTICAL_RTOL = 1e-4  # equal to float32 rounding: scratch and torch builds of one computation
OVERLAP_FRACTION = 0.005  # closer than this share of the axis everywhere: one line would hide the other


def line_plot(path: Path, series: Mapping[SeriesKey, tuple[Sequence[float], Sequence[float]]], *, xlabel: str,
              ylabel: str, title: str = "", logy: bool = False, logx: bool = False) -> Path:
    """One line per ``key -> (xs, ys)``.

    A key ``(model, split)`` gives each model one colour and each split one line style (train dashed,
    validation solid, test dotted). Series that are equal are drawn once with a legend entry
    "A = B (identical)"; series that only overlap are both drawn, the later one dotted on top. The
    legend sits below the axes, outside the data.
    """
    lines = _merge_identical([(_label(k), _model(k), _split(k), list(map(float, xs)), list(map(float, ys)))
                              for k, (xs, ys) in series.items()])
    colours = _colours([line[1] for line in lines])
    # Constrained layout makes room for the legend outside the axes instead of squeezing them.
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    drawn: list[tuple[str, list[float], list[float]]] = []
    for label, model, split, xs, ys in lines:
        under = next((name for name, dx, dy in drawn if _overlaps(xs, ys, dx, dy, logy)), None)
        style = {"linestyle": SPLIT_STYLES.get(split, "-"), "color": colours[model], "linewidth": 1.6,
                 "marker": "o" if len(xs) < 30 else None, "markersize": 3}
        if under is not None:  # keep both visible: the later line dotted and on top, named in the legend
            style.update(linestyle=(0, (1, 1.5)), linewidth=2.2, markerfacecolor="white", zorder=3)
            label = f"{label} (overlaps {under})"
        ax.plot(xs, ys, label=label, **style)
        drawn.append((label, xs, ys))
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    _scale_axis(ax.xaxis, ax.set_xscale, [x for line in lines for x in line[3]], log=logx, at_data=True)
    _scale_axis(ax.yaxis, ax.set_yscale, [y for line in lines for y in line[4]], log=logy)
    ax.grid(alpha=0.3)
    if len(series) > 1:  # also for one merged line: its legend entry is what says "identical"
        longest = max(len(line[0]) for line in lines)
        fig.legend(loc="outside lower center", frameon=False, fontsize=9,
                   ncol=1 if longest > 40 else 2 if longest > 22 else 3)
    return save_figure(fig, path)


def legend_outside(ax) -> None:
    """Put the legend of ``ax`` to the right of the axes, off the data (:func:`save_figure` keeps it in the image)."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False, fontsize=9)


def _label(key: SeriesKey) -> str:
    return f"{key[0]}, {key[1]}" if isinstance(key, tuple) else key


def _model(key: SeriesKey) -> str:
    return key[0] if isinstance(key, tuple) else key


def _split(key: SeriesKey) -> str:
    return key[1] if isinstance(key, tuple) else ""


def _colours(models: Sequence[str]) -> dict[str, str]:
    """One colour per model, in order of first appearance."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    unique = list(dict.fromkeys(models))
    return {m: cycle[k % len(cycle)] for k, m in enumerate(unique)}


def _merge_identical(lines: list[tuple]) -> list[tuple]:
    """Draw equal series once, labelled "A = B (identical)", so neither hides under the other."""
    merged: list[list] = []
    for _, model, split, xs, ys in lines:
        twin = next((m for m in merged if m[1] == split and m[2] == xs and
                     np.allclose(m[3], ys, rtol=IDENTICAL_RTOL, atol=0.0, equal_nan=True)), None)
        if twin is None:
            merged.append([model, split, xs, ys, [model]])
        else:
            twin[4].append(model)
    return [(_merged_label(m[4], m[1]), *m[:4]) for m in merged]


def _merged_label(models: list[str], split: str) -> str:
    """``A, train`` or, for equal series, ``A = B, train (identical)``."""
    label = " = ".join(models) + (f", {split}" if split else "")
    return f"{label} (identical)" if len(models) > 1 else label


def _overlaps(xs: list[float], ys: list[float], other_xs: list[float], other_ys: list[float], log: bool) -> bool:
    if xs != other_xs or not ys:
        return False
    a, b = np.asarray(ys), np.asarray(other_ys)
    if log:
        if (a <= 0).any() or (b <= 0).any():
            return False
        a, b = np.log10(a), np.log10(b)
    spread = float(np.nanmax(np.r_[a, b]) - np.nanmin(np.r_[a, b])) or 1.0
    return bool(np.nanmax(np.abs(a - b)) <= OVERLAP_FRACTION * spread)


def _scale_axis(axis, set_scale, values: list[float], *, log: bool, at_data: bool = False) -> None:
    """Integer ticks for integer data (epochs, layers); labelled ticks inside short log ranges.

    With ``at_data``, a log axis over a few distinct values (sample sizes 250, 500, ...) is ticked
    at exactly those values.
    """
    finite = [v for v in values if math.isfinite(v)]
    if not log:
        if finite and all(float(v).is_integer() for v in finite):
            few = sorted(set(finite))
            # MaxNLocator gives up on integers when the range holds fewer than two (one epoch).
            axis.set_major_locator(FixedLocator(few) if len(few) <= 12 else MaxNLocator(integer=True))
        return
    set_scale("log")
    positive = [v for v in finite if v > 0]
    if not positive:
        return
    decades = math.log10(max(positive)) - math.log10(min(positive))
    if at_data and len(set(positive)) <= 8:
        axis.set_major_locator(FixedLocator(sorted(set(positive))))
        axis.set_major_formatter(FuncFormatter(_tick_label))
        axis.set_minor_formatter(NullFormatter())
    elif decades < 2.5:  # matplotlib would label only one or two powers of ten here
        subs = (1.0, 2.0, 5.0) if decades >= 1.2 else tuple(float(k) for k in range(1, 10))
        axis.set_major_locator(LogLocator(base=10, subs=subs))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())


def _tick_label(value: float, _position: float) -> str:
    """A tick at a data value: ``1,000`` for whole numbers, three significant digits otherwise."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:.3g}"


def bars_plot(path: Path, categories: Sequence[str], series: Mapping[str, Sequence[float]], *, xlabel: str,
              ylabel: str, title: str = "") -> Path:
    """Grouped bars: one group per category, one bar per series."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    width = 0.8 / max(len(series), 1)
    for k, (name, values) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(categories))]
        ax.bar(xs, list(values), width=width, label=name)
    crowded = len(categories) > 4 or max(map(len, categories), default=0) > 12
    ax.set_xticks(range(len(categories)), list(categories), rotation=30 if crowded else 0,
                  ha="right" if crowded else "center")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, axis="y")
    legend_outside(ax)
    return save_figure(fig, path)


def scatter_plot(path: Path, points: Mapping[str, tuple[float, float]], *, xlabel: str, ylabel: str,
                 title: str = "", logx: bool = False) -> Path:
    """One labelled point per ``name -> (x, y)``: the label sits beside its point, so no legend is needed."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    colours = _colours(list(points))
    for name, (x, y) in points.items():
        ax.plot([x], [y], "o", color=colours[name], markersize=7)
        ax.annotate(name, (x, y), xytext=(6, 4), textcoords="offset points", fontsize=9)
    xs, ys = [float(x) for x, _ in points.values()], [float(y) for _, y in points.values()]
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    _scale_axis(ax.xaxis, ax.set_xscale, xs, log=logx)
    if ys:  # room above the highest point for its label
        span = (max(ys) - min(ys)) or abs(max(ys)) or 1.0
        ax.set_ylim(min(ys) - 0.15 * span, max(ys) + 0.25 * span)
    if xs and logx:
        ax.set_xlim(min(xs) / 1.3, max(xs) * 2.0)  # labels extend to the right of their points
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def confusion_matrix_plot(path: Path, matrix: torch.Tensor, class_names: Sequence[str], *, title: str = "") -> Path:
    """A ``(classes, classes)`` count matrix, rows true and columns predicted, shown row-normalised."""
    m = matrix.double()
    rates = m / m.sum(1, keepdim=True).clamp_min(1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if m[i, j] > 0:
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=6,
                        color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return save_figure(fig, path)


def image_grid(path: Path, images: torch.Tensor, captions: Sequence[str], *, cols: int = 8, title: str = "") -> Path:
    """Grey images ``(n, H, W)`` in a grid, each with a caption."""
    n = images.shape[0]
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.55), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            ax.imshow(images[k].float().numpy(), cmap="gray_r")
            ax.set_title(captions[k], fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def save_figure(fig, path: Path) -> Path:
    """Lay out, write as PNG (creating folders) and close ``fig``; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is None:  # figures made with a layout engine are laid out by it
        fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # "tight" keeps anything placed outside the axes
    plt.close(fig)
    return path
