"""GPT or LSTM? Two character language models of The Time Machine at equal training time, and their ensemble.

``gpt-lm`` (a pre-norm causal Transformer) and ``deep-lstm-lm`` (two stacked LSTM layers) are trained
one after the other by the same Trainer on the same contiguous training block, each for a number
of epochs sized to take about the same time, and chosen on validation perplexity. The experiment
reports, for each: parameters, training seconds, training characters per second, the matrix-product
rate (GFLOP/s) and the test perplexity; and the curve of validation perplexity against training
seconds, which shows where each family learns fastest.

Then the two become an ensemble (the mean of their predicted probabilities) scored with dynamic
evaluation: each member keeps learning from the test text it has already scored, with the step size
chosen for it on the validation block. Models of different families err differently, which is what
an ensemble needs; its training cost is the sum of all members' seconds. ``-o lstms=N`` adds LSTMs
of further seeds to the ensemble (the equal-time comparison keeps the first), and ``-o gpt_epochs``
/ ``-o lstm_epochs`` set the members' schedules directly, for an ensemble sized to a time budget.

FLOPs per training character are counted, as is usual for Transformers (Kaplan et al., 2020), as
``6 N`` for the ``N`` weights that enter matrix products (forward 2N, backward 4N) plus, for
attention, ``12 L D T`` (the ``T x T`` scores and their weighted sum in ``L`` layers of width
``D``, all ``T`` positions computed before the causal mask).
"""

from __future__ import annotations

import time
from itertools import accumulate

from torch import nn

from divekit.data.timemachine import load_lm_data
from divekit.metrics.perplexity import baselines
from divekit.pipeline import train_model
from divekit.plots import line_plot
from divekit.registry import register_experiment
from divekit.tasks.language_model import load_language_model
from divekit.train.dynamic_eval import DynamicEvalConfig, dynamic_evaluate, ensemble

MODELS = ("gpt-lm", "deep-lstm-lm")
# Per mode and model: model options, epochs, training characters (None: the whole block). Full
# mode sizes the epochs to ``-o seconds=`` of training each, from a one-epoch probe run; quick mode
# shows the curves' first stretch.
PLAN = {
    "full": {"gpt-lm": ({}, None, None), "deep-lstm-lm": ({}, None, None)},
    "quick": {"gpt-lm": ({"attn_dropout": 0.0}, 3, None), "deep-lstm-lm": ({}, 2, None)},
}
FULL_SECONDS = 600
# Dynamic-evaluation step sizes tried on the validation block; the quick mode takes the middle one
# without trying.
DYNAMIC_LRS = {"gpt-lm": (3e-5, 1e-4, 3e-4), "deep-lstm-lm": (1e-4, 3e-4, 1e-3)}
# Characters of each held-out block read by dynamic evaluation: all of it in full mode, its start
# in quick mode (dynamic evaluation reads one character stream, which takes most of a quick run's
# time); tests shorten both.
EVAL_CHARACTERS: int | None = None
QUICK_EVAL_CHARACTERS = 4_000
LABELS = {"gpt-lm": "GPT (gpt-lm)", "deep-lstm-lm": "LSTM (deep-lstm-lm)"}
EPOCH_OPTIONS = {"gpt-lm": "gpt_epochs", "deep-lstm-lm": "lstm_epochs"}


def _silent(*_args, **_kwargs) -> None:
    pass


def matmul_weights(model: nn.Module) -> int:
    """Weights that enter a matrix product for every token: the weight matrices of linear and
    recurrent layers, and a token table only where it is also the output layer (GPT's tied head).
    Position tables and other lookups cost no products."""
    total = sum(p.numel() for module in model.modules() if isinstance(module, (nn.Linear, nn.RNNBase))
                for p in module.parameters(recurse=False) if p.dim() == 2)
    if hasattr(model, "blocks"):  # a GPT: logits = LN(x) Embed^T
        total += model.embed.weight.numel()
    return total


def training_flops_per_token(model: nn.Module, num_steps: int) -> int:
    """``6 N`` plus, for a Transformer, ``12 L D T`` for its attention (see the module docstring)."""
    flops = 6 * matmul_weights(model)
    if hasattr(model, "blocks"):
        flops += 12 * model.config.layers * model.config.d_model * num_steps
    return flops


def _curve(history: list[dict]) -> tuple[list[float], list[float]]:
    """Cumulative training seconds at the end of each epoch, and the validation perplexity there."""
    # Unrounded: a tiny model's epochs can each take under 10 ms.
    seconds = list(accumulate(h["train_seconds"] for h in history))
    return seconds, [h["val_perplexity"] for h in history]


def _members(ctx) -> list[tuple[str, str, int]]:
    """``(key, model name, seed)`` of each ensemble member: the GPT, then ``-o lstms`` LSTMs of
    successive seeds; the first LSTM is the one compared with the GPT."""
    lstms = ctx.whole_option("lstms", 1, minimum=1)
    return [("gpt-lm", "gpt-lm", ctx.seed)] + [
        ("deep-lstm-lm" if i == 0 else f"deep-lstm-lm-{i + 1}", "deep-lstm-lm", ctx.seed + i) for i in range(lstms)]


def _label(key: str, run: dict) -> str:
    return LABELS[run["model"]] + ("" if key == run["model"] else f", seed {run['seed']}")


def _epochs_for(ctx, name: str) -> tuple[int, float | None]:
    """Epochs for model ``name`` and the seconds of its probe epoch (None without one): the plan's
    epochs, ``-o gpt_epochs`` / ``-o lstm_epochs`` where given, or else the epochs that fill
    ``-o seconds`` of training, from the training seconds of a one-epoch run."""
    options, epochs, limit = PLAN["quick" if ctx.quick else "full"][name]
    if epochs is not None:
        return epochs, None
    if EPOCH_OPTIONS[name] in ctx.options:
        return ctx.whole_option(EPOCH_OPTIONS[name], 1, minimum=1), None
    seconds = ctx.whole_option("seconds", FULL_SECONDS, minimum=1)
    probe = train_model(name, options=dict(options), train_overrides={"epochs": 1, "seed": ctx.seed,
                                                                       "device": ctx.device},
                        limit=limit, out=ctx.path(f"{name}-probe"), progress=ctx.progress, log=_silent)
    return max(2, round(seconds / probe["train_seconds"])), probe["train_seconds"]


def _train(ctx, key: str, name: str, seed: int, epochs: int) -> tuple[dict, nn.Module]:
    """Train member ``key`` (model ``name``) for ``epochs``; its record and its selected model (eval mode)."""
    options, _, limit = PLAN["quick" if ctx.quick else "full"][name]
    overrides = {"epochs": epochs, "seed": seed, "device": ctx.device}
    r = train_model(name, options=dict(options), train_overrides=overrides, limit=limit, out=ctx.path(key),
                    progress=ctx.progress, log=_silent)
    model, _, ckpt = load_language_model(ctx.path(key) / "best.pt", expect_model=name)
    per_token = training_flops_per_token(model, ckpt["task_state"]["num_steps"])
    characters = sum(h["train_items_per_s"] * h["train_seconds"] for h in r["history"])
    rate = characters / r["train_seconds"]
    seconds, val = _curve(r["history"])
    record = {"model": name, "seed": seed, "options": options, "epochs": epochs,
              "parameters": r["parameters"], "train_seconds": r["train_seconds"], "characters_per_s": rate,
              "flops_per_character": per_token, "gflops_per_s": per_token * rate / 1e9,
              "precision": (r.get("precision_choice") or {}).get("precision"), "selected_epoch": r["selected_epoch"],
              "test_perplexity": r["test"]["test_perplexity"], "curve": {"seconds": seconds, "val_perplexity": val}}
    return record, model


def _weights(gpt_weight: float, members: int) -> list[float]:
    """The GPT (the first member) at ``gpt_weight``; the LSTMs share the rest equally."""
    return [gpt_weight] + [(1.0 - gpt_weight) / (members - 1)] * (members - 1)


def _mix_weight(on_val: list) -> float:
    """The GPT's weight in the mixture (a grid of twentieths) that scores validation best."""
    grid = [i / 20 for i in range(21)]
    return min(grid, key=lambda w: ensemble(on_val, _weights(w, len(on_val))).loss)


def _dynamic(ctx, runs: dict, models: dict[str, nn.Module], data) -> dict:
    """Each member's step size chosen on validation, then the members and their mixture on test.

    Full mode also chooses the mixture's weights on validation (the members need not be equally good).
    """
    keep = EVAL_CHARACTERS if EVAL_CHARACTERS is not None or not ctx.quick else QUICK_EVAL_CHARACTERS
    val, test = data.val[:keep], data.test[:keep]
    members, static, val_members = [], [], []
    for key, model in models.items():
        lrs = DYNAMIC_LRS[runs[key]["model"]]
        on_val = {} if ctx.quick else {lr: dynamic_evaluate(model, val, DynamicEvalConfig(lr=lr), per_token=True)
                                       for lr in lrs}
        lr = min(on_val, key=lambda k: on_val[k].loss) if on_val else lrs[1]
        if on_val:
            val_members.append(on_val[lr])
        static.append(dynamic_evaluate(model, test, DynamicEvalConfig(lr=0.0), per_token=True))
        members.append(dynamic_evaluate(model, test, DynamicEvalConfig(lr=lr), per_token=True))
        runs[key]["dynamic"] = {"val_perplexity_by_lr": {f"{k:g}": r.metrics()["perplexity"] for k, r in on_val.items()},
                                "lr": lr, "test_perplexity": members[-1].metrics()["perplexity"],
                                "test_perplexity_one_stream": static[-1].metrics()["perplexity"]}
    mixture = {"members": list(models), "static_test_perplexity": ensemble(static).metrics()["perplexity"],
               "dynamic_test_perplexity": ensemble(members).metrics()["perplexity"],
               "train_seconds": sum(run["train_seconds"] for run in runs.values()),
               "scored_characters": members[0].count}
    if val_members:
        w = _mix_weight(val_members)
        mixture.update(gpt_weight=w, weighted_dynamic_test_perplexity=ensemble(
            members, _weights(w, len(members))).metrics()["perplexity"])
    return mixture


def _summary(ctx, runs: dict, mixture: dict, ngrams: dict[str, float]) -> str:
    gpt, lstm = runs["gpt-lm"], runs["deep-lstm-lm"]
    ahead = "GPT" if gpt["test_perplexity"] < lstm["test_perplexity"] else "LSTM"
    quick = (f"Quick mode: a few epochs each, the start of both curves; the one-stream and dynamic scores "
             f"read the first {QUICK_EVAL_CHARACTERS:,} test characters. ")
    return (f"{quick if ctx.quick else ''}"
            f"After {gpt['train_seconds']:.0f} s of training the GPT reaches test perplexity "
            f"{gpt['test_perplexity']:.2f}, the LSTM after {lstm['train_seconds']:.0f} s "
            f"{lstm['test_perplexity']:.2f}: the {ahead} is ahead by "
            f"{abs(gpt['test_perplexity'] - lstm['test_perplexity']):.2f} (count-based bigrams score "
            f"{ngrams['bigram']:.2f}, trigrams {ngrams['trigram']:.2f}). {_ensemble_words(runs)} scores "
            f"{mixture['static_test_perplexity']:.2f} over one stream, and {mixture['dynamic_test_perplexity']:.2f} "
            f"with dynamic evaluation, for {mixture['train_seconds']:.0f} s of training in all.")


def _ensemble_words(runs: dict) -> str:
    seeds = [str(r["seed"]) for r in runs.values() if r["model"] == "deep-lstm-lm"]
    return "Their ensemble" if len(seeds) == 1 else f"The ensemble of the GPT and {len(seeds)} LSTMs (seeds {', '.join(seeds)})"


def _table(runs: dict, mixture: dict) -> list[dict]:
    rows = [[_label(n, r), r["parameters"], r["epochs"], r["train_seconds"], r["characters_per_s"], r["gflops_per_s"],
             r["test_perplexity"], r["dynamic"]["lr"], r["dynamic"]["test_perplexity"]] for n, r in runs.items()]
    rows.append(["ensemble (mean of probabilities)", sum(r["parameters"] for r in runs.values()), None,
                 mixture["train_seconds"], None, None, mixture["static_test_perplexity"], None,
                 mixture["dynamic_test_perplexity"]])
    if "gpt_weight" in mixture:
        rows.append([f"ensemble, GPT weight {mixture['gpt_weight']:.2f} (chosen on validation)",
                     sum(r["parameters"] for r in runs.values()), None, mixture["train_seconds"], None, None, None,
                     None, mixture["weighted_dynamic_test_perplexity"]])
    return [{"title": "Test perplexity at about equal training time (each model chosen on validation)",
             "columns": ["model", "parameters", "epochs", "training s", "characters/s", "GFLOP/s",
                         "test ppl.", "dynamic lr", "test ppl., dynamic"],
             "rows": rows}]


@register_experiment("gpt-vs-lstm", chapter="attention", title="GPT or LSTM at equal training time",
                     description="gpt-lm against deep-lstm-lm on The Time Machine: validation perplexity "
                                 "against training seconds, test perplexity, and their ensemble with "
                                 "dynamic evaluation",
                     options={"seconds": f"training seconds per model in full mode (default {FULL_SECONDS})",
                              "gpt_epochs": "the GPT's epochs in full mode (instead of sizing them to -o seconds)",
                              "lstm_epochs": "each LSTM's epochs in full mode (instead of sizing them to -o seconds)",
                              "lstms": "LSTMs in the ensemble, of seeds SEED, SEED+1, ... (default 1)"},
                     modes=("Quick: three GPT epochs and two LSTM epochs, dynamic evaluation at preset step "
                            "sizes, under a minute; full: epochs sized by a one-epoch probe to ten minutes of "
                            "training each (-o seconds=N, or -o gpt_epochs / -o lstm_epochs), the step sizes "
                            "and the mixture's weights chosen on validation."))
def run(ctx) -> dict:
    start = time.perf_counter()
    members = _members(ctx)
    plan = {name: _epochs_for(ctx, name) for name in MODELS}
    trained = {key: _train(ctx, key, name, seed, plan[name][0]) for key, name, seed in members}
    runs = {key: {**record, "probe_epoch_seconds": plan[record["model"]][1]} for key, (record, _) in trained.items()}
    machine_seconds = time.perf_counter() - start  # probes, training and test scoring of every member
    data = load_lm_data("char")  # both models read characters (the registered token)
    mixture = _dynamic(ctx, runs, {key: model for key, (_, model) in trained.items()}, data)
    mixture["machine_seconds"] = machine_seconds
    line_plot(ctx.path("val_perplexity_vs_seconds.png"),
              {(_label(n, r), "val"): (r["curve"]["seconds"], r["curve"]["val_perplexity"]) for n, r in runs.items()},
              xlabel="training seconds", ylabel="validation perplexity", logy=True,
              title="Character LMs of The Time Machine")
    gap = runs["gpt-lm"]["test_perplexity"] - runs["deep-lstm-lm"]["test_perplexity"]
    ngrams = baselines(data.train, data.test, len(data.vocab))  # count-based n-grams, for scale
    return {"summary": _summary(ctx, runs, mixture, ngrams),
            "metrics": {"gpt_test_perplexity": runs["gpt-lm"]["test_perplexity"],
                        "lstm_test_perplexity": runs["deep-lstm-lm"]["test_perplexity"],
                        "gpt_minus_lstm_test_perplexity": gap,
                        "ensemble_dynamic_test_perplexity": mixture["dynamic_test_perplexity"],
                        "ensemble_train_seconds": mixture["train_seconds"],
                        "ensemble_members": len(runs),
                        **{f"{order}_test_perplexity": value for order, value in ngrams.items()}},
            "runs": runs, "ensemble": mixture, "tables": _table(runs, mixture),
            "figures": [{"file": "val_perplexity_vs_seconds.png",
                         "caption": "Validation perplexity (log axis) after each epoch against the seconds of "
                                    "training so far, for the GPT and the LSTMs trained one after the other."}]}
