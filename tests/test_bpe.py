"""BPE from scratch against subword-nmt (the reference implementation), by hand, and by its properties."""

from __future__ import annotations

import io
from collections import Counter

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from divekit.data.bpe import BPE, EOW, join_subwords, learn_bpe, word_counts
from divekit.errors import CheckpointError

learn_ref = pytest.importorskip("subword_nmt.learn_bpe")
apply_ref = pytest.importorskip("subword_nmt.apply_bpe")


def reference_merges(counts: dict[str, int], num_merges: int) -> list[tuple[str, str]]:
    """subword-nmt's merges for the same word counts (its dictionary input: ``word count`` lines)."""
    text = "".join(f"{w} {c}\n" for w, c in counts.items())
    out = io.StringIO()
    learn_ref.learn_bpe(io.StringIO(text), out, num_merges, is_dict=True)
    lines = out.getvalue().rstrip("\n").split("\n")
    assert lines[0] == "#version: 0.2"
    return [tuple(line.split(" ")) for line in lines[1:] if line]


def reference_segmenter(merges: list[tuple[str, str]]):
    codes = io.StringIO("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return apply_ref.BPE(codes)


# --- by hand ------------------------------------------------------------------------------------


def test_the_papers_example_and_the_tie_rule():
    # Pair counts at the start: (e, s) = (s, t</w>) = 6 + 3 = 9. The tie goes to the greater tuple,
    # ("s", "t</w>") > ("e", "s"); then (e, st</w>) = 9; then (l, o) = 7 is the most frequent.
    bpe = learn_bpe({"low": 5, "lower": 2, "newest": 6, "widest": 3}, 3)
    assert bpe.merges == [("s", "t" + EOW), ("e", "st" + EOW), ("l", "o")]
    assert bpe.segment(["lowest", "newer"]) == ["lo@@", "w@@", "est", "n@@", "e@@", "w@@", "e@@", "r"]
    assert join_subwords(bpe.segment(["lowest", "newer"])) == ["lowest", "newer"]


def test_merges_rewrite_left_to_right_without_overlap_and_count_overlaps():
    # a a a a</w> holds the pair (a, a) twice, so it counts 2 * 3 = 6 and beats (b, c</w>) = 5.
    bpe = learn_bpe({"aaaa": 3, "bc": 5}, 1)
    assert bpe.merges == [("a", "a")]
    assert bpe.encode_word("aaaa") == ("aa", "a", "a")  # the last "a" carries </w>: no (a, a) there
    assert bpe.encode_word("aaaaa") == ("aa", "aa", "a")


def test_learning_stops_at_min_frequency_and_ignores_empty_words():
    bpe = learn_bpe({"ab": 1, "": 7, "cd": 2}, 10)
    assert bpe.merges == [("c", "d" + EOW)]  # (a, b</w>) is seen once, below min_frequency 2
    assert learn_bpe({"ab": 1}, 10, min_frequency=1).merges == [("a", "b" + EOW)]
    with pytest.raises(ValueError, match="non-negative"):
        learn_bpe({"ab": 1}, -1)


def test_single_characters_dangling_separators_and_state():
    bpe = learn_bpe(word_counts([["a", "ab", "ab"], ["ab"]]), 5)
    assert bpe.segment(["a", "", "ab"]) == ["a", "ab"]
    assert join_subwords(["ab@@", "c@@"]) == ["abc"]  # a decoder that stops mid-word still gives words
    assert BPE.from_state(bpe.to_state()) == bpe
    with pytest.raises(CheckpointError):
        BPE.from_state({"merges": [["a", "b", "c"]], "alphabet": []})
    with pytest.raises(CheckpointError):
        BPE.from_state({"merges": []})


def test_outside_alphabet_lists_each_new_character_once():
    bpe = learn_bpe({"abc": 3}, 2)
    assert bpe.outside_alphabet(["abz", "zy", "c"]) == ["z", "y"]


# --- equal to subword-nmt on random corpora -----------------------------------------------------

# A small alphabet makes repeats ("aaa", "abab") and so every branch of the pair-count update common.
# subword-nmt fails on a corpus without a single pair (only one-letter words), so that one is left out.
corpora = st.dictionaries(st.text("abcé", min_size=1, max_size=8), st.integers(1, 9), min_size=1, max_size=25).filter(
    lambda counts: any(len(w) > 1 for w in counts))


@settings(max_examples=60, deadline=None)
@given(corpora, st.integers(0, 40))
def test_merges_equal_subword_nmt(counts, num_merges):
    assert learn_bpe(counts, num_merges).merges == reference_merges(counts, num_merges)


@settings(max_examples=60, deadline=None)
@given(corpora, st.integers(0, 40), st.lists(st.text("abcéd", min_size=1, max_size=10), max_size=8))
def test_segmentation_equals_subword_nmt(counts, num_merges, words):
    merges = reference_merges(counts, num_merges)
    assume(merges)  # subword-nmt refuses a codes file without merges
    ours = BPE(merges, "abcé").segment(words)
    assert ours == reference_segmenter(merges).segment_tokens(words)


@settings(max_examples=80, deadline=None)
@given(corpora, st.integers(0, 40), st.lists(st.text("abcé", min_size=1, max_size=10), max_size=8))
def test_segment_then_join_gives_the_words_back_and_stays_in_the_vocabulary(counts, num_merges, words):
    bpe = learn_bpe(counts, num_merges)
    tokens = bpe.segment(words)
    assert join_subwords(tokens) == words
    # Words drawn from the training alphabet only ever need known units.
    alphabet = set(bpe.alphabet)
    covered = [w for w in words if set(w) <= alphabet]
    assert set(bpe.segment(covered)) <= set(bpe.vocabulary())


# --- equal to subword-nmt on the real training text ---------------------------------------------


@pytest.fixture(scope="module")
def real_text():
    from tests.conftest import data_dir_with

    if data_dir_with("fra-eng.zip") is None:
        pytest.skip("fra-eng.zip not found under DIVEKIT_DATA")
    from divekit.tasks.translation import real_splits

    train, val, _ = real_splits(0)
    train_lines = [" ".join(side) for pair in train for side in pair]
    val_lines = [" ".join(side) for pair in val for side in pair]
    return train_lines, val_lines


def reference_on_text(lines: list[str], num_merges: int) -> list[tuple[str, str]]:
    out = io.StringIO()
    learn_ref.learn_bpe(io.StringIO("\n".join(lines) + "\n"), out, num_merges)
    return [tuple(line.split(" ")) for line in out.getvalue().rstrip("\n").split("\n")[1:]]


def check_real(real_text, num_merges: int) -> None:
    train_lines, val_lines = real_text
    bpe = learn_bpe(word_counts(line.split(" ") for line in train_lines), num_merges)
    merges = reference_on_text(train_lines, num_merges)
    assert len(bpe.merges) == num_merges
    assert bpe.merges == merges  # the same merges in the same order
    reference = reference_segmenter(merges)
    assert [bpe.segment_line(line) for line in val_lines] == [reference.segment(line) for line in val_lines]
    assert [" ".join(join_subwords(bpe.segment_line(line).split(" "))) for line in val_lines] == val_lines
    train_alphabet = {ch for line in train_lines for ch in line if ch != " "}
    assert set(bpe.alphabet) == train_alphabet
    vocabulary = set(bpe.vocabulary())
    assert all(tok in vocabulary for line in train_lines[:20000] for tok in bpe.segment_line(line).split(" "))


@pytest.mark.integration
def test_real_text_1000_merges_equal_subword_nmt(real_text):
    check_real(real_text, 1000)


@pytest.mark.integration
def test_real_text_8000_merges_equal_subword_nmt(real_text):
    check_real(real_text, 8000)


def test_word_counts_counts_tokens():
    assert word_counts([["a", "b"], ["a"]]) == Counter({"a": 2, "b": 1})
