"""The README's Python API example runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO, needs_fashion_mnist


def readme_api_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## The Python API"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's API section has no python block"
    return match.group(1)


@needs_fashion_mnist
def test_the_readme_api_example_runs(tmp_path: Path):
    env = {**os.environ, "DIVEKIT_RUNS": str(tmp_path / "runs")}
    r = subprocess.run([sys.executable, "-c", readme_api_block()], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert "gru-lm" in lines[0]
    assert "softmax-regression 1" in lines  # the loaded run's model and epoch
    assert any(line.startswith("the time traveller") for line in lines)
    assert any(line.startswith("[") and line.count("'") >= 4 for line in lines[1:])  # two translations
