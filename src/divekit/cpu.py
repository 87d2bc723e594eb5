"""The CPU: settings scoped to one study (restored on exit), and what this CPU can do.

``single_thread``: solving a ``(1000, 21)`` least-squares problem, stepping a 200-weight linear
model or training a 784-256-256-10 MLP on batches of 256 is near or below the size where a second
thread pays for its hand-off. When other jobs share a two-core machine, the threads of one
operation wait for each other: such loops ran up to ten times slower with two threads than with one.

``flush_denormals``: a network whose signal vanishes (a deep ReLU net initialised with std 0.01)
produces float32 gradients around 1e-40, below the smallest normal float32 (1.2e-38). x86 CPUs
compute with such subnormal numbers dozens of times slower (such a run took 60x longer here);
flushing them to zero changes the gradients by less than 1e-38 and leaves the training curves as
they were, at normal speed.

``cpu_info``: the CPU model and the flags that decide which kernels torch's CPU backends pick:
oneDNN runs bfloat16 convolutions and matrix products natively only with ``avx512_bf16`` or AMX
(``amx_tile``, ``amx_bf16``), and otherwise converts to float32 and back.
"""

from __future__ import annotations

import contextlib
import platform
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    # set_flush_denormal returns whether the CPU supports it; the previous state cannot be queried,
    # so the default (off) is restored.
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


# The flags that decide which kernels torch's CPU backends pick for fp32 and bf16 work.
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


def parse_cpuinfo(text: str) -> tuple[str | None, set[str]]:
    """The first processor's model name and flags in ``/proc/cpuinfo`` (or ``lscpu``) text."""
    model, flags = None, set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def _cpu_text() -> str:
    """``/proc/cpuinfo`` where there is one (Linux), else ``lscpu``'s output, else nothing."""
    if CPUINFO.is_file():
        return CPUINFO.read_text(errors="replace")
    try:
        return subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_info() -> dict[str, Any]:
    """The CPU model and, for each relevant flag, whether this CPU has it."""
    model, flags = parse_cpuinfo(_cpu_text())
    return {"model": model or platform.processor() or platform.machine(),
            "flags": {flag: flag in flags for flag in RELEVANT_FLAGS}}


def native_bf16(flags: dict[str, bool] | None = None) -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX512-BF16 or AMX)."""
    flags = cpu_info()["flags"] if flags is None else flags
    return bool(flags.get("avx512_bf16") or flags.get("amx_bf16"))
