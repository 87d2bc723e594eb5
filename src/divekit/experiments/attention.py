"""Attention on English to French: plain seq2seq, Bahdanau attention and the Transformer compared.

Each model is trained by the one Trainer on fra-eng pairs (selected on validation BLEU) and
scored on test pairs with greedy search and beam search (width 4). The comparison table reports,
per model: parameters, training seconds, target tokens per second, achieved GFLOP/s against this
machine's matrix-product ceiling, test BLEU, and decoding speed in sentences per second (for the
Transformer also without its key/value cache). Figures: attention heatmaps of both attention
models on a real test sentence, and the sinusoidal positional encoding.

FLOPs per training step are counted by ``torch.utils.flop_counter`` (matrix products, forward and
backward) on one real batch and scaled to tokens; achieved GFLOP/s = FLOPs per token x tokens/s.

Quick mode trains models that translate within about a minute each: the GRU models as the
translation experiment's quick seq2seq (its trained model is reused when the tour has one), a small
Transformer one epoch; all are scored on the 5,000 test pairs. Full mode trains each registered
recipe on all 157,130 pairs (hours on the 2-core CPU: see docs/results/attention.md). A full run can instead
score models already trained with ``divekit train``: ``-o transformer=RUN/best.pt`` (likewise
``seq2seq`` and ``seq2seq-attention``) takes that checkpoint and the training costs its run recorded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from divekit import seeding
from divekit.data.buckets import BucketLoader
from divekit.data.fra_eng import EOS, shift_right
from divekit.decode.beam import decode_batch
from divekit.errors import CheckpointError, DivekitError
from divekit.experiments import translation as mt
from divekit.experiments.base import ExperimentContext
from divekit.experiments.heatmap_plot import heatmap_plot
from divekit.flops import matmul_gflops
from divekit.metrics.mt_scores import scores_tables
from divekit.models.transformer import RecomputingDecoder
from divekit.nn.positional import sinusoidal_table
from divekit.pipeline import config_to_dict, load_trained
from divekit.plots import line_plot
from divekit.registry import get_model, register_experiment
from divekit.tasks.translation import Translation, real_splits
from divekit.train.checkpoint import load_checkpoint
from divekit.train.config import TrainConfig
from divekit.train.trainer import Trainer

MODELS = ("seq2seq", "seq2seq-attention", "transformer")
# Quick mode, sized to fit the ten-minute tour on a 2-core CPU (docs/results.md, "The tour"): both
# GRU models as the translation experiment's quick seq2seq (its trained model is reused when the
# tour has it), the Transformer small, without dropout (one epoch is far from overfitting) and on
# 100,000 pairs. Beam search, three times the cost of greedy search, is scored on 1,000 random test
# pairs (greedy on all 5,000 and on those 1,000).
QUICK_OPTIONS = {
    "seq2seq": mt.QUICK_OPTIONS,
    "seq2seq-attention": mt.QUICK_OPTIONS,
    "transformer": {"src_vocab_size": 5000, "tgt_vocab_size": 5000, "num_steps": 12, "d_model": 128,
                    "num_heads": 4, "ffn_hidden": 512, "num_encoder_layers": 2, "num_decoder_layers": 2,
                    "dropout": 0.0},
}
QUICK_TRAIN = {"seq2seq": mt.QUICK_TRAIN, "seq2seq-attention": mt.QUICK_TRAIN,
               "transformer": {"epochs": 1, "batch_size": 128, "lr": 0.002, "warmup_steps": 300}}
QUICK_LIMIT = {"seq2seq": mt.QUICK_PAIRS["train"], "seq2seq-attention": mt.QUICK_PAIRS["train"],
               "transformer": 100_000}
QUICK_BEAM_PAIRS = 1000
# Full mode: the registered recipes, with the vocabulary cut that the MT chapter's timed recipe uses.
FULL_OPTIONS = {name: {"tgt_vocab_size": 8000} for name in MODELS}
FULL_TRAIN: dict[str, Any] = {}  # the recipes as registered (precision auto)
TRAJECTORY_FREE = ("device", "threads")  # recipe fields that do not change the trained weights


def planned(ctx: ExperimentContext, name: str) -> tuple[Any, TrainConfig, int | None]:
    """The model config, training config and training-pair limit this experiment trains ``name`` with."""
    spec = get_model(name)
    config = spec.make_config(ctx.pick(QUICK_OPTIONS[name], FULL_OPTIONS[name]))
    overrides = ctx.pick(QUICK_TRAIN[name], FULL_TRAIN)
    train_config = TrainConfig(**{**spec.recipe, **overrides, "seed": ctx.seed, "device": ctx.device})
    return config, train_config, ctx.pick(mt.quick_train_pairs(ctx, QUICK_LIMIT[name]), None)


def reusable(ctx: ExperimentContext, name: str) -> Path | None:
    """The tour's translation-experiment checkpoint of ``name`` if it was trained exactly as planned here."""
    path = ctx.out_dir.parent / "translation" / "model" / "best.pt"
    if not ctx.quick or not path.is_file():
        return None
    config, train_config, limit = planned(ctx, name)
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError:
        return None  # damaged or foreign: train afresh
    stored = {k: v for k, v in ckpt.get("train_config", {}).items() if k not in TRAJECTORY_FREE}
    wanted = {k: v for k, v in train_config.to_dict().items() if k not in TRAJECTORY_FREE}
    if wanted.get("precision") == "auto":  # the stored run resolved auto for this model on this machine
        wanted["precision"] = stored.get("precision")
    same = (ckpt.get("model") == name and ckpt.get("model_config") == config_to_dict(config)
            and stored == wanted and ckpt.get("task_state", {}).get("limit") == limit)
    return path if same else None


def train(ctx: ExperimentContext, name: str, splits: tuple) -> dict[str, Any]:
    """Train ``name`` on the fra-eng task; return the model, the task and its training costs."""
    config, train_config, limit = planned(ctx, name)
    seeding.seed_global(ctx.seed, "init")
    model = get_model(name).build(config)
    task = Translation(src_vocab_size=config.src_vocab_size, tgt_vocab_size=config.tgt_vocab_size,
                       num_steps=config.num_steps, batch_size=train_config.batch_size, seed=ctx.seed, limit=limit,
                       splits=splits, label_smoothing=train_config.label_smoothing)
    trainer = Trainer(model, task, train_config, model_name=name, model_config=config_to_dict(config),
                      run_dir=ctx.path(name), progress=ctx.progress, log=lambda *_: None)
    result = trainer.fit()
    if result.best_checkpoint is not None:  # the epoch with the best validation BLEU
        state = torch.load(result.best_checkpoint, weights_only=True)["model_state"]
        model.load_state_dict(state)
    seconds = sum(h["train_seconds"] for h in result.history)
    tokens = int(task.arrays["train"][3].sum()) * len(result.history)
    return {"model": model.eval(), "task": task, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "flops_per_token": flops_per_token(model, task), "precision": train_config.precision}


def trained(name: str, checkpoint: Path) -> dict[str, Any]:
    """A model trained by ``divekit train NAME``: its checkpoint, and the costs its run's metrics.jsonl holds."""
    spec, model, task, ckpt = load_trained(checkpoint)
    if spec.name != name:
        raise CheckpointError(f"'{checkpoint}' holds a '{spec.name}' model, not '{name}'")
    metrics = checkpoint.parent / "metrics.jsonl"
    if not metrics.is_file():
        raise CheckpointError(f"no metrics.jsonl beside '{checkpoint}': training costs unknown")
    history = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    seconds = sum(h["train_seconds"] for h in history)
    tokens = sum(h["train_items_per_s"] * h["train_seconds"] for h in history)
    return {"model": model, "task": task, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "flops_per_token": flops_per_token(model, task),
            "precision": ckpt["train_config"]["precision"]}


def flops_per_token(model: nn.Module, task: Translation) -> float:
    """Matrix-product FLOPs of one training step (forward and backward) per real target token."""
    loader = BucketLoader(task.arrays["train"], batch_size=min(task.batch_size, 64), bucket=False)
    src, src_len, tgt, tgt_len = next(iter(loader))
    was_training = model.training
    model.train()
    with FlopCounterMode(display=False) as counter:
        logits = model(src, src_len, shift_right(tgt, task.bos), tgt_len)
        logits.logsumexp(-1).sum().backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return counter.get_total_flops() / int(tgt_len.sum())


def decoding_speed(decoder: Any, task: Translation, pairs: int) -> float:
    """Greedy translations per second of the first ``pairs`` test sources, in batches of 100."""
    src, src_len = task.arrays["test"][0][:pairs], task.arrays["test"][1][:pairs]
    start = time.perf_counter()
    for s, sl in zip(src.split(100), src_len.split(100)):
        decode_batch(decoder, s[:, : int(sl.max())], sl, bos=task.bos, eos=task.tgt_vocab[EOS],
                     max_len=task.num_steps)
    return src.shape[0] / (time.perf_counter() - start)


def attention_map(model: nn.Module, task: Translation, index: int) -> tuple[Tensor, list[str], list[str]]:
    """Weights ``(T, S)`` of target on source positions for test sentence ``index`` translated greedily.

    The decoder is fed its own translation (teacher forcing on it), so row t shows where the model
    looked while producing output word t. For the Transformer: its last layer, averaged over heads.
    """
    src_tokens = task.pairs["test"][index][0]
    src, src_len = task.translator(model).encode([src_tokens])
    hyp = decode_batch(model, src, src_len, bos=task.bos, eos=task.tgt_vocab[EOS], max_len=task.num_steps)[0]
    out = list(hyp.tokens) + [task.tgt_vocab[EOS]]
    dec_input = torch.tensor([[task.bos] + out[:-1]])
    src = src[:, : int(src_len[0])]
    if hasattr(model, "cross_attention_weights"):
        weights = model.cross_attention_weights(src, src_len, dec_input)[-1][0].mean(0)  # (T, S)
    else:
        weights = model.attention_weights(src, src_len, dec_input)[0]  # (T, S)
    labels = src_tokens[: task.num_steps - 1] + [EOS]
    return weights, task.tgt_vocab.to_tokens(out), labels


def positional_figures(ctx: ExperimentContext) -> list[dict[str, str]]:
    table = sinusoidal_table(60, 64)  # (positions, D)
    heatmap_plot(ctx.path("positional_table.png"), table, row_labels=[str(p) for p in range(60)],
                 col_labels=[str(d) for d in range(64)], xlabel="encoding dimension", colorbar_label="P[p, d]",
                 title="Sinusoidal positional encoding (rows: positions)", cmap="coolwarm", center=0.0)
    positions = list(range(60))
    line_plot(ctx.path("positional_columns.png"),
              {f"dimension {d}": (positions, table[:, d].tolist()) for d in (6, 7, 8, 9)},
              xlabel="position", ylabel="P[p, d]", title="Columns of the sinusoidal encoding")
    return [{"file": "positional_table.png", "caption": "The sinusoidal table P for 60 positions and D = 64: "
                                                        "frequency falls from left to right."},
            {"file": "positional_columns.png", "caption": "Four columns of P: each pair oscillates at its own "
                                                          "frequency, so offsets are linear maps."}]


@register_experiment(
    "attention",
    chapter="attention",
    title="Attention: Bahdanau seq2seq and the Transformer on English to French",
    description="plain seq2seq vs Bahdanau vs Transformer: BLEU, cost, decoding speed; heatmaps; positional encoding",
    options={**{name: f"a `divekit train {name}` checkpoint to score instead of training (--full)" for name in MODELS},
             "train_pairs": "quick mode: training pairs of every model (default 25,000 for the GRU models, 100,000 "
                            "for the Transformer; fewer run faster and score lower)"},
    modes=("Quick: the three models trained about a minute each, greedy search scored on all 5,000 test "
           "pairs and beam search on 1,000 random ones; full: each registered recipe on all 157,130 pairs "
           "(hours), every score on all 5,000."),
)
def run(ctx: ExperimentContext) -> dict:
    if ctx.quick and set(ctx.options) & set(MODELS):
        raise DivekitError("trained checkpoints are scored by the full run: add --full")
    if not ctx.quick and "train_pairs" in ctx.options:
        raise DivekitError("train_pairs sizes the quick run; the full run trains on all pairs")
    pairs = {name: planned(ctx, name)[2] for name in MODELS}  # checks train_pairs before any work
    train_pairs, val, test = real_splits()
    # Quick: validation (model selection) on 1,000 random pairs, as the translation experiment; test: all.
    splits = (train_pairs, mt.sample(val, mt.QUICK_PAIRS["val"], ctx.seed) if ctx.quick else val, test)
    # Each model's rate is compared with the ceiling of the precision it trained in.
    ceilings = {p: matmul_gflops(dtype, size=ctx.pick(1024, 2048), repeats=3)
                for p, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    rows, figures, metrics = [], [], {"matmul_ceiling_gflops": ceilings["fp32"],
                                                           "matmul_ceiling_gflops_bf16": ceilings["bf16"]}
    speed_pairs = ctx.pick(100, 1000)
    index = None  # the heatmaps' test sentence, chosen with the first attention model's vocabularies
    beam_pairs = mt.sample(test, QUICK_BEAM_PAIRS, ctx.seed) if ctx.quick else test
    reused, beam_outputs = [], {}
    for name in MODELS:
        checkpoint = ctx.options.get(name) or reusable(ctx, name)  # quick runs take no checkpoint options
        r = trained(name, Path(checkpoint)) if checkpoint else train(ctx, name, splits)
        if checkpoint and ctx.quick:
            reused.append(name)
        model, task = r["model"], r["task"]
        greedy, _ = task.bleu(model, "test")
        translator = task.translator(model)
        sampled = translator.bleu(beam_pairs)[0].score if ctx.quick else None
        beam, beam_outputs[f"{name}, beam 4"] = translator.bleu(beam_pairs, beam_size=4, alpha=0.75)
        with torch.no_grad():
            cached = decoding_speed(model, task, speed_pairs)
            plain = decoding_speed(RecomputingDecoder(model), task, speed_pairs) if name == "transformer" else None
        gflops = r["flops_per_token"] * r["tokens_per_s"] / 1e9
        params = sum(p.numel() for p in model.parameters())
        rows.append([name, params, r["seconds"], r["tokens_per_s"], gflops, gflops / ceilings[r["precision"]],
                     r["precision"], greedy.score,
                     *([sampled] if ctx.quick else []), beam.score, cached, plain if plain is not None else "-"])
        key = name.replace("-", "_")
        metrics.update({f"{key}_bleu_beam4": beam.score, f"{key}_bleu_greedy": greedy.score,
                        f"{key}_tokens_per_s": r["tokens_per_s"], f"{key}_decode_per_s": cached})
        if plain is not None:
            metrics["transformer_decode_per_s_no_cache"] = plain
        if name != "seq2seq":
            index = heatmap_sentence(task) if index is None else index
            figures.append(heatmap_figure(ctx, name, model, task, index, greedy.score, len(test)))
    beam_column = 9 if ctx.quick else 8
    figures += positional_figures(ctx)
    best = max(rows, key=lambda row: row[beam_column])
    minute = "" if "train_pairs" in ctx.options else " for about a minute each"
    note = (f"Quick mode: small models trained{minute} (the GRU models 3 epochs on "
            f"{pairs['seq2seq']:,} pairs, the Transformer one epoch on {pairs['transformer']:,}), "
            f"scored on all {len(test):,} test pairs; the full run trains each registered recipe on all "
            f"{len(train_pairs):,} pairs for hours. Beam search is scored on {len(beam_pairs):,} random test "
            f"pairs. " if ctx.quick else "")
    if reused:
        note += f"The {', '.join(reused)} model is the translation experiment's, trained once for both sections. "
    return {
        "summary": (
            note + "Test BLEU with beam 4: " + ", ".join(f"{row[0]} {row[beam_column]:.1f}" for row in rows)
            + (f". The best is {best[0]}. " if best[beam_column] >= 5.0 else
               ". On so few pairs no model translates yet; the tour's quick run trains them on more. ")
            + "Attention lets each output word read the source directly (heatmaps); "
            "the Transformer's key/value cache makes each decoding step new work on one position only."
        ),
        "metrics": metrics,
        "tables": [{"title": "Seq2seq, Bahdanau attention and Transformer on fra-eng",
                    "columns": ["model", "parameters", "train s", "tokens/s", "GFLOP/s", "of matmul peak",
                                "precision",
                                f"BLEU greedy ({len(test):,})",
                                *([f"BLEU greedy ({len(beam_pairs):,} sampled)"] if ctx.quick else []),
                                f"BLEU beam 4 ({len(beam_pairs):,}{' sampled' if ctx.quick else ''})",
                                "decode sent/s", "decode sent/s, no cache"],
                    "rows": rows},
                   *scores_tables(beam_pairs, beam_outputs)],
        "figures": figures,
    }


def heatmap_sentence(task: Translation, lengths: range = range(7, 11)) -> int:
    """The test pair the heatmaps show: the first of 7 to 10 source tokens with no word outside the
    vocabularies on either side, so that each row and column is a real word (0 if there is none)."""
    for i, (src, ref) in enumerate(task.pairs["test"]):
        if len(src) in lengths and all(w in task.src_vocab for w in src) and all(w in task.tgt_vocab for w in ref):
            return i
    return 0


def heatmap_figure(ctx: ExperimentContext, name: str, model: nn.Module, task: Translation, index: int,
                   bleu: float, pairs: int) -> dict[str, str]:
    """Write ``name``'s attention heatmap on test pair ``index``; its caption names the model's BLEU."""
    weights, out_words, src_words = attention_map(model, task, index)
    heatmap_plot(ctx.path(f"heatmap_{name}.png"), weights, row_labels=out_words, col_labels=src_words,
                 xlabel="source (English)", colorbar_label="attention weight",
                 title=f"{name}: where each French word looked", cmap="viridis")
    src, ref = task.pairs["test"][index]
    output = " ".join(w for w in out_words if w != EOS)
    layer = " (last decoder layer, heads averaged)" if name == "transformer" else ""
    return {"file": f"heatmap_{name}.png",
            "caption": f"{name}, test BLEU {bleu:.1f} (greedy, {pairs:,} pairs): attention weights{layer} of each "
                       f"output word (rows) over the source words (columns). Source: “{' '.join(src)}”; "
                       f"its translation: “{output}”; reference: “{' '.join(ref)}”."}
