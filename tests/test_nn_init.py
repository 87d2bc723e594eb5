"""Scratch Xavier and Kaiming initialisation against ``torch.nn.init``.

Three kinds of check: (1) fans and gains equal torch's on many shapes; (2) the sample variance of a
large initialised weight matches the formula, for ours and for torch's, within 5 standard errors of
a sample variance (``sigma^2 sqrt((kurtosis - 1) / n)``: kurtosis 3 for normal, 9/5 for uniform);
(3) the variance of a layer's output, through one layer and through a deep stack, is what the scheme
promises to preserve, and torch's initialisation gives the same within sampling error.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from divekit.errors import DivekitError, ShapeError
from divekit.nn import init as scratch

SETTINGS = settings(max_examples=40, deadline=None)
Z = 5.0
KURTOSIS = {"uniform": 9 / 5, "normal": 3.0}


def _torch_fans(w: torch.Tensor) -> tuple[int, int]:
    return nn.init._calculate_fan_in_and_fan_out(w)


@SETTINGS
@given(shape=st.lists(st.integers(1, 6), min_size=2, max_size=5))
def test_fans_match_torch(shape: list[int]) -> None:
    w = torch.empty(shape)
    assert scratch.fans(w) == _torch_fans(w)


def test_fans_need_a_matrix() -> None:
    with pytest.raises(ShapeError, match="out, in"):
        scratch.fans(torch.empty(5))


@pytest.mark.parametrize("name,param", [("linear", None), ("sigmoid", None), ("tanh", None), ("relu", None),
                                        ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None), ("conv2d", None)])
def test_gains_match_torch(name: str, param: float | None) -> None:
    assert scratch.gain(name, param) == pytest.approx(nn.init.calculate_gain(name, param), rel=1e-15)


def test_unknown_names_are_user_errors() -> None:
    with pytest.raises(DivekitError, match="nonlinearity"):
        scratch.gain("swishy")
    with pytest.raises(DivekitError, match="mode"):
        scratch.kaiming_normal_(torch.empty(3, 3), mode="fan_sideways")
    with pytest.raises(DivekitError, match="initialisation"):
        scratch.init_linear_layers_(nn.Linear(2, 2), "orthogonal")


# (ours, torch's, distribution, expected variance as a function of (fan_in, fan_out))
CASES = {
    "xavier_uniform": (lambda w, g: scratch.xavier_uniform_(w, 1.0, g),
                       lambda w, g: nn.init.xavier_uniform_(w, 1.0, g), "uniform", lambda i, o: 2 / (i + o)),
    "xavier_normal_tanh": (lambda w, g: scratch.xavier_normal_(w, 5 / 3, g),
                           lambda w, g: nn.init.xavier_normal_(w, 5 / 3, g), "normal",
                           lambda i, o: (5 / 3) ** 2 * 2 / (i + o)),
    "kaiming_uniform": (lambda w, g: scratch.kaiming_uniform_(w, generator=g),
                        lambda w, g: nn.init.kaiming_uniform_(w, generator=g), "uniform", lambda i, o: 2 / i),
    "kaiming_normal_fan_out": (
        lambda w, g: scratch.kaiming_normal_(w, mode="fan_out", nonlinearity="relu", generator=g),
        lambda w, g: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu", generator=g),
        "normal", lambda i, o: 2 / o),
    "kaiming_uniform_leaky": (lambda w, g: scratch.kaiming_uniform_(w, a=math.sqrt(5), generator=g),
                              lambda w, g: nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g), "uniform",
                              lambda i, o: 1 / (3 * i)),  # nn.Linear's own default
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("shape", [(300, 400), (64, 32, 3, 3)])
def test_weight_variance_matches_formula_and_torch(case: str, shape: tuple[int, ...]) -> None:
    ours_fn, torch_fn, dist, variance = CASES[case]
    fan_in, fan_out = _torch_fans(torch.empty(shape))
    target = variance(fan_in, fan_out)
    n = math.prod(shape)
    band = Z * target * math.sqrt((KURTOSIS[dist] - 1) / n)
    ours = ours_fn(torch.empty(shape, dtype=torch.float64), torch.Generator().manual_seed(1))
    theirs = torch_fn(torch.empty(shape, dtype=torch.float64), torch.Generator().manual_seed(2))
    for w in (ours, theirs):
        assert abs(w.var().item() - target) < band
        assert abs(w.mean().item()) < Z * math.sqrt(target / n)
    if dist == "uniform":  # the support is [-sqrt(3) std, sqrt(3) std] and is nearly filled
        bound = math.sqrt(3 * target)
        assert ours.abs().max().item() <= bound and ours.abs().max().item() > 0.99 * bound


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_generator_gives_torchs_weights(case: str) -> None:
    """Both draw from the generator in the same way, so only the scale could differ: it must not."""
    ours_fn, torch_fn, _, _ = CASES[case]
    ours = ours_fn(torch.empty(20, 30, dtype=torch.float64), torch.Generator().manual_seed(9))
    theirs = torch_fn(torch.empty(20, 30, dtype=torch.float64), torch.Generator().manual_seed(9))
    torch.testing.assert_close(ours, theirs, rtol=1e-13, atol=0)


def test_initialisers_do_not_record_gradients() -> None:
    layer = nn.Linear(8, 4)
    out = scratch.kaiming_uniform_(layer.weight)
    assert out is layer.weight and layer.weight.grad_fn is None and layer.weight.requires_grad


def _output_second_moment(width: int, init, *, relu: bool, batch: int = 4000, seed: int = 0) -> float:
    """E[y^2] for y = W f(x), x ~ N(0, 1), f = relu or identity: fan_in Var(w) E[f(x)^2]."""
    g = torch.Generator().manual_seed(seed)
    w = init(torch.empty(width, width, dtype=torch.float64), g)
    x = torch.randn(batch, width, generator=g, dtype=torch.float64)
    h = torch.relu(x) if relu else x
    return (h @ w.T).pow(2).mean().item()


@pytest.mark.parametrize("relu", [False, True])
def test_one_layer_output_variance(relu: bool) -> None:
    """Kaiming (ReLU gain) keeps E[y^2] = 1 after a ReLU; Xavier keeps 1 without one (square layer)."""
    width = 256
    if relu:
        ours = _output_second_moment(width, lambda w, g: scratch.kaiming_normal_(w, generator=g), relu=True)
        ref = _output_second_moment(width, lambda w, g: nn.init.kaiming_normal_(w, generator=g), relu=True)
    else:
        ours = _output_second_moment(width, lambda w, g: scratch.xavier_normal_(w, generator=g), relu=False)
        ref = _output_second_moment(width, lambda w, g: nn.init.xavier_normal_(w, generator=g), relu=False)
    # One draw of W: E[y^2] = |W h|^2 / width averages width chi-square-like terms; 10% is > 5 sigma here.
    assert ours == pytest.approx(1.0, rel=0.1)
    assert ref == pytest.approx(1.0, rel=0.1)


def _deep_activation_moments(init, activation: str, depth: int = 20, width: int = 256) -> list[float]:
    """E[h^2] after each linear layer of ``depth`` square layers, each followed by ``activation``."""
    act = {"relu": nn.ReLU(), "tanh": nn.Tanh(), "linear": nn.Identity()}[activation]
    net = nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width), act)]).double()
    init(net)
    h = torch.randn(256, width, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    moments = []
    with torch.no_grad():
        for layer in net:
            h = layer(h)
            if isinstance(layer, nn.Linear):
                moments.append(h.pow(2).mean().item())
    return moments


def _scratch(scheme: str, gain_for: str):
    return lambda net: scratch.init_linear_layers_(net, scheme, nonlinearity=gain_for,
                                                   generator=torch.Generator().manual_seed(1))


def _torch_kaiming(net: nn.Module) -> None:
    torch.manual_seed(1)
    for m in net:
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)


def test_deep_relu_stack_kaiming_preserves_while_xavier_and_small_normal_shrink() -> None:
    ours = _deep_activation_moments(_scratch("kaiming", "relu"), "relu")
    theirs = _deep_activation_moments(_torch_kaiming, "relu")
    for moments in (ours, theirs):  # 20 layers later still of order one, for both implementations
        assert 0.25 < min(moments) and max(moments) < 4
    # Xavier without the ReLU gain halves E[h^2] per layer: 2^-19 over the stack (1e-4 is 50x slack).
    xavier = _deep_activation_moments(_scratch("xavier", "linear"), "relu")
    assert xavier[-1] < 1e-4 * xavier[0]
    # A fixed std of 0.01 multiplies E[h^2] by 256 * 1e-4 / 2 = 0.0128 per layer.
    small = _deep_activation_moments(_scratch("normal-0.01", "relu"), "relu")
    assert small[-1] < 1e-30 * small[0]


def test_deep_linear_stack_xavier_preserves_variance() -> None:
    moments = _deep_activation_moments(_scratch("xavier", "linear"), "linear")
    assert 0.25 < min(moments) and max(moments) < 4


def test_init_linear_layers_scales_by_scheme_and_zeroes_biases() -> None:
    net = nn.Sequential(nn.Linear(400, 300), nn.Tanh(), nn.Linear(300, 200)).double()
    g = torch.Generator().manual_seed(4)
    for scheme, gain_for, expected in [
        ("xavier", "tanh", lambda i, o: (5 / 3) ** 2 * 2 / (i + o)),
        ("kaiming", "relu", lambda i, o: 2 / i),
        ("normal-0.05", "relu", lambda i, o: 0.05**2),
    ]:
        scratch.init_linear_layers_(net, scheme, nonlinearity=gain_for, generator=g)
        for layer in (net[0], net[2]):
            fan_out, fan_in = layer.weight.shape
            target = expected(fan_in, fan_out)
            assert abs(layer.weight.var().item() - target) < Z * target * math.sqrt(2 / layer.weight.numel())
            assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
