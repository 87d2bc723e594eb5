"""Render experiment results as one self-contained HTML page (figures embedded as base64 PNG).

The page reads only ``results.json`` files, the PNGs beside them and the committed records of
full-size runs, so it can be rebuilt at any time with ``divekit report DIR``. It has a section per
chapter in curriculum order, built from the Jinja2 template in ``templates/``; numbers go through
:mod:`divekit.report.formatting`, so every table reads in the same units.
"""

from __future__ import annotations

import base64
import json
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2

from divekit.registry import CHAPTERS
from divekit.report.chapters import INTROS, PARTS
from divekit.report.formatting import (
    Cell,
    Table,
    format_metrics,
    format_table,
    format_value,
)
from divekit.report.records import NOT_RECORDED, RecordedRun, load_records, quick_value
from divekit.runs import now_iso

NOT_MEASURED = "not yet measured"
_ENV = jinja2.Environment(loader=jinja2.PackageLoader("divekit.report", "templates"),
                          autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def _warn(message: str) -> None:
    print(f"divekit report: {message}", file=sys.stderr)


def collect_results(root: Path, *, warn: Callable[[str], None] = _warn) -> list[tuple[Path, dict[str, Any]]]:
    """Every experiment ``results.json`` under ``root``, with its directory.

    A file that is not one (unreadable, malformed, empty, a JSON array, an unknown chapter) is
    skipped with one warning naming it, so one bad file never costs the page. The results of the
    training runs an experiment makes for itself (a model's run directory) are skipped silently.
    """
    found = []
    for path in sorted(Path(root).rglob("results.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            data = None
        if _is_experiment_result(data):
            found.append((path.parent, data))
        elif not _is_training_result(data):
            warn(f"skipping {path}: not an experiment result")
    return found


def _is_experiment_result(data: Any) -> bool:
    return (isinstance(data, dict) and isinstance(data.get("name"), str)
            and isinstance(data.get("chapter"), str) and data["chapter"] in CHAPTERS)


def _is_training_result(data: Any) -> bool:
    """What ``divekit train`` writes: a model's name and its test figures, no chapter."""
    return isinstance(data, dict) and "model" in data and "chapter" not in data


def _png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's header (so the page reserves the space before decoding)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return None
    return struct.unpack(">II", data[16:24])


def _figure(directory: Path, fig: dict[str, Any]) -> dict[str, Any]:
    path = directory / str(fig.get("file", ""))
    out = {"file": str(fig.get("file", "")), "caption": str(fig.get("caption", "")), "src": None,
           "width": None, "height": None}
    if path.is_file():
        data = path.read_bytes()
        out["src"] = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        out["width"], out["height"] = _png_size(data) or (None, None)
    return out


def _provenance(run: RecordedRun) -> str:
    date = f"recorded {run.date}" if run.date != NOT_RECORDED else "recorded (date not recorded)"
    machine = f"on {run.machine}" if run.machine != NOT_RECORDED else "(machine not recorded)"
    return f"{date} {machine}"


def _record(run: RecordedRun, result: dict[str, Any]) -> dict[str, Any]:
    """One recorded run beside the figures of this page's run of the same experiment."""
    mode = result.get("mode", "quick")
    rows = []
    for fig in run.figures:
        found = quick_value(result, fig.quick)
        here = format_value(*found) if found else Cell("–", True)
        rows.append([Cell(fig.name, False), here, Cell(fig.text, True)])
    columns = [Cell("figure", False), Cell(f"this page ({mode})", True), Cell(run.label, True)]
    return {"label": run.label[:1].upper() + run.label[1:], "provenance": _provenance(run),
            "command": run.command, "source": run.source, "table": Table(None, columns, rows)}


def _when(stamp: Any) -> str:
    """``2026-11-24T08:13:44+00:00`` -> ``2026-11-24 08:13 UTC``; anything else unchanged."""
    text = str(stamp or "")
    if len(text) >= 16 and text[10] == "T" and text.endswith("+00:00"):
        return f"{text[:10]} {text[11:16]} UTC"
    return text or "date not recorded"


def _command(r: dict[str, Any]) -> str:
    options = "".join(f" -o {k}={v}" for k, v in (r.get("options") or {}).items())
    return f"divekit run {r['name']}{'' if r.get('mode') == 'quick' else ' --full'}{options}"


def _section(directory: Path, r: dict[str, Any], records: list[RecordedRun]) -> dict[str, Any]:
    seconds = r.get("wall_seconds")
    return {
        "name": r["name"], "title": r.get("title", r["name"]), "mode": r.get("mode", ""), "part": PARTS.get(r["name"]),
        "command": _command(r), "date": _when(r.get("date")),
        "seconds": f"{seconds:,.1f} s" if isinstance(seconds, (int, float)) else "time not recorded",
        "summary": r.get("summary", ""), "modes": r.get("modes", ""),
        "tables": [format_table(t.get("title"), t.get("columns", []), t.get("rows", []))
                   for t in r.get("tables", [])],
        "records": [_record(run, r) for run in records],
        "figures": [_figure(directory, f) for f in r.get("figures", [])],
        "metrics": format_metrics(r.get("metrics") or {}),
    }


def _machine(results: list[tuple[Path, dict[str, Any]]]) -> str:
    m = results[0][1].get("machine", {}) if results else {}
    parts = [str(m.get("platform", "")), f"{m['cpu_count']} CPUs" if m.get("cpu_count") else "",
             str(m.get("gpu", "")), f"torch {m['torch']}" if m.get("torch") else ""]
    return " · ".join(p for p in parts if p) or "machine not recorded"


def _mode(results: list[tuple[Path, dict[str, Any]]]) -> str:
    modes = {r.get("mode") for _, r in results}
    return modes.pop() if len(modes) == 1 and modes <= {"quick", "full"} else "mixed"


def render_report(results: list[tuple[Path, dict[str, Any]]], *, title: str = "divekit report",
                  records: dict[str, list[RecordedRun]] | None = None,
                  full_tour_duration: str | None = None) -> str:
    """The page as a string; ``full_tour_duration`` is a measured time such as "52 min", else "not yet measured"."""
    records = {} if records is None else records
    by_chapter: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for directory, r in results:
        by_chapter.setdefault(r["chapter"], []).append((directory, r))
    chapters, sections = [], []
    for key, chapter_title in CHAPTERS.items():
        if key not in by_chapter:
            continue
        found = [_section(d, r, records.get(r["name"], []))
                 for d, r in sorted(by_chapter[key], key=lambda x: x[1]["name"])]
        sections.extend(found)
        chapters.append({"key": key, "title": chapter_title, "intro": INTROS.get(key), "sections": found})
    return _ENV.get_template("report.html.j2").render(
        title=title, chapters=chapters, sections=sections, mode=_mode(results), built=_when(now_iso()),
        machine=_machine(results), full_tour_duration=full_tour_duration or NOT_MEASURED,
    )


def measured_full_tour() -> str | None:
    """How long ``divekit tour --full`` takes as measured, or None if it never was."""
    from divekit.experiments.base import describe_tour_seconds, measured_tour_seconds

    record = measured_tour_seconds("full")
    return describe_tour_seconds(record) if record else None


def build_report(results: list[tuple[Path, dict[str, Any]]], out: Path, *, title: str = "divekit report",
                 records: dict[str, list[RecordedRun]] | None = None,
                 full_tour_duration: str | None = None) -> Path:
    """Write the HTML report for ``results`` (from :func:`collect_results`) to ``out``.

    ``records`` defaults to the committed records of full-size runs (a malformed one is skipped with
    a warning); ``full_tour_duration`` to the measured one (:func:`measured_full_tour`).
    """
    if records is None:
        records = load_records(warn=_warn)
    if full_tour_duration is None:
        full_tour_duration = measured_full_tour()
    page = render_report(results, title=title, records=records, full_tour_duration=full_tour_duration)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
