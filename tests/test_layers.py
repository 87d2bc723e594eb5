"""The package's floors: a module imports only from its own floor or those below it.

Read statically (every ``import`` and ``from ... import`` in ``src/divekit``, also those inside
functions), so the test needs no imports of its own and names the offending line.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "divekit"

# Lowest first. Each entry names top-level modules or packages of divekit.
FLOORS: list[set[str]] = [
    {"errors", "seeding", "shapes", "cpu", "registry", "plots", "argtypes", "__version__"},
    {"data"},  # datasets, vocabularies, tokenizers, batching
    {"nn"},  # blocks from scratch
    {"metrics", "decode", "flops"},  # scores, search, FLOP counts
    {"runs", "train"},  # run directories, the training loop, checkpoints: model-agnostic
    {"models"},  # one file per model (a fine-tuned model may start from a checkpoint)
    {"tasks"},  # data + loss + evaluation for a model family
    {"pipeline", "shift"},  # the glue that builds a task for a model; distribution-shift tools
    {"experiments"},
    {"report"},
    {"commands", "summary"},
    {"api", "cli", "__init__", "__main__"},
]
def _floor(name: str) -> int:
    for level, names in enumerate(FLOORS):
        if name in names:
            return level
    raise AssertionError(f"divekit.{name} has no floor in tests/test_layers.py: add it to FLOORS")


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level divekit module) of every import of divekit in ``tree``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] == "divekit":
                found += [(node.lineno, parts[1])] if len(parts) > 1 else [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[1]) for a in node.names
                      if a.name.startswith("divekit.")]
    return found


def test_no_module_imports_from_a_higher_floor():
    climbing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        own = rel.parts[0].removesuffix(".py")
        for line, target in _imported(ast.parse(path.read_text(), str(path))):
            if _floor(target) > _floor(own):
                climbing.append(f"{rel}:{line} imports divekit.{target}")
    assert not climbing, "imports from a higher floor:\n" + "\n".join(climbing)
