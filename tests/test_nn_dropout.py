"""Scratch inverted dropout against ``nn.Dropout``.

Statistical checks use a fixed seed and a stated tolerance of 5 standard errors, so a correct
implementation fails with probability below 1e-6 for any seed, while a wrong keep probability or a
missing rescaling (errors of several percent) is far outside the band.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from divekit.errors import DivekitError
from divekit.nn.dropout import Dropout, dropout

SETTINGS = settings(max_examples=30, deadline=None)
Z = 5.0  # tolerance in standard errors
N = 200_000  # elements in the statistical tests


def _zero_fraction(layer: nn.Module, p: float, seed: int) -> float:
    torch.manual_seed(seed)
    y = layer(torch.ones(N))
    return (y == 0).double().mean().item()


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.8])
def test_zeroed_fraction_is_p_like_torch(p: float) -> None:
    """The fraction of dropped units is a binomial proportion: mean p, std sqrt(p (1 - p) / N)."""
    tolerance = Z * math.sqrt(p * (1 - p) / N)
    ours = _zero_fraction(Dropout(p), p, seed=1)
    reference = _zero_fraction(nn.Dropout(p), p, seed=1)
    assert abs(ours - p) < tolerance
    assert abs(reference - p) < tolerance  # the reference obeys the same band


@SETTINGS
@given(p=st.floats(0.01, 0.95), shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
       seed=st.integers(0, 2**16))
def test_survivors_are_rescaled_by_one_over_keep_probability(p: float, shape: list[int], seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64) + 0.5  # no exact zeros in the input
    y = dropout(x, p, generator=g)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / (1 - p), rtol=1e-12, atol=0)
    # The same contract as the reference: every output is 0 or x / (1 - p).
    ref = nn.functional.dropout(x, p, training=True)
    ref_kept = ref != 0
    torch.testing.assert_close(ref[ref_kept], x[ref_kept] / (1 - p), rtol=1e-12, atol=0)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_expectation_is_the_input(p: float) -> None:
    """Averaged over T draws, each output estimates x with std |x| sqrt(p / (1 - p) / T)."""
    trials = 4000
    x = torch.linspace(-2, 3, 50, dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    mean = torch.stack([dropout(x, p, generator=g) for _ in range(trials)]).mean(0)
    band = Z * x.abs() * math.sqrt(p / (1 - p) / trials) + 1e-12
    assert ((mean - x).abs() <= band).all()
    # A variant without the 1 / (1 - p) rescaling would be off by a factor (1 - p): outside the band.
    assert ((mean * (1 - p) - x).abs() > band)[x.abs() > 0.5].all()


def test_gradient_is_mask_over_keep_probability() -> None:
    p = 0.4
    x = (torch.rand(1000, dtype=torch.float64) + 0.5).requires_grad_()
    y = dropout(x, p, generator=torch.Generator().manual_seed(3))
    y.sum().backward()
    expected = (y != 0).double() / (1 - p)
    torch.testing.assert_close(x.grad, expected, rtol=1e-14, atol=0)


def test_eval_mode_is_identity_like_torch() -> None:
    x = torch.randn(4, 7)
    for layer in (Dropout(0.5), nn.Dropout(0.5)):
        layer.eval()
        assert torch.equal(layer(x), x)
    assert dropout(x, 0.7, training=False) is x


def test_edge_rates_match_torch() -> None:
    x = torch.randn(3, 5) + 10.0
    torch.manual_seed(0)
    assert torch.equal(Dropout(0.0)(x), x)
    assert torch.equal(nn.Dropout(0.0)(x), x)
    dropped = Dropout(1.0)(x)
    assert torch.equal(dropped, torch.zeros_like(x)) and torch.isfinite(dropped).all()
    assert torch.equal(nn.Dropout(1.0)(x), torch.zeros_like(x))


def test_gradient_at_rate_one_is_zero_like_torch() -> None:
    grads = []
    for fn in (lambda t: dropout(t, 1.0), lambda t: nn.functional.dropout(t, 1.0)):
        x = torch.ones(6, requires_grad=True)
        fn(x).sum().backward()  # the output stays in the graph: earlier layers still get a gradient
        grads.append(x.grad)
    assert torch.equal(grads[0], torch.zeros(6)) and torch.equal(grads[0], grads[1])


def test_seeded_generator_reproduces_the_mask_and_module_follows_global_seed() -> None:
    x = torch.ones(100)
    a = dropout(x, 0.5, generator=torch.Generator().manual_seed(11))
    b = dropout(x, 0.5, generator=torch.Generator().manual_seed(11))
    c = dropout(x, 0.5, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.equal(a, c)
    layer = Dropout(0.5)
    torch.manual_seed(5)
    first = layer(x)
    torch.manual_seed(5)
    assert torch.equal(layer(x), first)


def test_shape_dtype_device_are_kept() -> None:
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x = torch.randn(2, 3, 4).to(dtype)
        y = Dropout(0.3)(x)
        assert y.shape == x.shape and y.dtype == dtype and y.device == x.device


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_invalid_rate_is_a_user_error(p: float) -> None:
    with pytest.raises(DivekitError, match="dropout rate"):
        Dropout(p)
    with pytest.raises(DivekitError, match="dropout rate"):
        dropout(torch.ones(2), p)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.55])
def test_packed_masks_drop_at_p_in_every_lane_and_keep_the_expectation(p: float) -> None:
    """Four 16-bit lanes per 64-bit draw: each lane position must drop at p on its own (a lane whose
    sign bit never varied would drop nothing), and survivors are scaled so E[y] = x."""
    tolerance = Z * math.sqrt(p * (1 - p) / (N // 4))
    torch.manual_seed(2)
    y = Dropout(p, packed=True)(torch.ones(N))
    for lane in range(4):
        assert abs((y[lane::4] == 0).double().mean().item() - p) < tolerance, lane
    rate = round(p * 65536) / 65536
    assert abs(rate - p) <= 2 ** -17
    assert y.unique().tolist() == [0.0, pytest.approx(1 / (1 - rate), rel=1e-6)]
    assert abs(y.double().mean().item() - 1.0) < Z * math.sqrt(p / (1 - p) / N)


def test_packed_masks_follow_the_generator_backpropagate_and_vanish_in_eval() -> None:
    x = torch.randn(3, 5, 7, requires_grad=True)  # 105 elements: not a multiple of the four lanes
    a = dropout(x, 0.3, generator=torch.Generator().manual_seed(4), packed=True)
    b = dropout(x, 0.3, generator=torch.Generator().manual_seed(4), packed=True)
    assert torch.equal(a, b) and a.shape == x.shape
    a.sum().backward()
    torch.testing.assert_close(x.grad, (a != 0).float() / (1 - round(0.3 * 65536) / 65536))
    layer = Dropout(0.3, packed=True).eval()
    assert layer(x) is x
    assert "packed=True" in repr(layer)
    assert torch.equal(Dropout(0.0, packed=True)(x), x)
    assert torch.count_nonzero(Dropout(1.0, packed=True)(x)) == 0
    half = dropout(torch.ones(64, dtype=torch.bfloat16), 0.5, packed=True)
    assert half.dtype == torch.bfloat16 and set(half.unique().tolist()) <= {0.0, 2.0}
