"""The book's LeNet and ResNet-18 recipes beside divekit's, timed in one run on one machine.

The measure is time to the book's final accuracy: the book's recipe takes its whole schedule to
reach its final validation accuracy; divekit's recipe is timed to the first epoch whose validation
accuracy is at least that (training seconds only, evaluation excluded, for both). The ratio is the
book's time over divekit's; since divekit is only checked at epoch ends, its time is an upper
bound and the ratio a lower bound. Both train on the same 55,000 images and are scored on the same
5,000 held-out validation images.

- LeNet, book: the sigmoid/average-pool LeNet with Xavier-uniform weights, plain SGD, learning
  rate 0.1, batch 128, 10 epochs (the book's recipe), trained in full.
  divekit: the same network and initialisation trained with Adam (learning rate 0.005, cosine decay
  over 4 epochs, batch 128), whose per-weight steps leave the sigmoids' initial plateau at once.
- ResNet-18, book: the 96-pixel network (images resized to 96x96), plain SGD, learning rate 0.01,
  batch 128, 10 epochs, fp32, default memory layout. A full run takes about an hour here, so by
  default only ``BOOK_TIMED_BATCHES`` training steps are timed (after warm-up, including the per-batch
  resize) and the time of 10 epochs of 55,000 images is extrapolated from their median. Its final
  accuracy needs the full run: ``--book-full`` trains it once and stores its history in
  ``benchmarks/measured/cnn_book_resnet.json`` (kept in the repository, so a later run reads the
  book's final accuracy without the hour); ``--book-accuracy`` supplies a figure instead. Without
  either, the result lists the ratio for a range of possible book accuracies. With a stored full
  run the result also gives the ratio against its measured training time, as a check on the
  extrapolation (that run was timed on another occasion, so the headline ratio stays the
  extrapolated one, whose both sides are timed in this run).
  divekit: the native 28x28 ResNet-18 with its registry recipe, augmentation and test-time flips,
  trained in full. Its validation accuracy is flip-averaged; the book's is not.

    python benchmarks/cnn_recipes.py [--book-full] [--book-accuracy 0.91] [--skip-divekit-resnet] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from divekit.pipeline import train_model
from divekit.registry import create_model, get_model
from divekit.runs import write_json
from divekit.tasks import make_task
from divekit.train.config import TrainConfig
from divekit.train.distributed import DistInfo

from _machine import stamp

HERE = Path(__file__).resolve().parent
BOOK_RESNET_FILE = HERE / "measured" / "cnn_book_resnet.json"
TRAIN_IMAGES = 55_000
BOOK_TIMED_BATCHES = 20

BOOK_LENET = {"model": "lenet", "options": {"xavier_init": True},
              "train": {"epochs": 10, "lr": 0.1, "batch_size": 128, "momentum": 0.0, "schedule": "constant"}}
DIVEKIT_LENET = {"model": "lenet", "options": {"xavier_init": True},
                 "train": {"epochs": 4, "optimizer": "adam", "lr": 5e-3, "batch_size": 128, "schedule": "cosine"}}
BOOK_RESNET = {"model": "resnet", "options": {"resolution": 96},
               "train": {"epochs": 10, "lr": 0.01, "batch_size": 128, "momentum": 0.0, "weight_decay": 0.0,
                         "schedule": "constant", "channels_last": False, "precision": "fp32"}}
DIVEKIT_RESNET = {"model": "resnet", "options": {"augment": True, "test_flip": True}, "train": {}}  # registry recipe
ACCURACY_LEVELS = (0.88, 0.90, 0.91, 0.92, 0.93)
# Quick mode: LeNets train one epoch on this many images; the book's ResNet times one small step.
QUICK_IMAGES = 1024
QUICK_RESNET_BATCH, QUICK_RESNET_BATCHES = 4, 1


def train(recipe: dict[str, Any], out: Path, seed: int = 0, limit: int | None = None) -> dict[str, Any]:
    """Train a recipe end to end with the Trainer (on the first ``limit`` images); the pipeline's results dict."""
    return train_model(recipe["model"], options=recipe["options"], train_overrides={**recipe["train"], "seed": seed},
                       limit=limit, out=out, progress=False, log=lambda *_: None)


def shortened(recipe: dict[str, Any]) -> dict[str, Any]:
    """``recipe`` cut to one epoch, for quick mode."""
    return {**recipe, "train": {**recipe["train"], "epochs": 1}}


def time_to(history: list[dict[str, Any]], target: float) -> float | None:
    """Training seconds until the first epoch whose validation accuracy reaches ``target`` (None: never)."""
    seconds = 0.0
    for record in history:
        seconds += record["train_seconds"]
        if record["val_accuracy"] >= target:
            return seconds
    return None


def summarise(history: list[dict[str, Any]]) -> list[dict[str, float]]:
    return [{"epoch": h["epoch"], "train_seconds": round(h["train_seconds"], 1), "val_accuracy": h["val_accuracy"]}
            for h in history]


def compare(book_seconds: float, book_accuracy: float, divekit_history: list[dict[str, Any]]) -> dict[str, Any]:
    reached = time_to(divekit_history, book_accuracy)
    return {
        "book_final_val_accuracy": book_accuracy,
        "book_seconds": round(book_seconds, 1),
        "divekit_seconds_to_book_accuracy": None if reached is None else round(reached, 1),
        "ratio": None if reached is None else round(book_seconds / reached, 2),
    }


def lenet_part(work: Path, quick: bool = False) -> dict[str, Any]:
    """Both LeNet recipes trained in full; quick: one epoch of each on ``QUICK_IMAGES`` images."""
    if quick:
        book_recipe, divekit_recipe, limit = shortened(BOOK_LENET), shortened(DIVEKIT_LENET), QUICK_IMAGES
    else:
        book_recipe, divekit_recipe, limit = BOOK_LENET, DIVEKIT_LENET, None
    book = train(book_recipe, work / "lenet-book", limit=limit)
    ours = train(divekit_recipe, work / "lenet-divekit", limit=limit)
    book_seconds = book["train_seconds"]
    return {
        "book_recipe": book_recipe, "divekit_recipe": divekit_recipe, "train_images": limit or TRAIN_IMAGES,
        **compare(book_seconds, book["history"][-1]["val_accuracy"], ours["history"]),
        "book_test_accuracy": book["final_epoch"]["test_accuracy"],
        "divekit_test_accuracy": ours["test"]["test_accuracy"],
        "book_history": summarise(book["history"]), "divekit_history": summarise(ours["history"]),
    }


def book_resnet_seconds_per_batch(batches: int = BOOK_TIMED_BATCHES, batch_size: int | None = None,
                                  warmup: int = 2) -> float:
    """Median seconds of one training step of the book's ResNet recipe (or of it at ``batch_size``),
    data transform included, after ``warmup`` untimed steps."""
    config = TrainConfig(**{**BOOK_RESNET["train"], **({"batch_size": batch_size} if batch_size else {})})
    spec = get_model("resnet")
    task = make_task(spec.task, spec.make_config(BOOK_RESNET["options"]), config)
    torch.manual_seed(0)
    model = create_model("resnet", **BOOK_RESNET["options"]).train()
    opt = torch.optim.SGD(model.parameters(), lr=config.lr)
    times = []
    loader = iter(task.train_loader(DistInfo()))
    for k in range(batches + warmup):
        start = time.perf_counter()
        x, y = next(loader)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if k >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def resnet_part(work: Path, *, book_full: bool, book_accuracy: float | None, train_divekit: bool,
                quick: bool = False) -> dict[str, Any]:
    """The book's ResNet time, extrapolated, against divekit's time to the book's accuracy.

    Quick: ``QUICK_RESNET_BATCHES`` steps of batch ``QUICK_RESNET_BATCH`` are timed, the extrapolation
    is to 10 epochs of such batches, and neither recipe is trained.
    """
    batches_timed, batch_size = (QUICK_RESNET_BATCHES, QUICK_RESNET_BATCH) if quick else (
        BOOK_TIMED_BATCHES, BOOK_RESNET["train"]["batch_size"])
    batches_per_epoch = math.ceil(TRAIN_IMAGES / batch_size)
    per_batch = book_resnet_seconds_per_batch(batches_timed, batch_size, warmup=1 if quick else 2)
    extrapolated = per_batch * batches_per_epoch * BOOK_RESNET["train"]["epochs"]
    part: dict[str, Any] = {
        "book_recipe": BOOK_RESNET, "divekit_recipe": {**DIVEKIT_RESNET, "train": get_model("resnet").recipe},
        "book_seconds_per_batch": round(per_batch, 3), "book_batches_timed": batches_timed,
        "book_batch_size_timed": batch_size,
        "book_seconds_extrapolated": round(extrapolated, 1),
        "extrapolation": f"{batches_timed} timed batches x {batches_per_epoch} batches x 10 epochs",
    }
    if book_full:
        book = train(BOOK_RESNET, work / "resnet-book")
        write_json(BOOK_RESNET_FILE, {"history": book["history"], "test": book["final_epoch"],
                                      "train_seconds": book["train_seconds"], "machine": book["machine"],
                                      "date": book["date"]})
    stored = json.loads(BOOK_RESNET_FILE.read_text()) if BOOK_RESNET_FILE.is_file() else None
    if book_accuracy is None and stored is not None:
        book_accuracy = stored["history"][-1]["val_accuracy"]
        part["book_measured"] = {"file": str(BOOK_RESNET_FILE.relative_to(HERE.parent)),
                                 "train_seconds": round(stored["train_seconds"], 1), "date": stored["date"]}
    if not train_divekit or quick:
        return part
    ours = train(DIVEKIT_RESNET, work / "resnet-divekit")
    part["divekit_history"] = summarise(ours["history"])
    part["divekit_test_accuracy"] = ours["test"]["test_accuracy"]
    part["divekit_train_seconds"] = round(ours["train_seconds"], 1)
    if book_accuracy is not None:
        part.update(compare(extrapolated, book_accuracy, ours["history"]))
        if "book_measured" in part and part["ratio"] is not None:
            part["ratio_with_measured_book_time"] = round(
                part["book_measured"]["train_seconds"] / part["divekit_seconds_to_book_accuracy"], 2)
    else:
        part["book_final_val_accuracy"] = None
        part["ratio_if_book_reaches"] = {
            f"{level:.2f}": None if time_to(ours["history"], level) is None
            else round(extrapolated / time_to(ours["history"], level), 2) for level in ACCURACY_LEVELS}
    return part


def run(quick: bool = False, *, book_full: bool = False, book_accuracy: float | None = None,
        train_divekit_resnet: bool = True) -> dict:
    """Both comparisons; the ResNet one as far as the stored or given book accuracy allows.

    Quick: one epoch of each LeNet recipe on a small slice and a few small ResNet steps timed; no
    ResNet is trained; ``book_full`` is refused, as its hour-long run would overwrite the stored one.
    """
    if quick and book_full:
        raise ValueError("quick mode trains no ResNet: drop book_full")
    with tempfile.TemporaryDirectory(prefix="cnn-recipes-") as tmp:
        work = Path(tmp)
        return stamp({
            "threads": torch.get_num_threads(),
            "lenet": lenet_part(work, quick),
            "resnet18": resnet_part(work, book_full=book_full, book_accuracy=book_accuracy,
                                    train_divekit=train_divekit_resnet, quick=quick),
            "target_ratio": 5.0,
        }, quick=quick)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--book-full", action="store_true", help="train the book's ResNet recipe in full (~1 h)")
    parser.add_argument("--book-accuracy", type=float, help="the book ResNet recipe's final validation accuracy")
    parser.add_argument("--skip-divekit-resnet", action="store_true", help="time the book's ResNet only")
    parser.add_argument("--quick", action="store_true", help="one LeNet epoch on a slice, one small ResNet step")
    args = parser.parse_args()
    print(json.dumps(run(args.quick, book_full=args.book_full, book_accuracy=args.book_accuracy,
                         train_divekit_resnet=not args.skip_divekit_resnet), indent=2))
