"""Find models and experiments by name.

Model files register themselves with :func:`register_model`; experiment files with
:func:`register_experiment`. :func:`load_all` imports every module under ``divekit.models`` and
``divekit.experiments`` so the registries are complete before the command line looks a name up.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from torch import nn

from divekit.errors import DivekitError, UnknownNameError

# The curriculum's chapters, in the order the report and `divekit list` show them.
CHAPTERS: dict[str, str] = {
    "foundations": "Foundations",
    "generalization": "Generalization",
    "stability": "Numerical stability",
    "shift": "Distribution shift",
    "rnn": "Modern recurrent networks",
    "mt": "Machine translation",
    "attention": "Attention and the Transformer",
    "cnn": "Convolutional networks",
}


@dataclass(frozen=True)
class ModelSpec:
    """A trainable model: how to build it, its config dataclass, and the task it is trained on."""

    name: str
    builder: Callable[[Any], nn.Module]
    config_cls: type
    task: str
    chapter: str
    description: str
    recipe: dict[str, Any] = field(default_factory=dict)  # TrainConfig defaults for this model

    def make_config(self, overrides: dict[str, Any] | None = None) -> Any:
        """The default config with ``overrides`` applied; unknown keys are a user error."""
        overrides = dict(overrides or {})
        known = {f.name for f in fields(self.config_cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise DivekitError(
                f"model '{self.name}' has no option {', '.join(unknown)}; its options are {', '.join(sorted(known))}"
            )
        return self.config_cls(**overrides)

    def build(self, config: Any) -> nn.Module:
        return self.builder(config)


@dataclass(frozen=True)
class ExperimentSpec:
    """A runnable experiment: ``run(ctx)`` returns a JSON-able result dict (see ``divekit.experiments.base``)."""

    name: str
    run: Callable[[Any], dict]
    chapter: str
    title: str
    description: str
    options: dict[str, str] = field(default_factory=dict)  # `divekit run NAME -o KEY=VALUE`: key -> help


MODELS: dict[str, ModelSpec] = {}
EXPERIMENTS: dict[str, ExperimentSpec] = {}


def register_model(name: str, *, config: type, task: str, chapter: str, description: str,
                   recipe: dict[str, Any] | None = None):
    """Decorator for a builder ``f(config) -> nn.Module``; ``recipe`` holds its default TrainConfig values."""

    def wrap(builder: Callable[[Any], nn.Module]):
        _check_new(name, MODELS, chapter)
        MODELS[name] = ModelSpec(name, builder, config, task, chapter, description, dict(recipe or {}))
        return builder

    return wrap


def register_experiment(name: str, *, chapter: str, title: str, description: str,
                        options: dict[str, str] | None = None):
    """Decorator for an experiment ``f(ctx) -> dict``; ``options`` names the ``-o KEY=VALUE`` it reads."""

    def wrap(run: Callable[[Any], dict]):
        _check_new(name, EXPERIMENTS, chapter)
        EXPERIMENTS[name] = ExperimentSpec(name, run, chapter, title, description, dict(options or {}))
        return run

    return wrap


def _check_new(name: str, table: dict, chapter: str) -> None:
    if name in table:
        raise RuntimeError(f"'{name}' is registered twice")
    if chapter not in CHAPTERS:
        raise RuntimeError(f"unknown chapter '{chapter}' for '{name}'")


def suggest(name: str, candidates) -> str:
    """' (did you mean a, b?)' for the closest candidates, or ''."""
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def get_model(name: str) -> ModelSpec:
    load_all()
    if name not in MODELS:
        raise UnknownNameError(f"unknown model '{name}'{suggest(name, MODELS)}; `divekit list` shows them all")
    return MODELS[name]


def get_experiment(name: str) -> ExperimentSpec:
    load_all()
    if name not in EXPERIMENTS:
        raise UnknownNameError(
            f"unknown experiment '{name}'{suggest(name, EXPERIMENTS)}; `divekit list` shows them all"
        )
    return EXPERIMENTS[name]


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build model ``name`` with its default config changed by ``overrides``."""
    spec = get_model(name)
    return spec.build(spec.make_config(overrides))


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``."""
    load_all()
    return sorted(n for n in MODELS if fnmatch.fnmatch(n, pattern))


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain values (it goes into checkpoints loaded with weights_only=True)."""
    return asdict(config)


_loaded = False


def load_all() -> None:
    """Import every model and experiment module so that they register themselves."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for package_name in ("divekit.models", "divekit.experiments"):
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package_name}.{info.name}")
