"""Recurrent layers from scratch: ``RNN``, ``GRU`` and ``LSTM``, drop-in equals of PyTorch's.

Symbols: B batch, T steps, I input features, H hidden units, P the width of ``h`` (``proj_size``
for an LSTM with projections, else H), L layers, D directions (2 when bidirectional), G gate blocks
(1 RNN, 3 GRU, 4 LSTM). Time-major by default, as in PyTorch:

    input  (T, B, I)      output (T, B, D*P)      h_0, h_n  (L*D, B, P)      c_0, c_n  (L*D, B, H)

``batch_first=True`` (what divekit's models pass) swaps the first two axes of input and output,
never of the states; an unbatched ``(T, I)`` input takes ``(L*D, P)`` states. Layer ``l`` reads the
outputs of layer ``l - 1``, both directions concatenated, with dropout between layers during
training.

Each class takes ``torch.nn``'s constructor arguments in ``torch.nn``'s order with its defaults
(``RNN(input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
dropout=0.0, bidirectional=False, device=None, dtype=None)``; ``GRU`` the same without
``nonlinearity``; ``LSTM`` with ``proj_size=0`` before ``device``), then divekit's keyword-only
``fast``. Parameter names, shapes, registration order and gate orders (r, z, n and i, f, g, o) are
PyTorch's, so ``load_state_dict`` works in both directions and equal seeds give equal weights.
``PackedSequence`` inputs are not supported: pass padded tensors.

Each layer has two interchangeable engines, equal to rounding (both tested against PyTorch):

* reference (``fast=False``): the step functions of :mod:`divekit.nn.rnn_cells` called once per
  time step under autograd. Readable; slow because every step records a dozen small autograd nodes.
* fast (``fast=True``, the default): one ``autograd.Function`` per layer and direction
  (:class:`~divekit.nn.rnn_kernels.LSTMSequence` and its siblings) that projects the inputs of all
  steps in one product, runs the recurrence with one product per step for all gates, and walks back
  in time in a hand-derived backward pass. ``benchmarks/rnn_speed.py`` measures both against
  ``nn.LSTM``. The kernels cover the tanh RNN, the GRU and the LSTM without projections; a ReLU RNN
  and an LSTM with ``proj_size > 0`` always take the reference engine.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from divekit.errors import ShapeError, UnknownNameError
from divekit.nn.rnn_cells import check_shape, gru_step, lstm_step, rnn_step
from divekit.nn.rnn_kernels import GRUSequence, LSTMSequence, TanhRNNSequence

State = tuple[Tensor, ...]  # (h,) for RNN and GRU, (h, c) for LSTM
Weights = tuple[Tensor | None, ...]  # (weight_ih, weight_hh, bias_ih, bias_hh[, weight_hr]); biases may be None


class _Recurrent(nn.Module):
    """Parameters, checks and the loop over layers and directions shared by RNN, GRU and LSTM.

    Not itself a mirror of a torch class (as ``nn.RNNBase`` is not meant to be built directly):
    the subclasses give each layer torch's exact constructor signature.
    """

    gates: int = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        bias: bool,
        batch_first: bool,
        dropout: float,
        bidirectional: bool,
        *,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        fast: bool = True,
    ) -> None:
        super().__init__()
        _check_config(input_size, hidden_size, num_layers, dropout, proj_size)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.proj_size, self.fast = bidirectional, proj_size, fast
        self.num_directions = 2 if bidirectional else 1
        self.state_size = proj_size if proj_size > 0 else hidden_size  # P, the width of h
        factory = {"device": device, "dtype": dtype}
        rows = self.gates * hidden_size
        for layer in range(num_layers):
            width = input_size if layer == 0 else self.state_size * self.num_directions
            for direction in range(self.num_directions):
                # Registered in torch's order, so reset_parameters draws the same numbers from a seed.
                shapes = {"weight_ih": (rows, width), "weight_hh": (rows, self.state_size)}
                if bias:
                    shapes.update(bias_ih=(rows,), bias_hh=(rows,))
                if proj_size > 0:
                    shapes["weight_hr"] = (proj_size, hidden_size)
                sfx = self._suffix(layer, direction)
                for name, shape in shapes.items():
                    self.register_parameter(f"{name}{sfx}", nn.Parameter(torch.empty(shape, **factory)))
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

    @property
    def all_weights(self) -> list[list[Tensor]]:
        """The parameters of each layer and direction, in registration order, as ``nn.RNNBase`` lists them."""
        return [[w for w in self._weights(layer, direction) if w is not None]
                for layer in range(self.num_layers) for direction in range(self.num_directions)]

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        defaults = {"nonlinearity": "tanh", "num_layers": 1, "bias": True, "batch_first": False, "dropout": 0.0,
                    "bidirectional": False, "proj_size": 0, "fast": True}
        for name, default in defaults.items():
            if getattr(self, name, default) != default:
                text += f", {name}={getattr(self, name)}"
        return text

    def _weights(self, layer: int, direction: int) -> Weights:
        """``(weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)`` of one layer and direction, None where absent."""
        sfx = self._suffix(layer, direction)
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
        return tuple(getattr(self, f"{name}{sfx}", None) for name in names)

    def _has_kernel(self) -> bool:
        """Whether a fast kernel computes this layer's recurrence (see the module docstring)."""
        return True

    def _step(self, x: Tensor, state: State, w: Weights) -> State:
        """One time step: ``x (B, I_l)`` and the state -> the next state."""
        raise NotImplementedError

    def _fast_direction(self, x: Tensor, state: State, w: Weights, reverse: bool) -> tuple[Tensor, State]:
        """Whole sequence: ``x (T, B, I_l)`` -> all hidden states ``(T, B, H)`` and the final state."""
        raise NotImplementedError

    def _reference_direction(
        self, x: Tensor, state: State, w: Weights, reverse: bool
    ) -> tuple[Tensor, State]:
        """Cell by cell: ``x (T, B, I_l)`` -> all hidden states ``(T, B, P)`` and the final state."""
        outputs: list[Tensor] = [x] * len(x)  # placeholders, each replaced by its step's h
        for t in reversed(range(len(x))) if reverse else range(len(x)):
            state = self._step(x[t], state, w)
            outputs[t] = state[0]
        return torch.stack(outputs), state

    def _state_shapes(self, batch: int) -> tuple[tuple[int, int, int], ...]:
        """Shapes of ``h_0`` (and ``c_0``): ``(L*D, B, P)`` and ``(L*D, B, H)``."""
        stacks = self.num_layers * self.num_directions
        return (stacks, batch, self.state_size), (stacks, batch, self.hidden_size)

    def _check(self, input: Tensor, states: Sequence[Tensor | None]) -> tuple[Tensor, list[Tensor]]:
        """Time-major input ``(T, B, I)`` and the states ``(L*D, B, P or H)``, zeros where not given."""
        if isinstance(input, PackedSequence):
            raise TypeError(f"{type(self).__name__} from scratch takes padded tensors, not a PackedSequence")
        unbatched = input.dim() == 2
        layout = "(T, I)" if unbatched else ("(B, T, I)" if self.batch_first else "(T, B, I)")
        if input.dim() not in (2, 3) or input.shape[-1] != self.input_size or 0 in input.shape:
            raise ShapeError(f"input must have shape {layout} with I={self.input_size} and T, B > 0, "
                             f"got {tuple(input.shape)}")
        dtype = self.weight_ih_l0.dtype
        if input.dtype != dtype:
            raise ShapeError(f"input dtype {input.dtype} differs from the parameters' {dtype}")
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
        full: list[Tensor] = []
        widths = ("P" if self.proj_size else "H", "H")  # h is P wide with projections, c always H
        for name, s, expected, width in zip(("h_0", "c_0"), states, self._state_shapes(x.shape[1]), widths):
            if s is None:
                full.append(x.new_zeros(expected))
                continue
            if unbatched:
                check_shape(name, s, (expected[0], expected[2]), f"(L*D, {width})")
                s = s.unsqueeze(1)
            check_shape(name, s, expected, f"(L*D, B, {width})")
            if s.dtype != dtype:
                raise ShapeError(f"{name} dtype {s.dtype} differs from the parameters' {dtype}")
            full.append(s)
        return x, full

    def _run(self, input: Tensor, states: Sequence[Tensor | None]) -> tuple[Tensor, State]:
        """All layers and directions: ``output`` in the input's layout and final states ``(L*D, B, P or H)``."""
        x, initial = self._check(input, states)
        run = self._fast_direction if self.fast and self._has_kernel() else self._reference_direction
        finals: list[list[Tensor]] = [[] for _ in initial]
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                k = layer * self.num_directions + direction
                start = tuple(s[k] for s in initial)
                hs, final = run(x, start, self._weights(layer, direction), bool(direction))
                outputs.append(hs)
                for store, s in zip(finals, final):
                    store.append(s)
            x = torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]  # (T, B, D*P)
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        finals_t = tuple(torch.stack(store) for store in finals)
        if input.dim() == 2:
            return x.squeeze(1), tuple(s.squeeze(1) for s in finals_t)
        output = x.transpose(0, 1).contiguous() if self.batch_first else x
        return output, finals_t


def _check_config(input_size: int, hidden_size: int, num_layers: int, dropout: float, proj_size: int) -> None:
    """The constructor checks of ``nn.RNNBase``, with the same exceptions."""
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Number) or not 0 <= dropout <= 1:
        raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
    if min(input_size, hidden_size, num_layers) <= 0:
        raise ValueError(f"sizes must be positive, got input {input_size}, hidden {hidden_size}, "
                         f"layers {num_layers}")
    if not 0 <= proj_size < hidden_size:
        raise ValueError(f"proj_size must lie in [0, hidden_size={hidden_size}), got {proj_size}")
    if dropout > 0 and num_layers == 1:
        warnings.warn("dropout acts between layers only; with num_layers=1 it does nothing", stacklevel=4)


def _zeros_for_none(b: Tensor | None, like: Tensor) -> Tensor:
    """A missing bias (``bias=False``) as zeros of ``(G*H,)``, for the kernels that always add one."""
    return like.new_zeros(like.shape[0]) if b is None else b


def _sum_bias(b_ih: Tensor | None, b_hh: Tensor | None, like: Tensor) -> Tensor:
    """``b_ih + b_hh``, or zeros of ``(G*H,)`` without biases."""
    return like.new_zeros(like.shape[0]) if b_ih is None or b_hh is None else b_ih + b_hh


class RNN(_Recurrent):
    """Stacked Elman RNN: ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``, act tanh or ReLU.

    ``forward(input, hx=None) -> (output, h_n)``; shapes in the module docstring.
    """

    gates = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        fast: bool = True,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"unknown nonlinearity {nonlinearity!r}; choose 'tanh' or 'relu'")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device=device, dtype=dtype, fast=fast)

    def _has_kernel(self) -> bool:
        return self.nonlinearity == "tanh"

    def _step(self, x: Tensor, state: State, w: Weights) -> State:
        return (rnn_step(x, state[0], *w[:4], nonlinearity=self.nonlinearity),)

    def _fast_direction(self, x: Tensor, state: State, w: Weights, reverse: bool) -> tuple[Tensor, State]:
        w_ih, w_hh, b_ih, b_hh, _ = w
        hs = TanhRNNSequence.apply(x, state[0], w_ih, w_hh, _sum_bias(b_ih, b_hh, w_ih), reverse)
        return hs, (hs[0] if reverse else hs[-1],)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        output, (h_n,) = self._run(input, (hx,))
        return output, h_n


class GRU(_Recurrent):
    """Stacked GRU, each layer and direction computing :class:`divekit.nn.rnn_cells.GRUCell`.

    ``forward(input, hx=None) -> (output, h_n)``; shapes in the module docstring.
    """

    gates = 3

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        fast: bool = True,
    ) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device=device, dtype=dtype, fast=fast)

    def _step(self, x: Tensor, state: State, w: Weights) -> State:
        return (gru_step(x, state[0], *w[:4]),)

    def _fast_direction(self, x: Tensor, state: State, w: Weights, reverse: bool) -> tuple[Tensor, State]:
        w_ih, w_hh, b_ih, b_hh, _ = w
        b_ih, b_hh = _zeros_for_none(b_ih, w_ih), _zeros_for_none(b_hh, w_ih)
        hs = GRUSequence.apply(x, state[0], w_ih, w_hh, b_ih, b_hh, reverse)
        return hs, (hs[0] if reverse else hs[-1],)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        output, (h_n,) = self._run(input, (hx,))
        return output, h_n


class LSTM(_Recurrent):
    """Stacked LSTM, each layer and direction computing :class:`divekit.nn.rnn_cells.LSTMCell`.

    With ``proj_size = P > 0`` each step's hidden state is projected, ``h_t = W_hr (o_t * tanh(c_t))``
    with ``W_hr`` ``(P, H)``, and ``h_t`` (not the H-wide product) feeds the next step and layer.
    ``forward(input, hx=(h_0, c_0) or None) -> (output, (h_n, c_n))``; shapes in the module docstring.
    """

    gates = 4

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        fast: bool = True,
    ) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size=proj_size, device=device, dtype=dtype, fast=fast)

    def _has_kernel(self) -> bool:
        return self.proj_size == 0

    def _step(self, x: Tensor, state: State, w: Weights) -> State:
        h, c = lstm_step(x, (state[0], state[1]), *w[:4])
        w_hr = w[4]
        return (h if w_hr is None else F.linear(h, w_hr), c)  # h_t = W_hr (o * tanh(c)) with projections

    def _fast_direction(self, x: Tensor, state: State, w: Weights, reverse: bool) -> tuple[Tensor, State]:
        w_ih, w_hh, b_ih, b_hh, _ = w
        hs, c = LSTMSequence.apply(x, state[0], state[1], w_ih, w_hh, _sum_bias(b_ih, b_hh, w_ih), reverse)
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

    Both implementations share constructor, parameter names, call signature and return values, so a
    model built on one accepts the other and their state dicts are interchangeable. Both default to
    time-major input; this factory always asks for ``batch_first=True``, the layout of divekit's models.
    """
    if kind not in _SCRATCH:
        raise UnknownNameError(f"unknown recurrent kind {kind!r}; choose one of {sorted(_SCRATCH)}")
    table = {"scratch": _SCRATCH, "torch": _TORCH}
    if impl not in table:
        raise UnknownNameError(f"unknown implementation {impl!r}; choose one of {sorted(table)}")
    return table[impl][kind](input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                             batch_first=True, dropout=dropout)
