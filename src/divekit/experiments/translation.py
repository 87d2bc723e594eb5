"""English to French with the GRU seq2seq: BLEU by decoding method and beam width, and by sentence length.

The model is trained by the one Trainer on the fra-eng training split (selected on validation
BLEU), then the test pairs are translated with greedy search and with beam search of several
widths, with and without length normalisation, each scored by corpus BLEU (equal to sacreBLEU).
The test pairs are also grouped by source length, and 20 translations are shown beside their
references.

Quick mode trains a small model (one 256-unit GRU layer, 3,000-word vocabularies) on 25,000 pairs
for three epochs and scores 1,000 test pairs drawn at random; the full mode trains the registered
recipe (as ``divekit train seq2seq`` does) on all 157,130 pairs and scores all 5,000.
"""

from __future__ import annotations

import random
import time

from divekit import seeding
from divekit.experiments.base import ExperimentContext
from divekit.metrics.bleu import corpus_bleu
from divekit.metrics.mt_scores import scores_tables
from divekit.plots import bars_plot, line_plot  # also selects matplotlib's file-only backend
from divekit.registry import config_to_dict, get_model, register_experiment
from divekit.tasks.translation import (
    BLEU_UNK,
    Translation,
    Translator,
    load_translator,
    real_splits,
)
from divekit.train.config import TrainConfig
from divekit.train.trainer import Trainer

# Full mode: the model's registered defaults and recipe (4 epochs, precision auto, 8,000 French words), i.e.
# `divekit train seq2seq`, the run measured in docs/results/mt.md. Quick mode: one GRU layer of 256
# units (it learns fastest in a short budget), 3,000-word vocabularies, three epochs on 25,000 pairs
# (two scored 9.6 test BLEU on the Intel AMX machine, short of the tour's 10; three 12.3, 12 s more).
QUICK_OPTIONS = {"src_vocab_size": 3000, "tgt_vocab_size": 3000, "embed_size": 128, "hidden_size": 256,
                 "num_layers": 1, "num_steps": 16}
QUICK_TRAIN = {"epochs": 3, "batch_size": 128, "lr": 0.008, "optimizer": "adam", "grad_clip": 1.0,
               "precision": "auto"}
QUICK_PAIRS = {"train": 25_000, "val": 1000, "test": 1000}  # val and test drawn at random: the splits are length-sorted
QUICK_NOTE = ("Quick mode: one 256-unit GRU layer, 3,000-word vocabularies, 3 epochs on {pairs:,} pairs, scored on "
              "1,000 random test pairs with beams up to 4 wide (the full run adds 8). ")

WIDTHS = (1, 2, 4, 8)
QUICK_WIDTHS = (1, 2, 4)  # width 8 costs as much as the three others together; the full run has it
ALPHAS = (0.0, 0.75)
LENGTH_BUCKETS = ((1, 4), (5, 5), (6, 6), (7, 7), (8, 8), (9, 10), (11, 99))  # source tokens, inclusive


def length_bucket(n: int) -> str:
    lo, hi = next(b for b in LENGTH_BUCKETS if b[0] <= n <= b[1])
    return f"{lo}" if lo == hi else (f"{lo}+" if hi == 99 else f"{lo}-{hi}")


def decoding_table(translator: Translator, pairs: list,
                   widths: tuple[int, ...] = WIDTHS) -> tuple[list[list], dict[tuple[int, float], list[str]]]:
    """BLEU, hypothesis/reference length ratio and seconds for every (width, alpha); and the outputs."""
    rows, outputs = [], {}
    for k in widths:
        for alpha in ALPHAS if k > 1 else (0.0,):
            start = time.perf_counter()
            score, hyps = translator.bleu(pairs, beam_size=k, alpha=alpha)
            seconds = time.perf_counter() - start
            outputs[(k, alpha)] = hyps
            method = "greedy" if k == 1 else f"beam {k}, alpha {alpha:g}"
            rows.append([method, k, alpha, score.score, score.ratio, seconds])
    return rows, outputs


def bleu_by_length(pairs: list, outputs: dict[str, list[str]]) -> tuple[list[str], dict[str, list[float]], list]:
    """Corpus BLEU of each source-length bucket, for each named set of outputs."""
    buckets = [length_bucket(n) for n in range(1, 100)]
    names = list(dict.fromkeys(buckets))
    index = {name: [i for i, (src, _) in enumerate(pairs) if length_bucket(len(src)) == name] for name in names}
    names = [n for n in names if index[n]]
    refs = [" ".join(t) for _, t in pairs]
    series = {label: [corpus_bleu([hyps[i] for i in index[n]], [refs[i] for i in index[n]]).score for n in names]
              for label, hyps in outputs.items()}
    rows = [[n, len(index[n]), *[series[label][j] for label in outputs]] for j, n in enumerate(names)]
    return names, series, rows


def shown(text: str) -> str:
    """A translation as scored (unknown words as ``UNK``) with unknown words shown as ``<unk>``."""
    return " ".join("<unk>" if w == BLEU_UNK else w for w in text.split())


def rows_at(rows: list[list], width: int, alpha: float) -> list:
    return next(row for row in rows if row[1] == width and (width == 1 or row[2] == alpha))


def sample(pairs: list, n: int, seed: int) -> list:
    """``n`` pairs drawn at random, kept in their order."""
    rng = random.Random(seeding.stream_seed(seed, "eval"))
    return [pairs[i] for i in sorted(rng.sample(range(len(pairs)), min(n, len(pairs))))]


def quick_train_pairs(ctx: ExperimentContext, default: int) -> int:
    """The ``-o train_pairs=N`` of a quick run, checked; ``default`` without one."""
    return ctx.whole_option("train_pairs", default, minimum=100)


def _train(name: str, config, train_config: TrainConfig, splits: tuple, limit: int | None,
           ctx: ExperimentContext) -> tuple[list[dict], float]:
    """The Trainer on the fra-eng task with the given splits; ``best.pt`` lands in ``ctx.path("model")``."""
    seeding.seed_global(train_config.seed, "init")
    model = get_model(name).build(config)
    task = Translation(src_vocab_size=config.src_vocab_size, tgt_vocab_size=config.tgt_vocab_size,
                       num_steps=config.num_steps, batch_size=train_config.batch_size, seed=train_config.seed,
                       limit=limit, label_smoothing=train_config.label_smoothing, splits=splits)
    trainer = Trainer(model, task, train_config, model_name=name, model_config=config_to_dict(config),
                      run_dir=ctx.path("model"), progress=ctx.progress, log=lambda *_: None)
    result = trainer.fit()
    return result.history, sum(e["train_seconds"] for e in result.history)


@register_experiment(
    "translation",
    chapter="mt",
    title="English to French: seq2seq, greedy and beam search, BLEU",
    description="GRU encoder-decoder on 157k Tatoeba pairs; BLEU by decoding method, beam width and sentence length",
    options={"train_pairs": "training pairs in quick mode (default 25,000; fewer run faster and score lower)"},
    modes=("Quick: a one-layer GRU seq2seq trained three epochs on 25,000 pairs and scored on 1,000 random "
           "test pairs; full: the registered recipe on all 157,130 pairs, scored on all 5,000."),
)
def run(ctx: ExperimentContext) -> dict:
    spec = get_model("seq2seq")
    config = spec.make_config(ctx.pick(QUICK_OPTIONS, {}))
    train_config = TrainConfig(**{**spec.recipe, **ctx.pick(QUICK_TRAIN, {}), "seed": ctx.seed,
                                  "device": ctx.device})
    train, val, test = real_splits()
    if ctx.quick:
        val, test = sample(val, QUICK_PAIRS["val"], ctx.seed), sample(test, QUICK_PAIRS["test"], ctx.seed)
    limit = ctx.pick(quick_train_pairs(ctx, QUICK_PAIRS["train"]), None)
    h, seconds = _train(spec.name, config, train_config, (train, val, test), limit, ctx)
    translator, _ = load_translator(ctx.path("model") / "best.pt")
    widths = ctx.pick(QUICK_WIDTHS, WIDTHS)
    rows, outputs = decoding_table(translator, test, widths)
    best = max(rows[1:], key=lambda row: row[3])
    best_key = (best[1], best[2])
    names, series, length_rows = bleu_by_length(test, {"greedy": outputs[(1, 0.0)], best[0]: outputs[best_key]})
    line_plot(ctx.path("val_bleu.png"), {"validation BLEU": ([e["epoch"] for e in h], [e["val_bleu"] for e in h])},
              xlabel="epoch", ylabel="BLEU", title="Validation BLEU (greedy) per epoch")
    beams = {f"alpha {a:g}": (list(widths), [rows_at(rows, k, a)[3] for k in widths]) for a in ALPHAS}
    line_plot(ctx.path("bleu_by_beam.png"), beams, xlabel="beam width (1 = greedy)", ylabel="test BLEU",
              title="Test BLEU by beam width and length normalisation")
    bars_plot(ctx.path("bleu_by_length.png"), names, series, xlabel="source length (tokens, with punctuation)",
              ylabel="test BLEU", title="Test BLEU by source length")
    picks = sorted(random.Random(seeding.stream_seed(ctx.seed, "eval")).sample(range(len(test)), min(20, len(test))))
    examples = [[" ".join(test[i][0]), " ".join(test[i][1]), shown(outputs[(1, 0.0)][i]), shown(outputs[best_key][i])]
                for i in picks]
    greedy = rows[0][3]
    selected = max(h, key=lambda e: e["val_bleu"])["epoch"]
    parameters = sum(p.numel() for p in translator.model.parameters())
    return {
        "summary": (
            f"{QUICK_NOTE.format(pairs=limit) if ctx.quick else ''}"
            f"The seq2seq ({parameters:,} parameters) trained {len(h)} epochs in {seconds:.0f} s on "
            f"{limit or len(train):,} pairs; the epoch with the best validation BLEU ({selected}) is scored on "
            f"{len(test):,} test pairs. Greedy search: {greedy:.2f} BLEU; the best beam setting, {best[0]}: "
            f"{best[3]:.2f}. Without length normalisation (alpha 0) wider beams favour shorter outputs: the "
            f"hypothesis/reference length ratio goes from {rows[0][4]:.3f} (greedy) to "
            f"{rows_at(rows, widths[-1], 0.0)[4]:.3f} (beam {widths[-1]}). By source length, greedy scores "
            f"{series['greedy'][0]:.1f} on sentences of {names[0]} tokens and {series['greedy'][-1]:.1f} on "
            f"{names[-1]}: one fixed-size vector carries the whole source."
        ),
        "metrics": {"test_bleu_greedy": greedy, "test_bleu_best_beam": best[3], "best_beam_width": best[1],
                    "train_seconds": seconds, "training_pairs": limit or len(train)},
        "tables": [
            {"title": "Test BLEU by decoding method",
             "columns": ["method", "width", "alpha", "BLEU", "hyp/ref length", "seconds"], "rows": rows},
            *scores_tables(test, {"greedy": outputs[(1, 0.0)], best[0]: outputs[best_key]}),
            {"title": "Test BLEU by source length",
             "columns": ["source tokens", "pairs", "greedy BLEU", f"{best[0]} BLEU"], "rows": length_rows},
            {"title": "20 test translations",
             "columns": ["English", "reference", "greedy", best[0]], "rows": examples},
        ],
        "figures": [
            {"file": "val_bleu.png", "caption": "Validation BLEU of greedy translations after each epoch."},
            {"file": "bleu_by_beam.png", "caption": "Test BLEU against beam width, with (alpha 0.75) and without "
                                                     "(alpha 0) length normalisation."},
            {"file": "bleu_by_length.png", "caption": "Test BLEU by source length, greedy and the best beam."},
        ],
    }
