"""Recurrent layers from scratch: ``RNN``, ``GRU`` and ``LSTM``, drop-in equals of PyTorch's.

Symbols: B batch, T steps, I input features, H hidden units, L layers, D directions (2 when
bidirectional), G gate blocks (1 RNN, 3 GRU, 4 LSTM). Batch-first by default:

    input  (B, T, I)      output (B, T, D*H)      h_0, h_n, c_0, c_n  (L*D, B, H)

(``batch_first=False`` swaps the first two axes of input and output, never of the states; an
unbatched ``(T, I)`` input takes ``(L*D, H)`` states.) Layer ``l`` reads the outputs of layer
``l - 1``, both directions concatenated, with dropout between layers during training. Parameter
names, shapes and gate orders (r, z, n and i, f, g, o) are PyTorch's, so ``load_state_dict`` works
in both directions with ``nn.RNN``, ``nn.GRU`` and ``nn.LSTM``.

Each layer has two interchangeable engines, equal to rounding (both tested against PyTorch):

* reference (``fast=False``): the step functions of :mod:`divekit.nn.rnn_cells` called once per
  time step under autograd. Readable; slow because every step records a dozen small autograd nodes.
* fast (``fast=True``, the default): one ``autograd.Function`` per layer and direction
  (:class:`~divekit.nn.rnn_kernels.LSTMSequence` and its siblings) that projects the inputs of all
  steps in one product, runs the recurrence with one product per step for all gates, and walks back
  in time in a hand-derived backward pass. ``benchmarks/rnn_speed.py`` measures both against
  ``nn.LSTM``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from divekit.errors import ShapeError, UnknownNameError
from divekit.nn.rnn_cells import check_shape, gru_step, lstm_step, rnn_step
from divekit.nn.rnn_kernels import GRUSequence, LSTMSequence, TanhRNNSequence

State = tuple[Tensor, ...]  # (h,) for RNN and GRU, (h, c) for LSTM


class _Recurrent(nn.Module):
    """Parameters, checks and the loop over layers and directions shared by RNN, GRU and LSTM."""

    gates: int = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        batch_first: bool = True,
        dropout: float = 0.0,
        *,
        fast: bool = True,
    ) -> None:
        super().__init__()
        if min(input_size, hidden_size, num_layers) <= 0:
            raise ValueError(f"sizes must be positive, got input {input_size}, hidden {hidden_size}, "
                             f"layers {num_layers}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must lie in [0, 1], got {dropout}")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout acts between layers only; with num_layers=1 it does nothing",
                          stacklevel=2)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bidirectional, self.batch_first, self.dropout = bidirectional, batch_first, float(dropout)
        self.fast = fast
        self.num_directions = 2 if bidirectional else 1
        rows = self.gates * hidden_size
        for layer in range(num_layers):
            width = input_size if layer == 0 else hidden_size * self.num_directions
            for direction in range(self.num_directions):
                sfx = self._suffix(layer, direction)
                self.register_parameter(f"weight_ih{sfx}", nn.Parameter(torch.empty(rows, width)))
                self.register_parameter(f"weight_hh{sfx}", nn.Parameter(torch.empty(rows, hidden_size)))
                self.register_parameter(f"bias_ih{sfx}", nn.Parameter(torch.empty(rows)))
                self.register_parameter(f"bias_hh{sfx}", nn.Parameter(torch.empty(rows)))
        self.reset_parameters()

    @staticmethod
    def _suffix(layer: int, direction: int) -> str:
        return f"_l{layer}" + ("_reverse" if direction else "")

    def reset_parameters(self) -> None:
        """Uniform on ``[-1/sqrt(H), 1/sqrt(H)]`` for every tensor, PyTorch's default."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def flatten_parameters(self) -> None:
        """Nothing to do: kept so that code written for the PyTorch modules runs unchanged."""

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}, batch_first={self.batch_first}, "
                f"dropout={self.dropout}, fast={self.fast}")

    def _weights(self, layer: int, direction: int) -> tuple[Tensor, ...]:
        """``(weight_ih, weight_hh, bias_ih, bias_hh)`` of one layer and direction."""
        sfx = self._suffix(layer, direction)
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        return tuple(getattr(self, f"{name}{sfx}") for name in names)

    def _step(self, x: Tensor, state: State, w: Sequence[Tensor]) -> State:
        """One time step: ``x (B, I_l)`` and the state -> the next state."""
        raise NotImplementedError

    def _fast_direction(
        self, x: Tensor, state: State, w: Sequence[Tensor], reverse: bool
    ) -> tuple[Tensor, State]:
        """Whole sequence: ``x (T, B, I_l)`` -> all hidden states ``(T, B, H)`` and the final state."""
        raise NotImplementedError

    def _reference_direction(
        self, x: Tensor, state: State, w: Sequence[Tensor], reverse: bool
    ) -> tuple[Tensor, State]:
        """Cell by cell: ``x (T, B, I_l)`` -> all hidden states ``(T, B, H)`` and the final state."""
        outputs: list[Tensor] = [x] * len(x)  # placeholders, each replaced by its step's h
        for t in reversed(range(len(x))) if reverse else range(len(x)):
            state = self._step(x[t], state, w)
            outputs[t] = state[0]
        return torch.stack(outputs), state

    def _check(self, input: Tensor, states: Sequence[Tensor | None]) -> tuple[Tensor, list[Tensor]]:
        """Time-major input ``(T, B, I)`` and the states ``(L*D, B, H)``, zeros where not given."""
        unbatched = input.dim() == 2
        layout = "(T, I)" if unbatched else ("(B, T, I)" if self.batch_first else "(T, B, I)")
        if input.dim() not in (2, 3) or input.shape[-1] != self.input_size or 0 in input.shape:
            raise ShapeError(f"input must have shape {layout} with I={self.input_size} and T, B > 0, "
                             f"got {tuple(input.shape)}")
        dtype = self.weight_ih_l0.dtype
        if input.dtype != dtype:
            raise ShapeError(f"input dtype {input.dtype} differs from the parameters' {dtype}")
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
        expected = (self.num_layers * self.num_directions, x.shape[1], self.hidden_size)
        full: list[Tensor] = []
        for name, s in zip(("h_0", "c_0"), states):
            if s is None:
                full.append(x.new_zeros(expected))
                continue
            if unbatched:
                check_shape(name, s, (expected[0], expected[2]), "(L*D, H)")
                s = s.unsqueeze(1)
            check_shape(name, s, expected, "(L*D, B, H)")
            if s.dtype != dtype:
                raise ShapeError(f"{name} dtype {s.dtype} differs from the parameters' {dtype}")
            full.append(s)
        return x, full

    def _run(self, input: Tensor, states: Sequence[Tensor | None]) -> tuple[Tensor, State]:
        """All layers and directions: ``output`` in the input's layout and final states ``(L*D, B, H)``."""
        x, initial = self._check(input, states)
        finals: list[list[Tensor]] = [[] for _ in initial]
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                k = layer * self.num_directions + direction
                start = tuple(s[k] for s in initial)
                run = self._fast_direction if self.fast else self._reference_direction
                hs, final = run(x, start, self._weights(layer, direction), bool(direction))
                outputs.append(hs)
                for store, s in zip(finals, final):
                    store.append(s)
            x = torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]  # (T, B, D*H)
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        finals_t = tuple(torch.stack(store) for store in finals)
        if input.dim() == 2:
            return x.squeeze(1), tuple(s.squeeze(1) for s in finals_t)
        output = x.transpose(0, 1).contiguous() if self.batch_first else x
        return output, finals_t


class RNN(_Recurrent):
    """Stacked tanh RNN: ``h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`` per layer and direction.

    ``forward(input, h_0=None) -> (output, h_n)``; shapes in the module docstring.
    """

    gates = 1

    def _step(self, x: Tensor, state: State, w: Sequence[Tensor]) -> State:
        return (rnn_step(x, state[0], *w),)

    def _fast_direction(
        self, x: Tensor, state: State, w: Sequence[Tensor], reverse: bool
    ) -> tuple[Tensor, State]:
        w_ih, w_hh, b_ih, b_hh = w
        hs = TanhRNNSequence.apply(x, state[0], w_ih, w_hh, b_ih + b_hh, reverse)
        return hs, (hs[0] if reverse else hs[-1],)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        output, (h_n,) = self._run(input, (hx,))
        return output, h_n


class GRU(_Recurrent):
    """Stacked GRU, each layer and direction computing :class:`divekit.nn.rnn_cells.GRUCell`.

    ``forward(input, h_0=None) -> (output, h_n)``; shapes in the module docstring.
    """

    gates = 3

    def _step(self, x: Tensor, state: State, w: Sequence[Tensor]) -> State:
        return (gru_step(x, state[0], *w),)

    def _fast_direction(
        self, x: Tensor, state: State, w: Sequence[Tensor], reverse: bool
    ) -> tuple[Tensor, State]:
        w_ih, w_hh, b_ih, b_hh = w
        hs = GRUSequence.apply(x, state[0], w_ih, w_hh, b_ih, b_hh, reverse)
        return hs, (hs[0] if reverse else hs[-1],)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        output, (h_n,) = self._run(input, (hx,))
        return output, h_n


class LSTM(_Recurrent):
    """Stacked LSTM, each layer and direction computing :class:`divekit.nn.rnn_cells.LSTMCell`.

    ``forward(input, (h_0, c_0)=None) -> (output, (h_n, c_n))``; shapes in the module docstring.
    """

    gates = 4

    def _step(self, x: Tensor, state: State, w: Sequence[Tensor]) -> State:
        return lstm_step(x, (state[0], state[1]), *w)

    def _fast_direction(
        self, x: Tensor, state: State, w: Sequence[Tensor], reverse: bool
    ) -> tuple[Tensor, State]:
        w_ih, w_hh, b_ih, b_hh = w
        hs, c = LSTMSequence.apply(x, state[0], state[1], w_ih, w_hh, b_ih + b_hh, reverse)
        return hs, (hs[0] if reverse else hs[-1], c)

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        output, (h_n, c_n) = self._run(input, (None, None) if hx is None else hx)
        return output, (h_n, c_n)


_SCRATCH: dict[str, type[_Recurrent]] = {"rnn": RNN, "gru": GRU, "lstm": LSTM}
_TORCH: dict[str, type[nn.Module]] = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


def make_rnn(
    kind: str,
    impl: str,
    input_size: int,
    hidden_size: int,
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
) -> nn.Module:
    """A batch-first recurrent layer of ``kind`` ("rnn", "gru", "lstm") from ``impl`` ("scratch", "torch").

    Both implementations share parameter names, call signature and return values, so a model built
    on one accepts the other and their state dicts are interchangeable.
    """
    if kind not in _SCRATCH:
        raise UnknownNameError(f"unknown recurrent kind {kind!r}; choose one of {sorted(_SCRATCH)}")
    table = {"scratch": _SCRATCH, "torch": _TORCH}
    if impl not in table:
        raise UnknownNameError(f"unknown implementation {impl!r}; choose one of {sorted(table)}")
    return table[impl][kind](input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                             batch_first=True, dropout=dropout)
