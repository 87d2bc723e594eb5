"""The masked sequence loss: real tokens only, whatever sits in the padding."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from divekit.errors import ShapeError
from divekit.nn.masked_loss import masked_cross_entropy, select_real, sequence_mask

SETTINGS = settings(max_examples=30, deadline=None)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only adds hand-offs


@st.composite
def padded_batches(draw):
    """Random logits (B, T, V) in float64, targets (B, T), lengths (B,) with at least one real token."""
    batch, steps, vocab = draw(st.integers(1, 5)), draw(st.integers(1, 7)), draw(st.integers(2, 9))
    lens = draw(st.lists(st.integers(0, steps), min_size=batch, max_size=batch))
    if sum(lens) == 0:
        lens[0] = 1
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    logits = torch.randn(batch, steps, vocab, generator=g, dtype=torch.float64) * 3
    targets = torch.randint(0, vocab, (batch, steps), generator=g)
    return logits, targets, torch.tensor(lens)


def loop_reference(logits: torch.Tensor, targets: torch.Tensor, lens: torch.Tensor) -> float:
    """-log softmax summed token by token over the real positions, divided by their number."""
    total, count = 0.0, 0
    for b in range(logits.shape[0]):
        for t in range(int(lens[b])):
            row = logits[b, t].tolist()
            log_z = math.log(sum(math.exp(v) for v in row))
            total += log_z - row[int(targets[b, t])]
            count += 1
    return total / count


def test_sequence_mask_hand_case():
    mask = sequence_mask(torch.tensor([2, 0, 3]), 4)
    assert mask.tolist() == [[True, True, False, False], [False] * 4, [True, True, True, False]]


def test_select_real_keeps_rows_in_order():
    x = torch.arange(12).view(3, 4)
    assert select_real(x, torch.tensor([1, 3, 0])).tolist() == [0, 4, 5, 6]


@SETTINGS
@given(padded_batches())
def test_loss_equals_a_token_by_token_reference(batch):
    logits, targets, lens = batch
    assert masked_cross_entropy(logits, targets, lens).item() == pytest.approx(loop_reference(logits, targets, lens),
                                                                               rel=1e-10)


@SETTINGS
@given(padded_batches(), st.integers(0, 2**31 - 1))
def test_padding_changes_neither_loss_nor_gradients(batch, seed):
    logits, targets, lens = batch
    pad = ~sequence_mask(lens, logits.shape[1])
    g = torch.Generator().manual_seed(seed)
    other_logits = torch.where(pad.unsqueeze(-1), torch.randn(logits.shape, generator=g, dtype=torch.float64) * 50,
                               logits)
    other_targets = torch.where(pad, torch.randint(0, logits.shape[2], targets.shape, generator=g), targets)
    results = []
    for lg, tg in ((logits, targets), (other_logits, other_targets)):
        lg = lg.clone().requires_grad_(True)
        loss = masked_cross_entropy(lg, tg, lens)
        loss.backward()
        results.append((loss.detach(), lg.grad))
    (loss_a, grad_a), (loss_b, grad_b) = results
    assert torch.equal(loss_a, loss_b)
    assert torch.equal(grad_a, grad_b)
    assert torch.all(grad_a[pad] == 0)  # nothing flows into the padding


@SETTINGS
@given(padded_batches(), st.floats(0.0, 0.5))
def test_label_smoothing_matches_its_formula(batch, eps):
    logits, targets, lens = batch
    vocab = logits.shape[2]
    real = sequence_mask(lens, logits.shape[1])
    logp = F.log_softmax(logits[real], dim=-1)
    # (1 - eps) * NLL of the label + eps * the mean NLL over the whole vocabulary
    expected = ((1 - eps) * -logp.gather(1, targets[real].unsqueeze(1)).squeeze(1) - eps * logp.sum(1) / vocab).mean()
    got = masked_cross_entropy(logits, targets, lens, label_smoothing=eps)
    assert got.item() == pytest.approx(expected.item(), rel=1e-10)


def test_bfloat16_logits_are_scored_in_float32():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 50, generator=g)
    targets, lens = torch.randint(0, 50, (2, 3), generator=g), torch.tensor([3, 2])
    loss = masked_cross_entropy(logits.bfloat16(), targets, lens)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(masked_cross_entropy(logits.bfloat16().float(), targets, lens).item())


def test_shape_errors_name_the_expected_shape():
    with pytest.raises(ShapeError, match=r"\(B, T, V\)"):
        masked_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), torch.tensor([1, 1]))
    with pytest.raises(ShapeError, match=r"valid_len \(B,\)"):
        select_real(torch.zeros(2, 3), torch.tensor([1, 1, 1]))
    with pytest.raises(ShapeError, match=r"\[0, T=3\]"):
        select_real(torch.zeros(2, 3), torch.tensor([1, 4]))
    with pytest.raises(ShapeError, match="no real target token"):
        masked_cross_entropy(torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), torch.tensor([0, 0]))
