"""Run every benchmark in this folder and write their results to one JSON file.

    python benchmarks/run.py                  # all, into benchmarks/out/results.json
    python benchmarks/run.py data_loading     # only the named ones
    python benchmarks/run.py --quick          # all, shrunk to a few minutes: shows that they run

Each benchmark is a module here with a ``run(quick: bool = False, **options) -> dict`` function
(runnable alone as a script too); files starting with ``_`` are shared code, not benchmarks.
Quick mode shrinks every benchmark's repeats, sizes and epochs; its results say ``"mode": "quick"``
and are not figures to quote. A benchmark that fails is reported with its error, the others still
run, and the command exits non-zero; the JSON lists the failures beside the results. The JSON
records the machine and the date beside every figure; docs/results.md quotes it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent


def discover() -> list[str]:
    """The benchmark names: every module here except this one and the shared ``_`` ones."""
    return sorted(p.stem for p in HERE.glob("*.py") if p.stem != "run" and not p.stem.startswith("_"))


def _shared_importable() -> None:
    """Put this folder on the import path: the benchmarks import the shared ``_machine`` by name,
    as they do when run as scripts from here."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))


def load(name: str) -> ModuleType:
    """Import benchmark ``name`` from its file."""
    _shared_importable()
    spec = importlib.util.spec_from_file_location(f"divekit_bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Restore torch's thread count afterwards: some benchmarks pin it, and must not pin the next one's."""
    import torch

    previous = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_one(name: str, quick: bool) -> dict[str, Any]:
    """One benchmark's result, with its wall time; raises what the benchmark raised."""
    start = time.perf_counter()
    with torch_threads_kept():
        result = load(name).run(quick=quick)
    expected = "quick" if quick else "full"
    if not isinstance(result, dict) or result.get("mode") != expected:
        mode = result.get("mode") if isinstance(result, dict) else type(result).__name__
        raise TypeError(f"run() must return a dict with mode {expected!r}, got {mode!r}")
    result["wall_seconds"] = round(time.perf_counter() - start, 2)
    return result


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    from divekit.runs import machine_info, now_iso, write_json

    _shared_importable()
    from _machine import cpu_info

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {', '.join(discover())})")
    parser.add_argument("--quick", action="store_true", help="shrunk sizes and repeats: a check that all run")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "results.json")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(discover()))
    if unknown:
        print(f"benchmarks: unknown {', '.join(unknown)}; available: {', '.join(discover())}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"date": now_iso(), "mode": "quick" if args.quick else "full",
                               "machine": {**machine_info(), "cpu": cpu_info()}, "benchmarks": {}, "failures": {}}
    start = time.perf_counter()
    for name in args.names or discover():
        print(f"[{name}] running ...", file=sys.stderr, flush=True)
        try:
            results["benchmarks"][name] = run_one(name, args.quick)
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not cost the others' results
            results["failures"][name] = one_line(exc)
            print(f"[{name}] FAILED: {results['failures'][name]}", file=sys.stderr, flush=True)
            continue
        print(json.dumps(results["benchmarks"][name], indent=2), flush=True)
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    write_json(args.out, results)
    print(f"wrote {args.out} ({results['wall_seconds']} s)", file=sys.stderr)
    if results["failures"]:
        print(f"benchmarks: {len(results['failures'])} failed: {', '.join(results['failures'])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
