"""Label shift on Fashion-MNIST: estimate the target label weights, then correct the classifier.

Softmax regression is trained by the Trainer on the usual (balanced) Fashion-MNIST training images;
its temperature and confusion matrix come from held-out validation images (5,000; 10,000 in the full
run). Target sets are drawn from the test images with a shifted prior (a uniform control, Dirichlet
draws, and one class taking half the mass), p(x|y) untouched. The weights w_y = q_t(y) / q_s(y) are
estimated by BBSE (constrained least squares on C w = mu) and by EM prior adjustment, and used to
correct predictions by posterior adjustment (argmax of logits / T + log w) or by retraining with
class weights w_y. Every figure is a mean over seeds with its 95% t interval,
t_{0.975, n-1} sd / sqrt(n).
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch  # noqa: E402

from divekit import seeding
from divekit.cpu import single_thread  # noqa: E402
from divekit.data.fashion_mnist import CLASS_NAMES, FashionMNIST, load_fashion_mnist  # noqa: E402
from divekit.data.shift import (  # noqa: E402
    class_prior,
    dirichlet_prior,
    dominant_prior,
    max_sample_size,
    sample_with_prior,
)
from divekit.experiments.base import ExperimentContext  # noqa: E402
from divekit.plots import legend_outside, line_plot, save_figure  # noqa: E402
from divekit.registry import (  # noqa: E402
    config_to_dict,
    create_model,
    get_model,
    register_experiment,
)
from divekit.shift import format_ci, mean_ci  # noqa: E402
from divekit.shift.covariate import WeightedImageTask  # noqa: E402
from divekit.shift.label import (  # noqa: E402
    adjust_logits,
    bbse_weights,
    em_prior,
    fit_temperature,
    joint_confusion,
    prediction_mean,
)
from divekit.tasks.image_classification import ImageClassification, prepare_images  # noqa: E402
from divekit.train.config import TrainConfig  # noqa: E402
from divekit.train.trainer import Trainer  # noqa: E402

MODEL = "softmax-regression"
K = len(CLASS_NAMES)
DOMINANT = CLASS_NAMES.index("Shirt")  # the most confused class: where a wrong prior costs most
DOMINANT_SETTING = f"{CLASS_NAMES[DOMINANT]} at 50%"
CORRECTIONS = ("none", "BBSE, posterior adjustment", "EM, posterior adjustment", "BBSE, reweighted training",
               "true weights, posterior adjustment")


@dataclass(frozen=True)
class LabelShiftConfig:
    seeds: int = 5  # repetitions (model, target draw and Dirichlet prior change with the seed)
    n_train: int = 10_000  # source training images (balanced classes)
    n_holdout: int = 5000  # held-out source images for the confusion matrix and the temperature
    n_target: int = 2000  # target images per setting (fewer when the prior makes that impossible)
    epochs: int = 5  # softmax-regression epochs (SGD, cosine schedule)
    sizes: tuple[int, ...] = (250, 500, 1000, 2000)  # target sizes for the error-vs-n curve


def _config(ctx: ExperimentContext) -> LabelShiftConfig:
    if ctx.quick:
        return LabelShiftConfig()
    return LabelShiftConfig(seeds=10, n_train=50_000, n_holdout=10_000, epochs=10)


def _settings(seed: int) -> dict[str, torch.Tensor]:
    """Target priors ``(K,)`` by name; the Dirichlet ones are redrawn for every seed."""
    return {
        "uniform (no shift)": torch.full((K,), 1 / K, dtype=torch.float64),
        "Dirichlet(1.0)": dirichlet_prior(K, 1.0, seed=seed),
        "Dirichlet(0.3)": dirichlet_prior(K, 0.3, seed=10_000 + seed),
        DOMINANT_SETTING: dominant_prior(K, DOMINANT, 0.5),
    }


@register_experiment(
    "label-shift",
    chapter="shift",
    title="Label shift: BBSE and EM weight estimates, corrected predictions",
    description="target label priors shifted on Fashion-MNIST, weights estimated by black-box shift "
                "estimation and by EM, predictions corrected",
    modes="Quick: 5 seeds on 10,000 training images; full: 10 seeds on 50,000, for tighter intervals.",
)
def run(ctx: ExperimentContext) -> dict:
    cfg = _config(ctx)
    data = FashionMNIST()
    test = load_fashion_mnist("test")
    records: list[dict] = []
    curves: dict[str, dict[int, list[float]]] = {"BBSE": {}, "EM": {}}
    example = None
    with single_thread():
        for s in range(cfg.seeds):
            seed = ctx.seed + s
            source = _train_source(data, cfg, seed, ctx.device)
            for name, prior in _settings(seed).items():
                records.append(_evaluate_setting(name, prior, source, test, cfg, seed, ctx.device))
                if s == 0 and name == DOMINANT_SETTING:
                    example = records[-1]
            _error_curve(curves, source, test, seed, cfg.sizes)
    names = list(_settings(ctx.seed))
    _weights_plot(ctx.path("weights.png"), example)
    line_plot(ctx.path("error_vs_n.png"),
              {k: (list(v), [mean_ci(e)[0] for e in v.values()]) for k, v in curves.items()},  # mean over seeds
              xlabel="target sample size", ylabel="||w_hat - w||_2", logx=True, logy=True,
              title=f"Weight error, {DOMINANT_SETTING}")
    by = {n: [r for r in records if r["setting"] == n] for n in names}
    dominant = DOMINANT_SETTING
    acc = {c: mean_ci([r["accuracy"][c] for r in by[dominant]])[0] for c in CORRECTIONS}
    err = {e: mean_ci([r[f"{e}_error"] for r in by[dominant]])[0] for e in ("bbse", "em")}
    curve = {k: [mean_ci(e)[0] for e in v.values()] for k, v in curves.items()}
    lo, hi = cfg.sizes[0], cfg.sizes[-1]
    return {
        "summary": (
            f"Softmax regression trained on {cfg.n_train} balanced Fashion-MNIST images ({cfg.seeds} seeds); "
            f"target sets of up to {cfg.n_target} test images with shifted label priors. With "
            f"{CLASS_NAMES[DOMINANT]} at 50% of the target, the weight error ||w_hat - w||_2 is {err['bbse']:.3f} "
            f"for BBSE and {err['em']:.3f} for EM, and target accuracy goes from {acc['none']:.1%} uncorrected "
            f"to {acc[CORRECTIONS[1]]:.1%} (BBSE) and {acc[CORRECTIONS[2]]:.1%} (EM) by posterior adjustment, "
            f"{acc[CORRECTIONS[3]]:.1%} by reweighted training, against {acc[CORRECTIONS[4]]:.1%} with the true "
            f"weights. From {lo} to {hi} target images the BBSE error goes from {curve['BBSE'][0]:.3f} to "
            f"{curve['BBSE'][-1]:.3f} and the EM error from {curve['EM'][0]:.3f} to {curve['EM'][-1]:.3f}; the "
            f"rest comes from the confusion matrix ({cfg.n_holdout} held-out images) and the calibration of the "
            f"posteriors, which more target data does not improve. Intervals: mean ± t_0.975 sd/sqrt(n) over seeds."
        ),
        "metrics": {
            "dominant_bbse_weight_error": err["bbse"],
            "dominant_em_weight_error": err["em"],
            "dominant_accuracy_uncorrected": acc["none"],
            "dominant_accuracy_bbse": acc[CORRECTIONS[1]],
            "dominant_accuracy_em": acc[CORRECTIONS[2]],
            "dominant_accuracy_bbse_reweighted": acc[CORRECTIONS[3]],
            "dominant_accuracy_true_weights": acc[CORRECTIONS[4]],
        },
        "tables": [
            {"title": "Weight estimates: ||w_hat - w||_2 (true w from the realised target counts)",
             "columns": ["target prior", "target n", "||w|| (true)", "BBSE error", "EM error"],
             "rows": [[n, int(mean_ci([r["n"] for r in by[n]])[0]), format_ci([r["w_norm"] for r in by[n]]),
                       format_ci([r["bbse_error"] for r in by[n]]), format_ci([r["em_error"] for r in by[n]])]
                      for n in names]},
            {"title": "Target accuracy by correction",
             "columns": ["target prior", *CORRECTIONS],
             "rows": [[n, *(format_ci([r["accuracy"][c] for r in by[n]], percent=True) for c in CORRECTIONS)]
                      for n in names]},
            {"title": "Accuracy gain over no correction, paired by seed (percentage points)",
             "columns": ["target prior", *CORRECTIONS[1:]],
             "rows": [[n, *(_points([r["accuracy"][c] - r["accuracy"]["none"] for r in by[n]]) for c in CORRECTIONS[1:])]
                      for n in names]},
        ],
        "figures": [
            {"file": "weights.png",
             "caption": f"True and estimated label weights, {CLASS_NAMES[DOMINANT]} at 50% (first seed)."},
            {"file": "error_vs_n.png",
             "caption": "Mean weight error against the number of unlabelled target images (log-log)."},
        ],
    }


# -------------------------------------------------------------------------------- source model
@dataclass
class SourceModel:
    """The trained source classifier with what the estimators need from held-out source data."""

    model: torch.nn.Module
    temperature: float
    confusion: torch.Tensor  # (K, K) joint, rows predicted, columns true
    prior: torch.Tensor  # (K,) training-set label frequencies
    train: tuple[torch.Tensor, torch.Tensor]  # the uint8 images and labels it was trained on
    val: tuple[torch.Tensor, torch.Tensor]


def _trainer(model: torch.nn.Module, task, cfg: LabelShiftConfig, seed: int, device: str) -> Trainer:
    config = TrainConfig(epochs=cfg.epochs, batch_size=128, lr=0.1, schedule="cosine", seed=seed, device=device)
    return Trainer(model, task, config, model_name=MODEL, model_config=config_to_dict(get_model(MODEL).make_config()),
                   progress=False, log=lambda *_: None)


def _train_source(data: FashionMNIST, cfg: LabelShiftConfig, seed: int, device: str) -> SourceModel:
    task = ImageClassification(batch_size=128, seed=seed, limit=cfg.n_train, data=data, val_size=cfg.n_holdout)
    seeding.seed_global(seed, "init")
    trainer = _trainer(create_model(MODEL), task, cfg, seed, device)
    trainer.fit()
    logits, labels = task.predict(trainer.model, "val")
    return SourceModel(
        model=trainer.model,
        temperature=fit_temperature(logits, labels),
        confusion=joint_confusion(logits.argmax(1), labels, K),
        prior=class_prior(task.splits["train"][1], K),
        train=task.splits["train"],
        val=task.splits["val"],
    )


@torch.no_grad()
def _logits(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits ``(n, K)`` for uint8 images ``(n, 28, 28)``."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(prepare_images(images[i : i + 2000]).to(device)).float().cpu()
                      for i in range(0, images.shape[0], 2000)])


# -------------------------------------------------------------------------------- one target setting
def _estimates(source: SourceModel, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BBSE and EM weight estimates ``(K,)`` from target logits ``(n, K)``."""
    bbse = bbse_weights(source.confusion, prediction_mean(logits.argmax(1), K))
    em = em_prior(torch.softmax(logits.double() / source.temperature, 1), source.prior).weights
    return bbse, em


def _evaluate_setting(name: str, prior: torch.Tensor, source: SourceModel, test: tuple[torch.Tensor, torch.Tensor],
                      cfg: LabelShiftConfig, seed: int, device: str) -> dict:
    test_x, test_y = test
    n = min(cfg.n_target, max_sample_size(test_y, prior))
    (x, y), realised = sample_with_prior(test_x, test_y, prior, n, seed=seed)
    true_w = realised / source.prior
    logits = _logits(source.model, x)
    bbse, em = _estimates(source, logits)
    calibrated = logits.double() / source.temperature
    accuracy = {
        "none": _accuracy(calibrated, y),
        CORRECTIONS[1]: _accuracy(adjust_logits(calibrated, bbse), y),
        CORRECTIONS[2]: _accuracy(adjust_logits(calibrated, em), y),
        CORRECTIONS[3]: _reweighted_accuracy(source, bbse, x, y, cfg, seed, device),
        CORRECTIONS[4]: _accuracy(adjust_logits(calibrated, true_w), y),
    }
    return {"setting": name, "n": n, "true_w": true_w, "bbse": bbse, "em": em, "w_norm": true_w.norm().item(),
            "bbse_error": (bbse - true_w).norm().item(), "em_error": (em - true_w).norm().item(),
            "accuracy": accuracy}


def _points(values: list[float]) -> str:
    mean, half = mean_ci(values)
    return f"{100 * mean:+.1f} ± {100 * half:.1f}"


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).double().mean().item()


def _reweighted_accuracy(source: SourceModel, weights: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                         cfg: LabelShiftConfig, seed: int, device: str) -> float:
    """Target accuracy of a model retrained on the source data with class weights w_y."""
    (tx, ty), (vx, vy) = source.train, source.val
    task = WeightedImageTask({"train": (tx, ty, weights[ty].float()), "val": (vx, vy, weights[vy].float()),
                              "target": (x, y, None)}, batch_size=128, seed=seed)
    seeding.seed_global(seed, "init")
    trainer = _trainer(create_model(MODEL), task, cfg, seed, device)
    trainer.fit()
    return task.evaluate(trainer.model, "target")["accuracy"]


def _error_curve(curves: dict[str, dict[int, list[float]]], source: SourceModel,
                 test: tuple[torch.Tensor, torch.Tensor], seed: int, sizes: tuple[int, ...]) -> None:
    """Append this seed's BBSE and EM errors for each target size of the one-dominant prior."""
    test_x, test_y = test
    prior = dominant_prior(K, DOMINANT, 0.5)
    for n in sizes:
        (x, _), realised = sample_with_prior(test_x, test_y, prior, min(n, max_sample_size(test_y, prior)),
                                             seed=seed + 7 * n)
        bbse, em = _estimates(source, _logits(source.model, x))
        true_w = realised / source.prior
        curves["BBSE"].setdefault(n, []).append((bbse - true_w).norm().item())
        curves["EM"].setdefault(n, []).append((em - true_w).norm().item())


# -------------------------------------------------------------------------------- plot
def _weights_plot(path, record: dict) -> None:
    """Grouped bars: true, BBSE and EM weight per class."""
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.27
    positions = torch.arange(K).double()
    for i, (key, label) in enumerate((("true_w", "true"), ("bbse", "BBSE"), ("em", "EM"))):
        ax.bar((positions + (i - 1) * width).numpy(), record[key].numpy(), width=width, label=label)
    ax.set_xticks(range(K), CLASS_NAMES, rotation=35, ha="right")
    ax.set(ylabel="w_y = q_target(y) / q_source(y)", title=f"Label weights: {record['setting']}")
    legend_outside(ax)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)
