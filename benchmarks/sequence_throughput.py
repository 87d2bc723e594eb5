"""Training throughput of the sequence models against this machine's matrix-product ceiling, fp32 and bf16.

Each model is built with its registered configuration and trained on a real batch of its own task
(the first training batch of The Time Machine for the character LMs, of the fra-eng pairs for the
Transformer): one step is the task's loss, backward and the recipe's optimizer update. The fp32 and
bf16 (autocast) steps are timed in alternation, best of ``repeats`` after a warm-up, so that a busy
spell of a shared host slows both alike. FLOPs per step are counted by
``torch.utils.flop_counter.FlopCounterMode`` over one forward and backward pass (matrix products
and convolutions; elementwise work is not counted), and GFLOP/s is set against the dense
matrix-product ceiling of the same precision measured in the same run (:func:`divekit.flops.matmul_gflops`).
Tokens are the task's counted targets per step.

    python benchmarks/sequence_throughput.py [--repeats N] [--models gpt-lm,transformer] [--quick]

Quick mode: three timed steps, a 512-wide ceiling, the first two models; it shows the benchmark runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from unittest import mock
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from divekit.flops import matmul_gflops
from divekit.nn import rnn_kernels
from divekit.registry import get_model
from divekit.tasks import make_task
from divekit.train.config import TrainConfig
from divekit.train.distributed import DistInfo
from divekit.train.precision import autocast, time_steps
from divekit.train.trainer import make_optimizer

from _machine import stamp

# (label, model, options): registered configurations, plus the quick tour's torch-cell LSTM.
MODELS: list[tuple[str, str, dict[str, Any]]] = [
    ("gru-lm", "gru-lm", {}),
    ("lstm-lm", "lstm-lm", {}),
    ("lstm-lm, torch cells, 384 units", "lstm-lm", {"impl": "torch", "hidden": 384}),
    ("deep-lstm-lm", "deep-lstm-lm", {}),
    ("gpt-lm", "gpt-lm", {}),
    ("transformer", "transformer", {}),
]
LIMITS = {"fra-eng": 5000}  # training pairs read: enough for one full batch, quick to prepare
QUICK_REPEATS, QUICK_MATMUL_SIZE, QUICK_MODELS = 3, 512, 2


def _prepare(name: str, options: dict[str, Any]):
    spec = get_model(name)
    config = spec.make_config(options)
    train_config = TrainConfig(**{**spec.recipe, "precision": "fp32"})
    task = make_task(spec.task, config, train_config, limit=LIMITS.get(spec.task))
    loader = task.train_loader(DistInfo())
    batch = next(iter(loader))
    torch.manual_seed(0)
    return spec.build(config), task, batch, train_config


def step_flops(name: str, options: dict[str, Any]) -> tuple[int, int]:
    """Target tokens and matrix-product FLOPs of one forward and backward pass of ``name``.

    The recurrent layers are counted in their from-scratch build on ``F.linear`` (the same
    products, forward and the hand-derived backward): the counter does not see inside oneDNN's
    linear op, which that build uses on CPU by default, nor inside ``nn.LSTM``'s fused kernels.
    """
    spec = get_model(name)
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    model, task, batch, _ = _prepare(name, {**options, "impl": "scratch"} if "impl" in fields else options)
    task.start_epoch(model, 0)
    with mock.patch.object(rnn_kernels, "_ONEDNN", None), FlopCounterMode(display=False) as counter:
        out = task.step(model, batch)
        out.loss.backward()
    return int(out.count), counter.get_total_flops()


def model_rates(label: str, name: str, options: dict[str, Any], repeats: int) -> dict[str, Any]:
    """Tokens/s and GFLOP/s of one training step of ``name`` in fp32 and in bf16."""
    cpu = torch.device("cpu")
    steps, tokens, flops, parameters = {}, 0, 0, 0
    for precision in ("fp32", "bf16"):
        model, task, batch, train_config = _prepare(name, options)
        model.train()
        optimizer = make_optimizer(model, train_config)

        def step(model=model, task=task, batch=batch, optimizer=optimizer, precision=precision) -> None:
            task.start_epoch(model, 0)  # no state carried from one timed step into the next
            with autocast(precision, cpu):
                loss = task.step(model, batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        steps[precision] = step
        if precision == "fp32":
            tokens, flops = step_flops(name, options)
            parameters = sum(p.numel() for p in model.parameters())
    best = time_steps(steps, rounds=repeats)
    result: dict[str, Any] = {"model": name, "options": options, "parameters": parameters,
                              "tokens_per_step": tokens, "gflop_per_step": round(flops / 1e9, 3)}
    for precision, seconds in best.items():
        result[precision] = {"step_ms": round(seconds * 1e3, 2), "tokens_per_s": round(tokens / seconds),
                             "gflops": round(flops / seconds / 1e9, 1)}
    result["bf16_speedup"] = round(best["fp32"] / best["bf16"], 2)
    return result


def run(quick: bool = False, *, repeats: int = 10, models: list[str] | None = None) -> dict[str, Any]:
    size = QUICK_MATMUL_SIZE if quick else 2048
    repeats = QUICK_REPEATS if quick else repeats
    chosen = [m for m in MODELS if models is None or m[0] in models or m[1] in models]
    if quick:
        chosen = chosen[:QUICK_MODELS]
    before = {p: matmul_gflops(d, size=size) for p, d in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    rates = {label: model_rates(label, name, options, repeats) for label, name, options in chosen}
    after = {p: matmul_gflops(d, size=size) for p, d in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    ceiling = {p: max(before[p], after[p]) for p in before}
    for rate in rates.values():
        for precision in ("fp32", "bf16"):
            rate[precision]["of_ceiling"] = round(rate[precision]["gflops"] / ceiling[precision], 3)
    return stamp({"threads": torch.get_num_threads(), "torch": torch.__version__,
                  "matmul_gflops": {k: round(v, 1) for k, v in ceiling.items()}, "models": rates}, quick=quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--models", help="comma-separated subset of " + ",".join(m[0] for m in MODELS))
    parser.add_argument("--quick", action="store_true", help="three steps, two models: shows that it runs")
    args = parser.parse_args()
    models = args.models.split(",") if args.models else None
    print(json.dumps(run(args.quick, repeats=args.repeats, models=models), indent=2))


if __name__ == "__main__":
    main()
