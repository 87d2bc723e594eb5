"""Find models and experiments by name.

Model files register themselves with :func:`register_model`; experiment files with
:func:`register_experiment`. :func:`load_all` imports every module under ``divekit.models`` and
``divekit.experiments`` so the registries are complete before the command line looks a name up.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import importlib
import inspect
import pkgutil
import re
import typing
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
    learns_after: int = 1  # epochs of the recipe before the validation metric leaves chance level

    def make_config(self, overrides: dict[str, Any] | None = None) -> Any:
        """The default config with ``overrides`` applied; unknown keys are a user error."""
        overrides = dict(overrides or {})
        known = {f.name for f in fields(self.config_cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise DivekitError(
                f"model '{self.name}' has no option {', '.join(unknown)}; its options are {', '.join(sorted(known))}"
            )
        try:
            return self.config_cls(**overrides)
        except DivekitError:
            raise
        except (ValueError, TypeError, AssertionError) as e:  # a config's own __post_init__ checks
            raise DivekitError(f"model '{self.name}': {e}") from None

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
    modes: str = ""  # one sentence: what the quick figure shows and what the full run adds


MODELS: dict[str, ModelSpec] = {}
EXPERIMENTS: dict[str, ExperimentSpec] = {}


def register_model(name: str, *, config: type, task: str, chapter: str, description: str,
                   recipe: dict[str, Any] | None = None, learns_after: int = 1):
    """Decorator for a builder ``f(config) -> nn.Module``; ``recipe`` holds its default TrainConfig values
    (``precision`` defaults to ``auto``).

    ``learns_after``: how many epochs of that recipe pass before the model leaves chance level
    (measured), so that a shorter run can say so instead of silently scoring at chance.
    """

    def wrap(builder: Callable[[Any], nn.Module]):
        _check_new(name, MODELS, chapter)
        # A recipe trains in bf16 where this machine runs it natively and it pays for the model
        # (divekit.train.precision); a recipe may still name fp32 or bf16.
        MODELS[name] = ModelSpec(name, builder, config, task, chapter, description, {"precision": "auto", **(recipe or {})},
                                 learns_after)
        return builder

    return wrap


def register_experiment(name: str, *, chapter: str, title: str, description: str,
                        options: dict[str, str] | None = None, modes: str = ""):
    """Decorator for an experiment ``f(ctx) -> dict``.

    ``options`` names the ``-o KEY=VALUE`` it reads; ``modes`` says in one sentence what its quick
    figure shows and what the full run adds (the report prints it under the section's title).
    """

    def wrap(run: Callable[[Any], dict]):
        _check_new(name, EXPERIMENTS, chapter)
        EXPERIMENTS[name] = ExperimentSpec(name, run, chapter, title, description, dict(options or {}), modes)
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


def parse_options(spec: ModelSpec, pairs: list[str]) -> dict[str, Any]:
    """``["hidden=512,256", "dropout=0.5"]`` -> typed values for the model's config dataclass."""
    fields_by_name = {f.name: f for f in dataclasses.fields(spec.config_cls)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise DivekitError(f"--option takes KEY=VALUE, got '{pair}'")
        if key not in fields_by_name:
            raise DivekitError(f"model '{spec.name}' has no option '{key}'; its options are {', '.join(fields_by_name)}")
        f = fields_by_name[key]
        default = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        out[key] = _parse_value(key, text, default)
    return out


def _parse_value(key: str, text: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            value = float(text)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError
            return value
        if isinstance(default, tuple):
            kind = type(default[0]) if default else int
            return tuple(kind(v) for v in text.split(",") if v.strip())
        return text
    except ValueError:
        raise DivekitError(f"option '{key}' expects a value like {default!r}, got '{text}'") from None


def model_config_from_dict(spec: ModelSpec, values: dict[str, Any]) -> Any:
    """Rebuild a config dataclass from checkpoint values (lists back to tuples where the field is one)."""
    hints = typing.get_type_hints(spec.config_cls)
    fixed = {}
    for key, value in values.items():
        origin = typing.get_origin(hints.get(key))
        fixed[key] = tuple(value) if origin is tuple and isinstance(value, list) else value
    return spec.make_config(fixed)


@dataclass(frozen=True)
class OptionDoc:
    """One ``-o KEY=VALUE`` a model takes: its type, default and the config's comment on it."""

    name: str
    type: str
    default: Any
    help: str


_FIELD = re.compile(r"^\s+(\w+)\s*:[^=#\n]*(?:=[^#\n]*)?(?:#\s*(.+))?$")


def _field_comments(source: str) -> dict[str, str]:
    """``{field: comment}``: a field's trailing comment, else the comment lines just above it."""
    notes: dict[str, str] = {}
    above: list[str] = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# "))
            continue
        match = _FIELD.match(line)
        if match and not stripped.startswith(("def ", "return", "raise")):
            note = match.group(2) or " ".join(above)
            if note:
                notes[match.group(1)] = note.strip()
        above = []
    return notes


def option_docs(spec: ModelSpec) -> list[OptionDoc]:
    """The model's options in declaration order, each with the comment on its config field.

    The comments are read from the config classes' source (the subclass's first, then its bases'),
    so the help a user sees is the line a reader of the code sees.
    """
    notes: dict[str, str] = {}
    for cls in reversed(spec.config_cls.__mro__):
        try:
            notes.update(_field_comments(inspect.getsource(cls)))
        except (OSError, TypeError):
            continue
    hints = typing.get_type_hints(spec.config_cls)
    docs = []
    for f in dataclasses.fields(spec.config_cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        kind = hints.get(f.name, f.type)
        docs.append(OptionDoc(f.name, getattr(kind, "__name__", str(kind)), default, notes.get(f.name, "")))
    return docs


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
