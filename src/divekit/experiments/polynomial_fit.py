"""Under- and overfitting with polynomial regression: three fits, a complexity sweep, a learning curve.

Data: ``y = 5 + 1.2 x - 3.4 x^2/2! + 5.6 x^3/3! + eps``, ``x ~ N(0, 1)``, ``eps ~ N(0, 0.1^2)``
(``divekit.data.synthetic.polynomial_data``). A model of degree ``d`` is linear in the features
``(1, x, x^2/2!, .., x^d/d!)``: ``y_hat = phi(x) . w`` with ``w`` of shape ``(d + 1,)``, scored by the
mean squared error (the noise floor is ``0.1^2 = 0.01``).

1. The three fits, trained by minibatch SGD as a reader would (lr 0.01, batch 10): degree 3 (the
   truth), degree 1 (too simple: underfits) and degree 20 on only 15 examples (overfits), with train
   and test loss per epoch.
2. Beyond that: the exact least-squares fit of every degree 0..20, and of three degrees for growing
   training sets, averaged over many data seeds. Least squares gives the best fit a model class can
   reach, so the curves show capacity rather than how far an optimiser got. Errors are averaged as a
   geometric mean: one unlucky draw can exceed the others by orders of magnitude, and an arithmetic
   mean would report that draw alone.
"""

from __future__ import annotations

import math

import torch

from divekit.data.loader import TensorLoader
from divekit.data.synthetic import RegressionData, polynomial_data
from divekit.experiments.base import ExperimentContext
from divekit.cpu import single_thread
from divekit.plots import line_plot
from divekit.registry import register_experiment

MAX_DEGREE = 20
# (label, figure file, degree, training examples): the book's normal, underfitting and overfitting fits.
FITS = [
    ("degree 3 (matches the data)", "fit_degree3.png", 3, 100),
    ("degree 1 (underfits)", "fit_degree1.png", 1, 100),
    ("degree 20 on 15 examples (overfits)", "fit_degree20.png", 20, 15),
]
CURVE_DEGREES = (1, 3, 8)  # underfit, right, too flexible: for the learning curve
TEST_EXAMPLES = 1000


def mse(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> float:
    """Mean squared error of ``x (n, d) @ w (d,)`` against ``y (n,)``."""
    return (x @ w - y).pow(2).mean().item()


def sgd_fit(data: RegressionData, degree: int, n_train: int, *, epochs: int, lr: float = 0.01,
            batch_size: int = 10, seed: int = 0) -> tuple[torch.Tensor, list[tuple[float, float]]]:
    """Minibatch SGD on the squared error from ``w = 0``.

    Returns ``w`` ``(degree + 1,)`` and the (train MSE, test MSE) after every epoch.
    """
    x, y = data.train_x[:n_train, : degree + 1], data.train_y[:n_train]
    test_x = data.test_x[:, : degree + 1]
    w = torch.zeros(degree + 1, dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.SGD([w], lr=lr)
    loader = TensorLoader(x, y, batch_size=min(batch_size, n_train), shuffle=True, seed=seed)
    history = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for xb, yb in loader:
            loss = (xb @ w - yb).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            history.append((mse(x, y, w), mse(test_x, data.test_y, w)))
    return w.detach(), history


def least_squares(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The minimum-norm least-squares ``w (d,)`` for ``x (n, d)``, ``y (n,)``.

    Columns are scaled to unit norm first: ``x^20/20!`` is some 1e-18 the size of the constant
    column, and without scaling the solver would treat the high powers as numerically absent.
    """
    scale = x.norm(dim=0).clamp_min(1e-300)
    w = torch.linalg.lstsq(x / scale, y.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    return w / scale


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(max(v, 1e-300)) for v in values) / len(values))


def _errors(data: RegressionData, degree: int, n_train: int) -> tuple[float, float]:
    x, y = data.train_x[:n_train, : degree + 1], data.train_y[:n_train]
    w = least_squares(x, y)
    return mse(x, y, w), mse(data.test_x[:, : degree + 1], data.test_y, w)


def complexity_sweep(n_train: int, seeds: int, base_seed: int = 0) -> list[tuple[int, float, float]]:
    """``(degree, train MSE, test MSE)`` for degrees 0..20, geometric means over ``seeds`` data sets."""
    sets = [polynomial_data(n_train, TEST_EXAMPLES, max_degree=MAX_DEGREE, seed=base_seed + s) for s in range(seeds)]
    rows = []
    for degree in range(MAX_DEGREE + 1):
        errors = [_errors(d, degree, n_train) for d in sets]
        rows.append((degree, geometric_mean([e[0] for e in errors]), geometric_mean([e[1] for e in errors])))
    return rows


def learning_curve(sizes: list[int], seeds: int, base_seed: int = 0) -> dict[int, list[tuple[int, float, float]]]:
    """For each degree in ``CURVE_DEGREES``: ``(n_train, train MSE, test MSE)`` geometric means over seeds."""
    sets = [polynomial_data(max(sizes), TEST_EXAMPLES, max_degree=MAX_DEGREE, seed=base_seed + s)
            for s in range(seeds)]
    curves: dict[int, list[tuple[int, float, float]]] = {}
    for degree in CURVE_DEGREES:
        curves[degree] = []
        for n in sizes:  # the first n examples of each set: nested training sets
            errors = [_errors(d, degree, n) for d in sets]
            curves[degree].append((n, geometric_mean([e[0] for e in errors]),
                                   geometric_mean([e[1] for e in errors])))
    return curves


@register_experiment(
    "polynomial-fit",
    chapter="generalization",
    title="Underfitting and overfitting: polynomial regression",
    description="degree 1, 3 and 20 fits by SGD; least-squares error against degree and training-set size",
    modes=("Quick: 10 seeds, 200 epochs (600 for the overfitting degree-20 fit); full: 100 seeds, 400 "
           "epochs (2,000)."),
)
def run(ctx: ExperimentContext) -> dict:
    with single_thread():
        return _run(ctx)


def _run(ctx: ExperimentContext) -> dict:
    epochs = ctx.pick(200, 400)
    overfit_epochs = ctx.pick(600, 2000)
    seeds = ctx.pick(10, 100)
    sweep_train = 50
    sizes = [10, 12, 15, 20, 30, 50, 100, 200, 500, 1000]
    data = polynomial_data(100, TEST_EXAMPLES, max_degree=MAX_DEGREE, seed=ctx.seed)

    fit_rows, figures = [], []
    for label, file, degree, n_train in FITS:
        n_epochs = overfit_epochs if degree == MAX_DEGREE else epochs
        w, history = sgd_fit(data, degree, n_train, epochs=n_epochs, seed=ctx.seed)
        xs = list(range(1, n_epochs + 1))
        line_plot(ctx.path(file), {(f"degree {degree}", "train"): (xs, [h[0] for h in history]),
                                   (f"degree {degree}", "test"): (xs, [h[1] for h in history])},
                  xlabel="epoch", ylabel="mean squared error", title=label, logy=True)
        figures.append({"file": file, "caption": f"Train and test loss per epoch, {label}, SGD lr 0.01."})
        coefficients = ", ".join(f"{v:.3f}" for v in w[:4].tolist())
        fit_rows.append([label, n_train, n_epochs, history[-1][0], history[-1][1], coefficients])

    sweep = complexity_sweep(sweep_train, seeds, base_seed=ctx.seed)
    degrees = [r[0] for r in sweep]
    line_plot(ctx.path("complexity.png"), {("least squares", "train"): (degrees, [r[1] for r in sweep]),
                                           ("least squares", "test"): (degrees, [r[2] for r in sweep])},
              xlabel="polynomial degree", ylabel="mean squared error (geometric mean over seeds)",
              title=f"Error against model complexity ({sweep_train} training examples)", logy=True)
    curves = learning_curve(sizes, seeds, base_seed=ctx.seed)
    series = {}
    for degree, points in curves.items():
        series[f"degree {degree}", "test"] = ([p[0] for p in points], [p[2] for p in points])
        series[f"degree {degree}", "train"] = ([p[0] for p in points], [p[1] for p in points])
    line_plot(ctx.path("learning_curve.png"), series, xlabel="training examples", logx=True, logy=True,
              ylabel="mean squared error (geometric mean over seeds)", title="Learning curves (least squares)")
    figures += [
        {"file": "complexity.png", "caption": f"Least-squares train and test error against degree, "
                                              f"{sweep_train} training examples, {seeds} data seeds."},
        {"file": "learning_curve.png", "caption": f"Train and test error against training-set size for degrees "
                                                  f"{', '.join(map(str, CURVE_DEGREES))}, {seeds} data seeds."},
    ]
    best = min(sweep, key=lambda r: r[2])
    right, under, over = fit_rows
    return {
        "summary": (
            f"SGD fits: degree 3 reaches test MSE {right[4]:.4f} (noise floor 0.01) with coefficients "
            f"({right[5]}) against the true (5, 1.2, -3.4, 5.6); degree 1 stalls at train {under[3]:.2f} / test "
            f"{under[4]:.2f} (underfitting: both high); degree 20 on 15 examples reaches train {over[3]:.4f} but test "
            f"{over[4]:.4f} (overfitting: a gap). Least squares over {seeds} seeds with {sweep_train} examples: test "
            f"error is lowest at degree {best[0]} ({best[2]:.4f}) and grows to {sweep[-1][2]:.3g} at degree 20 while "
            f"training error keeps falling, the U-shaped curve. More data closes the train/test gap for every "
            f"degree (degree {CURVE_DEGREES[-1]}: test {curves[CURVE_DEGREES[-1]][0][2]:.3g} with {sizes[0]} examples, "
            f"{curves[CURVE_DEGREES[-1]][-1][2]:.3g} with {sizes[-1]}), but cannot bring the degree-1 model below "
            f"its bias ({curves[1][-1][2]:.3g} with {sizes[-1]} examples)."
        ),
        "metrics": {
            "degree3_test_mse": right[4], "degree1_test_mse": under[4], "degree20_train_mse": over[3],
            "degree20_test_mse": over[4], "best_degree": best[0], "best_degree_test_mse": best[2],
            "degree20_lstsq_test_mse": sweep[-1][2], "degree1_lstsq_test_mse_most_data": curves[1][-1][2],
        },
        "tables": [
            {"title": "SGD fits (final epoch)", "columns": ["model", "train examples", "epochs", "train MSE",
                                                            "test MSE", "first 4 coefficients"], "rows": fit_rows},
            {"title": f"Least squares against degree ({sweep_train} training examples, geometric mean of {seeds})",
             "columns": ["degree", "train MSE", "test MSE"], "rows": [list(r) for r in sweep]},
        ],
        "figures": figures,
    }
