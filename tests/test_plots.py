"""Shared plotting functions: styles per model and split, equal series drawn once, ticks that read."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from divekit import plots
from divekit.plots import line_plot


def _lines(monkeypatch, series, **kwargs):
    """Draw with line_plot and return its axes' lines and legend texts instead of only the PNG."""
    captured = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: captured.setdefault("fig", fig) and path)
    line_plot("unused.png", series, xlabel="epoch", ylabel="y", **kwargs)
    fig = captured["fig"]
    ax = fig.axes[0]
    legend = [t.get_text() for t in fig.legends[0].get_texts()] if fig.legends else []
    plt.close(fig)
    return ax, legend


def test_one_colour_per_model_train_dashed_validation_solid(monkeypatch):
    ax, legend = _lines(monkeypatch, {("a", "train"): ([1, 2], [3.0, 2.0]), ("a", "validation"): ([1, 2], [4.0, 3.5]),
                                      ("b", "train"): ([1, 2], [5.0, 1.0])})
    a_train, a_val, b_train = ax.get_lines()
    assert a_train.get_color() == a_val.get_color() != b_train.get_color()
    assert a_train.get_linestyle() == "--" and a_val.get_linestyle() == "-"
    assert legend == ["a, train", "a, validation", "b, train"]


def test_equal_series_are_drawn_once_and_called_identical(monkeypatch):
    ys = [3.0, 2.0, 1.0]
    ax, legend = _lines(monkeypatch, {"scratch": ([1, 2, 3], ys), "torch": ([1, 2, 3], [y * (1 + 1e-6) for y in ys])})
    assert len(ax.get_lines()) == 1 and legend == ["scratch = torch (identical)"]


def test_overlapping_series_both_show(monkeypatch):
    ax, legend = _lines(monkeypatch, {"scratch": ([1, 2, 3], [0.5, 0.6, 0.7]), "torch": ([1, 2, 3], [0.5, 0.6, 0.7001])})
    assert len(ax.get_lines()) == 2 and legend == ["scratch", "torch (overlaps scratch)"]
    assert ax.get_lines()[1].get_zorder() > ax.get_lines()[0].get_zorder()


def test_different_series_stay_apart(monkeypatch):
    _, legend = _lines(monkeypatch, {"a": ([1, 2, 3], [0.1, 0.5, 0.9]), "b": ([1, 2, 3], [0.9, 0.5, 0.1])})
    assert legend == ["a", "b"]


def test_epoch_ticks_are_integers(monkeypatch):
    ax, _ = _lines(monkeypatch, {"a": ([1, 2, 3], [0.1, 0.2, 0.3])})
    ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)


@pytest.mark.parametrize(("ys", "at_least"), [([6.5, 9.8], 3), ([0.02, 3.0], 4)])
def test_short_log_ranges_get_several_labelled_ticks(monkeypatch, ys, at_least):
    ax, _ = _lines(monkeypatch, {"a": ([1, 2], ys)}, logy=True)
    low, high = min(ys), max(ys)
    labelled = [t for t in ax.get_yticks() if low <= t <= high and ax.yaxis.get_major_formatter()(t)]
    assert len(labelled) >= at_least, labelled


def test_log_axis_over_few_sizes_is_ticked_at_the_data(monkeypatch):
    ax, _ = _lines(monkeypatch, {"a": ([250, 500, 1000, 2000], [0.8, 0.5, 0.5, 0.4])}, logx=True)
    assert list(ax.get_xticks()) == [250, 500, 1000, 2000]


def test_a_single_epoch_gets_an_integer_tick(monkeypatch):
    ax, _ = _lines(monkeypatch, {"a": ([1], [0.8]), "b": ([1], [0.7])})
    assert list(ax.get_xticks()) == [1]


def test_ticks_at_data_values_read_as_numbers(monkeypatch):
    ax, _ = _lines(monkeypatch, {"a": ([1.71333, 19.152, 43.4312], [0.75, 0.74, 0.8])}, logx=True)
    formatter = ax.xaxis.get_major_formatter()
    assert [formatter(t, k) for k, t in enumerate(ax.get_xticks())] == ["1.71", "19.2", "43.4"]
    ax, _ = _lines(monkeypatch, {"a": ([250, 1000, 2000], [0.8, 0.5, 0.4])}, logx=True)
    assert ax.xaxis.get_major_formatter()(1000, 0) == "1,000"


def test_scatter_labels_each_point_beside_it_in_its_own_colour(monkeypatch, tmp_path):
    captured = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: captured.setdefault("fig", fig) and path)
    plots.scatter_plot(tmp_path / "s.png", {"BN-LeNet": (13.5, 0.885), "ResNet-18": (64.7, 0.910)},
                       xlabel="training seconds", ylabel="test accuracy", logx=True)
    ax = captured["fig"].axes[0]
    points = ax.get_lines()
    assert [tuple(p.get_xydata()[0]) for p in points] == [(13.5, 0.885), (64.7, 0.910)]
    assert points[0].get_color() != points[1].get_color()
    assert [t.get_text() for t in ax.texts] == ["BN-LeNet", "ResNet-18"]  # direct labels, no legend
    assert not captured["fig"].legends and ax.get_legend() is None
    assert ax.get_xscale() == "log"
    low, high = ax.get_ylim()
    assert low < 0.885 and high > 0.910
    plt.close(captured["fig"])


def test_scatter_writes_a_png(tmp_path):
    path = plots.scatter_plot(tmp_path / "s.png", {"a": (1.0, 2.0)}, xlabel="x", ylabel="y")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
