"""What pretraining buys when labels are few: BERT on "is this English sentence a question?".

One ``bert`` encoder is pretrained by masked language modelling on unlabelled English (the fra-eng
training split's English side and The Time Machine's training block, never a held-out sentence).
Then, for each label budget N and seed, ``bert-question`` is fine-tuned twice on the same N labelled
sentences: once starting from the pretrained weights and vocabulary, once from random weights (and a
vocabulary of the training sentences). Both are chosen on validation accuracy and scored on the test
sentences, which neither pretraining nor fine-tuning saw. The answer is the gap between the two
curves of test accuracy against N, with its spread over seeds.

As ELMo did with its layers, the frozen pretrained encoder also serves as a feature extractor: each
layer's output (the embeddings and every block) is averaged over a sentence's words, a learned
softmax-weighted mix of the layers feeds a linear classifier, and the learned weights are reported
beside the biLSTM's of the bidirectional experiment (and against the top layer alone).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from divekit import seeding
from divekit.errors import DivekitError
from divekit.models.bert import BERTQuestionConfig
from divekit.models.bilstm_tagger import ScalarMix
from divekit.pipeline import train_model
from divekit.plots import bars_plot, save_figure
from divekit.registry import register_experiment
from divekit.train.checkpoint import load_checkpoint, resolve_checkpoint

FULL_BUDGETS = (100, 1_000, 10_000)
FULL_SEEDS = (0, 1, 2)
QUICK_BUDGETS = (1_000,)
QUICK_SEEDS = (0,)
# Quick: one short pass of masked-LM pretraining over part of the text; full: the registered recipe.
QUICK_PRETRAIN = {"epochs": 1, "limit": 16_000}
STARTS = ("pretrained", "scratch")
# The frozen-encoder probe: labels it is fitted on, and its Adam steps of 256 sentences.
MIX_BUDGET = {"quick": 1_000, "full": 10_000}
MIX_STEPS = 400
# Model options shared by the encoder and the classifier (their sizes must match); the registered
# defaults unless set (tests shrink them).
ENCODER: dict[str, object] = {}


def _silent(*_args, **_kwargs) -> None:
    pass


def _pretrain(ctx) -> tuple[Path, dict]:
    """The encoder's checkpoint and its results: ``-o bert=PATH`` if given, else trained here."""
    given = ctx.options.get("bert")
    if given:
        if not Path(given).exists():
            raise DivekitError(f"bert={given}: no such checkpoint")
        path = resolve_checkpoint(given)  # a run directory: its best.pt
        load_checkpoint(path, expect_model="bert")  # another model's checkpoint is refused before any work
        return path, {"given": str(path)}
    quick = QUICK_PRETRAIN if ctx.quick else {}
    overrides = {"epochs": quick.get("epochs"), "seed": ctx.seed, "device": ctx.device}
    r = train_model("bert", options=dict(ENCODER), train_overrides=overrides, limit=quick.get("limit"),
                    out=ctx.path("bert"), progress=ctx.progress, log=_silent)
    return ctx.path("bert") / "best.pt", r


def _budgets(ctx) -> tuple[int, ...]:
    if "budgets" not in ctx.options:
        return ctx.pick(QUICK_BUDGETS, FULL_BUDGETS)
    try:
        budgets = tuple(int(b) for b in ctx.options["budgets"].split(","))
    except ValueError:
        raise DivekitError(
            f"budgets must be whole numbers separated by commas, got '{ctx.options['budgets']}'") from None
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


def _table_sd(values: list[float]) -> float | None:
    """The sample standard deviation, or None (shown as a dash) for a single seed."""
    return statistics.stdev(values) if len(values) > 1 else None


def _plot(path: Path, budgets: tuple[int, ...], scores: dict, constant: float) -> None:
    """Test accuracy against the label budget, one line per start (bars when there is one budget)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    for k, (start, colour) in enumerate(zip(STARTS, ("tab:blue", "tab:orange"))):
        means = [100 * statistics.mean(scores[start, b]) for b in budgets]
        sds = [100 * _spread(scores[start, b]) for b in budgets]
        label = f"{start} encoder" + (", mean ± sd over seeds" if any(sds) else "")
        if len(budgets) == 1:  # one point per line says nothing: two bars
            ax.bar(k, means[0], yerr=sds[0] or None, capsize=4, color=colour, width=0.6, label=label)
        else:
            ax.errorbar(budgets, means, yerr=sds, marker="o", capsize=4, color=colour, label=label)
    ax.axhline(100 * constant, color="grey", linestyle="--", label="always answering 'statement'")
    ax.set(ylabel="test accuracy (%)", title="BERT on question or statement: pretrained vs from scratch")
    if len(budgets) == 1:
        ax.set_xticks(range(len(STARTS)), list(STARTS))
        ax.set(xlabel=f"{budgets[0]:,} labelled training sentences", xlim=(-0.8, len(STARTS) - 0.2))
        low = min(100 * constant, *(100 * min(scores[s, budgets[0]]) for s in STARTS))
        ax.set_ylim(low - 2, 100)
    else:
        ax.set_xscale("log")
        ax.set_xticks(budgets, [f"{b:,}" for b in budgets])
        ax.minorticks_off()
        ax.set(xlabel="labelled training sentences")
    ax.grid(alpha=0.3, axis="y")
    fig.legend(loc="outside lower center", frameon=False, fontsize=9, ncol=1)
    save_figure(fig, path)


class LayerProbe(nn.Module):
    """A linear classifier on frozen sentence features ``(L+1, B, 1, D)``: on their learned
    :class:`ScalarMix` (``mix=True``, as ELMo) or on the top layer only -> logits ``(B, 2)``."""

    def __init__(self, layers: int, d_model: int, *, mix: bool) -> None:
        super().__init__()
        self.mix = ScalarMix(layers) if mix else None
        self.head = nn.Linear(d_model, 2)

    def forward(self, features: Tensor) -> Tensor:
        x = self.mix(features) if self.mix is not None else features[-1]  # (B, 1, D)
        return self.head(x[:, 0])


@torch.no_grad()
def layer_features(encoder: nn.Module, arrays: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    """Each layer's mean over a sentence's real tokens, ``(L+1, N, 1, D)``, and the labels ``(N,)``."""
    tokens, segments, valid, labels = arrays
    chunks = []
    for i in range(0, tokens.shape[0], 512):
        t, s, v = tokens[i:i + 512], segments[i:i + 512], valid[i:i + 512]
        states = torch.stack(encoder.hidden_states(t, s, v))  # (L+1, B, T, D)
        real = (torch.arange(t.shape[1]) < v[:, None]).to(states.dtype)  # (B, T)
        chunks.append((states * real[None, :, :, None]).sum(2) / v[None, :, None])  # (L+1, B, D)
    return torch.cat(chunks, 1).unsqueeze(2), labels


def _fit_probe(probe: LayerProbe, train: tuple[Tensor, Tensor], seed: int) -> LayerProbe:
    features, labels = train
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2)
    g = seeding.generator(seed, "data")
    for _ in range(MIX_STEPS):
        idx = torch.randint(features.shape[1], (256,), generator=g)
        loss = F.cross_entropy(probe(features[:, idx]), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return probe


def _layer_mix(ctx, encoder_path: Path) -> dict:
    """Frozen pretrained encoder, linear probes on its layer mix and on its top layer: test accuracy and weights."""
    from divekit.tasks.masked_lm import load_bert
    from divekit.tasks.question import QuestionTask

    bert, vocab, _ = load_bert(encoder_path)
    budget = MIX_BUDGET["quick" if ctx.quick else "full"]
    num_steps = int(ENCODER.get("num_steps", BERTQuestionConfig.num_steps))  # as the fine-tuned classifier reads
    task = QuestionTask(num_steps=num_steps, batch_size=256, vocab_size=len(vocab), vocab=vocab, seed=ctx.seed,
                        limit=budget)
    train, test = (layer_features(bert.encoder, task.arrays[split]) for split in ("train", "test"))
    layers, d_model = train[0].shape[0], train[0].shape[-1]
    out = {"budget": min(budget, train[0].shape[1])}
    for name, mix in (("mix", True), ("top", False)):
        seeding.seed_global(ctx.seed, "init")
        probe = _fit_probe(LayerProbe(layers, d_model, mix=mix), train, ctx.seed).eval()
        with torch.no_grad():
            out[f"{name}_accuracy"] = (probe(test[0]).argmax(-1) == test[1]).float().mean().item()
        if mix:
            out["weights"] = probe.mix.weights().tolist()
    return out


def _bilstm_weights(ctx) -> list[float] | None:
    """The ELMo-style weights of the bidirectional experiment, when the tour ran it beside this one."""
    path = ctx.out_dir.parent / "bidirectional" / "results.json"
    try:
        tables = json.loads(path.read_text())["tables"]
    except (OSError, ValueError, KeyError):
        return None
    table = next((t for t in tables if "layer weights" in t.get("title", "")), None)
    return [row[1] for row in table["rows"]] if table else None


def _constant_accuracy() -> float:
    """Test accuracy of always answering "statement", the majority label."""
    from divekit.tasks.question import label_sentences, real_sentences

    labels = [label for _, label in label_sentences(real_sentences()["test"])]
    return 1 - sum(labels) / len(labels)


@register_experiment(
    "bert-labels", chapter="attention", title="What pretraining buys: BERT with 100 to 10,000 labels",
    description="masked-LM pretrained BERT against the same encoder from scratch, by label budget; its layer mix",
    options={"bert": "a `divekit train bert` checkpoint to fine-tune instead of pretraining one here",
             "budgets": "label budgets, comma-separated (default 1000 quick, 100,1000,10000 full)"},
    modes=("Quick: a short pass of pretraining, then 1,000 labels fine-tuned from it and from scratch, one "
           "seed, and a layer-mix probe on 1,000 labels, about a minute; full: the registered 4-epoch "
           "pretraining, budgets 100, 1,000 and 10,000, three seeds each, the probe on 10,000 labels."),
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
        rows.append([budget, len(pre), statistics.mean(pre), _table_sd(pre), statistics.mean(scr), _table_sd(scr), gain,
                     statistics.mean(seconds["pretrained", budget] + seconds["scratch", budget])])
        metrics[f"pretrained_{budget}_test_accuracy"] = statistics.mean(pre)
        metrics[f"scratch_{budget}_test_accuracy"] = statistics.mean(scr)
    _plot(ctx.path("bert_labels.png"), budgets, scores, constant)
    mix = _layer_mix(ctx, encoder)
    metrics.update({"probe_mix_test_accuracy": mix["mix_accuracy"], "probe_top_test_accuracy": mix["top_accuracy"]})
    names = ["embedding"] + [f"block {i}" for i in range(1, len(mix["weights"]))]
    bilstm = _bilstm_weights(ctx)
    weights = {"BERT (this run)": mix["weights"]}
    if bilstm is not None and len(bilstm) == len(names):
        weights["biLSTM (bidirectional experiment)"] = bilstm
    bars_plot(ctx.path("bert_layer_weights.png"), names, weights, xlabel="layer", ylabel="softmax weight",
              title="learned ELMo-style layer weights")
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
            f"{100 * constant:.2f}% on test. A linear probe on the frozen encoder's learned layer mix scores "
            f"{100 * mix['mix_accuracy']:.2f}% (top layer alone {100 * mix['top_accuracy']:.2f}%), with weights "
            + ", ".join(f"{n} {w:.2f}" for n, w in zip(names, mix["weights"])) + "."
        ),
        "metrics": metrics,
        "tables": [{"title": "Test accuracy by label budget (model chosen on validation accuracy)",
                    "columns": ["labels", "seeds", "pretrained acc.", "pretrained acc. sd", "scratch acc.",
                                "scratch acc. sd", "gain (points)", "fine-tune s"],
                    "rows": rows},
                   {"title": f"Frozen pretrained encoder, linear probe on {mix['budget']:,} labels",
                    "columns": ["features", "test acc."],
                    "rows": [["ELMo-style mix of all layers", mix["mix_accuracy"]],
                             ["top layer only", mix["top_accuracy"]]]},
                   {"title": "Learned layer weights of the mix",
                    "columns": ["layer", *(f"{name} weight" for name in weights)],
                    "rows": [[name, *(w[i] for w in weights.values())] for i, name in enumerate(names)]}],
        "figures": [{"file": "bert_labels.png",
                     "caption": ("Test accuracy against the label budget (log axis), mean and standard deviation "
                                 "over seeds; the dashed line is the majority answer." if len(budgets) > 1 else
                                 f"Test accuracy with {budgets[0]:,} labels, from the pretrained encoder and from "
                                 "scratch; the dashed line is the majority answer.")},
                    {"file": "bert_layer_weights.png",
                     "caption": (f"Softmax weights of the scalar mix over the frozen encoder's layers, learnt with "
                                 f"a linear probe on {mix['budget']:,} labels"
                                 + (", beside the biLSTM's from the bidirectional experiment." if len(weights) > 1
                                    else "."))}],
    }
