"""How numbers read in the report: one layer that picks a unit from a column's or a metric's name.

Experiments store raw values (accuracy as a fraction, rates as floats); the page shows them in the
unit of the quantity, the same way everywhere: accuracy ``93.27%``, a share of a peak rate ``63%``,
BLEU and perplexity with two decimals, rates and counts as integers with thousands separators,
seconds with one decimal. Text stays as it is. Cells that hold numbers (or pre-formatted numbers
such as ``"81.3% ± 0.2"``) are marked numeric so the page right-aligns them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

MISSING = "–"  # shown for None and non-finite values (JSON stores NaN and Inf as null)


@dataclass(frozen=True)
class Cell:
    text: str
    numeric: bool  # right-aligned when true


@dataclass(frozen=True)
class Table:
    title: str | None
    columns: list[Cell]  # headers, aligned like the column under them
    rows: list[list[Cell]]


def _percent(decimals: int) -> Callable[[float], str]:
    return lambda v: f"{100 * v:.{decimals}f}%"


def _points(v: float) -> str:
    return f"{100 * v:.2f} pts"


def _fixed(decimals: int) -> Callable[[float], str]:
    return lambda v: f"{v:,.{decimals}f}"


def _count(v: float) -> str:
    return f"{v:,}" if isinstance(v, int) else f"{v:,.1f}"


def _general(v: float) -> str:
    """Four significant digits; scientific notation only for very small or very large magnitudes."""
    if isinstance(v, int):
        return f"{v:,}"
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.2e}"
    return f"{v:.4g}"


# (pattern on the lower-cased name with '_' read as ' ', renderer). The first match wins, so the
# more specific quantities (a share of a peak, an accuracy gap) come before the general ones.
UNIT_RULES: list[tuple[re.Pattern[str], Callable[[float], str]]] = [
    (re.compile(r"of (matmul )?(peak|ceiling)|\bshare\b"), _percent(0)),
    (re.compile(r"\bgap\b|\bgain\b|accuracy diff"), _points),
    (re.compile(r"\bacc\b|\bacc\.|accuracy|\brecall\b"), _percent(2)),
    (re.compile(r"\bbleu\b|perplexity|\bppl\b|bits/char"), _fixed(2)),
    (re.compile(r"/s\b|\bgflops\b|per second|\bper s\b"), _fixed(0)),
    (re.compile(r"(^|\s)s$|\bseconds\b|\btrain s\b"), _fixed(1)),
    (re.compile(r"mflops"), _fixed(1)),
    (re.compile(r"parameters|examples|images|pairs|epochs|\bstep\b|\bn\b"), _count),
]

_NUMERIC_TEXT = re.compile(
    r"^[+\-−]?\d[\d,.]*(e[+\-]?\d+)?%?(\s*(±|of|/)\s*[\d,.]+%?)?(\s*pts)?$"
)


def unit_for(name: str) -> Callable[[float], str]:
    """The renderer for numbers under ``name`` (a column header or a metric key)."""
    key = name.lower().replace("_", " ")
    for pattern, render in UNIT_RULES:
        if pattern.search(key):
            return render
    return _general


def format_value(name: str, value: Any) -> Cell:
    """``value`` as it should read under ``name``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return Cell(MISSING, True)
    if isinstance(value, bool):
        return Cell("yes" if value else "no", False)
    if isinstance(value, (int, float)):
        return Cell(unit_for(name)(value), True)
    text = str(value)
    if text.strip() in {"", "-", MISSING}:  # experiments write "-" where a figure does not apply
        return Cell(MISSING, True)
    return Cell(text, bool(_NUMERIC_TEXT.match(text.strip())))


# Words in metric keys that read better spelled out or capitalised.
_WORDS = {
    "acc": "accuracy", "val": "validation", "bleu": "BLEU", "gflops": "GFLOP/s", "mse": "MSE",
    "bn": "batch norm", "lstm": "LSTM", "gru": "GRU", "rnn": "RNN", "bigru": "bidirectional GRU",
    "em": "EM", "bbse": "BBSE", "elmo": "ELMo", "lm": "LM", "bilm": "biLM", "fp32": "fp32",
    "bf16": "bf16", "lstsq": "least-squares", "diff": "difference", "rel": "relative", "max": "largest",
}


def humanise(key: str) -> str:
    """``best_test_accuracy`` -> ``Best test accuracy``; ``depth10`` -> ``depth 10``."""
    words = []
    for word in re.split(r"[_\s]+", key.strip()):
        known = _WORDS.get(word.lower())
        words.append(known or re.sub(r"^([a-z]+)(\d+)$", r"\1 \2", word))  # depth10 -> depth 10
    text = " ".join(w for w in words if w)
    return text[:1].upper() + text[1:]


def format_metrics(metrics: dict[str, Any]) -> list[tuple[str, Cell]]:
    """Headline figures as (readable name, formatted value), in the experiment's order."""
    return [(humanise(k), format_value(k, v)) for k, v in metrics.items()]


def format_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    """Format every cell by its column's name; the first column holds row labels and stays left."""
    body = [[format_value(str(columns[j]) if j < len(columns) else "", v) for j, v in enumerate(row)]
            for row in rows]
    body = [[Cell(c.text, False) if j == 0 else c for j, c in enumerate(row)] for row in body]
    numeric = [j > 0 and any(row[j].numeric for row in body if j < len(row) and row[j].text != MISSING)
               for j in range(len(columns))]
    return Table(title, [Cell(str(c), numeric[j]) for j, c in enumerate(columns)], body)
