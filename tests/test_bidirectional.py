"""Bidirectional tagger, deep biLM without leakage, the ELMo-style mix, and the word-start tags."""

from __future__ import annotations

import pytest
import torch

from divekit.errors import ShapeError
from divekit.experiments.bidirectional import word_start_tags
from divekit.models.bilstm_tagger import BiRNNTagger, DeepBiLM, FeatureTagger, ScalarMix


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only adds hand-offs


def test_word_start_tags_by_hand():
    # " ab c" with space id 0: letters a b c, tags 1 0 1.
    letters, tags = word_start_tags(torch.tensor([0, 1, 2, 0, 3]), space=0)
    assert letters.tolist() == [1, 2, 3] and tags.tolist() == [1, 0, 1]


def test_scalar_mix_is_a_softmax_weighted_sum():
    mix = ScalarMix(3)
    with torch.no_grad():
        mix.logits.copy_(torch.tensor([0.0, 1.0, 2.0]))
        mix.gamma.fill_(2.0)
    layers = torch.randn(3, 2, 4, 5)
    w = torch.exp(torch.tensor([0.0, 1.0, 2.0]))
    w = w / w.sum()
    expected = 2.0 * (w[0] * layers[0] + w[1] * layers[1] + w[2] * layers[2])
    torch.testing.assert_close(mix(layers), expected)
    assert mix.weights().sum().item() == pytest.approx(1.0)
    with pytest.raises(ShapeError, match="L=3"):
        mix(torch.randn(2, 2, 4, 5))


def test_causal_tagger_ignores_the_future_and_bidirectional_does_not():
    torch.manual_seed(0)
    x = torch.randint(7, (2, 9))
    y = x.clone()
    y[:, 6:] = (y[:, 6:] + 1) % 7  # change only positions 6..8
    causal = BiRNNTagger(7, 2, hidden=8, bidirectional=False)
    torch.testing.assert_close(causal(x)[:, :6], causal(y)[:, :6])
    bi = BiRNNTagger(7, 2, hidden=8, bidirectional=True)
    assert not torch.allclose(bi(x)[:, :6], bi(y)[:, :6])


def test_bilm_directions_do_not_see_their_targets():
    torch.manual_seed(0)
    bilm = DeepBiLM(7, hidden=6, layers=2)
    x = torch.randint(7, (2, 8))
    f, b, layers = bilm(x)
    assert layers.shape == (3, 2, 8, 12) and f.shape == b.shape == (2, 8, 7)
    y = x.clone()
    y[:, 5] = (y[:, 5] + 1) % 7
    f2, b2, _ = bilm(y)
    # forward logits up to position 4 predict x_5 and must not depend on it; backward from 6 on likewise.
    torch.testing.assert_close(f[:, :5], f2[:, :5])
    torch.testing.assert_close(b[:, 6:], b2[:, 6:])


def test_feature_tagger_trains_only_its_head_and_mix():
    torch.manual_seed(0)
    bilm = DeepBiLM(7, hidden=6, layers=2)
    tagger = FeatureTagger(bilm, 2, mix=True)
    logits = tagger(torch.randint(7, (2, 5)))
    assert logits.shape == (2, 5, 2)
    logits.sum().backward()
    assert all(p.grad is None for p in bilm.parameters())
    assert tagger.mix.logits.grad is not None and tagger.head.weight.grad is not None
