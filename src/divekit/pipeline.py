"""Train a registered model end to end: config, data, Trainer, test evaluation, ``results.json``.

``divekit train`` and the experiments both call :func:`train_model`, so a model trains the same way
from the command line, from the tour and under ``torchrun``. This module is the glue above the
models, the tasks and the training loop; none of those import it.

Where a run's files go (:mod:`divekit.train.rundir` holds the directory rules):

- a new run takes a fresh directory (``--out DIR``, absent or empty; default ``runs/MODEL-TIME``);
- ``--resume RUN`` (or ``RUN/checkpoint.pt``) continues that run in its own directory from its
  newest checkpoint; ``--out`` may only name that same directory. The recipe is the stored one:
  flags that repeat a stored value are accepted, a different value is refused, except for
  ``epochs``, ``patience``, ``device`` and ``threads``;
- ``--resume CHECKPOINT --out NEW`` forks: a new run in ``NEW`` starts from that checkpoint (any
  checkpoint, ``best.pt`` included) and may also change the learning rate, clipping, weight decay,
  label smoothing and precision. A fork selects its model among its own epochs;
- every other combination is refused with one line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist

from divekit import seeding
from divekit.errors import DivekitError
from divekit.registry import (
    ModelSpec,
    config_to_dict,
    get_model,
    model_config_from_dict,
    parse_options,
)
from divekit.runs import machine_info, new_run_dir, now_iso, write_json
from divekit.tasks import make_task
from divekit.train.checkpoint import load_checkpoint, load_model_state, resolve_checkpoint
from divekit.train.config import TrainConfig, resolve_device
from divekit.train.distributed import DistInfo, setup, teardown
from divekit.train.rundir import RECORD_FILE, RunDir, RunDirError
from divekit.train.trainer import Trainer

__all__ = ["train_model", "load_trained", "parse_options", "model_config_from_dict", "config_to_dict"]

# Settings a continued run may change: they move the end or the place, not the trajectory.
CONTINUE_MAY_CHANGE = frozenset({"epochs", "patience", "device", "threads"})
# A fork starts a new trajectory from a checkpoint, so it may also retune the optimisation.
FORK_MAY_CHANGE = CONTINUE_MAY_CHANGE | {"lr", "grad_clip", "weight_decay", "label_smoothing", "precision"}


class _Plan:
    """What a ``train_model`` call will do: a fresh run, a continued run, or a fork."""

    def __init__(self, mode: str, out: Path | None, ckpt: dict[str, Any] | None, source: Path | None) -> None:
        self.mode, self.out, self.ckpt, self.source = mode, out, ckpt, source


def _plan(name: str, out: Path | None, resume: Path | None) -> _Plan:
    if resume is None:
        return _Plan("new", out, None, None)
    resume = Path(resume)
    run_dir = resume if resume.is_dir() else resume.parent
    ckpt_path = resume / "checkpoint.pt" if resume.is_dir() else resume
    if resume.is_dir() and not ckpt_path.is_file():
        raise RunDirError(f"'{resume}' holds no checkpoint.pt to continue from (a run stopped before its first "
                          f"checkpoint has nothing to resume: start it again with the same --out)")
    ckpt = load_checkpoint(ckpt_path, expect_model=name)
    if out is not None and Path(out).resolve() != run_dir.resolve():
        return _Plan("fork", Path(out), ckpt, ckpt_path)
    if ckpt_path.name != "checkpoint.pt" or not (run_dir / RECORD_FILE).is_file():
        raise RunDirError(
            f"'{ckpt_path}' is not the newest checkpoint of a run directory, so no run continues from it; "
            f"to start a new run from it, fork with --out NEW_DIR"
        )
    return _Plan("continue", run_dir, ckpt, ckpt_path)


def _check_recipe(plan: _Plan, spec: ModelSpec, options: dict[str, Any], train_overrides: dict[str, Any],
                  limit: int | None) -> None:
    """A resumed run keeps its model and recipe: only values that differ from the stored ones are refused."""
    stored_model = _plain(plan.ckpt["model_config"])
    given = _plain(config_to_dict(spec.make_config({**stored_model, **options})))
    changed = sorted(k for k in options if given[k] != stored_model.get(k))
    if changed:
        raise DivekitError(f"a resumed run keeps its model; cannot change option {', '.join(changed)}")
    stored = plan.ckpt["train_config"]
    may = FORK_MAY_CHANGE if plan.mode == "fork" else CONTINUE_MAY_CHANGE
    # "auto" asks for what this machine chose when the run started; the stored run holds that choice.
    changed = sorted(k for k, v in train_overrides.items()
                     if k not in may and stored.get(k) != v and not (k == "precision" and v == "auto"))
    if changed:
        hint = "" if plan.mode == "fork" else "; a fork (--resume CHECKPOINT --out NEW_DIR) may change lr, grad_clip, "\
            "weight_decay, label_smoothing and precision"
        raise DivekitError(f"a resumed run keeps its recipe; cannot change {', '.join(changed)}{hint}")
    stored_limit = plan.ckpt["task_state"].get("limit")
    if limit is not None and limit != stored_limit:
        raise DivekitError(f"a resumed run keeps its data; cannot change --limit ({stored_limit} -> {limit})")


def _plain(value: Any) -> Any:
    """Tuples as lists, so stored and given values compare equal whatever container they came in."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _open_run_dir(name: str, plan: _Plan, dist: DistInfo) -> RunDir | None:
    """Rank 0 takes the run directory (locked) and tells the others where it is."""
    run = None
    if dist.is_main:
        if plan.mode == "continue":
            run = RunDir.open(plan.out)
            if plan.ckpt.get("run_id") != run.run_id:
                run.release()
                raise RunDirError(
                    f"'{plan.source}' belongs to run {plan.ckpt.get('run_id')}, but its directory holds "
                    f"run {run.run_id}"
                )
        else:
            forked = None
            if plan.mode == "fork":
                forked = {"checkpoint": str(plan.source), "run_id": plan.ckpt.get("run_id"),
                          "epoch": plan.ckpt["epoch"], "step_in_epoch": plan.ckpt["step_in_epoch"]}
            run = RunDir.create(plan.out or new_run_dir(name), model=name, forked_from=forked)
    chosen = [str(run.path) if run else ""]
    if dist.enabled:
        torch_dist.broadcast_object_list(chosen, src=0)
    plan.out = Path(chosen[0])
    return run


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
    """Train model ``name``; return (and write to ``RUN/results.json``) its results.

    Args:
        options: model config values (``--option``); train_overrides: TrainConfig values.
        limit: use only the first ``limit`` training examples (quick runs, tests).
        out: the run directory; resume: a run directory or checkpoint (see the module docstring).
    """
    spec = get_model(name)
    options = dict(options or {})
    train_overrides = {k: v for k, v in (train_overrides or {}).items() if v is not None}
    plan = _plan(name, out, resume)
    if plan.ckpt is not None:
        _check_recipe(plan, spec, options, train_overrides, limit)
        model_config = model_config_from_dict(spec, plan.ckpt["model_config"])
        train_config = TrainConfig.from_dict({**plan.ckpt["train_config"], **train_overrides})
        limit = plan.ckpt["task_state"].get("limit")
    else:
        model_config = spec.make_config(options)
        train_config = TrainConfig(**{**spec.recipe, **train_overrides})
        as_registered = not options and not train_overrides.keys() - {"epochs", "device", "threads"}
        if as_registered and train_config.epochs < spec.learns_after:
            log(f"note: {name}'s recipe stays near chance for its first {spec.learns_after - 1} epochs; "
                f"--epochs {train_config.epochs} will likely end there (use --epochs {spec.learns_after} or more)")

    device = resolve_device(train_config.device)
    dist = setup(device)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
        train_config.device = str(device)
    run = None
    try:
        seeding.seed_global(train_config.seed, "init")  # initial weights: their own stream
        stored = plan.ckpt["task_state"] if plan.ckpt is not None else None
        model = _build(spec, model_config, from_checkpoint=stored is not None)
        task = make_task(spec.task, model_config, train_config, limit=limit, state=stored)
        run = _open_run_dir(name, plan, dist)
        trainer = Trainer(
            model, task, train_config, model_name=name, model_config=config_to_dict(model_config),
            run_dir=plan.out, run=run, dist=dist, progress=progress, log=log,
        )
        if plan.ckpt is not None:
            trainer.restore(plan.ckpt, source=str(plan.source), fork=plan.mode == "fork")
        result = trainer.fit()
        results = _finish(spec, trainer, task, result, model_config, train_config, limit, plan.out, dist, run)
    except BaseException:
        if run is not None:
            run.release(failed=True)
        raise
    finally:
        teardown(dist)
    if run is not None:
        run.release()
    return results


def _finish(spec, trainer, task, result, model_config, train_config, limit, run_dir, dist, run) -> dict[str, Any]:
    """Evaluate the model selected on validation on the test split, and write results.json.

    The selected model is ``best.pt`` when this run wrote one; otherwise the final weights, and
    ``selected_epoch`` then names the final epoch: the file always describes the model it scored.
    """
    final = {f"test_{k}": v for k, v in task.evaluate(trainer.model, "test").items()}
    final_epoch = trainer.epoch
    selected, selected_epoch, selection = dict(final), final_epoch, "final"
    if result.best_checkpoint is not None and result.best_checkpoint.exists():
        best = load_checkpoint(result.best_checkpoint, expect_model=spec.name)
        selected_epoch, selection = int(best["epoch"]), "best validation"
        if selected_epoch != final_epoch:  # else the best weights are the final ones, just scored
            load_model_state(trainer.model, best["model_state"], source=str(result.best_checkpoint))
            selected = {f"test_{k}": v for k, v in task.evaluate(trainer.model, "test").items()}
    results = {
        "model": spec.name,
        "task": spec.task,
        "run_id": run.run_id if run else None,
        "forked_from": run.record.get("forked_from") if run else None,
        "model_config": config_to_dict(model_config),
        "train_config": train_config.to_dict(),
        "precision_choice": trainer.precision_choice.to_dict() if trainer.precision_choice else None,
        "limit": limit,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "history": result.history,
        "final_epoch": final,
        "last_epoch": final_epoch,
        "selected_epoch": selected_epoch,
        "selection": selection,
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

    ``checkpoint`` may be a run directory: its ``best.pt`` (else ``checkpoint.pt``) is used.
    ``option_pairs`` (``["test_shift=true"]``) change the saved model config before the model is
    built: meant for evaluation-time settings; one that changes the weights' shapes is refused by
    :func:`load_model_state` with the mismatch named.
    """
    checkpoint = resolve_checkpoint(checkpoint)
    ckpt = load_checkpoint(checkpoint)
    spec = get_model(ckpt["model"])
    model_config = model_config_from_dict(spec, {**ckpt["model_config"], **parse_options(spec, list(option_pairs))})
    model = _build(spec, model_config, from_checkpoint=True)
    load_model_state(model, ckpt["model_state"], source=str(checkpoint))
    model.eval()
    task = make_task(spec.task, model_config, TrainConfig.from_dict(ckpt["train_config"]), limit=data_limit,
                     state=ckpt.get("task_state"))
    return spec, model, task, ckpt


def _build(spec, model_config: Any, *, from_checkpoint: bool) -> torch.nn.Module:
    """The model of ``model_config``. When its weights will come from a checkpoint, a ``pretrained``
    start file (bert-question's encoder) is not read: the run needs only its own checkpoint, even
    after that file has moved or gone. The config itself still names it, as the run's provenance."""
    if from_checkpoint and getattr(model_config, "pretrained", ""):
        model_config = dataclasses.replace(model_config, pretrained="")
    return spec.build(model_config)

