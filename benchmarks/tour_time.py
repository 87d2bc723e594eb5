"""How long the quick tour takes, per experiment and in total, against its 10-minute budget.

``divekit tour`` is the main job and must stay under 10 minutes on a 2-core CPU as chapters are added;
this benchmark runs it into a temporary directory and reports each experiment's wall time.

Run ``python benchmarks/tour_time.py``; it prints one JSON object.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

BUDGET_SECONDS = 600.0


def run() -> dict:
    from divekit.experiments.base import run_experiment
    from divekit.registry import CHAPTERS, EXPERIMENTS, load_all

    load_all()
    names = [e.name for c in CHAPTERS for e in sorted(EXPERIMENTS.values(), key=lambda e: e.name) if e.chapter == c]
    per_experiment = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            result = run_experiment(name, Path(tmp) / name, quick=True, progress=False)
            per_experiment[name] = round(result["wall_seconds"], 2)
    total = time.perf_counter() - start
    return {
        "name": "tour-quick",
        "total_seconds": round(total, 1),
        "budget_seconds": BUDGET_SECONDS,
        "meets_budget": total < BUDGET_SECONDS,
        "experiments": per_experiment,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
