"""Tasks tie a registered model to its data, loss and evaluation (see ``divekit.train.task.Task``).

A model's registry entry names its task; each task module registers a factory with
:func:`register_task`, and :func:`make_task` builds the task from the model config, the training
config and the command line's data options.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from typing import Any

from divekit.errors import UnknownNameError
from divekit.registry import suggest
from divekit.train.config import TrainConfig
from divekit.train.task import Task

TaskFactory = Callable[..., Task]
TASKS: dict[str, TaskFactory] = {}


def register_task(name: str):
    """Decorator for ``factory(model_config, train_config, *, limit) -> Task``."""

    def wrap(factory: TaskFactory) -> TaskFactory:
        if name in TASKS:
            raise RuntimeError(f"task '{name}' is registered twice")
        TASKS[name] = factory
        return factory

    return wrap


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def make_task(name: str, model_config: Any, train_config: TrainConfig, *, limit: int | None = None,
              state: dict[str, Any] | None = None) -> Task:
    """Build the task ``name`` for a model with ``model_config``; ``limit`` caps the training examples.

    ``state`` is the task state a checkpoint stored, when the task is rebuilt to resume or evaluate
    that checkpoint. A factory with a ``state`` parameter takes from it what it would otherwise read
    from another file (bert-question: the pretrained encoder's vocabulary); the others rebuild
    everything from the data.
    """
    _load_all()
    if name not in TASKS:
        raise UnknownNameError(f"unknown task '{name}'{suggest(name, TASKS)}")
    factory = TASKS[name]
    if state is not None and "state" in inspect.signature(factory).parameters:
        return factory(model_config, train_config, limit=limit, state=state)
    return factory(model_config, train_config, limit=limit)
