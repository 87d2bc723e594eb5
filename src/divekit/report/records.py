"""Recorded full-size runs: figures copied from ``docs/results/*.md`` so the report can show them beside quick ones.

One JSON file per experiment in ``docs/results/records/<experiment>.json``::

    {"experiment": "cnn-compare",
     "runs": [{"label": "full run",                       # what kind of run this was
               "command": "divekit run cnn-compare --full",
               "options": {},                             # the -o KEY=VALUE it ran with
               "machine": "2-core CPU",                   # or "not recorded"
               "date": "2026-11-24",                      # or "not recorded"
               "source": "docs/results/cnn.md",           # the page that states these figures
               "figures": [{"name": "ResNet-18 test accuracy",
                            "value": 0.9327,              # in the unit results.json uses (a fraction here)
                            "text": "93.27%",             # exactly as the page writes it
                            "quick": {"metric": "test_accuracy_resnet"}}]}]}

``quick`` says where the same quantity sits in a quick run's result: ``{"metric": KEY}`` or
``{"table": INDEX, "row": FIRST_CELL, "column": HEADER}``; it may be left out. Records hold
figures and provenance only, never checkpoints or run directories' contents.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NOT_RECORDED = "not recorded"


class RecordError(ValueError):
    """A record file that does not follow the format above."""


@dataclass(frozen=True)
class RecordedFigure:
    name: str
    value: float
    text: str
    quick: dict[str, Any] | None = None


@dataclass(frozen=True)
class RecordedRun:
    label: str
    command: str
    machine: str
    date: str
    source: str
    figures: list[RecordedFigure]
    options: dict[str, str] = field(default_factory=dict)


def default_records_dir() -> Path:
    """``docs/results/records`` of the checkout this package runs from (absent in a plain install)."""
    return Path(__file__).resolve().parents[3] / "docs" / "results" / "records"


def _need(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise RecordError(f"{where}: '{key}' must be a {names}")
    return value


def _figure(data: Any, where: str) -> RecordedFigure:
    if not isinstance(data, dict):
        raise RecordError(f"{where}: a figure must be an object")
    quick = data.get("quick")
    if quick is not None and not ("metric" in quick or {"table", "row", "column"} <= set(quick)):
        raise RecordError(f"{where}: 'quick' needs 'metric', or 'table', 'row' and 'column'")
    return RecordedFigure(_need(data, "name", str, where), float(_need(data, "value", (int, float), where)),
                          _need(data, "text", str, where), quick)


def _run(data: Any, where: str) -> RecordedRun:
    if not isinstance(data, dict):
        raise RecordError(f"{where}: a run must be an object")
    figures = _need(data, "figures", list, where)
    if not figures:
        raise RecordError(f"{where}: a run needs at least one figure")
    options = data.get("options", {})
    if not isinstance(options, dict):
        raise RecordError(f"{where}: 'options' must be an object")
    return RecordedRun(
        label=_need(data, "label", str, where), command=_need(data, "command", str, where),
        machine=_need(data, "machine", str, where), date=_need(data, "date", str, where),
        source=_need(data, "source", str, where),
        figures=[_figure(f, f"{where}, figure {k + 1}") for k, f in enumerate(figures)],
        options={str(k): str(v) for k, v in options.items()},
    )


def read_record(path: Path) -> tuple[str, list[RecordedRun]]:
    """The experiment name and its runs from one record file; :class:`RecordError` if malformed."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise RecordError(f"{path}: {e}") from e
    if not isinstance(data, dict):
        raise RecordError(f"{path}: a record file holds one JSON object")
    name = _need(data, "experiment", str, str(path))
    runs = _need(data, "runs", list, str(path))
    return name, [_run(r, f"{path}, run {k + 1}") for k, r in enumerate(runs)]


def load_records(directory: Path | None = None, *,
                 warn: Callable[[str], None] | None = None) -> dict[str, list[RecordedRun]]:
    """Every record under ``directory`` (default :func:`default_records_dir`), by experiment name.

    A malformed file raises :class:`RecordError`, or, given ``warn``, is reported to it and skipped
    (the report is still worth building without it).
    """
    directory = default_records_dir() if directory is None else Path(directory)
    records: dict[str, list[RecordedRun]] = {}
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            name, runs = read_record(path)
        except RecordError as e:
            if warn is None:
                raise
            warn(f"skipping record {e}")
            continue
        records.setdefault(name, []).extend(runs)
    return records


def quick_value(result: dict[str, Any], where: dict[str, Any] | None) -> tuple[str, Any] | None:
    """``(name, value)`` of the quick run's figure that ``where`` points at, or None if it has none."""
    if not where:
        return None
    if "metric" in where:
        key = where["metric"]
        metrics = result.get("metrics", {})
        return (key, metrics[key]) if key in metrics else None
    tables = result.get("tables", [])
    if not isinstance(where["table"], int) or not 0 <= where["table"] < len(tables):
        return None
    table = tables[where["table"]]
    if where["column"] not in table["columns"]:
        return None
    column = table["columns"].index(where["column"])
    for row in table["rows"]:
        if row and str(row[0]) == where["row"] and column < len(row):
            return where["column"], row[column]
    return None
