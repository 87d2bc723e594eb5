"""The ``divekit`` command line.

    divekit list                          models and experiments
    divekit train MODEL [--epochs ...]    train on the model's dataset, report test figures
    divekit evaluate --checkpoint PATH    evaluate a checkpoint on a split (-o test_shift=true: more views)
    divekit summary MODEL                 layer-by-layer shapes and parameter counts
    divekit run NAME [--full]             one experiment, with its plots and results.json
    divekit tour [--full]                 every experiment, then one HTML report
    divekit report DIR                    rebuild the report from results on disk
    divekit data verify|fetch [NAME]      check or download the datasets

A user mistake (unknown name, missing data, bad value, unreadable checkpoint) prints one line on
stderr and exits non-zero; only bugs print a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from divekit import __version__
from divekit.argtypes import real, whole
from divekit.errors import DataError, DivekitError


_positive_int = whole(1)
_positive_float = real(above=0)
_seed = whole(0)  # SeedSequence entropy is non-negative


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("recipe (defaults: the model's own recipe; `divekit list MODEL` shows it)")
    g.add_argument("--epochs", type=_positive_int, help="passes over the training data")
    g.add_argument("--batch-size", type=_positive_int, help="examples per step (the global batch under torchrun)")
    g.add_argument("--lr", type=_positive_float, help="peak learning rate")
    g.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], help="sgd (with --momentum), adam or adamw")
    g.add_argument("--momentum", type=float, help="SGD momentum in [0, 1)")
    g.add_argument("--weight-decay", type=float, help="L2 penalty (decoupled for adamw)")
    g.add_argument("--schedule", choices=["constant", "cosine", "onecycle", "step"],
                   help="learning rate over the steps of the run")
    g.add_argument("--warmup-steps", type=int, help="steps of linear warm-up before the schedule")
    g.add_argument("--grad-clip", type=_positive_float, help="clip the gradient's global norm to this")
    g.add_argument("--label-smoothing", type=float, help="share of the target mass spread over all classes")
    g.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help="bf16: autocast on CPU or GPU; auto (the recipes' default): bf16 where this machine "
                        "computes it natively and a measured step of this model is faster, else fp32")
    g.add_argument("--channels-last", action="store_const", const=True, help="NHWC layout for image models")
    g.add_argument("--patience", type=_positive_int, help="stop after N epochs without a better validation metric")
    g.add_argument("--seed", type=_seed, help="the run's seed: data order, initial weights, dropout, augmentation")
    g.add_argument("--device", help="auto (CUDA if present), cpu or cuda")
    g.add_argument("--threads", type=_positive_int, help="CPU threads for torch")


TRAIN_KEYS = ("epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "schedule", "warmup_steps",
              "grad_clip", "label_smoothing", "precision", "channels_last", "patience", "seed", "device", "threads")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (and where to read more), not the whole usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="divekit", description="A deep-learning curriculum made real.")
    parser.add_argument("--version", action="version", version=f"divekit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list models and experiments, or one model's options and recipe")
    p.add_argument("model", nargs="?", help="a model name: its options, their defaults and its recipe")

    p = sub.add_parser("train", help="train a model and report its test figures")
    p.add_argument("model", help="a model name (`divekit list`; `divekit train MODEL --help` for its options)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a model option (`divekit list MODEL` shows them)")
    p.add_argument("--limit", type=_positive_int, help="use only the first N training examples")
    p.add_argument("--out", type=Path, help="run directory, absent or empty (default: runs/MODEL-TIME)")
    p.add_argument("--resume", type=Path, metavar="RUN|CHECKPOINT",
                   help="continue the run in RUN (or RUN/checkpoint.pt); with --out NEW_DIR, fork a new run "
                        "from any checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (a line per epoch only)")
    _add_train_flags(p)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint on a data split")
    p.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint, or a run directory (its best.pt)")
    p.add_argument("--split", choices=["train", "val", "test"], default="test")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="change a model config value for evaluation (e.g. test_flip, test_shift)")

    p = sub.add_parser("summary", help="layer-by-layer output shapes and parameter counts")
    p.add_argument("model")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--batch", type=_positive_int, default=1)

    p = sub.add_parser("run", help="run one experiment")
    p.add_argument("name")
    p.add_argument("--full", action="store_true", help="the full run (default: quick)")
    p.add_argument("--out", type=Path, help="directory (default: runs/NAME[-full])")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="an experiment setting (`divekit list` names those an experiment takes)")

    p = sub.add_parser("tour", help="run every experiment and write one HTML report")
    p.add_argument("--full", action="store_true", help="full runs (hours) instead of the quick tour (minutes)")
    p.add_argument("--out", type=Path, help="directory (default: runs/tour)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these experiments")

    p = sub.add_parser("report", help="build the HTML report from results on disk")
    p.add_argument("directory", type=Path)
    p.add_argument("--out", type=Path, help="HTML file (default: DIRECTORY/report.html)")

    p = sub.add_parser("data", help="check or download the datasets")
    p.add_argument("action", choices=["verify", "fetch"])
    p.add_argument("name", nargs="?", help="fashion-mnist, timemachine or fra-eng (default: all)")

    for module in _command_modules():
        module.register(sub)
    parser.commands = sub.choices  # name -> that command's parser
    return parser


def _command_modules():
    """The modules of ``divekit.commands``, each adding one subcommand."""
    import importlib
    import pkgutil

    import divekit.commands

    return [importlib.import_module(f"divekit.commands.{m.name}") for m in pkgutil.iter_modules(divekit.commands.__path__)]


# ---------------------------------------------------------------------------------------------- commands
def _row(name: str, text: str, width: int, indent: int = 24) -> str:
    """``name`` in a column of ``indent``, ``text`` wrapped to the terminal beside it."""
    import textwrap

    lines = textwrap.wrap(text, max(width - indent, 30)) or [""]
    head = f"  {name:<{indent - 3}} " if len(name) <= indent - 3 else f"  {name}\n{'':<{indent}}"
    return head + ("\n" + " " * indent).join(lines)


def model_help(name: str) -> str:
    """A model's options (type, default, meaning) and its recipe, for `divekit list MODEL`."""
    import shutil

    from divekit.registry import get_model, option_docs

    spec = get_model(name)
    width = shutil.get_terminal_size((100, 24)).columns
    lines = [f"{spec.name}: {spec.description} (task {spec.task})", "", "options (-o KEY=VALUE):"]
    for doc in option_docs(spec):
        lines.append(_row(f"{doc.name}={doc.default!r}", f"{doc.type}. {doc.help}".rstrip(". "), width, 30))
    recipe = ", ".join(f"{k}={v}" for k, v in spec.recipe.items()) or "TrainConfig's defaults"
    lines += ["", _row("recipe", recipe, width, 30)]
    return "\n".join(lines)


def cmd_list(args) -> int:
    import shutil

    from divekit.registry import CHAPTERS, EXPERIMENTS, MODELS, load_all

    if args.model:
        print(model_help(args.model))
        return 0
    load_all()
    width = shutil.get_terminal_size((100, 24)).columns
    print("models (divekit train NAME; options: divekit list NAME):")
    for chapter in CHAPTERS:
        for spec in sorted((m for m in MODELS.values() if m.chapter == chapter), key=lambda m: m.name):
            print(_row(spec.name, f"{spec.description} [{spec.task}]", width))
    for chapter, title in CHAPTERS.items():
        specs = sorted((e for e in EXPERIMENTS.values() if e.chapter == chapter), key=lambda e: e.name)
        if specs:
            print(f"\n{title} (divekit run NAME):")
        for spec in specs:
            print(_row(spec.name, spec.title, width))
            for key, help_text in spec.options.items():
                print(_row("", f"-o {key}=...: {help_text}", width))
    return 0


def cmd_train(args) -> int:
    from divekit.pipeline import parse_options, train_model
    from divekit.registry import get_model

    spec = get_model(args.model)
    options = parse_options(spec, args.option)
    overrides = {k: getattr(args, k) for k in TRAIN_KEYS if getattr(args, k) is not None}
    results = train_model(
        args.model, options=options, train_overrides=overrides, limit=args.limit, out=args.out,
        resume=args.resume, progress=not args.no_progress,
    )
    if results.get("world_size", 1) == 1 or _is_rank0():
        figures = "  ".join(_figure(k, v) for k, v in results["test"].items())
        print(f"{args.model}: {figures} (model from epoch {results['selected_epoch']}, "
              f"{results['train_seconds']:.1f}s training) -> {results['run_dir']}")
    return 0


def _figure(key: str, value: float) -> str:
    """``test_accuracy 91.23%``, ``test_perplexity 3.75``, ``test_loss 0.3412``: a precision per quantity."""
    if key.endswith("accuracy"):
        return f"{key} {value:.2%}"
    if key.endswith(("perplexity", "bleu")):
        return f"{key} {value:.2f}"
    if key.endswith("per_s"):
        return f"{key.replace('_per_s', '/s')} {value:,.0f}"
    return f"{key} {value:.4f}"


def _is_rank0() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def cmd_evaluate(args) -> int:
    from divekit.pipeline import load_trained

    from divekit.train.checkpoint import resolve_checkpoint

    spec, model, task, ckpt = load_trained(args.checkpoint, option_pairs=args.option)
    metrics = task.evaluate(model, args.split)
    changed = f", {' '.join(args.option)}" if args.option else ""
    print(f"{spec.name} ({resolve_checkpoint(args.checkpoint)}, epoch {ckpt['epoch']}{changed}) on {args.split}: "
          + "  ".join(_figure(k, v) for k, v in metrics.items()))
    return 0


def cmd_summary(args) -> int:
    from divekit.pipeline import parse_options
    from divekit.registry import get_model
    from divekit.summary import example_input, format_summary, summarize

    spec = get_model(args.model)
    config = spec.make_config(parse_options(spec, args.option))
    model = spec.build(config)
    example = example_input(spec.task, config, args.batch)
    print(f"{spec.name}: {spec.description}")
    print(format_summary(summarize(model, example), model, example))
    return 0


def cmd_run(args) -> int:
    from divekit.experiments.base import run_experiment
    from divekit.registry import get_experiment
    from divekit.runs import runs_root

    get_experiment(args.name)
    out = args.out or runs_root() / (args.name + ("-full" if args.full else ""))
    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DivekitError(f"--option expects KEY=VALUE, got '{item}'")
        options[key] = value
    result = run_experiment(args.name, out, quick=not args.full, seed=args.seed, options=options)
    for key, value in result.get("metrics", {}).items():
        print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    print(f"{args.name}: done in {result['wall_seconds']:.1f}s -> {out / 'results.json'}")
    return 0


def cmd_tour(args) -> int:
    from divekit.experiments.base import run_experiment
    from divekit.registry import CHAPTERS, EXPERIMENTS, get_experiment, load_all
    from divekit.report import build_report, collect_results
    from divekit.runs import runs_root, set_aside_previous_tour

    load_all()
    names = args.only or [e.name for c in CHAPTERS for e in sorted(EXPERIMENTS.values(), key=lambda e: e.name)
                          if e.chapter == c]
    for name in names:
        get_experiment(name)
    out = args.out or runs_root() / ("tour-full" if args.full else "tour")
    previous = set_aside_previous_tour(Path(out))
    print(_tour_estimate(names, full=args.full), flush=True)
    if previous is not None:
        print(f"the previous tour in {out} was moved to {previous}", flush=True)
    failed = []
    start = time.perf_counter()
    for k, name in enumerate(names, 1):
        print(f"[{k}/{len(names)}] {name}", flush=True)
        try:
            result = run_experiment(name, out / name, quick=not args.full)
            print(f"    done in {result['wall_seconds']:.1f}s", flush=True)
        except DivekitError as e:  # a user-fixable problem (e.g. missing data): report it, go on
            failed.append(name)
            print(f"    failed: {e}", file=sys.stderr, flush=True)
    report = build_report(collect_results(out), out / "report.html", title="divekit tour")
    print(f"tour: {len(names) - len(failed)}/{len(names)} experiments in {time.perf_counter() - start:.0f}s; "
          f"report: {Path(report).resolve()}")
    if failed:
        raise DivekitError(f"{len(failed)} experiment(s) failed: {', '.join(failed)}")
    return 0


def _tour_estimate(names: list[str], *, full: bool) -> str:
    """One line: how long the tour took when it was last measured, for the experiments asked for."""
    from divekit.experiments.base import describe_tour_seconds, measured_tour_seconds

    record = measured_tour_seconds("full" if full else "quick")
    described = describe_tour_seconds(record, names) if record else None
    if described is None:
        return f"tour: {len(names)} experiments (no measured duration recorded for this mode)"
    return f"tour: {len(names)} experiments, {described}"


def cmd_report(args) -> int:
    from divekit.report import build_report, collect_results

    if not args.directory.is_dir():
        raise DivekitError(f"'{args.directory}' is not a directory")
    results = collect_results(args.directory)
    if not results:
        raise DivekitError(f"no experiment results.json under '{args.directory}'; run `divekit tour` first")
    out = build_report(results, args.out or args.directory / "report.html")
    print(f"report with {len(results)} experiments: {out}")
    return 0


def cmd_data(args) -> int:
    from divekit.data import store

    if args.action == "fetch":
        for path in store.fetch(args.name):
            print(f"ok  {path}")
        return 0
    statuses = store.verify(args.name)
    bad = 0
    for s in statuses:
        print(s.describe() if hasattr(s, "describe") else str(s))
        bad += not s.ok
    if bad:
        # The same exit code as any command that meets the same file (a DataError).
        raise DataError(f"{bad} of {len(statuses)} files missing, unreadable or corrupt; see above")
    return 0


def _train_help(model: str) -> int:
    """`divekit train MODEL --help`: the flags, then that model's options and recipe."""
    build_parser().commands["train"].print_help()
    try:
        print("\n" + model_help(model))
    except DivekitError as e:
        print(f"divekit: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


COMMANDS = {
    "list": cmd_list, "train": cmd_train, "evaluate": cmd_evaluate, "summary": cmd_summary, "run": cmd_run,
    "tour": cmd_tour, "report": cmd_report, "data": cmd_data,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) >= 2 and argv[0] == "train" and not argv[1].startswith("-") and {"-h", "--help"} & set(argv):
        return _train_help(argv[1])
    args = build_parser().parse_args(argv)
    handler = getattr(args, "handler", None) or COMMANDS[args.command]
    try:
        return handler(args)
    except DivekitError as e:
        print(f"divekit: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("divekit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `divekit list | head`: the reader left; nothing is wrong
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
