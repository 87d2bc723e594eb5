"""Batch normalisation from scratch, interchangeable with ``nn.BatchNorm1d`` / ``nn.BatchNorm2d``.

Per feature (channel) ``c``, over the ``m`` values that share it in a minibatch (all ``B`` rows for
``(B, C)`` inputs; all ``B * H * W`` positions for ``(B, C, H, W)`` inputs):

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

    Parameters ``weight`` ``(C,)`` (ones) and ``bias`` ``(C,)`` (zeros); buffers ``running_mean``
    ``(C,)`` (zeros), ``running_var`` ``(C,)`` (ones) and ``num_batches_tracked`` (a long scalar).
    These names and initial values are those of ``nn.BatchNorm1d/2d``, so state dicts load either way.
    Output has the input's shape.
    """

    def __init__(
        self,
        num_features: int,
        num_dims: Literal[2, 4],
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if num_dims not in (2, 4):
            raise ValueError(f"num_dims must be 2 (fully connected) or 4 (convolutional), got {num_dims}")
        self.num_features, self.num_dims = num_features, num_dims
        self.eps, self.momentum = eps, momentum
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.ones(num_features, **factory))
        self.bias = nn.Parameter(torch.zeros(num_features, **factory))
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_features, **factory))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C)`` or ``(B, C, H, W)`` (per ``num_dims``) -> same shape, normalised per channel."""
        self._check(x)
        reduce_dims = (0,) if self.num_dims == 2 else (0, 2, 3)
        shape = (1, self.num_features) + (1,) * (self.num_dims - 2)  # broadcasts a (C,) vector
        if self.training:
            count = x.numel() // self.num_features  # m: values per channel
            if count < 2:
                raise ShapeError(
                    f"BatchNorm in training needs more than one value per channel; got input {tuple(x.shape)}"
                )
            mean = x.mean(dim=reduce_dims)
            var = x.var(dim=reduce_dims, correction=0)  # biased: the normaliser
            self._update_running_stats(mean, var, count)
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        return self.weight.view(shape) * x_hat + self.bias.view(shape)  # gamma * x_hat + beta

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        self.num_batches_tracked += 1
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.mul_(1 - momentum).add_(momentum * mean)
        # Bessel's correction m/(m-1): the running variance estimates the population variance.
        self.running_var.mul_(1 - momentum).add_(momentum * var * (count / (count - 1)))

    def _check(self, x: torch.Tensor) -> None:
        expected = "(batch, C)" if self.num_dims == 2 else "(batch, C, H, W)"
        if x.dim() != self.num_dims or x.shape[1] != self.num_features:
            raise ShapeError(
                f"BatchNorm expects input of shape {expected} with C={self.num_features}; got {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return f"{self.num_features}, num_dims={self.num_dims}, eps={self.eps}, momentum={self.momentum}"
