"""What a benchmark ran on and in which mode, stamped on every result.

Throughput on a CPU depends on which vector and matrix units it has: oneDNN runs bfloat16
convolutions and matrix products natively only with ``avx512_bf16`` or AMX (``amx_tile``,
``amx_bf16``), and otherwise converts to float32. So every result names the CPU model and says
which of these flags it has. A quick-mode result is labelled as such: its sizes are shrunk to
show that the benchmark runs, and its figures are not measurements to quote.
"""

from __future__ import annotations

from typing import Any

from divekit.cpu import RELEVANT_FLAGS, cpu_info, parse_cpuinfo  # noqa: F401 (the benchmarks' names)


def stamp(result: dict[str, Any], *, quick: bool) -> dict[str, Any]:
    """``result`` with its mode (``quick`` or ``full``) and the CPU it ran on in front."""
    return {"mode": "quick" if quick else "full", "cpu": cpu_info(), **result}
