"""Dynamic evaluation: a language model that keeps learning from the text it has already scored.

Krause et al. (2018, "Dynamic Evaluation of Neural Sequence Models") read a held-out text as one
stream, in segments of ``segment`` tokens. For each segment ``s_k`` the model first scores it,

    nll_k = - sum_{t in s_k} log p(x_t | x_<t ; theta_{k-1}),

and only then takes one gradient step on that same loss, ``theta_k = theta_{k-1} - update(grad nll_k)``.
Every token is therefore predicted by weights that have seen only earlier tokens, so the sum of the
``nll_k`` is an honest online log-likelihood of the text: the model adapts to the book's recurring
names and phrases without peeking at what it is asked to predict.

The update here is RMS-normalised, ``theta -= lr * g / (sqrt(v) + eps)`` with ``v`` a running mean of
``g**2`` (Adam with ``beta1 = 0``), which Krause et al. found better than plain SGD, plus an optional
pull ``theta += decay * (theta_0 - theta)`` back toward the trained weights ``theta_0``. The step size,
segment and decay are tuned on the validation block, never on the test block.

The trained model is not modified: adaptation runs on a deep copy in evaluation mode (no dropout).

:func:`ensemble` mixes the per-token results of several models, ``p(x_t) = mean_m p_m(x_t)``: each
``p_m`` is itself an online prediction, so the mixture is one too.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from divekit.errors import ShapeError
from divekit.metrics.perplexity import nll_metrics
from divekit.nn.state import detach_state


@dataclass(frozen=True)
class DynamicEvalConfig:
    lr: float = 3e-4  # RMS-normalised step size; 0 gives static evaluation over one stream
    segment: int = 32  # tokens scored before each update
    decay: float = 0.0  # fraction of the way back to the trained weights after each update
    beta2: float = 0.999  # running mean of squared gradients

    def __post_init__(self) -> None:
        if self.lr < 0 or self.segment < 1 or not 0.0 <= self.decay < 1.0 or not 0.0 <= self.beta2 < 1.0:
            raise ValueError(f"invalid dynamic evaluation config {self}: need lr >= 0, segment >= 1, "
                             f"0 <= decay < 1 and 0 <= beta2 < 1")


@dataclass
class DynamicEvalResult:
    nll_sum: float  # nats over all scored tokens
    count: int  # tokens scored (the text's length minus one)
    seconds: float
    token_nll: Tensor | None = None  # (count,) per-token nll, when asked for

    @property
    def loss(self) -> float:
        return self.nll_sum / self.count

    def metrics(self) -> dict[str, float]:
        return nll_metrics(self.nll_sum, self.count, self.seconds)


def dynamic_evaluate(model: nn.Module, tokens: Tensor, config: DynamicEvalConfig = DynamicEvalConfig(), *,
                     per_token: bool = False) -> DynamicEvalResult:
    """Online negative log-likelihood of ``tokens`` ``(N,)`` read as one stream from a zero state.

    ``model(x, state) -> (logits, state)`` with ``x`` ``(1, T)`` and logits ``(1, T, V)``, as the
    character language models of :mod:`divekit.models.char_lm`. Token ``t`` is scored by weights
    updated only on tokens ``< t`` (the segments before its own).
    """
    if tokens.dim() != 1 or tokens.numel() < 2:
        raise ShapeError(f"dynamic_evaluate expects a 1-D text of at least 2 tokens, got shape {tuple(tokens.shape)}")
    adapted = copy.deepcopy(model).eval()
    device = next(adapted.parameters()).device
    tokens = tokens.to(device)
    params = [p for p in adapted.parameters() if p.requires_grad]
    trained = [p.detach().clone() for p in params] if config.decay else []
    optimizer = torch.optim.Adam(params, lr=config.lr, betas=(0.0, config.beta2)) if config.lr else None
    total, count, state, pieces = 0.0, 0, None, []
    start = time.perf_counter()
    for s in range(0, tokens.numel() - 1, config.segment):
        x = tokens[s: s + config.segment][None]  # (1, T)
        y = tokens[s + 1: s + 1 + x.shape[1]][None]  # (1, T') with T' = T except at the very end
        x = x[:, : y.shape[1]]
        with torch.set_grad_enabled(optimizer is not None):
            logits, state = adapted(x, state)
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 logits: score in fp32
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
        total, count = total + nll.sum().item(), count + nll.numel()  # scored before learning from it
        if per_token:
            pieces.append(nll.detach().cpu())
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            nll.mean().backward()
            optimizer.step()
            if config.decay:
                with torch.no_grad():
                    for p, p0 in zip(params, trained):
                        p.lerp_(p0, config.decay)
        state = detach_state(state)
    token_nll = torch.cat(pieces) if per_token else None
    return DynamicEvalResult(total, count, time.perf_counter() - start, token_nll)


def ensemble(results: list[DynamicEvalResult], weights: list[float] | None = None) -> DynamicEvalResult:
    """The mixture of several models' per-token predictions of the same text, equal-weight by default.

    ``-log sum_m w_m exp(-nll_m)`` per token, computed stably with ``logsumexp``; the seconds add up
    (the members run one after another). Each result needs ``token_nll`` (``per_token=True``);
    ``weights`` (one per member, non-negative, summing to 1) are chosen on validation, never on test.
    """
    if not results or any(r.token_nll is None for r in results):
        raise ValueError("ensemble needs at least one result computed with per_token=True")
    if len({r.count for r in results}) != 1:
        raise ShapeError(f"ensemble members scored texts of different lengths: {[r.count for r in results]}")
    if weights is None:
        weights = [1.0 / len(results)] * len(results)
    if len(weights) != len(results) or min(weights) < 0 or abs(sum(weights) - 1.0) > 1e-9:
        raise ValueError(f"ensemble weights must be one per member, non-negative and sum to 1, got {weights}")
    nll = torch.stack([r.token_nll for r in results]).double()  # (members, count)
    log_w = torch.tensor(weights, dtype=torch.float64).log().unsqueeze(1)  # (members, 1); log 0 = -inf drops one
    mixed = -torch.logsumexp(log_w - nll, dim=0)  # (count,)
    return DynamicEvalResult(mixed.sum().item(), results[0].count, sum(r.seconds for r in results), mixed)
