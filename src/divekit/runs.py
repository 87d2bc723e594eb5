"""Run directories and result files: every run leaves ``results.json`` (config, metrics, wall time, machine)."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import re
import tempfile
from pathlib import Path
from typing import Any

import torch


def runs_root() -> Path:
    """``$DIVEKIT_RUNS`` or ``./runs``."""
    return Path(os.environ.get("DIVEKIT_RUNS", "runs"))


def new_run_dir(name: str, root: Path | None = None) -> Path:
    """A fresh directory ``root/<name>-<YYYYmmdd-HHMMSS>[-k]``."""
    root = root or runs_root()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = root / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{stamp}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    path.mkdir(parents=True)
    return path


def machine_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """What the numbers were measured on."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device) if device is not None else "cpu",
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def _clean(value: Any) -> Any:
    """JSON cannot hold NaN/Inf or tensors: turn them into null and plain numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, torch.Tensor):
        return _clean(value.tolist())
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, data: Any) -> Path:
    """Write JSON atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(_clean(data), f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


def set_aside_previous_tour(out: Path) -> Path | None:
    """A tour starts in an empty directory: an earlier tour there is moved to ``OUT.previous-<time>``
    beside it, kept whole (its runs would otherwise refuse the new ones). A directory holding
    anything else, or a run still in progress, is refused before any work."""
    from divekit.errors import DivekitError
    from divekit.train.rundir import run_in_progress

    if not out.is_dir() or not any(out.iterdir()):
        return None
    if not (out / "report.html").is_file() and not any(out.glob("*/results.json")):
        raise DivekitError(f"'{out}' is not empty and holds no earlier tour; choose another --out")
    busy = run_in_progress(out)
    if busy is not None:
        raise DivekitError(f"'{out}' holds a run in progress ({busy}); wait for it or choose another --out")
    stamp = now_iso().replace(":", "").replace("+0000", "").replace("-", "")[:15]
    target = out.with_name(f"{out.name}.previous-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = out.with_name(f"{out.name}.previous-{stamp}-{n}")
    try:
        out.rename(target)
    except OSError as e:
        raise DivekitError(f"cannot move the previous tour in '{out}' aside: {e.strerror}") from None
    return target
