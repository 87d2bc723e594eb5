"""The CNN family on Fashion-MNIST, LeNet to DenseNet, trained by one loop and measured alike.

Every model is trained by the Trainer on the 55,000 training images at native 28x28 resolution
with its divekit recipe (the registry's defaults plus the overrides below), selected on the 5,000
validation images and scored once on the 10,000 test images. For each model the table reports
parameters, forward FLOPs per image (:mod:`divekit.flops`), epochs, training wall time, throughput
in images per second and in achieved GFLOP/s (training costs about 3x the forward FLOPs), as a
fraction of this machine's matrix-product rate measured in the same run, and validation and test
accuracy. Figures: validation accuracy per epoch and per training second, the confusion matrix and
misclassified test images of the model with the best validation accuracy.

The full run takes over an hour, so each model trains in a run directory named by its configuration
(model, options, recipe, seed, data limit): run again into the same directory and every model whose
finished run is there is read back instead of retrained, one stopped part-way continues from its
checkpoint, and a changed configuration trains in a directory of its own. The summary names the rows
read back and when they were trained; delete a model's directory to retrain it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from divekit.data.fashion_mnist import CLASS_NAMES
from divekit.experiments.base import ExperimentContext
from divekit.flops import TRAINING_FACTOR, count_flops, matmul_gflops
from divekit.metrics.classification import confusion_matrix
from divekit.pipeline import config_to_dict, load_trained, train_model
from divekit.plots import bars_plot, confusion_matrix_plot, image_grid, line_plot, scatter_plot
from divekit.registry import get_model, register_experiment
from divekit.train.config import TrainConfig

TRAIN_IMAGES = 55_000


@dataclass(frozen=True)
class Entry:
    """One row of the comparison: a registered model, its options and recipe overrides."""

    label: str
    model: str
    options: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)  # TrainConfig values over the model's registry recipe

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.label.lower()).strip("-")


AUGMENTED = {"augment": True, "test_flip": True}  # shifted crops and mirrors in training, flip-averaged tests

# The registry recipes, except for the LeNets: the classic one needs the book's Xavier weights and
# Adam to pass 89% in 20 cheap epochs; the modern one and BN-LeNet use momentum and one cycle.
FULL: list[Entry] = [
    Entry("LeNet (sigmoid, avg pool)", "lenet", {"xavier_init": True},
          {"epochs": 20, "optimizer": "adam", "lr": 3e-3, "batch_size": 128, "schedule": "cosine"}),
    Entry("LeNet (ReLU, max pool, BN)", "lenet", {"modern": True},
          {"epochs": 10, "lr": 0.1, "momentum": 0.9, "batch_size": 128, "schedule": "onecycle"}),
    Entry("BN-LeNet", "bn-lenet", {}, {"epochs": 15, "lr": 0.3, "momentum": 0.9, "schedule": "onecycle"}),
    Entry("AlexNet", "alexnet"),
    Entry("VGG-11 (1/4 width)", "vgg"),
    Entry("NiN + batch norm", "nin", {"batch_norm": True}),  # the book's NiN stays near 82% after 10 epochs
    Entry("GoogLeNet", "googlenet"),
    Entry("ResNet-18", "resnet", AUGMENTED, {"precision": "fp32"}),  # the twin of the bf16 run below
    Entry("ResNet-18 bf16", "resnet", AUGMENTED, {"precision": "bf16"}),
    Entry("DenseNet", "densenet", AUGMENTED),
]
# The quick tour: three of the family on all 55,000 training images, each with the schedule that
# gets it past 87% in well under a minute on a 2-core CPU (measured: docs/results.md, "The tour").
QUICK: dict[str, dict[str, Any]] = {
    "BN-LeNet": {"epochs": 3},
    "AlexNet": {"epochs": 1, "lr": 0.002, "precision": "auto"},
    "ResNet-18": {"epochs": 1, "batch_size": 128, "lr": 0.1, "precision": "auto"},
}
QUICK_LIMIT: int | None = None  # training images in quick mode (None: all 55,000)


@register_experiment(
    "cnn-compare",
    chapter="cnn",
    title="CNNs on Fashion-MNIST: LeNet to DenseNet",
    description="every CNN trained by the same loop: accuracy, parameters, FLOPs, time and achieved GFLOP/s",
    modes=("Quick: BN-LeNet, AlexNet and ResNet-18 trained one to three epochs on all 55,000 training "
           "images, about two minutes; full: all ten CNNs trained to convergence with their recipes "
           "(hours)."),
)
def run(ctx: ExperimentContext) -> dict:
    if ctx.quick:
        # One epoch is too short for augmentation to pay off; flip-averaged tests would double evaluation.
        entries = [Entry(e.label, e.model, {k: v for k, v in e.options.items() if k not in AUGMENTED},
                         {**e.recipe, **QUICK[e.label]}) for e in FULL if e.label in QUICK]
        return compare(ctx, entries, limit=QUICK_LIMIT)
    return compare(ctx, FULL, limit=None)


def compare(ctx: ExperimentContext, entries: list[Entry], *, limit: int | None) -> dict:
    """Train ``entries`` (on the first ``limit`` training images) and build the experiment's result."""
    runs = [_train(ctx, e, limit) for e in entries]
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    ceilings = {p: matmul_gflops(dtypes[p]) for p in sorted({"fp32", *(r["precision"] for r in runs)})}
    best = max(runs, key=lambda r: r["val_accuracy"])  # chosen on validation, never on test
    best.update(_test_predictions(best))
    figures = _figures(ctx, runs, best)
    rows = [[r["label"], r["parameters"], r["mflops"], r["epochs"], r["precision"], r["train_seconds"],
             r["images_per_s"], r["gflops"], r["gflops"] / ceilings[r["precision"]], r["val_accuracy"],
             r["test_accuracy"]] for r in runs]
    cm, per_class = best["confusion"], best["per_class"]
    return {
        "summary": _summary(ctx, runs, best, ceilings, limit),
        "metrics": {
            "best_val_accuracy": best["val_accuracy"],
            "best_test_accuracy": best["test_accuracy"],
            "matmul_gflops_fp32": ceilings["fp32"],
            **{f"test_accuracy_{r['slug']}": r["test_accuracy"] for r in runs},
            **{f"gflops_{r['slug']}": r["gflops"] for r in runs},
        },
        "tables": [
            {"title": "CNNs at 28x28: size, cost, speed and accuracy",
             "columns": ["model", "parameters", "MFLOPs/image", "epochs", "precision", "train s", "images/s",
                         "GFLOP/s", "of matmul peak", "best val acc.", "test acc."],
             "rows": rows},
            {"title": f"{best['label']}: recall per class on test",
             "columns": ["class", "recall", "test images"],
             "rows": [[CLASS_NAMES[k], per_class[k], int(cm[k].sum())] for k in range(len(CLASS_NAMES))]},
        ],
        "figures": figures,
    }


def _train(ctx: ExperimentContext, entry: Entry, limit: int | None) -> dict[str, Any]:
    spec = get_model(entry.model)
    config = spec.make_config(entry.options)
    resolution = getattr(config, "resolution", 28)
    flops = count_flops(spec.build(config), torch.zeros(1, 1, resolution, resolution)).total
    overrides = {**entry.recipe, "seed": ctx.seed, "device": ctx.device}
    wanted = {"model": entry.model, "limit": limit, "model_config": config_to_dict(config),
              "train_config": TrainConfig(**{**spec.recipe, **overrides}).to_dict()}
    out = ctx.path(_run_dir_name(entry.slug, wanted))
    r = _finished_run(out, wanted)
    reused = r is not None
    if r is None:
        # A run killed or interrupted in this directory continues where it stopped; a changed
        # configuration has a directory of its own, so no earlier run is ever overwritten.
        resume = out if (out / "checkpoint.pt").is_file() else None
        r = train_model(entry.model, options={} if resume else entry.options,
                        train_overrides={k: v for k, v in overrides.items() if not resume or k == "device"},
                        limit=None if resume else limit, out=out, resume=resume, progress=ctx.progress,
                        log=lambda *_: None)
    history = r["history"]
    images = len(history) * min(limit or TRAIN_IMAGES, TRAIN_IMAGES)
    images_per_s = images / r["train_seconds"]
    return {
        "label": entry.label, "slug": entry.slug, "out": out, "parameters": r["parameters"],
        "mflops": flops / 1e6, "epochs": len(history), "precision": r["train_config"]["precision"],
        "train_seconds": r["train_seconds"], "images_per_s": images_per_s,
        "gflops": TRAINING_FACTOR * flops * images_per_s / 1e9,
        "val_accuracy": max(h["val_accuracy"] for h in history), "test_accuracy": r["test"]["test_accuracy"],
        "history": history, "reused": reused, "date": r["date"],
    }


def _run_dir_name(slug: str, wanted: dict[str, Any]) -> str:
    """``slug-<8 hex digits>``: the digits name the configuration, so each one trains in its own directory."""
    digest = hashlib.sha256(json.dumps(wanted, sort_keys=True, default=str).encode()).hexdigest()
    return f"{slug}-{digest[:8]}"


def _finished_run(out: Path, wanted: dict[str, Any]) -> dict[str, Any] | None:
    """``out/results.json`` if it records a finished run with exactly the ``wanted`` configuration."""
    path = out / "results.json"
    if not path.is_file():
        return None
    try:
        done = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a damaged file: train again
    expected = json.loads(json.dumps(wanted))  # tuples become lists, as they are on disk
    asked = expected.get("train_config", {})
    if asked.get("precision") == "auto" and done.get("precision_choice"):  # what auto resolved to then
        asked["precision"] = done.get("train_config", {}).get("precision")
    if any(done.get(key) != value for key, value in expected.items()) or not (out / "best.pt").is_file():
        return None
    return done


def _test_predictions(run: dict[str, Any]) -> dict[str, Any]:
    """Test predictions, confusion matrix and per-class recall of a run's validation-selected model."""
    _, model, task, _ = load_trained(run["out"] / "best.pt")
    logits, labels = task.predict(model, "test")
    predicted = logits.argmax(1)
    cm = confusion_matrix(predicted, labels, len(CLASS_NAMES))
    return {"predicted": predicted, "labels": labels, "confusion": cm, "test_images": task.splits["test"][0],
            "per_class": (cm.diag().double() / cm.sum(1).clamp_min(1).double()).tolist()}


def _figures(ctx: ExperimentContext, runs: list[dict], best: dict) -> list[dict[str, str]]:
    by_epoch = {r["label"]: ([h["epoch"] for h in r["history"]], [h["val_accuracy"] for h in r["history"]])
                for r in runs}
    by_time = {r["label"]: (_cumulative([h["train_seconds"] for h in r["history"]]),
                            [h["val_accuracy"] for h in r["history"]]) for r in runs}
    curves = min(len(r["history"]) for r in runs) > 1
    if curves:
        line_plot(ctx.path("val_accuracy.png"), by_epoch, xlabel="epoch", ylabel="validation accuracy",
                  title="Validation accuracy per epoch")
        line_plot(ctx.path("val_accuracy_time.png"), by_time, xlabel="training seconds",
                  ylabel="validation accuracy", title="Validation accuracy against training time", logx=True)
    else:  # a model trained one epoch has one point: a line of one point says nothing, bars and points do
        bars_plot(ctx.path("val_accuracy.png"), [r["label"] for r in runs],
                  {"validation": [r["val_accuracy"] for r in runs], "test": [r["test_accuracy"] for r in runs]},
                  xlabel="model", ylabel="accuracy", title="Accuracy of each CNN's selected epoch")
        scatter_plot(ctx.path("val_accuracy_time.png"),
                     {r["label"]: (r["train_seconds"], r["test_accuracy"]) for r in runs},
                     xlabel="training seconds", ylabel="test accuracy", title="Test accuracy against training time",
                     logx=True)
    label = best["label"]
    confusion_matrix_plot(ctx.path("confusion.png"), best["confusion"], CLASS_NAMES,
                          title=f"{label}: test confusion matrix")
    wrong = torch.nonzero(best["predicted"] != best["labels"]).flatten()[:32]
    captions = [f"{CLASS_NAMES[p]}\n(true {CLASS_NAMES[t]})"
                for p, t in zip(best["predicted"][wrong].tolist(), best["labels"][wrong].tolist())]
    image_grid(ctx.path("misclassified.png"), best["test_images"][wrong], captions,
               title=f"{label}: misclassified test images")
    return [
        {"file": "val_accuracy.png", "caption": "Validation accuracy per epoch for each CNN." if curves else
         "Validation and test accuracy of each CNN's selected epoch."},
        {"file": "val_accuracy_time.png", "caption": "Validation accuracy against cumulative training seconds on "
         "this machine (log scale)." if curves else "Test accuracy of each CNN against its training seconds on "
         "this machine (log scale)."},
        {"file": "confusion.png", "caption": f"Test confusion matrix of {label}, the model with the best "
                                             "validation accuracy (rows: true class)."},
        {"file": "misclassified.png", "caption": f"Test images {label} gets wrong: predicted (true)."},
    ]


def _cumulative(values: list[float]) -> list[float]:
    total, out = 0.0, []
    for v in values:
        total += v
        out.append(total)
    return out


def _summary(ctx: ExperimentContext, runs: list[dict], best: dict, ceilings: dict[str, float],
             limit: int | None) -> str:
    n = min(limit or TRAIN_IMAGES, TRAIN_IMAGES)
    mode = ("Quick mode: three of the ten CNNs, each on a schedule of one to three epochs that fits the "
            "ten-minute tour; the full run trains all ten to convergence. " if ctx.quick else "")
    fastest = max(runs, key=lambda r: r["gflops"])
    ceiling = ceilings[fastest["precision"]]
    text = (
        f"{mode}{len(runs)} CNNs trained at 28x28 on {n:,} images with their divekit recipes, each selected on "
        f"validation and scored once on the 10,000 test images. Best validation accuracy: {best['label']} "
        f"({best['val_accuracy']:.2%} validation, {best['test_accuracy']:.2%} test). The highest training rate "
        f"is {fastest['label']}'s {fastest['gflops']:.0f} GFLOP/s, {fastest['gflops'] / ceiling:.0%} "
        f"of the {ceiling:.0f} GFLOP/s this machine reached on a dense "
        f"{fastest['precision']} matrix product in the same run."
    )
    reused = [r for r in runs if r["reused"]]
    if reused:
        dates = sorted({r["date"][:10] for r in reused})
        text += (f" Read back from finished runs in this directory (trained {', '.join(dates)}) instead of "
                 f"retrained: {', '.join(r['label'] for r in reused)}.")
    pair = _precision_pair(runs)
    if pair:
        fp32, bf16 = pair
        text += (f" bf16 autocast trains {fp32['label']} {fp32['train_seconds'] / bf16['train_seconds']:.2f}x "
                 f"faster than fp32, with test accuracy {bf16['test_accuracy']:.2%} against "
                 f"{fp32['test_accuracy']:.2%}.")
    return text


def _precision_pair(runs: list[dict]) -> tuple[dict, dict] | None:
    """The first model trained both in fp32 and in bf16, as (fp32 run, bf16 run)."""
    for r in runs:
        if r["precision"] == "bf16":
            twin = next((f for f in runs if f["precision"] == "fp32" and r["label"].startswith(f["label"])), None)
            if twin is not None:
                return twin, r
    return None
