"""What a benchmark ran on and in which mode, stamped on every result.

Throughput on a CPU depends on which vector and matrix units it has: oneDNN runs bfloat16
convolutions and matrix products natively only with ``avx512_bf16`` or AMX (``amx_tile``,
``amx_bf16``), and otherwise converts to float32. So every result names the CPU model and says
which of these flags it has. A quick-mode result is labelled as such: its sizes are shrunk to
show that the benchmark runs, and its figures are not measurements to quote.
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

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


def stamp(result: dict[str, Any], *, quick: bool) -> dict[str, Any]:
    """``result`` with its mode (``quick`` or ``full``) and the CPU it ran on in front."""
    return {"mode": "quick" if quick else "full", "cpu": cpu_info(), **result}
