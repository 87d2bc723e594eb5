"""Multi-head attention from scratch against ``torch.nn.MultiheadAttention`` with copied weights.

Float64 throughout, tolerances as in test_nn_attention.py; masked positions are compared exactly against zero.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from divekit.errors import ShapeError
from divekit.nn.multihead_attention import MultiHeadAttention, reorder_kv_cache
from test_nn_attention import F64, FAST, GRAD_TOL, VALUE_TOL, randn, random_keep, lens_to_keep

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only adds hand-offs


def paired_mha(d_model: int, heads: int, bias: bool, seed: int) -> tuple[MultiHeadAttention, nn.MultiheadAttention]:
    torch.manual_seed(seed)
    theirs = nn.MultiheadAttention(d_model, heads, bias=bias, batch_first=True, dtype=F64)
    if bias:  # torch starts biases at zero; random ones make the copy checkable
        nn.init.normal_(theirs.in_proj_bias)
        nn.init.normal_(theirs.out_proj.bias)
    ours = MultiHeadAttention(d_model, heads, bias=bias).double()
    ours.load_from_torch(theirs)
    return ours, theirs


def mha_grad_pairs(ours: MultiHeadAttention, theirs: nn.MultiheadAttention):
    """(our grad, torch grad) per parameter; torch packs q, k, v projections in rows [0:D], [D:2D], [2D:3D]."""
    d = ours.d_model
    projections = [ours.W_q, ours.W_k, ours.W_v]
    pairs = [(p.weight.grad, theirs.in_proj_weight.grad[i * d : (i + 1) * d]) for i, p in enumerate(projections)]
    pairs.append((ours.W_o.weight.grad, theirs.out_proj.weight.grad))
    if theirs.in_proj_bias is not None:
        pairs += [(p.bias.grad, theirs.in_proj_bias.grad[i * d : (i + 1) * d]) for i, p in enumerate(projections)]
        pairs.append((ours.W_o.bias.grad, theirs.out_proj.bias.grad))
    return pairs


def make_masks(kind: str, batch: int, heads: int, queries: int, keys: int, seed: int):
    """(our kwargs, torch kwargs) for one mask kind; key 0 is always visible so torch gives no NaN."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "none":
        return {}, {}
    if kind == "key_padding":
        kpm = ~random_keep((batch, keys), seed)
        kpm[:, 0] = False
        return {"key_padding_mask": kpm}, {"key_padding_mask": kpm}
    if kind == "attn_2d":
        blocked = ~random_keep((queries, keys), seed)
        blocked[:, 0] = False
        return {"attn_mask": blocked}, {"attn_mask": blocked}
    if kind == "attn_3d":
        blocked = ~random_keep((batch * heads, queries, keys), seed)
        blocked[..., 0] = False
        return {"attn_mask": blocked}, {"attn_mask": blocked}
    if kind == "attn_float":
        bias = torch.randn(queries, keys, generator=gen, dtype=F64)
        bias[:, 1:][~random_keep((queries, keys - 1), seed)] = float("-inf")
        return {"attn_mask": bias}, {"attn_mask": bias}
    if kind == "valid_lens":
        lens = torch.randint(1, keys + 1, (batch,), generator=gen)
        return {"valid_lens": lens}, {"key_padding_mask": ~lens_to_keep(lens, 1, keys)[:, 0]}
    if kind == "per_query_lens":
        lens = torch.randint(1, keys + 1, (batch, queries), generator=gen)
        blocked = ~lens_to_keep(lens, queries, keys).repeat_interleave(heads, dim=0)  # (B*H, T, S)
        return {"valid_lens": lens}, {"attn_mask": blocked}
    raise AssertionError(kind)


@FAST
@given(
    batch=st.integers(1, 3),
    queries=st.integers(1, 4),
    keys=st.integers(1, 5),
    heads=st.sampled_from([1, 2, 3]),
    head_width=st.integers(1, 3),
    bias=st.booleans(),
    self_attention=st.booleans(),
    kind=st.sampled_from(["none", "key_padding", "attn_2d", "attn_3d", "attn_float", "valid_lens", "per_query_lens"]),
    seed=st.integers(0, 10_000),
)
def test_mha_matches_torch(batch, queries, keys, heads, head_width, bias, self_attention, kind, seed):
    d = heads * head_width
    keys = queries if self_attention else keys
    ours, theirs = paired_mha(d, heads, bias, seed)
    q = randn(batch, queries, d, seed=seed, requires_grad=True)
    kv = q if self_attention else randn(batch, keys, d, seed=seed + 1, requires_grad=True)
    v = q if self_attention else randn(batch, keys, d, seed=seed + 2, requires_grad=True)
    our_masks, torch_masks = make_masks(kind, batch, heads, queries, keys, seed)
    upstream = randn(batch, queries, d, seed=seed + 3)
    inputs = [q] if self_attention else [q, kv, v]

    def run(module, masks):
        out, weights = module(q, kv, v, **masks)
        _, per_head = module(q, kv, v, need_weights=True, average_attn_weights=False, **masks)
        grads = torch.autograd.grad((out * upstream).sum(), inputs, retain_graph=True)
        return out, weights, per_head, grads

    out, weights, per_head, g_in = run(ours, our_masks)
    ref, ref_weights, ref_per_head, g_ref = run(theirs, torch_masks)
    torch.testing.assert_close(out, ref, atol=VALUE_TOL, rtol=0)
    torch.testing.assert_close(weights, ref_weights, atol=VALUE_TOL, rtol=0)
    torch.testing.assert_close(per_head, ref_per_head, atol=VALUE_TOL, rtol=0)
    for a, b in zip(g_in, g_ref):
        torch.testing.assert_close(a, b, atol=GRAD_TOL, rtol=0)
    ((out * upstream).sum()).backward()
    ((ref * upstream).sum()).backward()
    for a, b in mha_grad_pairs(ours, theirs):
        torch.testing.assert_close(a, b, atol=GRAD_TOL, rtol=0)


def test_mha_fully_masked_query_gives_zero_attention_and_finite_gradients():
    ours, _ = paired_mha(4, 2, bias=True, seed=0)
    q = randn(2, 3, 4, seed=1, requires_grad=True)
    kv = randn(2, 5, 4, seed=2, requires_grad=True)
    valid_lens = torch.tensor([[0, 3, 0], [5, 0, 1]])
    out, weights = ours(q, kv, kv, valid_lens=valid_lens)
    (out * randn(2, 3, 4, seed=3)).sum().backward()
    empty = valid_lens == 0
    assert torch.all(weights[empty] == 0)
    # No admissible key: the attended vector is zero, so only the output bias remains.
    torch.testing.assert_close(out[empty], ours.W_o.bias.expand(int(empty.sum()), 4), atol=VALUE_TOL, rtol=0)
    assert torch.isfinite(q.grad).all() and torch.isfinite(kv.grad).all()
    assert torch.all(q.grad[empty] == 0)


def test_mha_per_head_mask_uses_torch_batch_major_layout():
    """A (B*H, T, S) mask is indexed b * H + h, as in torch; a distinct mask per (batch, head) checks it."""
    ours, theirs = paired_mha(6, 3, bias=True, seed=11)
    q, kv = randn(2, 4, 6, seed=12), randn(2, 5, 6, seed=13)
    blocked = ~random_keep((6, 4, 5), seed=14, p=0.5)
    blocked[..., 0] = False
    _, per_head = ours(q, kv, kv, attn_mask=blocked, average_attn_weights=False)
    _, ref_per_head = theirs(q, kv, kv, attn_mask=blocked, average_attn_weights=False)
    torch.testing.assert_close(per_head, ref_per_head, atol=VALUE_TOL, rtol=0)
    assert torch.all(per_head.reshape(6, 4, 5)[blocked] == 0)


def test_mha_float_mask_with_an_all_minus_infinity_row_gives_zeros_not_nan():
    ours, _ = paired_mha(4, 2, bias=True, seed=15)
    q = randn(1, 3, 4, seed=16, requires_grad=True)
    kv = randn(1, 4, 4, seed=17, requires_grad=True)
    additive = torch.zeros(3, 4, dtype=F64)
    additive[1] = float("-inf")  # query 1 may see nothing
    additive[2, 3] = float("-inf")
    out, weights = ours(q, kv, kv, attn_mask=additive)
    out.sum().backward()
    assert torch.all(weights[0, 1] == 0) and weights[0, 2, 3] == 0
    torch.testing.assert_close(weights[0, 2].sum(), torch.tensor(1.0, dtype=F64))
    assert torch.isfinite(out).all() and torch.isfinite(q.grad).all() and torch.isfinite(kv.grad).all()


def test_mha_incremental_cache_equals_full_causal_attention():
    ours, _ = paired_mha(6, 3, bias=True, seed=4)
    x = randn(2, 7, 6, seed=5)
    causal = torch.ones(7, 7, dtype=torch.bool).triu(1)
    full, _ = ours(x, x, x, attn_mask=causal)
    cache: dict = {}
    chunks = [(0, 3), (3, 4), (4, 5), (5, 7)]  # a prefill of 3, then single steps, then 2
    outs = []
    for start, stop in chunks:
        block = torch.arange(stop)[None, :] > torch.arange(start, stop)[:, None]  # (new, total)
        out, _ = ours(x[:, start:stop], x[:, start:stop], x[:, start:stop], attn_mask=block, cache=cache)
        outs.append(out)
        assert cache["key"].shape == (2, 3, stop, 2)
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=VALUE_TOL, rtol=0)


@pytest.mark.parametrize("fused", [False, True])
def test_is_causal_equals_the_written_out_mask_with_and_without_the_fused_kernel(fused):
    """``is_causal`` (scratch steps, or torch's fused kernel) = the explicit block mask, in values and
    gradients; over a cache the new queries are the last T of the S keys."""
    ours, _ = paired_mha(6, 3, bias=True, seed=6)
    ours.fused = fused
    x = randn(2, 7, 6, seed=7).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    out, weights = ours(x, x, x, is_causal=True, need_weights=False)
    ref, _ = ours(x_ref, x_ref, x_ref, attn_mask=torch.ones(7, 7, dtype=torch.bool).triu(1))
    assert weights is None
    torch.testing.assert_close(out, ref, atol=VALUE_TOL, rtol=0)
    probe = randn(2, 7, 6, seed=8)
    (out * probe).sum().backward()
    (ref * probe).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=GRAD_TOL, rtol=0)
    cache: dict = {}
    steps = [ours(x[:, a:b], x[:, a:b], x[:, a:b], is_causal=True, need_weights=False, cache=cache)[0]
             for a, b in [(0, 3), (3, 4), (4, 7)]]
    torch.testing.assert_close(torch.cat(steps, dim=1), ref, atol=VALUE_TOL, rtol=0)
    with pytest.raises(ShapeError, match="at least as many keys"):
        ours(x, x[:, :3], x[:, :3], is_causal=True)


def test_mha_static_cache_projects_memory_once():
    ours, _ = paired_mha(4, 2, bias=True, seed=6)
    memory, q = randn(2, 5, 4, seed=7), randn(2, 3, 4, seed=8)
    kpm = torch.tensor([[False] * 5, [False, False, True, True, True]])
    full, _ = ours(q, memory, memory, key_padding_mask=kpm)
    cache: dict = {"static": True}
    outs = [ours(q[:, t : t + 1], memory, memory, key_padding_mask=kpm, cache=cache)[0] for t in range(3)]
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=VALUE_TOL, rtol=0)
    assert cache["key"].shape == (2, 2, 5, 2)
    again, _ = ours(q, None, None, key_padding_mask=kpm, cache=cache)  # memory no longer needed
    torch.testing.assert_close(again, full, atol=0, rtol=0)


def test_reorder_kv_cache_follows_selected_rows():
    ours, _ = paired_mha(4, 2, bias=True, seed=9)
    x = randn(3, 4, 4, seed=10)
    cache: dict = {}
    for t in range(3):
        ours(x[:, t : t + 1], x[:, t : t + 1], x[:, t : t + 1], cache=cache)
    order = torch.tensor([2, 2, 0])
    nested = {"block0": {"self": cache}}
    reorder_kv_cache(nested, order)
    step, _ = ours(x[order, 3:], x[order, 3:], x[order, 3:], cache=nested["block0"]["self"])
    reference, _ = ours(x[order], x[order], x[order], attn_mask=torch.ones(4, 4, dtype=torch.bool).triu(1))
    torch.testing.assert_close(step[:, 0], reference[:, 3], atol=VALUE_TOL, rtol=0)


def test_mha_rejects_bad_shapes_and_incompatible_torch_layers():
    with pytest.raises(ShapeError, match="divisible"):
        MultiHeadAttention(6, 4)
    ours = MultiHeadAttention(4, 2)
    with pytest.raises(ShapeError, match=r"\(B, T, D=4\)"):
        ours(torch.zeros(2, 3, 5), torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))
    x = torch.zeros(2, 3, 4)
    with pytest.raises(ShapeError, match="key_padding_mask"):
        ours(x, x, x, key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ShapeError, match="attn_mask"):
        ours(x, x, x, attn_mask=torch.zeros(3, 4, dtype=torch.bool))
    wrong_heads, wrong_kdim = nn.MultiheadAttention(4, 1), nn.MultiheadAttention(4, 2, kdim=3, vdim=3)
    for bad in (wrong_heads, wrong_kdim, nn.MultiheadAttention(4, 2, bias=False)):
        with pytest.raises(ShapeError):
            ours.load_from_torch(bad)


def test_mha_scale_uses_head_width():
    """One head whose projections are identities reduces to scaled dot-product attention."""
    ours = MultiHeadAttention(4, 1, bias=False).double()
    with torch.no_grad():
        for linear in (ours.W_q, ours.W_k, ours.W_v, ours.W_o):
            linear.weight.copy_(torch.eye(4))
    q, k = randn(2, 3, 4, seed=0), randn(2, 5, 4, seed=1)
    expected = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(4), dim=-1) @ k
    torch.testing.assert_close(ours(q, k, k)[0], expected, atol=VALUE_TOL, rtol=0)
