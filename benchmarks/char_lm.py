"""Character language models on The Time Machine: the book's recipe beside divekit's, in one run.

Both are scored the same way: test-block perplexity over the whole 17,343-character test block of
the contiguous 80/10/10 split, with the hidden state carried across windows
(:class:`divekit.tasks.language_model.LanguageModelTask`), beside the add-one n-gram baselines.

- ``book``: the book's (1.0 edition) recipe as written: one-hot inputs, a GRU of 32 hidden units,
  its first 10,000 stride-1 windows of 32 characters (here: of the training block), shuffled
  batches of 1,024 from a fresh state, SGD with learning rate 4, gradient clipping at norm 1,
  50 epochs. It sees 10,032 characters of text and memorises them.
- ``book_whole_block``: the same recipe, but every epoch draws its 10,000 windows at random
  positions of the whole training block, which separates the cost of the tiny training slice from
  the cost of the tiny model.
- ``divekit``: ``divekit train deep-lstm-lm`` with the model's registered recipe (see
  :mod:`divekit.models.char_lm`), trained on the whole training block with truncated
  backpropagation through time; its wall time is training time only, evaluation excluded. Its
  trained model is then also scored with dynamic evaluation (:mod:`divekit.train.dynamic_eval`):
  the step size is chosen on the validation block from ``DYNAMIC_LRS`` and the test block is
  scored once with it. Both the static and the dynamic test perplexity are reported.

    python benchmarks/char_lm.py                   # all three (about 12 minutes on 2 cores)
    python benchmarks/char_lm.py --skip-divekit    # the book's two variants only (about a minute)
    python benchmarks/char_lm.py --quick           # one two-batch epoch of each book variant (seconds)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from divekit.data.timemachine import load_lm_data
from divekit.metrics.perplexity import baselines, bits_per_char
from divekit.models.char_lm import CharLM, CharLMConfig
from divekit.pipeline import train_model
from divekit.tasks.language_model import LanguageModelTask, load_language_model
from divekit.train.dynamic_eval import DynamicEvalConfig, dynamic_evaluate

from _machine import stamp

BOOK = {"hidden": 32, "num_steps": 32, "num_windows": 10_000, "batch_size": 1024, "lr": 4.0, "clip": 1.0,
        "epochs": 50}
QUICK_BOOK = {**BOOK, "num_windows": 2048, "epochs": 1}  # two batches: shows the recipe runs
DYNAMIC_LRS = (1e-4, 3e-4, 1e-3)  # dynamic evaluation step sizes tried on the validation block


def _window_starts(n_text: int, num_steps: int, num_windows: int, whole_block: bool,
                   g: torch.Generator) -> torch.Tensor:
    """Start positions of one epoch's windows: the first ``num_windows`` (shuffled) or random ones."""
    if whole_block:
        return torch.randint(n_text - num_steps - 1, (num_windows,), generator=g)
    return torch.randperm(num_windows, generator=g)


def book_recipe(whole_block: bool = False, seed: int = 0, recipe: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the book's GRU-32 recipe (or ``recipe``, a variant of it) and score it on the validation and test blocks."""
    recipe = recipe or BOOK
    torch.manual_seed(seed)
    task = LanguageModelTask(batch_size=recipe["batch_size"], num_steps=recipe["num_steps"], sequential=False)
    text = task.blocks["train"]
    model = CharLM(CharLMConfig(kind="gru", impl="torch", vocab_size=len(task.vocab), hidden=recipe["hidden"],
                                embedding=0, num_steps=recipe["num_steps"]))
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe["lr"])
    g = torch.Generator().manual_seed(seed)
    offsets = torch.arange(recipe["num_steps"])
    history, seconds = [], 0.0
    for epoch in range(recipe["epochs"]):
        model.train()
        start = time.perf_counter()
        starts = _window_starts(text.numel(), recipe["num_steps"], recipe["num_windows"], whole_block, g)
        total, count = 0.0, 0
        for batch in starts.split(recipe["batch_size"]):
            idx = batch[:, None] + offsets  # (B, T) positions
            x, y = text[idx], text[idx + 1]
            logits, _ = model(x)  # a fresh zero state for every batch, as the book does
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe["clip"])
            optimizer.step()
            total, count = total + loss.item() * y.numel(), count + y.numel()
        seconds += time.perf_counter() - start
        history.append({"epoch": epoch + 1, "train_perplexity": float(torch.tensor(total / count).exp())})
    val, test = task.evaluate(model, "val"), task.evaluate(model, "test")
    return {"recipe": dict(recipe, windows="random over the whole training block" if whole_block
                           else f"the first {recipe['num_windows']:,} of the training block"),
            "train_seconds": seconds, "final_train_perplexity": history[-1]["train_perplexity"],
            "val_perplexity": val["perplexity"], "test_perplexity": test["perplexity"],
            "test_bits_per_char": test["bits_per_char"],
            "text_characters_seen": recipe["num_windows"] + recipe["num_steps"] if not whole_block else text.numel(),
            "history": history}


def divekit_recipe(threads: int, model: str = "deep-lstm-lm") -> dict[str, Any]:
    """``divekit train MODEL`` with its registered recipe; training seconds exclude evaluation."""
    with tempfile.TemporaryDirectory() as tmp:
        r = train_model(model, train_overrides={"threads": threads}, out=Path(tmp) / "run",
                        progress=False, log=lambda *a, **k: None)
        trained, _, _ = load_language_model(Path(tmp) / "run" / "best.pt", expect_model=model)
    hist = r["history"]
    return {"model": model, "model_config": r["model_config"], "train_config": r["train_config"],
            "parameters": r["parameters"], "train_seconds": r["train_seconds"], "epochs": len(hist),
            "selected_epoch": r["selected_epoch"],
            "val_perplexity": min(h["val_perplexity"] for h in hist),
            "test_perplexity": r["test"]["test_perplexity"], "test_bits_per_char": r["test"]["test_bits_per_char"],
            "train_tokens_per_s": sum(h["train_items_per_s"] for h in hist) / len(hist),
            "history": [{"epoch": h["epoch"], "val_perplexity": h["val_perplexity"]} for h in hist],
            "dynamic_evaluation": dynamic_scores(trained)}


def dynamic_scores(model: torch.nn.Module) -> dict[str, Any]:
    """Dynamic evaluation: the step size with the lowest validation perplexity, then the test block once."""
    data = load_lm_data("char")
    val = {lr: dynamic_evaluate(model, data.val, DynamicEvalConfig(lr=lr)).metrics()["perplexity"]
           for lr in DYNAMIC_LRS}
    best = min(val, key=val.get)
    result = dynamic_evaluate(model, data.test, DynamicEvalConfig(lr=best))
    test = result.metrics()
    static = dynamic_evaluate(model, data.test, DynamicEvalConfig(lr=0.0)).metrics()
    return {"val_perplexity_by_lr": val, "chosen_lr": best, "segment": DynamicEvalConfig().segment,
            "test_perplexity": test["perplexity"], "test_bits_per_char": test["bits_per_char"],
            "test_seconds": result.seconds,
            "static_one_stream_test_perplexity": static["perplexity"]}


def run(quick: bool = False, *, skip_divekit: bool = False, threads: int = 2) -> dict[str, Any]:
    """Baselines, the book's two variants and divekit's recipe; quick: one short epoch of the book's, no divekit."""
    book = QUICK_BOOK if quick else BOOK
    skip_divekit = skip_divekit or quick
    data = load_lm_data("char")
    base = baselines(data.train, data.test, len(data.vocab))
    out: dict[str, Any] = {"baselines_test_perplexity": base,
                           "baselines_test_bits_per_char": {k: bits_per_char(v) for k, v in base.items()}}
    with torch.inference_mode(False):
        previous = torch.get_num_threads()
        torch.set_num_threads(1)  # a 32-unit GRU loses to thread synchronisation on 2 threads
        try:
            out["book"] = book_recipe(whole_block=False, recipe=book)
            out["book_whole_block"] = book_recipe(whole_block=True, recipe=book)
        finally:
            torch.set_num_threads(previous)
    if not skip_divekit:
        out["divekit"] = divekit_recipe(threads)
        out["test_perplexity_ratio_book_over_divekit"] = (
            out["book"]["test_perplexity"] / out["divekit"]["test_perplexity"])
        out["test_perplexity_ratio_book_over_divekit_dynamic"] = (
            out["book"]["test_perplexity"] / out["divekit"]["dynamic_evaluation"]["test_perplexity"])
    return stamp(out, quick=quick)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-divekit", action="store_true", help="run only the book's two variants")
    parser.add_argument("--threads", type=int, default=2, help="threads for divekit's recipe (default 2)")
    parser.add_argument("--quick", action="store_true", help="one short epoch of the book's recipe, no divekit")
    args = parser.parse_args()
    print(json.dumps(run(args.quick, skip_divekit=args.skip_divekit, threads=args.threads), indent=2))
