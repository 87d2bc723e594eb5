"""Perplexity, bits per character and the add-one n-gram baselines."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from divekit.errors import ShapeError
from divekit.metrics.perplexity import (
    baselines,
    bits_per_char,
    ngram_perplexity,
    perplexity,
    perplexity_from_logits,
    uniform_perplexity,
)
from conftest import data_dir_with


@given(v=st.integers(2, 60), n=st.integers(1, 50))
@settings(max_examples=30, deadline=None)
def test_uniform_model_has_perplexity_equal_to_vocabulary_size(v, n):
    targets = torch.randint(v, (n,))
    assert perplexity_from_logits(torch.zeros(n, v), targets) == pytest.approx(v, rel=1e-9)
    assert uniform_perplexity(v) == v
    assert bits_per_char(float(v)) == pytest.approx(math.log2(v))


def test_hand_computed_perplexity_and_ignored_positions():
    # p = 1/2 and 1/4 for the two counted targets: perplexity = sqrt(2 * 4).
    logits = torch.log(torch.tensor([[0.5, 0.5, 1e-30], [0.25, 0.75, 1e-30], [1.0, 1e-30, 1e-30]]))
    targets = torch.tensor([0, 0, -100])
    assert perplexity_from_logits(logits, targets) == pytest.approx(math.sqrt(8))
    assert perplexity(math.log(8), 2) == pytest.approx(math.sqrt(8))
    with pytest.raises(ShapeError, match=r"\(\*targets.shape, V\)"):
        perplexity_from_logits(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))


def _reference_ngram(train: list[int], heldout: list[int], v: int, order: int) -> float:
    """Add-one n-gram perplexity by plain dictionary counting, targets from position 2 on."""
    joint = Counter(tuple(train[i - order + 1 : i + 1]) for i in range(order - 1, len(train)))
    ctx = Counter(tuple(train[i - order + 1 : i]) for i in range(order - 1, len(train)))
    logs = [math.log((joint[tuple(heldout[i - order + 1 : i + 1])] + 1) / (ctx[tuple(heldout[i - order + 1 : i])] + v))
            for i in range(2, len(heldout))]
    return math.exp(-sum(logs) / len(logs))


@given(v=st.integers(2, 6), order=st.integers(1, 3), seed=st.integers(0, 10_000))
@settings(max_examples=40, deadline=None)
def test_ngram_baseline_matches_dictionary_counts(v, order, seed):
    g = torch.Generator().manual_seed(seed)
    train, heldout = torch.randint(v, (60,), generator=g), torch.randint(v, (25,), generator=g)
    expected = _reference_ngram(train.tolist(), heldout.tolist(), v, order)
    assert ngram_perplexity(train, heldout, v, order) == pytest.approx(expected, rel=1e-9)


def test_bigram_beats_unigram_on_structured_text():
    text = torch.tensor([0, 1, 2, 3] * 50)  # deterministic successor: a bigram model nearly knows it
    b = baselines(text, text, 4)
    assert b["bigram"] < b["unigram"] < b["uniform"] + 1e-9


@pytest.mark.skipif(data_dir_with("timemachine.txt") is None, reason="timemachine.txt not found under DIVEKIT_DATA")
def test_baselines_on_the_real_split():
    from divekit.data.timemachine import load_lm_data

    data = load_lm_data("char")
    b = baselines(data.train, data.test, len(data.vocab))
    assert b["uniform"] == 28
    assert b["unigram"] == pytest.approx(16.7, abs=0.05)
    assert b["bigram"] == pytest.approx(9.6, abs=0.05)
    assert b["trigram"] == pytest.approx(6.6, abs=0.05)
