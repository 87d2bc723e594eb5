"""Validation BLEU against training seconds for Transformer runs with different vocabularies.

    divekit train transformer --epochs 3 --out runs/mt-word-3
    divekit train transformer --epochs 3 -o subwords=8000 --out runs/mt-sub-3
    python benchmarks/mt_vocab_curves.py runs/mt-word-3 runs/mt-sub-3 --labels words "subwords 8000" \
        --plot docs/results/figures/mt-word-vs-subword-bleu.png

Reads each run's ``metrics.jsonl`` (one line per epoch: its training seconds and its greedy
validation BLEU) and ``results.json`` (the test BLEU of the selected model), prints one JSON record
and draws the curves in one plot. The runs should come from one machine, one after the other, so
that their seconds compare. ``benchmarks/run.py`` calls :func:`run`, which trains the two runs itself
(quick: a tiny Transformer on a few hundred pairs, to show that the pipeline holds).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from _machine import stamp


def curve(run: Path) -> dict:
    """Cumulative training seconds and validation BLEU after each epoch of one run."""
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    seconds, total = [], 0.0
    for e in epochs:
        total += e["train_seconds"]
        seconds.append(round(total, 1))
    results = json.loads((run / "results.json").read_text())
    return {"run": str(run), "seconds": seconds, "val_bleu": [round(e["val_bleu"], 2) for e in epochs],
            "test_bleu_greedy": results["test"]["test_bleu"], "parameters": results.get("parameters")}


# Label -> the model options that choose the vocabulary, in full mode and in quick mode.
VOCABULARIES = {"words": ({}, {"src_vocab_size": 500, "tgt_vocab_size": 500}),
                "subwords 8000": ({"subwords": 8000}, {"subwords": 300})}
QUICK_OPTIONS = {"d_model": 32, "num_heads": 2, "ffn_hidden": 64, "num_encoder_layers": 1, "num_decoder_layers": 1,
                 "num_steps": 6}  # short sentences: an untrained model decodes to the limit


def run(quick: bool = False) -> dict:
    """Train the recipe for 3 epochs with each vocabulary, one after the other, and read the curves."""
    from divekit.pipeline import train_model

    curves = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (full, small) in VOCABULARIES.items():
            options = {**QUICK_OPTIONS, **small} if quick else dict(full)
            out = Path(tmp) / label.replace(" ", "-")
            train_model("transformer", options=options, train_overrides={"epochs": 1 if quick else 3},
                        limit=400 if quick else None, out=out, progress=False, log=lambda *_: None)
            curves[label] = {**curve(out), "run": label}
    return stamp({"curves": curves}, quick=quick)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of `divekit train transformer`")
    parser.add_argument("--labels", nargs="+", help="one legend label per run (default: the directory names)")
    parser.add_argument("--plot", type=Path, help="where to write the PNG")
    args = parser.parse_args(argv)
    labels = args.labels or [run.name for run in args.runs]
    if len(labels) != len(args.runs):
        print("mt_vocab_curves: give one label per run", file=sys.stderr)
        return 2
    missing = [str(r) for r in args.runs if not (r / "metrics.jsonl").is_file() or not (r / "results.json").is_file()]
    if missing:
        print(f"mt_vocab_curves: not a finished run directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    curves = {label: curve(run) for label, run in zip(labels, args.runs)}
    if args.plot:
        from divekit.plots import line_plot

        line_plot(args.plot, {(label, "val"): (c["seconds"], c["val_bleu"]) for label, c in curves.items()},
                  xlabel="training seconds", ylabel="validation BLEU (greedy)",
                  title="Transformer, English to French: words or subwords")
    print(json.dumps(stamp({"curves": curves}, quick=False), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
