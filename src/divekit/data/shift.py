"""Shifted Fashion-MNIST: a brightness-biased source set, and target sets with a chosen label prior.

Covariate shift. Each training image is kept for the source set with probability

    s(x) = sigmoid(strength * (b(x) - center) / scale),     b(x) = mean pixel intensity in [0, 1],

so p_source(x) = p(x) s(x) / Z with Z = E_p[s(x)], while the target keeps p(x). The true importance
weight is therefore known: p_target(x) / p_source(x) = Z / s(x). Since p(y|x) is untouched, this is
pure covariate shift even though the class mix of the source changes with it (bright classes such as
pullovers and coats are over-represented, sandals and sneakers under-represented).

Label shift. A target set with prior q is drawn class by class: round(n q_y) images of class y,
uniformly without replacement from that class's images, so p(x|y) is the test set's own.

Shapes: images uint8 ``(n, 28, 28)``, labels int64 ``(n,)``, priors float64 ``(classes,)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from divekit import seeding
from divekit.errors import DataError, ShapeError

Pair = tuple[torch.Tensor, torch.Tensor]


def _check_pair(images: torch.Tensor, labels: torch.Tensor, who: str) -> None:
    if images.dim() != 3 or labels.shape != (images.shape[0],):
        raise ShapeError(f"{who} expects images (n, H, W) and labels (n,), got {tuple(images.shape)} "
                         f"and {tuple(labels.shape)}")


def mean_brightness(images: torch.Tensor) -> torch.Tensor:
    """b(x): the mean pixel intensity in [0, 1] of uint8 images ``(n, H, W)``, as float64 ``(n,)``."""
    if images.dim() != 3 or images.dtype != torch.uint8:
        raise ShapeError(f"mean_brightness expects uint8 images (n, H, W), got {images.dtype} {tuple(images.shape)}")
    return images.double().mean((1, 2)) / 255.0


@dataclass(frozen=True)
class BrightnessSelection:
    """s(x) = sigmoid(strength * (b(x) - center) / scale): the chance an image enters the source set."""

    center: float  # brightness at which s = 1/2 (the pool's mean brightness)
    scale: float  # the pool's brightness standard deviation, so strength is in standard deviations
    strength: float  # 0: no bias; positive favours bright images, negative dark ones

    @classmethod
    def fit(cls, images: torch.Tensor, strength: float) -> "BrightnessSelection":
        b = mean_brightness(images)
        return cls(center=b.mean().item(), scale=b.std().item(), strength=strength)

    def prob(self, images: torch.Tensor) -> torch.Tensor:
        """s(x) ``(n,)`` for uint8 images ``(n, H, W)``."""
        return torch.sigmoid(self.strength * (mean_brightness(images) - self.center) / self.scale)


@dataclass(frozen=True)
class CovariateShiftSplit:
    """Source, target and oracle sets for a covariate-shift study.

    source:  labelled images drawn with the brightness bias (the training set we are given)
    target_inputs:  unlabelled target images (what the domain classifier sees of the target)
    oracle:  labelled target images, as many as the source (the training set we wish we had)
    test:  the 10,000 Fashion-MNIST test images, an unbiased target sample
    """

    source: Pair
    target_inputs: torch.Tensor
    oracle: Pair
    test: Pair
    selection: BrightnessSelection
    normalizer: float  # Z = E_p[s(x)], estimated over all training images

    def true_weights(self, images: torch.Tensor) -> torch.Tensor:
        """p_target(x) / p_source(x) = Z / s(x) ``(n,)``."""
        return self.normalizer / self.selection.prob(images)


def covariate_shift_split(train: Pair, test: Pair, *, n_source: int, n_target: int, strength: float = 2.0,
                          seed: int = 0) -> CovariateShiftSplit:
    """Split Fashion-MNIST ``train`` into a biased source and unbiased target/oracle sets (disjoint).

    A seeded permutation halves the training images: the source is drawn from the first half by
    keeping each image with probability s(x) (independent coin flips, so the kept images follow
    p(x) s(x) / Z exactly); the oracle set (``n_source`` images) and the unlabelled target inputs
    (``n_target`` images) are the start of the second half.
    """
    images, labels = train
    _check_pair(images, labels, "covariate_shift_split")
    _check_pair(*test, "covariate_shift_split")
    g = seeding.generator(seed, "data")
    order = torch.randperm(images.shape[0], generator=g)
    half = images.shape[0] // 2
    first, second = order[:half], order[half:]
    if n_source + n_target > second.numel():
        raise DataError(f"n_source + n_target = {n_source + n_target} exceeds the {second.numel()} images "
                        f"available for the oracle and target sets")
    selection = BrightnessSelection.fit(images, strength)
    keep_prob = selection.prob(images[first])
    kept = first[torch.rand(first.numel(), generator=g, dtype=torch.float64) < keep_prob]
    if kept.numel() < n_source:
        raise DataError(f"the brightness bias (strength {strength}) kept only {kept.numel()} images; "
                        f"n_source = {n_source} is too many")
    source_idx = kept[:n_source]
    oracle_idx, target_idx = second[:n_source], second[n_source : n_source + n_target]
    return CovariateShiftSplit(
        source=(images[source_idx], labels[source_idx]),
        target_inputs=images[target_idx],
        oracle=(images[oracle_idx], labels[oracle_idx]),
        test=test,
        selection=selection,
        normalizer=selection.prob(images).mean().item(),
    )


# -------------------------------------------------------------------------------- label shift
def class_prior(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Empirical class frequencies ``(num_classes,)`` (float64, sums to 1) of labels ``(n,)``."""
    if labels.dim() != 1 or labels.numel() == 0:
        raise ShapeError(f"class_prior expects non-empty labels (n,), got {tuple(labels.shape)}")
    return torch.bincount(labels, minlength=num_classes).double() / labels.numel()


def dirichlet_prior(num_classes: int, alpha: float, *, seed: int) -> torch.Tensor:
    """A prior ``(num_classes,)`` drawn from Dirichlet(alpha, ..., alpha); small alpha: more skewed."""
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    draw = np.random.default_rng(seeding.stream_seed(seed, "data")).dirichlet(np.full(num_classes, alpha))
    return torch.from_numpy(draw).double()


def dominant_prior(num_classes: int, dominant: int, share: float) -> torch.Tensor:
    """Class ``dominant`` gets ``share`` of the mass; the others split the rest equally."""
    if not 0 <= dominant < num_classes:
        raise ValueError(f"dominant class {dominant} is outside 0..{num_classes - 1}")
    if not 0 < share < 1:
        raise ValueError(f"share must be in (0, 1), got {share}")
    prior = torch.full((num_classes,), (1 - share) / (num_classes - 1), dtype=torch.float64)
    prior[dominant] = share
    return prior


def prior_counts(prior: torch.Tensor, n: int) -> torch.Tensor:
    """Integer class counts ``(classes,)`` summing to ``n``, closest to ``n * prior`` (largest remainder)."""
    if prior.dim() != 1 or (prior < 0).any() or abs(prior.sum().item() - 1) > 1e-6:
        raise ValueError("prior must be a non-negative vector summing to 1")
    exact = prior.double() * n
    counts = exact.floor().long()
    short = n - int(counts.sum())
    counts[torch.argsort(exact - counts, descending=True)[:short]] += 1
    return counts


def max_sample_size(labels: torch.Tensor, prior: torch.Tensor) -> int:
    """The largest ``n`` for which :func:`sample_with_prior` finds enough images of every class."""
    available = torch.bincount(labels, minlength=prior.numel())
    # Rounding gives class k at least n q_k - 1 images, so no n above (available_k + 1) / q_k can work;
    # below that bound, search down for the first n whose rounded counts fit.
    n = int(min((available[k].item() + 1) / prior[k].item() for k in range(prior.numel()) if prior[k] > 0))
    while n > 0 and (prior_counts(prior, n) > available).any():
        n -= 1
    return n


def sample_with_prior(images: torch.Tensor, labels: torch.Tensor, prior: torch.Tensor, n: int, *,
                      seed: int) -> tuple[Pair, torch.Tensor]:
    """``n`` images whose labels follow ``prior``, and the realised prior ``counts / n`` ``(classes,)``.

    Images of each class are drawn uniformly without replacement, so p(x|y) is that of ``images``.
    The result is shuffled, so class order carries no information.
    """
    _check_pair(images, labels, "sample_with_prior")
    counts = prior_counts(prior, n)
    g = seeding.generator(seed, "data")
    chosen = []
    for k, count in enumerate(counts.tolist()):
        pool = torch.nonzero(labels == k).flatten()
        if count > pool.numel():
            raise DataError(f"class {k} needs {count} images but only {pool.numel()} exist; "
                            f"use n <= {max_sample_size(labels, prior)}")
        chosen.append(pool[torch.randperm(pool.numel(), generator=g)[:count]])
    idx = torch.cat(chosen)
    idx = idx[torch.randperm(idx.numel(), generator=g)]
    return (images[idx], labels[idx]), counts.double() / n
