"""Fashion-MNIST from a linear model to LeNet: the same data, loop and evaluation for each model.

Every model is trained by the one Trainer on 55,000 training images, selected on the 5,000 held-out
validation images and scored once on the 10,000 test images. The figures show the learning curves,
the best model's confusion matrix and the test images it gets wrong.
"""

from __future__ import annotations

import torch

from divekit.data.fashion_mnist import CLASS_NAMES
from divekit.experiments.base import ExperimentContext
from divekit.metrics.classification import confusion_matrix
from divekit.pipeline import load_trained, train_model
from divekit.plots import confusion_matrix_plot, image_grid, line_plot
from divekit.registry import register_experiment

# (label, model, options, recipe overrides): the book's recipes, LeNet also in its modern form.
MODELS = [
    ("softmax regression", "softmax-regression", {}, {}),
    ("MLP (256 hidden)", "mlp", {}, {}),
    ("LeNet (sigmoid, avg pool)", "lenet", {}, {}),
    ("LeNet (ReLU, max pool, BN)", "lenet", {"modern": True}, {"lr": 0.1, "momentum": 0.9}),
]


@register_experiment(
    "fashion-mnist-baselines",
    chapter="foundations",
    title="Fashion-MNIST: softmax regression, MLP and LeNet",
    description="four classifiers trained by the same loop, selected on validation, scored on test",
)
def run(ctx: ExperimentContext) -> dict:
    epochs = ctx.pick(2, 10)
    limit = ctx.pick(12_000, None)
    # The sigmoid LeNet barely leaves chance level in two short epochs: only the full run trains it.
    models = [m for m in MODELS if not (ctx.quick and m[1] == "lenet" and not m[2])]
    rows, curves, best = [], {}, None
    for label, name, options, recipe in models:
        out = ctx.path(label.split(" (")[0].replace(" ", "-").lower() + ("-modern" if options else ""))
        r = train_model(name, options=options, train_overrides={**recipe, "epochs": epochs, "seed": ctx.seed,
                        "device": ctx.device}, limit=limit, out=out, progress=ctx.progress, log=lambda *_: None)
        h = r["history"]
        rows.append([label, r["parameters"], epochs, h[-1]["train_accuracy"], max(e["val_accuracy"] for e in h),
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
            f"{'Quick mode (the sigmoid LeNet only runs in the full mode). ' if ctx.quick else ''}"
            f"Each model trained {epochs} epochs on {limit or 55_000} training images with its book recipe "
            f"(SGD, batch 256); the epoch with the best validation accuracy is scored on the 10,000 test images. "
            f"Best: {label} at {r['test']['test_accuracy']:.2%} test accuracy; its hardest class is "
            f"{CLASS_NAMES[worst]} ({per_class[worst]:.1%} recall), most often confused with "
            f"{CLASS_NAMES[_top_confusion(cm, worst)]}."
        ),
        "metrics": {"best_test_accuracy": r["test"]["test_accuracy"], "training_examples": limit or 55_000},
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


def _top_confusion(cm: torch.Tensor, row: int) -> int:
    """The class most often predicted for true class ``row`` other than itself."""
    counts = cm[row].clone()
    counts[row] = -1
    return int(counts.argmax())
