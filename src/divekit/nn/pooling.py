"""Max, average and global average pooling from scratch, on the same window view as convolution.

Pooling slides a ``(kh, kw)`` window with stride ``s`` (by default ``s = k``: non-overlapping
windows) and dilation ``d`` over each channel separately and reduces it to one number:

    max:  y[n, c, i, j] = max_{a < kh, b < kw} x_pad[n, c, s*i + d*a, s*j + d*b]
    avg:  y[n, c, i, j] = (1 / N_ij) * sum_{a, b} x_pad[n, c, s*i + a, s*j + b]

Shapes: ``(B, C, H, W) -> (B, C, H_out, W_out)`` (or unbatched ``(C, H, W) -> (C, H_out, W_out)``)
with ``H_out = floor((H + 2p - d*(kh - 1) - 1) / s) + 1`` (see
:func:`divekit.nn.conv.conv_output_shape`). Channels never mix, so ``C`` is unchanged.

``ceil_mode=True`` rounds that division up instead, keeping a last, partial window as long as it
starts inside the input or its left padding (PyTorch's rule); the partial window is completed with
extra padding on the bottom and right.

Padding: max pooling pads with ``-inf`` so a padded pixel never wins. Average pooling pads with zeros;
its divisor ``N_ij`` is, as in PyTorch, ``divisor_override`` when given, else the number of window
pixels inside the symmetrically padded input (``count_include_pad=True``, the default: padding counts,
the ceil-mode overhang does not) or inside the input itself (``count_include_pad=False``). Both
divisors come from pooling a mask of ones with the same windows. As in PyTorch, padding may be at
most half the kernel on each side. Gradients come from autograd through the window view: max
pooling sends each window's gradient to the pixel that ``max`` selected (the first one on ties).

``MaxPool2d`` and ``AvgPool2d`` take ``torch.nn``'s constructor arguments in its order with its
defaults; ``max_pool2d`` and ``avg_pool2d`` take those of ``torch.nn.functional``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from divekit.errors import ShapeError
from divekit.nn.conv import IntPair, as_pair, sliding_windows

Pair = tuple[int, int]


def _output_side(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool) -> int:
    """PyTorch's pooled size along one axis: ``floor`` (or ``ceil``) of ``(size + 2p - span) / s``, plus 1."""
    span = dilation * (kernel - 1) + 1
    out = (size + 2 * pad - span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1  # a last window that would start in the right padding is dropped
    return out


Geometry = tuple[Pair, Pair, Pair, Pair]  # kernel, stride, padding, dilation


def _pool_geometry(
    name: str, x: torch.Tensor, kernel_size: IntPair, stride: IntPair | None, padding: IntPair,
    dilation: IntPair = 1,
) -> Geometry:
    """Validate and return ``(kernel, stride, padding, dilation)`` pairs; ``stride=None`` means the kernel."""
    kernel = as_pair(kernel_size, "kernel_size")
    step = kernel if stride is None else as_pair(stride, "stride")
    pad, dil = as_pair(padding, "padding"), as_pair(dilation, "dilation")
    if min(kernel) < 1 or min(step) < 1 or min(pad) < 0 or min(dil) < 1:
        raise ValueError(f"{name} needs kernel_size, stride, dilation >= 1 and padding >= 0; "
                         f"got {kernel}, {step}, {dil}, {pad}")
    if 2 * pad[0] > kernel[0] or 2 * pad[1] > kernel[1]:
        raise ValueError(f"{name} padding {pad} must be at most half the kernel size {kernel}")
    if x.dim() != 4:
        raise ShapeError(f"{name} expects input of shape (batch, channels, H, W) or (channels, H, W); "
                         f"got {tuple(x.shape)}")
    return kernel, step, pad, dil


def _grid(name: str, x: torch.Tensor, geometry: Geometry, ceil_mode: bool) -> Pair:
    """``(H_out, W_out)`` of pooling ``x (B, C, H, W)``; a kernel that fits nowhere is an error."""
    kernel, step, pad, dil = geometry
    sides = tuple(_output_side(x.shape[2 + a], kernel[a], step[a], pad[a], dil[a], ceil_mode) for a in (0, 1))
    if min(sides) < 1:
        span = tuple(dil[a] * (kernel[a] - 1) + 1 for a in (0, 1))
        padded = tuple(x.shape[2 + a] + 2 * pad[a] for a in (0, 1))
        raise ShapeError(f"{name} kernel span {span} is larger than the padded input {padded}; "
                         f"expected padded (H, W) of at least {span}")
    return sides  # type: ignore[return-value]


def _windows(padded: torch.Tensor, geometry: Geometry, sides: Pair, fill: float) -> torch.Tensor:
    """The ``sides`` grid of windows of an input already padded on all sides, ``(B, C, H', W', kh, kw)``.

    Ceil mode's last windows may run past the bottom/right edge: that overhang is filled with ``fill``.
    """
    kernel, step, _, dil = geometry
    extra = [max(0, (sides[a] - 1) * step[a] + dil[a] * (kernel[a] - 1) + 1 - padded.shape[2 + a])
             for a in (0, 1)]
    if any(extra):
        padded = F.pad(padded, (0, extra[1], 0, extra[0]), value=fill)
    windows = sliding_windows(padded, kernel, step, (0, 0), dil)
    return windows[:, :, : sides[0], : sides[1]]


def _pad(x: torch.Tensor, pad: Pair, fill: float) -> torch.Tensor:
    """``x (B, C, H, W)`` with ``pad`` rows and columns of ``fill`` on each side."""
    return F.pad(x, (pad[1], pad[1], pad[0], pad[0]), value=fill) if any(pad) else x


def _batched(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """An unbatched ``(C, H, W)`` input as ``(1, C, H, W)``, and whether it was unbatched."""
    return (x.unsqueeze(0), True) if x.dim() == 3 else (x, False)


def max_pool2d(
    x: torch.Tensor,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Largest value in each window: ``(B, C, H, W) -> (B, C, H_out, W_out)``; pads with ``-inf``.

    With ``return_indices`` also the position of each maximum in the flattened input plane
    ``(H*W)``, as ``torch.nn.functional.max_pool2d`` gives it (for ``max_unpool2d``).
    """
    x, unbatched = _batched(x)
    geometry = _pool_geometry("max_pool2d", x, kernel_size, stride, padding, dilation)
    sides = _grid("max_pool2d", x, geometry, ceil_mode)
    inf = float("-inf")
    windows = _windows(_pad(x, geometry[2], inf), geometry, sides, inf)  # (B, C, H', W', kh, kw)
    # max over one flattened axis (not amax) so ties send the whole gradient to a single pixel.
    values, arg = windows.flatten(-2).max(dim=-1)
    if not return_indices:
        return values.squeeze(0) if unbatched else values
    plane = torch.arange(x.shape[2] * x.shape[3], device=x.device).view(1, 1, x.shape[2], x.shape[3])
    positions = _windows(_pad(plane, geometry[2], -1), geometry, sides, -1).flatten(-2)  # (1, 1, H', W', K)
    indices = positions.expand(*arg.shape, -1).gather(-1, arg.unsqueeze(-1)).squeeze(-1)
    return (values.squeeze(0), indices.squeeze(0)) if unbatched else (values, indices)


def avg_pool2d(
    x: torch.Tensor,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> torch.Tensor:
    """Window mean ``(B, C, H, W) -> (B, C, H_out, W_out)``, divided as the module docstring says."""
    x, unbatched = _batched(x)
    geometry = _pool_geometry("avg_pool2d", x, kernel_size, stride, padding)
    sides = _grid("avg_pool2d", x, geometry, ceil_mode)
    sums = _windows(_pad(x, geometry[2], 0.0), geometry, sides, 0.0).sum(dim=(-2, -1))
    if divisor_override is not None:
        if divisor_override == 0:
            raise ValueError("divisor_override must not be zero")
        return (sums / divisor_override).squeeze(0) if unbatched else sums / divisor_override
    # N_ij by pooling a mask: ones on the input, on the padding only if counted, zero on the overhang.
    mask = _pad(x.new_ones(1, 1, x.shape[2], x.shape[3]), geometry[2], 1.0 if count_include_pad else 0.0)
    out = sums / _windows(mask, geometry, sides, 0.0).sum(dim=(-2, -1))  # (B, C, H', W') / (1, 1, H', W')
    return out.squeeze(0) if unbatched else out


def global_avg_pool2d(x: torch.Tensor) -> torch.Tensor:
    """Mean of each channel over all positions: ``(B, C, H, W) -> (B, C, 1, 1)``.

    Equal to ``nn.AdaptiveAvgPool2d(1)``; it lets a network's head accept any input resolution.
    """
    if x.dim() != 4:
        raise ShapeError(f"global_avg_pool2d expects input of shape (batch, channels, H, W); got {tuple(x.shape)}")
    return x.mean(dim=(2, 3), keepdim=True)


class MaxPool2d(nn.Module):
    """Module form of :func:`max_pool2d`: ``(B, C, H, W) -> (B, C, H_out, W_out)``, torch's signature.

    Holds no parameters or buffers. Returns ``(output, indices)`` when ``return_indices``.
    """

    def __init__(
        self,
        kernel_size: IntPair,
        stride: IntPair | None = None,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size  # as nn.MaxPool2d stores it
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, input: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``input`` ``(B, C, H, W)`` or ``(C, H, W)`` -> ``(B, C, H_out, W_out)`` (and the indices)."""
        return max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                          self.return_indices)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(nn.Module):
    """Module form of :func:`avg_pool2d`: ``(B, C, H, W) -> (B, C, H_out, W_out)``, torch's signature.

    Holds no parameters or buffers.
    """

    def __init__(
        self,
        kernel_size: IntPair,
        stride: IntPair | None = None,
        padding: IntPair = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size  # as nn.AvgPool2d stores it
        self.padding, self.ceil_mode = padding, ceil_mode
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """``input`` ``(B, C, H, W)`` or ``(C, H, W)`` -> ``(B, C, H_out, W_out)``."""
        return avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad, self.divisor_override)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class GlobalAvgPool2d(nn.Module):
    """Module form of :func:`global_avg_pool2d`: ``(B, C, H, W) -> (B, C, 1, 1)``.

    Not a mirror of a torch class: it computes what ``nn.AdaptiveAvgPool2d(1)`` does, with no arguments.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_avg_pool2d(x)
