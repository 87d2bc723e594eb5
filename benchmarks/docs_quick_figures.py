"""Rerun the quick modes quoted in docs/results/generalization.md and shift.md, compare their metrics.

Each experiment's ``results.json`` carries a small ``metrics`` dict (its headline figures). This
benchmark reruns the experiments' quick modes (seed 0) and compares every metric against the values
recorded in ``benchmarks/measured/docs_quick_figures.json``, so a change to the code or the machine
that moves a figure the pages quote is seen at once.

Two kinds of metric, two tolerances:

- accuracies (a name containing ``accuracy``, and the covariate-shift ``gain_estimated_weights``,
  a difference of accuracies) come out of training, most of it on Fashion-MNIST in float32; a
  floating-point reduction summed in another order (another CPU kind, another torch build) changes
  the weights in their last bits, training amplifies that, and a few test predictions flip. They
  match when they differ by at most ``--accuracy-tolerance`` percentage points (default 0.5);
- everything else (mean squared errors, weight norms, gradient norms, correlations, delays) is
  deterministic math given the seed, and matches when its relative difference
  ``|new - recorded| / max(|recorded|, tiny)`` is at most ``--tolerance`` (default 1e-6). On the
  machine that recorded them these repeat to about 1e-15 (label shift's BBSE weight error moves in
  its 16th digit from run to run); on another CPU kind a figure reached through many float32 steps
  may move further, and the report then names it as differing.

    python benchmarks/docs_quick_figures.py --record    # run all nine, write the recorded values
    python benchmarks/docs_quick_figures.py             # run all nine, compare with the record
    python benchmarks/docs_quick_figures.py --quick     # only the three cheapest, compared

``run(quick=...)`` is what ``benchmarks/run.py`` calls; it returns one JSON-able dict.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from _machine import stamp

HERE = Path(__file__).resolve().parent
RECORD = HERE / "measured" / "docs_quick_figures.json"

# The experiments the two pages quote, in the order they appear there.
EXPERIMENTS = (
    "polynomial-fit", "weight-decay", "dropout-mlp",
    "gradient-flow", "initialization", "batchnorm-depth",
    "covariate-shift", "label-shift", "concept-shift",
)
CHEAPEST = ("polynomial-fit", "weight-decay", "concept-shift")  # a few seconds each on two cores

TOLERANCE = 1e-6  # relative, for deterministic math
ACCURACY_TOLERANCE = 0.5  # percentage points, for trained accuracies
ACCURACY_DIFFERENCES = frozenset({"gain_estimated_weights"})  # accuracy differences without the word


def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` prints it (``/proc/cpuinfo`` on Linux), else the platform's."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def is_accuracy(metric: str) -> bool:
    return "accuracy" in metric or metric in ACCURACY_DIFFERENCES


def compare(metric: str, recorded: float, measured: float, *, tolerance: float,
            accuracy_tolerance: float) -> dict:
    """One metric's verdict: the difference in the unit its tolerance is given in."""
    if is_accuracy(metric):
        difference = abs(measured - recorded) * 100  # accuracies are fractions: points = 100 x
        return {"kind": "accuracy", "recorded": recorded, "measured": measured,
                "difference_points": difference, "tolerance_points": accuracy_tolerance,
                "match": difference <= accuracy_tolerance}
    relative = abs(measured - recorded) / max(abs(recorded), 1e-300)
    return {"kind": "exact", "recorded": recorded, "measured": measured,
            "relative_difference": relative, "tolerance": tolerance,
            "match": relative <= tolerance}


def measure(names: tuple[str, ...]) -> dict[str, dict]:
    """Run each experiment's quick mode (seed 0) into a temporary folder: its metrics and wall time."""
    from divekit.experiments.base import run_experiment
    from divekit.registry import load_all

    load_all()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            print(f"[docs_quick_figures] {name} ...", file=sys.stderr, flush=True)
            result = run_experiment(name, Path(tmp) / name, quick=True, progress=False)
            out[name] = {"metrics": result["metrics"], "wall_seconds": round(result["wall_seconds"], 2)}
    return out


def run(quick: bool = False, **options) -> dict:
    """Rerun the quick experiments (the three cheapest with ``quick``) and compare with the record.

    Options: ``tolerance`` (relative, deterministic metrics), ``accuracy_tolerance`` (points),
    ``record`` (write the measured values as the new record instead of comparing).
    """
    from divekit.runs import machine_info, now_iso, write_json

    tolerance = float(options.get("tolerance", TOLERANCE))
    accuracy_tolerance = float(options.get("accuracy_tolerance", ACCURACY_TOLERANCE))
    names = CHEAPEST if quick else EXPERIMENTS
    start = time.perf_counter()
    measured = measure(names)
    machine = {**machine_info(), "cpu_model": cpu_model()}
    if options.get("record"):
        if quick:
            raise ValueError("--record runs all nine experiments; drop --quick")
        record = {
            "command": "python benchmarks/docs_quick_figures.py --record",
            "what": "quick-mode metrics (seed 0) of the experiments quoted in docs/results/generalization.md "
                    "and docs/results/shift.md",
            "machine": machine,
            "date": now_iso(),
            "experiments": {n: measured[n]["metrics"] for n in names},
            "wall_seconds": {n: measured[n]["wall_seconds"] for n in names},
        }
        write_json(RECORD, record)
        return stamp({"name": "docs-quick-figures", "recorded": str(RECORD), "experiments": list(names),
                "metrics": sum(len(m["metrics"]) for m in measured.values()),
                "total_seconds": round(time.perf_counter() - start, 1)}, quick=quick)

    record = json.loads(RECORD.read_text())
    comparisons: dict[str, dict] = {}
    for name in names:
        recorded = record["experiments"].get(name, {})
        got = measured[name]["metrics"]
        rows = {}
        for metric in sorted(set(recorded) | set(got)):
            if metric not in recorded or metric not in got:
                rows[metric] = {"kind": "missing", "recorded": recorded.get(metric), "measured": got.get(metric),
                                "match": False}
                continue
            rows[metric] = compare(metric, float(recorded[metric]), float(got[metric]),
                                   tolerance=tolerance, accuracy_tolerance=accuracy_tolerance)
        comparisons[name] = rows
    verdicts = [row["match"] for rows in comparisons.values() for row in rows.values()]
    differing = [f"{n}.{m}" for n, rows in comparisons.items() for m, row in rows.items() if not row["match"]]
    return stamp({
        "name": "docs-quick-figures",
        "quick": quick,
        "recorded_on": {"date": record["date"], "cpu_model": record["machine"].get("cpu_model")},
        "machine": machine,
        "date": now_iso(),
        "tolerance": tolerance,
        "accuracy_tolerance_points": accuracy_tolerance,
        "metrics": len(verdicts),
        "matching": sum(verdicts),
        "differing": differing,
        "all_match": not differing,
        "wall_seconds": {n: measured[n]["wall_seconds"] for n in names},
        "comparisons": comparisons,
        "total_seconds": round(time.perf_counter() - start, 1),
    }, quick=quick)


def _summary(result: dict) -> str:
    if "recorded" in result:
        return (f"recorded {result['metrics']} metrics of {len(result['experiments'])} experiments "
                f"in {result['recorded']}")
    lines = []
    for name, rows in result["comparisons"].items():
        for metric, row in rows.items():
            if row["kind"] == "accuracy":
                detail = f"{row['difference_points']:.3g} points (tolerance {row['tolerance_points']})"
            elif row["kind"] == "exact":
                detail = f"relative {row['relative_difference']:.2g} (tolerance {row['tolerance']:g})"
            else:
                detail = "missing on one side"
            verdict = "matches" if row["match"] else "DIFFERS"
            lines.append(f"{name:16s} {metric:40s} {verdict:8s} {detail}")
    lines.append(f"{result['matching']} of {result['metrics']} metrics match"
                 + ("" if result["all_match"] else f"; differing: {', '.join(result['differing'])}"))
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", action="store_true", help=f"write the measured values to {RECORD.name}")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help="relative tolerance for deterministic metrics (default %(default)g)")
    parser.add_argument("--accuracy-tolerance", type=float, default=ACCURACY_TOLERANCE,
                        help="tolerance for accuracies, in percentage points (default %(default)g)")
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(CHEAPEST)}")
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")
    args = parser.parse_args()
    result = run(quick=args.quick, record=args.record, tolerance=args.tolerance,
                 accuracy_tolerance=args.accuracy_tolerance)
    print(json.dumps(result, indent=2) if args.json else _summary(result))
    sys.exit(0 if result.get("all_match", True) else 1)
