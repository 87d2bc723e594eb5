"""Experiments write results.json and PNGs; the tour and the report turn them into one HTML page."""

from __future__ import annotations

import base64
import json

import pytest

from divekit.cli import main
from divekit.experiments.base import run_experiment
from divekit.plots import line_plot
from divekit.registry import EXPERIMENTS, load_all, register_experiment
from divekit.report import build_report, collect_results

load_all()
if "tiny-sine" not in EXPERIMENTS:

    @register_experiment("tiny-sine", chapter="generalization", title="A tiny test experiment",
                         description="writes one table, one metric and one figure",
                         modes="Quick: five points; full: fifty.")
    def _tiny(ctx):
        n = ctx.pick(5, 50)
        xs = list(range(n))
        line_plot(ctx.path("curve.png"), {"squares": (xs, [x * x for x in xs])}, xlabel="x", ylabel="y")
        return {
            "summary": "Squares <b>escaped</b>.",
            "metrics": {"points": n},
            "tables": [{"title": "values", "columns": ["x", "x^2"], "rows": [[x, x * x] for x in xs]}],
            "figures": [{"file": "curve.png", "caption": "x squared"}],
        }

    @register_experiment("tiny-broken", chapter="shift", title="Lists a figure it never writes",
                         description="must be caught")
    def _broken(ctx):
        return {"figures": [{"file": "missing.png", "caption": "never written"}]}


def test_run_experiment_writes_results_json(tmp_path):
    result = run_experiment("tiny-sine", tmp_path / "tiny", quick=True)
    on_disk = json.loads((tmp_path / "tiny" / "results.json").read_text())
    assert on_disk["metrics"]["points"] == 5 == result["metrics"]["points"]
    assert on_disk["chapter"] == "generalization" and on_disk["mode"] == "quick"
    assert on_disk["machine"]["cpu_count"] >= 1 and on_disk["wall_seconds"] >= 0
    full = run_experiment("tiny-sine", tmp_path / "full", quick=False)
    assert full["metrics"]["points"] == 50 and full["mode"] == "full"


def test_every_experiment_says_what_quick_and_full_mode_show(tmp_path):
    real = [e for e in EXPERIMENTS.values() if not e.name.startswith("tiny-")]
    assert len(real) >= 16
    for spec in real:
        assert spec.modes.startswith("Quick: ") and "; full: " in spec.modes, spec.name
    run_experiment("tiny-sine", tmp_path / "tiny")
    page = build_report(collect_results(tmp_path), tmp_path / "report.html").read_text()
    assert '<p class="modes">Quick: five points; full: fifty.</p>' in page


def test_experiment_listing_a_missing_figure_fails(tmp_path):
    with pytest.raises(RuntimeError, match="missing.png"):
        run_experiment("tiny-broken", tmp_path / "b")


def test_report_embeds_figures_tables_and_escapes_text(tmp_path):
    run_experiment("tiny-sine", tmp_path / "tiny")
    out = build_report(collect_results(tmp_path), tmp_path / "report.html")
    page = out.read_text()
    png = base64.b64encode((tmp_path / "tiny" / "curve.png").read_bytes()).decode()
    assert png in page  # self-contained: the image bytes are inside the page
    assert '<td class="num">16</td>' in page and "Generalization" in page
    assert "&lt;b&gt;escaped&lt;/b&gt;" in page and "<b>escaped</b>" not in page


def test_tour_runs_selected_experiments_and_builds_the_report(tmp_path, capsys):
    assert main(["tour", "--only", "tiny-sine", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "tiny-sine" / "results.json").is_file()
    assert "A tiny test experiment" in (tmp_path / "report.html").read_text()
    assert main(["tour", "--only", "no-such-thing", "--out", str(tmp_path)]) == 2
    assert "unknown experiment" in capsys.readouterr().err
