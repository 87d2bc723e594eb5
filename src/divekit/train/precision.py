"""``--precision auto``: bf16 where this machine computes it natively and it pays for this model.

The rule, in order:

- CUDA: bf16 when the GPU supports it (``torch.cuda.is_bf16_supported()``), else fp32.
- A CPU without AVX512-BF16 or AMX: fp32. oneDNN would convert every bf16 product to fp32 and back,
  which is slower than fp32 (on AVX2-only CPUs many times slower).
- A CPU with them: one training step of this model on the run's first batch is timed in each
  precision (forward and backward on a copy of the model; torch's random state is put back, so the
  run itself is unchanged), and bf16 is taken when it is at least ``MIN_SPEEDUP`` times faster.
  Small models are bound by per-operation overhead, which autocast's casts only add to, so they
  stay in fp32; large convolutions and matrix products gain. An fp32 step under ``MIN_STEP_S``
  stays fp32 whatever the ratio: at a fraction of a millisecond a busy CPU's jitter decides it.

The measured choice is kept in ``$XDG_CACHE_HOME/divekit/precision.json`` (or the file
``$DIVEKIT_PRECISION_CACHE`` names) under the model, its
configuration, the batch shape, the CPU, the thread count and the torch version, so that the next
run of the same model on the same machine makes the same choice and, with the same seed, gives the
same figures. Every run records its choice and why (``PrecisionChoice``).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from divekit.cpu import cpu_info, native_bf16
from divekit.data.store import cache_dir
from divekit.train.distributed import DistInfo, all_reduce_sum

MIN_SPEEDUP = 1.15  # below this, bf16's rounding is not worth a gain within the noise of a shared CPU
MIN_STEP_S = 0.002  # an fp32 step shorter than this is bound by per-operation overhead; its ratio is timer noise
PROBE_ROUNDS = 3  # timed steps per precision, alternating, after one warm-up step each; the fastest counts
CACHE_FILE = "precision.json"


@dataclass
class PrecisionChoice:
    """What ``auto`` chose, and the evidence: step seconds in each precision when they were measured."""

    precision: str
    reason: str
    fp32_step_s: float | None = None
    bf16_step_s: float | None = None
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        return f"precision auto -> {self.precision}: {self.reason}"


def autocast(precision: str, device: torch.device):
    """The autocast context of a concrete precision (``fp32``: none)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _cache_path() -> Path:
    """``$DIVEKIT_PRECISION_CACHE`` if set (a file), else ``precision.json`` in the user cache."""
    override = os.environ.get("DIVEKIT_PRECISION_CACHE")
    return Path(override) if override else cache_dir() / CACHE_FILE


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(_cache_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, choice: PrecisionChoice) -> None:
    """Best effort and atomic: an unwritable cache only means the next run measures again."""
    path = _cache_path()
    data = _read_cache()
    data[key] = {k: v for k, v in choice.to_dict().items() if k != "cached"}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def cache_key(model_name: str, model_config: dict[str, Any], batch_shape: tuple[int, ...]) -> str:
    """Everything the measured speed-up depends on, hashed into one short key."""
    what = json.dumps({"model": model_name, "config": model_config, "batch": list(batch_shape),
                       "cpu": cpu_info()["model"], "threads": torch.get_num_threads(),
                       "torch": torch.__version__}, sort_keys=True, default=str)
    return f"{model_name}-{hashlib.sha256(what.encode()).hexdigest()[:16]}"


def time_steps(steps: dict[str, Callable[[], None]], rounds: int = PROBE_ROUNDS) -> dict[str, float]:
    """Fastest seconds of each call in ``steps``, after one warm-up call each.

    The calls alternate, round after round, so that a burst of other work on a shared CPU slows
    both alike instead of deciding between them.
    """
    for step in steps.values():
        step()
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def measure(model: nn.Module, loss_of: Callable[[nn.Module], torch.Tensor],
            device: torch.device) -> tuple[float, float]:
    """Seconds of one forward and backward pass of a copy of ``model``: (fp32, bf16).

    ``loss_of(model)`` computes the loss of the probe batch. Torch's random state is restored
    afterwards, so a dropout model's run draws the same masks as if nothing had been measured.
    """
    probe = copy.deepcopy(model).train()
    rng = torch.get_rng_state()

    def step(precision: str) -> Callable[[], None]:
        def run() -> None:
            with autocast(precision, device):
                loss = loss_of(probe)
            probe.zero_grad(set_to_none=True)
            loss.backward()
        return run

    try:
        best = time_steps({"fp32": step("fp32"), "bf16": step("bf16")})
    finally:
        torch.set_rng_state(rng)
    return best["fp32"], best["bf16"]


def _busy_note() -> str:
    """A warning for the record when other work shared the CPU while it was measured."""
    try:
        load, cores = os.getloadavg()[0], os.cpu_count() or 1
    except OSError:
        return ""
    others = load - min(torch.get_num_threads(), cores)  # this process's own threads count in the load
    return f"; measured while the CPU was busy (load {load:.1f} on {cores} cores)" if others > 0.5 else ""


def decide(fp32_s: float, bf16_s: float) -> PrecisionChoice:
    """The choice from two measured step times."""
    speedup = fp32_s / bf16_s
    if fp32_s < MIN_STEP_S:
        return PrecisionChoice("fp32", f"an fp32 step takes only {fp32_s * 1e3:.2f} ms here, too short for "
                                       f"bf16 to pay (bf16 {bf16_s * 1e3:.2f} ms, {speedup:.2f}x)", fp32_s, bf16_s)
    if speedup >= MIN_SPEEDUP:
        return PrecisionChoice("bf16", f"bf16 steps ran {speedup:.2f}x faster than fp32 here "
                                       f"({bf16_s * 1e3:.1f} ms against {fp32_s * 1e3:.1f} ms)", fp32_s, bf16_s)
    return PrecisionChoice("fp32", f"bf16 steps ran only {speedup:.2f}x as fast as fp32 here "
                                   f"({bf16_s * 1e3:.1f} ms against {fp32_s * 1e3:.1f} ms; bf16 needs "
                                   f"{MIN_SPEEDUP:.2f}x)", fp32_s, bf16_s)


def choose(model: nn.Module, loss_of: Callable[[nn.Module], torch.Tensor], device: torch.device, *,
           key: str | None = None, flags: dict[str, bool] | None = None) -> PrecisionChoice:
    """Resolve ``auto`` for ``model`` on ``device`` (see the module docstring for the rule).

    ``key`` (from :func:`cache_key`) reuses and stores the measured choice; None measures afresh.
    ``flags`` stands in for this CPU's flags (tests).
    """
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice("bf16", f"{torch.cuda.get_device_name(device)} computes bf16 natively")
        return PrecisionChoice("fp32", f"{torch.cuda.get_device_name(device)} has no bf16 support")
    if device.type != "cpu":
        return PrecisionChoice("fp32", f"no bf16 rule for device type '{device.type}'")
    if not native_bf16(flags):
        return PrecisionChoice("fp32", "this CPU has neither AVX512-BF16 nor AMX, so bf16 would be "
                                       "converted to fp32 and back")
    if key is not None:
        stored = _read_cache().get(key)
        if isinstance(stored, dict) and stored.get("precision") in ("fp32", "bf16"):
            fields = {k: stored.get(k) for k in ("precision", "reason", "fp32_step_s", "bf16_step_s")}
            return PrecisionChoice(**fields, cached=True)
    choice = decide(*measure(model, loss_of, device))
    choice.reason += _busy_note()
    if key is not None:
        _write_cache(key, choice)
    return choice


def choose_for_task(model: nn.Module, task: Any, batch: Any, device: torch.device, *, epoch: int,
                    model_name: str, model_config: dict[str, Any], dist: DistInfo) -> PrecisionChoice:
    """:func:`choose` for a training task's step on ``batch`` (already on ``device``).

    A task may carry state from step to step (a language model's hidden state): each probe step
    starts the epoch afresh, and the Trainer starts it afresh again after the probe. Under
    ``torchrun`` every rank measures and the summed times decide, so all ranks agree.
    """
    def loss_of(probe: nn.Module) -> torch.Tensor:
        task.start_epoch(probe, epoch)
        return task.step(probe, batch).loss

    tensors = batch if isinstance(batch, (tuple, list)) else [batch]
    shapes = tuple(tuple(b.shape) for b in tensors if isinstance(b, torch.Tensor))
    key = None if dist.enabled else cache_key(model_name, model_config, shapes)
    choice = choose(model, loss_of, device, key=key)
    if dist.enabled and choice.fp32_step_s is not None:
        summed = all_reduce_sum([choice.fp32_step_s, choice.bf16_step_s], dist, device)
        choice = decide(*summed)
    return choice
