"""The notebooks under notebooks/: one per chapter, and each runs top to bottom in a fresh kernel.

Running them needs the notebooks extra (``pip install -e ".[notebooks]"``); without jupytext and
nbclient those tests are skipped, saying so. CI installs the extra, so there they always run.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import pytest

from divekit.registry import CHAPTERS
from divekit.report.chapters import INTROS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))


def _missing(modules: tuple[str, ...]) -> list[str]:
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


MISSING = _missing(("jupytext", "nbclient", "nbformat", "ipykernel"))
CELL_TIMEOUT_S = 300

needs_extra = pytest.mark.skipif(
    bool(MISSING), reason=f"{', '.join(MISSING)} not installed: pip install -e \".[notebooks]\" to run the notebooks")


def test_every_chapter_links_a_notebook_that_exists():
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"
    linked = {INTROS[key].notebook for key in CHAPTERS}
    assert linked == {str(p.relative_to(ROOT)) for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_states_its_measured_time(path):
    first_cell = path.read_text().split("# %%", 2)[1]
    assert re.search(r"Runs top to bottom in about \d+ s", first_cell), f"{path.name}: no measured run time"


@pytest.mark.notebooks
@needs_extra
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    # The kernel inherits this environment (conftest points runs and caches into tmp_path): it imports
    # this checkout's divekit, and runs in a directory of its own, which the notebook must leave empty.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p))
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    nb = jupytext.read(path)
    nb.cells.append(nbformat.v4.new_code_cell("import divekit; print(divekit.__file__)"))
    NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()  # raises on a cell error

    where = "".join(o.get("text", "") for o in nb.cells[-1].outputs).strip()
    assert Path(where).resolve().is_relative_to(ROOT / "src"), f"the kernel imported divekit from {where}"
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, f"{path.name} shows no plot"
    written = sorted(p.name for p in workdir.iterdir())
    assert not written, f"{path.name} wrote into its working directory: {written}"


def test_report_chapters_link_their_notebooks(tmp_path):
    from report_fixtures import FIXTURE_RECORDS, write_fixture_results

    from divekit.report import collect_results
    from divekit.report.html import render_report

    write_fixture_results(tmp_path)
    page = render_report(collect_results(tmp_path), records=FIXTURE_RECORDS)
    assert f"Notebook: <code>{INTROS['cnn'].notebook}</code>" in page
    assert INTROS["attention"].notebook not in page  # only chapters with results are shown
