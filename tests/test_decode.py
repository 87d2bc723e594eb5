"""Greedy and beam search against exhaustive search on tiny models."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from divekit.decode.beam import beam_search, decode_batch, length_normalised
from divekit.decode.greedy import greedy_search
from divekit.models.seq2seq import Seq2SeqConfig, build_seq2seq

SETTINGS = settings(max_examples=25, deadline=None)
BOS, EOS = 2, 3


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only adds hand-offs


class TableModel:
    """A language model given by a table: ``log p(v | source, prefix)`` drawn at random per prefix.

    The state is ``(source ids (B,), prefix (B, t))``; any prefix may lead anywhere, so pruning
    decisions matter as they would with a real decoder. ``sequence_log_prob`` reads the same table
    without any search, which makes it an independent reference for the search's bookkeeping.
    """

    def __init__(self, vocab: int, seed: int, temperature: float = 1.5) -> None:
        self.vocab, self.seed, self.temperature = vocab, seed, temperature
        self.cache: dict[tuple, torch.Tensor] = {}

    def log_probs(self, source: int, prefix: tuple[int, ...]) -> torch.Tensor:
        key = (source, prefix)
        if key not in self.cache:
            g = torch.Generator().manual_seed(hash((self.seed, key)) % 2**62)
            logits = torch.randn(self.vocab, generator=g, dtype=torch.float64) * self.temperature
            self.cache[key] = F.log_softmax(logits, dim=0)
        return self.cache[key]

    def init_state(self, src, src_valid_len):
        return src[:, 0].clone(), torch.zeros(src.shape[0], 0, dtype=torch.long)

    def step(self, tokens, state):
        sources, prefix = state
        prefix = torch.cat((prefix, tokens.unsqueeze(1)), dim=1)
        rows = [self.log_probs(int(s), tuple(p.tolist())) for s, p in zip(sources, prefix)]
        return torch.stack(rows).float(), (sources, prefix)

    def reorder_state(self, state, index):
        return state[0].index_select(0, index), state[1].index_select(0, index)

    def sequence_log_prob(self, source: int, tokens: list[int]) -> float:
        prefix, total = (BOS,), 0.0
        for tok in tokens:
            total += float(self.log_probs(source, prefix)[tok].float())
            prefix += (tok,)
        return total


def all_outputs(vocab: int, max_len: int) -> list[list[int]]:
    """Every possible output: words then <eos> (shorter than max_len), or max_len words without it."""
    words = [v for v in range(vocab) if v != EOS]
    outs = [list(body) + [EOS] for n in range(max_len) for body in itertools.product(words, repeat=n)]
    return outs + [list(body) for body in itertools.product(words, repeat=max_len)]


def brute_force(log_probs: list[float], outputs: list[list[int]], alpha: float) -> tuple[float, list[int]]:
    """The best ``log p / len ** alpha`` over all outputs, by enumeration."""
    return max((length_normalised(lp, len(o), alpha), o) for lp, o in zip(log_probs, outputs))


def tiny_seq2seq(seed: int, vocab: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = Seq2SeqConfig(src_vocab_size=7, tgt_vocab_size=max(vocab, 5), embed_size=6, hidden_size=8,
                           num_layers=2, num_steps=6)
    model = build_seq2seq(config).double().eval()
    if vocab < 5:  # fewer output words than the config's minimum: shrink the output layer itself
        model.decoder.out = torch.nn.Linear(8, vocab).double()
        torch.nn.init.normal_(model.decoder.out.weight, std=1.5)
    return model


def teacher_forced_log_probs(model, src, src_len, outputs: list[list[int]]) -> list[float]:
    """log p(output | src) of each output from one teacher-forced forward pass: no decoding code involved."""
    steps = max(len(o) for o in outputs)
    dec_input = torch.tensor([[BOS] + o[:-1] + [0] * (steps - len(o)) for o in outputs])
    n = len(outputs)
    with torch.no_grad():
        logp = F.log_softmax(model(src.expand(n, -1), src_len.expand(n), dec_input).double(), dim=-1)
    return [sum(float(logp[i, t, tok]) for t, tok in enumerate(o)) for i, o in enumerate(outputs)]


def sources(seed: int, batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 7, (batch, 5), generator=g), torch.randint(1, 6, (batch,), generator=g)


@SETTINGS
@given(st.integers(0, 10_000), st.sampled_from([0.0, 0.75, 1.0]))
def test_beam_width_one_is_greedy(seed, alpha):
    model = tiny_seq2seq(seed, vocab=6)
    src, src_len = sources(seed, batch=4)
    greedy = greedy_search(model, src, src_len, bos=BOS, eos=EOS, max_len=5)
    beam = beam_search(model, src, src_len, bos=BOS, eos=EOS, max_len=5, beam_size=1, alpha=alpha)
    assert [h.tokens for h in greedy] == [hyps[0].tokens for hyps in beam]
    for g, (b,) in zip(greedy, beam):
        assert g.log_prob == pytest.approx(b.log_prob, abs=1e-9)


@SETTINGS
@given(st.integers(0, 10_000), st.sampled_from([0.0, 0.5, 1.0]), st.sampled_from([3, 4]))
def test_exhaustive_width_finds_the_brute_force_optimum_of_a_seq2seq(seed, alpha, max_len):
    vocab = 4
    model = tiny_seq2seq(seed, vocab)
    src, src_len = sources(seed, batch=2)
    width = len(all_outputs(vocab, max_len))
    found = beam_search(model, src, src_len, bos=BOS, eos=EOS, max_len=max_len, beam_size=width, alpha=alpha)
    outputs = all_outputs(vocab, max_len)
    for b in range(src.shape[0]):
        log_probs = teacher_forced_log_probs(model, src[b : b + 1], src_len[b : b + 1], outputs)
        best_score, best_output = brute_force(log_probs, outputs, alpha)
        top = found[b][0]
        assert top.score == pytest.approx(best_score, abs=1e-9)
        returned = list(top.tokens) + ([EOS] if top.finished else [])
        assert top.log_prob == pytest.approx(log_probs[outputs.index(returned)], abs=1e-9)


@SETTINGS
@given(st.integers(0, 10_000), st.sampled_from([0.0, 0.75]))
def test_no_width_beats_the_exhaustive_one_and_scores_are_true_log_probs(seed, alpha):
    vocab, max_len = 4, 4
    model = TableModel(vocab, seed)
    src, src_len = torch.arange(3).unsqueeze(1), torch.ones(3, dtype=torch.long)
    outputs = all_outputs(vocab, max_len)
    width = len(outputs)
    optimum = [brute_force([model.sequence_log_prob(b, o) for o in outputs], outputs, alpha)[0] for b in range(3)]
    for k in (1, 2, 3, 5, 8, width):
        found = beam_search(model, src, src_len, bos=BOS, eos=EOS, max_len=max_len, beam_size=k, alpha=alpha,
                            nbest=k)
        for b, hyps in enumerate(found):
            assert hyps[0].score <= optimum[b] + 1e-9
            assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
            for h in hyps:
                seq = list(h.tokens) + ([EOS] if h.finished else [])
                assert len(seq) == h.length <= max_len and (h.finished or h.length == max_len)
                assert h.log_prob == pytest.approx(model.sequence_log_prob(b, seq), abs=1e-5)
                assert h.score == pytest.approx(length_normalised(h.log_prob, h.length, alpha))
        if k == width:
            assert [hyps[0].score for hyps in found] == pytest.approx(optimum, abs=1e-5)


class FixedTree:
    """Hand-set probabilities over a (0), b (1) and <eos> (3); ``<bos>`` (2) and c (4) are impossible.

    Greedy: a (0.5), then <eos> (0.4): "a" with probability 0.2, the best output of all.
    Width 2 keeps a and b (0.45); the continuations b a and b b (0.225 each) outrank a <eos> (0.2),
    which is third and so never finished, and every continuation of b a and b b is at most 0.34:
    the wider beam ends with 0.0765.
    """

    table = {
        (2,): {0: 0.5, 1: 0.45, 3: 0.05},
        (2, 0): {3: 0.4, 0: 0.3, 1: 0.3},
        (2, 1): {0: 0.5, 1: 0.5},
        (2, 1, 0): {0: 0.34, 1: 0.33, 3: 0.33},
        (2, 1, 1): {0: 0.34, 1: 0.33, 3: 0.33},
    }

    def log_probs(self, prefix: tuple[int, ...]) -> torch.Tensor:
        probs = self.table.get(prefix, {3: 0.1, 0: 0.9})
        return torch.tensor([math.log(probs[v]) if v in probs else -math.inf for v in range(5)])

    def init_state(self, src, src_valid_len):
        return torch.full((src.shape[0], 0), 0, dtype=torch.long)

    def step(self, tokens, state):
        prefix = torch.cat((state, tokens.unsqueeze(1)), dim=1)
        return torch.stack([self.log_probs(tuple(p.tolist())) for p in prefix]), prefix

    def reorder_state(self, state, index):
        return state.index_select(0, index)


def test_a_wider_beam_can_score_worse_on_some_model():
    """Beam search is not monotone in its width: the guarantee is only for the exhaustive width."""
    model, src, src_len = FixedTree(), torch.zeros(1, 1, dtype=torch.long), torch.ones(1, dtype=torch.long)
    narrow = beam_search(model, src, src_len, bos=BOS, eos=EOS, max_len=3, beam_size=1)[0][0]
    wide = beam_search(model, src, src_len, bos=BOS, eos=EOS, max_len=3, beam_size=2)[0][0]
    widest = beam_search(model, src, src_len, bos=BOS, eos=EOS, max_len=3, beam_size=16)[0][0]
    assert narrow.tokens == (0,) and narrow.log_prob == pytest.approx(math.log(0.5 * 0.4))
    assert wide.tokens[0] == 1 and wide.log_prob == pytest.approx(math.log(0.45 * 0.5 * 0.34))
    assert wide.score < narrow.score <= widest.score


def test_eos_handling_and_max_len():
    always_eos = FixedTree()
    always_eos.table = {(2,): {3: 1.0}}
    src, src_len = torch.zeros(2, 1, dtype=torch.long), torch.ones(2, dtype=torch.long)
    for k in (1, 3):
        (h,) = [hyps[0] for hyps in beam_search(always_eos, src[:1], src_len[:1], bos=BOS, eos=EOS, max_len=4,
                                                beam_size=k)]
        assert h.tokens == () and h.finished and h.length == 1 and h.log_prob == 0.0
    never_eos = FixedTree()
    never_eos.table = {}
    never_eos.log_probs = lambda prefix: torch.log(torch.tensor([0.7, 0.3, 0.0, 0.0, 0.0]))
    g = greedy_search(never_eos, src, src_len, bos=BOS, eos=EOS, max_len=4)
    b = beam_search(never_eos, src, src_len, bos=BOS, eos=EOS, max_len=4, beam_size=3, nbest=3)
    assert g[0].tokens == (0, 0, 0, 0) and not g[0].finished and g[0].length == 4
    assert b[0][0].tokens == (0, 0, 0, 0) and len({h.tokens for h in b[0]}) == 3
    assert all(not h.finished and h.length == 4 for h in b[0])


@SETTINGS
@given(st.integers(0, 10_000), st.sampled_from([1, 2, 4]))
def test_a_batch_decodes_like_its_rows_one_by_one(seed, k):
    model = tiny_seq2seq(seed, vocab=9)
    src, src_len = sources(seed, batch=5)
    together = decode_batch(model, src, src_len, bos=BOS, eos=EOS, max_len=6, beam_size=k, alpha=0.75)
    alone = [decode_batch(model, src[b : b + 1], src_len[b : b + 1], bos=BOS, eos=EOS, max_len=6, beam_size=k,
                          alpha=0.75)[0] for b in range(5)]
    assert [h.tokens for h in together] == [h.tokens for h in alone]
    assert [h.score for h in together] == pytest.approx([h.score for h in alone], abs=1e-9)


def test_bad_arguments():
    model = tiny_seq2seq(0, vocab=6)
    src, src_len = sources(0)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, src, src_len, bos=BOS, eos=EOS, max_len=3, beam_size=0)
    with pytest.raises(ValueError, match="alpha"):
        beam_search(model, src, src_len, bos=BOS, eos=EOS, max_len=3, beam_size=2, alpha=-1)
    with pytest.raises(ValueError, match="max_len"):
        greedy_search(model, src, src_len, bos=BOS, eos=EOS, max_len=0)
