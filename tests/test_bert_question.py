"""Fine-tuning BERT on is-this-a-question: labels, budgets, pretrained weights carried over, learning."""

from __future__ import annotations

import random

import pytest
import torch

from divekit.errors import CheckpointError, DivekitError
from divekit.models.bert import BERT, BERTConfig, BERTQuestionConfig, build_question
from divekit.registry import config_to_dict, get_model
from divekit.tasks.masked_lm import CLS, PAD, SEP, make_vocab
from divekit.tasks.question import QuestionTask, encode, label_sentences, pretrained_vocab
from divekit.train.checkpoint import save_checkpoint
from divekit.train.config import TrainConfig
from divekit.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only adds hand-offs

SIZES = dict(vocab_size=26, max_len=16, d_model=16, num_heads=2, layers=1, ffn_hidden=32, dropout=0.0)
VERBS = "like want see know have need eat read".split()
THINGS = "it this that them tea books bread music".split()


def synthetic(n: int, seed: int) -> list[list[str]]:
    """Questions start with "do" or "can"; statements with "i" or "we". Final marks included."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        question = rng.random() < 0.5
        start = rng.choice(["do you", "can you"] if question else ["i", "we"]).split()
        out.append([*start, rng.choice(VERBS), rng.choice(THINGS), "?" if question else rng.choice(".!")])
    return out


def sentences() -> dict[str, list[list[str]]]:
    return {"train": synthetic(400, 0), "val": synthetic(100, 1), "test": synthetic(100, 2)}


def test_labels_come_from_the_final_mark_which_is_removed():
    got = label_sentences([["is", "he", "here", "?"], ["go", "."], ["run", "!"], ["no", "mark"], ["?"]])
    assert got == [(["is", "he", "here"], 1), (["go"], 0), (["run"], 0)]
    vocab = make_vocab([["is", "he", "here"]] * 2, 8)
    tokens, segments, valid, labels = encode(got[:1], vocab, 4)  # cut to fit <cls> .. <sep>
    assert vocab.to_tokens(tokens[0]) == [CLS, "is", "he", SEP] and valid.tolist() == [4]
    assert labels.tolist() == [1] and not segments.any()
    tokens, _, valid, _ = encode(got[1:2], vocab, 6)
    assert vocab.to_tokens(tokens[0, 3:]) == [PAD] * 3 and valid.tolist() == [3]


def test_the_label_budget_draws_sentences_and_keeps_the_vocabulary():
    full = QuestionTask(num_steps=8, batch_size=16, vocab_size=20, sentences=sentences())
    budget = QuestionTask(num_steps=8, batch_size=16, vocab_size=20, limit=50, sentences=sentences())
    assert full.arrays["train"][0].shape[0] == 400 and budget.arrays["train"][0].shape[0] == 50
    assert budget.vocab.idx_to_token == full.vocab.idx_to_token
    assert torch.equal(budget.arrays["val"][3], full.arrays["val"][3])  # held-out sentences unchanged


def _pretrained(path, vocab, **sizes) -> tuple[BERT, str]:
    torch.manual_seed(1)
    config = BERTConfig(**{**SIZES, "num_steps": 8, **sizes})
    model = BERT(config)
    ckpt = {"model": "bert", "task": "masked-lm", "model_config": config_to_dict(config),
            "task_state": {"vocab": vocab.to_state()}, "model_state": model.state_dict()}
    return model, str(save_checkpoint(path, ckpt))


def test_fine_tuning_starts_from_the_pretrained_weights_and_words(tmp_path):
    task = QuestionTask(num_steps=8, batch_size=16, vocab_size=26, sentences=sentences())
    pretrained, path = _pretrained(tmp_path / "bert.pt", task.vocab)
    config = BERTQuestionConfig(**SIZES, num_steps=8, pretrained=path)
    classifier = build_question(config)
    for name, p in pretrained.state_dict().items():
        assert torch.equal(classifier.bert.state_dict()[name], p), name
    assert pretrained_vocab(path).idx_to_token == task.vocab.idx_to_token  # what the task reads sentences with
    with pytest.raises(DivekitError, match="d_model=16"):
        build_question(BERTQuestionConfig(**{**SIZES, "d_model": 32}, num_steps=8, pretrained=path))
    with pytest.raises(CheckpointError, match="does not exist"):
        build_question(BERTQuestionConfig(**SIZES, num_steps=8, pretrained=str(tmp_path / "none.pt")))


def test_a_tiny_classifier_learns_questions_from_their_words(tmp_path):
    spec = get_model("bert-question")
    assert spec.task == "eng-question"
    task = QuestionTask(num_steps=8, batch_size=16, vocab_size=26, sentences=sentences())
    torch.manual_seed(0)
    model = spec.build(spec.make_config({**SIZES, "num_steps": 8}))
    x = task.example_input(3)
    assert model(*x).shape == (3, 2)
    trainer = Trainer(model, task, TrainConfig(epochs=6, lr=3e-3, optimizer="adam", grad_clip=1.0),
                      model_name="bert-question", model_config={}, run_dir=tmp_path, progress=False,
                      log=lambda *_: None)
    trainer.fit()
    assert task.evaluate(model, "test")["accuracy"] > 0.95


def test_an_encoder_pretrained_with_nsp_fine_tunes_without_its_head(tmp_path):
    task = QuestionTask(num_steps=8, batch_size=16, vocab_size=26, sentences=sentences())
    pretrained, path = _pretrained(tmp_path / "bert.pt", task.vocab, nsp=True)
    classifier = build_question(BERTQuestionConfig(**SIZES, num_steps=8, pretrained=path))
    assert classifier.bert.nsp_head is None
    assert torch.equal(classifier.bert.pooler[0].weight, pretrained.pooler[0].weight)
    with pytest.raises(DivekitError, match="pretraining option"):
        build_question(BERTQuestionConfig(**SIZES, num_steps=8, nsp=True))
