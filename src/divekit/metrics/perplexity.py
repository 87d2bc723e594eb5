"""Perplexity, bits per character and count-based baselines for language models.

For targets ``y_1..y_N`` and a model's probabilities ``p(y_t | y_<t)``::

    nll        = -(1/N) sum_t ln p(y_t | y_<t)        (nats per token)
    perplexity = exp(nll)                               (a uniform guess over V tokens scores V)
    bits/char  = nll / ln 2 = log2(perplexity)

Baselines (``ngram_perplexity``) count n-grams on the training block and score the held-out block
with add-one (Laplace) smoothing::

    p(w | c) = (count(c, w) + 1) / (count(c) + V)       c: the previous order-1 tokens

Order 1 is the unigram model (``c`` empty, ``count(c)`` the number of training tokens). Every order
scores the same targets, the held-out tokens from position 2 on, so the numbers compare directly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from divekit.errors import ShapeError

# Targets of every baseline start here, so that orders up to 3 have a full context for each.
_FIRST_TARGET = 2


def perplexity(nll_sum: float, count: int | float) -> float:
    """``exp(nll_sum / count)``: the perplexity of ``count`` targets with total negative log-likelihood (nats)."""
    if count <= 0:
        raise ValueError(f"count must be positive, got {count}")
    return math.exp(nll_sum / count)


def bits_per_char(ppl: float) -> float:
    """``log2(perplexity)``: average bits per token of an ideal code driven by the model."""
    return math.log2(ppl)


def nll_metrics(nll_sum: float, count: int, seconds: float) -> dict[str, float]:
    """A held-out block's report: mean nll per token (``loss``), perplexity, bits per token, tokens/s."""
    loss = nll_sum / count
    return {"loss": loss, "perplexity": perplexity(nll_sum, count), "bits_per_char": loss / math.log(2),
            "tokens_per_s": count / max(seconds, 1e-9)}


def perplexity_from_logits(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> float:
    """Perplexity of logits ``(..., V)`` for targets ``(...)``; positions equal to ``ignore_index`` are skipped."""
    if logits.shape[:-1] != targets.shape:
        raise ShapeError(f"logits must have shape (*targets.shape, V) = {(*targets.shape, 'V')}, "
                         f"got {tuple(logits.shape)}")
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(), targets.reshape(-1),
                          ignore_index=ignore_index, reduction="sum")
    return perplexity(nll.item(), int((targets != ignore_index).sum()))


def uniform_perplexity(vocab_size: int) -> float:
    """A model that gives every one of ``V`` tokens probability ``1/V`` has perplexity ``V``."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return float(vocab_size)


def _ngram_ids(tokens: torch.Tensor, order: int, vocab_size: int, start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Context ids (base-V numbers of the previous order-1 tokens) and targets, for targets from ``start`` on."""
    targets = tokens[start:]
    context = torch.zeros_like(targets)
    for back in range(1, order):
        context = context * vocab_size + tokens[start - back : tokens.numel() - back]
    return context, targets


def ngram_perplexity(train: torch.Tensor, heldout: torch.Tensor, vocab_size: int, order: int) -> float:
    """Perplexity on ``heldout`` of an add-one smoothed ``order``-gram model counted on ``train``.

    Both blocks are 1-D LongTensors ``(tokens,)`` of indices below ``vocab_size``.
    """
    for name, block in (("train", train), ("heldout", heldout)):
        if block.dim() != 1 or block.numel() <= _FIRST_TARGET:
            raise ShapeError(f"{name} must be a 1-D tensor (tokens,) longer than {_FIRST_TARGET}, "
                             f"got shape {tuple(block.shape)}")
    if not 1 <= order <= _FIRST_TARGET + 1:
        raise ValueError(f"order must lie in [1, {_FIRST_TARGET + 1}], got {order}")
    contexts = vocab_size ** (order - 1)
    ctx, tgt = _ngram_ids(train, order, vocab_size, order - 1)
    joint = torch.bincount(ctx * vocab_size + tgt, minlength=contexts * vocab_size).double()
    marginal = joint.view(contexts, vocab_size).sum(1)
    ctx, tgt = _ngram_ids(heldout, order, vocab_size, _FIRST_TARGET)
    log_p = torch.log(joint[ctx * vocab_size + tgt] + 1) - torch.log(marginal[ctx] + vocab_size)
    return math.exp(-log_p.mean().item())


def baselines(train: torch.Tensor, heldout: torch.Tensor, vocab_size: int) -> dict[str, float]:
    """Uniform, unigram, bigram and trigram (add-one) perplexities of ``heldout``."""
    return {
        "uniform": uniform_perplexity(vocab_size),
        "unigram": ngram_perplexity(train, heldout, vocab_size, 1),
        "bigram": ngram_perplexity(train, heldout, vocab_size, 2),
        "trigram": ngram_perplexity(train, heldout, vocab_size, 3),
    }
