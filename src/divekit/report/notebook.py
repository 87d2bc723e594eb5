"""An experiment's result shown in a Jupyter notebook: summary, tables and its first figure."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any


def show_result(result: dict[str, Any], out: Path) -> None:
    """Print the summary and wall time, display each table as plain HTML and the first figure in ``out``."""
    from IPython.display import HTML, Image, display  # the notebooks extra; divekit itself never needs it

    def cell(v: Any) -> str:
        return escape(f"{v:.4g}" if isinstance(v, float) else str(v))

    print(result["summary"], f"\n(ran in {result['wall_seconds']:.0f} s)")
    for table in result.get("tables", []):
        head = "".join(f"<th>{cell(c)}</th>" for c in table["columns"])
        body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in table["rows"])
        display(HTML(f"<h4>{cell(table.get('title', ''))}</h4><table><tr>{head}</tr>{body}</table>"))
    if result.get("figures"):
        display(Image(filename=str(Path(out) / result["figures"][0]["file"])))
