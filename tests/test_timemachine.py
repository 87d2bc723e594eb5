"""The Time Machine: cleaning, tokenization, blocks, and the three minibatch partitions."""

from __future__ import annotations

import itertools
import string
import urllib.error
from collections.abc import Iterator

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from divekit.data import store
from divekit.data.timemachine import (
    IGNORE_INDEX,
    LMLoader,
    build_lm_data,
    clean_text,
    eval_stream,
    load_timemachine,
    random_batches,
    sequential_batches,
    split_blocks,
    tokenize,
)
from divekit.errors import DataError, ShapeError, UnknownNameError

from conftest import data_dir_with

SETTINGS = settings(max_examples=30, deadline=None)


# --- real data ---------------------------------------------------------------------------------




@pytest.fixture(scope="module")
def real_text() -> Iterator[str]:
    """The cleaned book through the store, from DIVEKIT_DATA or ../shared/data, never downloaded."""
    data_dir = data_dir_with("timemachine.txt")
    if data_dir is None:
        pytest.skip("timemachine.txt not found in $DIVEKIT_DATA or ../shared/data")

    def no_network(url: str, timeout: float) -> None:
        raise urllib.error.URLError("tests never download")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIVEKIT_DATA", str(data_dir))
        mp.setattr(store, "open_url", no_network)
        yield load_timemachine()


def test_real_sizes(real_text: str) -> None:
    assert len(real_text) == 173_428
    train, val, test = split_blocks(real_text)
    assert (len(train), len(val), len(test)) == (138_742, 17_343, 17_343)
    data = build_lm_data(real_text)
    assert len(data.vocab) == 28
    assert set(data.vocab.idx_to_token) == {"<unk>", " ", *string.ascii_lowercase}
    assert (data.train.numel(), data.val.numel(), data.test.numel()) == (138_742, 17_343, 17_343)
    assert "".join(data.vocab.to_tokens(data.test)) == test  # no character of the test block is lost


def test_real_text_is_cleaned(real_text: str) -> None:
    assert set(real_text) <= set(string.ascii_lowercase + " ")
    assert "  " not in real_text
    assert real_text.startswith("the time machine by h g wells i the time traveller")


# --- cleaning and tokens -----------------------------------------------------------------------


def reference_clean(text: str) -> str:
    """Group characters into letter / non-letter runs; each non-letter run becomes one space."""
    runs = itertools.groupby(text, lambda c: c in string.ascii_letters)
    return "".join("".join(run).lower() if letters else " " for letters, run in runs)


def test_clean_hand_cases() -> None:
    assert clean_text("The Time-Machine, 1898!\nHe said") == "the time machine he said"
    assert clean_text("café Ærø") == "caf r "  # non-ASCII letters are not letters here
    assert clean_text("  x  ") == " x "


@SETTINGS
@given(text=st.text(alphabet=string.printable + "éÆ\u00a0", max_size=60))
def test_clean_matches_reference(text: str) -> None:
    assert clean_text(text) == reference_clean(text)


def test_tokenize_char_and_word() -> None:
    assert tokenize("to be", "char") == ["t", "o", " ", "b", "e"]
    assert tokenize("to be  or", "word") == ["to", "be", "or"]
    assert tokenize(["a b", "", "c"], "word") == [["a", "b"], [], ["c"]]
    assert tokenize(["ab", "c"], "char") == [["a", "b"], ["c"]]
    with pytest.raises(UnknownNameError, match="char"):
        tokenize("x", "byte")


def test_build_lm_data_vocab_from_train_block_only() -> None:
    text = "ab" * 40 + "zzzzzzzzzz" + "qqqqqqqqqq"  # 80 / 10 / 10: z only in val, q only in test
    data = build_lm_data(text)
    assert "z" not in data.vocab and "q" not in data.vocab
    assert data.val.tolist() == [data.vocab.unk] * 10 and data.test.tolist() == [data.vocab.unk] * 10
    assert data.vocab.to_tokens(data.train) == list("ab" * 40)


# --- blocks ------------------------------------------------------------------------------------


def test_split_blocks_hand_case() -> None:
    assert split_blocks(list(range(10))) == ([0, 1, 2, 3, 4, 5, 6, 7], [8], [9])
    blocks = split_blocks(torch.arange(20), (0.5, 0.25, 0.25))
    assert [b.tolist() for b in blocks] == [list(range(10)), list(range(10, 15)), list(range(15, 20))]
    with pytest.raises(ValueError):
        split_blocks("abc", (0.5, 0.4))


@SETTINGS
@given(n=st.integers(0, 500), a=st.integers(0, 10), b=st.integers(0, 10), c=st.integers(1, 10))
def test_split_blocks_partition(n: int, a: int, b: int, c: int) -> None:
    fractions = (a / (a + b + c), b / (a + b + c), c / (a + b + c))
    blocks = split_blocks(list(range(n)), fractions)
    assert sum(blocks, []) == list(range(n))
    for block, f in zip(blocks, fractions):
        assert abs(len(block) - n * f) <= 1


# --- minibatches -------------------------------------------------------------------------------
# With corpus = arange(n) every value is its own position, so windows can be checked by value.


def starts(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[int]:
    return [int(x[b, 0]) for x, _ in batches for b in range(x.shape[0])]


@SETTINGS
@given(
    n=st.integers(40, 400),
    batch_size=st.integers(1, 6),
    num_steps=st.integers(1, 8),
    seed=st.integers(0, 5),
    epoch=st.integers(0, 5),
    sequential=st.booleans(),
)
def test_batches_shape_shift_and_count(
    n: int, batch_size: int, num_steps: int, seed: int, epoch: int, sequential: bool
) -> None:
    assume(n >= (batch_size + 1) * num_steps)
    loader = LMLoader(torch.arange(n), batch_size, num_steps, sequential=sequential, seed=seed)
    loader.set_epoch(epoch)
    batches = list(loader)
    assert len(batches) == len(loader) >= 1
    steps = torch.arange(num_steps)
    for x, y in batches:
        assert x.shape == y.shape == (batch_size, num_steps)
        assert x.dtype == y.dtype == torch.long
        assert torch.equal(x, x[:, :1] + steps)  # each row is one contiguous window
        assert torch.equal(y, x + 1)  # Y is X shifted by one token
        assert int(y.max()) < n
    first = starts(batches)
    assert 0 <= first[0] < n
    if not sequential:
        offset = first[0] % num_steps
        assert all(s % num_steps == offset for s in first)  # one grid of windows: no overlap
        assert len(set(first)) == len(first)


def test_batches_index_any_corpus_like_positions() -> None:
    corpus = torch.randint(0, 50, (300,))
    for fn in (random_batches, sequential_batches):
        by_value = list(fn(corpus, 4, 7, seed=3, epoch=2))
        by_position = list(fn(torch.arange(300), 4, 7, seed=3, epoch=2))
        for (x, y), (px, py) in zip(by_value, by_position, strict=True):
            assert torch.equal(x, corpus[px]) and torch.equal(y, corpus[py])


def test_random_windows_disjoint_and_shuffled() -> None:
    n, batch_size, num_steps = 203, 3, 5
    batches = list(random_batches(torch.arange(n), batch_size, num_steps, seed=0, epoch=0))
    first = starts(batches)
    covered = torch.cat([x.flatten() for x, _ in batches])
    assert covered.unique().numel() == covered.numel()  # no token in two windows
    offset = first[0] % num_steps
    grid = [s for s in range(offset, n, num_steps) if s + num_steps < n]  # windows whose targets fit
    assert set(first) <= set(grid) and len(first) == len(grid) // batch_size * batch_size
    assert first != sorted(first)  # order is random, not left to right


def test_sequential_rows_continue_across_batches() -> None:
    batch_size, num_steps = 4, 6
    batches = list(sequential_batches(torch.arange(500), batch_size, num_steps, seed=1, epoch=0))
    assert len(batches) >= 3
    for (x0, _), (x1, _) in itertools.pairwise(batches):
        assert torch.equal(x1[:, 0], x0[:, -1] + 1)  # row b picks up where it stopped
    first_col = batches[0][0][:, 0]
    stream_len = int(first_col[1] - first_col[0])
    assert torch.equal(first_col, first_col[0] + stream_len * torch.arange(batch_size))
    assert stream_len >= len(batches) * num_steps  # streams are disjoint


@pytest.mark.parametrize("sequential", [False, True])
def test_determinism_and_epoch_offsets(sequential: bool) -> None:
    corpus = torch.arange(1000)

    def epoch_batches(seed: int, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader = LMLoader(corpus, 4, 10, sequential=sequential, seed=seed)
        loader.set_epoch(epoch)
        return list(loader)

    again = epoch_batches(7, 3)
    for (x, y), (x2, y2) in zip(epoch_batches(7, 3), again, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    offsets = {starts(epoch_batches(7, e))[0] % 10 for e in range(8)}
    assert len(offsets) > 1  # epochs cut the text at different places
    # The seed matters (a sequential epoch has only 10 possible offsets, so two seeds may share one).
    assert len({tuple(starts(epoch_batches(seed, 3))) for seed in range(6)}) > 1


@pytest.mark.parametrize("sequential", [False, True])
def test_no_window_crosses_a_block_boundary(sequential: bool) -> None:
    for block in split_blocks(torch.arange(2000)):
        lo, hi = int(block[0]), int(block[-1])
        for epoch in range(3):
            loader = LMLoader(block, 5, 8, sequential=sequential, seed=epoch)
            loader.set_epoch(epoch)
            for x, y in loader:
                assert lo <= int(x.min()) and int(y.max()) <= hi


def test_loader_rejects_bad_input() -> None:
    with pytest.raises(ShapeError):
        LMLoader(torch.arange(100).view(10, 10), 2, 3, sequential=True)
    with pytest.raises(ShapeError):
        LMLoader(torch.arange(100.0), 2, 3, sequential=True)
    with pytest.raises(DataError, match="too short"):
        LMLoader(torch.arange(20), 4, 5, sequential=False)
    assert LMLoader(torch.arange(25), 4, 5, sequential=False).sequential is False


# --- evaluation stream -------------------------------------------------------------------------


@SETTINGS
@given(n=st.integers(2, 300), batch_size=st.integers(1, 9), num_steps=st.integers(1, 12))
def test_eval_stream_predicts_every_token_once(n: int, batch_size: int, num_steps: int) -> None:
    assume(n >= 2 * batch_size)
    batches = list(eval_stream(torch.arange(n), batch_size, num_steps))
    ys = torch.cat([y.flatten() for _, y in batches])
    targets = ys[ys != IGNORE_INDEX]
    # Reference stream starts: n % B streams of length n // B + 1 first, then length n // B.
    short, extra = divmod(n, batch_size)
    lengths = [short + 1] * extra + [short] * (batch_size - extra)
    stream_starts = set(itertools.accumulate([0, *lengths[:-1]]))
    assert sorted(targets.tolist()) == [i for i in range(n) if i not in stream_starts]
    for (x, _), (x_next, y_next) in itertools.pairwise(batches):
        real = y_next[:, 0] != IGNORE_INDEX  # a shorter stream may end in the last column
        assert torch.equal(x_next[real, 0], x[real, -1] + 1)
    for x, y in batches:
        assert x.shape == y.shape and x.shape[0] == batch_size and 1 <= x.shape[1] <= num_steps
        valid = y != IGNORE_INDEX
        assert torch.equal(y[valid], x[valid] + 1)


def test_eval_stream_needs_two_tokens_per_stream() -> None:
    with pytest.raises(DataError):
        list(eval_stream(torch.arange(5), 3, 4))
