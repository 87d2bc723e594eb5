"""Forward + backward time of the scratch im2col ``Conv2d`` against ``nn.Conv2d``, in one run.

Two layer sizes: a LeNet-sized layer (batch 128, 6 -> 16 channels, 5x5 kernel on 14x14 maps) and a
ResNet-sized one (batch 128, 64 -> 64 channels, 3x3 kernel with padding 1 on 28x28 maps). Both
layers share weights; each timing is the median over a few repetitions (per case) after one warm-up
pass, in milliseconds, and ``ratio`` is scratch time over built-in time. Run ``python benchmarks/conv_speed.py
[--quick]`` to print the result as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from divekit.nn.conv import Conv2d

from _machine import stamp

# name -> (batch, in_channels, out_channels, kernel, padding, height/width, timed repeats)
CASES: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "lenet_6to16_5x5_14x14": (128, 6, 16, 5, 0, 14, 10),
    # Seconds per scratch pass on two CPU cores, so few repeats keep the whole run near 20 s.
    "resnet_64to64_3x3_28x28": (128, 64, 64, 3, 1, 28, 3),
}
QUICK_BATCH, QUICK_REPEATS = 16, 1  # quick mode: shows both layers run; the ratio means nothing


def _time_ms(step: Callable[[], None], repeats: int) -> float:
    """Median wall time of ``step`` in milliseconds, after one untimed warm-up call."""
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _forward_backward(layer: nn.Module, x: torch.Tensor, cotangent: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).backward(cotangent)

    return step


def _bench_case(batch: int, c_in: int, c_out: int, kernel: int, padding: int, size: int, repeats: int) -> dict:
    torch.manual_seed(0)
    reference = nn.Conv2d(c_in, c_out, kernel, padding=padding)
    scratch = Conv2d(c_in, c_out, kernel, padding=padding)
    scratch.load_state_dict(reference.state_dict())
    x = torch.randn(batch, c_in, size, size, requires_grad=True)
    with torch.no_grad():
        y_ref = reference(x)
        max_abs_diff = (scratch(x) - y_ref).abs().max().item()
    cotangent = torch.randn_like(y_ref)
    scratch_ms = _time_ms(_forward_backward(scratch, x, cotangent), repeats)
    torch_ms = _time_ms(_forward_backward(reference, x, cotangent), repeats)
    return {
        "repeats": repeats,
        "scratch_ms": round(scratch_ms, 2),
        "torch_ms": round(torch_ms, 2),
        "ratio": round(scratch_ms / torch_ms, 2),
        "max_abs_output_diff": max_abs_diff,
    }


def _quick(case: tuple[int, ...]) -> tuple[int, ...]:
    """A case with quick mode's batch and repeats."""
    _, c_in, c_out, kernel, padding, size, _ = case
    return QUICK_BATCH, c_in, c_out, kernel, padding, size, QUICK_REPEATS


def run(quick: bool = False) -> dict:
    """Time both layers on every case; returns the measurements and the environment they came from."""
    cases = {name: _quick(shape) if quick else shape for name, shape in CASES.items()}
    return stamp({
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cases": {name: {"batch": shape[0], **_bench_case(*shape)} for name, shape in cases.items()},
    }, quick=quick)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 16, one repeat: shows that it runs")
    print(json.dumps(run(parser.parse_args().quick), indent=2))
