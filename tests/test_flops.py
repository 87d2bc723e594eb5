"""FLOP counting: hand-computed layers, and whole networks against torch's own FlopCounterMode.

``torch.utils.flop_counter.FlopCounterMode`` counts the convolutions and matrix products that torch
actually dispatches (2 FLOPs per multiply-add, no bias, no pooling or normalisation), so it is an
independent reference for the ``2 * macs`` part of our counts, including for the from-scratch
convolution, whose im2col product it sees as a plain matmul.
"""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from divekit.flops import count_flops, format_flops, matmul_gflops
from divekit.nn.batchnorm import BatchNorm
from divekit.nn.conv import Conv2d
from divekit.nn.pooling import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from divekit.registry import create_model

CNNS = [("lenet", {}), ("lenet", {"modern": True}), ("lenet", {"scratch": True}), ("bn-lenet", {"scratch": True}),
        ("alexnet", {}), ("vgg", {}), ("nin", {}), ("googlenet", {}), ("resnet", {}), ("densenet", {})]


def torch_counted(model: nn.Module, x: torch.Tensor) -> int:
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("scratch", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_convolution_by_hand(scratch, bias):
    layer = (Conv2d if scratch else nn.Conv2d)(4, 6, (3, 5), stride=2, padding=1, groups=2, bias=bias)
    report = count_flops(layer, torch.zeros(1, 4, 9, 11))
    h_out, w_out = (9 + 2 - 3) // 2 + 1, (11 + 2 - 5) // 2 + 1  # 5 x 5
    macs = (4 // 2) * 3 * 5 * 6 * h_out * w_out  # (C_in / groups) * kh * kw per output element
    assert report.macs == macs
    assert report.total == 2 * macs + (6 * h_out * w_out if bias else 0)


def test_linear_pooling_and_norm_by_hand():
    net = nn.Sequential(nn.BatchNorm2d(3), nn.MaxPool2d(2), AvgPool2d(3, stride=1, padding=1), MaxPool2d(2),
                        BatchNorm(3, num_dims=4), GlobalAvgPool2d(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(3, 7))
    rows = count_flops(net, torch.zeros(1, 3, 8, 8)).rows
    expected = [
        2 * 3 * 8 * 8,  # batch norm: scale and shift per element
        4 * 3 * 4 * 4,  # 2x2 max pool: 4 compares per output
        9 * 3 * 4 * 4,  # 3x3 average pool, stride 1, padding 1: 9 adds per output
        4 * 3 * 2 * 2,  # scratch 2x2 max pool
        2 * 3 * 2 * 2,  # scratch batch norm
        3 * 2 * 2,  # global average pool: one add per input
        3,  # adaptive pool of an already 1x1 map
        2 * 3 * 7 + 7,  # linear with bias
    ]
    assert [r.flops for r in rows] == expected
    assert [r.kind for r in rows] == ["norm", "pool", "pool", "pool", "norm", "pool", "pool", "linear"]


@pytest.mark.parametrize(("name", "options"), CNNS, ids=[f"{n}{'-' + '-'.join(o) if o else ''}" for n, o in CNNS])
def test_matmul_work_equals_torch_flop_counter(name, options):
    torch.manual_seed(0)
    model = create_model(name, **options)
    x = torch.randn(1, 1, 28, 28)
    report = count_flops(model, x)
    assert 2 * report.macs == torch_counted(model, x)
    assert report.total > 2 * report.macs  # biases, pooling and norms come on top


def test_book_resnet_at_96_pixels():
    """The book's ResNet-18 at 96 pixels: about 0.64 GFLOPs forward (torch's count for the matmul part)."""
    model = create_model("resnet", resolution=96)
    x = torch.zeros(1, 1, 96, 96)
    report = count_flops(model, x)
    assert 2 * report.macs == torch_counted(model, x)
    assert 0.6e9 < report.total < 0.7e9


def test_scratch_and_torch_lenet_cost_the_same():
    x = torch.zeros(1, 1, 28, 28)
    for name, options in [("lenet", {"modern": True}), ("bn-lenet", {})]:
        torch_rows = count_flops(create_model(name, **options), x).rows
        scratch_rows = count_flops(create_model(name, **options, scratch=True), x).rows
        assert [(r.name, r.kind, r.flops) for r in torch_rows] == [(r.name, r.kind, r.flops) for r in scratch_rows]


def test_batch_is_divided_out_and_mode_restored():
    model = create_model("lenet", modern=True).train()
    one = count_flops(model, torch.zeros(1, 1, 28, 28)).total
    assert count_flops(model, torch.zeros(5, 1, 28, 28)).total == one
    assert model.training
    assert count_flops(model, torch.zeros(1, 1, 28, 28)).training_per_image == 3 * one


def test_format_and_command_line():
    report = count_flops(create_model("lenet"), torch.zeros(1, 1, 28, 28))
    text = format_flops(report)
    assert f"{report.total / 1e6:,.2f} MFLOPs per image" in text
    from divekit.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["flops", "resnet", "-o", "resolution=96"]) == 0
    assert "resnet" in out.getvalue() and "MFLOPs per image" in out.getvalue()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["flops", "resnet", "-o", "resolution=20"]) != 0
    assert "resolution" in err.getvalue()


def test_matmul_rate_is_positive_and_finite():
    rate = matmul_gflops(torch.float32, size=128, repeats=2)
    assert 0 < rate < 1e6
