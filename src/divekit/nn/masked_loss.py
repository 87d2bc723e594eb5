"""Cross-entropy over padded target sequences, averaged over the real tokens only.

Symbols: B batch, T target steps, V vocabulary, N real tokens in the batch. Row ``b`` of a padded
batch holds ``valid_len[b]`` real tokens followed by padding::

    mask[b, t] = t < valid_len[b]                                        (B, T)
    loss       = sum_{b,t} mask[b, t] * CE(logits[b, t], y[b, t]) / N     N = sum_{b,t} mask[b, t]

The padded positions are removed *before* the softmax (``select_real``), not multiplied by zero
after it: their logits and labels never enter the computation, so whatever sits there changes
neither the loss nor any gradient, and the softmax is only paid for the N real tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from divekit.errors import ShapeError


def sequence_mask(valid_len: Tensor, steps: int) -> Tensor:
    """Boolean ``(B, T)`` mask, ``True`` at the first ``valid_len[b]`` positions of row ``b``."""
    if valid_len.dim() != 1:
        raise ShapeError(f"valid_len must have shape (B,), got {tuple(valid_len.shape)}")
    positions = torch.arange(steps, device=valid_len.device)
    return positions.unsqueeze(0) < valid_len.unsqueeze(1)  # (B, T)


def select_real(x: Tensor, valid_len: Tensor) -> Tensor:
    """The real positions of a padded batch ``(B, T, ...)`` stacked row by row: ``(N, ...)``."""
    if x.dim() < 2 or valid_len.shape != (x.shape[0],):
        raise ShapeError(
            f"expected a batch (B, T, ...) and valid_len (B,) with the same B, got {tuple(x.shape)} "
            f"and {tuple(valid_len.shape)}"
        )
    if valid_len.numel() and (valid_len.min() < 0 or valid_len.max() > x.shape[1]):
        raise ShapeError(f"valid_len must lie in [0, T={x.shape[1]}], got {valid_len.tolist()}")
    return x[sequence_mask(valid_len, x.shape[1])]


def at_least_float32(x: Tensor) -> Tensor:
    """``x`` in float32 if it is in a narrower float type (bfloat16 under autocast), else unchanged."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def masked_cross_entropy(
    logits: Tensor, targets: Tensor, valid_len: Tensor, *, label_smoothing: float = 0.0
) -> Tensor:
    """Mean cross-entropy over the real tokens of ``logits (B, T, V)`` against ``targets (B, T)``.

    Computed in float32 (or float64 if the logits are) whatever the autocast dtype, because a
    bfloat16 log-sum-exp over thousands of classes loses the digits the loss is made of.
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ShapeError(
            f"logits must be (B, T, V) and targets (B, T), got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    real_logits = select_real(logits, valid_len)  # (N, V)
    if real_logits.shape[0] == 0:
        raise ShapeError("the batch holds no real target token (every valid_len is 0)")
    return F.cross_entropy(at_least_float32(real_logits), select_real(targets, valid_len),
                           label_smoothing=label_smoothing)
