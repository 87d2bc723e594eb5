"""Synthetic regression data for the generalization studies: a polynomial and a wide linear model.

Polynomial data (underfitting and overfitting). A scalar ``x ~ N(0, 1)`` becomes the features

    phi_i(x) = x^i / i!        i = 0 .. max_degree          features: (n, max_degree + 1)

and the target is ``y = sum_{i<4} c_i phi_i(x) + eps`` with ``c = (5, 1.2, -3.4, 5.6)`` and
``eps ~ N(0, 0.1^2)``: a degree-3 polynomial. Dividing by ``i!`` keeps high powers from dwarfing
the rest (``x^20`` alone reaches ``1e9`` at ``x = 3``). A model of degree ``d`` uses the first
``d + 1`` columns.

High-dimensional linear data (weight decay). ``x ~ N(0, I_D)`` in ``D = 200`` dimensions and

    y = x . w + b + eps        w = 0.01 * ones(D),  b = 0.05,  eps ~ N(0, 0.01^2)

with only 20 training examples, so least squares alone could fit the training set exactly.

Everything is float64 and batch-first: inputs ``(n, D)``, targets ``(n,)``. Train and test sets are
independent draws from the same distribution, and one ``seed`` fixes both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from divekit import seeding
from divekit.errors import DataError, ShapeError

# The degree-3 polynomial's coefficients, for the scaled features x^i / i!.
POLY_COEFFICIENTS: tuple[float, ...] = (5.0, 1.2, -3.4, 5.6)


@dataclass(frozen=True)
class RegressionData:
    """Train and test inputs ``(n, D)`` and targets ``(n,)``, with the noise-free truth that made them."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    true_w: torch.Tensor  # (D,) the generating weights
    true_b: float  # the generating intercept (0 for the polynomial: its constant term is a feature)
    noise: float  # std of the Gaussian noise added to every target


def polynomial_features(x: torch.Tensor, degree: int) -> torch.Tensor:
    """``x`` ``(n,)`` -> ``(n, degree + 1)`` with column ``i`` equal to ``x^i / i!``."""
    if x.dim() != 1:
        raise ShapeError(f"polynomial_features expects x of shape (n,), got {tuple(x.shape)}")
    if degree < 0:
        raise DataError(f"degree must be non-negative, got {degree}")
    powers = torch.arange(degree + 1, dtype=x.dtype, device=x.device)
    factorials = torch.tensor([math.factorial(i) for i in range(degree + 1)], dtype=x.dtype, device=x.device)
    return x.unsqueeze(1).pow(powers) / factorials  # (n, degree + 1)


def _check_sizes(n_train: int, n_test: int, noise: float) -> None:
    if n_train < 1 or n_test < 1:
        raise DataError(f"need at least one training and one test example, got {n_train} and {n_test}")
    if noise < 0:
        raise DataError(f"noise must be a non-negative standard deviation, got {noise}")


def polynomial_data(n_train: int = 100, n_test: int = 100, *, max_degree: int = 20,
                    coefficients: tuple[float, ...] = POLY_COEFFICIENTS, noise: float = 0.1,
                    seed: int = 0) -> RegressionData:
    """Features ``(n, max_degree + 1)`` of ``x ~ N(0, 1)`` and targets of the scaled polynomial."""
    _check_sizes(n_train, n_test, noise)
    if len(coefficients) > max_degree + 1:
        raise DataError(
            f"{len(coefficients)} coefficients need max_degree >= {len(coefficients) - 1}, got {max_degree}"
        )
    g = seeding.generator(seed, "data")
    n = n_train + n_test
    x = torch.randn(n, generator=g, dtype=torch.float64)
    features = polynomial_features(x, max_degree)
    true_w = torch.zeros(max_degree + 1, dtype=torch.float64)
    true_w[: len(coefficients)] = torch.tensor(coefficients, dtype=torch.float64)
    y = features @ true_w + noise * torch.randn(n, generator=g, dtype=torch.float64)
    return RegressionData(features[:n_train], y[:n_train], features[n_train:], y[n_train:], true_w, 0.0, noise)


def linear_data(n_train: int = 20, n_test: int = 100, num_inputs: int = 200, *, weight: float = 0.01,
                bias: float = 0.05, noise: float = 0.01, seed: int = 0) -> RegressionData:
    """Inputs ``(n, num_inputs)`` from ``N(0, I)`` and targets ``x . w + b + eps`` with every ``w_j = weight``."""
    _check_sizes(n_train, n_test, noise)
    if num_inputs < 1:
        raise DataError(f"num_inputs must be positive, got {num_inputs}")
    g = seeding.generator(seed, "data")
    n = n_train + n_test
    x = torch.randn(n, num_inputs, generator=g, dtype=torch.float64)
    true_w = torch.full((num_inputs,), weight, dtype=torch.float64)
    y = x @ true_w + bias + noise * torch.randn(n, generator=g, dtype=torch.float64)
    return RegressionData(x[:n_train], y[:n_train], x[n_train:], y[n_train:], true_w, bias, noise)
