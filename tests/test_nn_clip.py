"""Scratch global-norm gradient clipping against ``torch.nn.utils.clip_grad_norm_``, in float64."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from divekit.errors import DivekitError, NonFiniteLossError
from divekit.nn.clip import clip_grad_norm, global_grad_norm

SETTINGS = settings(max_examples=40, deadline=None)
TOL = {"rtol": 1e-12, "atol": 1e-300}


def _params_with_grads(shapes: list[list[int]], scale: float, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        p = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
        p.grad = scale * torch.randn(shape, generator=g, dtype=torch.float64)
        params.append(p)
    return params


def _copy(params: list[torch.Tensor]) -> list[torch.Tensor]:
    out = []
    for p in params:
        q = p.detach().clone().requires_grad_()
        q.grad = None if p.grad is None else p.grad.clone()
        out.append(q)
    return out


@SETTINGS
@given(
    shapes=st.lists(st.lists(st.integers(1, 5), min_size=0, max_size=3), min_size=1, max_size=4),
    scale=st.sampled_from([1e-8, 1e-3, 1.0, 50.0, 1e6]),
    max_norm=st.floats(1e-3, 100.0),
    norm_type=st.sampled_from([1.0, 2.0, 3.0, math.inf]),
    seed=st.integers(0, 2**16),
)
def test_matches_torch(shapes, scale: float, max_norm: float, norm_type: float, seed: int) -> None:
    ours = _params_with_grads(shapes, scale, seed)
    ref = _copy(ours)
    total = clip_grad_norm(ours, max_norm, norm_type)
    ref_total = nn.utils.clip_grad_norm_(ref, max_norm, norm_type)
    torch.testing.assert_close(total, ref_total, **TOL)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.grad, b.grad, **TOL)


def test_norm_is_the_norm_of_all_gradients_as_one_vector() -> None:
    params = _params_with_grads([[3, 4], [5], [2, 2, 2]], 1.0, seed=0)
    flat = torch.cat([p.grad.flatten() for p in params])
    for p in (1.0, 2.0, 3.5):
        torch.testing.assert_close(global_grad_norm(params, p), flat.abs().pow(p).sum().pow(1 / p), **TOL)
    assert global_grad_norm(params, math.inf).item() == flat.abs().max().item()


def test_clipping_caps_the_norm_and_keeps_the_direction() -> None:
    params = _params_with_grads([[10, 10], [7]], 100.0, seed=1)
    before = torch.cat([p.grad.flatten() for p in params])
    total = clip_grad_norm(params, 1.0)
    after = torch.cat([p.grad.flatten() for p in params])
    assert total.item() == pytest.approx(before.norm().item(), rel=1e-12)
    assert after.norm().item() == pytest.approx(1.0, rel=1e-6)  # 1 / (1 + 1e-6 / total): just under 1
    torch.testing.assert_close(after / after.norm(), before / before.norm(), **TOL)


def test_small_gradients_are_left_alone() -> None:
    params = _params_with_grads([[4, 4]], 0.01, seed=2)
    before = params[0].grad.clone()
    clip_grad_norm(params, 10.0)
    assert torch.equal(params[0].grad, before)


def test_parameters_without_gradients_and_single_tensors() -> None:
    params = _params_with_grads([[3], [2]], 5.0, seed=3)
    params.append(torch.zeros(4, requires_grad=True))  # never got a gradient
    ref = _copy(params)
    torch.testing.assert_close(clip_grad_norm(params, 0.5), nn.utils.clip_grad_norm_(ref, 0.5), **TOL)
    assert params[2].grad is None
    single, single_ref = _copy(params[:1])[0], _copy(params[:1])[0]
    torch.testing.assert_close(clip_grad_norm(single, 0.1), nn.utils.clip_grad_norm_(single_ref, 0.1), **TOL)
    torch.testing.assert_close(single.grad, single_ref.grad, **TOL)
    assert clip_grad_norm([torch.zeros(2, requires_grad=True)], 1.0).item() == 0.0


def test_zero_gradients_stay_zero_and_finite() -> None:
    p = torch.zeros(5, requires_grad=True)
    p.grad = torch.zeros(5)
    assert clip_grad_norm([p], 1.0).item() == 0.0
    assert torch.equal(p.grad, torch.zeros(5))


def test_huge_gradients_do_not_overflow() -> None:
    p = torch.zeros(3, requires_grad=True)
    p.grad = torch.full((3,), 1e30)  # |g|^2 = 1e60 overflows float32; the norm itself does not
    ref = p.grad.double()  # the float64 computation is the reference here (torch's float32 norm is inf)
    total = clip_grad_norm([p], 1.0)
    torch.testing.assert_close(total.double(), ref.norm(), rtol=1e-6, atol=0)
    torch.testing.assert_close(p.grad.double(), ref / ref.norm(), rtol=1e-6, atol=0)


def test_non_finite_gradients() -> None:
    p = torch.zeros(3, requires_grad=True)
    p.grad = torch.tensor([1.0, float("nan"), 2.0])
    assert math.isnan(clip_grad_norm([p], 1.0).item())
    p.grad = torch.tensor([1.0, float("inf"), 2.0])
    with pytest.raises(NonFiniteLossError, match="gradient norm is inf"):
        clip_grad_norm([p], 1.0, error_if_nonfinite=True)
    with pytest.raises(DivekitError, match="norm_type"):
        global_grad_norm([p], 0.0)


def test_clipped_training_step_equals_torch_in_a_model() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    twin = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    twin.load_state_dict(net.state_dict())
    x, y = torch.randn(32, 6, dtype=torch.float64) * 30, torch.randn(32, 3, dtype=torch.float64)
    for model, clip in ((net, clip_grad_norm), (twin, nn.utils.clip_grad_norm_)):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(5):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            clip(model.parameters(), 0.25)
            opt.step()
    for a, b in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
