"""Results on disk for report tests: two experiments in two chapters, written directly (no training)."""

from __future__ import annotations

from pathlib import Path

from divekit.plots import line_plot
from divekit.report.records import RecordedFigure, RecordedRun
from divekit.runs import machine_info, write_json

WIDE_COLUMNS = ["model", "parameters", "MFLOPs/image", "epochs", "precision", "train s", "images/s", "GFLOP/s",
                "of matmul peak", "best val acc.", "test acc.", "decode sent/s, no cache"]


def _result(name: str, chapter: str, **parts) -> dict:
    return {"name": name, "chapter": chapter, "title": f"Fixture {name}", "mode": "quick", "seed": 0,
            "options": {}, "wall_seconds": 1.5, "machine": machine_info(), "date": "2026-11-24T08:00:00+00:00",
            **parts}


def write_fixture_results(root: Path) -> int:
    """Write two experiments' ``results.json`` and PNGs under ``root``; return the number of figures."""
    cnn = root / "fixture-cnn"
    line_plot(cnn / "curve.png", {("ResNet-18", "train"): ([1, 2, 3], [0.6, 0.8, 0.9]),
                                  ("ResNet-18", "validation"): ([1, 2, 3], [0.55, 0.7, 0.8])},
              xlabel="epoch", ylabel="accuracy")
    rows = [[f"model with a long name {k}", 2_796_586 * k, 61.5, 12, "fp32", 434.63, 1519.4, 280.4, 0.63,
             0.937, 0.93271, 436.2] for k in range(1, 4)]
    write_json(cnn / "results.json", _result(
        "fixture-cnn", "cnn", summary="A wide table <b>escaped</b> and one figure.",
        metrics={"best_test_accuracy": 0.93271, "matmul_gflops_fp32": 446.0},
        tables=[{"title": "Twelve columns", "columns": WIDE_COLUMNS, "rows": rows}],
        figures=[{"file": "curve.png", "caption": "Accuracy per epoch."}]))
    text = root / "fixture-text"
    line_plot(text / "loss.png", {"scratch": ([1, 2, 3], [3.0, 2.0, 1.0]), "torch": ([1, 2, 3], [3.0, 2.0, 1.0])},
              xlabel="step", ylabel="loss", logy=True)
    sentences = [["a sentence long enough to wrap " * 3, "une phrase assez longue pour passer à la ligne " * 2]] * 3
    write_json(text / "results.json", _result(
        "fixture-text", "generalization", summary="Long text cells wrap inside their column.",
        tables=[{"title": "Translations", "columns": ["English", "French"], "rows": sentences}],
        figures=[{"file": "loss.png", "caption": "Loss per step."}]))
    return 2


FIXTURE_RECORDS = {"fixture-cnn": [RecordedRun(
    label="full run", command="divekit run fixture-cnn --full", machine="2-core CPU", date="2026-11-24",
    source="docs/results/cnn.md",
    figures=[RecordedFigure("best test accuracy", 0.9327, "93.27%", {"metric": "best_test_accuracy"}),
             RecordedFigure("share of the matmul peak", 0.63, "63%",
                            {"table": 0, "row": "model with a long name 1", "column": "of matmul peak"})])]}
