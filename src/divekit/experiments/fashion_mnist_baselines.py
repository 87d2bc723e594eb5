"""Fashion-MNIST from a linear model to LeNet: the same data, loop and evaluation for each model.

Every model is trained by the one Trainer on 55,000 training images, selected on the 5,000 held-out
validation images and scored once on the 10,000 test images. The figures show the learning curves,
the best model's confusion matrix and the test images it gets wrong.
"""

from __future__ import annotations

import torch

from divekit.data.fashion_mnist import CLASS_NAMES
from divekit.errors import DivekitError
from divekit.experiments.base import ExperimentContext
from divekit.metrics.classification import confusion_matrix
from divekit.pipeline import load_trained, train_model
from divekit.plots import confusion_matrix_plot, image_grid, line_plot
from divekit.registry import register_experiment

# (label, model, options, full-run recipe overrides, quick-tour recipe overrides): the book's
# recipes for the full run, LeNet also in its modern form. The quick tour trains every model on all
# 55,000 images with a short schedule sized to under a minute in all on a 2-core CPU: the sigmoid
# LeNet with the book's Xavier weights and Adam (SGD leaves it at chance for epochs), the modern one
# with Adam and a cosine schedule.
MODELS = [
    ("softmax regression", "softmax-regression", {}, {}, {"epochs": 2}),
    ("MLP (256 hidden)", "mlp", {}, {}, {"epochs": 3}),
    ("LeNet (sigmoid, avg pool)", "lenet", {}, {},
     {"epochs": 2, "optimizer": "adam", "lr": 0.005, "batch_size": 128, "schedule": "cosine"}),
    ("LeNet (ReLU, max pool, BN)", "lenet", {"modern": True}, {"lr": 0.1, "momentum": 0.9},
     {"epochs": 8, "optimizer": "adam", "lr": 0.006, "schedule": "cosine"}),
]
QUICK_OPTIONS = {"LeNet (sigmoid, avg pool)": {"xavier_init": True}}
QUICK_LIMIT: int | None = None  # training images in quick mode (None: all 55,000)


@register_experiment(
    "fashion-mnist-baselines",
    chapter="foundations",
    title="Fashion-MNIST: softmax regression, MLP and LeNet",
    description="four classifiers trained by the same loop, selected on validation, scored on test",
    options={"train_images": "quick mode: training images of every model (default all 55,000; fewer run "
                             "faster and score lower)"},
    modes=("Quick: the four classifiers trained two to eight epochs on all 55,000 training images, under "
           "a minute in all; full: ten epochs each with the book's SGD recipes."),
)
def run(ctx: ExperimentContext) -> dict:
    if not ctx.quick and "train_images" in ctx.options:
        raise DivekitError("train_images sizes the quick run; the full run trains on all 55,000 images")
    limit = ctx.pick(ctx.whole_option("train_images", QUICK_LIMIT or 55_000, minimum=100), None)
    limit = None if limit == 55_000 else limit
    rows, curves, best = [], {}, None
    for label, name, options, full, quick in MODELS:
        out = ctx.path(label.split(" (")[0].replace(" ", "-").lower() + ("-modern" if options else ""))
        options = {**options, **QUICK_OPTIONS.get(label, {})} if ctx.quick else options
        recipe = ctx.pick(quick, {**full, "epochs": 10})
        r = train_model(name, options=options, train_overrides={**recipe, "seed": ctx.seed, "device": ctx.device},
                        limit=limit, out=out, progress=ctx.progress, log=lambda *_: None)
        h = r["history"]
        rows.append([label, r["parameters"], len(h), h[-1]["train_accuracy"], max(e["val_accuracy"] for e in h),
                     r["test"]["test_accuracy"], r["train_seconds"]])
        curves[label] = ([e["epoch"] for e in h], [e["val_accuracy"] for e in h])
        if best is None or r["test"]["test_accuracy"] > best[1]["test"]["test_accuracy"]:
            best = (label, r, out)
    label, r, out = best
    _, model, task, _ = load_trained(out / "best.pt")
    logits, labels = task.predict(model, "test")
    predicted = logits.argmax(1)
    cm = confusion_matrix(predicted, labels, len(CLASS_NAMES))
    wrong = torch.nonzero(predicted != labels).flatten()[:32]
    images = task.splits["test"][0][wrong]
    captions = [f"{CLASS_NAMES[p]}\n(true {CLASS_NAMES[t]})" for p, t in zip(predicted[wrong], labels[wrong])]
    line_plot(ctx.path("val_accuracy.png"), curves, xlabel="epoch", ylabel="validation accuracy",
              title="Validation accuracy per epoch")
    confusion_matrix_plot(ctx.path("confusion.png"), cm, CLASS_NAMES, title=f"{label}: test confusion matrix")
    image_grid(ctx.path("misclassified.png"), images, captions, title=f"{label}: misclassified test images")
    per_class = (cm.diag().double() / cm.sum(1).double()).tolist()
    worst = min(range(len(CLASS_NAMES)), key=lambda k: per_class[k])
    return {
        "summary": (
            f"{QUICK_NOTE if ctx.quick else FULL_NOTE}"
            f"The epoch with the best validation accuracy is scored on the 10,000 test images. "
            f"Best: {label} at {r['test']['test_accuracy']:.2%} test accuracy; its hardest class is "
            f"{CLASS_NAMES[worst]} ({per_class[worst]:.1%} recall), most often confused with "
            f"{CLASS_NAMES[_top_confusion(cm, worst)]}."
        ),
        "metrics": {"best_test_accuracy": r["test"]["test_accuracy"],
                    "training_examples": limit or 55_000},
        "tables": [{
            "title": "Test accuracy by model",
            "columns": ["model", "parameters", "epochs", "train acc.", "best val acc.", "test acc.", "train s"],
            "rows": rows,
        }, {
            "title": f"{label}: recall per class on test",
            "columns": ["class", "recall", "test images"],
            "rows": [[CLASS_NAMES[k], per_class[k], int(cm[k].sum())] for k in range(len(CLASS_NAMES))],
        }],
        "figures": [
            {"file": "val_accuracy.png", "caption": "Validation accuracy per epoch for each model."},
            {"file": "confusion.png", "caption": f"Test confusion matrix of {label} (rows: true class)."},
            {"file": "misclassified.png", "caption": f"Test images {label} gets wrong: predicted (true)."},
        ],
    }


QUICK_NOTE = ("Quick mode: each model trained two to eight epochs on all 55,000 training images (Adam for the "
              "LeNets), under a minute in all on a 2-core CPU; the full run trains each ten epochs with the book's "
              "SGD recipes. ")
FULL_NOTE = "Each model trained 10 epochs on 55,000 training images with its book recipe (SGD, batch 256). "


def _top_confusion(cm: torch.Tensor, row: int) -> int:
    """The class most often predicted for true class ``row`` other than itself."""
    counts = cm[row].clone()
    counts[row] = -1
    return int(counts.argmax())
