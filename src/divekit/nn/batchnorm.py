"""Batch normalisation from scratch: ``BatchNorm1d`` and ``BatchNorm2d``, drop-ins for PyTorch's.

Per feature (channel) ``c``, over the ``m`` values that share it in a minibatch (all ``B`` rows for
``(B, C)`` inputs; all ``B * L`` positions for ``(B, C, L)``; all ``B * H * W`` for ``(B, C, H, W)``):

    mu_c      = (1/m) * sum x
    sigma2_c  = (1/m) * sum (x - mu_c)^2                 biased: used to normalise
    x_hat     = (x - mu_c) / sqrt(sigma2_c + eps)
    y         = gamma_c * x_hat + beta_c                 gamma = ``weight``, beta = ``bias``

Running statistics, used instead of the batch statistics in evaluation mode, follow PyTorch's
momentum convention (momentum is the weight of the *new* batch, not of the history):

    running_mean <- (1 - momentum) * running_mean + momentum * mu_c
    running_var  <- (1 - momentum) * running_var  + momentum * sigma2_c * m / (m - 1)

The running variance takes the unbiased estimate (divisor ``m - 1``) while normalisation uses the
biased one, exactly as PyTorch does. ``momentum=None`` gives the cumulative average instead
(momentum ``1 / num_batches_tracked``). Gradients come from autograd through these formulas.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from divekit.errors import ShapeError


class BatchNorm(nn.Module):
    """Batch normalisation over ``(B, C)`` (``num_dims=2``) or ``(B, C, H, W)`` (``num_dims=4``) inputs.

    The shared implementation; not itself a mirror of a torch class (``num_dims`` has no torch
    counterpart). :class:`BatchNorm1d` and :class:`BatchNorm2d` are the drop-ins for
    ``nn.BatchNorm1d`` and ``nn.BatchNorm2d``, with their signatures.

    Parameters ``weight`` ``(C,)`` (ones) and ``bias`` ``(C,)`` (zeros), absent with
    ``affine=False`` (``bias=False`` drops only ``bias``); buffers ``running_mean`` ``(C,)`` (zeros),
    ``running_var`` ``(C,)`` (ones) and ``num_batches_tracked`` (a long scalar), absent with
    ``track_running_stats=False``, in which case batch statistics are used in evaluation too. These
    names and initial values are those of ``nn.BatchNorm1d/2d``, so state dicts load either way.
    Output has the input's shape.
    """

    ranks: tuple[int, ...] = ()  # input ranks accepted; () means exactly num_dims

    def __init__(
        self,
        num_features: int,
        num_dims: Literal[2, 4],
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if num_dims not in (2, 4):
            raise ValueError(f"num_dims must be 2 (fully connected) or 4 (convolutional), got {num_dims}")
        self.num_features, self.num_dims = num_features, num_dims
        self.eps, self.momentum = eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        factory = {"device": device, "dtype": dtype}
        self.register_parameter("weight", nn.Parameter(torch.ones(num_features, **factory)) if affine else None)
        has_bias = affine and bias
        self.register_parameter("bias", nn.Parameter(torch.zeros(num_features, **factory)) if has_bias else None)
        tracked = track_running_stats
        self.register_buffer("running_mean", torch.zeros(num_features, **factory) if tracked else None)
        self.register_buffer("running_var", torch.ones(num_features, **factory) if tracked else None)
        count = torch.tensor(0, dtype=torch.long, device=device) if tracked else None
        self.register_buffer("num_batches_tracked", count)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """``input``: ``(B, C, *)`` of an accepted rank -> same shape, normalised per channel."""
        x = input
        self._check(x)
        reduce_dims = (0, *range(2, x.dim()))  # every axis but the channels
        shape = (1, self.num_features) + (1,) * (x.dim() - 2)  # broadcasts a (C,) vector
        if self.training or self.running_mean is None:
            count = x.numel() // self.num_features  # m: values per channel
            if count < 2 and self.training:
                raise ShapeError(
                    f"BatchNorm in training needs more than one value per channel; got input {tuple(x.shape)}"
                )
            mean = x.mean(dim=reduce_dims)
            var = x.var(dim=reduce_dims, correction=0)  # biased: the normaliser
            if self.training and self.running_mean is not None:
                self._update_running_stats(mean, var, count)
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        if self.weight is not None:
            x_hat = self.weight.view(shape) * x_hat  # gamma * x_hat
        return x_hat if self.bias is None else x_hat + self.bias.view(shape)  # + beta

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        self.num_batches_tracked += 1
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.mul_(1 - momentum).add_(momentum * mean)
        # Bessel's correction m/(m-1): the running variance estimates the population variance.
        self.running_var.mul_(1 - momentum).add_(momentum * var * (count / (count - 1)))

    def _check(self, x: torch.Tensor) -> None:
        ranks = self.ranks or (self.num_dims,)
        layouts = {2: "(batch, C)", 3: "(batch, C, L)", 4: "(batch, C, H, W)"}
        if x.dim() not in ranks or x.shape[1] != self.num_features:
            expected = " or ".join(layouts[r] for r in ranks)
            raise ShapeError(
                f"BatchNorm expects input of shape {expected} with C={self.num_features}; got {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(BatchNorm):
    """Drop-in for ``nn.BatchNorm1d``: statistics per channel of ``(B, C)`` or ``(B, C, L)`` inputs."""

    ranks = (2, 3)

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__(num_features, 2, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)


class BatchNorm2d(BatchNorm):
    """Drop-in for ``nn.BatchNorm2d``: statistics per channel over batch and positions of ``(B, C, H, W)``."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__(num_features, 4, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
