"""Xavier (Glorot) and Kaiming (He) initialisation from scratch, interchangeable with ``torch.nn.init``.

A weight ``W`` of shape ``(out, in, *kernel)`` has ``fan_in = in * k`` and ``fan_out = out * k``
with ``k = prod(kernel)`` (``k = 1`` for a linear layer ``(out, in)``). For ``y = W x`` with
independent zero-mean entries, ``Var(y_j) = fan_in * Var(w) * E[x^2]`` going forward and the
gradient's variance scales by ``fan_out * Var(w)`` going backward. The schemes choose ``Var(w)``:

    Xavier:   Var(w) = gain^2 * 2 / (fan_in + fan_out)       a compromise between both directions
    Kaiming:  Var(w) = gain^2 / fan                           fan = fan_in (forward) or fan_out

``gain`` corrects for the nonlinearity that follows: ReLU zeroes half of a symmetric input, so
``E[relu(z)^2] = Var(z) / 2`` and Kaiming uses ``gain^2 = 2`` to undo that halving. A uniform
``U(-a, a)`` has variance ``a^2 / 3``, so the uniform variants use the bound ``a = sqrt(3) * std``.

All functions fill the tensor in place without recording gradients and return it, with an optional
``generator`` for reproducible draws, like their ``torch.nn.init`` counterparts.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from divekit.errors import DivekitError, ShapeError

FanMode = Literal["fan_in", "fan_out"]

# Gain for activations that preserve a symmetric input's second moment to first order.
_UNIT_GAIN = ("linear", "identity", "sigmoid", "conv1d", "conv2d", "conv3d",
              "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight ``(out, in, *kernel)``."""
    if weight.dim() < 2:
        raise ShapeError(f"fans need a weight of shape (out, in, *kernel); got {tuple(weight.shape)}")
    receptive = math.prod(weight.shape[2:])  # 1 for a linear layer
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def gain(nonlinearity: str, param: float | None = None) -> float:
    """The factor by which the initial std is multiplied for ``nonlinearity``.

    ``param`` is the negative slope of ``leaky_relu`` (default 0.01).
    """
    if nonlinearity in _UNIT_GAIN:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0  # the conventional value: tanh shrinks a unit-variance input by about this
    if nonlinearity == "relu":
        return math.sqrt(2.0)  # relu keeps half of the second moment
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1.0 + slope**2))  # keeps (1 + slope^2) / 2 of the second moment
    if nonlinearity == "selu":
        return 0.75
    raise DivekitError(
        f"unknown nonlinearity '{nonlinearity}'; expected one of {', '.join(_UNIT_GAIN)}, tanh, relu, leaky_relu, selu"
    )


def _fan(weight: torch.Tensor, mode: FanMode) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise DivekitError(f"mode must be 'fan_in' or 'fan_out', got '{mode}'")
    fan_in, fan_out = fans(weight)
    return fan_in if mode == "fan_in" else fan_out


def xavier_std(weight: torch.Tensor, gain_: float = 1.0) -> float:
    """``gain * sqrt(2 / (fan_in + fan_out))``."""
    fan_in, fan_out = fans(weight)
    return gain_ * math.sqrt(2.0 / (fan_in + fan_out))


def kaiming_std(weight: torch.Tensor, a: float = 0.0, mode: FanMode = "fan_in",
                nonlinearity: str = "leaky_relu") -> float:
    """``gain(nonlinearity, a) / sqrt(fan)`` with ``fan`` chosen by ``mode``."""
    return gain(nonlinearity, a) / math.sqrt(_fan(weight, mode))


@torch.no_grad()
def uniform_with_std_(weight: torch.Tensor, std: float,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill with ``U(-sqrt(3) std, sqrt(3) std)``, whose standard deviation is ``std``."""
    bound = math.sqrt(3.0) * std
    return weight.uniform_(-bound, bound, generator=generator)


@torch.no_grad()
def normal_with_std_(weight: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill with ``N(0, std^2)``."""
    return weight.normal_(0.0, std, generator=generator)


def xavier_uniform_(weight: torch.Tensor, gain: float = 1.0,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Xavier uniform: ``U(-a, a)`` with ``a = gain * sqrt(6 / (fan_in + fan_out))``."""
    return uniform_with_std_(weight, xavier_std(weight, gain), generator)


def xavier_normal_(weight: torch.Tensor, gain: float = 1.0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Xavier normal: ``N(0, gain^2 * 2 / (fan_in + fan_out))``."""
    return normal_with_std_(weight, xavier_std(weight, gain), generator)


def kaiming_uniform_(weight: torch.Tensor, a: float = 0.0, mode: FanMode = "fan_in",
                     nonlinearity: str = "leaky_relu", generator: torch.Generator | None = None) -> torch.Tensor:
    """Kaiming uniform: ``U(-b, b)`` with ``b = gain * sqrt(3 / fan)``.

    The defaults (``leaky_relu`` with slope ``a = 0``) give the ReLU gain ``sqrt(2)``.
    """
    return uniform_with_std_(weight, kaiming_std(weight, a, mode, nonlinearity), generator)


def kaiming_normal_(weight: torch.Tensor, a: float = 0.0, mode: FanMode = "fan_in",
                    nonlinearity: str = "leaky_relu", generator: torch.Generator | None = None) -> torch.Tensor:
    """Kaiming normal: ``N(0, gain^2 / fan)``."""
    return normal_with_std_(weight, kaiming_std(weight, a, mode, nonlinearity), generator)


# Schemes by name, as the stability experiments sweep them: "normal-<std>" is a fixed-std normal.
SCHEMES = ("xavier", "kaiming")


@torch.no_grad()
def init_linear_layers_(model: nn.Module, scheme: str, *, nonlinearity: str = "relu",
                        generator: torch.Generator | None = None) -> nn.Module:
    """Re-initialise every ``nn.Linear`` weight of ``model`` by ``scheme``; biases to zero.

    ``scheme``: ``"xavier"`` (normal, with the gain of ``nonlinearity``), ``"kaiming"`` (normal,
    fan_in, gain of ``nonlinearity``) or ``"normal-STD"`` (e.g. ``"normal-0.01"``: a fixed std,
    the book's naive choice). Normal draws are used throughout so that schemes differ only in scale.
    """
    fixed_std = _parse_fixed_std(scheme)
    for layer in model.modules():
        if not isinstance(layer, nn.Linear):
            continue
        if fixed_std is not None:
            normal_with_std_(layer.weight, fixed_std, generator)
        elif scheme == "xavier":
            xavier_normal_(layer.weight, gain(nonlinearity), generator)
        else:
            kaiming_normal_(layer.weight, nonlinearity=nonlinearity, generator=generator)
        if layer.bias is not None:
            layer.bias.zero_()
    return model


def _parse_fixed_std(scheme: str) -> float | None:
    if scheme in SCHEMES:
        return None
    name, _, value = scheme.partition("-")
    try:
        std = float(value)
    except ValueError:
        std = -1.0
    if name != "normal" or std <= 0:
        raise DivekitError(
            f"unknown initialisation '{scheme}'; expected xavier, kaiming or normal-STD (e.g. normal-0.01)"
        )
    return std
