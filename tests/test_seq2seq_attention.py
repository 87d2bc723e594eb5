"""Seq2seq with Bahdanau attention: a by-hand reference, stepwise decoding, padding, search, training."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import assert_learns_one_batch
from divekit.decode.beam import beam_search, length_normalised
from divekit.decode.greedy import greedy_search
from divekit.errors import DivekitError, ShapeError
from divekit.models.seq2seq_attention import AttentionSeq2SeqConfig, build_attention_seq2seq
from divekit.registry import create_model, get_model

SETTINGS = settings(max_examples=25, deadline=None)
SRC_V, TGT_V, BOS, EOS = 11, 13, 2, 3


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only adds hand-offs


def tiny(seed: int = 0, layers: int = 2, impl: str = "torch", tgt_vocab: int = TGT_V) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = AttentionSeq2SeqConfig(src_vocab_size=SRC_V, tgt_vocab_size=tgt_vocab, embed_size=6, hidden_size=8,
                                    num_layers=layers, dropout=0.0, num_steps=8, rnn_impl=impl)
    return build_attention_seq2seq(config).double().eval()


def batch(seed: int, b: int = 3, s: int = 6, t: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, SRC_V, (b, s), generator=g)
    src_len = torch.randint(1, s + 1, (b,), generator=g)
    return src, src_len, torch.randint(0, TGT_V, (b, t), generator=g)


def gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    """One GRU step written from the equations (gate order r, z, n as in torch's weight layout)."""
    r_i, z_i, n_i = (x @ w_ih.T + b_ih).chunk(3, dim=-1)
    r_h, z_h, n_h = (h @ w_hh.T + b_hh).chunk(3, dim=-1)
    r, z = torch.sigmoid(r_i + r_h), torch.sigmoid(z_i + z_h)
    n = torch.tanh(n_i + r * n_h)
    return (1 - z) * n + z * h


def reference_logits(model, src, src_len, dec_input) -> torch.Tensor:
    """The Bahdanau decoder by hand, one sentence and one step at a time, from the model's parameters."""
    enc_out, enc_state = model.encoder(src, src_len)  # the encoder is the plain seq2seq's, tested there
    dec = model.decoder
    att, rnn = dec.attention, dec.rnn
    rows = []
    for b in range(src.shape[0]):
        n = int(src_len[b])
        keys = enc_out[b, :n]  # (n, H): only the real source positions exist for this sentence
        h = [enc_state[layer, b] for layer in range(enc_state.shape[0])]
        out = []
        for token in dec_input[b].tolist():
            scores = torch.tanh(keys @ att.W_k.weight.T + h[-1] @ att.W_q.weight.T) @ att.w_v.weight[0]  # (n,)
            context = torch.softmax(scores, dim=0) @ keys  # (H,)
            x = torch.cat((dec.embedding.weight[token], context))
            for layer in range(len(h)):
                p = {name: getattr(rnn, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
                h[layer] = gru_cell(x, h[layer], p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"])
                x = h[layer]
            out.append(dec.out(x))
        rows.append(torch.stack(out))
    return torch.stack(rows)  # (B, T, V)


@SETTINGS
@given(st.integers(0, 10_000), st.sampled_from([1, 2]))
def test_teacher_forced_logits_equal_the_equations_by_hand(seed, layers):
    model = tiny(seed, layers)
    src, src_len, dec_input = batch(seed)
    with torch.no_grad():
        assert torch.allclose(model(src, src_len, dec_input), reference_logits(model, src, src_len, dec_input),
                              atol=1e-10)


@SETTINGS
@given(st.integers(0, 10_000))
def test_stepwise_decoding_equals_teacher_forcing_and_reorders(seed):
    model = tiny(seed)
    src, src_len, dec_input = batch(seed, b=4)
    index = torch.tensor([3, 3, 0, 1])
    with torch.no_grad():
        full = F.log_softmax(model(src, src_len, dec_input), dim=-1)
        state, rows = model.init_state(src, src_len), []
        for t in range(dec_input.shape[1]):
            log_probs, state = model.step(dec_input[:, t], state)
            rows.append(log_probs)
        assert torch.allclose(torch.stack(rows, dim=1), full, atol=1e-10)
        moved = model.reorder_state(model.init_state(src, src_len), index)
        log_probs, _ = model.step(dec_input[index, 0], moved)
        assert torch.allclose(log_probs, full[index, 0], atol=1e-10)


@SETTINGS
@given(st.integers(0, 10_000))
def test_attention_ignores_source_padding(seed):
    model = tiny(seed)
    src, src_len, dec_input = batch(seed)
    pad = torch.arange(src.shape[1]) >= src_len.unsqueeze(1)  # (B, S)
    noisy = src.clone()
    noisy[pad] = torch.randint(0, SRC_V, (int(pad.sum()),))
    with torch.no_grad():
        assert torch.allclose(model(noisy, src_len, dec_input), model(src, src_len, dec_input), atol=1e-12)
    weights = model.attention_weights(src, src_len, dec_input)  # (B, T, S)
    assert weights.shape == (3, 5, 6)
    assert torch.allclose(weights.sum(-1), torch.ones(3, 5, dtype=torch.float64))
    assert (weights.masked_select(pad.unsqueeze(1).expand_as(weights)) == 0).all()


def test_scratch_and_torch_grus_give_the_same_model():
    torch_model, scratch = tiny(5, impl="torch"), tiny(6, impl="scratch")
    scratch.load_state_dict(torch_model.state_dict())
    src, src_len, dec_input = batch(5)
    with torch.no_grad():
        assert torch.allclose(scratch(src, src_len, dec_input), torch_model(src, src_len, dec_input), atol=1e-10)


def test_shapes_errors_and_registry():
    model = tiny(0)
    src, src_len, dec_input = batch(0)
    assert model(src, src_len, dec_input).shape == (3, 5, TGT_V)
    assert model(src, src_len, dec_input, torch.tensor([5, 1, 2])).shape == (8, TGT_V)
    with pytest.raises(ShapeError, match=r"\(B, T\)"):
        model(src, src_len, dec_input[:2])
    with pytest.raises(ShapeError, match=r"\[1, S=6\]"):
        model(src, torch.tensor([0, 2, 3]), dec_input)
    with pytest.raises(DivekitError, match="rnn_impl"):
        AttentionSeq2SeqConfig(rnn_impl="cuda")
    spec = get_model("seq2seq-attention")
    assert spec.task == "fra-eng" and spec.chapter == "attention"
    small = create_model("seq2seq-attention", src_vocab_size=20, tgt_vocab_size=30, embed_size=4, hidden_size=6,
                         num_layers=1)
    gru = lambda i, h: 3 * h * (i + h) + 6 * h  # noqa: E731 - weights and both biases of one GRU layer
    expected = 20 * 4 + gru(4, 6) + (2 * 6 * 6 + 6) + 30 * 4 + gru(4 + 6, 6) + (6 + 1) * 30
    assert sum(p.numel() for p in small.parameters()) == expected


# --- search -------------------------------------------------------------------------------------


def all_outputs(vocab: int, max_len: int) -> list[list[int]]:
    words = [v for v in range(vocab) if v != EOS]
    outs = [list(body) + [EOS] for n in range(max_len) for body in itertools.product(words, repeat=n)]
    return outs + [list(body) for body in itertools.product(words, repeat=max_len)]


def four_word_model(seed: int) -> torch.nn.Module:
    model = tiny(seed, tgt_vocab=5)
    model.decoder.out = torch.nn.Linear(8, 4).double()
    torch.nn.init.normal_(model.decoder.out.weight, std=1.5)
    return model


@SETTINGS
@given(st.integers(0, 10_000), st.sampled_from([0.0, 1.0]))
def test_exhaustive_beam_finds_the_brute_force_optimum(seed, alpha):
    model, max_len = four_word_model(seed), 3
    src, src_len, _ = batch(seed, b=2)
    outputs = all_outputs(4, max_len)
    found = beam_search(model, src, src_len, bos=BOS, eos=EOS, max_len=max_len, beam_size=len(outputs), alpha=alpha)
    dec_input = torch.tensor([[BOS] + o[:-1] + [0] * (max_len - len(o)) for o in outputs])
    for b in range(2):
        with torch.no_grad():
            n = len(outputs)
            logp = F.log_softmax(model(src[b : b + 1].expand(n, -1), src_len[b : b + 1].expand(n), dec_input), -1)
        scores = [length_normalised(sum(float(logp[i, t, w]) for t, w in enumerate(o)), len(o), alpha)
                  for i, o in enumerate(outputs)]
        assert found[b][0].score == pytest.approx(max(scores), abs=1e-9)
    greedy = greedy_search(model, src, src_len, bos=BOS, eos=EOS, max_len=5)
    narrow = beam_search(model, src, src_len, bos=BOS, eos=EOS, max_len=5, beam_size=1)
    assert [h.tokens for h in greedy] == [hyps[0].tokens for hyps in narrow]


def test_a_few_steps_reduce_the_loss_on_one_batch():
    torch.manual_seed(0)
    model = tiny(0).float().train()
    src, src_len, dec_input = batch(4, b=8)
    assert_learns_one_batch(model, src, src_len, dec_input, TGT_V, lr=2e-2)