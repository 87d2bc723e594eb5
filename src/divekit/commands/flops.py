"""``divekit flops MODEL [-o KEY=VALUE ...]``: forward FLOPs per image, layer by layer.

The count runs one forward pass on a zero image of the model's resolution (see :mod:`divekit.flops`
for what each layer type counts), so ``-o resolution=96`` shows the cost of a book-sized variant.
"""

from __future__ import annotations

import argparse

import torch


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("flops", help="forward FLOPs per image, layer by layer")
    p.add_argument("model")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE", help="model config value")
    p.add_argument("--totals", action="store_true", help="print only the totals")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from divekit.flops import count_flops, format_flops
    from divekit.registry import get_model, parse_options

    spec = get_model(args.model)
    config = spec.make_config(parse_options(spec, args.option))
    resolution = getattr(config, "resolution", 28)
    report = count_flops(spec.build(config), torch.zeros(1, 1, resolution, resolution))
    print(f"{spec.name} at {resolution}x{resolution}: {spec.description}")
    text = format_flops(report)
    print(text.splitlines()[-1] if args.totals else text)
    return 0
