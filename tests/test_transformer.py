"""The Transformer encoder-decoder: cached decoding equals recomputation, search, shapes, training."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from divekit.decode.beam import beam_search, length_normalised
from divekit.decode.greedy import greedy_search
from divekit.errors import DivekitError, ShapeError
from divekit.models.transformer import RecomputingDecoder, TransformerConfig, build_transformer
from divekit.nn.dropout import Dropout
from divekit.registry import create_model, get_model
from divekit.tasks.translation import Translation
from divekit.train.config import TrainConfig
from divekit.train.trainer import Trainer

from conftest import assert_learns_one_batch, reversal_pairs

SETTINGS = settings(max_examples=25, deadline=None)
SRC_V, TGT_V, BOS, EOS = 11, 13, 2, 3


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only adds hand-offs


def tiny(seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    fields = dict(src_vocab_size=SRC_V, tgt_vocab_size=TGT_V, d_model=16, num_heads=2, ffn_hidden=24,
                  num_encoder_layers=2, num_decoder_layers=2, dropout=0.0, num_steps=8, max_len=16)
    fields.update(overrides)
    return build_transformer(TransformerConfig(**fields)).double().eval()


def batch(seed: int, b: int = 3, s: int = 6, t: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, SRC_V, (b, s), generator=g)
    src_len = torch.randint(1, s + 1, (b,), generator=g)
    return src, src_len, torch.randint(0, TGT_V, (b, t), generator=g)


def stepped(model, src, src_len, dec_input) -> torch.Tensor:
    """Log-probabilities ``(B, T, V)`` from one :meth:`step` per target position."""
    state, rows = model.init_state(src, src_len), []
    for t in range(dec_input.shape[1]):
        log_probs, state = model.step(dec_input[:, t], state)
        rows.append(log_probs)
    return torch.stack(rows, dim=1)


@SETTINGS
@given(st.integers(0, 10_000), st.sampled_from(["separate", "tied"]), st.sampled_from(["sinusoidal", "learned"]),
       st.sampled_from([1, 2, 4]))
def test_incremental_decoding_equals_full_recomputation(seed, embeddings, positional, heads):
    model = tiny(seed, embeddings=embeddings, positional=positional, num_heads=heads)
    src, src_len, dec_input = batch(seed)
    with torch.no_grad():
        full = F.log_softmax(model(src, src_len, dec_input), dim=-1)  # teacher forcing, causal mask
        assert torch.allclose(stepped(model, src, src_len, dec_input), full, atol=1e-10)


def test_step_leaves_the_given_state_unchanged():
    model = tiny(1)
    src, src_len, dec_input = batch(1)
    with torch.no_grad():
        state = model.init_state(src, src_len)
        _, state = model.step(dec_input[:, 0], state)
        first, _ = model.step(dec_input[:, 1], state)
        again, _ = model.step(dec_input[:, 1], state)  # the same state a second time, as beam search may
    assert torch.equal(first, again)
    assert model.decoder.blocks[0].cached_length(state["caches"][0]) == 1


@SETTINGS
@given(st.integers(0, 10_000))
def test_reordered_state_continues_the_selected_rows(seed):
    model = tiny(seed)
    src, src_len, dec_input = batch(seed, b=4)
    index = torch.tensor([2, 0, 2, 3, 1])
    with torch.no_grad():
        state = model.init_state(src, src_len)
        _, state = model.step(dec_input[:, 0], state)
        _, state = model.step(dec_input[:, 1], state)
        moved, _ = model.step(dec_input[index, 2], model.reorder_state(state, index))
        reference = stepped(model, src[index], src_len[index], dec_input[index, :3])[:, 2]
    assert torch.allclose(moved, reference, atol=1e-10)


@SETTINGS
@given(st.integers(0, 10_000))
def test_source_padding_and_future_targets_do_not_leak(seed):
    model = tiny(seed)
    src, src_len, dec_input = batch(seed)
    noisy_src = src.clone()
    pad = torch.arange(src.shape[1]) >= src_len.unsqueeze(1)
    noisy_src[pad] = torch.randint(0, SRC_V, (int(pad.sum()),))
    cut = 2
    noisy_tgt = dec_input.clone()
    noisy_tgt[:, cut:] = torch.randint(0, TGT_V, noisy_tgt[:, cut:].shape)
    with torch.no_grad():
        logits = model(src, src_len, dec_input)
        assert torch.allclose(model(noisy_src, src_len, dec_input), logits, atol=1e-12)
        assert torch.allclose(model(src, src_len, noisy_tgt)[:, :cut], logits[:, :cut], atol=1e-12)


def test_output_shapes_and_errors():
    model = tiny(0)
    src, src_len, dec_input = batch(0, b=3, s=6, t=5)
    assert model(src, src_len, dec_input).shape == (3, 5, TGT_V)
    tgt_len = torch.tensor([5, 2, 1])
    real = model(src, src_len, dec_input, tgt_len)
    assert real.shape == (8, TGT_V)
    assert torch.allclose(real[5:7], model(src, src_len, dec_input)[1, :2])
    weights = model.cross_attention_weights(src, src_len, dec_input)
    assert len(weights) == 2 and weights[0].shape == (3, 2, 5, 6)
    keep = torch.arange(6) < src_len.view(3, 1, 1, 1)  # (B, 1, 1, S)
    assert torch.allclose(weights[1].sum(-1), torch.ones(3, 2, 5, dtype=torch.float64))
    assert (weights[1].masked_select(~keep.expand_as(weights[1])) == 0).all()
    with pytest.raises(ShapeError, match=r"\(B, S\)"):
        model(src.float(), src_len, dec_input)
    with pytest.raises(ShapeError, match=r"\(B,\)"):
        model.step(dec_input, model.init_state(src, src_len))
    with pytest.raises(ShapeError, match="max_len=16"):
        model(src, src_len, torch.zeros(3, 17, dtype=torch.long))


def test_embedding_sharing_options_share_exactly_one_matrix():
    def count(m):
        return sum(p.numel() for p in m.parameters())

    separate, tied = tiny(0, embeddings="separate"), tiny(0, embeddings="tied")
    shared = tiny(0, embeddings="shared", src_vocab_size=TGT_V)
    assert tied.decoder.out.weight is tied.decoder.embedding.weight
    assert shared.encoder.embedding is shared.decoder.embedding
    assert count(separate) - count(tied) == TGT_V * 16
    assert count(tiny(0, embeddings="separate", src_vocab_size=TGT_V)) - count(shared) == 2 * TGT_V * 16


def test_config_validation_names_the_problem():
    with pytest.raises(DivekitError, match="divisible"):
        TransformerConfig(d_model=10, num_heads=4)
    with pytest.raises(DivekitError, match="src_vocab_size == tgt_vocab_size"):
        TransformerConfig(embeddings="shared")
    with pytest.raises(DivekitError, match="max_len"):
        TransformerConfig(num_steps=40, max_len=32)
    assert get_model("transformer").task == "fra-eng"
    assert isinstance(create_model("transformer", d_model=32, num_heads=2, ffn_hidden=32, src_vocab_size=20,
                                   tgt_vocab_size=20, num_encoder_layers=1, num_decoder_layers=1),
                      torch.nn.Module)


# --- search over a tiny Transformer ------------------------------------------------------------


def all_outputs(vocab: int, max_len: int) -> list[list[int]]:
    """Every output: words then <eos> (shorter than max_len), or max_len words without <eos>."""
    words = [v for v in range(vocab) if v != EOS]
    outs = [list(body) + [EOS] for n in range(max_len) for body in itertools.product(words, repeat=n)]
    return outs + [list(body) for body in itertools.product(words, repeat=max_len)]


def sequence_log_probs(model, src, src_len, outputs: list[list[int]]) -> list[float]:
    """log p(output | src) from one teacher-forced pass over all outputs: no decoding code involved."""
    steps = max(len(o) for o in outputs)
    dec_input = torch.tensor([[BOS] + o[:-1] + [0] * (steps - len(o)) for o in outputs])
    n = len(outputs)
    with torch.no_grad():
        logp = F.log_softmax(model(src.expand(n, -1), src_len.expand(n), dec_input), dim=-1)
    return [sum(float(logp[i, t, tok]) for t, tok in enumerate(o)) for i, o in enumerate(outputs)]


def four_word_model(seed: int) -> torch.nn.Module:
    """A tiny Transformer whose output layer has 4 words, sharp enough that pruning matters."""
    model = tiny(seed, embeddings="separate", tgt_vocab_size=5)
    model.decoder.out = torch.nn.Linear(16, 4).double()
    torch.nn.init.normal_(model.decoder.out.weight, std=1.0)
    return model


@SETTINGS
@given(st.integers(0, 10_000), st.sampled_from([0.0, 0.5, 1.0]), st.sampled_from([3, 4]))
def test_exhaustive_beam_finds_the_brute_force_optimum(seed, alpha, max_len):
    model = four_word_model(seed)
    src, src_len, _ = batch(seed, b=2)
    outputs = all_outputs(4, max_len)
    found = beam_search(model, src, src_len, bos=BOS, eos=EOS, max_len=max_len, beam_size=len(outputs), alpha=alpha)
    for b in range(2):
        log_probs = sequence_log_probs(model, src[b : b + 1], src_len[b : b + 1], outputs)
        best = max(length_normalised(lp, len(o), alpha) for lp, o in zip(log_probs, outputs))
        top = found[b][0]
        assert top.score == pytest.approx(best, abs=1e-9)
        returned = list(top.tokens) + ([EOS] if top.finished else [])
        assert top.log_prob == pytest.approx(log_probs[outputs.index(returned)], abs=1e-9)


@SETTINGS
@given(st.integers(0, 10_000))
def test_beam_of_width_one_is_greedy(seed):
    model = four_word_model(seed)
    src, src_len, _ = batch(seed, b=4)
    greedy = greedy_search(model, src, src_len, bos=BOS, eos=EOS, max_len=6)
    beam = beam_search(model, src, src_len, bos=BOS, eos=EOS, max_len=6, beam_size=1)
    assert [h.tokens for h in greedy] == [hyps[0].tokens for hyps in beam]


# --- training ------------------------------------------------------------------------------------


def test_a_few_steps_reduce_the_loss_on_one_batch():
    torch.manual_seed(0)
    model = tiny(0, dropout=0.1).float().train()
    src, src_len, dec_input = batch(3, b=8, s=6, t=6)
    assert_learns_one_batch(model, src, src_len, dec_input, TGT_V, lr=1e-2, frozen=("table",))  # a buffer


def test_every_dropout_is_packed_and_changes_nothing_in_evaluation():
    packed, plain = tiny(0, dropout=0.1), tiny(0, dropout=0.1, packed_dropout=False)
    drops = [m for m in packed.modules() if isinstance(m, Dropout)]
    assert drops and all(m.packed and m.p == 0.1 for m in drops)
    assert not any(type(m) is torch.nn.Dropout for m in packed.modules())
    assert any(type(m) is torch.nn.Dropout for m in plain.modules())
    plain.load_state_dict(packed.state_dict())  # the same parameters: packing adds none
    src, src_len, dec_input = batch(3, b=4, s=6, t=6)
    torch.testing.assert_close(packed.eval()(src, src_len, dec_input)[0], plain.eval()(src, src_len, dec_input)[0],
                               rtol=0, atol=0)




def test_the_trainer_fits_the_transformer_on_synthetic_pairs(tmp_path):
    torch.manual_seed(0)
    splits = (reversal_pairs(600, 0), reversal_pairs(60, 1), reversal_pairs(60, 2))
    task = Translation(src_vocab_size=19, tgt_vocab_size=19, num_steps=8, batch_size=32, splits=splits)
    model = build_transformer(TransformerConfig(src_vocab_size=19, tgt_vocab_size=19, d_model=32, num_heads=2,
                                                ffn_hidden=64, num_encoder_layers=1, num_decoder_layers=1,
                                                dropout=0.0, num_steps=8, max_len=16))
    untrained = task.evaluate(model, "val")
    trainer = Trainer(model, task, TrainConfig(epochs=10, lr=0.005, optimizer="adam", grad_clip=1.0, seed=0),
                      model_name="transformer", model_config={}, run_dir=tmp_path, progress=False,
                      log=lambda *_: None)
    result = trainer.fit()
    assert result.history[-1]["val_loss"] < 0.5 * untrained["loss"]
    assert max(h["val_bleu"] for h in result.history) > untrained["bleu"] + 20


@SETTINGS
@given(st.integers(0, 10_000))
def test_decoding_without_the_cache_finds_the_same_translations(seed):
    model = four_word_model(seed)
    src, src_len, _ = batch(seed, b=3)
    cached = beam_search(model, src, src_len, bos=BOS, eos=EOS, max_len=5, beam_size=2, alpha=0.5)
    plain = beam_search(RecomputingDecoder(model), src, src_len, bos=BOS, eos=EOS, max_len=5, beam_size=2, alpha=0.5)
    for a, b in zip(cached, plain):
        assert a[0].tokens == b[0].tokens and a[0].log_prob == pytest.approx(b[0].log_prob, abs=1e-9)
