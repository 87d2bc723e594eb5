"""Label shift: the prior p(y) changes between source and target, the class conditionals p(x|y) do not.

Everything then hinges on the weights w_y = q_target(y) / q_source(y), estimated here two ways from a
classifier f trained on source data and unlabelled target inputs.

Black-box shift estimation (BBSE). With the joint confusion matrix of f on held-out source data,
C_ij = P_source(f(x) = i, y = j), and the mean prediction on the target, mu_i = P_target(f(x) = i),
label shift gives  mu_i = sum_j P(f = i | y = j) q_target(j) = sum_j C_ij w_j,  i.e.  C w = mu.
The estimate is the least-squares solution constrained to the feasible set

    W = { w : w >= 0,  sum_y w_y q_y = 1 }      (q: the source prior; target priors are >= 0, sum to 1)

computed by accelerated projected gradient (FISTA, with adaptive restart) and the exact Euclidean projection onto W
(:func:`project_weights`). When C is invertible and its solution is feasible this is just C^-1 mu.

EM prior adjustment (Saerens, Latinne and Decaestecker, 2002). Given source posteriors p_s(y|x) and
the source prior pi_s, iterate
    E: p_t(y|x_i) = (pi_t(y) / pi_s(y)) p_s(y|x_i) / sum_k (pi_t(k) / pi_s(k)) p_s(k|x_i)
    M: pi_t(y) = mean_i p_t(y|x_i)
which climbs the likelihood of the unlabelled target inputs in pi_t. It needs calibrated posteriors,
so :func:`fit_temperature` rescales the logits on held-out source data first.

Correction by posterior adjustment: p_t(y|x) is proportional to w_y p_s(y|x), i.e. logits + log w.

Shapes: logits and probabilities ``(n, K)``, labels and predictions ``(n,)``, C ``(K, K)``, w ``(K,)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from divekit.errors import ShapeError
from divekit.metrics.classification import confusion_matrix


def joint_confusion(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """C_ij = fraction of examples predicted i whose true class is j, ``(K, K)`` float64 summing to 1."""
    if predicted.dim() != 1 or predicted.shape != labels.shape:
        raise ShapeError(f"joint_confusion expects predictions and labels (n,), got {tuple(predicted.shape)} "
                         f"and {tuple(labels.shape)}")
    counts = confusion_matrix(predicted, labels, num_classes)  # [true, predicted]
    return counts.T.double() / labels.numel()


def prediction_mean(predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """mu_i = fraction of predictions equal to i, ``(K,)`` float64."""
    if predicted.dim() != 1:
        raise ShapeError(f"prediction_mean expects predictions (n,), got {tuple(predicted.shape)}")
    return torch.bincount(predicted, minlength=num_classes).double() / predicted.numel()


def project_weights(v: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The point of W = {w >= 0, q.w = 1} nearest to ``v`` ``(K,)`` in Euclidean distance (q > 0).

    The KKT conditions give w_y = max(0, v_y - lam q_y) for the lam that makes q.w = 1; q.w falls
    monotonically in lam, so lam is found exactly by walking the sorted breakpoints v_y / q_y.
    """
    if v.dim() != 1 or q.shape != v.shape:
        raise ShapeError(f"project_weights expects v and q of shape (K,), got {tuple(v.shape)} and {tuple(q.shape)}")
    if (q <= 0).any():
        raise ValueError("every class needs a positive source prior q_y for its weight to be defined")
    v, q = v.double(), q.double()
    order = torch.argsort(v / q, descending=True)
    qv, qq = (q * v)[order].cumsum(0), (q * q)[order].cumsum(0)
    lam = (qv - 1) / qq  # the lam that satisfies q.w = 1 if exactly the first k classes stay positive
    breaks = (v / q)[order]
    # The right k is the largest one whose own breakpoint still lies above its lam.
    k = int(torch.nonzero(breaks > lam).flatten()[-1])
    return (v - lam[k] * q).clamp_min(0)


def constrained_least_squares(c: torch.Tensor, mu: torch.Tensor, q: torch.Tensor, *, max_iter: int = 20_000,
                              tol: float = 1e-12) -> torch.Tensor:
    """argmin over W of ||C w - mu||^2 by FISTA with projection, started from the projected C^+ mu."""
    k = q.numel()
    if c.shape != (k, k) or mu.shape != (k,):
        raise ShapeError(f"expected C ({k}, {k}) and mu ({k},), got {tuple(c.shape)} and {tuple(mu.shape)}")
    c, mu = c.double(), mu.double()
    lipschitz = 2 * torch.linalg.matrix_norm(c, ord=2).item() ** 2  # of the gradient 2 C^T (C w - mu)
    w = project_weights(torch.linalg.lstsq(c, mu.unsqueeze(1)).solution.flatten(), q)
    z, t = w.clone(), 1.0
    for _ in range(max_iter):
        new = project_weights(z - 2 * c.T @ (c @ z - mu) / lipschitz, q)
        if (z - new).dot(new - w) > 0:  # momentum points uphill: restart it (O'Donoghue and Candes)
            t = 1.0
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        z = new + ((t - 1) / t_next) * (new - w)
        done = (new - w).norm().item() <= tol * max(1.0, w.norm().item())
        w, t = new, t_next
        if done:
            break
    return w


def bbse_weights(confusion: torch.Tensor, target_mean: torch.Tensor,
                 source_prior: torch.Tensor | None = None) -> torch.Tensor:
    """BBSE weights ``(K,)`` solving C w = mu on W; ``source_prior`` defaults to C's column sums.

    Using the column sums (the held-out label frequencies) keeps the constraint consistent with C:
    for those q, any exact solution of C w = mu already has q.w = 1, since 1^T C = q^T and 1^T mu = 1.
    """
    q = confusion.double().sum(0) if source_prior is None else source_prior.double()
    return constrained_least_squares(confusion, target_mean, q)


@dataclass(frozen=True)
class EMResult:
    """The EM estimate of the target prior ``(K,)``, its weights pi_t / pi_s ``(K,)``, and how it ran."""

    prior: torch.Tensor
    weights: torch.Tensor
    iterations: int
    converged: bool


def em_prior(probs: torch.Tensor, source_prior: torch.Tensor, *, max_iter: int = 1000,
             tol: float = 1e-8) -> EMResult:
    """Saerens et al.'s EM for the target prior from source posteriors ``probs`` ``(n, K)`` on target inputs.

    Stops when the prior moves less than ``tol`` (max-norm) in one iteration.
    """
    if probs.dim() != 2 or source_prior.shape != (probs.shape[1],):
        raise ShapeError(f"em_prior expects probs (n, K) and source_prior (K,), got {tuple(probs.shape)} "
                         f"and {tuple(source_prior.shape)}")
    p, pi_s = probs.double(), source_prior.double()
    pi_t = pi_s.clone()
    for it in range(1, max_iter + 1):
        adjusted = p * (pi_t / pi_s)  # E step, unnormalised: (pi_t(y) / pi_s(y)) p_s(y|x)
        adjusted = adjusted / adjusted.sum(1, keepdim=True)
        new = adjusted.mean(0)  # M step
        moved = (new - pi_t).abs().max().item()
        pi_t = new
        if moved < tol:
            return EMResult(pi_t, pi_t / pi_s, it, True)
    return EMResult(pi_t, pi_t / pi_s, max_iter, False)


def adjust_logits(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Target logits ``(n, K)``: source logits + log w, so softmax gives w_y p_s(y|x) / normaliser."""
    if logits.dim() != 2 or weights.shape != (logits.shape[1],):
        raise ShapeError(f"adjust_logits expects logits (n, K) and weights (K,), got {tuple(logits.shape)} "
                         f"and {tuple(weights.shape)}")
    # A zero weight means the class cannot occur; a floor instead of log(0) keeps softmax free of NaN.
    return logits.double() + weights.double().clamp_min(1e-12).log()


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, *, low: float = 0.05, high: float = 20.0,
                    iterations: int = 80) -> float:
    """The T minimising the NLL of softmax(logits / T) on held-out ``labels`` (temperature scaling).

    The NLL is convex in beta = 1/T (a log-sum-exp of linear functions minus a linear term), so a
    golden-section search over beta in [1/high, 1/low] finds the minimum.
    """
    if logits.dim() != 2 or labels.shape != (logits.shape[0],):
        raise ShapeError(f"fit_temperature expects logits (n, K) and labels (n,), got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}")
    z = logits.double()

    def nll(beta: float) -> float:
        return torch.nn.functional.cross_entropy(beta * z, labels).item()

    a, b = 1 / high, 1 / low
    ratio = (5**0.5 - 1) / 2
    x1, x2 = b - ratio * (b - a), a + ratio * (b - a)
    f1, f2 = nll(x1), nll(x2)
    for _ in range(iterations):
        if f1 < f2:
            b, x2, f2 = x2, x1, f1
            x1 = b - ratio * (b - a)
            f1 = nll(x1)
        else:
            a, x1, f1 = x1, x2, f2
            x2 = a + ratio * (b - a)
            f2 = nll(x2)
    return 2 / (a + b)
