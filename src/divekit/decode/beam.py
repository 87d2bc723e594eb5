"""Batched beam search with length normalisation, for any model with the step interface.

The model offers ``init_state``, ``step`` and ``reorder_state`` (see
:class:`divekit.decode.greedy.StepDecoder`). Every source keeps ``k`` live prefixes ("beams");
B sources are decoded together as ``B * k`` rows, row ``b * k + j`` holding beam ``j`` of source ``b``.

One step, for each source::

    candidates  = { (y, v) : y a live beam, v in the vocabulary },  raw(y v) = raw(y) + log p(v | y, x)
    top         = the 2k candidates with the highest raw score
    finished   += the <eos> candidates among the first k of top      (kept aside, never extended)
    live beams  = the first k candidates of top that are not <eos>

Taking 2k candidates guarantees k live beams: the k beams have only k ``<eos>`` extensions between
them. A finished hypothesis of L generated tokens (``<eos>`` included) is ranked by

    score = raw / L ** alpha

``alpha = 0`` ranks by probability, which favours short outputs; ``alpha = 1`` by the mean
log-probability per token. After ``max_len`` steps the live beams are finished too, without
``<eos>``, with ``L = max_len``.

A source stops when it has ``k`` finished hypotheses, or earlier when no live beam can overtake
the best finished one: log-probabilities are at most 0, so a live beam's final score is at most
``raw / max_len ** alpha`` (``alpha >= 0``), and once the best finished score reaches that bound
for every live beam, searching on cannot change the answer. Sources that stop leave the batch.

Properties (tested): ``k = 1`` returns greedy search's output; when ``k`` is at least the number
of possible outputs nothing is ever pruned, so the result is the exhaustive-search optimum. A wider
beam is *not* guaranteed to score at least as well as a narrower one: pruning can drop, at some
step, the prefix a narrower beam would have kept (the tests include such a model).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from divekit.decode.greedy import Hypothesis, StepDecoder, check_inputs, greedy_search


def length_normalised(log_prob: float, length: int, alpha: float) -> float:
    """``log_prob / length ** alpha``: the score finished hypotheses are ranked by."""
    return log_prob / length**alpha if alpha else log_prob


class _Finished:
    """The finished hypotheses of every source, with the per-source count and best score as tensors."""

    def __init__(self, batch: int, alpha: float, device: torch.device) -> None:
        self.alpha = alpha
        self.lists: list[list[Hypothesis]] = [[] for _ in range(batch)]
        self.count = torch.zeros(batch, dtype=torch.long, device=device)
        self.best = torch.full((batch,), -math.inf, dtype=torch.float64, device=device)

    def add(self, source: int, tokens: list[int], log_prob: float, length: int, ended: bool) -> None:
        score = length_normalised(log_prob, length, self.alpha)
        self.lists[source].append(Hypothesis(tuple(tokens), log_prob, length, score, ended))
        self.count[source] += 1
        self.best[source] = max(float(self.best[source]), score)

    def ranked(self, nbest: int) -> list[list[Hypothesis]]:
        return [sorted(hyps, key=lambda h: -h.score)[:nbest] for hyps in self.lists]


@torch.no_grad()
def beam_search(
    model: StepDecoder,
    src: Tensor,
    src_valid_len: Tensor,
    *,
    bos: int,
    eos: int,
    max_len: int,
    beam_size: int,
    alpha: float = 0.0,
    nbest: int = 1,
) -> list[list[Hypothesis]]:
    """Beam search over a batch of sources ``src (B, S)`` with lengths ``src_valid_len (B,)``.

    Args:
        bos, eos: the target vocabulary's ``<bos>`` (first decoder input) and ``<eos>`` indices.
        max_len: most tokens generated per source, ``<eos>`` included.
        beam_size: ``k``, live prefixes per source.
        alpha: length-normalisation exponent (``>= 0``).
        nbest: how many hypotheses to return per source.

    Returns:
        For each source, up to ``nbest`` :class:`Hypothesis` objects, best score first.
    """
    check_inputs(src, src_valid_len, max_len)
    if beam_size < 1 or nbest < 1:
        raise ValueError(f"beam_size and nbest must be at least 1, got {beam_size} and {nbest}")
    if alpha < 0:
        raise ValueError(f"alpha must be non-negative (the stopping bound assumes it), got {alpha}")
    batch, k, device = src.shape[0], beam_size, src.device
    state = model.reorder_state(model.init_state(src, src_valid_len),
                                torch.arange(batch, device=device).repeat_interleave(k))
    search = _Search(batch, k, alpha, max_len, bos, device)
    for t in range(1, max_len + 1):
        log_probs, state = model.step(search.last_tokens(), state)  # (rows * k, V)
        index = search.advance(log_probs, t, eos)
        if index is None:
            break
        state = model.reorder_state(state, index)
    return search.finished.ranked(nbest)


class _Search:
    """The live beams of the sources still being searched (``rows`` of them), and their bookkeeping."""

    def __init__(self, batch: int, k: int, alpha: float, max_len: int, bos: int, device: torch.device) -> None:
        self.k, self.alpha, self.max_len = k, alpha, max_len
        self.sources = torch.arange(batch, device=device)  # original index of each row still searched
        self.raw = torch.full((batch, k), -math.inf, dtype=torch.float64, device=device)
        self.raw[:, 0] = 0.0  # one real beam at the start: the k copies would only yield duplicates
        self.prefix = torch.full((batch, k, 0), bos, dtype=torch.long, device=device)  # (rows, k, t - 1)
        self.tokens = torch.full((batch, k), bos, dtype=torch.long, device=device)
        self.finished = _Finished(batch, alpha, device)

    def last_tokens(self) -> Tensor:
        return self.tokens.reshape(-1)  # (rows * k,)

    def advance(self, log_probs: Tensor, t: int, eos: int) -> Tensor | None:
        """Extend every beam by one token; return the state rows to keep, or None when all are done."""
        rows, k = self.raw.shape
        vocab = log_probs.shape[-1]
        if vocab < 2:
            raise ValueError("beam search needs a vocabulary of at least two tokens")
        cand = (self.raw.unsqueeze(-1) + log_probs.double().view(rows, k, vocab)).view(rows, k * vocab)
        top, flat = cand.topk(min(2 * k, k * vocab), dim=1)  # (rows, 2k), best first
        beam, token = flat // vocab, flat % vocab
        is_eos = token == eos
        real = torch.isfinite(top)
        in_first_k = torch.arange(top.shape[1], device=top.device) < k
        self._finish(is_eos & real & in_first_k, beam, top, t, ended=True)
        keep = ~is_eos & (torch.cumsum(~is_eos, dim=1) <= k)  # the first k non-<eos> candidates
        beam, token, top = beam[keep].view(rows, k), token[keep].view(rows, k), top[keep].view(rows, k)
        self.prefix = torch.cat((self.prefix.gather(1, beam.unsqueeze(-1).expand(-1, -1, t - 1)),
                                 token.unsqueeze(-1)), dim=2)
        self.raw, self.tokens = top, token
        if t == self.max_len:
            self._finish(torch.isfinite(top), torch.arange(k, device=top.device).expand(rows, k), top, t,
                         ended=False, extended=True)
            return None
        return self._compact(beam)

    def _finish(self, mask: Tensor, beam: Tensor, raw: Tensor, t: int, *, ended: bool,
                extended: bool = False) -> None:
        """Move the candidates at ``mask`` (rows, n) to the finished lists."""
        for r, j in mask.nonzero().tolist():
            b = int(beam[r, j])
            tokens = self.prefix[r, b] if extended else self.prefix[r, b, : t - 1]
            self.finished.add(int(self.sources[r]), tokens.tolist(), float(raw[r, j]), t, ended)

    def _compact(self, beam: Tensor) -> Tensor | None:
        """Drop the sources that are done; return the rows of the old state the live beams continue."""
        rows, k = self.raw.shape
        count, best = self.finished.count[self.sources], self.finished.best[self.sources]
        bound = self.raw.max(dim=1).values / self.max_len**self.alpha  # best any live beam can still reach
        done = (count >= k) | ((count > 0) & (best >= bound))
        parent = torch.arange(rows, device=beam.device).unsqueeze(1) * k + beam  # (rows, k) old state rows
        if done.all():
            return None
        if done.any():
            live = ~done
            self.sources, self.raw, self.prefix = self.sources[live], self.raw[live], self.prefix[live]
            self.tokens, parent = self.tokens[live], parent[live]
        return parent.reshape(-1)


def decode_batch(model: Any, src: Tensor, src_valid_len: Tensor, *, bos: int, eos: int, max_len: int,
                 beam_size: int = 1, alpha: float = 0.0) -> list[Hypothesis]:
    """The best hypothesis per source: greedy search for ``beam_size == 1``, else beam search."""
    if beam_size == 1:
        return greedy_search(model, src, src_valid_len, bos=bos, eos=eos, max_len=max_len)
    found = beam_search(model, src, src_valid_len, bos=bos, eos=eos, max_len=max_len, beam_size=beam_size,
                        alpha=alpha)
    return [hyps[0] for hyps in found]
