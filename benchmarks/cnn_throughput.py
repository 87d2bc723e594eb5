"""Training throughput of every CNN against this machine's matrix-product ceiling, fp32 and bf16.

For each model at native 28x28 resolution, one training step (forward, cross-entropy, backward,
SGD with momentum) on a synthetic batch is timed: the best of ``repeats`` steps after two warm-up
steps, channels-last layout as in the models' recipes, the fp32 and bf16 steps taken in alternation
so that a busy spell of the host slows both alike. Best-of-N for both the steps and the matrix
product, because on a shared machine other processes only ever make a measurement slower; the
ceiling is measured before and after the models and the higher rate kept. Achieved GFLOP/s is ``3 x forward FLOPs per
image x images per second`` (:mod:`divekit.flops`), compared with the best rate of a dense 2048 x 2048
matrix product in the same precision, measured in the same run. bf16 runs under CPU autocast (or
CUDA autocast where a GPU is present); its speed-up is the fp32 step time over the bf16 one.

The second part trains the LeNets built from divekit's from-scratch layers (im2col convolution,
window pooling, batch norm) against the same networks from ``torch.nn``: the ratio is scratch step
time over built-in step time.

    python benchmarks/cnn_throughput.py [--repeats N] [--models resnet,densenet] [--quick]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from divekit.flops import TRAINING_FACTOR, count_flops, matmul_gflops
from divekit.registry import create_model
from divekit.train.precision import time_steps

from _machine import cpu_info, stamp

# (model, options, batch size): each model's recipe batch size.
MODELS: list[tuple[str, dict[str, Any], int]] = [
    ("lenet", {"modern": True}, 128), ("bn-lenet", {}, 128), ("alexnet", {}, 128), ("vgg", {}, 128),
    ("nin", {}, 128), ("googlenet", {}, 128), ("resnet", {}, 256), ("densenet", {}, 256),
]
SCRATCH_PAIRS: list[tuple[str, dict[str, Any]]] = [("lenet", {"modern": True}), ("bn-lenet", {})]
# ResNet-18's training step against the matrix-product ceiling of its precision: fp32 on any CPU;
# bf16 by the kind of bf16 unit (AMX's tiles set a far higher ceiling than AVX512-BF16's vectors).
RESNET_TARGETS = {"fp32": 0.70, "bf16 with AMX": 0.35, "bf16 with AVX512-BF16": 0.50}
MATMUL_SIZE, MATMUL_REPEATS = 2048, 5  # the ceiling: large enough for the fastest kernels to reach their rate
# Quick mode: one timed step on batches of 16 and one 512 x 512 product; shows that every model runs.
QUICK_REPEATS, QUICK_BATCH, QUICK_MATMUL_SIZE = 1, 16, 512


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def training_step(model: nn.Module, batch: int, *, precision: str = "fp32",
                  channels_last: bool = True) -> Callable[[], None]:
    """One SGD training step of ``model`` on a synthetic ``(batch, 1, 28, 28)`` batch, as a call."""
    device = _device()
    model = model.to(device).train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 28, 28, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()  # a first step allocates the optimizer state; time_steps warms up once more
    return step


def step_seconds(model: nn.Module, batch: int, *, precision: str = "fp32", channels_last: bool = True,
                 repeats: int = 5) -> float:
    """Best seconds of one SGD training step on a synthetic ``(batch, 1, 28, 28)`` batch."""
    return time_steps({"step": training_step(model, batch, precision=precision, channels_last=channels_last)},
                      rounds=repeats)["step"]


def model_rates(name: str, options: dict[str, Any], batch: int, repeats: int) -> dict:
    """Both precisions' steps, timed in alternation (a busy spell on a shared CPU slows both alike)."""
    torch.manual_seed(0)
    flops = count_flops(create_model(name, **options), torch.zeros(1, 1, 28, 28)).total
    out: dict[str, Any] = {"options": options, "batch": batch, "forward_mflops": round(flops / 1e6, 2)}
    steps = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        steps[precision] = training_step(create_model(name, **options), batch, precision=precision)
    best = time_steps(steps, rounds=repeats)
    for precision, seconds in best.items():
        gflops = TRAINING_FACTOR * flops * batch / seconds / 1e9
        out[precision] = {"step_ms": round(seconds * 1e3, 1), "images_per_s": round(batch / seconds),
                          "gflops": round(gflops, 1)}
    out["bf16_speedup"] = round(out["fp32"]["step_ms"] / out["bf16"]["step_ms"], 2)
    return out


def scratch_ratio(name: str, options: dict[str, Any], repeats: int, batch: int = 128) -> dict:
    """Scratch-layer network against the torch.nn one, same weights, fp32, default layout."""
    torch.manual_seed(0)
    reference = create_model(name, **options)
    scratch = create_model(name, **options, scratch=True)
    scratch.load_state_dict(reference.state_dict())
    torch_s = step_seconds(reference, batch, channels_last=False, repeats=repeats)
    scratch_s = step_seconds(scratch, batch, channels_last=False, repeats=repeats)
    return {"options": options, "batch": batch, "torch_step_ms": round(torch_s * 1e3, 2),
            "scratch_step_ms": round(scratch_s * 1e3, 2), "ratio": round(scratch_s / torch_s, 2)}


def resnet_targets(rates: dict[str, Any], flags: dict[str, bool]) -> dict[str, dict[str, Any]]:
    """ResNet-18's share of each precision's ceiling beside the target that applies to this CPU."""
    kinds = {"fp32": "fp32"}
    if flags.get("amx_bf16"):
        kinds["bf16"] = "bf16 with AMX"
    elif flags.get("avx512_bf16"):
        kinds["bf16"] = "bf16 with AVX512-BF16"  # without native bf16 no target applies: bf16 is emulated
    return {precision: {"kind": kind, "of_ceiling": rates[precision]["of_ceiling"],
                        "target": RESNET_TARGETS[kind],
                        "meets_target": rates[precision]["of_ceiling"] >= RESNET_TARGETS[kind]}
            for precision, kind in kinds.items()}


def ceilings(size: int, repeats: int) -> dict[str, float]:
    """The matrix-product rate in GFLOP/s in each precision."""
    return {"fp32": matmul_gflops(torch.float32, size=size, repeats=repeats),
            "bf16": matmul_gflops(torch.bfloat16, size=size, repeats=repeats)}


def run(quick: bool = False, *, repeats: int = 10, models: list[str] | None = None) -> dict:
    """Ceilings, per-model rates in both precisions, the ResNet target, and scratch-vs-torch LeNets.

    Quick: ``QUICK_REPEATS`` timed step on batches of ``QUICK_BATCH`` and a ``QUICK_MATMUL_SIZE``
    ceiling, for every model; its rates and ratios mean nothing.
    """
    if quick:
        repeats, matmul_size, matmul_repeats = QUICK_REPEATS, QUICK_MATMUL_SIZE, QUICK_REPEATS
    else:
        matmul_size, matmul_repeats = MATMUL_SIZE, MATMUL_REPEATS
    before = ceilings(matmul_size, matmul_repeats)
    rates = {name: model_rates(name, options, QUICK_BATCH if quick else batch, repeats)
             for name, options, batch in MODELS if models is None or name in models}
    after = ceilings(matmul_size, matmul_repeats)
    ceiling = {precision: max(before[precision], after[precision]) for precision in before}
    for rate in rates.values():
        for precision in ("fp32", "bf16"):
            rate[precision]["of_ceiling"] = round(rate[precision]["gflops"] / ceiling[precision], 3)
    result: dict[str, Any] = {
        "device": str(_device()),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "matmul_size": matmul_size,
        "matmul_gflops": {k: round(v, 1) for k, v in ceiling.items()},
        "models": rates,
    }
    if "resnet" in rates:
        result["resnet_targets"] = resnet_targets(rates["resnet"], cpu_info()["flags"])
    result["scratch_vs_torch"] = {name: scratch_ratio(name, options, repeats, QUICK_BATCH if quick else 128)
                                  for name, options in SCRATCH_PAIRS}
    return stamp(result, quick=quick)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--models", help="comma-separated subset of " + ",".join(m[0] for m in MODELS))
    parser.add_argument("--quick", action="store_true", help="one small step per model: shows that all run")
    args = parser.parse_args()
    print(json.dumps(run(args.quick, repeats=args.repeats, models=args.models.split(",") if args.models else None),
                     indent=2))
