"""How long the quick tour takes, per experiment and in total, against its 10-minute budget.

``divekit tour`` is the main job and must stay under 10 minutes on a 2-core CPU as chapters are added;
this benchmark runs it into a temporary directory and reports each experiment's wall time.

Beside the times it checks the figures each quick section must reach for its models to have
learned (``TARGETS``), read from the experiments' results; ``--results DIR`` checks a tour that
already ran (``divekit tour --out DIR``) instead of running one.

Run ``python benchmarks/tour_time.py [--quick | --results DIR]``; it prints one JSON object.
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


def _recurrent_perplexities(r: dict) -> dict[str, float]:
    return {k: v for k, v in r["metrics"].items() if k.endswith("_test_perplexity") and "-lm_" in k}


# (experiment, what must hold, the measured value, whether it holds given the value and the result).
TARGETS = [
    ("fashion-mnist-baselines", "best model >= 91% test",
     lambda r: r["metrics"]["best_test_accuracy"], lambda v, _: v >= 0.91),
    ("cnn-compare", "every CNN >= 87% test",
     lambda r: min(v for k, v in r["metrics"].items() if k.startswith("test_accuracy_")), lambda v, _: v >= 0.87),
    ("cnn-compare", "the validation-selected CNN >= 91% test",
     lambda r: r["metrics"]["best_test_accuracy"], lambda v, _: v >= 0.91),
    ("char-lm", "best recurrent model <= 4.1 test perplexity",
     lambda r: min(_recurrent_perplexities(r).values()), lambda v, _: v <= 4.1),
    ("char-lm", "worst recurrent model below the trigram's test perplexity",
     lambda r: max(_recurrent_perplexities(r).values()),
     lambda v, r: v < r["metrics"]["trigram_test_perplexity"]),
    ("attention", "Transformer >= 20 BLEU on the 5,000 test pairs (greedy)",
     lambda r: r["metrics"]["transformer_bleu_greedy"], lambda v, _: v >= 20),
    ("attention", "Bahdanau seq2seq translates (>= 10 test BLEU, greedy)",
     lambda r: r["metrics"]["seq2seq_attention_bleu_greedy"], lambda v, _: v >= 10),
    ("translation", "seq2seq translates (>= 10 test BLEU, greedy)",
     lambda r: r["metrics"]["test_bleu_greedy"], lambda v, _: v >= 10),
    ("bert-labels", "BERT fine-tuned from its pretraining beats the majority answer with 1,000 labels",
     lambda r: r["metrics"]["pretrained_1000_test_accuracy"], lambda v, r: v > r["metrics"]["constant_test_accuracy"]),
    ("bert-labels", "pretraining helps at 1,000 labels (pretrained above scratch)",
     lambda r: r["metrics"]["pretrained_1000_test_accuracy"] - r["metrics"]["scratch_1000_test_accuracy"],
     lambda v, _: v > 0),
]


def check_targets(results: dict[str, dict]) -> list[dict]:
    """Each target of ``TARGETS`` whose experiment is in ``results`` (name -> results.json)."""
    rows = []
    for name, target, measure, holds in TARGETS:
        if name in results:
            value = measure(results[name])
            rows.append({"experiment": name, "target": target, "measured": round(value, 4),
                         "holds": holds(value, results[name])})
    return rows


def check_directory(directory: Path) -> dict:
    """Targets and recorded times of a tour that ran into ``directory``."""
    results = {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(directory).glob("*/results.json"))}
    if not results:
        raise SystemExit(f"tour_time: no */results.json under {directory}")
    seconds = {name: round(r["wall_seconds"], 1) for name, r in results.items()}
    return {"name": "tour-quick", "directory": str(directory),
            "experiments_seconds_sum": round(sum(seconds.values()), 1), "experiments": seconds,
            "targets": check_targets(results)}


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
    per_experiment, results = {}, {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results[name] = run_experiment(name, Path(tmp) / name, quick=True, progress=False)
            per_experiment[name] = round(results[name]["wall_seconds"], 2)
    total = time.perf_counter() - start
    return stamp({
        "name": "tour-quick",
        "total_seconds": round(total, 1),
        "budget_seconds": BUDGET_SECONDS,
        "meets_budget": None if quick else total < BUDGET_SECONDS,
        "experiments": per_experiment,
        "targets": check_targets(results),
    }, quick=quick)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {' and '.join(QUICK_EXPERIMENTS)}")
    parser.add_argument("--results", type=Path, help="check the targets of a tour that ran into this directory")
    args = parser.parse_args()
    print(json.dumps(check_directory(args.results) if args.results else run(args.quick), indent=2))
