"""Run every benchmark in this folder and write their results to one JSON file.

    python benchmarks/run.py                  # all, into benchmarks/out/results.json
    python benchmarks/run.py data_loading     # only the named ones

Each benchmark is a module here with a ``run() -> dict`` function (runnable alone as a script too).
The JSON records the machine and the date beside every figure; docs/results.md quotes it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if p.stem != "run" and not p.stem.startswith("_"))


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"divekit_bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    from divekit.runs import machine_info, now_iso, write_json

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {', '.join(discover())})")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "results.json")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(discover()))
    if unknown:
        print(f"benchmarks: unknown {', '.join(unknown)}; available: {', '.join(discover())}", file=sys.stderr)
        return 2
    results = {"date": now_iso(), "machine": machine_info(), "benchmarks": {}}
    for name in args.names or discover():
        print(f"[{name}] running ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        result = load(name).run()
        result["wall_seconds"] = time.perf_counter() - start
        results["benchmarks"][name] = result
        print(json.dumps(result, indent=2), flush=True)
    write_json(args.out, results)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
