"""The CNN chapter's experiments: convolution basics, and the family comparison on a small slice."""

from __future__ import annotations

import pytest
import torch

from conftest import needs_fashion_mnist
from divekit.experiments.base import ExperimentContext
from divekit.experiments.cnn_compare import FULL, QUICK, Entry, _precision_pair, compare
from divekit.experiments.conv_basics import EDGE_KERNEL, learn_kernel, run, shape_rows, stripe_image
from divekit.flops import count_flops
from divekit.nn.conv import Conv2d, corr2d
from divekit.registry import create_model, get_experiment


def test_registered_in_the_cnn_chapter():
    assert get_experiment("conv-basics").chapter == "cnn"
    assert get_experiment("cnn-compare").chapter == "cnn"
    assert set(QUICK) <= {e.label for e in FULL}
    assert len({e.slug for e in FULL}) == len(FULL)  # every run gets its own directory


def test_edge_kernel_marks_the_two_vertical_edges():
    y = corr2d(stripe_image(), EDGE_KERNEL)
    expected = torch.zeros(6, 7)
    expected[:, 1] = 1  # white (column 1) to black (column 2)
    expected[:, 5] = -1  # black (column 5) to white (column 6)
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(corr2d(stripe_image().t(), EDGE_KERNEL), torch.zeros(8, 5))


def test_gradient_descent_recovers_the_kernel():
    x = stripe_image()[None, None]
    y = corr2d(stripe_image(), EDGE_KERNEL)[None, None]
    torch.manual_seed(0)
    layer = Conv2d(1, 1, (1, 2), bias=False)
    losses = learn_kernel(x, y, layer, steps=30, lr=3e-2)
    assert losses[-1] < 1e-3 * losses[0]
    torch.testing.assert_close(layer.weight.detach().view(1, 2), EDGE_KERNEL, atol=1e-2, rtol=0)


def test_shape_table_agrees_with_hand_arithmetic():
    rows = {(r[0], r[1], r[2], r[3]): r for r in shape_rows()}
    # (224 + 2 - 11) // 4 + 1 = 54;  (8 + 0 - 3) // 3 + 1 = 2 and (8 + 2 - 5) // 4 + 1 = 2;  (7 + 2 - 4) // 3 + 1 = 2
    assert rows[("224x224", "11x11", "(1, 1)", "(4, 4)")][4] == "54x54"
    assert rows[("8x8", "3x5", "(0, 1)", "(3, 4)")][4] == "2x2"
    assert rows[("7x9", "4x2", "(1, 1)", "(3, 2)")][4] == "2x5"  # (9 + 2 - 2) // 2 + 1 = 5
    assert all(r[-1] == "yes" for r in rows.values())


def test_conv_basics_quick_run(tmp_path):
    ctx = ExperimentContext(out_dir=tmp_path, quick=True, progress=False)
    result = run(ctx)
    m = result["metrics"]
    assert m["shape_cases_agreeing"] == m["shape_cases"]
    assert m["learned_kernel_error"] < 0.1 and m["trajectory_gap_vs_torch"] < 1e-4 and m["conv1x1_vs_matmul"] < 1e-5
    for fig in result["figures"]:
        assert (tmp_path / fig["file"]).stat().st_size > 1000


def test_precision_pair_matches_fp32_and_bf16_runs_of_one_model():
    runs = [{"label": "A", "precision": "fp32"}, {"label": "B", "precision": "fp32"},
            {"label": "B bf16", "precision": "bf16"}]
    assert _precision_pair(runs) == (runs[1], runs[2])
    assert _precision_pair(runs[:2]) is None


@needs_fashion_mnist
@pytest.mark.integration
def test_compare_on_a_slice(tmp_path, one_thread):
    entries = [Entry("LeNet modern", "lenet", {"modern": True}, {"epochs": 2, "lr": 0.1, "momentum": 0.9}),
               Entry("BN-LeNet", "bn-lenet", {}, {"epochs": 1, "lr": 0.5})]
    ctx = ExperimentContext(out_dir=tmp_path, quick=True, progress=False)
    result = compare(ctx, entries, limit=1_000)
    table = result["tables"][0]
    col = {c: i for i, c in enumerate(table["columns"])}
    assert [r[col["model"]] for r in table["rows"]] == ["LeNet modern", "BN-LeNet"]
    for row, (name, options) in zip(table["rows"], [("lenet", {"modern": True}), ("bn-lenet", {})]):
        model = create_model(name, **options)
        assert row[col["parameters"]] == sum(p.numel() for p in model.parameters())
        flops = count_flops(model, torch.zeros(1, 1, 28, 28)).total
        assert row[col["MFLOPs/image"]] == pytest.approx(flops / 1e6)
        # achieved rate = 3 x forward FLOPs x images per second
        assert row[col["GFLOP/s"]] == pytest.approx(3 * flops * row[col["images/s"]] / 1e9)
        assert 0 < row[col["test acc."]] <= 1 and 0 < row[col["best val acc."]] <= 1
    assert [r[col["epochs"]] for r in table["rows"]] == [2, 1]
    best = max(table["rows"], key=lambda r: r[col["best val acc."]])
    assert result["tables"][1]["title"].startswith(best[col["model"]])
    assert sum(r[2] for r in result["tables"][1]["rows"]) == 10_000  # per-class rows cover the test set
    assert result["metrics"]["best_test_accuracy"] == best[col["test acc."]]
    for fig in result["figures"]:
        assert (tmp_path / fig["file"]).is_file()
    # Again into the same directory: the unchanged entry is read back, the changed one retrained.
    changed = [entries[0], Entry("BN-LeNet", "bn-lenet", {}, {"epochs": 1, "lr": 0.2})]
    again = compare(ctx, changed, limit=1_000)
    rows = again["tables"][0]["rows"]
    peak = col["of matmul peak"]  # the product rate is measured anew by every run
    assert rows[0][:peak] + rows[0][peak + 1:] == table["rows"][0][:peak] + table["rows"][0][peak + 1:]
    assert rows[1][col["train s"]] != table["rows"][1][col["train s"]]
    assert "instead of retrained: LeNet modern." in again["summary"]
