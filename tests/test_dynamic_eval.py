"""Dynamic evaluation: static when the step size is 0, causal, and it adapts to the text it reads."""

from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn.functional as F
from conftest import data_dir_with

from divekit.errors import ShapeError
from divekit.models.char_lm import CharLM, CharLMConfig
from divekit.train.dynamic_eval import DynamicEvalConfig, dynamic_evaluate, ensemble

V = 6


def _model(seed: int = 0) -> CharLM:
    torch.manual_seed(seed)
    return CharLM(CharLMConfig(kind="lstm", impl="torch", vocab_size=V, hidden=12, embedding=4, dropout=0.3)).double()


def _text(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(V, (n,), generator=torch.Generator().manual_seed(seed))


def test_zero_step_size_is_static_evaluation_of_one_stream():
    model, text = _model(), _text(50)
    result = dynamic_evaluate(model, text, DynamicEvalConfig(lr=0.0, segment=7), per_token=True)
    model.eval()
    logits, _ = model(text[None, :-1])  # the whole text in one window: no segment boundaries at all
    expected = F.cross_entropy(logits[0], text[1:], reduction="none")
    torch.testing.assert_close(result.token_nll, expected, rtol=1e-9, atol=1e-9)
    assert result.count == 49
    assert result.nll_sum == pytest.approx(expected.sum().item(), rel=1e-9)


def test_no_token_is_scored_by_weights_that_learned_from_it():
    """Changing token p changes nothing scored before it, though every segment updates the weights."""
    text = _text(60)
    config = DynamicEvalConfig(lr=0.05, segment=5, decay=0.1)
    base = dynamic_evaluate(_model(), text, config, per_token=True).token_nll
    for p in (23, 25, 59):  # inside a segment, first token of one, the last token
        changed = text.clone()
        changed[p] = (changed[p] + 1) % V
        nll = dynamic_evaluate(_model(), changed, config, per_token=True).token_nll
        # entry i scores token i + 1: entries before p - 1 never saw token p
        torch.testing.assert_close(nll[: p - 1], base[: p - 1], rtol=0, atol=0)
        assert not torch.equal(nll[p - 1:], base[p - 1:])


def test_adapts_to_a_repetitive_text_and_leaves_the_model_unchanged():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    text = torch.tensor([0, 1, 2, 3, 4, 5, 1, 3] * 40)  # a period-8 pattern an untrained model cannot know
    static = dynamic_evaluate(model, text, DynamicEvalConfig(lr=0.0, segment=16))
    dynamic = dynamic_evaluate(model, text, DynamicEvalConfig(lr=3e-2, segment=16))
    assert dynamic.loss < 0.5 * static.loss
    assert set(dynamic.metrics()) == {"loss", "perplexity", "bits_per_char", "tokens_per_s"}
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_ensemble_mixes_probabilities_token_by_token():
    text = _text(40)
    a = dynamic_evaluate(_model(0), text, DynamicEvalConfig(lr=0.0), per_token=True)
    b = dynamic_evaluate(_model(1), text, DynamicEvalConfig(lr=0.0), per_token=True)
    mixed = ensemble([a, b])
    expected = -torch.log((torch.exp(-a.token_nll) + torch.exp(-b.token_nll)) / 2)
    torch.testing.assert_close(mixed.token_nll, expected.double())
    assert mixed.loss <= (a.loss + b.loss) / 2  # a mixture never does worse than its members' mean
    torch.testing.assert_close(ensemble([a, a]).token_nll, a.token_nll.double())
    with pytest.raises(ValueError, match="per_token"):
        ensemble([dynamic_evaluate(_model(), text, DynamicEvalConfig(lr=0.0))])
    weighted = ensemble([a, b], [0.25, 0.75])
    expected = -torch.log(0.25 * torch.exp(-a.token_nll.double()) + 0.75 * torch.exp(-b.token_nll.double()))
    torch.testing.assert_close(weighted.token_nll, expected)
    torch.testing.assert_close(ensemble([a, b], [0.0, 1.0]).token_nll, b.token_nll.double())  # a weight of 0 drops
    for bad in ([0.5], [0.7, 0.7], [-0.5, 1.5]):
        with pytest.raises(ValueError, match="weights"):
            ensemble([a, b], bad)


def test_bad_input_is_refused():
    with pytest.raises(ShapeError, match="1-D text"):
        dynamic_evaluate(_model(), torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ShapeError, match="at least 2"):
        dynamic_evaluate(_model(), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="segment"):
        DynamicEvalConfig(segment=0)


def _lm_checkpoint(path, vocab, name: str = "gru-lm"):
    from divekit.pipeline import config_to_dict
    from divekit.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    cfg = CharLMConfig(kind="gru", vocab_size=len(vocab), hidden=8, embedding=4)
    model = CharLM(cfg)
    ckpt = {"model": name, "model_config": config_to_dict(cfg), "task": "timemachine", "epoch": 1,
            "task_state": {"vocab": vocab.to_state(), "num_steps": 35, "token": "char"},
            "model_state": model.state_dict()}
    return model, save_checkpoint(path, ckpt)


@pytest.mark.skipif(data_dir_with("timemachine.txt") is None, reason="The Time Machine not found")
def test_lm_evaluate_command_prints_static_and_dynamic_perplexity(tmp_path, capsys, one_thread):
    from divekit.commands.lm_evaluate import run
    from divekit.data.timemachine import load_lm_data
    from divekit.data.vocab import Vocab
    from divekit.errors import DivekitError

    data = load_lm_data("char")
    model, path = _lm_checkpoint(tmp_path / "m.pt", data.vocab)
    args = argparse.Namespace(model="gru-lm", checkpoint=[path], split="val", dynamic_lr=[1e-3], segment=64,
                              decay=0.0, threads=None)
    assert run(args) == 0
    out = capsys.readouterr().out
    one_stream = dynamic_evaluate(model, data.val, DynamicEvalConfig(lr=0.0)).metrics()["perplexity"]
    assert f"static, one stream     perplexity {one_stream:.4f}" in out
    assert "static, 16 streams" in out and "dynamic, lr 0.001" in out
    with pytest.raises(DivekitError, match="segment"):
        run(argparse.Namespace(**{**vars(args), "segment": 0}))
    _, other = _lm_checkpoint(tmp_path / "other.pt", Vocab(list("abc ")))
    with pytest.raises(DivekitError, match="another vocabulary"):
        run(argparse.Namespace(**{**vars(args), "checkpoint": [other]}))
    assert run(argparse.Namespace(**{**vars(args), "checkpoint": [path, path], "dynamic_lr": []})) == 0
    out = capsys.readouterr().out  # an ensemble of a model with itself is that model
    assert out.count(f"static, one stream     perplexity {one_stream:.4f}") == 3 and "ensemble of the 2" in out
