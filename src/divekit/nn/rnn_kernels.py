"""Whole-sequence recurrent kernels: a tanh RNN, GRU and LSTM layer direction with hand-written backward.

``TanhRNNSequence``, ``GRUSequence`` and ``LSTMSequence`` compute the recurrences of
:mod:`divekit.nn.rnn_cells` (same parameter layouts, same gate order) over a whole time-major
sequence ``x (T, B, I)`` from a state ``(B, H)``, one layer and direction at a time, and are
``torch.autograd.Function``s whose backward passes were derived by hand. The equivalence tests
check them against the step functions and against ``nn.RNN``/``nn.GRU``/``nn.LSTM``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# One time-major direction of one layer at a time: x (T, B, I), states (B, H). What makes them fast,
# as measured on the 2-core AMD Zen CPU of benchmarks/rnn_speed.py:
# * autograd records one node per layer and direction instead of a dozen per step, and the backward
#   loop does a handful of small ops per step, its factors computed for all steps at once;
# * the inputs of all steps are projected in one product, each step does one product for all gates,
#   and the weight gradients come out of one product after the loop;
# * float32 products go to oneDNN, about twice as fast as MKL on this CPU (see ``_linear``);
# * tanh is computed through sigmoid (see ``_tanh``); the loops index precomputed per-step views.


def _onednn_ops() -> tuple[Callable[..., Tensor], Callable[..., Tensor]] | None:
    """oneDNN's linear op and its weight-packing op, or None where this build of torch lacks them.

    These ops are private to torch, so each form used here is tried once on a tiny product and
    checked against ``F.linear``: a release that renamed or changed one falls back to ``F.linear``.
    """
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        linear, reorder = torch.ops.mkldnn._linear_pointwise, torch.ops.mkldnn._reorder_linear_weight
        # Fixed values, not random ones: importing divekit must not move the global random stream.
        x, w = torch.arange(6.0).view(2, 3) / 7, torch.arange(12.0).view(4, 3) / 11 - 0.5
        b, add = torch.arange(4.0) / 3, torch.arange(8.0).view(2, 4) / 5
        expected = F.linear(x, w, b)
        works = (torch.allclose(linear(x, w, b, "none", [], ""), expected)
                 and torch.allclose(linear(x, reorder(w, 2), b, "none", [], ""), expected)
                 and torch.allclose(linear.binary(x, add, w, b, "add"), expected + add))
    except (AttributeError, RuntimeError, TypeError):
        return None
    return (linear, reorder) if works else None


_ONEDNN = _onednn_ops()


def _uses_onednn(t: Tensor) -> bool:
    return _ONEDNN is not None and t.dtype == torch.float32 and t.device.type == "cpu"


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, add: Tensor | None = None) -> Tensor:
    """``x weight^T + bias + add`` outside autograd; ``x (..., K)``, ``weight (N, K)``, ``add (..., N)``.

    Float32 CPU products go to oneDNN, the library inside ``nn.LSTM``: on the AMD Zen CPU these
    kernels were measured on, the default BLAS (MKL) runs fp32 matmuls of every size used here, from
    the per-step ``(32, 256) x (256, 1024)`` to the weight gradients, at about half oneDNN's speed.
    Other dtypes (the float64 equivalence tests) and devices use ``F.linear``.
    """
    if _ONEDNN is not None and _uses_onednn(x):
        if add is None:
            return _ONEDNN[0](x, weight, bias, "none", [], "")
        return _ONEDNN[0].binary(x, add, weight, bias, "add")
    y = F.linear(x, weight, bias)
    return y if add is None else y.add_(add)


def _prepared(weight: Tensor, rows: int) -> Tensor:
    """``weight`` repacked once in oneDNN's blocked layout for many products with ``rows``-row inputs."""
    if _ONEDNN is not None and _uses_onednn(weight):
        return _ONEDNN[1](weight.contiguous(), rows)
    return weight


def _tanh(x: Tensor, out: Tensor) -> Tensor:
    """``tanh(x) = 2 sigmoid(2x) - 1`` into ``out``.

    On the CPU measured, torch's tanh kernel takes six times as long as its sigmoid; these four cheap
    ops together take half the time of one ``torch.tanh`` on ``(32, 256)``.
    """
    return torch.mul(x, 2.0, out=out).sigmoid_().mul_(2.0).sub_(1.0)


def _order(steps: int, reverse: bool) -> list[int]:
    """Time indices in processing order."""
    return list(range(steps - 1, -1, -1) if reverse else range(steps))


def _entering(states: Tensor, initial: Tensor, reverse: bool) -> Tensor:
    """The state entering each step, ``(T, B, H)``, from the states the steps produced."""
    if reverse:
        return torch.cat((states[1:], initial.unsqueeze(0)))
    return torch.cat((initial.unsqueeze(0), states[:-1]))


def _backward_steps(grad_hs: Tensor, reverse: bool) -> tuple[Tensor, list[tuple[int, int]]]:
    """Output gradients with a zero step appended, and ``(t, t_before)`` pairs in backward order.

    ``t_before`` is the step processed before ``t`` in the forward pass, or the appended zero step
    after the first one, whose ``dh`` is then the gradient of the initial state.
    """
    steps = len(grad_hs)
    order = _order(steps, not reverse)
    padded = torch.cat((grad_hs, grad_hs.new_zeros(1, *grad_hs.shape[1:])))
    return padded, list(zip(order, order[1:] + [steps]))


def _weight_grad(d_out: Tensor, inputs: Tensor) -> Tensor:
    """``sum_t d_out_t^T inputs_t`` as one product: ``(T, B, N), (T, B, K) -> (N, K)``.

    Computed as ``(inputs^T d_out)^T``: oneDNN reads the large ``d_out`` in place as a transposed
    weight, and only the narrower ``inputs`` is copied into transposed order.
    """
    d2, x2 = d_out.reshape(-1, d_out.shape[-1]), inputs.reshape(-1, inputs.shape[-1])
    return _linear(x2.t().contiguous(), d2.t()).t()


def _dense_grads(
    d_pre: Tensor, x: Tensor, h_in: Tensor, w_ih: Tensor, need_dx: bool
) -> tuple[Tensor | None, Tensor, Tensor]:
    """``dx``, ``dW_ih`` and ``dW_hh`` from the pre-activation gradients ``d_pre (T, B, G*H)``.

    Both weight gradients come out of one product ``d_pre^T [x, h_in]`` over all ``T*B`` rows.
    """
    d_w = _weight_grad(d_pre, torch.cat((x, h_in), dim=2))  # (G*H, I + H)
    d_x = _linear(d_pre, w_ih.t()) if need_dx else None
    return d_x, d_w[:, : x.shape[2]], d_w[:, x.shape[2] :]


class TanhRNNSequence(torch.autograd.Function):
    """``h_t = tanh(x_t W_ih^T + b + h_{t-1} W_hh^T)`` for all steps, with ``b = b_ih + b_hh``.

    ``apply(x (T, B, I), h0 (B, H), w_ih, w_hh, b, reverse) -> hs (T, B, H)``. Backward, with ``g_t``
    the gradient reaching ``h_t`` from the output: ``dh_t = g_t + dpre_{t+1} W_hh`` and
    ``dpre_t = dh_t * (1 - h_t^2)``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b: Tensor, reverse: bool) -> Tensor:
        p = _linear(x, w_ih, b)  # (T, B, H): every step's input term in one product
        w_step, hs, h = _prepared(w_hh, x.shape[1]), torch.empty_like(p), h0
        for t in _order(len(x), reverse):
            h = _tanh(_linear(h, w_step, add=p[t]), out=hs[t])
        ctx.save_for_backward(x, h0, w_ih, w_hh, hs)
        ctx.reverse = reverse
        return hs

    @staticmethod
    def backward(ctx, grad_hs: Tensor) -> tuple[Tensor | None, ...]:
        x, h0, w_ih, w_hh, hs = ctx.saved_tensors
        slope = 1 - hs * hs  # tanh' of every step in one pass
        grad, pairs = _backward_steps(grad_hs, ctx.reverse)
        w_back, d_pre, dh = _prepared(w_hh.t(), x.shape[1]), torch.empty_like(hs), grad[pairs[0][0]]
        for t, before in pairs:
            torch.mul(dh, slope[t], out=d_pre[t])
            dh = _linear(d_pre[t], w_back, add=grad[before])  # the last one is dh_0
        h_in = _entering(hs, h0, ctx.reverse)
        d_x, d_wih, d_whh = _dense_grads(d_pre, x, h_in, w_ih, ctx.needs_input_grad[0])
        return d_x, dh, d_wih, d_whh, d_pre.sum((0, 1)), None


class GRUSequence(torch.autograd.Function):
    """The GRU of :class:`GRUCell` over all steps.

    ``apply(x (T, B, I), h0 (B, H), w_ih, w_hh, b_ih, b_hh, reverse) -> hs (T, B, H)``. Per step one
    product ``q = h W_hh^T + b_hh`` for all three gates. Backward: each pre-activation gradient is
    ``dh_t`` times a factor known after the forward pass (e.g. ``dn_pre = dh * (1 - z)(1 - n^2)``), so
    the factors are computed for all steps at once and the loop keeps three small ops and a product.
    """

    @staticmethod
    def forward(
        ctx, x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor, reverse: bool
    ) -> Tensor:
        steps, batch, hidden = len(x), x.shape[1], h0.shape[1]
        p = _linear(x, w_ih, b_ih)  # (T, B, 3H)
        rz_all = p.new_empty(steps, batch, 2 * hidden)
        n_all, hn_all, hs = (p.new_empty(steps, batch, hidden) for _ in range(3))
        w_step, h = _prepared(w_hh, batch), h0
        for t in _order(steps, reverse):
            q, pt = _linear(h, w_step, b_hh), p[t]
            r, z = torch.add(pt[:, : 2 * hidden], q[:, : 2 * hidden], out=rz_all[t]).sigmoid_().chunk(2, 1)
            hn = hn_all[t].copy_(q[:, 2 * hidden :])  # h W_hn^T + b_hn, needed by the backward pass
            n = _tanh(torch.addcmul(pt[:, 2 * hidden :], r, hn), out=n_all[t])
            h = torch.addcmul(n, z, h - n, out=hs[t])  # (1 - z) n + z h
        ctx.save_for_backward(x, h0, w_ih, w_hh, rz_all, n_all, hn_all, hs)
        ctx.reverse = reverse
        return hs

    @staticmethod
    def backward(ctx, grad_hs: Tensor) -> tuple[Tensor | None, ...]:
        x, h0, w_ih, w_hh, rz_all, n, hn, hs = ctx.saved_tensors
        steps, batch, hidden = hs.shape
        r, z = rz_all.chunk(2, dim=2)
        h_in = _entering(hs, h0, ctx.reverse)
        per_n = (1 - z) * (1 - n * n)  # d n_pre / dh'
        per_z = (h_in - n) * z * (1 - z)  # d z_pre / dh'
        per_r = per_n * hn * r * (1 - r)  # d r_pre / dh'
        to_p = torch.stack((per_r, per_z, per_n), dim=2)  # (T, B, 3, H)
        to_q = torch.stack((per_r, per_z, per_n * r), dim=2)  # r scales the hidden n-projection
        d_p, d_q = torch.empty_like(to_p), torch.empty_like(to_q)
        grad, pairs = _backward_steps(grad_hs, ctx.reverse)
        w_back, dh = _prepared(w_hh.t(), batch), grad[pairs[0][0]]
        for t, before in pairs:
            torch.mul(to_p[t], dh.unsqueeze(1), out=d_p[t])
            torch.mul(to_q[t], dh.unsqueeze(1), out=d_q[t])
            dh = _linear(d_q[t].view(batch, -1), w_back, add=torch.addcmul(grad[before], dh, z[t]))
        d_p, d_q = d_p.view(steps, batch, -1), d_q.view(steps, batch, -1)
        d_x = _linear(d_p, w_ih.t()) if ctx.needs_input_grad[0] else None
        d_wih, d_whh = _weight_grad(d_p, x), _weight_grad(d_q, h_in)
        return d_x, dh, d_wih, d_whh, d_p.sum((0, 1)), d_q.sum((0, 1)), None


class LSTMSequence(torch.autograd.Function):
    """The LSTM of :class:`LSTMCell` over all steps, with ``b = b_ih + b_hh``.

    ``apply(x (T, B, I), h0, c0 (B, H), w_ih, w_hh, b, reverse) -> (hs (T, B, H), c_last (B, H))``.
    Per step one product ``h W_hh^T`` for all four gates. Backward carries ``(dh, dc)`` back in
    time: ``dc_t += dh_t * o_t * (1 - tanh(c_t)^2)``; the pre-activation gradients of i, f, g are
    ``dc_t`` and that of o is ``dh_t`` times factors computed for all steps at once;
    ``dc_{t-1} = dc_t * f_t`` and ``dh_{t-1} = g_{t-1} + dpre_t W_hh``.
    """

    @staticmethod
    def forward(
        ctx, x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor, b: Tensor, reverse: bool
    ) -> tuple[Tensor, Tensor]:
        steps, batch, hidden = len(x), x.shape[1], h0.shape[1]
        # Doubled g rows let one sigmoid serve all four gates, as tanh(u) = 2 sigmoid(2u) - 1.
        scale = torch.ones_like(b)
        scale[2 * hidden : 3 * hidden] = 2
        p = _linear(x, w_ih * scale[:, None], b * scale)  # (T, B, 4H)
        w_step = _prepared(w_hh * scale[:, None], batch)
        acts = torch.empty_like(p)  # sigmoid(i), sigmoid(f), tanh(g), sigmoid(o) of every step
        cs, tanh_cs, hs = (p.new_empty(steps, batch, hidden) for _ in range(3))
        # Per-step views made once, so that the loop body only computes.
        i_s, f_s, g_s, o_s = (gate.unbind(0) for gate in acts.chunk(4, dim=2))
        p_s, a_s, c_s, tc_s, h_s = (buf.unbind(0) for buf in (p, acts, cs, tanh_cs, hs))
        h, c = h0, c0
        for t in _order(steps, reverse):
            torch.sigmoid(_linear(h, w_step, add=p_s[t]), out=a_s[t])
            g_s[t].mul_(2.0).sub_(1.0)  # tanh of the g pre-activation
            c = torch.addcmul(f_s[t] * c, i_s[t], g_s[t], out=c_s[t])
            h = torch.mul(o_s[t], _tanh(c, out=tc_s[t]), out=h_s[t])
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, acts, cs, tanh_cs, hs)
        ctx.reverse = reverse
        return hs, c.clone()

    @staticmethod
    def backward(ctx, grad_hs: Tensor, grad_c: Tensor) -> tuple[Tensor | None, ...]:
        x, h0, c0, w_ih, w_hh, acts, cs, tanh_cs, hs = ctx.saved_tensors
        steps, batch, hidden = hs.shape
        i, f, g, o = acts.chunk(4, dim=2)
        dc_per_dh = o * (1 - tanh_cs * tanh_cs)
        c_in = _entering(cs, c0, ctx.reverse)
        # d(pre-activation)/dc for i, f, g and d(pre-activation)/dh for o, every step at once
        per_dc = torch.stack((g * i * (1 - i), c_in * f * (1 - f), i * (1 - g * g)), dim=2)
        per_dh = tanh_cs * o * (1 - o)
        d_pre = acts.new_empty(steps, batch, 4, hidden)
        grad, pairs = _backward_steps(grad_hs, ctx.reverse)
        # Per-step views made once, so that the loop body only computes.
        grad_s, f_s, dc_per_dh_s, per_dc_s, per_dh_s = (
            t.unbind(0) for t in (grad, f, dc_per_dh, per_dc, per_dh)
        )
        d_views = (d_pre.view(steps, batch, -1), d_pre[:, :, :3], d_pre[:, :, 3])  # all, (i, f, g), o
        d_s, d_ifg_s, d_o_s = (t.unbind(0) for t in d_views)
        w_back, dh, dc = _prepared(w_hh.t(), batch), grad_s[pairs[0][0]], grad_c
        for t, before in pairs:
            dc = torch.addcmul(dc, dh, dc_per_dh_s[t])
            torch.mul(per_dc_s[t], dc.unsqueeze(1), out=d_ifg_s[t])
            torch.mul(dh, per_dh_s[t], out=d_o_s[t])
            dc = dc * f_s[t]  # the last one is dc_0
            dh = _linear(d_s[t], w_back, add=grad_s[before])  # the last one is dh_0
        d_pre = d_pre.view(steps, batch, -1)
        h_in = _entering(hs, h0, ctx.reverse)
        d_x, d_wih, d_whh = _dense_grads(d_pre, x, h_in, w_ih, ctx.needs_input_grad[0])
        return d_x, dh, dc, d_wih, d_whh, d_pre.sum((0, 1)), None
