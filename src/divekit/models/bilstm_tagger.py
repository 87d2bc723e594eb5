"""Bidirectional sequence labelling, a deep bidirectional LM, and the ELMo-style layer mix.

Symbols: B batch, T steps, V vocabulary, H hidden units per direction, L layers, C tags.

``BiRNNTagger``: tokens ``(B, T)`` -> embedding -> recurrent stack -> linear, tag logits ``(B, T, C)``.
Bidirectional, the tag of position t depends on the whole window; with ``bidirectional=False`` only
on positions ``<= t`` (the causal reference).

``DeepBiLM``: two independent stacks of ``L`` one-directional layers, a forward one reading left
to right and predicting ``x_{t+1}``, a backward one reading right to left and predicting ``x_{t-1}``.
Each direction alone is a proper language model, so nothing leaks. Its representations are

    r_0 = [e_t ; e_t]                      (B, T, 2H)   the context-free embedding (width H), twice
    r_l = [h_l^fwd(t) ; h_l^bwd(t)]        (B, T, 2H)   l = 1..L

``ScalarMix`` combines them as ELMo does::

    mix = gamma * sum_l softmax(w)_l * r_l          w (L+1,), gamma scalar, both learned

``FeatureTagger`` puts a linear tag head on the frozen biLM's mix, or on its top layer ``r_L`` only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from divekit.errors import ShapeError
from divekit.nn.rnn import make_rnn


def _check_tokens(tokens: Tensor) -> None:
    if tokens.dim() != 2 or tokens.dtype != torch.long:
        raise ShapeError(f"tokens must be a LongTensor of shape (B, T), got {tuple(tokens.shape)} {tokens.dtype}")


class BiRNNTagger(nn.Module):
    """Per-position tag logits ``(B, T, C)`` from a (bi)directional recurrent stack over embeddings."""

    def __init__(self, vocab_size: int, num_tags: int, *, hidden: int = 64, layers: int = 1, embedding: int = 32,
                 kind: str = "lstm", impl: str = "scratch", bidirectional: bool = True) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embedding)
        self.rnn = make_rnn(kind, impl, embedding, hidden, num_layers=layers, bidirectional=bidirectional)
        self.head = nn.Linear((2 if bidirectional else 1) * hidden, num_tags)

    def forward(self, tokens: Tensor) -> Tensor:
        _check_tokens(tokens)
        outputs, _ = self.rnn(self.embed(tokens))  # (B, T, D*H)
        return self.head(outputs)


class ScalarMix(nn.Module):
    """``gamma * sum_l softmax(w)_l * layers[l]`` over ``layers (L, B, T, D)`` -> ``(B, T, D)``."""

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_layers))  # equal weights at the start
        self.gamma = nn.Parameter(torch.ones(()))

    def weights(self) -> Tensor:
        """The normalised layer weights ``(L,)``, summing to one."""
        return torch.softmax(self.logits, 0)

    def forward(self, layers: Tensor) -> Tensor:
        if layers.dim() != 4 or layers.shape[0] != self.logits.numel():
            raise ShapeError(f"layers must have shape (L={self.logits.numel()}, B, T, D), got {tuple(layers.shape)}")
        return self.gamma * torch.einsum("l,lbtd->btd", self.weights(), layers)


class DeepBiLM(nn.Module):
    """Forward and backward ``L``-layer language models sharing an embedding and an output layer."""

    def __init__(self, vocab_size: int, *, hidden: int = 64, layers: int = 2, kind: str = "lstm",
                 impl: str = "scratch") -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden)
        self.fwd = nn.ModuleList(make_rnn(kind, impl, hidden, hidden) for _ in range(layers))
        self.bwd = nn.ModuleList(make_rnn(kind, impl, hidden, hidden) for _ in range(layers))
        self.head = nn.Linear(hidden, vocab_size)
        self.num_layers = layers

    @staticmethod
    def _stack(rnns: nn.ModuleList, x: Tensor) -> list[Tensor]:
        outputs = []
        for rnn in rnns:
            x, _ = rnn(x)  # (B, T, H)
            outputs.append(x)
        return outputs

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Forward logits ``(B, T, V)`` (for ``x_{t+1}``), backward logits (for ``x_{t-1}``), layers ``(L+1, B, T, 2H)``."""
        _check_tokens(tokens)
        e = self.embed(tokens)  # (B, T, H)
        fwd = self._stack(self.fwd, e)
        bwd = [h.flip(1) for h in self._stack(self.bwd, e.flip(1))]  # back in reading order
        layers = torch.stack([torch.cat([e, e], -1)] + [torch.cat(p, -1) for p in zip(fwd, bwd)])
        return self.head(fwd[-1]), self.head(bwd[-1]), layers

    def lm_loss(self, tokens: Tensor) -> Tensor:
        """Mean of the forward (next token) and backward (previous token) cross-entropies."""
        f, b, _ = self(tokens)
        v = f.shape[-1]
        ahead = F.cross_entropy(f[:, :-1].reshape(-1, v), tokens[:, 1:].reshape(-1))
        behind = F.cross_entropy(b[:, 1:].reshape(-1, v), tokens[:, :-1].reshape(-1))
        return (ahead + behind) / 2


class FeatureTagger(nn.Module):
    """A linear tag head on a frozen :class:`DeepBiLM`: its ``ScalarMix`` (``mix=True``) or its top layer."""

    def __init__(self, bilm: DeepBiLM, num_tags: int, *, mix: bool = True) -> None:
        super().__init__()
        self.bilm = bilm.requires_grad_(False)
        self.mix = ScalarMix(bilm.num_layers + 1) if mix else None
        self.head = nn.Linear(bilm.embed.embedding_dim * 2, num_tags)

    def train(self, mode: bool = True) -> FeatureTagger:
        super().train(mode)
        self.bilm.eval()  # frozen features: no dropout or other training-mode behaviour inside
        return self

    def forward(self, tokens: Tensor) -> Tensor:
        with torch.no_grad():
            _, _, layers = self.bilm(tokens)  # (L+1, B, T, 2H)
        features = self.mix(layers) if self.mix is not None else layers[-1]
        return self.head(features)  # (B, T, C)
