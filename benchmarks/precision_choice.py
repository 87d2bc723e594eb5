"""What ``--precision auto`` chooses here, and whether bf16 costs accuracy: the same schedule in both.

For each model below, the same recipe is trained with ``--precision fp32`` and ``--precision bf16``
from the same seeds (same initial weights, same batches, same dropout streams), and scored on the
test split. The difference of the means is set beside the spread of the seeds: when bf16's
rounding costs nothing, the difference lies within the seed-to-seed noise. The result also shows
what ``auto`` picks for the model on this machine, with the step times it measured.

    python benchmarks/precision_choice.py [--seeds 3] [--quick]

ResNet-18 is run with the quick tour's schedule (one epoch on all 55,000 images, batch 128, lr 0.1):
the model for which ``auto`` takes bf16 on a CPU with AVX512-BF16. Quick mode: the modern LeNet,
512 images, one seed; it shows that the benchmark runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from divekit.pipeline import train_model

from _machine import stamp

# (label, model, options, recipe overrides, test metric)
CASES: list[tuple[str, str, dict[str, Any], dict[str, Any], str]] = [
    ("ResNet-18, the quick tour's schedule", "resnet", {},
     {"epochs": 1, "batch_size": 128, "lr": 0.1}, "test_accuracy"),
]
# Quick mode only shows that the benchmark runs: a small model on a slice, one seed.
QUICK_CASE = ("the modern LeNet, one epoch on a slice (a check that the benchmark runs)", "lenet",
              {"modern": True}, {"epochs": 1}, "test_accuracy")
QUICK_LIMIT = 512


def _train(model: str, options: dict[str, Any], overrides: dict[str, Any], limit: int | None,
           out: Path) -> dict[str, Any]:
    return train_model(model, options=options, train_overrides=overrides, limit=limit, out=out,
                       progress=False, log=lambda *a: None)


def compare(label: str, model: str, options: dict[str, Any], overrides: dict[str, Any], metric: str,
            seeds: int, limit: int | None, work: Path) -> dict[str, Any]:
    """Both precisions from ``seeds`` seeds, and what auto chooses for the first seed's run."""
    runs: dict[str, list[dict[str, float]]] = {"fp32": [], "bf16": []}
    for seed in range(seeds):
        for precision in runs:
            r = _train(model, options, {**overrides, "seed": seed, "precision": precision}, limit,
                       work / f"{model}-{precision}-{seed}")
            runs[precision].append({"seed": seed, metric: r["test"][metric], "train_seconds": r["train_seconds"]})
    auto = _train(model, options, {**overrides, "epochs": 1, "precision": "auto"}, QUICK_LIMIT, work / f"{model}-auto")
    # The choice depends on the batch's shape, not on the number of batches: a slice shows it.
    summary: dict[str, Any] = {"label": label, "model": model, "options": options, "recipe": overrides,
                               "limit": limit, "metric": metric, "runs": runs,
                               "auto_choice": auto["precision_choice"]}
    for precision, rows in runs.items():
        values = [row[metric] for row in rows]
        summary[precision] = {"mean": statistics.fmean(values),
                              "stdev": statistics.stdev(values) if len(values) > 1 else None,
                              "train_seconds": statistics.fmean(row["train_seconds"] for row in rows)}
    summary["bf16_minus_fp32"] = summary["bf16"]["mean"] - summary["fp32"]["mean"]
    summary["time_ratio_fp32_over_bf16"] = summary["fp32"]["train_seconds"] / summary["bf16"]["train_seconds"]
    return summary


def run(quick: bool = False, *, seeds: int = 3) -> dict[str, Any]:
    seeds, limit = (1, QUICK_LIMIT) if quick else (seeds, None)
    with tempfile.TemporaryDirectory(prefix="divekit-precision-") as tmp:
        cases = [compare(*case, seeds=seeds, limit=limit, work=Path(tmp)) for case in ([QUICK_CASE] if quick else CASES)]
    return stamp({"seeds": seeds, "cases": cases}, quick=quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="512 images, one seed: shows that it runs")
    args = parser.parse_args()
    print(json.dumps(run(args.quick, seeds=args.seeds), indent=2))


if __name__ == "__main__":
    main()
