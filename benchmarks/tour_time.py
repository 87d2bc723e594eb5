"""How long the quick tour takes, per experiment and in total, against its 10-minute budget.

``divekit tour`` is the main job and must stay under 10 minutes on a 2-core CPU as chapters are added;
this benchmark runs it into a temporary directory and reports each experiment's wall time.

Run ``python benchmarks/tour_time.py [--quick]``; it prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _machine import stamp

BUDGET_SECONDS = 600.0
# Quick mode: two of the cheapest experiments (a few seconds each), to show that the timing runs.
QUICK_EXPERIMENTS = ("polynomial-fit", "initialization")


def run(quick: bool = False) -> dict:
    """Every experiment of the tour in quick mode, timed; quick: only ``QUICK_EXPERIMENTS``.

    Quick mode's total covers two experiments, so it is not compared with the tour's budget.
    """
    from divekit.experiments.base import run_experiment
    from divekit.registry import CHAPTERS, EXPERIMENTS, load_all

    load_all()
    names = [e.name for c in CHAPTERS for e in sorted(EXPERIMENTS.values(), key=lambda e: e.name) if e.chapter == c]
    if quick:
        missing = sorted(set(QUICK_EXPERIMENTS) - set(names))
        if missing:
            raise LookupError(f"quick-mode experiments not in the tour: {', '.join(missing)}")
        names = [name for name in names if name in QUICK_EXPERIMENTS]
    per_experiment = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            result = run_experiment(name, Path(tmp) / name, quick=True, progress=False)
            per_experiment[name] = round(result["wall_seconds"], 2)
    total = time.perf_counter() - start
    return stamp({
        "name": "tour-quick",
        "total_seconds": round(total, 1),
        "budget_seconds": BUDGET_SECONDS,
        "meets_budget": None if quick else total < BUDGET_SECONDS,
        "experiments": per_experiment,
    }, quick=quick)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {' and '.join(QUICK_EXPERIMENTS)}")
    print(json.dumps(run(parser.parse_args().quick), indent=2))
