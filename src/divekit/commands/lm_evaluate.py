"""``divekit lm-evaluate``: held-out perplexity of a ``timemachine`` checkpoint, static and dynamic.

    divekit lm-evaluate --checkpoint runs/deep-lstm-lm/best.pt                          # test block
    divekit lm-evaluate --checkpoint best.pt --split val --dynamic-lr 1e-4 3e-4 1e-3     # tune on val
    divekit lm-evaluate --checkpoint a/best.pt b/best.pt                                 # and their ensemble

Prints the perplexity and bits per character of the block three ways: static, as training reports it
(16 parallel streams, state carried across windows); static over one stream (a single cold start);
and with dynamic evaluation (:mod:`divekit.train.dynamic_eval`) for each ``--dynamic-lr``: the model
keeps learning from each segment after scoring it. Choose the step size on ``--split val``, then
score the test block once with it. Given several checkpoints, it scores each and then their
ensemble (the mean of their predicted probabilities, :func:`divekit.train.dynamic_eval.ensemble`)
over one stream, static and dynamic.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from divekit.errors import DivekitError


def register(subparsers) -> None:
    p = subparsers.add_parser("lm-evaluate", help="held-out perplexity of a language model, static and dynamic")
    p.add_argument("model", nargs="?", help="expected model name (a checkpoint of another model is refused)")
    p.add_argument("--checkpoint", type=Path, nargs="+", required=True,
                   help="timemachine checkpoints (best.pt); two or more are also scored as an ensemble")
    p.add_argument("--split", choices=["val", "test"], default="test")
    p.add_argument("--dynamic-lr", type=float, nargs="*", default=[3e-4], metavar="LR",
                   help="step sizes of dynamic evaluation (default: 3e-4; none: static only)")
    p.add_argument("--segment", type=int, default=32, help="characters scored before each dynamic update")
    p.add_argument("--decay", type=float, default=0.0, help="pull toward the trained weights per update")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from divekit.train.dynamic_eval import ensemble

    if any(lr <= 0 for lr in args.dynamic_lr):
        raise DivekitError(f"--dynamic-lr values must be positive, got {args.dynamic_lr}")
    if args.segment < 1:
        raise DivekitError(f"--segment must be at least 1, got {args.segment}")
    if not 0 <= args.decay < 1:
        raise DivekitError(f"--decay must lie in [0, 1), got {args.decay}")
    if args.threads is not None:
        if args.threads < 1:
            raise DivekitError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    per_method: dict[str, list] = {}
    for path in args.checkpoint:
        for method, result in _score(path, args, per_token=len(args.checkpoint) > 1).items():
            per_method.setdefault(method, []).append(result)
    if len(args.checkpoint) > 1:
        print(f"ensemble of the {len(args.checkpoint)} models (mean of their probabilities):")
        for method, results in per_method.items():
            _line(method, ensemble(results).metrics())
    return 0


def _score(path: Path, args: argparse.Namespace, *, per_token: bool) -> dict:
    """Print one checkpoint's perplexities; return its one-stream results by method."""
    from divekit.data.timemachine import load_lm_data
    from divekit.tasks.language_model import LanguageModelTask, load_language_model
    from divekit.train.dynamic_eval import DynamicEvalConfig, dynamic_evaluate

    model, vocab, ckpt = load_language_model(path, expect_model=args.model)
    data = load_lm_data(ckpt["task_state"].get("token", "char"))
    if data.vocab.idx_to_token != vocab.idx_to_token:
        raise DivekitError(f"'{path}' was trained with another vocabulary than this copy of "
                           f"The Time Machine builds; its perplexities would not be comparable")
    block = data.val if args.split == "val" else data.test
    task = LanguageModelTask(batch_size=1, num_steps=ckpt["task_state"]["num_steps"], data=data)
    print(f"{ckpt['model']} ({path}, epoch {ckpt['epoch']}) on the {args.split} block, "
          f"{block.numel() - 1:,} predicted characters:")
    _line("static, 16 streams", task.evaluate(model, args.split))
    configs = {"static, one stream": DynamicEvalConfig(lr=0.0)}
    configs.update({f"dynamic, lr {lr:g}": DynamicEvalConfig(lr=lr, segment=args.segment, decay=args.decay)
                    for lr in args.dynamic_lr})
    results = {}
    for method, config in configs.items():
        results[method] = dynamic_evaluate(model, block, config, per_token=per_token)
        _line(method, results[method].metrics())
    return results


def _line(method: str, metrics: dict[str, float]) -> None:
    print(f"  {method:<22} perplexity {metrics['perplexity']:.4f}  bits/char {metrics['bits_per_char']:.4f}  "
          f"({metrics['tokens_per_s']:,.0f} characters/s)")
