"""Covariate shift: importance weights from a domain classifier, checked where the truth is known.

Part 1 (synthetic): source N(0, I_2), target N((1.5, 0), I_2), labels y = 1[x_2 > sin(2 x_1)] in both.
A logistic-regression domain classifier estimates beta(x) = p_t(x)/p_s(x), compared with the closed
form; a linear classifier trained on the labelled source is scored on the target unweighted, with the
estimated weights and with the true ones.

Part 2 (Fashion-MNIST): the source training set is biased toward bright images (see
``divekit.data.shift``); the target is the unbiased test set. Softmax regression, trained by the
Trainer (SGD, cosine schedule), is fitted unweighted, importance-weighted (domain classifier on 7x7
average-pooled images, weights clipped at 10x the median, mean 1), weighted by the true ratio Z / s(x),
and on an unbiased "oracle" set of the same size. Every figure is over several seeds, reported as
mean ± 95% t interval (t_{0.975, n-1} sd / sqrt(n)).
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from divekit import seeding
from divekit.cpu import single_thread  # noqa: E402
from divekit.data.fashion_mnist import load_fashion_mnist  # noqa: E402
from divekit.data.shift import covariate_shift_split, mean_brightness  # noqa: E402
from divekit.experiments.base import ExperimentContext  # noqa: E402
from divekit.plots import legend_outside, save_figure  # noqa: E402
from divekit.registry import (  # noqa: E402
    config_to_dict,
    create_model,
    get_model,
    register_experiment,
)
from divekit.shift import format_ci, mean_ci  # noqa: E402
from divekit.shift.covariate import (  # noqa: E402
    GaussianShift,
    LogisticRegression,
    WeightedImageTask,
    clip_and_normalize,
    effective_sample_size,
    fit_domain_classifier,
    importance_weights,
    weight_agreement,
)
from divekit.train.config import TrainConfig  # noqa: E402
from divekit.train.trainer import Trainer  # noqa: E402

MODEL = "softmax-regression"
METHODS = ("unweighted", "importance-weighted (estimated)", "importance-weighted (true ratio)", "oracle")
METRIC_KEYS = dict(zip(METHODS, ("unweighted", "estimated_weights", "true_weights", "oracle")))


@dataclass(frozen=True)
class CovariateShiftConfig:
    seeds: int = 5  # repetitions behind every mean and interval
    synthetic_sizes: tuple[int, ...] = (250, 1000, 4000)  # source = target sample sizes of part 1
    n_source: int = 5000  # biased Fashion-MNIST training images (the oracle set has as many)
    n_target: int = 5000  # unlabelled target images the domain classifier sees
    strength: float = 3.0  # brightness bias: logit of selection per standard deviation of brightness
    l2: float = 1e-2  # ridge penalty of the domain classifier (on standardised features)
    epochs: int = 5  # softmax-regression epochs
    clip: float = 10.0  # weights clipped at this multiple of their median


def _config(ctx: ExperimentContext) -> CovariateShiftConfig:
    if ctx.quick:
        return CovariateShiftConfig()
    return CovariateShiftConfig(seeds=10, synthetic_sizes=(250, 1000, 4000, 16000), n_source=10_000,
                                n_target=10_000, epochs=10)


@register_experiment(
    "covariate-shift",
    chapter="shift",
    title="Covariate shift: domain-classifier importance weights",
    description="importance weights from a from-scratch logistic regression, on Gaussians and on "
                "brightness-biased Fashion-MNIST",
    modes=("Quick: 5 seeds, 5,000 source and target images; full: 10 seeds, 10,000 of each and a "
           "16,000-point synthetic size."),
)
def run(ctx: ExperimentContext) -> dict:
    cfg = _config(ctx)
    with single_thread():
        synthetic_rows, scatter, synthetic_r = _synthetic(cfg, ctx.seed)
        fashion = _fashion(cfg, ctx)
    _scatter_plot(ctx.path("synthetic_weights.png"), *scatter)
    _brightness_plot(ctx.path("brightness.png"), fashion["brightness"])
    _accuracy_plot(ctx.path("target_accuracy.png"), fashion["accuracy"])
    acc = {m: mean_ci(v)[0] for m, v in fashion["accuracy"].items()}
    big = synthetic_rows[-1]
    return {
        "summary": (
            f"Synthetic Gaussians ({cfg.seeds} seeds): with {big[0]} source and target points the estimated weights "
            f"correlate {big[1]} with the true ratio (relative mean absolute error {big[3]}), and weighting lifts a "
            f"linear classifier's target accuracy from {big[4]} to {big[5]} (true weights: {big[6]}). "
            f"Fashion-MNIST with a brightness-biased source of {cfg.n_source} images ({cfg.seeds} seeds, "
            f"softmax regression, {cfg.epochs} epochs): target test accuracy {acc[METHODS[0]]:.1%} unweighted, "
            f"{acc[METHODS[1]]:.1%} with estimated weights, {acc[METHODS[2]]:.1%} with the true ratio and "
            f"{acc[METHODS[3]]:.1%} for the oracle trained on unbiased data. Intervals: mean ± t_0.975 sd/sqrt(n)."
        ),
        "metrics": {
            "synthetic_weight_pearson": mean_ci(synthetic_r)[0],
            "fashion_weight_pearson": mean_ci(fashion["pearson"])[0],
            **{f"target_accuracy_{METRIC_KEYS[m]}": v for m, v in acc.items()},
            "gain_estimated_weights": mean_ci(_paired_gain(fashion["accuracy"], METHODS[1]))[0],
        },
        "tables": [
            {"title": "Synthetic Gaussians: estimated vs true importance weights, and a linear classifier's "
                      "target accuracy",
             "columns": ["n source = n target", "Pearson r", "Pearson r of logs", "relative MAE",
                         "target acc. unweighted", "estimated weights", "true weights"],
             "rows": synthetic_rows},
            {"title": f"Fashion-MNIST, brightness-biased source ({cfg.n_source} images): target test accuracy",
             "columns": ["training", "target test accuracy", "gain over unweighted (paired)",
                         "source-val accuracy (weighted as trained)", "per seed"],
             "rows": [[m, format_ci(fashion["accuracy"][m], percent=True),
                       _points(_paired_gain(fashion["accuracy"], m)),
                       format_ci(fashion["val"][m], percent=True),
                       ", ".join(f"{a:.3f}" for a in fashion["accuracy"][m])] for m in METHODS]},
            {"title": "Fashion-MNIST importance weights (estimated vs true ratio Z / s(x))",
             "columns": ["Pearson r", "Pearson r of logs", "relative MAE", "effective sample size (estimated, clipped)",
                         "effective sample size (true)"],
             "rows": [[format_ci(fashion["pearson"]), format_ci(fashion["log_pearson"]),
                       format_ci(fashion["mae"]), format_ci(fashion["ess"], digits=0),
                       format_ci(fashion["ess_true"], digits=0)]]},
        ],
        "figures": [
            {"file": "synthetic_weights.png",
             "caption": "Synthetic Gaussians: domain-classifier weights against the true ratio p_t(x)/p_s(x)."},
            {"file": "brightness.png",
             "caption": "Mean image brightness of the biased source and of the target (test) images."},
            {"file": "target_accuracy.png",
             "caption": "Fashion-MNIST target test accuracy by training scheme: mean with 95% t interval (red), "
                        "each seed (grey)."},
        ],
    }


def _paired_gain(accuracy: dict[str, list[float]], method: str) -> list[float]:
    """Per-seed accuracy of ``method`` minus the unweighted run on the same split (seed effects cancel)."""
    return [a - b for a, b in zip(accuracy[method], accuracy[METHODS[0]])]


def _points(values: list[float]) -> str:
    """A difference of accuracies in percentage points with its 95% t interval."""
    mean, half = mean_ci(values)
    return f"{100 * mean:+.1f} ± {100 * half:.1f} pts"


# -------------------------------------------------------------------------------- part 1: Gaussians
def _synthetic(cfg: CovariateShiftConfig, seed: int) -> tuple[list[list], tuple, list[float]]:
    """Table rows per sample size, (true, estimated) weights of one run, and the largest size's r per seed."""
    case = GaussianShift(dim=2, distance=1.5)
    rows, scatter = [], None
    for n in cfg.synthetic_sizes:
        stats: dict[str, list[float]] = {k: [] for k in ("r", "log_r", "mae", "none", "est", "true")}
        for s in range(cfg.seeds):
            g = seeding.generator(seed, "data", s)
            xs, xt = case.sample(n, "source", g), case.sample(n, "target", g)
            estimated = importance_weights(fit_domain_classifier(xs, xt, l2=1e-4).decision_function(xs),
                                           n_source=n, n_target=n)
            true = case.true_weights(xs)
            agree = weight_agreement(estimated, true)
            stats["r"].append(agree["pearson"])
            stats["log_r"].append(agree["log_pearson"])
            stats["mae"].append(agree["relative_mae"])
            x_eval = case.sample(20_000, "target", g)
            y_src, y_eval = case.label(xs).double(), case.label(x_eval)
            for key, w in (("none", None), ("est", clip_and_normalize(estimated, max_ratio=None)), ("true", true)):
                clf = LogisticRegression(l2=1e-4).fit(xs, y_src, w)
                stats[key].append((clf.predict(x_eval) == y_eval).double().mean().item())
            if n == cfg.synthetic_sizes[-1] and s == 0:
                scatter = (true, estimated)
        rows.append([n, format_ci(stats["r"]), format_ci(stats["log_r"]), format_ci(stats["mae"]),
                     format_ci(stats["none"], percent=True), format_ci(stats["est"], percent=True),
                     format_ci(stats["true"], percent=True)])
    return rows, scatter, stats["r"]


# -------------------------------------------------------------------------------- part 2: Fashion-MNIST
def _fashion(cfg: CovariateShiftConfig, ctx: ExperimentContext) -> dict:
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    out: dict = {"accuracy": {m: [] for m in METHODS}, "val": {m: [] for m in METHODS},
                 "pearson": [], "log_pearson": [], "mae": [], "ess": [], "ess_true": []}
    for s in range(cfg.seeds):
        seed = ctx.seed + s
        split = covariate_shift_split(train, test, n_source=cfg.n_source, n_target=cfg.n_target,
                                      strength=cfg.strength, seed=seed)
        if s == 0:
            out["brightness"] = (mean_brightness(split.source[0]), mean_brightness(split.test[0]))
        estimated = _estimate_weights(split.source[0], split.target_inputs, cfg.l2)
        true = split.true_weights(split.source[0])
        agree = weight_agreement(estimated, true)
        out["pearson"].append(agree["pearson"])
        out["log_pearson"].append(agree["log_pearson"])
        out["mae"].append(agree["relative_mae"])
        weights = clip_and_normalize(estimated, max_ratio=cfg.clip)
        # The sample size that matters is the training part's: _train holds out the first tenth.
        n_val = _held_out(split.source[0].shape[0])
        out["ess"].append(effective_sample_size(weights[n_val:]))
        out["ess_true"].append(effective_sample_size(true[n_val:]))
        runs = {METHODS[0]: (split.source, None), METHODS[1]: (split.source, weights),
                METHODS[2]: (split.source, true), METHODS[3]: (split.oracle, None)}
        for method, (data, w) in runs.items():
            test_acc, val_acc = _train(data, w, split.test, cfg, seed, ctx.device)
            out["accuracy"][method].append(test_acc)
            out["val"][method].append(val_acc)
    return out


def _held_out(n: int) -> int:
    """How many of ``n`` source images (the first ones) are held out for validation."""
    return n // 10


def _estimate_weights(source: torch.Tensor, target: torch.Tensor, l2: float) -> torch.Tensor:
    """Domain-classifier weights ``(n_source,)`` for uint8 images ``(n, 28, 28)``.

    The classifier sees 7x7 average-pooled images (49 features): enough to see brightness and
    shape, few enough that it cannot single out individual images by their pixel noise.
    """
    xs = F.avg_pool2d(source.unsqueeze(1).double() / 255, 4).flatten(1)  # (n_source, 49)
    xt = F.avg_pool2d(target.unsqueeze(1).double() / 255, 4).flatten(1)  # (n_target, 49)
    logits = fit_domain_classifier(xs, xt, l2=l2).decision_function(xs)
    return importance_weights(logits, n_source=xs.shape[0], n_target=xt.shape[0])


def _train(data: tuple[torch.Tensor, torch.Tensor], weights: torch.Tensor | None,
           test: tuple[torch.Tensor, torch.Tensor], cfg: CovariateShiftConfig, seed: int,
           device: str) -> tuple[float, float]:
    """Target test accuracy and (weighted) held-out source accuracy of softmax regression."""
    x, y = data
    n_val = _held_out(x.shape[0])
    w_train = None if weights is None else weights[n_val:]
    w_val = None if weights is None else weights[:n_val]
    task = WeightedImageTask({"train": (x[n_val:], y[n_val:], w_train), "val": (x[:n_val], y[:n_val], w_val),
                              "test": (*test, None)}, batch_size=128, seed=seed)
    seeding.seed_global(seed, "init")
    model = create_model(MODEL)
    config = TrainConfig(epochs=cfg.epochs, batch_size=128, lr=0.1, schedule="cosine", seed=seed,
                         device=device)
    trainer = Trainer(model, task, config, model_name=MODEL, model_config=config_to_dict(get_model(MODEL).make_config()),
                      progress=False, log=lambda *_: None)
    trainer.fit()
    return task.evaluate(trainer.model, "test")["accuracy"], task.evaluate(trainer.model, "val")["accuracy"]


# -------------------------------------------------------------------------------- plots
def _scatter_plot(path, true: torch.Tensor, estimated: torch.Tensor) -> None:
    """Estimated against true weights on log axes, with the identity line."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(true.numpy(), estimated.numpy(), s=4, alpha=0.4)
    lo, hi = min(true.min(), estimated.min()).item(), max(true.max(), estimated.max()).item()
    ax.plot([lo, hi], [lo, hi], color="black", lw=1, label="estimated = true")
    ax.set(xscale="log", yscale="log", xlabel="true weight p_t(x)/p_s(x)", ylabel="estimated weight",
           title="Domain-classifier importance weights")
    ax.legend(loc="upper left")  # the points lie on the diagonal: this corner is empty
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def _brightness_plot(path, brightness: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Overlaid normalised histograms of mean brightness, source against target."""
    source, target = brightness
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = torch.linspace(0, max(source.max(), target.max()).item(), 40).numpy()
    ax.hist(target.numpy(), bins=bins, density=True, alpha=0.5, label="target (test set)")
    ax.hist(source.numpy(), bins=bins, density=True, alpha=0.5, label="biased source")
    ax.set(xlabel="mean pixel intensity", ylabel="density", title="Input shift by brightness")
    legend_outside(ax)
    save_figure(fig, path)


def _accuracy_plot(path, accuracy: dict[str, list[float]]) -> None:
    """Mean accuracy per training scheme as a point with its 95% t interval, seeds as faint dots."""
    names = list(accuracy)
    fig, ax = plt.subplots(figsize=(6.5, 3))
    for i, name in enumerate(names):
        mean, half = mean_ci(accuracy[name])
        ax.scatter(accuracy[name], [i] * len(accuracy[name]), color="#999999", s=12, zorder=1)
        ax.errorbar([mean], [i], xerr=[0 if half != half else half], fmt="o", color="#c44e52", capsize=4, zorder=2)
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="target test accuracy", title="Fashion-MNIST under covariate shift")
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    save_figure(fig, path)
