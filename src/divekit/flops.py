"""Floating-point operations per image, counted layer by layer with forward hooks.

One forward pass on a single example (in evaluation mode, without gradients) visits every leaf
module; a hook reads the module's input and output shapes and adds the operations it performed.
A multiply-add counts as two FLOPs. The conventions, per image:

    convolution   2 * (C_in / groups) * kh * kw * C_out * H_out * W_out   (+ C_out * H_out * W_out for the bias)
    linear        2 * in_features * out_features * rows                   (+ out_features * rows for the bias)
    window pool   kh * kw * C * H_out * W_out          one compare or add per window element
    global pool   C * H * W                            one add per input element
    batch norm    2 * C * H * W (or 2 * C)             x * scale + shift once the statistics are folded

Activations, dropout, additions of residual branches and concatenations are not counted: they are
memory-bound and small next to the convolutions. Both the ``torch.nn`` layers and their from-scratch
twins in :mod:`divekit.nn` are recognised. A training step costs about three forward passes (the
backward pass computes gradients for both inputs and weights, each as expensive as the forward),
which is what :attr:`FlopReport.training_per_image` reports.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from divekit.nn import batchnorm as scratch_bn
from divekit.nn import conv as scratch_conv
from divekit.nn import pooling as scratch_pool

# Forward, plus backward with respect to activations and to weights: the usual 3x rule.
TRAINING_FACTOR = 3


@dataclass
class LayerFlops:
    """One leaf module's share: ``macs`` multiply-adds (matmul-like work) and ``flops`` in total."""

    name: str
    kind: str  # conv, linear, pool, norm
    output_shape: tuple[int, ...]
    macs: int
    flops: int


@dataclass
class FlopReport:
    """Per-layer rows and totals for one image."""

    rows: list[LayerFlops] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Forward FLOPs per image."""
        return sum(r.flops for r in self.rows)

    @property
    def macs(self) -> int:
        """Multiply-adds per image in convolutions and linear layers."""
        return sum(r.macs for r in self.rows)

    @property
    def training_per_image(self) -> int:
        """Approximate FLOPs of one training step per image (forward and backward)."""
        return TRAINING_FACTOR * self.total

    def by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            out[r.kind] = out.get(r.kind, 0) + r.flops
        return out


def _conv(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[str, int, int]:
    window = math.prod(m.kernel_size)  # kh * kw
    outputs = y[0].numel()  # C_out * H_out * W_out
    macs = (x.shape[1] // m.groups) * window * outputs
    return "conv", macs, 2 * macs + (outputs if m.bias is not None else 0)


def _linear(m: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> tuple[str, int, int]:
    rows = x[0].numel() // m.in_features  # a Linear maps the last axis; other axes are rows
    macs = m.in_features * m.out_features * rows
    return "linear", macs, 2 * macs + (m.out_features * rows if m.bias is not None else 0)


def _window_pool(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[str, int, int]:
    k = m.kernel_size
    window = k * k if isinstance(k, int) else math.prod(k)
    return "pool", 0, window * y[0].numel()


def _global_pool(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[str, int, int]:
    return "pool", 0, x[0].numel()


def _adaptive_pool(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[str, int, int]:
    # Each output averages an (H/h_out) x (W/w_out) window; in total every input element once per
    # output window that covers it, which for the non-overlapping case is the input size.
    return "pool", 0, max(x[0].numel(), y[0].numel())


def _norm(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[str, int, int]:
    return "norm", 0, 2 * y[0].numel()


# Order matters only for subclasses: Conv2d1x1 is a scratch Conv2d and is counted the same way.
COUNTERS: list[tuple[tuple[type, ...], Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[str, int, int]]]] = [
    ((nn.Conv2d, scratch_conv.Conv2d), _conv),
    ((nn.Linear,), _linear),
    ((nn.MaxPool2d, nn.AvgPool2d, scratch_pool.MaxPool2d, scratch_pool.AvgPool2d), _window_pool),
    ((scratch_pool.GlobalAvgPool2d,), _global_pool),
    ((nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d), _adaptive_pool),
    ((nn.BatchNorm1d, nn.BatchNorm2d, scratch_bn.BatchNorm), _norm),
]


def _counter_for(module: nn.Module):
    for types, counter in COUNTERS:
        if isinstance(module, types):
            return counter
    return None


def count_flops(model: nn.Module, example: torch.Tensor) -> FlopReport:
    """FLOPs per image of ``model`` on ``example`` ``(1, C, H, W)`` (a larger batch is divided out).

    The model runs once in evaluation mode without gradients; its mode is restored afterwards.
    """
    if example.dim() < 1 or example.shape[0] < 1:
        raise ValueError(f"count_flops needs a batch of at least one example, got shape {tuple(example.shape)}")
    report = FlopReport()
    hooks = []

    def hook(name: str, counter):
        def record(module: nn.Module, inputs, output) -> None:
            x = inputs[0]
            y = output[0] if isinstance(output, (tuple, list)) else output
            kind, macs, flops = counter(module, x, y)
            report.rows.append(LayerFlops(name, kind, tuple(y.shape[1:]), macs, flops))

        return record

    for name, module in model.named_modules():
        counter = _counter_for(module)
        if counter is not None:
            hooks.append(module.register_forward_hook(hook(name, counter)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return report


def format_flops(report: FlopReport) -> str:
    """A per-layer table with the totals, for the command line."""
    width = max([len(r.name) for r in report.rows] + [5])
    lines = [f"{'layer':<{width}}  {'kind':<6} {'output shape':<18} {'MFLOPs':>10}"]
    for r in report.rows:
        lines.append(f"{r.name:<{width}}  {r.kind:<6} {str(r.output_shape):<18} {r.flops / 1e6:>10.3f}")
    kinds = ", ".join(f"{k} {v / 1e6:.2f}" for k, v in report.by_kind().items())
    lines.append(f"forward {report.total / 1e6:,.2f} MFLOPs per image ({kinds}); "
                 f"training step about {report.training_per_image / 1e6:,.1f} MFLOPs per image")
    return "\n".join(lines)


def matmul_gflops(dtype: torch.dtype = torch.float32, *, size: int = 2048, repeats: int = 5) -> float:
    """This machine's dense matrix-product rate in GFLOP/s: the ceiling that training rates are compared with.

    The same ``(size x size) @ (size x size)`` product (``2 * size**3`` FLOPs) is timed twice: through
    ``torch.matmul`` and as a 1x1 convolution in channels-last layout, which torch hands to oneDNN.
    The two libraries pick different kernels (on AMD CPUs MKL's fp32 GEMM runs AVX2 code while
    oneDNN uses AVX-512), so the ceiling is the faster of the two. Each is the best of ``repeats``
    runs after a warm-up: other processes can only make a run slower.
    """
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g).to(dtype)
    b = torch.randn(size, size, generator=g).to(dtype)
    side = 16  # the product's rows laid out as (size / 256) images of 16 x 16 pixels
    rows = torch.randn(max(1, size // side**2), size, side, side, generator=g).to(dtype)
    x = rows.contiguous(memory_format=torch.channels_last)
    w = b.t().reshape(size, size, 1, 1).contiguous(memory_format=torch.channels_last)
    flops = 2 * size * size * x.shape[0] * side * side
    return max(2 * size**3 / _best_seconds(lambda: a @ b, repeats),
               flops / _best_seconds(lambda: torch.nn.functional.conv2d(x, w), repeats)) / 1e9


def _best_seconds(work: Callable[[], object], repeats: int) -> float:
    work()  # warm-up: kernel selection and memory allocation
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best
