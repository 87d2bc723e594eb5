"""How long loading all of Fashion-MNIST takes: read, gunzip, SHA-256 verify, parse to tensors.

Each of the timed runs starts from the compressed files (the operating system's page cache is warm,
so this measures CPU work, not disk). The store keeps no verification cache, so every run decompresses
and hashes all four files. A second measurement adds the conversion of all 70,000 images to float32
``(N, 1, 28, 28)`` in ``[0, 1]``.

Run ``python benchmarks/data_loading.py [--data DIR] [--repeats 5] [--quick]``; it prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from divekit.data.fashion_mnist import load_fashion_mnist, to_float
from divekit.errors import DivekitError

from _machine import stamp

TARGET_SECONDS = 1.0


def _load_all() -> tuple[torch.Tensor, ...]:
    """All 70,000 images and labels as uint8 / int64 tensors."""
    train_x, train_y = load_fashion_mnist("train", download=False)
    test_x, test_y = load_fashion_mnist("test", download=False)
    return train_x, train_y, test_x, test_y


def _load_all_float() -> tuple[torch.Tensor, ...]:
    train_x, train_y, test_x, test_y = _load_all()
    return to_float(train_x), train_y, to_float(test_x), test_y


def _times(fn: Callable[[], tuple[torch.Tensor, ...]], repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - start)
        del out  # free the previous run's tensors so runs do not compete for memory
    return seconds


def run(quick: bool = False, *, repeats: int = 5) -> dict:
    """Time ``repeats`` loads of the whole dataset (quick: one); return a JSON-able summary."""
    repeats = 1 if quick else repeats
    train_x, _, test_x, _ = _load_all()  # fails early, with the store's message, if files are missing
    n_images = train_x.shape[0] + test_x.shape[0]
    del train_x, test_x
    raw = _times(_load_all, repeats)
    floats = _times(_load_all_float, repeats)
    return stamp({
        "name": "fashion-mnist-load",
        "seconds_best": round(min(raw), 4),
        "seconds_median": round(statistics.median(raw), 4),
        "target_seconds": TARGET_SECONDS,
        "meets_target": min(raw) < TARGET_SECONDS,
        "float_seconds_best": round(min(floats), 4),
        "float_seconds_median": round(statistics.median(floats), 4),
        "repeats": repeats,
        "n_images": n_images,
        "includes": "read + gunzip + sha256 of decompressed bytes + IDX parse (float: + to_float)",
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }, quick=quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="directory holding fashion-mnist/*.gz (sets DIVEKIT_DATA)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one load of each kind: shows that it runs")
    args = parser.parse_args()
    if args.data:
        os.environ["DIVEKIT_DATA"] = args.data
    try:
        result = run(args.quick, repeats=args.repeats)
    except DivekitError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
