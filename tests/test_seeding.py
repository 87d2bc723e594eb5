"""One run seed, independent streams: no two purposes of a run draw the same numbers."""

from __future__ import annotations

import itertools

import pytest
import torch

from divekit import seeding
from divekit.data.synthetic import linear_data
from divekit.errors import DivekitError
from divekit.experiments.weight_decay import train_linear


def _max_abs_cosine(w: torch.Tensor, rows: torch.Tensor) -> float:
    return (rows @ w / (rows.norm(dim=1) * w.norm())).abs().max().item()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weight_decay_initial_weights_are_uncorrelated_with_every_training_input(seed):
    """Seeding the weights' and the data's generators alike made w0 equal the first input (cosine 0.94).

    For independent N(0, I) vectors in 200 dimensions the cosine has standard deviation 1/sqrt(200)
    = 0.07, so over 20 inputs the largest |cosine| stays far below 0.35.
    """
    data = linear_data(seed=seed)
    w0 = train_linear(data, 0.0, epochs=0, seed=seed).w
    assert _max_abs_cosine(w0, data.train_x) < 0.35
    assert _max_abs_cosine(w0, data.test_x) < 0.45


def test_streams_of_one_seed_are_distinct_and_reproducible():
    draws = {}
    for purpose in sorted(seeding.PURPOSES):
        for keys in [(), (0,), (1,), (0, 0), (0, 1)]:
            first = torch.randn(64, generator=seeding.generator(5, purpose, *keys))
            again = torch.randn(64, generator=seeding.generator(5, purpose, *keys))
            assert torch.equal(first, again)
            draws[purpose, keys] = first
    for (a, x), (b, y) in itertools.combinations(draws.items(), 2):
        cosine = (x @ y / (x.norm() * y.norm())).abs().item()
        assert cosine < 0.6, (a, b, cosine)  # 64-d independent draws: |cos| ~ 0.125


def test_stream_seeds_differ_across_seeds_and_are_63_bit():
    seeds = {seeding.stream_seed(s, p) for s in range(50) for p in seeding.PURPOSES}
    assert len(seeds) == 50 * len(seeding.PURPOSES)
    assert all(0 <= s < 2**63 for s in seeds)
    # Not the trap this module exists for: a stream seed is never the run seed itself.
    assert all(seeding.stream_seed(s, "init") != s for s in range(50))


def test_bad_seeds_and_purposes_are_refused():
    with pytest.raises(DivekitError, match=">= 0"):
        seeding.stream_seed(-1, "data")
    with pytest.raises(ValueError, match="unknown random-stream purpose"):
        seeding.stream_seed(0, "dropuot")


def test_global_init_stream_is_not_the_data_stream():
    """An experiment seeds torch's global generator for building models: it must not replay the data."""
    seeding.seed_global(0, "init")
    weights = torch.randn(200)
    data = torch.randn(200, generator=seeding.generator(0, "data"))
    assert not torch.allclose(weights, data)
    assert _max_abs_cosine(weights, data[None]) < 0.35
