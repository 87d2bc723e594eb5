"""What pretraining buys when labels are few: BERT on "is this English sentence a question?".

One ``bert`` encoder is pretrained by masked language modelling on unlabelled English (the fra-eng
training split's English side and The Time Machine's training block, never a held-out sentence).
Then, for each label budget N and seed, ``bert-question`` is fine-tuned twice on the same N labelled
sentences: once starting from the pretrained weights and vocabulary, once from random weights (and a
vocabulary of the training sentences). Both are chosen on validation accuracy and scored on the test
sentences, which neither pretraining nor fine-tuning saw. The answer is the gap between the two
curves of test accuracy against N, with its spread over seeds.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from divekit.errors import DivekitError
from divekit.pipeline import train_model
from divekit.plots import save_figure
from divekit.registry import register_experiment

FULL_BUDGETS = (100, 1_000, 10_000)
FULL_SEEDS = (0, 1, 2)
QUICK_BUDGETS = (1_000,)
QUICK_SEEDS = (0,)
# Quick: one short pass of masked-LM pretraining over part of the text; full: the registered recipe.
QUICK_PRETRAIN = {"epochs": 1, "limit": 16_000}
STARTS = ("pretrained", "scratch")
# Model options shared by the encoder and the classifier (their sizes must match); the registered
# defaults unless set (tests shrink them).
ENCODER: dict[str, object] = {}


def _silent(*_args, **_kwargs) -> None:
    pass


def _pretrain(ctx) -> tuple[Path, dict]:
    """The encoder's checkpoint and its results: ``-o bert=PATH`` if given, else trained here."""
    given = ctx.options.get("bert")
    if given:
        path = Path(given)
        if not path.exists():
            raise DivekitError(f"bert={given}: no such checkpoint")
        return path, {"given": str(path)}
    quick = QUICK_PRETRAIN if ctx.quick else {}
    r = train_model("bert", options=dict(ENCODER), train_overrides={"epochs": quick.get("epochs"), "seed": ctx.seed, "device": ctx.device},
                    limit=quick.get("limit"), out=ctx.path("bert"), progress=ctx.progress, log=_silent)
    return ctx.path("bert") / "best.pt", r


def _budgets(ctx) -> tuple[int, ...]:
    if "budgets" not in ctx.options:
        return ctx.pick(QUICK_BUDGETS, FULL_BUDGETS)
    try:
        budgets = tuple(int(b) for b in ctx.options["budgets"].split(","))
    except ValueError:
        raise DivekitError(f"budgets must be whole numbers separated by commas, got '{ctx.options['budgets']}'") from None
    if not budgets or min(budgets) < 10:
        raise DivekitError("each label budget must be at least 10 sentences")
    return tuple(sorted(set(budgets)))


def _fine_tune(ctx, start: str, budget: int, seed: int, encoder: Path) -> dict:
    options = {**ENCODER, "pretrained": str(encoder) if start == "pretrained" else ""}
    r = train_model("bert-question", options=options, train_overrides={"seed": seed, "device": ctx.device},
                    limit=budget, out=ctx.path(f"{start}-{budget}-seed{seed}"), progress=ctx.progress, log=_silent)
    return {"accuracy": r["test"]["test_accuracy"], "seconds": r["train_seconds"]}


def _spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _plot(path: Path, budgets: tuple[int, ...], scores: dict, constant: float) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    for start, colour in zip(STARTS, ("tab:blue", "tab:orange")):
        means = [100 * statistics.mean(scores[start, b]) for b in budgets]
        sds = [100 * _spread(scores[start, b]) for b in budgets]
        ax.errorbar(budgets, means, yerr=sds, marker="o", capsize=4, color=colour,
                    label=f"{start} encoder, mean ± sd over seeds")
    ax.axhline(100 * constant, color="grey", linestyle="--", label="always answering 'statement'")
    ax.set(xlabel="labelled training sentences", ylabel="test accuracy (%)",
           title="BERT on question or statement: pretrained vs from scratch")
    if len(budgets) > 1:
        ax.set_xscale("log")
    ax.set_xticks(budgets, [f"{b:,}" for b in budgets])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", frameon=False, fontsize=9, ncol=1)
    save_figure(fig, path)


def _constant_accuracy() -> float:
    """Test accuracy of always answering "statement", the majority label."""
    from divekit.tasks.question import label_sentences, real_sentences

    labels = [label for _, label in label_sentences(real_sentences()["test"])]
    return 1 - sum(labels) / len(labels)


@register_experiment(
    "bert-labels", chapter="attention", title="What pretraining buys: BERT with 100 to 10,000 labels",
    description="masked-LM pretrained BERT against the same encoder from scratch, by label budget",
    options={"bert": "a `divekit train bert` checkpoint to fine-tune instead of pretraining one here",
             "budgets": "label budgets, comma-separated (default 1000 quick, 100,1000,10000 full)"},
    modes=("Quick: a short pass of pretraining, then 1,000 labels fine-tuned from it and from scratch, one "
           "seed, about a minute; full: the registered 4-epoch pretraining, budgets 100, 1,000 and 10,000, "
           "three seeds each."),
)
def run(ctx) -> dict:
    budgets = _budgets(ctx)
    seeds = ctx.pick(QUICK_SEEDS, FULL_SEEDS)
    encoder, pretraining = _pretrain(ctx)
    scores: dict[tuple[str, int], list[float]] = {}
    seconds: dict[tuple[str, int], list[float]] = {}
    for budget in budgets:
        for seed in seeds:
            for start in STARTS:
                r = _fine_tune(ctx, start, budget, seed, encoder)
                scores.setdefault((start, budget), []).append(r["accuracy"])
                seconds.setdefault((start, budget), []).append(r["seconds"])
    constant = _constant_accuracy()
    rows, metrics = [], {"constant_test_accuracy": constant}
    for budget in budgets:
        pre, scr = scores["pretrained", budget], scores["scratch", budget]
        gain = statistics.mean(pre) - statistics.mean(scr)
        rows.append([budget, len(pre), statistics.mean(pre), _spread(pre), statistics.mean(scr), _spread(scr), gain,
                     statistics.mean(seconds["pretrained", budget] + seconds["scratch", budget])])
        metrics[f"pretrained_{budget}_test_accuracy"] = statistics.mean(pre)
        metrics[f"scratch_{budget}_test_accuracy"] = statistics.mean(scr)
    _plot(ctx.path("bert_labels.png"), budgets, scores, constant)
    if "given" not in pretraining:
        metrics["pretraining_seconds"] = pretraining["train_seconds"]
        metrics["pretraining_masked_test_accuracy"] = pretraining["test"].get("test_accuracy")
    where = (f"the given encoder {pretraining['given']}" if "given" in pretraining else
             f"an encoder pretrained here for {pretraining['train_seconds']:.0f} s")
    best = max(rows, key=lambda row: row[6])
    return {
        "summary": (
            f"{'Quick mode: one short pass of pretraining and one budget. ' if ctx.quick else ''}"
            f"Fine-tuning {where} against the same encoder from random weights, on "
            f"{', '.join(f'{b:,}' for b in budgets)} labelled sentences ({len(seeds)} seed"
            f"{'s' if len(seeds) > 1 else ''} each). The largest gain from pretraining is "
            f"{100 * best[6]:+.2f} points at {best[0]:,} labels; always answering 'statement' scores "
            f"{100 * constant:.2f}% on test."
        ),
        "metrics": metrics,
        "tables": [{"title": "Test accuracy by label budget (model chosen on validation accuracy)",
                    "columns": ["labels", "seeds", "pretrained acc.", "pretrained acc. sd", "scratch acc.", "scratch acc. sd",
                                "gain (points)", "fine-tune s"],
                    "rows": rows}],
        "figures": [{"file": "bert_labels.png",
                     "caption": ("Test accuracy against the label budget (log axis), mean and standard deviation "
                                 "over seeds; the dashed line is the majority answer.")}],
    }
