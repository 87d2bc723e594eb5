"""The Python and torch ranges declared in pyproject.toml are the ones the code needs.

Only one torch (2.13.0, the local CPU build) and one Python (3.11) can be installed where this suite
runs, so the lower bounds were found by reading: every torch API that divekit calls and that is not
ancient is listed below with the first release that has it and where that was checked (release notes,
the pull request that added it, or a downstream project gating on it). The newest of those found in
the code is the declared minimum, and a test keeps the two equal: new code that calls a later API
(``torch.nn.attention``, ``nn.RMSNorm`` ...) fails here until pyproject.toml says so.

Older APIs divekit also relies on and that every 2.x release has: ``torch.load(weights_only=...)``
(1.13), ``torch.autocast("cpu", dtype=torch.bfloat16)`` (1.10), ``torch.frombuffer`` (1.10),
``torch.backends.mkldnn.is_available``; the private oneDNN ops of ``divekit.nn.rnn_kernels`` are
looked up at import and the kernels fall back to ``F.linear`` where a build lacks them.
"""

from __future__ import annotations

import inspect
import platform
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Needs:
    """A use in the code (``pattern``) that needs ``since`` or newer; ``present`` checks the installed one."""

    what: str
    pattern: str
    since: str
    source: str
    present: Callable[[], bool] = lambda: True


def _has(path: str) -> bool:
    """Whether the dotted ``path`` (``torch.utils.flop_counter.FlopCounterMode``) resolves."""
    import importlib

    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            return False
        return True
    return False


TORCH_NEEDS = [
    Needs("torch.utils.flop_counter.FlopCounterMode", r"torch\.utils\.flop_counter|FlopCounterMode", "2.1",
          "added by pytorch/pytorch#95751 after the 2.0 branch cut; PyTorch Lightning gates its FLOP counter "
          "on torch >= 2.1", lambda: _has("torch.utils.flop_counter.FlopCounterMode.get_total_flops")),
    Needs("typed __init__ overloads of nn.RNN/GRU/LSTM (read by tests/test_nn_dropin.py)", r"get_overloads\(",
          "2.1", "pytorch/pytorch#106222, cherry-picked into release 2.1 as #108385",
          lambda: all(__import__("typing").get_overloads(c.__init__) for c in (torch.nn.RNN, torch.nn.GRU))),
    Needs("torch.func.functional_call(..., strict=)", r"torch\.func\.functional_call", "2.0",
          "functorch became torch.func in 2.0 (the torch.func docs and migration guide)",
          lambda: "strict" in inspect.signature(torch.func.functional_call).parameters),
    Needs("torch.compile", r"torch\.compile\(", "2.0", "the 2.0 release", lambda: _has("torch.compile")),
    Needs("F.scaled_dot_product_attention", r"F\.scaled_dot_product_attention|functional\.scaled_dot_product_attention",
          "2.0", "the 2.0 release", lambda: _has("torch.nn.functional.scaled_dot_product_attention")),
    Needs("torch.nn.attention (sdpa_kernel)", r"torch\.nn\.attention|from torch\.nn import attention", "2.3",
          "sdpa_kernel replaced torch.backends.cuda.sdp_kernel in 2.3", lambda: _has("torch.nn.attention.sdpa_kernel")),
    Needs("torch.amp.GradScaler", r"torch\.amp\.GradScaler", "2.3", "moved from torch.cuda.amp in 2.3",
          lambda: _has("torch.amp.GradScaler")),
    Needs("nn.RMSNorm / F.rms_norm", r"RMSNorm|rms_norm\(", "2.4", "the 2.4 release", lambda: _has("torch.nn.RMSNorm")),
    Needs("nn.Buffer", r"nn\.Buffer\(", "2.5", "the 2.5 release", lambda: _has("torch.nn.Buffer")),
    Needs("flex_attention", r"flex_attention", "2.5", "the 2.5 release",
          lambda: _has("torch.nn.attention.flex_attention")),
    Needs("torch.accelerator", r"torch\.accelerator\b", "2.6", "the 2.6 release", lambda: _has("torch.accelerator")),
]

PYTHON_NEEDS = [
    Needs("tomllib", r"\bimport tomllib\b", "3.11", "new in Python 3.11"),
    Needs("typing.get_overloads", r"get_overloads\(", "3.11", "new in Python 3.11"),
    Needs("datetime.UTC", r"datetime\.UTC\b|from datetime import [^\n]*\bUTC\b", "3.11", "new in Python 3.11"),
    Needs("zip(..., strict=)", r"zip\([^\n]*strict=", "3.10", "PEP 618, Python 3.10"),
    Needs("X | Y unions evaluated at runtime", r"^\w+ = [\w\[\], .]+ \| [\w\[\], .]+$", "3.10", "PEP 604, Python 3.10"),
]


def _code() -> str:
    """Every Python file of the package, benchmarks and tests except this one (its table names the patterns)."""
    files = [p for d in ("src", "benchmarks", "tests") for p in sorted((ROOT / d).rglob("*.py"))]
    this = Path(__file__).resolve()
    return "\n".join(p.read_text(encoding="utf-8") for p in files if p.resolve() != this)


def _found(needs: list[Needs], code: str) -> list[Needs]:
    return [n for n in needs if re.search(n.pattern, code, flags=re.MULTILINE)]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _torch_specifier() -> SpecifierSet:
    requirements = [Requirement(r) for r in _pyproject()["project"]["dependencies"]]
    (torch_req,) = [r for r in requirements if r.name == "torch"]
    return torch_req.specifier


def _lower_bound(specifier: SpecifierSet) -> Version:
    (bound,) = [Version(s.version) for s in specifier if s.operator == ">="]
    return bound


def _installed_torch() -> Version:
    return Version(torch.__version__.split("+")[0])  # "2.13.0+cpu" -> 2.13.0


def test_declared_torch_minimum_is_the_newest_api_the_code_calls() -> None:
    found = _found(TORCH_NEEDS, _code())
    assert found, "the scan found no versioned torch API at all: the patterns or the paths are wrong"
    needed = max(Version(n.since) for n in found)
    declared = _lower_bound(_torch_specifier())
    newest = [n.what for n in found if Version(n.since) == needed]
    assert declared == needed, f"pyproject.toml declares torch>={declared}, the code needs {needed} for {newest}"


def test_declared_python_minimum_is_what_the_code_needs() -> None:
    found = _found(PYTHON_NEEDS, _code() + "\nimport tomllib\n")  # this file's own import counts too
    needed = max(Version(n.since) for n in found)
    declared = _lower_bound(SpecifierSet(_pyproject()["project"]["requires-python"]))
    assert declared == needed, f"pyproject.toml declares Python>={declared}, the code needs {needed}"


def test_every_api_the_code_calls_exists_in_the_installed_torch() -> None:
    """Guards the table: a wrong name or a wrong argument in it fails here."""
    missing = [n.what for n in _found(TORCH_NEEDS, _code()) if not n.present()]
    assert not missing


def test_installed_python_and_torch_satisfy_the_declared_ranges() -> None:
    python = Version(platform.python_version())
    assert python in SpecifierSet(_pyproject()["project"]["requires-python"])
    assert _installed_torch() in _torch_specifier()


def test_ci_installs_the_local_torch_first_and_pyproject_accepts_it() -> None:
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    torch_line = next(i for i, line in enumerate(lines) if re.search(r"pip install .*\btorch==", line))
    project_line = next(i for i, line in enumerate(lines) if re.search(r"pip install .*-e ", line))
    assert torch_line < project_line
    pinned = Version(re.search(r"torch==([\w.]+)", lines[torch_line]).group(1))
    assert pinned in _torch_specifier()
