"""Concept shift: p(y|x) itself drifts over time, so a model fitted once goes stale.

The stream. At step t a batch of B inputs x ~ N(0, I_d) arrives, labelled by a hyperplane through the
origin whose normal turns in the (x_1, x_2) plane:

    u(t) = (cos theta(t), sin theta(t), 0, ..., 0),      y = 1[u(t).x > 0], flipped with probability noise,
    theta(t) = 0                                                 for t < drift_at,
    theta(t) = abrupt_angle + gradual_rate * (t - drift_at)      for t >= drift_at   (degrees).

So the concept is stable, turns abruptly at ``drift_at``, and then keeps turning slowly. For isotropic
x two such hyperplanes at angle a disagree on a fraction a / 180 of inputs, which gives the accuracy a
model of the old concept can still reach: (1 - a/180)(1 - noise) + (a/180) noise.

Learners are scored prequentially (test, then train): each batch is predicted before its labels are
used. :class:`DriftDetector` monitors a learner's error rate the way DDM (Gama et al., 2004) does and
flags a drift when it rises ``drift_level`` standard deviations above its lowest point.

Shapes: inputs ``(B, d)`` float64, labels ``(B,)`` int64; accuracies over time ``(steps,)``.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import torch

from divekit import seeding
from divekit.errors import ShapeError
from divekit.shift.covariate import LogisticRegression


@dataclass(frozen=True)
class DriftConfig:
    """The documented drift of :class:`DriftingStream` (see the module docstring)."""

    dim: int = 2  # input dimension; only the first two coordinates ever matter
    steps: int = 600  # time steps in the stream
    batch: int = 20  # examples arriving per step
    drift_at: int = 300  # step of the abrupt change
    abrupt_angle: float = 90.0  # degrees the boundary turns at drift_at
    gradual_rate: float = 0.0  # degrees per step it keeps turning afterwards
    noise: float = 0.05  # probability that a label is flipped

    def __post_init__(self) -> None:
        if self.dim < 2:
            raise ValueError(f"dim must be at least 2 (the boundary turns in a plane), got {self.dim}")
        if not 0 <= self.noise < 0.5:
            raise ValueError(f"noise must be in [0, 0.5), got {self.noise}")
        if not 0 <= self.drift_at <= self.steps:
            raise ValueError(f"drift_at must be in [0, steps], got {self.drift_at}")


class DriftingStream:
    """Batches ``(x (B, d), y (B,))`` for t = 0..steps-1; batch t depends only on (seed, t)."""

    def __init__(self, config: DriftConfig, *, seed: int = 0) -> None:
        self.config = config
        self.seed = seed

    def angle(self, t: int) -> float:
        """theta(t) in degrees."""
        c = self.config
        return 0.0 if t < c.drift_at else c.abrupt_angle + c.gradual_rate * (t - c.drift_at)

    def concept(self, t: int) -> torch.Tensor:
        """The unit normal u(t) ``(d,)``."""
        u = torch.zeros(self.config.dim, dtype=torch.float64)
        rad = math.radians(self.angle(t))
        u[0], u[1] = math.cos(rad), math.sin(rad)
        return u

    def label(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """Noise-free labels 1[u(t).x > 0] ``(n,)``."""
        if x.dim() != 2 or x.shape[1] != self.config.dim:
            raise ShapeError(f"inputs must have shape (n, {self.config.dim}), got {tuple(x.shape)}")
        return (x.double() @ self.concept(t) > 0).long()

    def batch(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch t: inputs ``(B, d)`` and noisy labels ``(B,)``."""
        c = self.config
        g = seeding.generator(self.seed, "data", t)
        x = torch.randn(c.batch, c.dim, generator=g, dtype=torch.float64)
        flip = (torch.rand(c.batch, generator=g, dtype=torch.float64) < c.noise).long()
        return x, self.label(x, t) ^ flip

    def expected_stale_accuracy(self, t: int, reference: int = 0) -> float:
        """Accuracy at step t of the noise-free concept of step ``reference``, against noisy labels."""
        a = abs(self.angle(t) - self.angle(reference)) % 360
        disagree = min(a, 360 - a) / 180
        return (1 - disagree) * (1 - self.config.noise) + disagree * self.config.noise


# -------------------------------------------------------------------------------- learners
class StreamLearner(Protocol):
    """Predicts a batch, then learns from its labels."""

    def predict(self, x: torch.Tensor) -> torch.Tensor: ...

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None: ...


class FrozenLearner:
    """A model fitted once and never updated."""

    def __init__(self, model: LogisticRegression) -> None:
        self.model = model

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.predict(x)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        pass


class OnlineLearner:
    """One gradient step of the log-loss per batch: w <- w - lr * grad. A constant ``lr`` never stops
    adapting, which is what lets it follow a moving concept (at the price of some noise)."""

    def __init__(self, model: LogisticRegression, *, lr: float = 0.5) -> None:
        self.model = copy.deepcopy(model)
        self.lr = lr

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.predict(x)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        grad_w, grad_b = self.model.gradient(x, y)
        self.model.weight = self.model.weight - self.lr * grad_w
        self.model.bias = self.model.bias - self.lr * grad_b


class SlidingWindowLearner:
    """Refit on the last ``window`` examples every ``refit_every`` batches (warm-started Newton).
    The window length sets the trade-off: short windows forget a stale concept fast, long ones are
    less noisy while the concept holds."""

    def __init__(self, model: LogisticRegression, *, window: int = 400, refit_every: int = 5) -> None:
        self.model = copy.deepcopy(model)
        self.window = window
        self.refit_every = refit_every
        self.xs: deque[torch.Tensor] = deque()
        self.ys: deque[torch.Tensor] = deque()
        self.held = 0
        self.seen = 0

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.predict(x)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.xs.append(x)
        self.ys.append(y)
        self.held += x.shape[0]
        while self.held - self.xs[0].shape[0] >= self.window:
            self.held -= self.xs.popleft().shape[0]
            self.ys.popleft()
        self.seen += 1
        if self.seen % self.refit_every == 0:
            self.model.fit(torch.cat(list(self.xs)), torch.cat(list(self.ys)).double(), warm_start=True)


class RetrainOnDriftLearner:
    """A frozen model watched by a :class:`DriftDetector` on its own errors.

    When the detector flags a drift, the model keeps predicting while the next ``refit_size`` examples
    arrive, and is then refitted on those alone: examples from before the alarm may still follow the
    old concept (DDM's warning zone often opens long before a real change). The detector then starts
    afresh. Alarms are recorded in :attr:`detections` as 1-based counts of the examples seen.
    """

    def __init__(self, model: LogisticRegression, detector: "DriftDetector", *, refit_size: int = 100) -> None:
        self.model = copy.deepcopy(model)
        self.detector = detector
        self.refit_size = refit_size
        self.fresh_x: list[torch.Tensor] = []  # examples since the last alarm, while a refit is pending
        self.fresh_y: list[torch.Tensor] = []
        self.pending = False
        self.count = 0
        self.detections: list[int] = []

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.predict(x)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        wrong = (self.model.predict(x) != y).tolist()
        for i in range(x.shape[0]):
            self.count += 1
            if self.pending:
                self.fresh_x.append(x[i : i + 1])
                self.fresh_y.append(y[i : i + 1])
                if len(self.fresh_y) >= self.refit_size:
                    self._refit()
            elif self.detector.update(bool(wrong[i])) == "drift":
                self.detections.append(self.count)
                self.pending = True

    def _refit(self) -> None:
        x, y = torch.cat(self.fresh_x), torch.cat(self.fresh_y).double()
        if 0 < int(y.sum()) < y.numel():  # both classes present, else the fit has no boundary to find
            self.model.fit(x, y, warm_start=True)
        self.fresh_x, self.fresh_y = [], []
        self.pending = False
        self.detector.reset()


# -------------------------------------------------------------------------------- detection
class DriftDetector:
    """DDM: monitor the running error rate p_n and s_n = sqrt(p_n (1 - p_n) / n) since the last reset.

    After ``min_samples`` examples it remembers the minimum of p_n + s_n (p_min, s_min) and reports

        "drift"    if p_n + s_n >= p_min + drift_level * s_min,
        "warning"  if p_n + s_n >= p_min + warning_level * s_min,
        "stable"   otherwise.

    A rise of several standard deviations above the best error rate seen is unlikely under a
    stationary error rate, so it is taken as evidence that the concept changed. The minimum is only
    tracked once an error has been seen (until then s_n = 0 and nothing can be compared with it).
    """

    def __init__(self, *, min_samples: int = 30, warning_level: float = 2.0, drift_level: float = 3.0) -> None:
        if not 0 < warning_level < drift_level:
            raise ValueError("need 0 < warning_level < drift_level")
        self.min_samples = min_samples
        self.warning_level = warning_level
        self.drift_level = drift_level
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.errors = 0
        self.p_min = math.inf
        self.s_min = math.inf

    def update(self, error: bool) -> str:
        self.n += 1
        self.errors += int(error)
        p = self.errors / self.n
        s = math.sqrt(p * (1 - p) / self.n)
        if self.n < self.min_samples:
            return "stable"
        # Before the first error s_n = 0, and a minimum of 0 + 0 would make any later error a "drift".
        if self.errors > 0 and p + s <= self.p_min + self.s_min:
            self.p_min, self.s_min = p, s
        if p + s >= self.p_min + self.drift_level * self.s_min:
            return "drift"
        if p + s >= self.p_min + self.warning_level * self.s_min:
            return "warning"
        return "stable"


def detect_all(errors: torch.Tensor, detector: DriftDetector) -> list[int]:
    """Indices into ``errors`` ``(n,)`` (bool: the monitored model was wrong) at which ``detector``
    signals a drift; the detector is reset after each signal, as a retrained model would reset it."""
    if errors.dim() != 1:
        raise ShapeError(f"detect_all expects errors of shape (n,), got {tuple(errors.shape)}")
    found = []
    for i, wrong in enumerate(errors.tolist()):
        if detector.update(bool(wrong)) == "drift":
            found.append(i)
            detector.reset()
    return found


# -------------------------------------------------------------------------------- evaluation
def fit_initial(stream: DriftingStream, steps: int, *, l2: float = 1e-3) -> LogisticRegression:
    """A logistic regression fitted on the first ``steps`` batches (the model every learner starts from)."""
    xs, ys = zip(*(stream.batch(t) for t in range(steps)))
    return LogisticRegression(l2=l2).fit(torch.cat(xs), torch.cat(ys).double())


def prequential_accuracy(stream: DriftingStream, learners: dict[str, StreamLearner], *,
                         start: int) -> dict[str, torch.Tensor]:
    """Each learner's accuracy on batch t, predicted before it learns from it: ``{name: (steps - start,)}``."""
    out = {name: torch.empty(stream.config.steps - start, dtype=torch.float64) for name in learners}
    for t in range(start, stream.config.steps):
        x, y = stream.batch(t)
        for name, learner in learners.items():
            out[name][t - start] = (learner.predict(x) == y).double().mean()
            learner.update(x, y)
    return out
