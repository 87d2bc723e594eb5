"""A token vocabulary: a bijection between tokens and the integers ``0 .. V-1``.

Index layout, fixed so that two vocabularies built from the same tokens are identical:

* ``0`` is ``<unk>``, the index every unseen (or too rare) token maps to;
* ``1 .. R`` are the reserved tokens (e.g. ``<pad>``, ``<bos>``, ``<eos>``) in the order given;
* the rest are the tokens seen at least ``min_freq`` times, most frequent first, ties broken by
  the token's string order, so the result never depends on the order the text was read in.

A vocabulary is saved as plain Python values (``to_state``) so that it can live inside a
checkpoint loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, overload

from divekit.errors import CheckpointError

UNK = "<unk>"


def _flatten(tokens: Iterable[str] | Iterable[Sequence[str]]) -> Iterable[str]:
    """Accept either a flat token stream or a stream of token lists (one per line or sentence)."""
    for item in tokens:
        if isinstance(item, str):
            yield item
        else:
            yield from item


def _frequency_order(counts: Counter[str]) -> list[tuple[str, int]]:
    # Sort key (-count, token): frequency descending, then alphabetical for determinism.
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


class Vocab:
    """Map tokens to indices and back.

    Args:
        tokens: a flat iterable of tokens, or an iterable of token lists.
        min_freq: tokens seen fewer times than this map to ``<unk>``.
        reserved: special tokens placed right after ``<unk>``, whatever their frequency.

    Attributes:
        idx_to_token: the tokens in index order, ``len == V``.
        token_to_idx: the inverse mapping.
        token_freqs: every counted token with its count (including those below ``min_freq``),
            in frequency order.
    """

    def __init__(
        self,
        tokens: Iterable[str] | Iterable[Sequence[str]] = (),
        *,
        min_freq: int = 1,
        reserved: Sequence[str] = (),
    ) -> None:
        if min_freq < 1:
            raise ValueError(f"min_freq must be at least 1, got {min_freq}")
        specials = [UNK, *reserved]
        if len(set(specials)) != len(specials):
            raise ValueError(f"reserved tokens must be distinct and must not include {UNK!r}: {list(reserved)}")
        self.min_freq = min_freq
        self.reserved = list(reserved)
        self.token_freqs = _frequency_order(Counter(_flatten(tokens)))
        taken = set(specials)
        frequent = [tok for tok, n in self.token_freqs if n >= min_freq and tok not in taken]
        self._set_tokens(specials + frequent)

    def _set_tokens(self, idx_to_token: list[str]) -> None:
        self.idx_to_token = idx_to_token
        self.token_to_idx = {tok: i for i, tok in enumerate(idx_to_token)}

    @property
    def unk(self) -> int:
        """Index of ``<unk>`` (always 0)."""
        return 0

    def __len__(self) -> int:
        return len(self.idx_to_token)

    def __contains__(self, token: object) -> bool:
        return token in self.token_to_idx

    @overload
    def __getitem__(self, tokens: str) -> int: ...
    @overload
    def __getitem__(self, tokens: Sequence[str]) -> list[int]: ...
    def __getitem__(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Index of one token, or the list of indices of a token sequence (unknown -> ``unk``)."""
        if isinstance(tokens, str):
            return self.token_to_idx.get(tokens, self.unk)
        return [self.token_to_idx.get(tok, self.unk) for tok in tokens]

    def to_tokens(self, indices: Any) -> str | list[str]:
        """Token of one index, or the tokens of a sequence of indices (a list or a 0/1-D tensor)."""
        if hasattr(indices, "tolist"):  # tensors and numpy arrays become plain ints
            indices = indices.tolist()
        if isinstance(indices, int):
            return self.idx_to_token[indices]
        return [self.idx_to_token[int(i)] for i in indices]

    def to_state(self) -> dict[str, Any]:
        """Plain lists, strings and ints only, safe for ``torch.load(weights_only=True)``."""
        return {
            "idx_to_token": list(self.idx_to_token),
            "token_freqs": [[tok, n] for tok, n in self.token_freqs],
            "min_freq": self.min_freq,
            "reserved": list(self.reserved),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Vocab:
        """Rebuild exactly the vocabulary that produced ``state`` (same indices, same counts)."""
        missing = {"idx_to_token", "token_freqs", "min_freq", "reserved"} - set(state)
        if missing:
            raise CheckpointError(f"vocabulary state lacks {sorted(missing)}")
        if not state["idx_to_token"] or state["idx_to_token"][0] != UNK:
            raise CheckpointError(f"vocabulary state must start with {UNK!r}")
        vocab = cls(min_freq=state["min_freq"], reserved=state["reserved"])
        vocab.token_freqs = [(str(tok), int(n)) for tok, n in state["token_freqs"]]
        vocab._set_tokens([str(tok) for tok in state["idx_to_token"]])
        return vocab

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return self.to_state() == other.to_state()

    __hash__ = None  # type: ignore[assignment]  # mutable attributes: equality by value, no hashing

    def __repr__(self) -> str:
        head = ", ".join(repr(t) for t in self.idx_to_token[:6])
        return f"Vocab(size={len(self)}, min_freq={self.min_freq}, first=[{head}, ...])"
