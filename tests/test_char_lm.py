"""Character language models and the ``timemachine`` task: shapes, scratch == torch, TBPTT, evaluation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from divekit.data.timemachine import build_lm_data
from divekit.errors import CheckpointError, ShapeError
from divekit.models.char_lm import CharLM, CharLMConfig
from divekit.registry import MODELS, list_models
from divekit.tasks.language_model import LanguageModelTask, load_language_model
from divekit.train.config import TrainConfig
from divekit.train.distributed import DistInfo
from divekit.train.trainer import Trainer
from divekit.registry import config_to_dict

TEXT = ("the time traveller for so it will be convenient to speak of him was expounding a recondite "
        "matter to us his grey eyes shone and twinkled ") * 30

# The recurrent models (gpt-lm shares the task, its own tests are in test_gpt.py).
LM_MODELS = [n for n in list_models()
             if MODELS[n].task == "timemachine" and issubclass(MODELS[n].config_cls, CharLMConfig)]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only adds hand-offs


def _data():
    return build_lm_data(TEXT, "char")


def test_registered_language_models():
    assert {"rnn-lm", "gru-lm", "lstm-lm", "deep-lstm-lm"} <= set(LM_MODELS)
    assert MODELS["deep-lstm-lm"].make_config().layers >= 2


@pytest.mark.parametrize("name", LM_MODELS)
def test_registry_smoke(name):
    torch.manual_seed(0)
    spec = MODELS[name]
    model = spec.build(spec.make_config({"hidden": 16, "vocab_size": 11}))
    x = torch.randint(11, (3, 7))
    logits, state = model(x)
    assert logits.shape == (3, 7, 11) and torch.isfinite(logits).all()
    F.cross_entropy(logits.reshape(-1, 11), x.reshape(-1)).backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ShapeError, match=r"\(B, T\)"):
        model(torch.zeros(7, dtype=torch.long))


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("embedding", [0, 5])
def test_scratch_and_torch_layers_compute_the_same_model(kind, embedding):
    cfg = dict(kind=kind, vocab_size=9, hidden=12, layers=2, embedding=embedding)
    torch.manual_seed(1)
    scratch = CharLM(CharLMConfig(impl="scratch", **cfg)).double()
    concise = CharLM(CharLMConfig(impl="torch", **cfg)).double()
    concise.load_state_dict(scratch.state_dict())
    x = torch.randint(9, (4, 6))
    a, sa = scratch(x)
    b, sb = concise(x)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    a.sum().backward()
    b.sum().backward()
    for (name, p), q in zip(scratch.named_parameters(), concise.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-9, msg=name)


def test_weight_drop_masks_recurrent_weights_in_training_only():
    cfg = dict(kind="lstm", vocab_size=9, hidden=12, layers=2, embedding=4, weight_drop=0.5)
    torch.manual_seed(1)
    scratch = CharLM(CharLMConfig(impl="scratch", **cfg)).double()
    concise = CharLM(CharLMConfig(impl="torch", **cfg)).double()
    plain = CharLM(CharLMConfig(impl="torch", **{**cfg, "weight_drop": 0.0})).double()
    concise.load_state_dict(scratch.state_dict())
    plain.load_state_dict(scratch.state_dict())
    x = torch.randint(9, (4, 6))
    outputs = []
    for model in (scratch, concise):  # the same seed draws the same masks for both implementations
        torch.manual_seed(7)
        logits, _ = model(x)
        logits.sum().backward()
        outputs.append(logits)
        grad = model.rnn.weight_hh_l1.grad
        assert 0.2 < (grad == 0).double().mean() < 0.8  # dropped weights take no gradient ...
        assert (model.rnn.weight_ih_l1.grad != 0).all()  # ... input weights are never dropped
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-10, atol=1e-10)
    assert not torch.allclose(outputs[1], plain(x)[0])
    concise.eval(), plain.eval()
    torch.testing.assert_close(concise(x)[0], plain(x)[0], rtol=0, atol=0)  # evaluation uses all weights


def test_locked_dropout_shares_one_mask_across_steps():
    model = CharLM(CharLMConfig(kind="gru", vocab_size=9, hidden=8, embedding=4, dropout=0.5, locked_dropout=True))
    out = model._dropout(torch.ones(3, 20, 16))
    assert torch.equal(out, out[:, :1].expand_as(out))  # every step repeats step 0's mask
    assert set(out.unique().tolist()) == {0.0, 2.0}
    model.eval()
    assert torch.equal(model._dropout(torch.ones(3, 20, 16)), torch.ones(3, 20, 16))
    with pytest.raises(ValueError, match="weight_drop"):
        CharLMConfig(weight_drop=1.0)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_carried_state_continues_the_text(kind):
    """Two windows with the state carried give the logits of one window twice as long."""
    torch.manual_seed(0)
    model = CharLM(CharLMConfig(kind=kind, vocab_size=8, hidden=10, embedding=4)).double()
    x = torch.randint(8, (2, 10))
    whole, _ = model(x)
    first, state = model(x[:, :5])
    second, _ = model(x[:, 5:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)


def test_task_carries_detached_state_only_for_sequential_batches():
    torch.manual_seed(0)
    data = _data()
    model = CharLM(CharLMConfig(kind="lstm", vocab_size=len(data.vocab), hidden=8, embedding=4))
    seq = LanguageModelTask(batch_size=4, num_steps=6, sequential=True, data=data)
    batches = list(seq.train_loader(DistInfo()))
    seq.start_epoch(model, 0)
    seq.step(model, batches[0])
    assert seq._state is not None and all(not s.requires_grad for s in seq._state)
    out = seq.step(model, batches[1])
    # Reference: the same two windows through the model in one go.
    logits, _ = model(torch.cat([batches[0][0], batches[1][0]], 1))
    ref = F.cross_entropy(logits[:, 6:].reshape(-1, logits.shape[-1]), batches[1][1].reshape(-1))
    torch.testing.assert_close(out.loss, ref)
    assert out.count == 24
    seq.start_epoch(model, 1)
    assert seq._state is None
    rnd = LanguageModelTask(batch_size=4, num_steps=6, sequential=False, data=data)
    rnd.step(model, next(iter(rnd.train_loader(DistInfo()))))
    assert rnd._state is None


class _Uniform(nn.Module):
    """Equal logits everywhere: perplexity must equal the vocabulary size."""

    def __init__(self, v: int) -> None:
        super().__init__()
        self.v = v
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x, state=None):
        return self.dummy.expand(*x.shape, self.v), state


def test_evaluation_perplexity_matches_a_single_stream_reference():
    data = _data()
    v = len(data.vocab)
    task = LanguageModelTask(batch_size=4, num_steps=6, data=data, eval_streams=5, eval_steps=7)
    uniform = task.evaluate(_Uniform(v), "test")
    assert uniform["perplexity"] == pytest.approx(v) and uniform["bits_per_char"] == pytest.approx(math.log2(v))
    torch.manual_seed(0)
    model = CharLM(CharLMConfig(kind="gru", vocab_size=v, hidden=8, embedding=4)).eval()
    got = task.evaluate(model, "val")
    # Reference: each of the 5 contiguous streams read in one pass, targets pooled.
    nll, n = 0.0, 0
    with torch.no_grad():
        for stream in data.val.tensor_split(5):
            logits, _ = model(stream[None, :-1])
            nll += F.cross_entropy(logits[0], stream[1:], reduction="sum").item()
            n += stream.numel() - 1
    assert got["perplexity"] == pytest.approx(math.exp(nll / n), rel=1e-5)


def test_training_lowers_perplexity_and_checkpoint_round_trips_with_vocab(tmp_path):
    data = _data()
    cfg = MODELS["gru-lm"].make_config({"hidden": 32, "vocab_size": len(data.vocab), "num_steps": 10})
    torch.manual_seed(0)
    model = MODELS["gru-lm"].build(cfg)
    task = LanguageModelTask(batch_size=8, num_steps=10, data=data)
    before = task.evaluate(model, "val")["perplexity"]
    tc = TrainConfig(epochs=3, batch_size=8, lr=1e-2, optimizer="adam", grad_clip=1.0)
    result = Trainer(model, task, tc, model_name="gru-lm", model_config=config_to_dict(cfg), run_dir=tmp_path,
                     progress=False, log=lambda *a: None).fit()
    after = result.history[-1]["val_perplexity"]
    assert after < before / 2  # the repeated sentence is easy to learn
    loaded, vocab, ckpt = load_language_model(result.checkpoint, expect_model="gru-lm")
    assert vocab == data.vocab
    assert task.evaluate(loaded, "val")["perplexity"] == pytest.approx(after, rel=1e-6)
    with pytest.raises(CheckpointError, match="not of 'lstm-lm'"):
        load_language_model(result.checkpoint, expect_model="lstm-lm")
