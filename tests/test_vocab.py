"""Vocab: index layout, frequency order, min_freq, reserved tokens, unknowns, state round trip."""

from __future__ import annotations

import io
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from divekit.data.vocab import UNK, Vocab
from divekit.errors import CheckpointError

WORDS = ["a", "b", "c", "the", "zebra", "<pad>", "Apple", "é"]
token_lists = st.lists(st.sampled_from(WORDS), max_size=40)
SETTINGS = settings(max_examples=30, deadline=None)


def expected_layout(tokens: list[str], min_freq: int, reserved: tuple[str, ...]) -> list[str]:
    """Reference: count by hand, then order by (-count, token) with a plain sort."""
    counts = Counter(tokens)
    frequent = sorted((t for t in counts if counts[t] >= min_freq and t not in reserved), key=lambda t: (-counts[t], t))
    return [UNK, *reserved, *frequent]


def test_hand_built_order() -> None:
    vocab = Vocab(["b", "a", "b", "c", "a", "b"])
    assert vocab.idx_to_token == ["<unk>", "b", "a", "c"]
    assert vocab.token_freqs == [("b", 3), ("a", 2), ("c", 1)]
    assert len(vocab) == 4


def test_ties_are_alphabetical_whatever_the_input_order() -> None:
    assert Vocab(["z", "y", "x"]).idx_to_token == ["<unk>", "x", "y", "z"]
    assert Vocab(["x", "z", "y"]).idx_to_token == ["<unk>", "x", "y", "z"]


@SETTINGS
@given(tokens=token_lists, min_freq=st.integers(1, 4), reserved=st.sampled_from([(), ("<pad>",), ("<bos>", "<pad>")]))
def test_layout_matches_reference(tokens: list[str], min_freq: int, reserved: tuple[str, ...]) -> None:
    vocab = Vocab(tokens, min_freq=min_freq, reserved=reserved)
    assert vocab.idx_to_token == expected_layout(tokens, min_freq, reserved)
    assert dict(vocab.token_freqs) == Counter(tokens)


@SETTINGS
@given(tokens=token_lists)
def test_token_index_round_trip(tokens: list[str]) -> None:
    vocab = Vocab(tokens, reserved=("<bos>",))
    for i, tok in enumerate(vocab.idx_to_token):
        assert vocab[tok] == i
        assert vocab.to_tokens(i) == tok
    assert vocab.to_tokens(vocab[tokens]) == tokens  # min_freq 1: every seen token is known
    assert vocab.to_tokens(torch.tensor(vocab[tokens], dtype=torch.long)) == tokens


def test_min_freq_drops_rare_tokens_to_unk() -> None:
    vocab = Vocab(["a", "a", "b", "c", "c", "c"], min_freq=2)
    assert vocab.idx_to_token == ["<unk>", "c", "a"]
    assert vocab["b"] == vocab.unk == 0
    assert ("b", 1) in vocab.token_freqs  # still counted, just not indexed


def test_reserved_follow_unk_in_order_and_are_not_duplicated() -> None:
    vocab = Vocab(["x", "<eos>", "<eos>", "x", "x"], reserved=("<pad>", "<bos>", "<eos>"))
    assert vocab.idx_to_token == ["<unk>", "<pad>", "<bos>", "<eos>", "x"]
    assert [vocab[t] for t in ("<pad>", "<bos>", "<eos>")] == [1, 2, 3]


def test_reserved_must_be_distinct_and_exclude_unk() -> None:
    with pytest.raises(ValueError):
        Vocab(["a"], reserved=("<pad>", "<pad>"))
    with pytest.raises(ValueError):
        Vocab(["a"], reserved=(UNK,))
    with pytest.raises(ValueError):
        Vocab(["a"], min_freq=0)


def test_unknown_tokens_map_to_unk() -> None:
    vocab = Vocab(["hello", "world"])
    assert vocab["never-seen"] == 0
    assert vocab[["hello", "never-seen", "world"]] == [vocab["hello"], 0, vocab["world"]]
    assert "never-seen" not in vocab and "hello" in vocab


def test_nested_token_lists_equal_flat_stream() -> None:
    lines = [["a", "b"], ["b"], [], ["c", "b"]]
    assert Vocab(lines) == Vocab([t for line in lines for t in line])


def _plain(value: object) -> bool:
    """Only lists, dicts with str keys, str and int: what a weights-only checkpoint may hold."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return isinstance(value, (str, int)) and not isinstance(value, bool)


@SETTINGS
@given(tokens=token_lists, min_freq=st.integers(1, 3))
def test_state_round_trip_through_weights_only_load(tokens: list[str], min_freq: int) -> None:
    vocab = Vocab(tokens, min_freq=min_freq, reserved=("<pad>", "<eos>"))
    state = vocab.to_state()
    assert _plain(state)
    buffer = io.BytesIO()
    torch.save({"vocab": state}, buffer)
    buffer.seek(0)
    loaded = Vocab.from_state(torch.load(buffer, weights_only=True)["vocab"])
    assert loaded == vocab
    assert loaded.idx_to_token == vocab.idx_to_token
    assert loaded.token_to_idx == vocab.token_to_idx
    assert loaded.token_freqs == vocab.token_freqs
    assert (loaded.min_freq, loaded.reserved) == (vocab.min_freq, vocab.reserved)
    assert loaded[tokens] == vocab[tokens]


def test_malformed_state_is_a_checkpoint_error() -> None:
    state = Vocab(["a"]).to_state()
    with pytest.raises(CheckpointError):
        Vocab.from_state({k: v for k, v in state.items() if k != "token_freqs"})
    with pytest.raises(CheckpointError):
        Vocab.from_state({**state, "idx_to_token": ["a", "<unk>"]})
