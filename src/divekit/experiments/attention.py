"""Attention on English to French: plain seq2seq, Bahdanau attention and the Transformer compared.

Each model is trained by the one Trainer on fra-eng pairs (selected on validation BLEU) and
scored on test pairs with greedy search and beam search (width 4). The comparison table reports,
per model: parameters, training seconds, target tokens per second, achieved GFLOP/s against this
machine's matrix-product ceiling, test BLEU, and decoding speed in sentences per second (for the
Transformer also without its key/value cache). Figures: attention heatmaps of both attention
models on a real test sentence, and the sinusoidal positional encoding.

FLOPs per training step are counted by ``torch.utils.flop_counter`` (matrix products, forward and
backward) on one real batch and scaled to tokens; achieved GFLOP/s = FLOPs per token x tokens/s.

Quick mode trains small models (64 units, 3,000/4,000-word vocabularies) on 2,000 pairs for one
epoch and scores 200 test pairs; full mode trains each registered recipe on all 157,130 pairs and
scores all 5,000 (hours on the 2-core CPU: see docs/results/attention.md). A full run can instead
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
from divekit.data.fra_eng import EOS, shift_right
from divekit.decode.beam import decode_batch
from divekit.errors import CheckpointError, DivekitError
from divekit.experiments.base import ExperimentContext
from divekit.experiments.heatmap_plot import heatmap_plot
from divekit.flops import matmul_gflops
from divekit.models.transformer import RecomputingDecoder
from divekit.nn.positional import sinusoidal_table
from divekit.pipeline import config_to_dict, load_trained
from divekit.plots import line_plot
from divekit.registry import get_model, register_experiment
from divekit.tasks.translation import BucketLoader, Translation, real_splits
from divekit.train.config import TrainConfig
from divekit.train.trainer import Trainer

MODELS = ("seq2seq", "seq2seq-attention", "transformer")
QUICK_VOCAB = {"src_vocab_size": 3000, "tgt_vocab_size": 4000, "num_steps": 16}
QUICK_OPTIONS = {
    "seq2seq": {**QUICK_VOCAB, "embed_size": 64, "hidden_size": 64, "num_layers": 1},
    "seq2seq-attention": {**QUICK_VOCAB, "embed_size": 64, "hidden_size": 64, "num_layers": 1},
    "transformer": {**QUICK_VOCAB, "d_model": 64, "num_heads": 4, "ffn_hidden": 128, "num_encoder_layers": 2,
                    "num_decoder_layers": 2, "dropout": 0.1},
}
QUICK_TRAIN = {"epochs": 1, "batch_size": 64, "lr": 0.003, "optimizer": "adam", "grad_clip": 1.0}
# Full mode: the registered recipes, with the vocabulary cut that the MT chapter's timed recipe uses.
FULL_OPTIONS = {name: {"tgt_vocab_size": 8000} for name in MODELS}
FULL_TRAIN = {"precision": "bf16"}


def train(ctx: ExperimentContext, name: str, splits: tuple, limit: int | None) -> dict[str, Any]:
    """Train ``name`` on the fra-eng task; return the model, the task and its training costs."""
    spec = get_model(name)
    config = spec.make_config(ctx.pick(QUICK_OPTIONS[name], FULL_OPTIONS[name]))
    overrides = ctx.pick(QUICK_TRAIN, {**spec.recipe, **FULL_TRAIN})
    train_config = TrainConfig(**{**spec.recipe, **overrides, "seed": ctx.seed, "device": ctx.device})
    seeding.seed_global(ctx.seed, "init")
    model = spec.build(config)
    task = Translation(src_vocab_size=config.src_vocab_size, tgt_vocab_size=config.tgt_vocab_size,
                       num_steps=config.num_steps, batch_size=train_config.batch_size, seed=ctx.seed, limit=limit,
                       splits=splits, label_smoothing=train_config.label_smoothing)
    trainer = Trainer(model, task, train_config, model_name=name, model_config=config_to_dict(config),
                      run_dir=ctx.path(name),
                      progress=ctx.progress, log=lambda *_: None)
    result = trainer.fit()
    if result.best_checkpoint is not None:  # the epoch with the best validation BLEU
        state = torch.load(result.best_checkpoint, weights_only=True)["model_state"]
        model.load_state_dict(state)
    seconds = sum(h["train_seconds"] for h in result.history)
    tokens = int(task.arrays["train"][3].sum()) * len(result.history)
    return {"model": model.eval(), "task": task, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "flops_per_token": flops_per_token(model, task)}


def trained(name: str, checkpoint: Path) -> dict[str, Any]:
    """A model trained by ``divekit train NAME``: its checkpoint, and the costs its run's metrics.jsonl holds."""
    spec, model, task, _ = load_trained(checkpoint)
    if spec.name != name:
        raise CheckpointError(f"'{checkpoint}' holds a '{spec.name}' model, not '{name}'")
    metrics = checkpoint.parent / "metrics.jsonl"
    if not metrics.is_file():
        raise CheckpointError(f"no metrics.jsonl beside '{checkpoint}': training costs unknown")
    history = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    seconds = sum(h["train_seconds"] for h in history)
    tokens = sum(h["train_items_per_s"] * h["train_seconds"] for h in history)
    return {"model": model, "task": task, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "flops_per_token": flops_per_token(model, task)}


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
    options={name: f"a `divekit train {name}` checkpoint to score instead of training (--full)" for name in MODELS},
)
def run(ctx: ExperimentContext) -> dict:
    if ctx.quick and ctx.options:
        raise DivekitError("trained checkpoints are scored by the full run: add --full")
    train_pairs, val, test = real_splits()
    splits = (train_pairs, val[: ctx.pick(100, None)], test[: ctx.pick(200, None)])
    limit = ctx.pick(2_000, None)
    ceiling = matmul_gflops(size=ctx.pick(1024, 2048), repeats=3)
    rows, figures, metrics = [], positional_figures(ctx), {"matmul_ceiling_gflops": ceiling}
    speed_pairs = ctx.pick(100, 1000)
    for name in MODELS:
        checkpoint = ctx.options.get(name)
        r = trained(name, Path(checkpoint)) if checkpoint else train(ctx, name, splits, limit)
        model, task = r["model"], r["task"]
        greedy, _ = task.bleu(model, "test")
        beam, _ = task.bleu(model, "test", beam_size=4, alpha=0.75)
        with torch.no_grad():
            cached = decoding_speed(model, task, speed_pairs)
            plain = decoding_speed(RecomputingDecoder(model), task, speed_pairs) if name == "transformer" else None
        gflops = r["flops_per_token"] * r["tokens_per_s"] / 1e9
        params = sum(p.numel() for p in model.parameters())
        rows.append([name, params, r["seconds"], r["tokens_per_s"], gflops, gflops / ceiling, greedy.score,
                     beam.score, cached, plain if plain is not None else "-"])
        key = name.replace("-", "_")
        metrics.update({f"{key}_bleu_beam4": beam.score, f"{key}_bleu_greedy": greedy.score,
                        f"{key}_tokens_per_s": r["tokens_per_s"], f"{key}_decode_per_s": cached})
        if plain is not None:
            metrics["transformer_decode_per_s_no_cache"] = plain
        if name != "seq2seq":
            weights, out_words, src_words = attention_map(model, task, index=ctx.pick(7, 7))
            heatmap_plot(ctx.path(f"heatmap_{name}.png"), weights, row_labels=out_words, col_labels=src_words,
                         xlabel="source (English)", colorbar_label="attention weight",
                         title=f"{name}: where each French word looked", cmap="viridis")
            figures.append({"file": f"heatmap_{name}.png",
                            "caption": f"{name}: attention weights of each output word (rows) over the source "
                                       "words (columns) of a test sentence" +
                                       (", last decoder layer, heads averaged." if name == "transformer" else ".")})
    best = max(rows, key=lambda row: row[7])
    return {
        "summary": (
            f"{'Quick mode: small models trained one epoch on 2,000 pairs, 200 test pairs. ' if ctx.quick else ''}"
            f"Test BLEU with beam 4: " + ", ".join(f"{row[0]} {row[7]:.1f}" for row in rows)
            + (f". The best is {best[0]}. " if best[7] >= 1.0 else
               ". At this size no model translates yet: quick mode shows the pipeline and the figures. ")
            + "Attention lets each output word read the source directly (heatmaps); "
            "the Transformer's key/value cache makes each decoding step new work on one position only."
        ),
        "metrics": metrics,
        "tables": [{"title": "Seq2seq, Bahdanau attention and Transformer on fra-eng",
                    "columns": ["model", "parameters", "train s", "tokens/s", "GFLOP/s", "of matmul peak",
                                "BLEU greedy", "BLEU beam 4", "decode sent/s", "decode sent/s, no cache"],
                    "rows": rows}],
        "figures": figures,
    }
