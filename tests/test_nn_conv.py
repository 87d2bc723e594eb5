"""Scratch convolution against ``torch.nn.functional.conv2d`` and ``nn.Conv2d``.

Tolerances: float64 comparisons use ``atol = rtol = 1e-10`` (the two implementations sum the same
products in a different order, so they agree to about 1e-14); float32 comparisons use
``atol = rtol = 1e-5``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from divekit.errors import ShapeError
from divekit.nn.conv import Conv2d, Conv2d1x1, conv2d, conv_output_shape, corr2d, corr2d_vectorised

F64_TOL = {"atol": 1e-10, "rtol": 1e-10}
F32_TOL = {"atol": 1e-5, "rtol": 1e-5}
SETTINGS = settings(max_examples=30, deadline=None)


@st.composite
def conv_cases(draw: st.DrawFn) -> dict:
    """A random convolution geometry whose kernel always fits the padded input."""
    groups = draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = max(1, dh * (kh - 1) + 1 - 2 * ph + draw(st.integers(0, 5)))
    w = max(1, dw * (kw - 1) + 1 - 2 * pw + draw(st.integers(0, 5)))
    return {
        "batch": draw(st.integers(1, 3)),
        "c_in": groups * draw(st.integers(1, 3)),
        "c_out": groups * draw(st.integers(1, 3)),
        "size": (h, w),
        "kernel": (kh, kw),
        "stride": draw(st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3)))),
        "padding": (ph, pw) if ph != pw else ph,  # exercise both the int and the pair form
        "dilation": (dh, dw),
        "groups": groups,
        "bias": draw(st.booleans()),
    }


def _tensors(case: dict, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(case["batch"], case["c_in"], *case["size"], generator=g, dtype=dtype)
    w = torch.randn(case["c_out"], case["c_in"] // case["groups"], *case["kernel"], generator=g, dtype=dtype)
    b = torch.randn(case["c_out"], generator=g, dtype=dtype) if case["bias"] else None
    return x, w, b


def _outputs_and_grads(fn, case: dict, dtype: torch.dtype) -> list[torch.Tensor]:
    """Run ``fn`` on fresh leaf tensors, backprop a fixed random cotangent, return output and grads."""
    leaves = [t.requires_grad_() if t is not None else None for t in _tensors(case, dtype)]
    y = fn(*leaves, case["stride"], case["padding"], case["dilation"], case["groups"])
    cotangent = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    (y * cotangent).sum().backward()
    return [y.detach()] + [t.grad for t in leaves if t is not None]


@SETTINGS
@given(case=conv_cases())
def test_conv2d_matches_torch_in_float64(case: dict) -> None:
    ours = _outputs_and_grads(conv2d, case, torch.float64)
    ref = _outputs_and_grads(F.conv2d, case, torch.float64)
    for name, a, b in zip(["output", "d_input", "d_weight", "d_bias"], ours, ref):
        torch.testing.assert_close(a, b, **F64_TOL, msg=lambda m, n=name: f"{n}: {m}")


@SETTINGS
@given(case=conv_cases())
def test_conv2d_matches_torch_in_float32(case: dict) -> None:
    ours = _outputs_and_grads(conv2d, case, torch.float32)
    ref = _outputs_and_grads(F.conv2d, case, torch.float32)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, **F32_TOL)


@SETTINGS
@given(
    h=st.integers(1, 30),
    w=st.integers(1, 30),
    k=st.integers(1, 7),
    p=st.integers(0, 3),
    s=st.integers(1, 4),
    d=st.integers(1, 3),
)
def test_conv_output_shape_equals_real_layers(h: int, w: int, k: int, p: int, s: int, d: int) -> None:
    span = d * (k - 1) + 1
    assume(span <= h + 2 * p and span <= w + 2 * p)  # otherwise there is no valid layer to compare with
    y = F.conv2d(torch.empty(1, 1, h, w), torch.empty(1, 1, k, k), stride=s, padding=p, dilation=d)
    assert conv_output_shape(h, w, k, p, s, d) == tuple(y.shape[2:])
    # Rectangular kernels and per-axis hyperparameters: compare with nn.Conv2d.
    layer = nn.Conv2d(1, 1, (k, 1), stride=(s, 1), padding=(p, 0), dilation=(d, 1))
    expected = tuple(layer(torch.empty(1, 1, h, w)).shape[2:])
    assert conv_output_shape(h, w, (k, 1), (p, 0), (s, 1), (d, 1)) == expected


def test_conv_output_shape_formula_without_dilation() -> None:
    # floor((H + 2p - k) / s) + 1, worked by hand: (28 + 4 - 5) // 1 + 1 = 28; (14 - 5) // 2 + 1 = 5.
    assert conv_output_shape(28, 28, 5, padding=2) == (28, 28)
    assert conv_output_shape(14, 15, 5, stride=2) == (5, 6)
    assert conv_output_shape(224, 224, 7, padding=3, stride=2) == (112, 112)


@SETTINGS
@given(h=st.integers(1, 8), w=st.integers(1, 8), kh=st.integers(1, 4), kw=st.integers(1, 4))
def test_corr2d_loop_equals_vectorised_equals_torch(h: int, w: int, kh: int, kw: int) -> None:
    assume(kh <= h and kw <= w)
    g = torch.Generator().manual_seed(h * 100 + w * 10 + kh)
    X = torch.randn(h, w, generator=g, dtype=torch.float64)
    K = torch.randn(kh, kw, generator=g, dtype=torch.float64)
    reference = F.conv2d(X[None, None], K[None, None])[0, 0]
    torch.testing.assert_close(corr2d(X, K), reference, **F64_TOL)
    torch.testing.assert_close(corr2d_vectorised(X, K), reference, **F64_TOL)


def _edge_image() -> torch.Tensor:
    """6 x 8 image: white (1) on the left and right, a black (0) band in columns 2..5."""
    X = torch.ones(6, 8)
    X[:, 2:6] = 0
    return X


def test_edge_detection_example() -> None:
    Y = corr2d(_edge_image(), torch.tensor([[1.0, -1.0]]))
    expected = torch.zeros(6, 7)
    expected[:, 1] = 1  # white -> black edge
    expected[:, 5] = -1  # black -> white edge
    assert torch.equal(Y, expected)
    assert torch.equal(corr2d_vectorised(_edge_image(), torch.tensor([[1.0, -1.0]])), expected)
    # A horizontal kernel cannot see a vertical edge once the image is transposed.
    assert torch.equal(corr2d(_edge_image().T, torch.tensor([[1.0, -1.0]])), torch.zeros(8, 5))


def test_learning_the_edge_kernel_back() -> None:
    torch.manual_seed(0)
    X = _edge_image()[None, None]  # (1, 1, 6, 8)
    Y = corr2d(_edge_image(), torch.tensor([[1.0, -1.0]]))[None, None]  # (1, 1, 6, 7)
    layer = Conv2d(1, 1, kernel_size=(1, 2), bias=False)
    optimiser = torch.optim.SGD(layer.parameters(), lr=0.03)
    for _ in range(200):
        optimiser.zero_grad()
        ((layer(X) - Y) ** 2).sum().backward()
        optimiser.step()
    learned = layer.weight.detach().view(2)
    assert (learned - torch.tensor([1.0, -1.0])).abs().max() < 1e-3, learned


def test_conv2d_module_loads_torch_state_dict_and_matches() -> None:
    torch.manual_seed(0)
    ref = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2).double()
    ours = Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2, dtype=torch.float64)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 4, 9, 7, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x), **F64_TOL)
    assert list(ours.state_dict()) == list(ref.state_dict())


def test_conv2d_default_initialisation_equals_torch() -> None:
    for args, kwargs in [((3, 5, 3), {}), ((4, 8, (5, 2)), {"groups": 2}), ((6, 2, 1), {"bias": False})]:
        torch.manual_seed(7)
        ref = nn.Conv2d(*args, **kwargs)
        torch.manual_seed(7)
        ours = Conv2d(*args, **kwargs)
        torch.testing.assert_close(ours.weight, ref.weight, atol=0, rtol=0)
        assert (ours.bias is None) == (ref.bias is None)
        if ours.bias is not None:
            torch.testing.assert_close(ours.bias, ref.bias, atol=0, rtol=0)


def test_conv1x1_is_a_per_pixel_linear_layer() -> None:
    torch.manual_seed(0)
    ref = nn.Conv2d(5, 3, 1).double()
    ours = Conv2d1x1(5, 3, dtype=torch.float64)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 5, 4, 6, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x), **F64_TOL)
    # Pixel (1, 2) of image 0 is the fully connected layer applied to that pixel's channel vector.
    linear = ref.weight[:, :, 0, 0] @ x[0, :, 1, 2] + ref.bias
    torch.testing.assert_close(ours(x)[0, :, 1, 2], linear, **F64_TOL)


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "kwargs", "expected"),
    [
        ((3, 5, 5), (2, 3, 3, 3), {}, r"\(batch, in_ch, H, W\)"),
        ((1, 4, 5, 5), (2, 3, 3, 3), {}, r"\(batch, 3, H, W\)"),
        ((1, 3, 5, 5), (2, 3, 3), {}, r"\(out_ch, in_ch / groups, kh, kw\)"),
        ((1, 3, 2, 5), (2, 3, 3, 3), {}, r"at least \(3, 3\)"),
        ((1, 3, 2, 5), (2, 3, 3, 3), {"padding": 1}, None),  # fits once padded
        ((1, 3, 3, 3), (2, 3, 2, 2), {"dilation": 3}, r"at least \(4, 4\)"),
        ((1, 4, 5, 5), (3, 2, 1, 1), {"groups": 2}, r"not divisible by groups=2"),
    ],
)
def test_conv2d_shape_errors(x_shape: tuple, w_shape: tuple, kwargs: dict, expected: str | None) -> None:
    x, w = torch.zeros(x_shape), torch.zeros(w_shape)
    if expected is None:
        assert conv2d(x, w, **kwargs).shape == F.conv2d(x, w, **kwargs).shape
        return
    with pytest.raises(ShapeError, match=expected):
        conv2d(x, w, **kwargs)


def test_conv2d_bias_dtype_and_corr2d_errors() -> None:
    x, w = torch.zeros(1, 3, 5, 5), torch.zeros(2, 3, 3, 3)
    with pytest.raises(ShapeError, match=r"bias of shape \(2,\)"):
        conv2d(x, w, torch.zeros(3))
    with pytest.raises(ShapeError, match="dtype"):
        conv2d(x.double(), w)
    with pytest.raises(ShapeError, match=r"\(h, w\)"):
        corr2d(torch.zeros(1, 4, 4), torch.zeros(2, 2))
    with pytest.raises(ShapeError, match="larger than the image"):
        corr2d_vectorised(torch.zeros(2, 4), torch.zeros(3, 1))
    with pytest.raises(ShapeError, match=r"\(batch, 5, H, W\)"):
        Conv2d1x1(5, 2)(torch.zeros(1, 4, 3, 3))
