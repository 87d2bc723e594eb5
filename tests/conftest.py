"""Shared test set-up: find the datasets, keep runs out of the working tree."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# The suite reads real data from DIVEKIT_DATA; default to the checkout's sibling shared/data.
if "DIVEKIT_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["DIVEKIT_DATA"] = str(SHARED_DATA)


def data_dir_with(relpath: str) -> Path | None:
    """The data directory (DIVEKIT_DATA, else the checkout's sibling shared/data) holding ``relpath``, or None."""
    env = os.environ.get("DIVEKIT_DATA")
    candidates = ([Path(env)] if env else []) + [SHARED_DATA]
    return next((p for p in candidates if (p / relpath).exists()), None)


def have_fashion_mnist() -> bool:
    root = os.environ.get("DIVEKIT_DATA")
    return bool(root) and (Path(root) / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file()


needs_fashion_mnist = pytest.mark.skipif(not have_fashion_mnist(), reason="Fashion-MNIST not found under DIVEKIT_DATA")


@pytest.fixture(scope="session", autouse=True)
def _precision_cache(tmp_path_factory) -> Iterator[Path]:
    """One ``--precision auto`` cache and one user cache for the whole session, set before any fixture runs.

    Module fixtures that train (a reference run, checkpoints to sample from) are set up before the
    per-test fixture below, so without this they would read the home directory's cache, where an
    earlier choice for the same model may differ from the one the tests then measure.
    """
    cache = tmp_path_factory.mktemp("precision") / "precision.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIVEKIT_PRECISION_CACHE", str(cache))
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg")))
        mp.setenv("DIVEKIT_RUNS", str(tmp_path_factory.mktemp("runs")))
        yield cache


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path, monkeypatch):
    """Each test's runs and user cache go to its own temporary directory.

    ``--precision auto``'s measurements stay in the session's file (``_precision_cache``), as on a
    user's machine: a model of a given shape is measured once, not once per test
    (tests/test_precision.py isolates its own).
    """
    monkeypatch.setenv("DIVEKIT_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # Tests of the download path replace the network opener themselves; CI's offline switch must not hide it.
    monkeypatch.delenv("DIVEKIT_OFFLINE", raising=False)


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: for tiny tensors a second thread only adds hand-offs, badly so on a busy CPU."""
    from divekit.cpu import single_thread

    with single_thread():
        yield


def reversal_pairs(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """A toy "translation": words w0..w14 become m0..m14 in reverse order (1 to 6 words)."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        src = [f"w{rng.randrange(15)}" for _ in range(rng.randint(1, 6))]
        pairs.append((src, [w.replace("w", "m") for w in reversed(src)]))
    return pairs


def assert_learns_one_batch(model, src, src_len, dec_input, num_classes: int, lr: float, frozen=()) -> None:
    """40 Adam steps on one batch of an encoder-decoder at least halve the loss; every parameter gets a gradient.

    The labels ``(dec_input + src[:, :1]) % num_classes`` need both the target token and the source.
    ``frozen`` names substrings of parameters that are not expected to receive gradients.
    """
    import torch
    import torch.nn.functional as F

    labels = (dec_input + src[:, :1]) % num_classes
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(model(src, src_len, dec_input).flatten(0, 1), labels.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    for name, p in model.named_parameters():
        if not any(part in name for part in frozen):
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
