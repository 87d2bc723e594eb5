"""English-French pairs: preprocessing, zip reading, padding, grouped split, training vocabularies."""

from __future__ import annotations

import io
import urllib.error
import zipfile
from collections import Counter
from collections.abc import Iterator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from divekit.data import store
from divekit.data.fra_eng import (
    Pair,
    build_array,
    build_mt,
    build_vocabs,
    load_pairs,
    parse_pairs,
    preprocess,
    read_fra_txt,
    shift_right,
    split_pairs,
    tokenize,
    truncate_pad,
)
from divekit.data.vocab import Vocab
from divekit.errors import DataError

from conftest import data_dir_with

SETTINGS = settings(max_examples=30, deadline=None)


# --- real data ---------------------------------------------------------------------------------




@pytest.fixture(scope="module")
def real_pairs() -> Iterator[list[Pair]]:
    """All pairs through the store, parsed once per module, never downloaded."""
    data_dir = data_dir_with("fra-eng.zip")
    if data_dir is None:
        pytest.skip("fra-eng.zip not found in $DIVEKIT_DATA or ../shared/data")

    def no_network(url: str, timeout: float) -> None:
        raise urllib.error.URLError("tests never download")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIVEKIT_DATA", str(data_dir))
        mp.setattr(store, "open_url", no_network)
        yield load_pairs()


@pytest.fixture(scope="module")
def real_split(real_pairs: list[Pair]) -> tuple[list[Pair], list[Pair], list[Pair]]:
    return split_pairs(real_pairs, seed=0)


def test_real_pair_count_and_first_lines(real_pairs: list[Pair]) -> None:
    assert len(real_pairs) == 167_130
    assert real_pairs[:3] == [(["go", "."], ["va", "!"]), (["hi", "."], ["salut", "!"]), (["run", "!"], ["cours", "!"])]
    assert all(src and tgt for src, tgt in real_pairs)


def test_real_split_sizes_and_disjoint_sources(real_split: tuple[list[Pair], list[Pair], list[Pair]]) -> None:
    train, val, test = real_split
    assert (len(train), len(val), len(test)) == (157_130, 5_000, 5_000)
    sources = [{tuple(src) for src, _ in split} for split in (train, val, test)]
    assert not (sources[0] & sources[1]) and not (sources[0] & sources[2]) and not (sources[1] & sources[2])


def test_real_split_is_deterministic(real_pairs: list[Pair], real_split: tuple) -> None:
    assert split_pairs(real_pairs, seed=0)[2] == real_split[2]
    assert split_pairs(real_pairs, seed=1)[2] != real_split[2]


def test_real_vocabularies_from_train_only(real_split: tuple[list[Pair], list[Pair], list[Pair]]) -> None:
    train, _, test = real_split
    src_vocab, tgt_vocab = build_vocabs(train)
    assert (len(src_vocab), len(tgt_vocab)) == (9_779, 17_349)
    train_words = Counter(w for src, _ in train for w in src)
    test_only = {w for src, _ in test for w in src} - set(train_words)
    assert test_only  # the held-out sources do bring new words
    assert all(src_vocab[w] == src_vocab.unk for w in test_only)
    assert all(w in src_vocab for w, n in train_words.items() if n >= 2)
    assert all(w not in src_vocab for w, n in train_words.items() if n == 1)


# --- preprocessing -----------------------------------------------------------------------------


def reference_preprocess(text: str) -> str:
    """A left-to-right character loop, looking at the original previous character."""
    text = text.replace("\u202f", " ").replace("\xa0", " ").lower()
    out = []
    for i, ch in enumerate(text):
        glued = i > 0 and ch in ",.!?" and text[i - 1] != " "
        out.append(" " + ch if glued else ch)
    return "".join(out)


def test_preprocess_hand_cases() -> None:
    assert preprocess("Go.") == "go ."
    assert preprocess("Hi, Tom!") == "hi , tom !"
    assert preprocess("Wait !") == "wait !"  # already spaced: unchanged
    assert preprocess("Oh...") == "oh . . ."
    assert preprocess("Cours\u202f!") == "cours !"
    assert preprocess("Quoi\u00a0?") == "quoi ?"
    assert preprocess("ÉCOLE") == "école"
    assert preprocess("!start") == "!start"  # nothing before the first character


@SETTINGS
@given(text=st.text(alphabet="aBÉ .,!?\u202f\u00a0\t'-", max_size=40))
def test_preprocess_matches_character_loop(text: str) -> None:
    assert preprocess(text) == reference_preprocess(text)


def test_tokenize_drops_empty_strings() -> None:
    assert tokenize("  a  b . ") == ["a", "b", "."]
    assert tokenize("") == []


def test_parse_pairs_fields_blank_lines_and_errors() -> None:
    text = "Go.\tVa !\tCC-BY 2.0 (France) Attribution\n\nI see.\tJe\u202fvois.\r\n"
    assert parse_pairs(text) == [(["go", "."], ["va", "!"]), (["i", "see", "."], ["je", "vois", "."])]
    with pytest.raises(DataError, match="line 2"):
        parse_pairs("Go.\tVa !\nno tab here\n")


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_read_fra_txt_from_zip_bytes() -> None:
    text = "Hi.\tSalut !\n"
    raw = _zip({"fra-eng/_about.txt": b"about", "fra-eng/fra.txt": text.encode()})
    assert read_fra_txt(raw) == text
    with pytest.raises(DataError, match="no fra.txt"):
        read_fra_txt(_zip({"fra-eng/other.txt": b"x"}))
    with pytest.raises(DataError, match="unreadable"):
        read_fra_txt(b"not a zip file")


# --- arrays ------------------------------------------------------------------------------------


def test_truncate_pad_hand_cases() -> None:
    assert truncate_pad([5, 6], 4, 1) == [5, 6, 1, 1]
    assert truncate_pad([5, 6, 7, 8, 9], 3, 1) == [5, 6, 7]
    assert truncate_pad([], 2, 0) == [0, 0]


@SETTINGS
@given(indices=st.lists(st.integers(2, 50), max_size=12), num_steps=st.integers(1, 10))
def test_truncate_pad_property(indices: list[int], num_steps: int) -> None:
    out = truncate_pad(indices, num_steps, 1)
    kept = min(len(indices), num_steps)
    assert len(out) == num_steps
    assert out[:kept] == indices[:kept] and out[kept:] == [1] * (num_steps - kept)


def small_vocab() -> Vocab:
    return Vocab(["i", "i", "see", "see", "go", "go", "."] * 2, min_freq=2, reserved=("<pad>", "<bos>", "<eos>"))


def test_build_array_rows_and_valid_lengths() -> None:
    vocab = small_vocab()
    pad, eos = vocab["<pad>"], vocab["<eos>"]
    sentences = [["i", "see", "."], ["go"], ["i", "see", "go", "go", "."], ["unknown"]]
    array, valid_len = build_array(sentences, vocab, 4)
    assert array.shape == (4, 4) and array.dtype == valid_len.dtype == torch.long
    assert array[0].tolist() == [vocab["i"], vocab["see"], vocab["."], eos]
    assert array[1].tolist() == [vocab["go"], eos, pad, pad]
    assert array[2].tolist() == vocab[["i", "see", "go", "go"]]  # truncated: <eos> cut off
    assert array[3].tolist() == [vocab.unk, eos, pad, pad]
    assert valid_len.tolist() == [4, 2, 4, 2]


@SETTINGS
@given(
    sentences=st.lists(st.lists(st.sampled_from(["i", "see", "go", ".", "zzz"]), max_size=8), max_size=6),
    num_steps=st.integers(1, 9),
)
def test_valid_len_counts_real_tokens(sentences: list[list[str]], num_steps: int) -> None:
    vocab = small_vocab()
    array, valid_len = build_array(sentences, vocab, num_steps)
    assert array.shape == (len(sentences), num_steps)
    for row, n, tokens in zip(array.tolist(), valid_len.tolist(), sentences):
        assert n == min(len(tokens) + 1, num_steps)
        assert row[:n] == (vocab[tokens] + [vocab["<eos>"]])[:n]
        assert row[n:] == [vocab["<pad>"]] * (num_steps - n)


def test_shift_right_prepends_bos() -> None:
    tgt = torch.tensor([[5, 6, 3], [7, 3, 1]])
    assert shift_right(tgt, 2).tolist() == [[2, 5, 6], [2, 7, 3]]


# --- split and vocabularies --------------------------------------------------------------------


def synthetic_pairs(num_sources: int = 60) -> list[Pair]:
    """Sources with 1, 2 or 3 translations each, interleaved as in a file sorted by length."""
    return [([f"s{i}", "."], [f"t{i}", f"v{j}"]) for i in range(num_sources) for j in range(1 + i % 3)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_is_grouped_exact_and_a_partition(seed: int) -> None:
    pairs = synthetic_pairs()
    train, val, test = split_pairs(pairs, seed=seed, val_pairs=10, test_pairs=12)
    assert (len(val), len(test)) == (10, 12)  # singletons make exact sizes reachable
    assert Counter(map(repr, train + val + test)) == Counter(map(repr, pairs))
    owner = {}
    for name, split in (("train", train), ("val", val), ("test", test)):
        for src, _ in split:
            assert owner.setdefault(tuple(src), name) == name  # one source, one split
    assert [p for p in pairs if p in test] == test  # file order is kept


def test_split_determinism_and_seed() -> None:
    pairs = synthetic_pairs()
    assert split_pairs(pairs, seed=4, val_pairs=10, test_pairs=10) == split_pairs(
        pairs, seed=4, val_pairs=10, test_pairs=10
    )
    assert split_pairs(pairs, seed=4, val_pairs=10, test_pairs=10) != split_pairs(
        pairs, seed=5, val_pairs=10, test_pairs=10
    )


def test_split_falls_short_only_when_groups_forbid() -> None:
    pairs = [([f"s{i}"], [f"t{j}"]) for i in range(10) for j in range(3)]  # every group holds 3
    train, val, test = split_pairs(pairs, val_pairs=5, test_pairs=7)
    assert (len(train), len(val), len(test)) == (30 - 3 - 6, 3, 6)
    with pytest.raises(DataError):
        split_pairs(pairs, val_pairs=15, test_pairs=15)


def test_vocab_from_train_only_and_min_freq() -> None:
    common = [(["a", "b"], ["x", "y"])] * 4
    pairs = common + [(["a", "rare"], ["x", "w"]), (["c", "c"], ["z", "z"]), (["c", "c"], ["z", "z"])]
    held_out_twice = 0
    for seed in range(6):
        data = build_mt(pairs, 5, seed=seed, val_pairs=1, test_pairs=2)
        for side, vocab in ((0, data.src_vocab), (1, data.tgt_vocab)):
            counts = Counter(w for pair in data.train_pairs for w in pair[side])
            for word in {w for pair in pairs for w in pair[side]}:
                assert (word in vocab) == (counts[word] >= 2), (seed, word)
            assert vocab.idx_to_token[:4] == ["<unk>", "<pad>", "<bos>", "<eos>"]
        if ["c", "c"] in [src for src, _ in data.test_pairs]:
            held_out_twice += 1  # "c" is frequent, but only outside training: it must be unknown
            assert "c" not in data.src_vocab and data.test[0][0, :2].tolist() == [0, 0]
    assert held_out_twice > 0


def test_build_mt_shapes_and_max_pairs() -> None:
    pairs = synthetic_pairs()
    full = build_mt(pairs, 6, seed=3, val_pairs=8, test_pairs=8)
    small = build_mt(pairs, 6, seed=3, max_pairs=20, val_pairs=8, test_pairs=8)
    assert len(small.train_pairs) == 20 and set(map(repr, small.train_pairs)) <= set(map(repr, full.train_pairs))
    assert small.test_pairs == full.test_pairs and small.val_pairs == full.val_pairs
    for data in (full, small):
        for arrays, split in ((data.train, data.train_pairs), (data.test, data.test_pairs)):
            src, src_len, tgt, tgt_len = arrays
            assert src.shape == tgt.shape == (len(split), 6) and src_len.shape == tgt_len.shape == (len(split),)
            assert tgt_len.tolist() == [min(len(t) + 1, 6) for _, t in split]
