"""Concept shift: the documented drift of the stream, the learners that follow it, and the detector."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from divekit.errors import ShapeError
from divekit.shift.concept import (
    DriftConfig, DriftDetector, DriftingStream, FrozenLearner, OnlineLearner, RetrainOnDriftLearner,
    SlidingWindowLearner, detect_all, fit_initial, prequential_accuracy,
)
from divekit.shift.covariate import LogisticRegression

torch.set_num_threads(1)
ABRUPT = DriftConfig(dim=2, steps=200, batch=20, drift_at=100, abrupt_angle=90.0, gradual_rate=0.0, noise=0.05)


# -------------------------------------------------------------------------------- the stream
def test_angle_schedule_is_the_documented_one():
    stream = DriftingStream(DriftConfig(steps=50, drift_at=20, abrupt_angle=30.0, gradual_rate=2.0))
    assert [stream.angle(t) for t in (0, 19, 20, 21, 30)] == [0.0, 0.0, 30.0, 32.0, 50.0]
    torch.testing.assert_close(stream.concept(21), torch.tensor([math.cos(math.radians(32)),
                                                                 math.sin(math.radians(32))], dtype=torch.float64))


def test_batches_are_reproducible_and_seed_dependent():
    a, b = DriftingStream(ABRUPT, seed=1), DriftingStream(ABRUPT, seed=2)
    assert torch.equal(a.batch(7)[0], DriftingStream(ABRUPT, seed=1).batch(7)[0])
    assert not torch.equal(a.batch(7)[0], b.batch(7)[0])
    assert a.batch(7)[0].shape == (20, 2) and a.batch(7)[1].dtype == torch.int64


@pytest.mark.parametrize("angle", [30.0, 90.0, 150.0])
def test_concepts_disagree_on_angle_over_180_of_inputs(angle):
    """For isotropic inputs two lines through the origin at angle a disagree on a fraction a / 180."""
    stream = DriftingStream(replace(ABRUPT, abrupt_angle=angle))
    x = torch.randn(200_000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    disagree = (stream.label(x, 0) != stream.label(x, ABRUPT.drift_at)).double().mean().item()
    assert disagree == pytest.approx(angle / 180, abs=0.005)


def test_label_noise_rate_and_stale_accuracy_match_their_formulas():
    stream = DriftingStream(replace(ABRUPT, abrupt_angle=60.0, noise=0.1), seed=3)
    clean, stale = [], []
    for t in range(ABRUPT.drift_at, ABRUPT.steps):
        x, y = stream.batch(t)
        clean.append((y != stream.label(x, t)).double())
        stale.append((y == stream.label(x, 0)).double())
    n = ABRUPT.batch * (ABRUPT.steps - ABRUPT.drift_at)  # 2,000 examples: sd of a rate ~ 0.01
    assert torch.cat(clean).mean().item() == pytest.approx(0.1, abs=4 * math.sqrt(0.09 / n))
    expected = stream.expected_stale_accuracy(ABRUPT.drift_at)
    assert expected == pytest.approx((1 - 1 / 3) * 0.9 + (1 / 3) * 0.1)
    assert torch.cat(stale).mean().item() == pytest.approx(expected, abs=4 * math.sqrt(0.25 / n))


def test_wrong_input_shape_names_the_expected_one():
    with pytest.raises(ShapeError, match=r"\(n, 2\)"):
        DriftingStream(ABRUPT).label(torch.zeros(3, 5), 0)


# -------------------------------------------------------------------------------- learners
def test_online_update_is_one_gradient_step_of_the_log_loss():
    stream = DriftingStream(ABRUPT)
    model = LogisticRegression(l2=1e-3, standardize=False).fit(*_xy(stream, range(5)))
    learner = OnlineLearner(model, lr=0.3)
    x, y = stream.batch(150)
    w = model.weight.clone().requires_grad_(True)
    b = model.bias.clone().requires_grad_(True)
    loss = F.binary_cross_entropy_with_logits(x @ w + b, y.double()) + 0.5e-3 * w.dot(w)
    loss.backward()
    learner.update(x, y)
    torch.testing.assert_close(learner.model.weight, (w - 0.3 * w.grad).detach())
    torch.testing.assert_close(learner.model.bias, (b - 0.3 * b.grad).detach())
    assert torch.equal(model.weight, w.detach())  # the starting model is not modified


def _xy(stream: DriftingStream, steps) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(stream.batch(t) for t in steps))
    return torch.cat(xs), torch.cat(ys).double()


def test_sliding_window_model_is_a_fit_on_exactly_the_last_window():
    stream = DriftingStream(ABRUPT, seed=4)
    initial = fit_initial(stream, 5)
    learner = SlidingWindowLearner(initial, window=100, refit_every=3)
    for t in range(5, 35):  # 30 updates of 20 examples: the last refit sees batches 30-34
        learner.update(*stream.batch(t))
    assert learner.held == 100
    x, y = _xy(stream, range(30, 35))
    reference = LogisticRegression(l2=initial.l2)
    reference.fit(x, y, max_iter=0)
    reference.mean, reference.scale = initial.mean, initial.scale  # the warm start keeps the first scale
    reference.fit(x, y, warm_start=True)
    probe = torch.randn(50, 2, dtype=torch.float64)
    ours = learner.model.decision_function(probe)
    # Both fits stop at a Newton decrement of 1e-10; on nearly separable data that leaves ~1e-4 of slack.
    torch.testing.assert_close(ours, reference.decision_function(probe), rtol=1e-3, atol=1e-3)
    shifted = LogisticRegression(l2=initial.l2).fit(*_xy(stream, range(29, 34)))
    assert (ours - shifted.decision_function(probe)).abs().max() > 1e-2  # a window one batch off is far


def test_frozen_model_drops_to_the_expected_accuracy_and_adaptive_learners_recover():
    stream = DriftingStream(ABRUPT, seed=5)
    initial = fit_initial(stream, 10)
    learners = {"frozen": FrozenLearner(initial), "online": OnlineLearner(initial, lr=0.5),
                "window": SlidingWindowLearner(initial, window=300, refit_every=5),
                "retrain": RetrainOnDriftLearner(initial, DriftDetector())}
    acc = prequential_accuracy(stream, learners, start=10)
    before = slice(0, ABRUPT.drift_at - 10)
    late = slice(ABRUPT.steps - 10 - 50, None)  # the last 50 steps
    for name in learners:  # before the change, everyone is near the Bayes accuracy 0.95
        assert acc[name][before].mean().item() > 0.88, name
    n = 50 * ABRUPT.batch
    assert acc["frozen"][late].mean().item() == pytest.approx(stream.expected_stale_accuracy(150),
                                                              abs=4 * math.sqrt(0.25 / n))
    for name in ("online", "window", "retrain"):
        assert acc[name][late].mean().item() > 0.88, name
    change = (ABRUPT.drift_at - 10) * ABRUPT.batch
    assert any(change < d <= change + 400 for d in learners["retrain"].detections)


# -------------------------------------------------------------------------------- the detector
def ddm_reference(errors: np.ndarray, min_samples: int = 30, warn: float = 2.0, drift: float = 3.0) -> list[str]:
    """DDM written with running arrays: the state after each error, no resets."""
    n = np.arange(1, len(errors) + 1)
    p = np.cumsum(errors) / n
    s = np.sqrt(p * (1 - p) / n)
    states, best = [], math.inf
    for i in range(len(errors)):
        if n[i] < min_samples:
            states.append("stable")
            continue
        if errors[: i + 1].sum() > 0:
            best = min(best, p[i] + s[i])
        # The minimum pair is the one at which p + s was smallest.
        j = None if best == math.inf else max(k for k in range(min_samples - 1, i + 1)
                                              if errors[: k + 1].sum() > 0 and p[k] + s[k] == best)
        if j is not None and p[i] + s[i] >= p[j] + drift * s[j]:
            states.append("drift")
        elif j is not None and p[i] + s[i] >= p[j] + warn * s[j]:
            states.append("warning")
        else:
            states.append("stable")
    return states


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.02, 0.3), st.floats(0.0, 0.4))
def test_detector_states_match_a_reference_ddm(seed, p0, jump):
    rng = np.random.default_rng(seed)
    errors = np.concatenate([rng.random(150) < p0, rng.random(150) < min(p0 + jump, 0.9)]).astype(float)
    detector = DriftDetector()
    ours = [detector.update(bool(e)) for e in errors]
    first = next((i for i, s in enumerate(ours) if s == "drift"), len(ours))
    # Compare up to the first drift (after which a caller would reset the detector).
    assert ours[: first + 1] == ddm_reference(errors)[: first + 1]


def test_detector_delay_and_false_alarms_trade_off_with_the_drift_level():
    """Error rate 0.1 for 3,000 examples, then 0.4. At level 3 the running rate has to climb about
    3 sd (~0.016) above 0.1 at a slope of 0.3/3000 per example: a delay of order 150 examples. A higher
    level waits longer and raises fewer false alarms."""
    stats = {}
    for level in (3.0, 5.0):
        delays, false_alarms = [], 0
        for seed in range(10):
            rng = np.random.default_rng(seed)
            errors = torch.from_numpy(np.concatenate([rng.random(3000) < 0.1, rng.random(2000) < 0.4]))
            found = detect_all(errors, DriftDetector(warning_level=level - 1, drift_level=level))
            false_alarms += sum(1 for i in found if i < 3000)
            delays.append(min(i for i in found if i >= 3000) - 3000)
        stats[level] = (float(np.mean(delays)), false_alarms)
    assert stats[3.0][0] < 300
    assert stats[5.0][0] > stats[3.0][0]
    assert stats[5.0][1] < stats[3.0][1] <= 20


def test_detect_all_resets_after_each_alarm():
    rng = np.random.default_rng(0)
    errors = torch.from_numpy(np.concatenate([rng.random(1000) < 0.05, rng.random(1000) < 0.5,
                                              rng.random(1000) < 0.95]))
    found = detect_all(errors, DriftDetector())
    assert len(found) >= 2 and found == sorted(found)
    # After the first alarm the detector starts afresh: the rest equals a new run on the suffix.
    rest = detect_all(errors[found[0] + 1 :], DriftDetector())
    assert [i + found[0] + 1 for i in rest] == found[1:]


# -------------------------------------------------------------------------------- the experiment
def test_concept_shift_experiment_reports_what_the_geometry_predicts(tmp_path, monkeypatch):
    from divekit.experiments import concept_shift
    from divekit.experiments.base import run_experiment

    monkeypatch.setattr(concept_shift, "_config", lambda ctx: concept_shift.ConceptShiftConfig(
        seeds=2, delay_angles=(90.0,), drift_levels=(3.0,)))
    result = run_experiment("concept-shift", tmp_path / "concept", quick=True)
    assert result["chapter"] == "shift" and (tmp_path / "concept" / "accuracy_over_time.png").is_file()
    # After the change the boundary turns 90 degrees and then 0.3 per step: a frozen model's expected
    # accuracy, averaged over steps 300-599, follows from the angle alone.
    stream = DriftingStream(concept_shift.STREAM)
    expected = np.mean([stream.expected_stale_accuracy(t) for t in range(300, 600)])
    assert result["metrics"]["accuracy_after_change_frozen"] == pytest.approx(expected, abs=0.03)
    assert result["metrics"]["accuracy_after_change_online"] > 0.85
