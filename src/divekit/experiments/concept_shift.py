"""Concept shift: a stream whose labelling rule turns, a frozen model against adaptive ones, a detector.

The stream (``divekit.shift.concept``): 20 Gaussian inputs in 2-D per step, labelled by a line through
the origin with 5% label noise. At step 300 the line turns abruptly by 90 degrees, then keeps turning
by 0.3 degrees per step (another 90 degrees by step 600). Every learner starts from the same logistic
regression fitted on steps 0-19 and is scored prequentially (each batch predicted before its labels
are used). The DDM-style detector watches the frozen model's errors; its detection delay is the number
of examples between the change and the first alarm. Over several stream seeds, figures are reported
as mean ± 95% t interval, t_{0.975, n-1} sd / sqrt(n).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import matplotlib.pyplot as plt
import torch  # noqa: E402

from divekit.experiments.base import ExperimentContext  # noqa: E402
from divekit.plots import legend_outside, save_figure  # noqa: E402
from divekit.registry import register_experiment  # noqa: E402
from divekit.cpu import single_thread  # noqa: E402
from divekit.shift import format_ci, mean_ci  # noqa: E402
from divekit.shift.concept import (  # noqa: E402
    DriftConfig, DriftDetector, DriftingStream, FrozenLearner, OnlineLearner, RetrainOnDriftLearner,
    SlidingWindowLearner, detect_all, fit_initial, prequential_accuracy,
)

WARMUP = 20  # steps used to fit the initial model; scoring starts after them
STREAM = DriftConfig(dim=2, steps=600, batch=20, drift_at=300, abrupt_angle=90.0, gradual_rate=0.3, noise=0.05)
PHASES = {"before the change (20-299)": (20, 300), "just after (300-349)": (300, 350),
          "gradual drift (350-599)": (350, 600)}
SMOOTH = 10  # steps in the moving average of the plotted accuracy


@dataclass(frozen=True)
class ConceptShiftConfig:
    seeds: int = 10  # independent streams
    delay_angles: tuple[float, ...] = (15.0, 30.0, 45.0, 90.0)  # abrupt changes for the delay table
    drift_levels: tuple[float, ...] = (3.0, 4.0, 5.0)  # detector thresholds compared on the 30-degree change


def _config(ctx: ExperimentContext) -> ConceptShiftConfig:
    return ConceptShiftConfig() if ctx.quick else ConceptShiftConfig(seeds=30)


def _learners(initial) -> dict:
    return {
        "frozen": FrozenLearner(initial),
        "online SGD (lr 0.5)": OnlineLearner(initial, lr=0.5),
        "sliding window (400 examples)": SlidingWindowLearner(initial, window=400, refit_every=5),
        "retrain on detected drift": RetrainOnDriftLearner(initial, DriftDetector()),
    }


@register_experiment(
    "concept-shift",
    chapter="shift",
    title="Concept shift: a drifting stream, adaptive learners and a drift detector",
    description="frozen, online, sliding-window and detector-triggered learners on a stream whose "
                "labelling rule turns; detection delay of a DDM-style error-rate detector",
    modes="Quick: every learner on 10 independent streams; full: 30 streams, for tighter intervals.",
)
def run(ctx: ExperimentContext) -> dict:
    cfg = _config(ctx)
    curves: dict[str, list[torch.Tensor]] = {}
    detections: list[list[int]] = []
    with single_thread():
        for s in range(cfg.seeds):
            stream = DriftingStream(STREAM, seed=ctx.seed + s)
            learners = _learners(fit_initial(stream, WARMUP))
            for name, acc in prequential_accuracy(stream, learners, start=WARMUP).items():
                curves.setdefault(name, []).append(acc)
            detections.append([WARMUP * STREAM.batch + d - 1 for d in learners["retrain on detected drift"].detections])
        delays = {a: _delays(a, cfg.seeds, ctx.seed) for a in cfg.delay_angles}
        levels = {lv: _delays(30.0, cfg.seeds, ctx.seed, level=lv) for lv in cfg.drift_levels}
    mean_curves = {name: torch.stack(c).mean(0) for name, c in curves.items()}
    _accuracy_plot(ctx.path("accuracy_over_time.png"), mean_curves, detections[0])
    phase_rows = [[name, *(format_ci([c[a - WARMUP : b - WARMUP].mean().item() for c in runs], percent=True)
                           for a, b in PHASES.values())] for name, runs in curves.items()]
    change = STREAM.drift_at * STREAM.batch
    main = delays[STREAM.abrupt_angle]
    after = {name: mean_ci([c[STREAM.drift_at - WARMUP :].mean().item() for c in runs])[0]
             for name, runs in curves.items()}
    return {
        "summary": (
            f"{cfg.seeds} streams of {STREAM.steps} steps x {STREAM.batch} examples; the labelling line turns "
            f"{STREAM.abrupt_angle:.0f} degrees at step {STREAM.drift_at}, then {STREAM.gradual_rate} degrees per "
            f"step. After the change the frozen model averages {after['frozen']:.1%} accuracy, online SGD "
            f"{after['online SGD (lr 0.5)']:.1%}, the sliding window {after['sliding window (400 examples)']:.1%} "
            f"and detector-triggered retraining {after['retrain on detected drift']:.1%}. In streams with the "
            f"abrupt change alone (no gradual drift, as in the delay table), the detector on the "
            f"frozen model's errors flags the {STREAM.abrupt_angle:.0f}-degree change after "
            f"{format_ci(main['delay'], digits=0)} examples ({STREAM.batch} per step), with "
            f"{mean_ci(main['false'])[0]:.2f} false alarms per stream before it. Intervals: mean ± t_0.975 sd/sqrt(n)."
        ),
        "metrics": {
            **{f"accuracy_after_change_{k.split(' ')[0]}": v for k, v in after.items()},
            "detection_delay_examples": mean_ci(main["delay"])[0],
            "false_alarms_per_stream": mean_ci(main["false"])[0],
        },
        "tables": [
            {"title": "Prequential accuracy by phase", "columns": ["learner", *PHASES], "rows": phase_rows},
            {"title": "Detection delay of the DDM-style detector on a frozen model's errors, by size of the "
                      f"abrupt change (no gradual drift; change at example {change - WARMUP * STREAM.batch} "
                      "of the monitored stream)",
             "columns": ["abrupt change", "expected frozen accuracy after", "delay (examples)", "delay (steps)",
                         "missed", "false alarms before"],
             "rows": [[f"{a:.0f} degrees", f"{_stale(a):.1%}",
                       format_ci(d["delay"], digits=0) if d["delay"] else "never",
                       format_ci([x / STREAM.batch for x in d["delay"]], digits=1) if d["delay"] else "never",
                       f"{d['missed']} of {cfg.seeds}", format_ci(d["false"], digits=2)]
                      for a, d in delays.items()]},
            {"title": "Detector threshold: delay against false alarms (30-degree change; drift level in standard "
                      "deviations, warning level one below)",
             "columns": ["drift level", "delay (examples)", "missed", "false alarms before"],
             "rows": [[lv, format_ci(d["delay"], digits=0) if d["delay"] else "never", f"{d['missed']} of {cfg.seeds}",
                       format_ci(d["false"], digits=2)] for lv, d in levels.items()]},
        ],
        "figures": [
            {"file": "accuracy_over_time.png",
             "caption": f"Prequential accuracy per step (mean over {cfg.seeds} streams, {SMOOTH}-step moving "
                        "average); dashed: the abrupt change; dotted: drifts flagged by the retraining learner "
                        "on the first stream."},
        ],
    }


def _stale(angle: float) -> float:
    """Accuracy a model of the old concept keeps after an abrupt turn of ``angle`` degrees."""
    return DriftingStream(replace(STREAM, abrupt_angle=angle, gradual_rate=0.0)).expected_stale_accuracy(
        STREAM.drift_at)


def _delays(angle: float, seeds: int, seed: int, *, level: float = 3.0) -> dict:
    """Detection delays (examples) and false alarms of a detector with drift level ``level`` (warning
    one below) on a frozen model's errors, for an abrupt change of ``angle`` degrees."""
    config = replace(STREAM, abrupt_angle=angle, gradual_rate=0.0)
    out: dict = {"delay": [], "false": [], "missed": 0}
    change = (config.drift_at - WARMUP) * config.batch  # index of the first new-concept example monitored
    for s in range(seeds):
        stream = DriftingStream(config, seed=seed + s)
        model = fit_initial(stream, WARMUP)
        errors = torch.cat([model.predict(x) != y for x, y in map(stream.batch, range(WARMUP, config.steps))])
        found = detect_all(errors, DriftDetector(warning_level=level - 1, drift_level=level))
        out["false"].append(sum(1 for i in found if i < change))
        late = [i - change for i in found if i >= change]
        if late:
            out["delay"].append(late[0])
        else:
            out["missed"] += 1
    return out


def _accuracy_plot(path, curves: dict[str, torch.Tensor], detections: list[int]) -> None:
    """Smoothed accuracy per step for each learner, with the change and the detections marked."""
    fig, ax = plt.subplots(figsize=(7.5, 4))
    steps = torch.arange(WARMUP, STREAM.steps)
    for name, acc in curves.items():
        kernel = torch.ones(SMOOTH, dtype=torch.float64) / SMOOTH
        smooth = torch.nn.functional.conv1d(acc.view(1, 1, -1), kernel.view(1, 1, -1)).flatten()
        ax.plot(steps[SMOOTH - 1 :].numpy(), smooth.numpy(), label=name, lw=1.4)
    theory = [DriftingStream(STREAM).expected_stale_accuracy(int(t)) for t in steps]
    ax.plot(steps.numpy(), theory, color="black", lw=0.8, alpha=0.6, label="frozen, expected from the angle")
    ax.axvline(STREAM.drift_at, color="black", ls="--", lw=1)
    for d in detections:
        ax.axvline(d / STREAM.batch, color="grey", ls=":", lw=1)
    ax.set(xlabel="time step", ylabel="prequential accuracy", ylim=(0, 1.02),
           title="Accuracy on a drifting stream")
    legend_outside(ax)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
