"""The Python API: what the command line does, as functions a notebook or a script calls.

    import divekit

    divekit.list_models("*lm*")                      # ['deep-lstm-lm', 'gpt-lm', 'gru-lm', ...]
    model = divekit.create_model("lenet", modern=True)
    run = divekit.train("mlp", epochs=2, limit=2000)  # the same pipeline as `divekit train`
    run.test["test_accuracy"], run.history[-1], run.run_dir
    loaded = divekit.load(run.run_dir)                # model, task and checkpoint of its best.pt
    result = divekit.run_experiment("polynomial-fit")  # the result dict the report renders

Errors are the same :class:`~divekit.errors.DivekitError` subclasses the command line prints as one
line. Heavy modules are imported inside the functions, so ``import divekit`` stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from divekit.registry import create_model, list_models

__all__ = ["list_models", "create_model", "train", "load", "run_experiment", "translate", "sample",
           "TrainedRun", "Loaded"]


@dataclass
class TrainedRun:
    """A finished training run: the model selected on validation (in eval mode) and its record."""

    model: nn.Module
    results: dict[str, Any]  # what results.json holds

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.results["history"]

    @property
    def test(self) -> dict[str, float]:
        return self.results["test"]

    @property
    def run_dir(self) -> Path:
        return Path(self.results["run_dir"])


@dataclass
class Loaded:
    """A saved model, ready to use: the model (eval mode), its task (data, vocabularies) and checkpoint."""

    name: str
    model: nn.Module
    task: Any
    checkpoint: dict[str, Any]


def train(name: str, *, options: dict[str, Any] | None = None, limit: int | None = None,
          out: str | Path | None = None, resume: str | Path | None = None, progress: bool = True,
          **recipe: Any) -> TrainedRun:
    """Train model ``name`` as ``divekit train`` does; ``recipe`` holds TrainConfig values (``epochs=3``).

    The run directory follows the same rules as on the command line (a fresh ``out``, or ``resume``
    to continue or fork a run). Progress bars are ``tqdm.auto``'s, so they render in Jupyter.
    """
    from divekit.pipeline import train_model

    results = train_model(name, options=options, train_overrides=recipe, limit=limit,
                          out=Path(out) if out is not None else None,
                          resume=Path(resume) if resume is not None else None, progress=progress)
    return TrainedRun(load(results["run_dir"]).model, results)


def load(checkpoint: str | Path, **options: Any) -> Loaded:
    """A checkpoint, or a run directory (its ``best.pt``); ``options`` change evaluation-time settings."""
    from divekit.pipeline import load_trained

    pairs = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items()]
    spec, model, task, ckpt = load_trained(Path(checkpoint), option_pairs=pairs)
    return Loaded(spec.name, model, task, ckpt)


def run_experiment(name: str, *, quick: bool = True, out: str | Path | None = None, seed: int = 0,
                   progress: bool = True, **options: str) -> dict[str, Any]:
    """Run experiment ``name`` (quick mode by default) and return its result dict (also in ``out``)."""
    from divekit.experiments.base import run_experiment as _run
    from divekit.runs import runs_root

    out = Path(out) if out is not None else runs_root() / (name + ("" if quick else "-full"))
    return _run(name, out, quick=quick, seed=seed, progress=progress, options=dict(options))


def translate(checkpoint: str | Path, sentences: str | list[str], *, beam: int = 4, alpha: float = 0.0) -> list[str]:
    """English sentences to French with a ``fra-eng`` checkpoint (preprocessed as the training data was)."""
    from divekit.data.fra_eng import preprocess, tokenize
    from divekit.errors import DivekitError
    from divekit.tasks.translation import load_translator

    if isinstance(sentences, str):
        sentences = [sentences]
    tokens = [tokenize(preprocess(s)) for s in sentences]
    if not tokens or any(not t for t in tokens):
        raise DivekitError("every sentence to translate needs at least one word")
    translator, _ = load_translator(checkpoint)
    return translator.translate(tokens, beam_size=beam, alpha=alpha)


def sample(checkpoint: str | Path, prefix: str = "time traveller", length: int = 200, *,
           temperature: float = 0.8, top_k: int | None = None, seed: int = 0) -> str:
    """Continue ``prefix`` with a Time Machine language model (lower-cased; ``<unk>`` is never drawn)."""
    import torch

    from divekit.commands.sample import encode_prefix
    from divekit.decode.sampling import generate
    from divekit.tasks.language_model import load_language_model

    model, vocab, _ = load_language_model(checkpoint)
    prefix = prefix.lower()
    new = generate(model, encode_prefix(prefix, vocab), length, temperature=temperature, top_k=top_k,
                   generator=torch.Generator().manual_seed(seed), never=[vocab.unk])
    return prefix + "".join(vocab.to_tokens(new))
