"""Is this English sentence a question? (task ``eng-question``), a fine-tuning task for BERT.

Sentences: the distinct English sources of each fra-eng split (grouped by source, so no validation
or test sentence is trained on, and none was seen in masked-LM pretraining either) that end in
``.``, ``!`` or ``?``. The label is 1 for ``?``; the final mark is removed, so the classifier must
read the words (``do you like it`` against ``you like it``). An input is ``<cls> words <sep>``,
segment 0, cut to ``num_steps`` tokens. ``--limit N`` is the label budget: N training sentences
drawn at random from the seed. The vocabulary is the pretrained model's, or, from scratch, that of
all training sentences (unlabelled text costs no label budget). Metrics: cross-entropy ``loss`` and ``accuracy``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from divekit import seeding
from divekit.data.vocab import Vocab
from divekit.errors import DataError
from divekit.tasks import register_task
from divekit.tasks.masked_lm import CLS, PAD, SEP, ExampleBatches, distinct, make_vocab
from divekit.train.config import TrainConfig
from divekit.train.distributed import DistInfo
from divekit.train.task import StepOutput

TASK_NAME = "eng-question"
FINAL_MARKS = (".", "!", "?")
Labelled = list[tuple[list[str], int]]
Batch = tuple[Tensor, Tensor, Tensor, Tensor]  # tokens (B, T), segments (B, T), valid_lens (B,), labels (B,)


def label_sentences(sentences: Sequence[Sequence[str]]) -> Labelled:
    """``(words without the final mark, 1 if it was "?" else 0)`` for each sentence ending in . ! or ?."""
    return [(list(s[:-1]), int(s[-1] == "?")) for s in sentences if len(s) > 1 and s[-1] in FINAL_MARKS]


def encode(labelled: Labelled, vocab: Vocab, num_steps: int) -> Batch:
    """``<cls> words <sep>`` padded to ``num_steps``: tokens, segments (all 0), valid lengths, labels."""
    if not labelled:
        raise DataError("no labelled sentences to encode")
    tokens = torch.full((len(labelled), num_steps), vocab[PAD], dtype=torch.long)
    valid = torch.zeros(len(labelled), dtype=torch.long)
    for i, (words, _) in enumerate(labelled):
        ids = vocab[[CLS, *words[: num_steps - 2], SEP]]
        tokens[i, : len(ids)] = torch.tensor(ids)
        valid[i] = len(ids)
    labels = torch.tensor([label for _, label in labelled])
    return tokens, torch.zeros_like(tokens), valid, labels


class QuestionTask:
    """Cross-entropy on question/statement labels; loss and accuracy on held-out sentences.

    Args:
        sentences: ``{"train", "val", "test"}`` token lists with their final marks (default: fra-eng English).
        vocab: the pretrained model's vocabulary (None: the ``vocab_size`` most frequent words of all
            training sentences, labelled or not).
        limit: the label budget, training sentences drawn at random from ``seed`` (None: all).
    """

    name = TASK_NAME
    monitor = "val_accuracy"
    monitor_mode = "max"

    def __init__(self, *, num_steps: int, batch_size: int, vocab_size: int, vocab: Vocab | None = None,
                 seed: int = 0, limit: int | None = None,
                 sentences: dict[str, list[list[str]]] | None = None) -> None:
        sentences = sentences if sentences is not None else real_sentences()
        labelled = {split: label_sentences(s) for split, s in sentences.items()}
        # From all training sentences, labelled or not: the model's shape must not depend on the budget.
        self.vocab = vocab if vocab is not None else make_vocab([w for w, _ in labelled["train"]], vocab_size)
        if limit is not None and limit < len(labelled["train"]):
            keep = sorted(random.Random(seeding.stream_seed(seed, "data")).sample(range(len(labelled["train"])), limit))
            labelled["train"] = [labelled["train"][i] for i in keep]
        self.num_steps, self.batch_size, self.seed, self.limit = num_steps, batch_size, seed, limit
        self.arrays = {split: encode(pairs, self.vocab, num_steps) for split, pairs in labelled.items()}

    def train_loader(self, dist: DistInfo) -> ExampleBatches:
        return ExampleBatches(self.arrays["train"], self.batch_size, seed=self.seed, rank=dist.rank,
                              world_size=dist.world_size)

    def start_epoch(self, model: nn.Module, epoch: int) -> None:
        pass

    def step(self, model: nn.Module, batch: Batch) -> StepOutput:
        tokens, segments, valid, labels = batch
        logits = model(tokens, segments, valid)  # (B, C)
        loss = F.cross_entropy(logits.float(), labels)
        return StepOutput(loss=loss, count=labels.numel(), correct=(logits.argmax(-1) == labels).sum().item())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        total, correct, count = 0.0, 0, 0
        for batch in ExampleBatches(self.arrays[split], 512, shuffle=False):
            tokens, segments, valid, labels = (t.to(device) for t in batch)
            logits = model(tokens, segments, valid).float()
            total += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += int((logits.argmax(-1) == labels).sum())
            count += labels.numel()
        model.train(was_training)
        return {"loss": total / count, "accuracy": correct / count}

    def state(self) -> dict[str, Any]:
        return {"vocab": self.vocab.to_state(), "num_steps": self.num_steps, "limit": self.limit}

    def example_input(self, batch_size: int = 2) -> tuple[Tensor, Tensor, Tensor]:
        tokens, segments, valid, _ = (t[:batch_size] for t in self.arrays["val"])
        return tokens, segments, valid


def real_sentences() -> dict[str, list[list[str]]]:
    """The distinct English sources of the fra-eng train / val / test splits."""
    from divekit.tasks.translation import real_splits

    return {split: distinct([src for src, _ in pairs])
            for split, pairs in zip(("train", "val", "test"), real_splits())}


def pretrained_vocab(path: str) -> Vocab:
    """The vocabulary stored in a ``divekit train bert`` checkpoint."""
    from divekit.train.checkpoint import load_checkpoint

    return Vocab.from_state(load_checkpoint(path, expect_model="bert")["task_state"]["vocab"])


@register_task(TASK_NAME)
def make(model_config: Any, train_config: TrainConfig, *, limit: int | None = None,
         state: dict[str, Any] | None = None) -> QuestionTask:
    # The sentences must be read with the words the encoder was pretrained on: those this run's own
    # checkpoint stored when there is one, so that the pretraining file is needed only to start.
    if state is not None:
        vocab = Vocab.from_state(state["vocab"])
    else:
        vocab = pretrained_vocab(model_config.pretrained) if model_config.pretrained else None
    return QuestionTask(num_steps=model_config.num_steps, batch_size=train_config.batch_size,
                        vocab_size=model_config.vocab_size, vocab=vocab, seed=train_config.seed, limit=limit)
