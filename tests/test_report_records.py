"""Records of full-size runs: the loader, its errors, and agreement with the pages they are copied from."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from divekit.registry import EXPERIMENTS, load_all
from divekit.report.records import (
    NOT_RECORDED,
    RecordError,
    default_records_dir,
    load_records,
    quick_value,
    read_record,
)

ROOT = Path(__file__).resolve().parents[1]
_NUMBER = re.compile(r"[+\-]?\d[\d,]*(\.\d+)?(e[+\-]?\d+)?")


def _stated_value(text: str) -> float:
    """The number a record's text states, in the unit of results.json (a percentage becomes a fraction)."""
    match = _NUMBER.search(text)
    assert match, f"no number in {text!r}"
    value = float(match.group().replace(",", ""))
    rest = text[match.end():].lstrip()
    return value / 100 if rest.startswith(("%", "point", "pts")) else value


COMMITTED = load_records()
RUNS = [(name, run) for name, runs in sorted(COMMITTED.items()) for run in runs]


def test_records_exist_for_the_experiments_with_full_runs():
    load_all()
    assert default_records_dir() == ROOT / "docs" / "results" / "records"
    assert {"cnn-compare", "attention", "char-lm", "label-shift"} <= set(COMMITTED)
    assert set(COMMITTED) <= set(EXPERIMENTS), "a record names an experiment that does not exist"


@pytest.mark.parametrize(("name", "run"), RUNS, ids=[f"{n}:{r.label}" for n, r in RUNS])
def test_record_agrees_with_the_page_it_cites(name, run):
    page = (ROOT / run.source).read_text(encoding="utf-8")
    assert run.command in page, f"{name}: command not in {run.source}"
    for stated in (run.date, run.machine):
        assert stated == NOT_RECORDED or stated in page, f"{name}: {stated!r} not in {run.source}"
    for fig in run.figures:
        assert fig.text in page, f"{name}: {fig.text!r} ({fig.name}) not in {run.source}"
        assert _stated_value(fig.text) == pytest.approx(fig.value, rel=1e-9), f"{name}: {fig.name}"


def test_stated_value_reads_units():
    assert _stated_value("93.27%") == pytest.approx(0.9327)
    assert _stated_value("4.41 points") == pytest.approx(0.0441)
    assert _stated_value("1,054 s") == 1054
    assert _stated_value("1.9e-5") == pytest.approx(1.9e-5)


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "x.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


GOOD = {"experiment": "tiny", "runs": [{"label": "full run", "command": "divekit run tiny --full",
                                        "machine": NOT_RECORDED, "date": "2026-11-24", "source": "docs/x.md",
                                        "figures": [{"name": "points", "value": 5, "text": "5",
                                                     "quick": {"metric": "points"}}]}]}


def test_read_record_round_trip(tmp_path):
    name, runs = read_record(_write(tmp_path, GOOD))
    assert name == "tiny" and runs[0].figures[0].value == 5.0 and runs[0].options == {}
    assert load_records(tmp_path) == {"tiny": runs}
    assert load_records(tmp_path / "absent") == {}


@pytest.mark.parametrize("bad", [
    "{not json", "[]", {"runs": []}, {"experiment": "tiny", "runs": [{"label": "x"}]},
    {**GOOD, "runs": [{**GOOD["runs"][0], "figures": []}]},
    {**GOOD, "runs": [{**GOOD["runs"][0], "figures": [{"name": "p", "value": "5", "text": "5"}]}]},
    {**GOOD, "runs": [{**GOOD["runs"][0], "figures": [{"name": "p", "value": 5, "text": "5", "quick": {"row": 1}}]}]},
])
def test_malformed_record_is_an_error_naming_the_file(tmp_path, bad):
    path = _write(tmp_path, bad)
    with pytest.raises(RecordError, match="x.json"):
        read_record(path)
    warnings = []
    assert load_records(tmp_path, warn=warnings.append) == {}
    assert len(warnings) == 1 and "x.json" in warnings[0]


def test_quick_value_finds_metrics_and_table_cells():
    result = {"metrics": {"acc": 0.5},
              "tables": [{"columns": ["model", "test acc."], "rows": [["a", 0.1], ["b", 0.2]]}]}
    assert quick_value(result, {"metric": "acc"}) == ("acc", 0.5)
    assert quick_value(result, {"table": 0, "row": "b", "column": "test acc."}) == ("test acc.", 0.2)
    assert quick_value(result, {"metric": "nope"}) is None
    assert quick_value(result, {"table": 3, "row": "b", "column": "test acc."}) is None
    assert quick_value(result, {"table": 0, "row": "c", "column": "test acc."}) is None
    assert quick_value(result, None) is None
