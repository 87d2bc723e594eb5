"""Batch normalization and depth: can a deep sigmoid MLP be trained at all?

The network (``divekit.experiments.deep_mlp``): ``depth`` hidden layers of width 128, each
``sigmoid(norm(h W^T + b))``, on Fashion-MNIST images ``(batch, 1, 28, 28)`` -> logits ``(batch, 10)``,
with PyTorch's default initialisation. ``norm`` is the identity, the scratch
:class:`divekit.nn.batchnorm.BatchNorm` or ``nn.BatchNorm1d``.

Without normalisation every sigmoid layer multiplies the backward signal by at most 1/4 and its
outputs sit in ``(0, 1)`` with a mean near 1/2, so the next layer's inputs are far from zero-mean:
a few layers in, the gradients reaching the first layers are too small for SGD to move them.
Batch norm re-centres and re-scales every pre-activation, which keeps the sigmoids in their
steep middle range. Every variant trains with the shared Trainer from the same seed, so the scratch
and built-in normalisations start from identical weights and differ only by rounding.
"""

from __future__ import annotations

from dataclasses import asdict

from divekit import seeding
from divekit.cpu import flush_denormals, single_thread
from divekit.data.fashion_mnist import FashionMNIST
from divekit.experiments.base import ExperimentContext
from divekit.experiments.deep_mlp import DeepMLP, DeepMLPConfig
from divekit.experiments.fashion_mnist_study import train_study_model
from divekit.plots import line_plot
from divekit.registry import register_experiment

NORM_LABELS = {"none": "no normalization", "scratch": "BatchNorm (scratch)", "torch": "nn.BatchNorm1d"}
LR = 0.5
WIDTH = 128


@register_experiment(
    "batchnorm-depth",
    chapter="stability",
    title="Batch normalization makes deep sigmoid networks trainable",
    description="deep sigmoid MLPs of growing depth with no normalization, scratch BatchNorm and nn.BatchNorm1d",
    modes=("Quick: depths 2, 5 and 10, three epochs on 5,000 images; full: depth 20 too, five epochs on "
           "all 55,000."),
)
def run(ctx: ExperimentContext) -> dict:
    with single_thread(), flush_denormals():  # unnormalised deep sigmoid nets produce subnormal gradients
        return _run(ctx)


def _run(ctx: ExperimentContext) -> dict:
    depths = ctx.pick([2, 5, 10], [2, 5, 10, 20])
    epochs = ctx.pick(3, 5)
    limit = ctx.pick(5_000, None)
    data = FashionMNIST()
    rows, results = [], {}
    for depth in depths:
        for norm in NORM_LABELS:
            config = DeepMLPConfig(depth=depth, width=WIDTH, activation="sigmoid", norm=norm)
            seeding.seed_global(ctx.seed, "init")  # the same initial weights for the three normalisations
            r = train_study_model(DeepMLP(config), name=f"deep-mlp ({depth}, {norm})", model_config=asdict(config),
                                  data=data, epochs=epochs, lr=LR, limit=limit, seed=ctx.seed, device=ctx.device,
                                  progress=ctx.progress, splits=("test",))
            results[depth, norm] = r
            rows.append([depth, NORM_LABELS[norm], r.history[-1]["train_loss"], r.history[-1]["val_accuracy"],
                         r.test_accuracy, r.seconds])

    by_depth = {NORM_LABELS[n]: (depths, [results[d, n].test_accuracy for d in depths]) for n in NORM_LABELS}
    line_plot(ctx.path("accuracy_by_depth.png"), by_depth, xlabel="hidden layers", ylabel="test accuracy",
              title=f"Sigmoid MLP after {epochs} epochs, by depth")
    deepest = max(depths)
    curves = {NORM_LABELS[n]: ([h["epoch"] for h in results[deepest, n].history],
                               [h["train_loss"] for h in results[deepest, n].history]) for n in NORM_LABELS}
    line_plot(ctx.path("loss_deepest.png"), curves, xlabel="epoch", ylabel="training loss",
              title=f"{deepest} sigmoid layers: training loss per epoch")

    scratch_vs_torch = max(abs(results[d, "scratch"].test_accuracy - results[d, "torch"].test_accuracy)
                           for d in depths)
    n_train = limit or 55_000
    plain = ", ".join(f"{results[d, 'none'].test_accuracy:.1%}" for d in depths)
    normed = ", ".join(f"{results[d, 'scratch'].test_accuracy:.1%}" for d in depths)
    return {
        "summary": (
            f"{'Quick mode: ' if ctx.quick else ''}sigmoid MLPs of width {WIDTH} with {', '.join(map(str, depths))} "
            f"hidden layers, {epochs} epochs of SGD (lr {LR}, batch 256) on {n_train} images. Test accuracy without "
            f"normalization: {plain}; with the scratch BatchNorm: {normed}. The scratch BatchNorm and "
            f"nn.BatchNorm1d start from the same weights and end within {scratch_vs_torch:.2%} test accuracy of "
            f"each other at every depth."
        ),
        "metrics": {
            **{f"test_accuracy_depth{d}_none": results[d, "none"].test_accuracy for d in depths},
            **{f"test_accuracy_depth{d}_scratch_bn": results[d, "scratch"].test_accuracy for d in depths},
            **{f"test_accuracy_depth{d}_torch_bn": results[d, "torch"].test_accuracy for d in depths},
            "scratch_vs_torch_bn_max_test_accuracy_diff": scratch_vs_torch,
        },
        "tables": [{
            "title": f"After {epochs} epochs on {n_train} images",
            "columns": ["hidden layers", "normalization", "train loss", "val acc.", "test acc.", "train s"],
            "rows": rows,
        }],
        "figures": [
            {"file": "accuracy_by_depth.png", "caption": "Test accuracy against depth for each normalization."},
            {"file": "loss_deepest.png", "caption": f"Training loss per epoch with {deepest} hidden layers."},
        ],
    }
