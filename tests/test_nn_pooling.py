"""Scratch pooling against ``F.max_pool2d``, ``F.avg_pool2d`` and ``F.adaptive_avg_pool2d``.

Tolerances: float64 ``atol = rtol = 1e-10``; float32 ``atol = rtol = 1e-5``. Random normal inputs
have no ties inside a window (almost surely); a separate test checks that ties send each window's
gradient to the same pixel PyTorch picks.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from divekit.errors import ShapeError
from divekit.nn.conv import conv_output_shape
from divekit.nn.pooling import AvgPool2d, GlobalAvgPool2d, MaxPool2d, avg_pool2d, global_avg_pool2d, max_pool2d

F64_TOL = {"atol": 1e-10, "rtol": 1e-10}
F32_TOL = {"atol": 1e-5, "rtol": 1e-5}
SETTINGS = settings(max_examples=30, deadline=None)


@st.composite
def pool_cases(draw: st.DrawFn) -> dict:
    """A pooling geometry PyTorch accepts: padding at most half the kernel, kernel fits the padded input."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    stride = draw(st.one_of(st.none(), st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    return {
        "shape": (
            draw(st.integers(1, 3)),
            draw(st.integers(1, 3)),
            max(1, kh - 2 * ph + draw(st.integers(0, 6))),
            max(1, kw - 2 * pw + draw(st.integers(0, 6))),
        ),
        "kernel_size": (kh, kw) if kh != kw else kh,
        "stride": stride,
        "padding": (ph, pw),
    }


def _run(fn, case: dict, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and input gradient of ``fn`` under a fixed random cotangent."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(case["shape"], generator=g, dtype=dtype, requires_grad=True)
    y = fn(x, case["kernel_size"], case["stride"], case["padding"])
    (y * torch.randn(y.shape, generator=g, dtype=dtype)).sum().backward()
    return y.detach(), x.grad


@pytest.mark.parametrize(("ours", "ref"), [(max_pool2d, F.max_pool2d), (avg_pool2d, F.avg_pool2d)], ids=["max", "avg"])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, F64_TOL), (torch.float32, F32_TOL)], ids=["f64", "f32"])
@SETTINGS
@given(case=pool_cases())
def test_pooling_matches_torch(ours, ref, dtype: torch.dtype, tol: dict, case: dict) -> None:
    y, dx = _run(ours, case, dtype)
    y_ref, dx_ref = _run(ref, case, dtype)
    torch.testing.assert_close(y, y_ref, **tol)
    torch.testing.assert_close(dx, dx_ref, **tol)
    assert tuple(y.shape[2:]) == conv_output_shape(
        *case["shape"][2:], case["kernel_size"], case["padding"], case["stride"] or case["kernel_size"]
    )


@SETTINGS
@given(case=pool_cases(), seed=st.integers(0, 2**16))
def test_max_pool_ties_route_the_gradient_like_torch(case: dict, seed: int) -> None:
    # Values in {0, 1, 2} tie inside most windows; each window's gradient must reach the same single pixel.
    x = torch.randint(0, 3, case["shape"], generator=torch.Generator().manual_seed(seed)).double().requires_grad_()
    args = (case["kernel_size"], case["stride"], case["padding"])
    (dx,) = torch.autograd.grad(max_pool2d(x, *args).sum(), x)
    (dx_ref,) = torch.autograd.grad(F.max_pool2d(x, *args).sum(), x)
    assert torch.equal(dx, dx_ref)


def test_max_pool_padding_never_wins_and_avg_pool_counts_padding() -> None:
    x = -torch.ones(1, 1, 2, 2)  # every real pixel is below the zero a naive pad would add
    assert torch.equal(max_pool2d(x, 2, stride=1, padding=1), -torch.ones(1, 1, 3, 3))
    # count_include_pad=True: a corner window holds one real -1 and three zeros, so its mean is -1/4.
    corners = avg_pool2d(x, 2, stride=1, padding=1)[0, 0]
    assert corners[0, 0].item() == -0.25 and corners[1, 1].item() == -1.0


def test_default_stride_is_the_kernel_and_hand_computed_values() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(max_pool2d(x, 2), torch.tensor([[[[5.0, 7.0], [13.0, 15.0]]]]))
    assert torch.equal(avg_pool2d(x, 2), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    assert torch.equal(max_pool2d(x, 3, stride=1), torch.tensor([[[[10.0, 11.0], [14.0, 15.0]]]]))


def test_global_avg_pool_matches_adaptive_pool() -> None:
    x = torch.randn(3, 4, 5, 7, dtype=torch.float64, requires_grad=True)
    y = global_avg_pool2d(x)
    y_ref = F.adaptive_avg_pool2d(x, 1)
    torch.testing.assert_close(y, y_ref, **F64_TOL)
    (dx,) = torch.autograd.grad(y.sum(), x)
    (dx_ref,) = torch.autograd.grad(y_ref.sum(), x)
    torch.testing.assert_close(dx, dx_ref, **F64_TOL)
    torch.testing.assert_close(GlobalAvgPool2d()(x), nn.AdaptiveAvgPool2d(1)(x), **F64_TOL)


def test_modules_match_torch_modules() -> None:
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    torch.testing.assert_close(MaxPool2d(3, 2, 1)(x), nn.MaxPool2d(3, 2, 1)(x), **F64_TOL)
    torch.testing.assert_close(AvgPool2d((2, 3), (1, 2), (1, 0))(x), nn.AvgPool2d((2, 3), (1, 2), (1, 0))(x), **F64_TOL)
    assert list(MaxPool2d(2).state_dict()) == [] and list(AvgPool2d(2).state_dict()) == []


@pytest.mark.parametrize("fn", [max_pool2d, avg_pool2d], ids=["max", "avg"])
def test_pooling_shape_errors(fn) -> None:
    with pytest.raises(ShapeError, match=r"\(batch, channels, H, W\)"):
        fn(torch.zeros(4, 4), 2)
    with pytest.raises(ShapeError, match=r"at least \(3, 3\)"):
        fn(torch.zeros(1, 1, 2, 2), 3)
    with pytest.raises(ValueError, match="at most half"):
        fn(torch.zeros(1, 1, 6, 6), 2, padding=2)
    with pytest.raises(ShapeError, match=r"\(batch, channels, H, W\)"):
        global_avg_pool2d(torch.zeros(4, 4))
