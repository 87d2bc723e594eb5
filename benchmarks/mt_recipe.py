"""English-French seq2seq: the book's recipe as written, and what each cost lever buys on this CPU.

Two measurements, both on the fixed source-grouped split (157,130 / 5,000 / 5,000 pairs):

1. ``book_recipe``: the book's recipe (its first 512 pairs, i.e. the shortest, ``num_steps`` 9,
   vocabularies from those pairs, 2 x 256 GRUs, embedding 256, dropout 0.2, Adam lr 0.005, gradient
   clipping at 1, batch 128, 30 epochs), scored by corpus BLEU on the 5,000 test pairs.
2. ``levers``: training throughput of the book's architecture (2 x 256 GRU, embedding 256) on the
   full training split, in real target tokens per second of forward + backward + Adam step, as
   the levers are switched on one after another:

   * ``book``: uniformly shuffled batches of 128 padded to ``num_steps`` 25, logits and softmax at
     every position (pads included), float32, all 17,349 French words;
   * ``+bucketing``: length-bucketed batches trimmed to their longest sentence;
   * ``+real-token softmax``: the output layer runs on the real target positions only;
   * ``+bf16``: bfloat16 autocast (the output layer and the other linear maps; the GRUs stay float32);
   * ``+vocab 8k``: the 8,000 most frequent French words (the rest become ``<unk>``);
   * ``+batch 256``: half as many optimizer steps (Adam updates every embedding row each step).

   The CPU is shared, so the variants run on one thread and are timed in CPU seconds of this
   process (which other jobs do not inflate), in interleaved rounds; the best round counts and the
   median is reported too. ``epoch_minutes`` converts the best rate into one pass over the 1.35
   million target tokens of the training split.

    python benchmarks/mt_recipe.py                 # both parts, JSON on stdout (about 6 minutes)
    python benchmarks/mt_recipe.py --skip-book     # throughput only
    python benchmarks/mt_recipe.py --quick         # one batch per lever, no book recipe: shows that it runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from divekit.data.fra_eng import RESERVED
from divekit.data.vocab import Vocab
from divekit.models.seq2seq import Seq2SeqConfig, build_seq2seq
from divekit.tasks.translation import Translation, real_splits
from divekit.train.config import TrainConfig
from divekit.train.distributed import DistInfo
from divekit.train.trainer import Trainer

from _machine import stamp

LEVERS: list[tuple[str, dict[str, Any]]] = [
    ("book", {"bucket": False, "real_only_softmax": False, "bf16": False, "tgt_vocab": 17349, "batch": 128}),
    ("+bucketing", {"bucket": True}),
    ("+real-token softmax", {"real_only_softmax": True}),
    ("+bf16", {"bf16": True}),
    ("+vocab 8k", {"tgt_vocab": 8000}),
    ("+batch 256", {"batch": 256}),
]
NUM_STEPS = 25
QUICK_PAIRS = 1024  # quick mode's training slice: a few batches' worth


def book_recipe(epochs: int = 30) -> dict[str, Any]:
    """Train the book's recipe on the first 512 training pairs and score it on the test split."""
    train, val, test = real_splits()
    first = train[:512]
    sizes = [len(Vocab([p[i] for p in first], min_freq=2, reserved=RESERVED)) for i in (0, 1)]
    task = Translation(src_vocab_size=sizes[0], tgt_vocab_size=sizes[1], num_steps=9, batch_size=128,
                       splits=(first, val[:128], test), bucket=False, real_only_softmax=False)
    config = Seq2SeqConfig(src_vocab_size=sizes[0], tgt_vocab_size=sizes[1], num_steps=9)
    torch.manual_seed(0)
    model = build_seq2seq(config)
    trainer = Trainer(model, task, TrainConfig(epochs=epochs, batch_size=128, lr=0.005, optimizer="adam",
                                               grad_clip=1.0), model_name="seq2seq", model_config={}, progress=False,
                      log=lambda *_: None)
    result = trainer.fit()
    score, _ = task.bleu(model, "test")
    return {"train_pairs": len(first), "vocab_sizes": sizes, "epochs": epochs, "train_seconds": result.seconds,
            "test_bleu": score.score, "test_bleu_detail": str(score)}


def _variant(settings: dict[str, Any], steps: int, limit: int | None = None) -> dict[str, Any]:
    """A task (on ``limit`` training pairs, None: all), a model, an optimizer and ``steps`` real
    training batches for one lever setting."""
    task = Translation(src_vocab_size=9779, tgt_vocab_size=settings["tgt_vocab"], num_steps=NUM_STEPS,
                       batch_size=settings["batch"], bucket=settings["bucket"], limit=limit,
                       real_only_softmax=settings["real_only_softmax"])
    torch.manual_seed(0)
    model = build_seq2seq(Seq2SeqConfig(tgt_vocab_size=settings["tgt_vocab"], num_steps=NUM_STEPS)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
    loader = task.train_loader(DistInfo())
    batches = [b for _, b in zip(range(steps), loader)]
    return {"task": task, "model": model, "optimizer": optimizer, "batches": batches, "bf16": settings["bf16"]}


def _clock() -> float:
    """CPU seconds of this process with one thread (other users of a shared CPU do not inflate them),
    wall seconds with several (threads waiting at a barrier would count as busy)."""
    return time.process_time() if torch.get_num_threads() == 1 else time.perf_counter()


def _timed_round(v: dict[str, Any]) -> tuple[float, int]:
    """Seconds and real target tokens for one pass over the variant's batches."""
    tokens, start = 0, _clock()
    for batch in v["batches"]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=v["bf16"]):
            out = v["task"].step(v["model"], batch)
        v["optimizer"].zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(v["model"].parameters(), 1.0)
        v["optimizer"].step()
        tokens += out.count
    return _clock() - start, tokens


def levers(rounds: int = 5, steps: int = 6, limit: int | None = None) -> dict[str, Any]:
    """Tokens per second of each cumulative lever setting, best and median of ``rounds``.

    ``limit`` draws the batches from that many training pairs (None: the whole split, as measured);
    ``train_target_tokens`` and ``epoch_minutes`` then refer to that slice.
    """
    settings, variants = dict(LEVERS[0][1]), {}
    for name, change in LEVERS:
        settings.update(change)
        variants[name] = _variant(dict(settings), steps, limit)
    train_tokens = int(variants["book"]["task"].arrays["train"][3].sum())
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for name, v in variants.items():  # warm-up: first calls allocate and pick kernels
        _timed_round({**v, "batches": v["batches"][:1]})
    for _ in range(rounds):
        for name, v in variants.items():
            seconds, tokens = _timed_round(v)
            rates[name].append(tokens / seconds)
    out = {}
    for name, r in rates.items():
        best = max(r)
        out[name] = {"tokens_per_s_best": round(best), "tokens_per_s_median": round(statistics.median(r)),
                     "epoch_minutes": round(train_tokens / best / 60, 1),
                     "speedup_vs_book": round(best / max(rates["book"]), 2)}
    return {"threads": torch.get_num_threads(), "clock": "process CPU time" if torch.get_num_threads() == 1 else "wall",
            "rounds": rounds, "steps_per_round": steps, "train_pairs": limit or "all",
            "train_target_tokens": train_tokens, "variants": out}


def run(quick: bool = False, *, skip_book: bool = False, rounds: int = 5, steps: int = 6,
        threads: int | None = 1) -> dict[str, Any]:
    """Both parts; ``threads=1`` (the default) times the levers in CPU seconds, robust on a shared CPU.

    Quick: no book recipe (its BLEU needs the 5,000 test pairs decoded) and one round of one batch
    per lever, drawn from ``QUICK_PAIRS`` training pairs (encoding the whole split takes seconds per lever).
    """
    limit = None
    if quick:
        skip_book, rounds, steps, limit = True, 1, 1, QUICK_PAIRS
    if threads:
        torch.set_num_threads(threads)
    result: dict[str, Any] = {"torch": torch.__version__}
    if not skip_book:
        result["book_recipe"] = book_recipe()
    result["levers"] = levers(rounds, steps, limit)
    return stamp(result, quick=quick)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-book", action="store_true", help="only the throughput of the levers")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=6, help="training batches per timed round")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: timed in CPU seconds)")
    parser.add_argument("--quick", action="store_true", help="no book recipe, one batch per lever")
    args = parser.parse_args()
    print(json.dumps(run(args.quick, skip_book=args.skip_book, rounds=args.rounds, steps=args.steps,
                         threads=args.threads), indent=2))
