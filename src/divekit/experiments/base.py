"""What an experiment gets (a context) and gives back (a JSON-able result the report renders).

An experiment is a function ``run(ctx) -> dict`` registered with
:func:`divekit.registry.register_experiment`. Its result may hold:

    summary:  a paragraph of plain text: what was done and what it shows
    metrics:  {name: number} headline figures
    tables:   [{"title": str, "columns": [str], "rows": [[value]]}]
    figures:  [{"file": "name.png", "caption": str}]   (files written into ctx.out_dir)

:func:`run_experiment` adds the name, chapter, mode, seed, wall time, machine and date, and writes
``results.json`` into the experiment's directory, where the report and the docs read it.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from divekit import seeding
from divekit.errors import DivekitError
from divekit.registry import CHAPTERS, get_experiment
from divekit.runs import machine_info, now_iso, write_json


@dataclass
class ExperimentContext:
    """``quick``: the tour's small version (seconds to a minute); otherwise the full run for docs/results.md."""

    out_dir: Path
    quick: bool = True
    seed: int = 0
    progress: bool = True
    device: str = "auto"
    options: dict[str, str] = field(default_factory=dict)  # `-o KEY=VALUE`, keys checked against the spec

    def path(self, filename: str) -> Path:
        return self.out_dir / filename

    def pick(self, quick: Any, full: Any) -> Any:
        """The quick-mode or the full-mode value of a setting."""
        return quick if self.quick else full

    def whole_option(self, key: str, default: int, *, minimum: int = 1) -> int:
        """The ``-o KEY=N`` whole number given to this run, checked against ``minimum``; ``default`` without one."""
        text = self.options.get(key, str(default))
        try:
            value = int(text)
        except ValueError:
            raise DivekitError(f"{key} must be a whole number, got '{text}'") from None
        if value < minimum:
            raise DivekitError(f"{key} must be at least {minimum}, got {value}")
        return value


def run_experiment(name: str, out_dir: Path, *, quick: bool = True, seed: int = 0, progress: bool = True,
                   device: str = "auto", options: dict[str, str] | None = None) -> dict[str, Any]:
    """Run experiment ``name`` into ``out_dir`` and write its ``results.json``."""
    spec = get_experiment(name)
    options = dict(options or {})
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        accepted = ", ".join(f"{k} ({v})" for k, v in spec.options.items()) or "none"
        raise DivekitError(f"experiment '{name}' has no option {', '.join(unknown)}; it accepts: {accepted}")
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = ExperimentContext(out_dir=out_dir, quick=quick, seed=seed, progress=progress, device=device,
                            options=options)
    seeding.seed_global(seed, "init")  # what an experiment builds first draws from the init stream
    start = time.perf_counter()
    result = dict(spec.run(ctx))
    result.update(
        name=spec.name,
        title=spec.title,
        chapter=spec.chapter,
        chapter_title=CHAPTERS[spec.chapter],
        description=spec.description,
        modes=spec.modes,
        mode="quick" if quick else "full",
        seed=seed,
        options=options,
        wall_seconds=time.perf_counter() - start,
        machine=machine_info(),
        date=now_iso(),
    )
    for fig in result.get("figures", []):
        if not (out_dir / fig["file"]).is_file():
            raise RuntimeError(f"experiment '{name}' lists figure {fig['file']} but did not write it")
    write_json(out_dir / "results.json", result)
    return result


def measured_tour_seconds(mode: str) -> dict[str, Any] | None:
    """The recorded wall time of each experiment in ``mode`` ("quick" or "full"), or None.

    ``tour_seconds.json`` beside this module holds ``{mode: {"date", "machine", "experiments":
    {name: seconds}}}``, written from a measured tour (``benchmarks/tour_time.py``). A record with
    ``"whole_tour": false`` sums experiments timed one by one (``divekit run NAME --full``), and its
    ``"sources"`` say where each time comes from.
    """
    try:
        text = resources.files("divekit.experiments").joinpath("tour_seconds.json").read_text()
        return json.loads(text).get(mode)
    except (OSError, ValueError):
        return None


def describe_duration(seconds: float) -> str:
    """``about 9 min``, ``about 3.6 h``: a duration at the precision a reader plans with."""
    return f"about {seconds / 60:,.0f} min" if seconds < 90 * 60 else f"about {seconds / 3600:.1f} h"


def describe_tour_seconds(record: dict[str, Any], names: list[str] | None = None) -> str | None:
    """How long the tour (or the experiments ``names`` of it) took, and how that was measured.

    Experiments the record lacks count at the mean of those it has. None if the record is empty.
    """
    times = record.get("experiments") or {}
    if not times:
        return None
    names = list(times) if names is None else names
    known = [times[n] for n in names if n in times]
    total = sum(known) * len(names) / max(len(known), 1)
    where = f"{record.get('machine', 'an unrecorded machine')}"
    if record.get("whole_tour", True):
        return f"{describe_duration(total)} (measured {record.get('date', 'on an unrecorded date')} on {where})"
    return (f"{describe_duration(total)} on {where}: the sum of each experiment's full run timed on its own "
            f"(up to {record.get('date', 'an unrecorded date')}; docs/results.md lists the parts), not yet "
            f"run as one tour")
