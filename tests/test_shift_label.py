"""Label shift: the constrained BBSE solve against brute force, both estimators on a synthetic model
whose confusion matrix and posteriors are known exactly, posterior adjustment and temperature scaling."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from divekit.errors import ShapeError
from divekit.shift.label import (
    adjust_logits, bbse_weights, constrained_least_squares, em_prior, fit_temperature, joint_confusion,
    prediction_mean, project_weights,
)

torch.set_num_threads(1)
F64 = torch.float64


# -------------------------------------------------------------------------------- a known model
# Three classes with x | y ~ N(m_y, 1), m = (-2, 0, 2), a uniform source prior, and the Bayes classifier
# of the source, which thresholds at -1 and 1. Everything about it has a closed form.
MEANS = torch.tensor([-2.0, 0.0, 2.0], dtype=F64)
SOURCE_PRIOR = torch.full((3,), 1 / 3, dtype=F64)
TARGET_PRIOR = torch.tensor([0.6, 0.3, 0.1], dtype=F64)
TRUE_W = TARGET_PRIOR / SOURCE_PRIOR


def _phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def known_confusion() -> torch.Tensor:
    """C_ij = P(predict i, y = j) = q_j P(x in cell i | y = j), cells (-inf, -1), [-1, 1), [1, inf)."""
    edges = [-math.inf, -1.0, 1.0, math.inf]
    c = torch.empty(3, 3, dtype=F64)
    for i in range(3):
        for j in range(3):
            c[i, j] = SOURCE_PRIOR[j] * (_phi(edges[i + 1] - MEANS[j].item()) - _phi(edges[i] - MEANS[j].item()))
    return c


def sample(prior: torch.Tensor, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.multinomial(prior, n, replacement=True, generator=g)
    return MEANS[y] + torch.randn(n, generator=g, dtype=F64), y


def source_log_posterior(x: torch.Tensor) -> torch.Tensor:
    """log p_s(y|x) ``(n, 3)`` from the Gaussian densities and the source prior."""
    log_joint = -0.5 * (x[:, None] - MEANS[None]) ** 2 + SOURCE_PRIOR.log()
    return log_joint - log_joint.logsumexp(1, keepdim=True)


def predict(x: torch.Tensor) -> torch.Tensor:
    return source_log_posterior(x).argmax(1)


def test_known_confusion_matches_a_large_sample():
    g = torch.Generator().manual_seed(0)
    x, y = sample(SOURCE_PRIOR, 200_000, g)
    empirical = joint_confusion(predict(x), y, 3)
    torch.testing.assert_close(empirical, known_confusion(), atol=4e-3, rtol=0)
    torch.testing.assert_close(known_confusion().sum(0), SOURCE_PRIOR)


# -------------------------------------------------------------------------------- the pieces
def test_joint_confusion_and_prediction_mean_hand_computed():
    predicted, labels = torch.tensor([0, 1, 1, 2]), torch.tensor([0, 0, 1, 1])
    expected = torch.tensor([[0.25, 0, 0], [0.25, 0.25, 0], [0, 0.25, 0]], dtype=F64)
    torch.testing.assert_close(joint_confusion(predicted, labels, 3), expected)
    torch.testing.assert_close(prediction_mean(predicted, 3), torch.tensor([0.25, 0.5, 0.25], dtype=F64))


def _random_feasible(q: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    z = torch.rand(q.numel(), generator=g, dtype=F64) * (torch.rand(q.numel(), generator=g, dtype=F64) < 0.7)
    z[0] += 0.1  # never all zero
    return z / (q @ z)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 8), st.integers(0, 10_000))
def test_projection_is_feasible_and_optimal(k, seed):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(k, generator=g, dtype=F64) * 3
    q = torch.rand(k, generator=g, dtype=F64) + 0.05
    q = q / q.sum()
    p = project_weights(v, q)
    assert (p >= 0).all() and (q @ p).item() == pytest.approx(1.0, abs=1e-12)
    # Projection onto a convex set: (v - p).(z - p) <= 0 for every feasible z (vertices included).
    vertices = [torch.eye(k, dtype=F64)[i] / q[i] for i in range(k)]
    for z in vertices + [_random_feasible(q, g) for _ in range(20)]:
        assert ((v - p) @ (z - p)).item() <= 1e-10
    # A feasible point is its own projection.
    z = _random_feasible(q, g)
    torch.testing.assert_close(project_weights(z, q), z)


def brute_force_constrained_ls(c, mu, q):
    """Enumerate supports; on each, solve the equality-constrained least squares by its KKT system."""
    k, best = q.numel(), None
    for r in range(1, k + 1):
        for support in itertools.combinations(range(k), r):
            s = list(support)
            a, qs = c[:, s], q[s]
            kkt = torch.zeros(r + 1, r + 1, dtype=F64)
            kkt[:r, :r], kkt[:r, r], kkt[r, :r] = 2 * a.T @ a, qs, qs
            rhs = torch.cat([2 * a.T @ mu, torch.ones(1, dtype=F64)])
            solution = torch.linalg.lstsq(kkt, rhs.unsqueeze(1)).solution.flatten()[:r]
            if (solution < -1e-12).any():
                continue
            w = torch.zeros(k, dtype=F64)
            w[s] = solution.clamp_min(0)
            if abs((q @ w).item() - 1) > 1e-9:
                continue
            value = ((c @ w - mu) ** 2).sum().item()
            if best is None or value < best[0] - 1e-15:
                best = (value, w)
    return best


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 4), st.integers(0, 10_000))
def test_constrained_least_squares_matches_brute_force(k, seed):
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(k, k, generator=g, dtype=F64) + torch.eye(k, dtype=F64) * 0.5
    mu = torch.randn(k, generator=g, dtype=F64)
    q = torch.rand(k, generator=g, dtype=F64) + 0.05
    q = q / q.sum()
    w = constrained_least_squares(c, mu, q)
    value, reference = brute_force_constrained_ls(c, mu, q)
    assert ((c @ w - mu) ** 2).sum().item() == pytest.approx(value, rel=1e-7, abs=1e-10)
    torch.testing.assert_close(w, reference, atol=1e-6, rtol=1e-6)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 10), st.integers(0, 10_000))
def test_bbse_recovers_weights_exactly_from_exact_moments(k, seed):
    """mu = C w with an invertible C: the estimate is w itself (and it satisfies q.w = 1)."""
    g = torch.Generator().manual_seed(seed)
    conditional = torch.rand(k, k, generator=g, dtype=F64) + k * torch.eye(k, dtype=F64)  # P(f = i | y = j)
    conditional = conditional / conditional.sum(0, keepdim=True)
    q_s = torch.rand(k, generator=g, dtype=F64) + 0.1
    q_s = q_s / q_s.sum()
    q_t = torch.rand(k, generator=g, dtype=F64) ** 2
    q_t = q_t / q_t.sum()
    c = conditional * q_s
    w = bbse_weights(c, c @ (q_t / q_s))
    torch.testing.assert_close(w, q_t / q_s, atol=1e-8, rtol=1e-7)


def test_shape_errors_name_the_expected_shape():
    with pytest.raises(ShapeError, match=r"\(3, 3\)"):
        constrained_least_squares(torch.eye(2), torch.ones(3), torch.ones(3) / 3)
    with pytest.raises(ShapeError, match=r"\(n, K\)"):
        em_prior(torch.ones(3), torch.ones(3) / 3)


# -------------------------------------------------------------------------------- consistency
def _errors(n: int, seeds: int = 4) -> tuple[float, float]:
    """Mean max-norm error of BBSE (known C) and EM (exact posteriors) with n target samples."""
    bbse_err, em_err = [], []
    for s in range(seeds):
        g = torch.Generator().manual_seed(100 * n + s)
        x, _ = sample(TARGET_PRIOR, n, g)
        bbse = bbse_weights(known_confusion(), prediction_mean(predict(x), 3), SOURCE_PRIOR)
        em = em_prior(source_log_posterior(x).exp(), SOURCE_PRIOR).weights
        bbse_err.append((bbse - TRUE_W).abs().max().item())
        em_err.append((em - TRUE_W).abs().max().item())
    return sum(bbse_err) / seeds, sum(em_err) / seeds


def test_both_estimators_recover_the_true_weights_as_the_sample_grows():
    """Stated tolerance: max |w_hat - w| below 0.05 (weights range 0.3-1.8) with 100,000 target
    samples, and the error shrinks with n (roughly as 1 / sqrt(n): 100 x the data, ~10 x less error)."""
    small, large = _errors(1000), _errors(100_000)
    for estimator, (e_small, e_large) in zip(("BBSE", "EM"), zip(small, large)):
        assert e_large < 0.05, estimator
        assert e_large < e_small / 4, estimator


def test_bbse_with_an_estimated_confusion_matrix():
    g = torch.Generator().manual_seed(5)
    xs, ys = sample(SOURCE_PRIOR, 100_000, g)
    xt, _ = sample(TARGET_PRIOR, 100_000, g)
    w = bbse_weights(joint_confusion(predict(xs), ys, 3), prediction_mean(predict(xt), 3))
    assert (w - TRUE_W).abs().max().item() < 0.06


def test_em_reaches_the_maximum_likelihood_prior():
    """EM's fixed point maximises sum_i log sum_y (pi_y / pi_s,y) p_s(y|x_i); check it against a direct
    maximisation over the simplex (softmax parametrisation, L-BFGS)."""
    g = torch.Generator().manual_seed(6)
    x, _ = sample(TARGET_PRIOR, 3000, g)
    probs = source_log_posterior(x).exp()
    result = em_prior(probs, SOURCE_PRIOR, tol=1e-12, max_iter=10_000)
    assert result.converged
    theta = torch.zeros(3, dtype=F64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        pi = torch.softmax(theta, 0)
        loss = -((probs * (pi / SOURCE_PRIOR)).sum(1).log().mean())
        loss.backward()
        return loss

    opt.step(closure)
    torch.testing.assert_close(result.prior, torch.softmax(theta.detach(), 0), atol=1e-5, rtol=0)
    torch.testing.assert_close(result.weights, result.prior / SOURCE_PRIOR)


# -------------------------------------------------------------------------------- correction
def test_posterior_adjustment_gives_the_target_bayes_posterior():
    x = torch.linspace(-4, 4, 41, dtype=F64)
    adjusted = torch.log_softmax(adjust_logits(source_log_posterior(x), TRUE_W), 1)
    log_joint = -0.5 * (x[:, None] - MEANS[None]) ** 2 + TARGET_PRIOR.log()
    torch.testing.assert_close(adjusted, log_joint - log_joint.logsumexp(1, keepdim=True))


def test_posterior_adjustment_improves_target_accuracy():
    g = torch.Generator().manual_seed(7)
    x, y = sample(TARGET_PRIOR, 50_000, g)
    plain = (predict(x) == y).double().mean()
    adjusted = (adjust_logits(source_log_posterior(x), TRUE_W).argmax(1) == y).double().mean()
    assert adjusted > plain + 0.01


def test_fit_temperature_recovers_the_generating_temperature():
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(20_000, 5, generator=g, dtype=F64) * 3
    labels = torch.multinomial(torch.softmax(logits / 2.0, 1), 1, generator=g).flatten()
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(2.0, rel=0.05)
    # It is the minimiser of the held-out NLL on a fine grid (independent of the search).
    grid = torch.linspace(1.5, 2.5, 201, dtype=F64)
    nll = torch.stack([torch.nn.functional.cross_entropy(logits / tt, labels) for tt in grid])
    assert t == pytest.approx(grid[nll.argmin()].item(), abs=0.01)
