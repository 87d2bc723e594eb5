"""Shifted Fashion-MNIST splits: the brightness-biased source and the label-shifted target sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from divekit.data.shift import (
    BrightnessSelection, class_prior, covariate_shift_split, dirichlet_prior, dominant_prior, max_sample_size,
    mean_brightness, prior_counts, sample_with_prior,
)
from divekit.errors import DataError, ShapeError

from conftest import data_dir_with


def _images(n: int, seed: int = 0, size: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """n small images of varied brightness; pixel (0, 0) and (0, 1) spell the index in base 256."""
    g = torch.Generator().manual_seed(seed)
    level = torch.randint(10, 246, (n, 1, 1), generator=g)
    noise = torch.randint(-10, 10, (n, size, size), generator=g)
    images = (level + noise).clamp(0, 255).to(torch.uint8)
    index = torch.arange(n)
    images[:, 0, 0], images[:, 0, 1] = (index % 256).to(torch.uint8), (index // 256).to(torch.uint8)
    return images, torch.randint(0, 10, (n,), generator=g)


def _ids(images: torch.Tensor) -> set[int]:
    return set((images[:, 0, 0].long() + 256 * images[:, 0, 1].long()).tolist())


# -------------------------------------------------------------------------------- covariate shift
def test_mean_brightness_hand_computed():
    images = torch.tensor([[[0, 255], [255, 0]], [[51, 51], [51, 51]]], dtype=torch.uint8)
    torch.testing.assert_close(mean_brightness(images), torch.tensor([0.5, 0.2], dtype=torch.float64))
    with pytest.raises(ShapeError, match=r"\(n, H, W\)"):
        mean_brightness(images.float())


def test_selection_is_one_half_at_the_center_and_rises_with_brightness():
    images, _ = _images(500)
    sel = BrightnessSelection.fit(images, strength=2.0)
    b = mean_brightness(images)
    p = sel.prob(images)
    assert (p[torch.argsort(b)].diff() >= 0).all()
    expected = 1 / (1 + np.exp(-2.0 * (b.numpy() - b.mean().item()) / b.std().item()))
    np.testing.assert_allclose(p.numpy(), expected, rtol=1e-12)


def test_covariate_split_sizes_disjointness_and_bias():
    train, test = _images(12_000, seed=1), _images(500, seed=2)
    split = covariate_shift_split(train, test, n_source=1500, n_target=2000, strength=2.0, seed=0)
    assert split.source[0].shape == (1500, 6, 6) and split.oracle[0].shape == (1500, 6, 6)
    assert split.target_inputs.shape == (2000, 6, 6) and split.test[0] is test[0]
    ids = [_ids(split.source[0]), _ids(split.oracle[0]), _ids(split.target_inputs)]
    assert sum(map(len, ids)) == len(set.union(*ids)) == 5000  # no image in two sets, none twice
    assert mean_brightness(split.source[0]).mean() > mean_brightness(split.oracle[0]).mean() + 0.05


def test_true_weights_undo_the_selection():
    """p(x) s(x) / Z reweighted by Z / s(x) is p(x): weighted source means equal the pool's."""
    train, test = _images(40_000, seed=3), _images(10, seed=9)
    split = covariate_shift_split(train, test, n_source=6000, n_target=100, strength=1.5, seed=1)
    b = mean_brightness(split.source[0])
    w = split.true_weights(split.source[0])
    assert w.mean().item() == pytest.approx(1.0, abs=0.05)  # E_source[Z / s] = 1
    pool_mean = mean_brightness(train[0]).mean().item()
    assert ((w * b).sum() / w.sum()).item() == pytest.approx(pool_mean, abs=0.01)
    assert b.mean().item() > pool_mean + 0.05


def test_zero_strength_is_an_unbiased_source():
    train, test = _images(4000, seed=4), _images(10, seed=9)
    split = covariate_shift_split(train, test, n_source=800, n_target=800, strength=0.0, seed=0)
    torch.testing.assert_close(split.true_weights(split.source[0]), torch.ones(800, dtype=torch.float64))


def test_too_large_a_source_is_a_data_error():
    train, test = _images(2000, seed=5), _images(10, seed=9)
    with pytest.raises(DataError, match="n_source"):
        covariate_shift_split(train, test, n_source=900, n_target=10, strength=8.0, seed=0)
    with pytest.raises(DataError, match="exceeds"):
        covariate_shift_split(train, test, n_source=600, n_target=600, seed=0)


# -------------------------------------------------------------------------------- label shift
def test_class_prior_matches_numpy():
    labels = torch.tensor([0, 2, 2, 3, 3, 3])
    np.testing.assert_allclose(class_prior(labels, 5).numpy(), np.bincount(labels.numpy(), minlength=5) / 6)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=12).filter(lambda v: sum(v) > 1e-3),
       st.integers(0, 5000))
def test_prior_counts_sum_to_n_and_stay_within_one(raw, n):
    prior = torch.tensor(raw, dtype=torch.float64)
    prior = prior / prior.sum()
    counts = prior_counts(prior, n)
    assert int(counts.sum()) == n
    assert ((counts.double() - n * prior).abs() < 1 + 1e-9).all()


def test_dirichlet_prior_is_a_seeded_distribution_with_the_right_mean():
    draws = torch.stack([dirichlet_prior(10, 0.5, seed=s) for s in range(400)])
    torch.testing.assert_close(draws.sum(1), torch.ones(400, dtype=torch.float64))
    assert torch.equal(dirichlet_prior(10, 0.5, seed=3), dirichlet_prior(10, 0.5, seed=3))
    # E[p_k] = 1/K; the sd of one coordinate is sqrt((1/K)(1 - 1/K) / (K alpha + 1)) = 0.122.
    assert (draws.mean(0) - 0.1).abs().max() < 4 * 0.122 / 20
    # Smaller alpha: more skewed priors (a larger largest class on average).
    assert dirichlet_prior(10, 0.1, seed=0).max() > 0 and (
        torch.stack([dirichlet_prior(10, 0.1, seed=s).max() for s in range(50)]).mean() > draws.max(1).values.mean())


def test_dominant_prior():
    p = dominant_prior(10, 6, 0.5)
    assert p[6] == 0.5 and p.sum().item() == pytest.approx(1.0)
    assert torch.allclose(p[torch.arange(10) != 6], torch.full((9,), 0.5 / 9, dtype=torch.float64))
    with pytest.raises(ValueError):
        dominant_prior(10, 10, 0.5)


def test_sample_with_prior_keeps_class_conditionals_and_counts():
    images, labels = _images(3000, seed=6)
    prior = dominant_prior(10, 2, 0.4)
    (x, y), realised = sample_with_prior(images, labels, prior, 500, seed=0)
    counts = prior_counts(prior, 500)
    assert torch.equal(torch.bincount(y, minlength=10), counts)
    torch.testing.assert_close(realised, counts.double() / 500)
    # Every sampled image is an original image of the same class, none drawn twice.
    index = (x[:, 0, 0].long() + 256 * x[:, 0, 1].long())
    assert len(set(index.tolist())) == 500
    assert torch.equal(labels[index], y)
    assert not torch.equal(y[:50], y[:50].sort().values)  # shuffled, not grouped by class


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.05, 1.0))
def test_max_sample_size_is_feasible_and_tight(seed, alpha):
    _, labels = _images(800, seed=seed % 7)
    images = torch.zeros(800, 2, 2, dtype=torch.uint8)
    prior = dirichlet_prior(10, alpha, seed=seed)
    n = max_sample_size(labels, prior)
    sample_with_prior(images, labels, prior, n, seed=0)
    with pytest.raises(DataError, match="use n <="):
        sample_with_prior(images, labels, prior, n + 1, seed=0)


# -------------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def fashion():
    if data_dir_with("fashion-mnist/train-images-idx3-ubyte.gz") is None:
        pytest.skip("Fashion-MNIST not found (set DIVEKIT_DATA to a directory holding it)")
    from divekit.data.fashion_mnist import load_fashion_mnist

    return load_fashion_mnist("train", download=False), load_fashion_mnist("test", download=False)


def test_real_brightness_bias_shifts_classes_and_weights_restore_them(fashion):
    train, test = fashion
    split = covariate_shift_split(train, test, n_source=10_000, n_target=1000, strength=2.0, seed=0)
    source_prior = class_prior(split.source[1], 10)
    target_prior = class_prior(test[1], 10)
    # Bright coats and pullovers in, dark sandals out: the source class mix moves by over 7 points...
    assert source_prior[5] < 0.3 * target_prior[5] and source_prior[4] > 1.3 * target_prior[4]
    # ...and the true importance weights bring every class back within 3 points of the target's
    # (the heavy weights of the rare dark images leave a few points of sampling noise).
    w = split.true_weights(split.source[0])
    weighted = torch.stack([(w * (split.source[1] == k)).sum() / w.sum() for k in range(10)])
    assert (weighted - target_prior).abs().max() < 0.03
    assert (weighted - target_prior).abs().max() < 0.5 * (source_prior - target_prior).abs().max()


def test_real_label_shift_target_has_the_requested_counts(fashion):
    _, (x, y) = fashion
    prior = dominant_prior(10, 6, 0.5)
    n = max_sample_size(y, prior)
    assert n == 2000  # 1,000 shirts in the test set are half of 2,000
    (xs, ys), realised = sample_with_prior(x, y, prior, n, seed=0)
    assert xs.shape == (2000, 28, 28) and realised[6] == 0.5
