"""Covariate shift: p(x) changes between source and target while p(y|x) stays fixed.

The correction reweights the source risk by the importance weight beta(x) = p_target(x) / p_source(x):

    E_target[l(f(x), y)] = E_source[beta(x) l(f(x), y)].

beta is estimated without densities by a domain classifier. Label source inputs 0 and target inputs 1
and fit a logistic regression h(x) = w.x + b; by Bayes' rule

    p_target(x) / p_source(x) = [P(1|x) / P(0|x)] * (n_source / n_target) = exp(h(x)) * n_source / n_target,

the second factor undoing the class sizes of the domain classifier's training set.

The logistic regression is written from scratch (no autograd): it minimises the weighted mean
log-loss plus (l2/2)||w||^2, with the gradient and Hessian written out, by Newton's method with a
backtracking line search. Inputs ``x`` are ``(n, d)``, labels ``(n,)`` in {0, 1}; everything runs in
float64 because Newton's step solves a linear system with the Hessian.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from divekit.data.loader import TensorLoader
from divekit.errors import ShapeError
from divekit.tasks.image_classification import prepare_images
from divekit.train.distributed import DistInfo
from divekit.train.task import StepOutput


def _check_xy(x: torch.Tensor, y: torch.Tensor | None, who: str) -> None:
    if x.dim() != 2:
        raise ShapeError(f"{who} expects inputs of shape (n, d), got {tuple(x.shape)}")
    if y is not None and y.shape != (x.shape[0],):
        raise ShapeError(f"{who} expects labels of shape ({x.shape[0]},), got {tuple(y.shape)}")


class LogisticRegression:
    """Binary logistic regression h(x) = w.x + b fitted by Newton's method.

    Objective, with per-example weights a_i (all 1 by default), z_i = h(x_i), sigma the logistic function:

        L(w, b) = sum_i a_i [softplus(z_i) - y_i z_i] / sum_i a_i + (l2 / 2) ||w||^2

        grad_w = X^T (a * (sigma(z) - y)) / sum(a) + l2 w,       grad_b = sum(a * (sigma(z) - y)) / sum(a)
        Hess   = [X 1]^T diag(a * sigma(z)(1 - sigma(z))) [X 1] / sum(a) + l2 diag(1, ..., 1, 0)

    The bias is not penalised. ``standardize`` fits on (x - mean) / std of the training inputs, so one
    ``l2`` means the same for features on any scale; :meth:`decision_function` undoes it.
    """

    def __init__(self, *, l2: float = 1e-3, standardize: bool = True) -> None:
        if l2 < 0:
            raise ValueError(f"l2 must be non-negative, got {l2}")
        self.l2 = l2
        self.standardize = standardize
        self.weight: torch.Tensor | None = None  # (d,) on the standardised scale
        self.bias = torch.zeros((), dtype=torch.float64)
        self.mean: torch.Tensor | None = None  # (d,)
        self.scale: torch.Tensor | None = None  # (d,)

    # ---------------------------------------------------------------------------------- pieces
    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        if self.mean is None or self.scale is None:
            return x
        return (x - self.mean) / self.scale

    def _init(self, x: torch.Tensor) -> None:
        d = x.shape[1]
        if self.standardize:
            self.mean = x.double().mean(0)
            # Constant features would divide by zero; they carry no information, so any scale will do.
            self.scale = x.double().std(0).clamp_min(1e-8)
        else:
            self.mean, self.scale = torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64)
        self.weight = torch.zeros(d, dtype=torch.float64)
        self.bias = torch.zeros((), dtype=torch.float64)

    def _objective(self, f: torch.Tensor, y: torch.Tensor, a: torch.Tensor, w: torch.Tensor,
                   b: torch.Tensor) -> torch.Tensor:
        z = f @ w + b
        # softplus(z) - y z is the log-loss -log sigma(z) for y = 1 and -log(1 - sigma(z)) for y = 0.
        per_example = torch.nn.functional.softplus(z) - y * z
        return (a * per_example).sum() / a.sum() + 0.5 * self.l2 * w.dot(w)

    def gradient(self, x: torch.Tensor, y: torch.Tensor,
                 sample_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(grad_w (d,), grad_b ())`` of the objective at the current parameters, on the fitted scale."""
        _check_xy(x, y, "LogisticRegression.gradient")
        f = self._features(x)
        a = _weights(sample_weight, x.shape[0])
        residual = a * (torch.sigmoid(f @ self.weight + self.bias) - y.double())  # a_i (sigma(z_i) - y_i)
        return f.T @ residual / a.sum() + self.l2 * self.weight, residual.sum() / a.sum()

    def loss(self, x: torch.Tensor, y: torch.Tensor, sample_weight: torch.Tensor | None = None) -> float:
        """The objective L(w, b) at the current parameters."""
        _check_xy(x, y, "LogisticRegression.loss")
        a = _weights(sample_weight, x.shape[0])
        return self._objective(self._features(x), y.double(), a, self.weight, self.bias).item()

    # ---------------------------------------------------------------------------------- fitting
    def fit(self, x: torch.Tensor, y: torch.Tensor, sample_weight: torch.Tensor | None = None, *,
            max_iter: int = 50, tol: float = 1e-10, warm_start: bool = False) -> "LogisticRegression":
        """Minimise the objective; stops when half the squared Newton decrement falls below ``tol``.

        ``warm_start`` continues from the current parameters and keeps the current standardisation
        (a refit on a new window of similar data then needs only a Newton step or two).
        """
        _check_xy(x, y, "LogisticRegression.fit")
        if not warm_start or self.weight is None:
            self._init(x)
        f, t = self._features(x), y.double()
        a = _weights(sample_weight, x.shape[0])
        d = f.shape[1]
        design = torch.cat([f, torch.ones(f.shape[0], 1, dtype=torch.float64)], 1)  # (n, d + 1)
        ridge = torch.full((d + 1,), self.l2, dtype=torch.float64)
        ridge[-1] = 0.0  # the bias is not penalised
        for _ in range(max_iter):
            theta = torch.cat([self.weight, self.bias.reshape(1)])
            p = torch.sigmoid(design @ theta)
            grad = design.T @ (a * (p - t)) / a.sum() + ridge * theta
            curvature = a * p * (1 - p) / a.sum()
            # A tiny jitter keeps the solve defined when the data are separable and l2 = 0.
            hess = (design.T * curvature) @ design + torch.diag(ridge + 1e-12)
            step = torch.linalg.solve(hess, grad)
            decrement = grad.dot(step).item()  # squared Newton decrement: twice the predicted decrease
            if decrement / 2 < tol:
                break
            self.weight, self.bias = self._line_search(f, t, a, theta, step, grad)
        return self

    def _line_search(self, f, t, a, theta, step, grad) -> tuple[torch.Tensor, torch.Tensor]:
        """Backtrack from the full Newton step until the Armijo condition holds."""
        current = self._objective(f, t, a, theta[:-1], theta[-1])
        size = 1.0
        for _ in range(30):
            new = theta - size * step
            if self._objective(f, t, a, new[:-1], new[-1]) <= current - 1e-4 * size * grad.dot(step):
                break
            size /= 2
        return new[:-1].clone(), new[-1].clone()

    # ---------------------------------------------------------------------------------- using it
    def decision_function(self, x: torch.Tensor) -> torch.Tensor:
        """Logits h(x) ``(n,)`` on the original input scale."""
        _check_xy(x, None, "LogisticRegression.decision_function")
        if self.weight is None:
            raise RuntimeError("LogisticRegression is used before fit")
        return self._features(x) @ self.weight + self.bias

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """P(y = 1 | x) ``(n,)``."""
        return torch.sigmoid(self.decision_function(x))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Labels ``(n,)`` in {0, 1} (int64)."""
        return (self.decision_function(x) > 0).long()


def _weights(sample_weight: torch.Tensor | None, n: int) -> torch.Tensor:
    if sample_weight is None:
        return torch.ones(n, dtype=torch.float64)
    if sample_weight.shape != (n,):
        raise ShapeError(f"sample_weight must have shape ({n},), got {tuple(sample_weight.shape)}")
    if (sample_weight < 0).any() or sample_weight.sum() <= 0:
        raise ValueError("sample weights must be non-negative with a positive sum")
    return sample_weight.double()


# -------------------------------------------------------------------------------- importance weights
def fit_domain_classifier(source: torch.Tensor, target: torch.Tensor, *, l2: float = 1e-3) -> LogisticRegression:
    """Logistic regression telling target inputs (label 1) from source inputs (label 0), both ``(n, d)``."""
    _check_xy(source, None, "fit_domain_classifier")
    _check_xy(target, None, "fit_domain_classifier")
    if source.shape[1] != target.shape[1]:
        raise ShapeError(f"source (n, {source.shape[1]}) and target (m, {target.shape[1]}) differ in d")
    x = torch.cat([source, target]).double()
    y = torch.cat([torch.zeros(source.shape[0]), torch.ones(target.shape[0])]).double()
    return LogisticRegression(l2=l2).fit(x, y)


def importance_weights(domain_logits: torch.Tensor, *, n_source: int, n_target: int) -> torch.Tensor:
    """beta(x) = exp(h(x)) * n_source / n_target from domain-classifier logits ``(n,)``."""
    if domain_logits.dim() != 1:
        raise ShapeError(f"importance_weights expects logits of shape (n,), got {tuple(domain_logits.shape)}")
    # exp(h) overflows float64 only for h > 709; such a weight would be clipped anyway.
    return torch.exp(domain_logits.double().clamp(max=700.0)) * (n_source / n_target)


def clip_and_normalize(weights: torch.Tensor, *, max_ratio: float | None = 10.0) -> torch.Tensor:
    """Weights ``(n,)`` clipped at ``max_ratio`` times their median, then rescaled to mean 1.

    Clipping trades a little bias for much less variance: a few huge weights would otherwise make the
    weighted risk depend on a handful of examples. The mean-1 scale keeps a learning rate tuned for
    unweighted training meaningful.
    """
    if weights.dim() != 1:
        raise ShapeError(f"clip_and_normalize expects weights of shape (n,), got {tuple(weights.shape)}")
    w = weights.double()
    if max_ratio is not None:
        w = w.clamp(max=max_ratio * w.median().item())
    return w / w.mean()


def effective_sample_size(weights: torch.Tensor) -> float:
    """(sum w)^2 / sum w^2: how many unweighted examples the weighted sample is worth."""
    w = weights.double()
    return (w.sum() ** 2 / (w * w).sum()).item()


# -------------------------------------------------------------------------------- a case with known weights
@dataclass(frozen=True)
class GaussianShift:
    """Source x ~ N(0, I_d), target x ~ N(mu, I_d) with mu = (distance, 0, ..., 0).

    The true importance weight has a closed form, log-linear in x, so a logistic-regression domain
    classifier is correctly specified:  log p_t(x)/p_s(x) = mu.x - ||mu||^2 / 2.
    Labels come from a fixed nonlinear rule, y = 1[x_2 > sin(2 x_1)], the same in both domains, so
    a linear classifier fitted on source data is the wrong model and the domains disagree on its best fit.
    """

    dim: int = 2
    distance: float = 1.5

    def mu(self) -> torch.Tensor:
        m = torch.zeros(self.dim, dtype=torch.float64)
        m[0] = self.distance
        return m

    def sample(self, n: int, domain: str, generator: torch.Generator) -> torch.Tensor:
        """``(n, dim)`` inputs from the ``"source"`` or ``"target"`` distribution."""
        if domain not in ("source", "target"):
            raise ValueError(f"domain must be 'source' or 'target', got {domain!r}")
        x = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return x + self.mu() if domain == "target" else x

    def label(self, x: torch.Tensor) -> torch.Tensor:
        """y = 1[x_2 > sin(2 x_1)] ``(n,)`` (the second coordinate is 0 when dim = 1)."""
        _check_xy(x, None, "GaussianShift.label")
        second = x[:, 1] if x.shape[1] > 1 else torch.zeros_like(x[:, 0])
        return (second > torch.sin(2 * x[:, 0])).long()

    def true_weights(self, x: torch.Tensor) -> torch.Tensor:
        """p_target(x) / p_source(x) = exp(mu.x - ||mu||^2 / 2), ``(n,)``."""
        _check_xy(x, None, "GaussianShift.true_weights")
        mu = self.mu()
        return torch.exp(x.double() @ mu - 0.5 * mu.dot(mu))


def weight_agreement(estimated: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    """How well estimated weights ``(n,)`` match the true ones: Pearson correlation, correlation of the
    logs, and the mean absolute error relative to the mean true weight."""
    e, t = estimated.double(), true.double()
    if e.shape != t.shape or e.dim() != 1:
        raise ShapeError(f"weight_agreement expects two (n,) tensors, got {tuple(e.shape)} and {tuple(t.shape)}")
    return {
        "pearson": _pearson(e, t),
        "log_pearson": _pearson(e.log(), t.log()),
        "relative_mae": ((e - t).abs().mean() / t.mean()).item(),
    }


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt((a * a).sum().item() * (b * b).sum().item())
    return (a * b).sum().item() / denom if denom > 0 else float("nan")


# -------------------------------------------------------------------------------- weighted training
class WeightedImageTask:
    """Fashion-MNIST classification minimising an importance-weighted risk, for the Trainer.

    A batch's loss is mean_i a_i CE(f(x_i), y_i) with the weights ``a`` scaled to mean 1 over the
    training set, so the batch loss is an unbiased estimate of the weighted risk sum_i a_i l_i / sum_i a_i
    and the usual learning rate still fits. Evaluation weights its accuracy and loss the same way:
    importance-weighted accuracy on held-out *source* data estimates accuracy on the target.

    Splits map a name to ``(images uint8 (n, 28, 28), labels (n,), weights (n,) or None)``. The sets
    here are small, so images are standardised once up front rather than per batch; batches are
    ``(images float (B, 1, 28, 28), labels (B,), weights (B,))``.
    """

    name = "fashion-mnist-weighted"
    monitor = "val_accuracy"
    monitor_mode = "max"

    def __init__(self, splits: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]], *,
                 batch_size: int, seed: int = 0, eval_batch_size: int = 2000) -> None:
        for key in ("train", "val"):
            if key not in splits:
                raise ValueError(f"WeightedImageTask needs a '{key}' split")
        self.splits = {name: self._prepare(*split) for name, split in splits.items()}
        self.batch_size = batch_size
        self.seed = seed
        self.eval_batch_size = eval_batch_size

    @staticmethod
    def _prepare(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None):
        if x.dim() != 3 or y.shape != (x.shape[0],):
            raise ShapeError(f"WeightedImageTask expects images (n, 28, 28) and labels (n,), "
                             f"got {tuple(x.shape)} and {tuple(y.shape)}")
        w = torch.ones(x.shape[0]) if w is None else w.float()
        if w.shape != (x.shape[0],):
            raise ShapeError(f"WeightedImageTask expects weights ({x.shape[0]},), got {tuple(w.shape)}")
        return prepare_images(x), y, w / w.mean()

    def train_loader(self, dist: DistInfo) -> TensorLoader:
        return TensorLoader(*self.splits["train"], batch_size=self.batch_size, shuffle=True, seed=self.seed,
                            rank=dist.rank, world_size=dist.world_size)

    def start_epoch(self, model: nn.Module, epoch: int) -> None:
        pass

    def step(self, model: nn.Module, batch) -> StepOutput:
        x, y, w = batch
        logits = model(x)
        per_example = torch.nn.functional.cross_entropy(logits.float(), y, reduction="none")
        correct = (logits.argmax(1) == y).sum().item()
        return StepOutput(loss=(w * per_example).mean(), count=y.shape[0], correct=correct)

    @torch.no_grad()
    def predict(self, model: nn.Module, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(n, classes)`` and labels ``(n,)`` of a split, in eval mode."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        x, y, _ = self.splits[split]
        logits = [model(x[i : i + self.eval_batch_size].to(device)).float().cpu()
                  for i in range(0, x.shape[0], self.eval_batch_size)]
        model.train(was_training)
        return torch.cat(logits), y

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        logits, y = self.predict(model, split)
        w = self.splits[split][2]
        per_example = torch.nn.functional.cross_entropy(logits, y, reduction="none")
        hit = (logits.argmax(1) == y).float()
        return {"loss": (w * per_example).mean().item(), "accuracy": (w * hit).mean().item()}

    def state(self) -> dict:
        return {"train_examples": int(self.splits["train"][0].shape[0])}

    def example_input(self, batch_size: int = 2) -> torch.Tensor:
        return torch.zeros(batch_size, 1, 28, 28)
