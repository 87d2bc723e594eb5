"""Two-dimensional convolution from scratch: the teaching loop, then im2col and one matmul.

What deep-learning libraries call "convolution" is cross-correlation: the kernel is not flipped.
For one channel, an ``(h, w)`` image ``X`` and a ``(kh, kw)`` kernel ``K`` give

    Y[i, j] = sum_{a < kh, b < kw} X[i + a, j + b] * K[a, b],        Y has shape (h - kh + 1, w - kw + 1).

A convolution layer sums this over input channels, once per output channel, and adds a bias:

    y[n, o, i, j] = b[o] + sum_{c, a, b} w[o, c, a, b] * x_pad[n, c, s*i + d*a, s*j + d*b]

with stride ``s``, dilation ``d`` and ``x_pad`` the input zero-padded by ``p`` on each side. Each
spatial output size is

    floor((H + 2p - d*(k - 1) - 1) / s) + 1,   which is   floor((H + 2p - k) / s) + 1   when d = 1.

Shapes (batch-first): x ``(B, C_in, H, W)``, weight ``(C_out, C_in / groups, kh, kw)``, bias
``(C_out,)``, output ``(B, C_out, H_out, W_out)``.

The vectorised form never loops over positions or channels in Python: a strided *view* exposes every
window as ``(B, C, H_out, W_out, kh, kw)`` (no copy), one reshape lays the windows out as columns
("im2col", ``(B, C*kh*kw, H_out*W_out)``) and a single batched matmul with the flattened kernel does
all the multiply-adds. Autograd differentiates through the view and the matmul.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from divekit.errors import ShapeError

IntPair = int | tuple[int, int]


def as_pair(value: IntPair, name: str) -> tuple[int, int]:
    """Normalise an int-or-pair hyperparameter to ``(height, width)``."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]


def _span(kernel: int, dilation: int) -> int:
    """Extent in input pixels of a dilated kernel: d*(k - 1) + 1."""
    return dilation * (kernel - 1) + 1


def conv_output_shape(
    h: int, w: int, kernel: IntPair, padding: IntPair = 0, stride: IntPair = 1, dilation: IntPair = 1
) -> tuple[int, int]:
    """Spatial output size ``(H_out, W_out)`` of a convolution or pooling window.

    Each side is ``floor((H + 2p - d*(k - 1) - 1) / s) + 1``, i.e. ``floor((H + 2p - k) / s) + 1``
    without dilation: the number of stride steps a kernel of span ``d*(k-1)+1`` can take while
    staying inside the padded input.
    """
    (kh, kw), (ph, pw) = as_pair(kernel, "kernel"), as_pair(padding, "padding")
    (sh, sw), (dh, dw) = as_pair(stride, "stride"), as_pair(dilation, "dilation")
    return (h + 2 * ph - _span(kh, dh)) // sh + 1, (w + 2 * pw - _span(kw, dw)) // sw + 1


def corr2d(X: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Single-channel cross-correlation, ``(h, w) * (kh, kw) -> (h - kh + 1, w - kw + 1)``.

    Written as the plain double loop over output positions so the definition is visible; it is slow
    and meant for reading and for checking :func:`corr2d_vectorised`.
    """
    _check_corr2d(X, K)
    kh, kw = K.shape
    Y = X.new_zeros(X.shape[0] - kh + 1, X.shape[1] - kw + 1)
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            Y[i, j] = (X[i : i + kh, j : j + kw] * K).sum()  # one window times the kernel
    return Y


def corr2d_vectorised(X: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """:func:`corr2d` without the loop: a window view ``(h', w', kh, kw)`` contracted with ``K``."""
    _check_corr2d(X, K)
    kh, kw = K.shape
    windows = X.unfold(0, kh, 1).unfold(1, kw, 1)  # (h', w', kh, kw), a view of X
    return torch.einsum("ijab,ab->ij", windows, K)


def _check_corr2d(X: torch.Tensor, K: torch.Tensor) -> None:
    if X.dim() != 2 or K.dim() != 2:
        raise ShapeError(
            f"corr2d expects X of shape (h, w) and K of shape (kh, kw); got {tuple(X.shape)} and {tuple(K.shape)}"
        )
    if K.shape[0] > X.shape[0] or K.shape[1] > X.shape[1]:
        raise ShapeError(f"corr2d kernel {tuple(K.shape)} is larger than the image {tuple(X.shape)}")


def sliding_windows(
    x: torch.Tensor,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
    pad_value: float = 0.0,
) -> torch.Tensor:
    """Every kernel window of a padded ``(B, C, H, W)`` input as a view ``(B, C, H_out, W_out, kh, kw)``.

    Padding fills with ``pad_value`` (zero for convolution and average pooling, ``-inf`` for max
    pooling). Dilation is a window of span ``d*(k-1)+1`` of which every ``d``-th pixel is kept.
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph), value=pad_value)
    rows = x.unfold(2, _span(kh, dh), sh)[..., ::dh]  # (B, C, H_out, W_pad, kh)
    return rows.unfold(3, _span(kw, dw), sw)[..., ::dw]  # (B, C, H_out, W_out, kh, kw)


def check_window_fits(
    name: str, x: torch.Tensor, kernel: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int]
) -> None:
    """Raise :class:`ShapeError` unless ``x`` is ``(B, C, H, W)`` and the kernel fits its padded size."""
    if x.dim() != 4:
        raise ShapeError(f"{name} expects input of shape (batch, channels, H, W); got {tuple(x.shape)}")
    padded = (x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1])
    span = (_span(kernel[0], dilation[0]), _span(kernel[1], dilation[1]))
    if span[0] > padded[0] or span[1] > padded[1]:
        raise ShapeError(
            f"{name} kernel span {span} is larger than the padded input {padded}; "
            f"expected padded (H, W) of at least {span}"
        )


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> torch.Tensor:
    """Batched multi-channel convolution ``(B, C_in, H, W) -> (B, C_out, H_out, W_out)`` via im2col.

    ``weight`` is ``(C_out, C_in / groups, kh, kw)`` and ``bias`` is ``(C_out,)``. With ``groups = G``
    the channels split into ``G`` independent convolutions, each mapping ``C_in/G`` to ``C_out/G``.
    """
    stride, padding = as_pair(stride, "stride"), as_pair(padding, "padding")
    dilation = as_pair(dilation, "dilation")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0 or groups < 1:
        raise ValueError(
            f"conv2d needs stride, dilation, groups >= 1 and padding >= 0; "
            f"got stride={stride}, dilation={dilation}, groups={groups}, padding={padding}"
        )
    _check_conv_args(x, weight, bias, groups)
    kernel = (weight.shape[2], weight.shape[3])
    check_window_fits("conv2d", x, kernel, padding, dilation)
    batch, c_out = x.shape[0], weight.shape[0]
    windows = sliding_windows(x, kernel, stride, padding, dilation)  # (B, C_in, H_out, W_out, kh, kw)
    h_out, w_out = windows.shape[2], windows.shape[3]
    # The one copy: im2col, columns of C_in/G * kh * kw pixels, one column per output position.
    cols = windows.permute(0, 1, 4, 5, 2, 3).reshape(batch, groups, -1, h_out * w_out)  # (B, G, K, L)
    kernels = weight.reshape(groups, c_out // groups, -1)  # (G, C_out/G, K)
    y = torch.matmul(kernels, cols).reshape(batch, c_out, h_out, w_out)  # (G, O, K) @ (B, G, K, L)
    return y if bias is None else y + bias.view(1, c_out, 1, 1)


def _check_conv_args(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int) -> None:
    if x.dim() != 4:
        raise ShapeError(f"conv2d expects input of shape (batch, in_ch, H, W); got {tuple(x.shape)}")
    if weight.dim() != 4:
        raise ShapeError(f"conv2d expects weight of shape (out_ch, in_ch / groups, kh, kw); got {tuple(weight.shape)}")
    if weight.shape[0] % groups:
        raise ShapeError(f"conv2d weight has {weight.shape[0]} output channels, not divisible by groups={groups}")
    if x.shape[1] != weight.shape[1] * groups:
        raise ShapeError(
            f"conv2d input has {x.shape[1]} channels; the weight expects input of shape "
            f"(batch, {weight.shape[1] * groups}, H, W)"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ShapeError(f"conv2d expects bias of shape ({weight.shape[0]},); got {tuple(bias.shape)}")
    if x.dtype != weight.dtype:
        raise ShapeError(f"conv2d input dtype {x.dtype} differs from weight dtype {weight.dtype}")


PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _explicit_padding(padding: str | IntPair, kernel: tuple[int, int], dilation: tuple[int, int],
                      stride: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` pixels of padding for an int, a pair, ``"valid"`` or ``"same"``.

    ``"same"`` pads ``d*(k - 1)`` pixels per axis so that the output keeps the input's size (stride 1
    only); an odd total puts the extra pixel on the right/bottom, as PyTorch does.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
        if stride != (1, 1):
            raise ValueError("padding='same' is not supported for strided convolutions")
        (th, tw) = (dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1))
        return (tw // 2, tw - tw // 2, th // 2, th - th // 2)
    ph, pw = as_pair(padding, "padding")
    return (pw, pw, ph, ph)


class Conv2d(nn.Module):
    """Convolution layer ``(B, C_in, H, W) -> (B, C_out, H_out, W_out)`` computing :func:`conv2d`.

    Constructor arguments (order and defaults), parameter names (``weight`` ``(C_out, C_in/groups,
    kh, kw)``, ``bias`` ``(C_out,)``), default initialisation and the accepted inputs (also
    unbatched ``(C_in, H, W)``) mirror ``torch.nn.Conv2d``, so it is a drop-in and state dicts move
    between the two unchanged. ``padding`` may be ``"valid"`` or ``"same"``; ``padding_mode`` other
    than ``"zeros"`` pads the input with ``F.pad`` (reflect, replicate, circular) before a convolution
    without padding, as PyTorch does.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: str | IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels {in_channels} and out_channels {out_channels} must be divisible by groups {groups}"
            )
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.stride, self.dilation = as_pair(stride, "stride"), as_pair(dilation, "dilation")
        self._pads = _explicit_padding(padding, self.kernel_size, self.dilation, self.stride)
        self.padding = padding if isinstance(padding, str) else as_pair(padding, "padding")
        self.padding_mode = padding_mode
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform on ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]`` for weight and bias, ``fan_in = C_in/groups*kh*kw``.

        This is the distribution ``nn.Conv2d`` draws: its Kaiming-uniform with ``a = sqrt(5)`` has
        bound ``sqrt(2/(1+5)) * sqrt(3/fan_in) = 1/sqrt(fan_in)``. Drawing weight then bias in that
        order consumes the random stream as ``nn.Conv2d`` does, so equal seeds give equal layers.
        """
        fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """``input``: ``(B, C_in, H, W)`` -> ``(B, C_out, H_out, W_out)``; unbatched ``(C_in, H, W)`` likewise."""
        unbatched = input.dim() == 3
        x = input.unsqueeze(0) if unbatched else input
        left, right, top, bottom = self._pads
        if self.padding_mode == "zeros" and left == right and top == bottom:
            y = conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        else:
            # Asymmetric ("same" with an even kernel) or non-zero padding: pad first, then no padding.
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x = F.pad(x, self._pads, mode=mode) if x.dim() == 4 else x  # a wrong rank: conv2d names it
            y = conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return y.squeeze(0) if unbatched else y

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}"
            + ("" if self.padding_mode == "zeros" else f", padding_mode={self.padding_mode}")
        )


class Conv2d1x1(Conv2d):
    """A 1x1 convolution written as what it is: one fully connected layer applied at every pixel.

    Not a mirror of a torch class (torch spells it ``nn.Conv2d(C_in, C_out, 1)``, whose weights it loads).

    With ``kh = kw = 1`` the window sum disappears and ``y[n, :, i, j] = W @ x[n, :, i, j] + b`` with
    ``W = weight[:, :, 0, 0]`` of shape ``(C_out, C_in)``: it mixes channels and never looks at
    neighbours. Same parameters and initialisation as ``nn.Conv2d(C_in, C_out, 1)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C_in, H, W)`` -> ``(B, C_out, H, W)``."""
        _check_conv_args(x, self.weight, self.bias, groups=1)
        pixels = x.permute(0, 2, 3, 1)  # (B, H, W, C_in): one feature vector per pixel
        y = pixels @ self.weight[:, :, 0, 0].T  # (B, H, W, C_out)
        if self.bias is not None:
            y = y + self.bias
        return y.permute(0, 3, 1, 2)  # (B, C_out, H, W)
