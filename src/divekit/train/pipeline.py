"""Train a registered model end to end: config, data, Trainer, test evaluation, ``results.json``.

``divekit train`` and the experiments both call :func:`train_model`, so a model trains the same way
from the command line, from the tour and under ``torchrun``.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist

from divekit.errors import DivekitError
from divekit.registry import ModelSpec, config_to_dict, get_model
from divekit.runs import machine_info, new_run_dir, now_iso, write_json
from divekit.tasks import make_task
from divekit.train.checkpoint import load_checkpoint, load_model_state
from divekit.train.config import TrainConfig
from divekit.train.distributed import DistInfo, setup, teardown
from divekit.train.trainer import Trainer, resolve_device


def parse_options(spec: ModelSpec, pairs: list[str]) -> dict[str, Any]:
    """``["hidden=512,256", "dropout=0.5"]`` -> typed values for the model's config dataclass."""
    fields = {f.name: f for f in dataclasses.fields(spec.config_cls)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise DivekitError(f"--option takes KEY=VALUE, got '{pair}'")
        if key not in fields:
            raise DivekitError(f"model '{spec.name}' has no option '{key}'; its options are {', '.join(fields)}")
        default = fields[key].default
        if default is dataclasses.MISSING and fields[key].default_factory is not dataclasses.MISSING:
            default = fields[key].default_factory()
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
            return float(text)
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


def _shared_run_dir(name: str, out: Path | None, dist: DistInfo) -> Path:
    """Rank 0 chooses the run directory and tells the others."""
    chosen = [str(out) if out else (str(new_run_dir(name)) if dist.is_main else "")]
    if dist.enabled:
        torch_dist.broadcast_object_list(chosen, src=0)
    path = Path(chosen[0])
    if dist.is_main:
        path.mkdir(parents=True, exist_ok=True)
    return path


def train_model(
    name: str,
    *,
    options: dict[str, Any] | None = None,
    train_overrides: dict[str, Any] | None = None,
    limit: int | None = None,
    out: Path | None = None,
    resume: Path | None = None,
    progress: bool = True,
    log=print,
) -> dict[str, Any]:
    """Train model ``name``; return (and write to ``out/results.json``) its results.

    Args:
        options: model config values (``--option``); train_overrides: TrainConfig values.
        limit: use only the first ``limit`` training examples (quick runs, tests).
        resume: a checkpoint of this model to continue from; its configs are used, and
            ``train_overrides`` may only extend ``epochs`` or change where it runs.
    """
    spec = get_model(name)
    train_overrides = {k: v for k, v in (train_overrides or {}).items() if v is not None}
    ckpt = None
    if resume is not None:
        ckpt = load_checkpoint(resume, expect_model=name)
        if options:
            raise DivekitError("--option cannot change a model that is resumed from a checkpoint")
        changing = set(train_overrides) - {"epochs", "device", "threads", "patience"}
        if changing:
            raise DivekitError(f"a resumed run keeps its recipe; cannot change {', '.join(sorted(changing))}")
        model_config = model_config_from_dict(spec, ckpt["model_config"])
        train_config = TrainConfig.from_dict({**ckpt["train_config"], **train_overrides})
        limit = ckpt["task_state"].get("limit", limit)
        out = Path(resume).parent
    else:
        model_config = spec.make_config(options)
        train_config = TrainConfig(**{**spec.recipe, **train_overrides})

    device = resolve_device(train_config.device)
    dist = setup(device)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
        train_config.device = str(device)
    try:
        torch.manual_seed(train_config.seed)
        model = spec.build(model_config)
        task = make_task(spec.task, model_config, train_config, limit=limit)
        run_dir = _shared_run_dir(name, out, dist)
        trainer = Trainer(
            model, task, train_config, model_name=name, model_config=config_to_dict(model_config),
            run_dir=run_dir, dist=dist, progress=progress, log=log,
        )
        if ckpt is not None:
            trainer.restore(ckpt, source=str(resume))
        result = trainer.fit()
        results = _finish(spec, trainer, task, result, model_config, train_config, limit, run_dir, dist)
    finally:
        teardown(dist)
    return results


def _finish(spec, trainer, task, result, model_config, train_config, limit, run_dir, dist) -> dict[str, Any]:
    """Evaluate the model selected on validation on the test split, and write results.json."""
    final = {f"test_{k}": v for k, v in task.evaluate(trainer.model, "test").items()}
    selected = dict(final)
    if result.best_checkpoint is not None and result.best_checkpoint.exists():
        best = load_checkpoint(result.best_checkpoint, expect_model=spec.name)
        load_model_state(trainer.model, best["model_state"], source=str(result.best_checkpoint))
        selected = {f"test_{k}": v for k, v in task.evaluate(trainer.model, "test").items()}
    results = {
        "model": spec.name,
        "task": spec.task,
        "model_config": config_to_dict(model_config),
        "train_config": train_config.to_dict(),
        "limit": limit,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "history": result.history,
        "final_epoch": final,
        "selected_epoch": result.best.get("epoch") if result.best else None,
        "test": selected,
        "train_seconds": sum(h["train_seconds"] for h in result.history),
        "world_size": dist.world_size,
        "machine": machine_info(trainer.device),
        "date": now_iso(),
        "run_dir": str(run_dir),
    }
    if dist.is_main:
        write_json(run_dir / "results.json", results)
    return results


def load_trained(checkpoint: Path, *, data_limit: int | None = None, option_pairs: Sequence[str] = ()):
    """``(spec, model, task, checkpoint_dict)`` for evaluating a saved model (in eval mode).

    ``option_pairs`` (``["test_shift=true"]``) change the saved model config before the model is
    built: meant for evaluation-time settings; one that changes the weights' shapes is refused by
    :func:`load_model_state` with the mismatch named.
    """
    ckpt = load_checkpoint(checkpoint)
    spec = get_model(ckpt["model"])
    model_config = model_config_from_dict(spec, {**ckpt["model_config"], **parse_options(spec, list(option_pairs))})
    model = spec.build(model_config)
    load_model_state(model, ckpt["model_state"], source=str(checkpoint))
    model.eval()
    task = make_task(spec.task, model_config, TrainConfig.from_dict(ckpt["train_config"]), limit=data_limit)
    return spec, model, task, ckpt
