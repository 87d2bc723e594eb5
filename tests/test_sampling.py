"""Temperature and top-k sampling, greedy at temperature 0, and the ``divekit sample`` command."""

from __future__ import annotations

import argparse

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from divekit.commands.sample import encode_prefix
from divekit.data.vocab import Vocab
from divekit.decode.sampling import generate, next_token
from divekit.errors import DivekitError
from divekit.models.char_lm import CharLM, CharLMConfig


@given(b=st.integers(1, 5), v=st.integers(2, 30), seed=st.integers(0, 1000))
@settings(max_examples=30, deadline=None)
def test_temperature_zero_is_argmax(b, v, seed):
    logits = torch.randn(b, v, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(next_token(logits, temperature=0.0), logits.argmax(-1))


@given(k=st.integers(1, 6), seed=st.integers(0, 1000))
@settings(max_examples=25, deadline=None)
def test_top_k_only_draws_among_the_k_largest(k, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 10, generator=g)
    allowed = logits.topk(k, -1).indices
    for _ in range(10):
        tok = next_token(logits, temperature=1.0, top_k=k, generator=g)
        assert all(t in allowed[i] for i, t in enumerate(tok.tolist()))


def test_sampling_frequencies_follow_the_tempered_softmax():
    logits = torch.tensor([[0.0, 1.0, 2.0]]).expand(20000, 3)
    tok = next_token(logits, temperature=2.0, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(tok, minlength=3).double() / tok.numel()
    assert torch.allclose(freq, torch.softmax(torch.tensor([0.0, 0.5, 1.0]).double(), 0), atol=0.015)


def _tiny_model(**kw) -> CharLM:
    torch.manual_seed(0)
    return CharLM(CharLMConfig(vocab_size=6, hidden=8, embedding=4, **kw))


def test_greedy_generation_is_deterministic_and_matches_step_by_step_argmax():
    model = _tiny_model(kind="lstm")
    a = generate(model, [1, 2, 3], 12, temperature=0.0)
    assert a == generate(model, [1, 2, 3], 12, temperature=0.0)
    # Independent reference: rerun the whole sequence each step, no carried state.
    seq = [1, 2, 3]
    for _ in range(12):
        logits, _ = model(torch.tensor([seq]))
        seq.append(int(logits[0, -1].argmax()))
    assert a == seq[3:]


def test_bidirectional_model_refuses_to_generate():
    with pytest.raises(DivekitError, match="bidirectional"):
        generate(_tiny_model(bidirectional=True), [1], 3)


def test_prefix_with_unknown_characters_is_refused_naming_them():
    vocab = Vocab(list("the time traveller"))
    assert vocab.to_tokens(encode_prefix("time", vocab)) == list("time")
    with pytest.raises(DivekitError, match=r"'!', 'T'"):
        encode_prefix("Time!", vocab)
    with pytest.raises(DivekitError, match="empty"):
        encode_prefix("", vocab)


def test_sample_command_round_trips_a_checkpoint(tmp_path, capsys):
    from divekit.commands.sample import run
    from divekit.pipeline import config_to_dict
    from divekit.train.checkpoint import save_checkpoint

    vocab = Vocab(list("abc "))
    cfg = CharLMConfig(kind="gru", vocab_size=len(vocab), hidden=8, embedding=4)
    model = CharLM(cfg)
    ckpt = {"model": "gru-lm", "model_config": config_to_dict(cfg), "task": "timemachine",
            "task_state": {"vocab": vocab.to_state()}, "model_state": model.state_dict()}
    path = save_checkpoint(tmp_path / "m.pt", ckpt)
    args = argparse.Namespace(model="gru-lm", checkpoint=path, prefix="ab", length=5, temperature=0.0,
                              top_k=None, seed=0)
    assert run(args) == 0
    expected = "ab" + "".join(vocab.to_tokens(generate(model, vocab[list("ab")], 5, temperature=0.0,
                                                          never=[vocab.unk])))
    assert capsys.readouterr().out.strip() == expected
    with pytest.raises(DivekitError, match="not of 'lstm-lm'"):
        run(argparse.Namespace(**{**vars(args), "model": "lstm-lm"}))


def test_unk_is_never_sampled_even_when_the_model_prefers_it():
    model = _tiny_model()
    with torch.no_grad():
        model.head.bias.fill_(0.0)
        model.head.bias[0] = 50.0  # index 0 is <unk>: the model's favourite by far
    assert 0 in generate(model, [1, 2], 20, temperature=1.0, generator=torch.Generator().manual_seed(0))
    drawn = generate(model, [1, 2], 200, temperature=1.0, generator=torch.Generator().manual_seed(0), never=[0])
    assert 0 not in drawn and len(drawn) == 200


def test_sample_command_lower_cases_and_bounds_its_inputs(tmp_path, capsys):
    from divekit.cli import main
    from divekit.pipeline import config_to_dict
    from divekit.train.checkpoint import save_checkpoint

    vocab = Vocab(list("abc "))
    cfg = CharLMConfig(kind="gru", vocab_size=len(vocab), hidden=8, embedding=4)
    ckpt = {"model": "gru-lm", "model_config": config_to_dict(cfg), "task": "timemachine",
            "task_state": {"vocab": vocab.to_state()}, "model_state": CharLM(cfg).state_dict()}
    path = str(save_checkpoint(tmp_path / "m.pt", ckpt))
    assert main(["sample", "--checkpoint", path, "--prefix", "AB", "--length", "4"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("ab") and len(out.strip()) == 6 and "lower-cased" in err
    for flags in (["--temperature", "nan"], ["--temperature", "inf"], ["--temperature", "-1"],
                  ["--length", "1000001"], ["--length", "-3"]):
        with pytest.raises(SystemExit) as stopped:
            main(["sample", "--checkpoint", path, *flags])
        assert stopped.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
