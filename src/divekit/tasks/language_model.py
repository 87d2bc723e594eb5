"""Character language modelling on The Time Machine (task ``timemachine``).

Data: the contiguous 80/10/10 blocks of :mod:`divekit.data.timemachine` and the training-block
vocabulary. Training batches ``X, Y`` are ``(B, T)`` windows with ``Y`` = ``X`` shifted by one:

* sequential partitioning (``model_config.sequential``): row ``b`` of each batch continues row ``b``
  of the previous one, so the final state is detached and carried into the next step (truncated
  backpropagation through time); it is reset at the start of every epoch;
* random windows: unrelated rows, every step starts from a zero state.

Evaluation walks a whole block once with :func:`~divekit.data.timemachine.eval_stream`, carrying
the state across windows, and reports the mean negative log-likelihood per character (``loss``),
``perplexity = exp(loss)``, ``bits_per_char = loss / ln 2`` and evaluation ``tokens_per_s``. The
Trainer's ``train_items_per_s`` is training tokens per second.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from divekit.data.timemachine import (
    IGNORE_INDEX,
    LMData,
    LMLoader,
    eval_stream,
    load_lm_data,
)
from divekit.data.vocab import Vocab
from divekit.errors import CheckpointError
from divekit.metrics.perplexity import nll_metrics
from divekit.nn.state import detach_state
from divekit.tasks import register_task
from divekit.train.checkpoint import load_checkpoint, load_model_state
from divekit.train.config import TrainConfig
from divekit.train.distributed import DistInfo
from divekit.train.task import StepOutput

TASK_NAME = "timemachine"


class LanguageModelTask:
    """Next-character cross-entropy with truncated BPTT; perplexity over whole blocks.

    Args:
        data: the blocks and vocabulary (default: the real book).
        batch_size, num_steps: training windows ``(B, T)``.
        sequential: carry the detached state across batches (else reset it every batch).
        limit: train on the first ``limit`` tokens of the training block only.
        eval_streams, eval_steps: ``eval_stream``'s parallel streams and window length.
    """

    name = TASK_NAME
    monitor = "val_perplexity"
    monitor_mode = "min"

    def __init__(self, *, batch_size: int, num_steps: int, sequential: bool = True, seed: int = 0,
                 limit: int | None = None, data: LMData | None = None, eval_streams: int = 16,
                 eval_steps: int = 128) -> None:
        self.data = data if data is not None else load_lm_data("char")
        self.vocab: Vocab = self.data.vocab
        self.batch_size, self.num_steps, self.sequential = batch_size, num_steps, sequential
        self.seed, self.limit = seed, limit
        self.eval_streams, self.eval_steps = eval_streams, eval_steps
        train = self.data.train if limit is None else self.data.train[:limit]
        self.blocks = {"train": train, "val": self.data.val, "test": self.data.test}
        self._state = None  # carried across sequential batches within an epoch

    def train_loader(self, dist: DistInfo) -> LMLoader:
        # Each rank walks its own seed's offsets: the streams differ, the state logic is unchanged.
        return LMLoader(self.blocks["train"], self.batch_size, self.num_steps, sequential=self.sequential,
                        seed=self.seed + dist.rank)

    def start_epoch(self, model: nn.Module, epoch: int) -> None:
        self._state = None  # a new epoch starts at a new offset: the old state belongs to other text

    def step(self, model: nn.Module, batch) -> StepOutput:
        x, y = batch
        state = self._state if self.sequential else None
        logits, state = model(x, state)
        if self.sequential:
            self._state = detach_state(state)  # gradients stop here; the values flow on
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        return StepOutput(loss=loss, count=y.numel())

    @torch.no_grad()
    def nll(self, model: nn.Module, split: str) -> tuple[float, int, float]:
        """Summed negative log-likelihood (nats), target count and seconds over a whole block."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        total, count, state = 0.0, 0, None
        start = time.perf_counter()
        for x, y in eval_stream(self.blocks[split], self.eval_streams, self.eval_steps):
            x, y = x.to(device), y.to(device)
            logits, state = model(x, state)
            total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                                     ignore_index=IGNORE_INDEX, reduction="sum").item()
            count += int((y != IGNORE_INDEX).sum())
        model.train(was_training)
        return total, count, time.perf_counter() - start

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        return nll_metrics(*self.nll(model, split))

    def state(self) -> dict[str, Any]:
        return {"vocab": self.vocab.to_state(), "num_steps": self.num_steps, "sequential": self.sequential,
                "limit": self.limit, "token": self.data.token}

    def example_input(self, batch_size: int = 2) -> torch.Tensor:
        return torch.zeros(batch_size, self.num_steps, dtype=torch.long)


@register_task(TASK_NAME)
def make(model_config: Any, train_config: TrainConfig, *, limit: int | None = None) -> LanguageModelTask:
    return LanguageModelTask(
        batch_size=train_config.batch_size,
        num_steps=getattr(model_config, "num_steps", 35),
        sequential=getattr(model_config, "sequential", True),
        seed=train_config.seed,
        limit=limit,
    )


def load_language_model(path: str | os.PathLike, *, expect_model: str | None = None
                        ) -> tuple[nn.Module, Vocab, dict[str, Any]]:
    """The model of a ``timemachine`` checkpoint (eval mode) and its vocabulary; reads no dataset.

    A checkpoint of another task, or of another model than ``expect_model``, is refused.
    """
    from divekit.registry import get_model, model_config_from_dict

    ckpt = load_checkpoint(path, expect_model=expect_model)
    if ckpt.get("task") != TASK_NAME:
        raise CheckpointError(f"'{path}' is a checkpoint of task '{ckpt.get('task')}', not a {TASK_NAME} "
                              f"language model")
    spec = get_model(ckpt["model"])
    model = spec.build(model_config_from_dict(spec, ckpt["model_config"]))
    load_model_state(model, ckpt["model_state"], source=str(path))
    model.eval()
    return model, Vocab.from_state(ckpt["task_state"]["vocab"]), ckpt
