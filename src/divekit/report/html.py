"""Render experiment results as one self-contained HTML page (figures embedded as base64 PNG).

The page reads only ``results.json`` files and the PNGs beside them, so it can be rebuilt at any time
with ``divekit report DIR``; it has a section per chapter in curriculum order.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from divekit.registry import CHAPTERS
from divekit.runs import now_iso, read_json

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
color:#1d1d1f;line-height:1.45}
h1{margin-bottom:.2rem} h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.5rem}
h3{margin-top:1.8rem} .meta{color:#666;font-size:.85rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.88rem}
th,td{border:1px solid #ccc;padding:.25rem .55rem;text-align:right} th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
figure{margin:1rem 0} figure img{max-width:100%;border:1px solid #eee} figcaption{font-size:.85rem;color:#444}
nav ul{columns:2} .mode{display:inline-block;padding:0 .4rem;border-radius:.3rem;background:#eef;font-size:.8rem}
"""


def collect_results(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every ``results.json`` under ``root`` that came from an experiment, with its directory."""
    found = []
    for path in sorted(Path(root).rglob("results.json")):
        data = read_json(path)
        if isinstance(data, dict) and "chapter" in data and "name" in data:
            found.append((path.parent, data))
    return found


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.4g}"
    if value is None:
        return "–"
    return html.escape(str(value))


def _table(title: str | None, columns: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    caption = f"<h4>{html.escape(title)}</h4>" if title else ""
    return f"{caption}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(directory: Path, fig: dict[str, Any]) -> str:
    path = directory / fig["file"]
    if not path.is_file():
        return f"<p><em>missing figure {html.escape(fig['file'])}</em></p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = html.escape(fig.get("caption", ""))
    return f'<figure><img src="data:image/png;base64,{data}" alt="{caption}"><figcaption>{caption}</figcaption></figure>'


def _section(directory: Path, r: dict[str, Any]) -> str:
    parts = [
        f'<h3 id="{html.escape(r["name"])}">{html.escape(r.get("title", r["name"]))} '
        f'<span class="mode">{html.escape(r.get("mode", ""))}</span></h3>',
        f'<p class="meta">divekit run {html.escape(r["name"])}'
        f'{"" if r.get("mode") == "quick" else " --full"} · {r.get("wall_seconds", 0):.1f} s · '
        f'{html.escape(str(r.get("date", "")))}</p>',
    ]
    if r.get("summary"):
        parts.append(f"<p>{html.escape(r['summary'])}</p>")
    if r.get("metrics"):
        parts.append(_table(None, ["metric", "value"], [[k, v] for k, v in r["metrics"].items()]))
    for t in r.get("tables", []):
        parts.append(_table(t.get("title"), t["columns"], t["rows"]))
    for fig in r.get("figures", []):
        parts.append(_figure(directory, fig))
    return "\n".join(parts)


def build_report(results: list[tuple[Path, dict[str, Any]]], out: Path, *, title: str = "divekit report") -> Path:
    """Write the HTML report for ``results`` (from :func:`collect_results`) to ``out``."""
    by_chapter: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for directory, r in results:
        by_chapter.setdefault(r["chapter"], []).append((directory, r))
    machine = results[0][1].get("machine", {}) if results else {}
    nav, sections = [], []
    for key, chapter_title in CHAPTERS.items():
        if key not in by_chapter:
            continue
        nav.append(f'<li><a href="#ch-{key}">{html.escape(chapter_title)}</a></li>')
        body = "\n".join(_section(d, r) for d, r in sorted(by_chapter[key], key=lambda x: x[1]["name"]))
        sections.append(f'<h2 id="ch-{key}">{html.escape(chapter_title)}</h2>\n{body}')
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{CSS}</style></head>
<body><h1>{html.escape(title)}</h1>
<p class="meta">built {now_iso()} · {len(results)} experiments · {html.escape(str(machine.get("platform", "")))} ·
{machine.get("cpu_count", "?")} CPUs · torch {html.escape(str(machine.get("torch", "")))}</p>
<nav><ul>{''.join(nav)}</ul></nav>
{''.join(sections)}
</body></html>
"""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
