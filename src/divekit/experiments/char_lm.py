"""Character language models on The Time Machine against count-based baselines.

Trains the registered ``rnn-lm``, ``gru-lm`` (scratch and torch layers), ``lstm-lm`` and
``deep-lstm-lm`` with the Trainer on the training block, and reports per model the training
perplexity (running, during the last epoch), validation and test perplexity over the whole block
with the state carried, bits per character, training tokens/s and wall time, beside the uniform,
unigram, bigram and trigram (add-one) perplexities of the same test block. Held-out perplexity is
the headline: the plot draws training and validation perplexity per epoch so that memorisation
(training falling while validation stalls) shows.
"""

from __future__ import annotations

import math

from divekit.data.timemachine import load_lm_data
from divekit.errors import DivekitError
from divekit.metrics.perplexity import baselines, bits_per_char
from divekit.pipeline import train_model
from divekit.plots import line_plot
from divekit.registry import register_experiment

# (model, options, recipe overrides). Full mode: each model's registered recipe, one thread (the
# recorded runs used one).
_FULL = tuple((name, {"impl": impl}, {"threads": 1}) for name, impl in (
    ("rnn-lm", "scratch"), ("gru-lm", "scratch"), ("gru-lm", "torch"), ("lstm-lm", "scratch"),
    ("deep-lstm-lm", "scratch")))
# The quick tour, sized to about a minute on a 2-core CPU: the RNN and both GRU builds (scratch and
# torch, equal to float rounding) two epochs at 256 units; the LSTMs with torch cells (1.7x faster
# than the scratch ones, which tests/test_nn_rnn.py holds equal), the single one wider and longer:
# the model that shows how far a minute goes.
_QUICK = (
    ("rnn-lm", {"impl": "scratch", "hidden": 256}, {"epochs": 2}),
    ("gru-lm", {"impl": "scratch", "hidden": 256}, {"epochs": 2}),
    ("gru-lm", {"impl": "torch", "hidden": 256}, {"epochs": 2}),
    ("lstm-lm", {"impl": "torch", "hidden": 384}, {"epochs": 8, "lr": 0.004, "schedule": "cosine",
                                                   "precision": "auto"}),
    ("deep-lstm-lm", {"impl": "torch", "hidden": 256, "dropout": 0.1}, {"epochs": 2, "lr": 0.004,
                                                                        "precision": "auto"}),
)


@register_experiment(
    "char-lm", chapter="rnn", title="Character language models on The Time Machine",
    description="RNN, GRU, LSTM and deep LSTM perplexity against n-gram baselines",
    options={"epochs": "quick mode: epochs of every model (default two to eight, by model)"},
    modes=("Quick: the five recurrent models trained two to eight epochs each, about a minute; full: "
           "each model's registered recipe (up to 30 epochs, with dropout for the deep LSTM)."),
)
def run(ctx) -> dict:
    data = load_lm_data("char")
    base = baselines(data.train, data.test, len(data.vocab))
    rows, series, metrics = [], {}, {}
    runs = ctx.pick(_QUICK, _FULL)
    if ctx.quick and "epochs" in ctx.options:
        epochs = ctx.whole_option("epochs", 1)
        runs = tuple((name, options, {**recipe, "epochs": epochs}) for name, options, recipe in runs)
    elif "epochs" in ctx.options:
        raise DivekitError("epochs sizes the quick run; the full run uses each model's recipe")
    for name, options, recipe in runs:
        impl = options["impl"]
        train = {**recipe, "seed": ctx.seed, "device": ctx.device}
        r = train_model(name, options=options, train_overrides=train, out=ctx.path(f"{name}-{impl}"),
                        progress=ctx.progress, log=lambda *a, **k: None)
        hist = r["history"]
        label = f"{name} ({impl})"
        train_ppl = [math.exp(h["train_loss"]) for h in hist]
        series[label, "train"] = (range(1, len(hist) + 1), train_ppl)
        series[label, "validation"] = (range(1, len(hist) + 1), [h["val_perplexity"] for h in hist])
        test = r["test"]
        # Raw values: the report rounds them, the same way as the metrics below.
        rows.append([label, r["parameters"], train_ppl[-1], min(h["val_perplexity"] for h in hist),
                     test["test_perplexity"], test["test_bits_per_char"],
                     sum(h["train_items_per_s"] for h in hist) / len(hist), r["train_seconds"]])
        metrics[f"{name}_{impl}_test_perplexity"] = test["test_perplexity"]
    for name, ppl in base.items():
        rows.append([f"{name} baseline", 0, "", "", ppl, bits_per_char(ppl), "", ""])
        metrics[f"{name}_test_perplexity"] = ppl
    line_plot(ctx.path("char_lm_perplexity.png"), series, xlabel="epoch", ylabel="perplexity", logy=True,
              title="training (running) vs validation perplexity")
    best = min(rows[: len(runs)], key=lambda row: row[4])
    return {
        "summary": (
            f"{'Quick mode: each model trained for seconds (two to eight epochs). ' if ctx.quick else ''}"
            f"{len(runs)} recurrent character models trained on the 138,742-character training block. Best test "
            f"perplexity {best[4]:.2f} ({best[0]}, {best[5]:.2f} bits per character) against "
            f"{base['bigram']:.2f} for an add-one bigram and {base['trigram']:.2f} for a trigram; a uniform guess "
            f"scores {base['uniform']:.0f}. Held-out perplexity is measured over whole blocks with the state carried."
        ),
        "metrics": metrics,
        "tables": [{"title": "Test-block perplexity (validation: best epoch)",
                    "columns": ["model", "parameters", "train ppl", "val ppl", "test ppl", "test bits/char",
                                "train tokens/s", "train s"],
                    "rows": rows}],
        "figures": [{"file": "char_lm_perplexity.png",
                     "caption": "Training perplexity (running mean during each epoch) and validation perplexity."}],
    }
