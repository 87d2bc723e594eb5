"""Synthetic regression data: shapes, seeds, and the generating model recovered by least squares."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from divekit.data.synthetic import POLY_COEFFICIENTS, linear_data, polynomial_data, polynomial_features
from divekit.errors import DataError, ShapeError

SETTINGS = settings(max_examples=25, deadline=None)


@SETTINGS
@given(n=st.integers(1, 30), degree=st.integers(0, 12), seed=st.integers(0, 1000))
def test_polynomial_features_are_scaled_powers(n: int, degree: int, seed: int) -> None:
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    phi = polynomial_features(x, degree)
    assert phi.shape == (n, degree + 1)
    for i in range(degree + 1):  # column by column, from the definition x^i / i!
        expected = torch.tensor([v**i / math.factorial(i) for v in x.tolist()], dtype=torch.float64)
        torch.testing.assert_close(phi[:, i], expected, rtol=1e-12, atol=1e-300)


def test_polynomial_data_shapes_and_dtype() -> None:
    d = polynomial_data(30, 70, max_degree=20)
    assert d.train_x.shape == (30, 21) and d.test_x.shape == (70, 21)
    assert d.train_y.shape == (30,) and d.test_y.shape == (70,)
    assert d.train_x.dtype == d.train_y.dtype == torch.float64
    assert d.true_w[:4].tolist() == list(POLY_COEFFICIENTS) and not d.true_w[4:].any()
    torch.testing.assert_close(d.train_x[:, 0], torch.ones(30, dtype=torch.float64))  # x^0 / 0!


def test_seeds_fix_the_data() -> None:
    for make in (polynomial_data, linear_data):
        a, b, c = make(seed=3), make(seed=3), make(seed=4)
        assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
        assert not torch.equal(a.train_x, c.train_x) and not torch.equal(a.train_y, c.train_y)
    # Drawing the data must not disturb the global generator (experiments seed it separately).
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    polynomial_data(seed=9), linear_data(seed=9)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("max_degree", [3, 6, 10])
def test_noise_free_polynomial_is_recovered_by_least_squares(max_degree: int) -> None:
    d = polynomial_data(200, 10, max_degree=max_degree, noise=0.0, seed=1)
    w = torch.linalg.lstsq(d.train_x, d.train_y.unsqueeze(1)).solution.squeeze(1)
    torch.testing.assert_close(w[:4], torch.tensor(POLY_COEFFICIENTS, dtype=torch.float64), rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(w[4:], torch.zeros(max_degree - 3, dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(d.test_x @ w, d.test_y, rtol=1e-9, atol=1e-9)


def test_polynomial_noise_has_the_stated_std() -> None:
    d = polynomial_data(4000, 4000, max_degree=5, noise=0.1, seed=2)
    residual = torch.cat([d.train_y - d.train_x @ d.true_w, d.test_y - d.test_x @ d.true_w])
    # 8000 draws: the sample std of N(0, 0.1^2) is within 0.1 * 5 / sqrt(2 * 8000) = 0.004.
    assert abs(residual.std().item() - 0.1) < 0.004
    assert abs(residual.mean().item()) < 5 * 0.1 / math.sqrt(8000)


def test_linear_data_shapes_truth_and_recovery() -> None:
    d = linear_data(20, 100, 200)
    assert d.train_x.shape == (20, 200) and d.test_x.shape == (100, 200)
    assert d.train_y.shape == (20,) and d.test_y.shape == (100,)
    assert torch.equal(d.true_w, torch.full((200,), 0.01, dtype=torch.float64)) and d.true_b == 0.05
    # Without noise and with more examples than inputs, least squares (with an intercept column)
    # recovers w and b exactly.
    e = linear_data(300, 10, 50, noise=0.0, seed=5)
    design = torch.cat([e.train_x, torch.ones(300, 1, dtype=torch.float64)], 1)
    solution = torch.linalg.lstsq(design, e.train_y.unsqueeze(1)).solution.squeeze(1)
    torch.testing.assert_close(solution[:-1], e.true_w, rtol=1e-9, atol=1e-9)
    assert solution[-1].item() == pytest.approx(0.05, abs=1e-9)


def test_linear_noise_and_input_distribution() -> None:
    d = linear_data(3000, 3000, 20, noise=0.01, seed=6)
    x = torch.cat([d.train_x, d.test_x])
    residual = torch.cat([d.train_y, d.test_y]) - (x @ d.true_w + d.true_b)
    assert abs(residual.std().item() - 0.01) < 0.01 * 5 / math.sqrt(2 * 6000)
    assert abs(x.var().item() - 1.0) < 5 * math.sqrt(2 / x.numel())  # standard normal inputs


def test_bad_arguments_are_data_errors() -> None:
    with pytest.raises(DataError, match="at least one"):
        polynomial_data(0, 10)
    with pytest.raises(DataError, match="noise"):
        linear_data(noise=-1.0)
    with pytest.raises(DataError, match="max_degree"):
        polynomial_data(max_degree=2)
    with pytest.raises(DataError, match="num_inputs"):
        linear_data(num_inputs=0)
    with pytest.raises(ShapeError, match=r"\(n,\)"):
        polynomial_features(torch.zeros(3, 2), 4)
