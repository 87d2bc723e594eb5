"""The page the template builds: layout hooks, chapter introductions, records, and bad input on disk."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from report_fixtures import FIXTURE_RECORDS, write_fixture_results

from divekit.cli import main
from divekit.registry import CHAPTERS
from divekit.report import build_report, collect_results
from divekit.report.chapters import INTROS
from divekit.report.html import NOT_MEASURED, measured_full_tour, render_report


@pytest.fixture
def page(tmp_path) -> str:
    write_fixture_results(tmp_path)
    return render_report(collect_results(tmp_path), records=FIXTURE_RECORDS)


def test_page_is_self_contained_and_sized_for_phones(page):
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page), "the page must not fetch anything"
    assert page.count('src="data:image/png;base64,') == 2
    # Every table sits in its own horizontally scrolling box, so a wide one never widens the page.
    assert page.count("<table>") == page.count('<div class="scroll"><table>') >= 3


def test_numbers_right_aligned_text_left(page):
    assert '<td class="num">2,796,586</td>' in page and '<td class="num">93.27%</td>' in page
    assert '<td class="num">63%</td>' in page and '<th class="num">of matmul peak</th>' in page
    assert "<td>model with a long name 1</td>" in page and "<td>fp32</td>" in page
    assert "&lt;b&gt;escaped&lt;/b&gt;" in page and "<b>escaped</b>" not in page


def test_recorded_run_sits_beside_the_quick_figures(page):
    assert "<strong>Full run</strong>, recorded 2026-11-24 on 2-core CPU" in page
    assert "<code>divekit run fixture-cnn --full</code>" in page
    record = page[page.index('<div class="record">'):]
    record = record[:record.index("Source:")]
    assert re.search(r'best test accuracy</td><td class="num">93\.27%</td><td class="num">93\.27%', record)
    assert re.search(r'share of the matmul peak</td><td class="num">63%</td><td class="num">63%', record)


def test_full_tour_duration_is_never_invented(tmp_path):
    write_fixture_results(tmp_path)
    results = collect_results(tmp_path)
    assert f"(<code>divekit tour --full</code>): {NOT_MEASURED}." in render_report(results, records={})
    measured = render_report(results, records={}, full_tour_duration="52 min")
    assert "(<code>divekit tour --full</code>): 52 min." in measured and NOT_MEASURED not in measured


def test_every_chapter_opens_with_an_introduction_naming_real_modules(page):
    assert set(INTROS) == set(CHAPTERS)
    for key, intro in INTROS.items():
        assert intro.idea and intro.equation and intro.modules, key
        for module in intro.modules:
            assert importlib.util.find_spec(module) is not None, f"{key}: {module} does not exist"
    assert INTROS["cnn"].equation in page and INTROS["generalization"].equation in page
    assert INTROS["attention"].equation not in page  # only chapters with results are shown


def test_chapter_parts_open_before_their_experiment_and_name_real_modules():
    from divekit.registry import EXPERIMENTS, load_all
    from divekit.report.chapters import PARTS

    load_all()
    for name, part in PARTS.items():
        assert name in EXPERIMENTS, name
        for module in part.modules:
            assert importlib.util.find_spec(module) is not None, f"{name}: {module} does not exist"
    result = {"name": "bert-labels", "title": "t", "chapter": "attention", "mode": "quick", "summary": "s"}
    page = render_report([(Path("."), result)], records={})
    part = PARTS["bert-labels"]
    assert page.index(part.title) < page.index('<article id="bert-labels">')
    assert part.equation in page


def test_quick_tour_page_explains_itself(page):
    assert "This page is the quick tour" in page and "docs/results/" in page


@pytest.mark.parametrize(("content", "label"), [
    ("{broken", "malformed"), ("", "empty"), ("[1, 2]", "array"), ("{}", "empty object"),
    ('{"name": "x", "chapter": "no-such-chapter"}', "unknown chapter"),
])
def test_report_command_skips_a_bad_results_file_with_one_warning(tmp_path, capsys, content, label):
    write_fixture_results(tmp_path)
    bad = tmp_path / "bad" / "results.json"
    bad.parent.mkdir()
    bad.write_text(content)
    assert main(["report", str(tmp_path)]) == 0, label
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.strip()]
    assert len(warnings) == 1 and str(bad) in warnings[0] and "not an experiment result" in warnings[0]
    page = (tmp_path / "report.html").read_text()
    assert "Fixture fixture-cnn" in page and "Fixture fixture-text" in page


def test_training_run_results_are_skipped_silently(tmp_path, capsys):
    write_fixture_results(tmp_path)
    (tmp_path / "fixture-cnn" / "resnet").mkdir()
    (tmp_path / "fixture-cnn" / "resnet" / "results.json").write_text(json.dumps({"model": "resnet", "test": {}}))
    assert len(collect_results(tmp_path)) == 2
    assert capsys.readouterr().err == ""


def test_measured_full_tour_duration_comes_from_the_recorded_tour(monkeypatch):
    record = {"date": "2026-11-30", "machine": "2-core CPU", "experiments": {"a": 1800.0, "b": 1320.0}}
    monkeypatch.setattr("divekit.experiments.base.measured_tour_seconds", lambda mode: record if mode == "full" else None)
    assert measured_full_tour() == "about 52 min (measured 2026-11-30 on 2-core CPU)"
    monkeypatch.setattr("divekit.experiments.base.measured_tour_seconds", lambda mode: None)
    assert measured_full_tour() is None


def test_build_report_reads_the_committed_records(tmp_path):
    write_fixture_results(tmp_path)
    out = build_report(collect_results(tmp_path), tmp_path / "r.html")
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_a_full_tour_summed_from_its_parts_says_so(monkeypatch):
    record = {"date": "2026-12-01", "machine": "2-core CPU", "whole_tour": False,
              "experiments": {"a": 7200.0, "b": 5760.0}}
    monkeypatch.setattr("divekit.experiments.base.measured_tour_seconds", lambda mode: record if mode == "full" else None)
    described = measured_full_tour()
    assert described.startswith("about 3.6 h on 2-core CPU: the sum of each experiment's full run timed on its own")
    assert "not yet run as one tour" in described
