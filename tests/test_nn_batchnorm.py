"""Scratch batch normalisation against ``nn.BatchNorm1d`` and ``nn.BatchNorm2d``.

Everything runs in float64 and is compared with ``atol = rtol = 1e-10``: outputs, running statistics
after several training steps, evaluation-mode outputs, and gradients of input, weight and bias.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from divekit.errors import ShapeError
from divekit.nn.batchnorm import BatchNorm

TOL = {"atol": 1e-10, "rtol": 1e-10}
SETTINGS = settings(max_examples=30, deadline=None)


def _pair_of_layers(num_dims: int, channels: int, momentum: float | None, seed: int) -> tuple[nn.Module, BatchNorm]:
    """A torch layer with random affine parameters and our layer loaded from its state dict."""
    ref = (nn.BatchNorm1d if num_dims == 2 else nn.BatchNorm2d)(channels, momentum=momentum).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ref.weight.copy_(torch.randn(channels, generator=g, dtype=torch.float64))
        ref.bias.copy_(torch.randn(channels, generator=g, dtype=torch.float64))
    ours = BatchNorm(channels, num_dims, momentum=momentum, dtype=torch.float64)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _input_shape(num_dims: int, batch: int, channels: int, h: int, w: int) -> tuple[int, ...]:
    return (batch, channels) if num_dims == 2 else (batch, channels, h, w)


@SETTINGS
@given(
    num_dims=st.sampled_from([2, 4]),
    batch=st.integers(2, 6),
    channels=st.integers(1, 4),
    h=st.integers(1, 4),
    w=st.integers(1, 4),
    momentum=st.one_of(st.none(), st.floats(0.05, 0.9)),
    seed=st.integers(0, 2**16),
)
def test_training_steps_then_eval_match_torch(
    num_dims: int, batch: int, channels: int, h: int, w: int, momentum: float | None, seed: int
) -> None:
    ref, ours = _pair_of_layers(num_dims, channels, momentum, seed)
    g = torch.Generator().manual_seed(seed + 1)
    shape = _input_shape(num_dims, batch, channels, h, w)
    for _step in range(4):  # each step uses fresh data with a different mean and scale
        x = 3 * torch.randn(shape, generator=g, dtype=torch.float64) + torch.randn(1, generator=g, dtype=torch.float64)
        torch.testing.assert_close(ours(x), ref(x), **TOL)
    for name in ("running_mean", "running_var"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name), **TOL)
    assert ours.num_batches_tracked.item() == ref.num_batches_tracked.item() == 4
    ours.eval(), ref.eval()
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x), **TOL)
    # Evaluation must not touch the running statistics.
    torch.testing.assert_close(ours.running_var, ref.running_var, **TOL)
    assert ours.num_batches_tracked.item() == 4


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("num_dims", [2, 4])
def test_gradients_match_torch(num_dims: int, training: bool) -> None:
    ref, ours = _pair_of_layers(num_dims, 3, 0.1, seed=5)
    with torch.no_grad():  # non-trivial running statistics for the evaluation-mode case
        ref.running_mean.uniform_(-1, 1), ref.running_var.uniform_(0.5, 2)
    ours.load_state_dict(ref.state_dict())
    ref.train(training), ours.train(training)
    x = torch.randn(_input_shape(num_dims, 5, 3, 4, 3), dtype=torch.float64)
    cotangent = torch.randn(x.shape, dtype=torch.float64)
    grads = []
    for layer in (ours, ref):
        leaf = x.clone().requires_grad_()
        (layer(leaf) * cotangent).sum().backward()
        grads.append((leaf.grad, layer.weight.grad, layer.bias.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, **TOL)


def test_training_output_is_normalised_and_running_var_is_unbiased() -> None:
    torch.manual_seed(0)
    layer = BatchNorm(3, 4, momentum=1.0, dtype=torch.float64)  # momentum 1: running stats = this batch
    x = 2 + 5 * torch.randn(4, 3, 5, 5, dtype=torch.float64)
    y = layer(x)
    # With gamma = 1, beta = 0 each channel has mean 0 and (biased) variance 1 - eps / (var + eps).
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)
    biased = x.var(dim=(0, 2, 3), correction=0)
    torch.testing.assert_close(y.var(dim=(0, 2, 3), correction=0), biased / (biased + 1e-5), **TOL)
    torch.testing.assert_close(layer.running_var, x.var(dim=(0, 2, 3), correction=1), **TOL)
    torch.testing.assert_close(layer.running_mean, x.mean(dim=(0, 2, 3)), **TOL)


def test_state_dict_round_trips_with_torch() -> None:
    ref = nn.BatchNorm2d(4).double()
    ref(torch.randn(3, 4, 2, 2, dtype=torch.float64))  # move the running statistics off their defaults
    ours = BatchNorm(4, 4, dtype=torch.float64)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    back = nn.BatchNorm2d(4).double()
    back.load_state_dict(ours.state_dict())
    for key, value in ref.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_shape_errors() -> None:
    with pytest.raises(ShapeError, match=r"\(batch, C\) with C=3"):
        BatchNorm(3, 2)(torch.zeros(4, 3, 2, 2))
    with pytest.raises(ShapeError, match=r"\(batch, C, H, W\) with C=3"):
        BatchNorm(3, 4)(torch.zeros(4, 2, 5, 5))
    with pytest.raises(ShapeError, match="more than one value per channel"):
        BatchNorm(3, 2)(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="num_dims"):
        BatchNorm(3, 3)  # type: ignore[arg-type]
