"""Max, average and global average pooling from scratch, on the same window view as convolution.

Pooling slides a ``(kh, kw)`` window with stride ``s`` (by default ``s = k``: non-overlapping
windows) over each channel separately and reduces it to one number:

    max:  y[n, c, i, j] = max_{a < kh, b < kw} x_pad[n, c, s*i + a, s*j + b]
    avg:  y[n, c, i, j] = (1 / (kh * kw)) * sum_{a, b} x_pad[n, c, s*i + a, s*j + b]

Shapes: ``(B, C, H, W) -> (B, C, H_out, W_out)`` with ``H_out = floor((H + 2p - kh) / s) + 1``
(see :func:`divekit.nn.conv.conv_output_shape`). Channels never mix, so ``C`` is unchanged.

Padding: max pooling pads with ``-inf`` so a padded pixel never wins. Average pooling pads with zeros
*and counts them* in the divisor, which is always ``kh * kw``; this is ``count_include_pad=True``,
PyTorch's default. As in PyTorch, padding may be at most half the kernel on each side, so every
window still covers at least one real pixel. Gradients come from autograd through the window view:
max pooling sends each window's gradient to the pixel that ``max`` selected.
"""

from __future__ import annotations

import torch
from torch import nn

from divekit.errors import ShapeError
from divekit.nn.conv import IntPair, as_pair, check_window_fits, sliding_windows


def _pool_geometry(
    name: str, x: torch.Tensor, kernel_size: IntPair, stride: IntPair | None, padding: IntPair
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Validate and return ``(kernel, stride, padding)`` pairs; ``stride=None`` means the kernel size."""
    kernel = as_pair(kernel_size, "kernel_size")
    step = kernel if stride is None else as_pair(stride, "stride")
    pad = as_pair(padding, "padding")
    if min(kernel) < 1 or min(step) < 1 or min(pad) < 0:
        raise ValueError(f"{name} needs kernel_size, stride >= 1 and padding >= 0; got {kernel}, {step}, {pad}")
    if 2 * pad[0] > kernel[0] or 2 * pad[1] > kernel[1]:
        raise ValueError(f"{name} padding {pad} must be at most half the kernel size {kernel}")
    check_window_fits(name, x, kernel, pad, (1, 1))
    return kernel, step, pad


def max_pool2d(
    x: torch.Tensor, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0
) -> torch.Tensor:
    """Largest value in each window: ``(B, C, H, W) -> (B, C, H_out, W_out)``; pads with ``-inf``."""
    kernel, step, pad = _pool_geometry("max_pool2d", x, kernel_size, stride, padding)
    windows = sliding_windows(x, kernel, step, pad, pad_value=float("-inf"))  # (B, C, H', W', kh, kw)
    # max over one flattened axis (not amax) so ties send the whole gradient to a single pixel.
    return windows.flatten(-2).max(dim=-1).values


def avg_pool2d(
    x: torch.Tensor, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0
) -> torch.Tensor:
    """Window mean with zero padding counted (``count_include_pad=True``): ``(B, C, H, W) -> (B, C, H', W')``."""
    kernel, step, pad = _pool_geometry("avg_pool2d", x, kernel_size, stride, padding)
    windows = sliding_windows(x, kernel, step, pad, pad_value=0.0)  # (B, C, H', W', kh, kw)
    return windows.mean(dim=(-2, -1))


def global_avg_pool2d(x: torch.Tensor) -> torch.Tensor:
    """Mean of each channel over all positions: ``(B, C, H, W) -> (B, C, 1, 1)``.

    Equal to ``nn.AdaptiveAvgPool2d(1)``; it lets a network's head accept any input resolution.
    """
    if x.dim() != 4:
        raise ShapeError(f"global_avg_pool2d expects input of shape (batch, channels, H, W); got {tuple(x.shape)}")
    return x.mean(dim=(2, 3), keepdim=True)


class _Pool2d(nn.Module):
    """Shared constructor of the window pooling modules; they hold no parameters or buffers."""

    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """Module form of :func:`max_pool2d`: ``(B, C, H, W) -> (B, C, H_out, W_out)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(_Pool2d):
    """Module form of :func:`avg_pool2d` (``count_include_pad=True``): ``(B, C, H, W) -> (B, C, H_out, W_out)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class GlobalAvgPool2d(nn.Module):
    """Module form of :func:`global_avg_pool2d`: ``(B, C, H, W) -> (B, C, 1, 1)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_avg_pool2d(x)
