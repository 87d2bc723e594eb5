"""Recurrent cells from scratch: one step of a tanh RNN, a GRU and an LSTM.

Symbols: B batch, I input features, H hidden units, G gate blocks (1 RNN, 3 GRU, 4 LSTM). A cell maps
an input ``x`` of shape ``(B, I)`` and a state of shape ``(B, H)`` (the LSTM: a pair of them) to the
next state. Parameters carry PyTorch's names and layouts, gate blocks stacked along the rows in
PyTorch's order::

    weight_ih (G*H, I)    weight_hh (G*H, H)    bias_ih (G*H,)    bias_hh (G*H,)

so ``load_state_dict`` moves weights between these cells and ``nn.RNNCell``, ``nn.GRUCell`` and
``nn.LSTMCell`` in either direction. The step functions (``rnn_step``, ``gru_step``, ``lstm_step``)
are also the readable reference loop of the sequence layers in :mod:`divekit.nn.rnn`.

The same recurrences over a whole sequence, fast and with hand-written backward passes, are in
:mod:`divekit.nn.rnn_kernels`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from divekit.errors import ShapeError

LSTMState = tuple[Tensor, Tensor]


def check_shape(name: str, x: Tensor, expected: tuple[int | None, ...], symbols: str) -> None:
    """Raise :class:`ShapeError` unless ``x`` has ``expected`` shape (``None`` matches any size)."""
    ok = x.dim() == len(expected) and all(e is None or e == s for e, s in zip(expected, x.shape))
    if not ok:
        sizes = ", ".join("?" if e is None else str(e) for e in expected)
        raise ShapeError(f"{name} must have shape {symbols}=({sizes}), got {tuple(x.shape)}")


def rnn_step(
    x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None,
    *, nonlinearity: str = "tanh",
) -> Tensor:
    """``h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``, all ``(B, H)``; ``act`` is tanh or ReLU."""
    pre = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
    return torch.relu(pre) if nonlinearity == "relu" else torch.tanh(pre)


def gru_step(
    x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None
) -> Tensor:
    """One GRU step; see :class:`GRUCell` for the equations. Returns ``h'`` of shape ``(B, H)``."""
    x_r, x_z, x_n = F.linear(x, w_ih, b_ih).chunk(3, dim=-1)
    h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, dim=-1)
    r = torch.sigmoid(x_r + h_r)  # reset gate
    z = torch.sigmoid(x_z + h_z)  # update gate
    n = torch.tanh(x_n + r * h_n)  # candidate; r scales W_hn h + b_hn, bias included
    return (1 - z) * n + z * h


def lstm_step(
    x: Tensor, state: LSTMState, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None
) -> LSTMState:
    """One LSTM step; see :class:`LSTMCell` for the equations. Returns ``(h', c')``, each ``(B, H)``."""
    h, c = state
    gates = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
    i, f, g, o = gates.chunk(4, dim=-1)
    i, f, o = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o)  # input, forget, output gates
    g = torch.tanh(g)  # candidate cell content
    c = f * c + i * g
    return o * torch.tanh(c), c


class _Cell(nn.Module):
    """Parameters, initialisation and input checks shared by the three cells.

    Each cell takes the constructor arguments of its ``torch.nn`` twin, in the same order with the
    same defaults (``input_size, hidden_size, bias=True, [nonlinearity="tanh",] device=None,
    dtype=None``); with ``bias=False`` the two biases are registered as None, as torch does.
    """

    gates: int = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if input_size <= 0 or hidden_size <= 0:
            raise ValueError(f"sizes must be positive, got input {input_size}, hidden {hidden_size}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        rows = self.gates * hidden_size
        factory = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(rows, hidden_size, **factory))
        for name in ("bias_ih", "bias_hh"):
            self.register_parameter(name, nn.Parameter(torch.empty(rows, **factory)) if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform on ``[-1/sqrt(H), 1/sqrt(H)]`` for every tensor, PyTorch's default."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _weights(self) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        return self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh

    def _batched(self, x: Tensor) -> tuple[Tensor, bool]:
        """Check ``x`` is ``(B, I)`` or unbatched ``(I,)``; return it as ``(B, I)`` and the flag."""
        if x.dim() == 1:
            x = x.unsqueeze(0)
            unbatched = True
        else:
            unbatched = False
        check_shape("input", x, (None, self.input_size), "(B, I)")
        return x, unbatched

    def _state(self, s: Tensor | None, x: Tensor, unbatched: bool, name: str) -> Tensor:
        """A given state checked against ``(B, H)``, or zeros."""
        if s is None:
            return x.new_zeros(x.shape[0], self.hidden_size)
        s = s.unsqueeze(0) if unbatched else s
        check_shape(name, s, (x.shape[0], self.hidden_size), "(B, H)")
        return s


class RNNCell(_Cell):
    """Elman cell: ``h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``, ``act`` tanh (default) or ReLU.

    ``forward(x (B, I), h (B, H) or None) -> h' (B, H)``; a missing state means zeros and an
    unbatched ``x (I,)`` gives ``h' (H,)``, as in ``nn.RNNCell``.
    """

    gates = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"unknown nonlinearity {nonlinearity!r}; choose 'tanh' or 'relu'")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, unbatched = self._batched(input)
        h = rnn_step(x, self._state(hx, x, unbatched, "hx"), *self._weights(), nonlinearity=self.nonlinearity)
        return h.squeeze(0) if unbatched else h


class GRUCell(_Cell):
    """Gated recurrent unit, computed exactly as PyTorch does (gate blocks in the order r, z, n)::

        r  = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr)          reset gate
        z  = sigmoid(x W_iz^T + b_iz + h W_hz^T + b_hz)          update gate
        n  = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))       candidate state
        h' = (1 - z) * n + z * h

    The reset gate multiplies the whole hidden projection ``h W_hn^T + b_hn``, bias included (as in
    PyTorch and cuDNN; the original paper resets ``h`` before the product). ``forward(x (B, I),
    h (B, H) or None) -> h' (B, H)``.
    """

    gates = 3

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, unbatched = self._batched(input)
        h = gru_step(x, self._state(hx, x, unbatched, "hx"), *self._weights())
        return h.squeeze(0) if unbatched else h


class LSTMCell(_Cell):
    """Long short-term memory cell (gate blocks in the order i, f, g, o)::

        i  = sigmoid(x W_ii^T + b_ii + h W_hi^T + b_hi)          input gate
        f  = sigmoid(x W_if^T + b_if + h W_hf^T + b_hf)          forget gate
        g  = tanh(x W_ig^T + b_ig + h W_hg^T + b_hg)             candidate cell content
        o  = sigmoid(x W_io^T + b_io + h W_ho^T + b_ho)          output gate
        c' = f * c + i * g
        h' = o * tanh(c')

    ``forward(x (B, I), (h, c) each (B, H), or None) -> (h', c')`` each ``(B, H)``.
    """

    gates = 4

    def forward(self, input: Tensor, hx: LSTMState | None = None) -> LSTMState:
        x, unbatched = self._batched(input)
        h0, c0 = (None, None) if hx is None else hx
        state = (self._state(h0, x, unbatched, "h"), self._state(c0, x, unbatched, "c"))
        h, c = lstm_step(x, state, *self._weights())
        return (h.squeeze(0), c.squeeze(0)) if unbatched else (h, c)
