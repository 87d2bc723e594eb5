"""Covariate shift: the from-scratch logistic regression against torch, importance weights against the
closed-form density ratio, weighted training, and the seed statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from divekit.errors import ShapeError
from divekit.registry import create_model
from divekit.cpu import single_thread
from divekit.shift import format_ci, mean_ci, t_quantile_975
from divekit.shift.covariate import (
    GaussianShift, LogisticRegression, WeightedImageTask, clip_and_normalize, effective_sample_size,
    fit_domain_classifier, importance_weights, weight_agreement,
)
from divekit.train.config import TrainConfig
from divekit.train.distributed import DistInfo
from divekit.train.trainer import Trainer

torch.set_num_threads(1)


def _toy(n: int = 300, d: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping classes (not separable), so the unpenalised optimum exists."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 3.0, d, dtype=torch.float64)
    logits = x @ torch.linspace(-1, 1, d, dtype=torch.float64) + 0.3
    y = (torch.rand(n, generator=g, dtype=torch.float64) < torch.sigmoid(logits)).double()
    return x, y


def _torch_objective(x, y, w, b, l2, a=None):
    """The same objective through torch's own log-loss (autograd reference)."""
    a = torch.ones_like(y) if a is None else a
    per = F.binary_cross_entropy_with_logits(x @ w + b, y, reduction="none")
    return (a * per).sum() / a.sum() + 0.5 * l2 * w.dot(w)


# -------------------------------------------------------------------------------- logistic regression
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_and_gradient_match_autograd(weighted):
    x, y = _toy()
    a = torch.rand(x.shape[0], dtype=torch.float64) * 2 if weighted else None
    model = LogisticRegression(l2=0.1, standardize=False).fit(x, y, max_iter=0)
    model.weight = torch.randn(x.shape[1], dtype=torch.float64)
    model.bias = torch.tensor(0.7, dtype=torch.float64)
    w = model.weight.clone().requires_grad_(True)
    b = model.bias.clone().requires_grad_(True)
    reference = _torch_objective(x, y, w, b, 0.1, a)
    reference.backward()
    grad_w, grad_b = model.gradient(x, y, a)
    assert model.loss(x, y, a) == pytest.approx(reference.item(), rel=1e-12)
    torch.testing.assert_close(grad_w, w.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad_b, b.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("l2", [0.0, 0.05])
def test_newton_fit_matches_lbfgs_optimum(l2):
    x, y = _toy(seed=1)
    model = LogisticRegression(l2=l2, standardize=False).fit(x, y)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = _torch_objective(x, y, w, b, l2)
        loss.backward()
        return loss

    opt.step(closure)
    torch.testing.assert_close(model.weight, w.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.bias, b.detach(), rtol=1e-5, atol=1e-6)


def test_standardising_does_not_change_the_unpenalised_fit():
    x, y = _toy(seed=2)
    x = x * torch.tensor([1.0, 100.0, 0.01, 5.0], dtype=torch.float64) + 3.0
    plain = LogisticRegression(l2=0.0, standardize=False).fit(x, y)
    scaled = LogisticRegression(l2=0.0, standardize=True).fit(x, y)
    torch.testing.assert_close(plain.decision_function(x), scaled.decision_function(x), rtol=1e-6, atol=1e-6)


def test_integer_sample_weights_equal_repeated_examples():
    x, y = _toy(n=60, seed=3)
    counts = torch.arange(60) % 3 + 1
    weighted = LogisticRegression(l2=0.01, standardize=False).fit(x, y, counts.double())
    repeated = LogisticRegression(l2=0.01, standardize=False).fit(x.repeat_interleave(counts, 0),
                                                                  y.repeat_interleave(counts))
    torch.testing.assert_close(weighted.weight, repeated.weight, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(weighted.bias, repeated.bias, rtol=1e-8, atol=1e-10)


def test_shape_errors_name_the_expected_shape():
    model = LogisticRegression()
    with pytest.raises(ShapeError, match=r"\(n, d\)"):
        model.fit(torch.randn(5), torch.zeros(5))
    with pytest.raises(ShapeError, match=r"\(5,\)"):
        model.fit(torch.randn(5, 2), torch.zeros(4))


# -------------------------------------------------------------------------------- importance weights
def test_gaussian_case_true_weights_equal_the_density_ratio():
    case = GaussianShift(dim=3, distance=1.2)
    x = torch.randn(50, 3, dtype=torch.float64) * 2
    source = torch.distributions.MultivariateNormal(torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    target = torch.distributions.MultivariateNormal(case.mu(), torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(case.true_weights(x), (target.log_prob(x) - source.log_prob(x)).exp())


@pytest.mark.parametrize("n_source, n_target", [(4000, 4000), (6000, 2000)])
def test_domain_classifier_weights_approximate_the_true_ratio(n_source, n_target):
    """Stated tolerance: Pearson r > 0.99 and mean absolute error under 10% of the mean weight,
    with unequal sample sizes too (the n_source / n_target correction)."""
    case = GaussianShift(dim=2, distance=1.0)
    g = torch.Generator().manual_seed(0)
    xs, xt = case.sample(n_source, "source", g), case.sample(n_target, "target", g)
    dc = fit_domain_classifier(xs, xt, l2=0.0)
    estimated = importance_weights(dc.decision_function(xs), n_source=n_source, n_target=n_target)
    agree = weight_agreement(estimated, case.true_weights(xs))
    assert agree["pearson"] > 0.99
    assert agree["relative_mae"] < 0.10
    # E_source[beta] = 1: the weights reweight the source into a distribution.
    assert estimated.mean().item() == pytest.approx(1.0, abs=0.08)


def test_importance_weighting_moves_a_linear_classifier_toward_the_target_optimum():
    case = GaussianShift(dim=2, distance=1.5)
    g = torch.Generator().manual_seed(1)
    xs, xt = case.sample(3000, "source", g), case.sample(3000, "target", g)
    x_eval = case.sample(20_000, "target", g)
    beta = importance_weights(fit_domain_classifier(xs, xt).decision_function(xs), n_source=3000, n_target=3000)
    y = case.label(xs).double()
    plain = (LogisticRegression().fit(xs, y).predict(x_eval) == case.label(x_eval)).double().mean()
    weighted = (LogisticRegression().fit(xs, y, beta).predict(x_eval) == case.label(x_eval)).double().mean()
    assert weighted > plain + 0.05


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.001, 1000.0), min_size=2, max_size=40), st.floats(1.5, 50.0))
def test_clip_and_normalize_properties(values, ratio):
    w = torch.tensor(values, dtype=torch.float64)
    out = clip_and_normalize(w, max_ratio=ratio)
    assert out.mean().item() == pytest.approx(1.0, rel=1e-9)
    assert out.max().item() <= ratio * out.median().item() * (1 + 1e-9)
    # Clipping is monotone: it never reorders weights.
    order = torch.argsort(w)
    assert (out[order].diff() >= -1e-12).all()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.0, 100.0), min_size=1, max_size=40).filter(lambda v: sum(v) > 1e-6))
def test_effective_sample_size_matches_numpy_and_bounds(values):
    ess = effective_sample_size(torch.tensor(values, dtype=torch.float64))
    a = np.array(values)
    assert ess == pytest.approx(a.sum() ** 2 / (a**2).sum(), rel=1e-9)
    assert 1 - 1e-9 <= ess <= len(values) + 1e-9


# -------------------------------------------------------------------------------- weighted training
def _tiny_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose class sets the brightness of a 7x7 block: learnable by softmax regression."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.randint(0, 40, (n, 28, 28), generator=g, dtype=torch.uint8)
    for k in range(10):
        r, c = divmod(k, 4)
        x[y == k, 7 * r : 7 * r + 7, 7 * c : 7 * c + 7] = 220
    return x, y


def test_weighted_step_is_the_weighted_mean_cross_entropy():
    x, y = _tiny_images(64, 0)
    w = torch.rand(64) + 0.1
    task = WeightedImageTask({"train": (x, y, w), "val": (x, y, None)}, batch_size=64)
    model = create_model("softmax-regression")
    batch = next(iter(task.train_loader(DistInfo())))
    out = task.step(model, batch)
    xb, yb, wb = batch
    reference = (wb * F.cross_entropy(model(xb), yb, reduction="none")).sum() / wb.sum()
    assert out.loss.item() == pytest.approx(reference.item(), rel=1e-5)  # the full set is one batch: sum w = n
    # Without weights the loss is the plain cross-entropy.
    plain = WeightedImageTask({"train": (x, y, None), "val": (x, y, None)}, batch_size=64)
    batch = next(iter(plain.train_loader(DistInfo())))
    assert plain.step(model, batch).loss.item() == pytest.approx(F.cross_entropy(model(batch[0]), batch[1]).item(), rel=1e-6)


def test_weighted_evaluation_matches_a_hand_computed_weighted_accuracy():
    x, y = _tiny_images(50, 1)
    w = torch.arange(1, 51).float()
    task = WeightedImageTask({"train": (x, y, None), "val": (x, y, w)}, batch_size=10, eval_batch_size=7)
    model = create_model("softmax-regression")
    logits, labels = task.predict(model, "val")
    hit = (logits.argmax(1) == labels).float()
    assert task.evaluate(model, "val")["accuracy"] == pytest.approx(((w * hit).sum() / w.sum()).item(), rel=1e-6)


def test_trainer_with_class_weights_shifts_predictions_toward_the_upweighted_class():
    """Labels independent of the images: the risk minimiser then predicts by the (weighted) class mix,
    so upweighting class 1 five-fold must raise its predicted probability on fresh images (5/6 against
    1/2 at the optimum). Averaged over three seeds: one small run on noise can lean either way."""
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 256, (400, 28, 28), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 2, (400,), generator=g)
    fresh = torch.randint(0, 256, (500, 28, 28), generator=g, dtype=torch.uint8)
    share = {"plain": 0.0, "weighted": 0.0}
    for seed in range(3):
        for name, w in (("plain", None), ("weighted", torch.where(y == 1, 5.0, 1.0))):
            torch.manual_seed(seed)
            model = create_model("softmax-regression", num_classes=2)
            task = WeightedImageTask({"train": (x, y, w), "val": (x, y, None),
                                      "fresh": (fresh, torch.zeros(500).long(), None)}, batch_size=50, seed=seed)
            Trainer(model, task, TrainConfig(epochs=3, batch_size=50, lr=0.01, device="cpu", seed=seed),
                    model_name="softmax-regression", model_config={}, progress=False, log=lambda *_: None).fit()
            logits, _ = task.predict(model, "fresh")
            share[name] += logits.softmax(1)[:, 1].mean().item() / 3
    assert share["weighted"] > share["plain"] + 0.1, share


# -------------------------------------------------------------------------------- statistics over seeds
def test_t_quantiles_match_scipy():
    from scipy import stats  # a test dependency: the reference the t quantiles are checked against

    for df in (1, 2, 5, 10, 29, 30):
        assert t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=6e-4)


def test_mean_ci_hand_computed():
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert math.isnan(mean_ci([5.0])[1])
    assert format_ci([0.5, 0.5], percent=True) == "50.0% ± 0.0"


def test_single_thread_restores_the_thread_count():
    before = torch.get_num_threads()
    with single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
