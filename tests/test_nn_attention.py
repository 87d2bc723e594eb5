"""Attention from scratch against independent references.

References: a per-row loop that applies ``torch.softmax`` to only the kept entries; a per-pair loop for
additive scores; ``torch.nn.functional.scaled_dot_product_attention``; ``torch.nn.MultiheadAttention``
with copied weights. All comparisons run in float64 with ``atol = 1e-10`` (values) and ``atol = 1e-9``
(gradients); masked positions are compared exactly against zero.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from divekit.errors import ShapeError
from divekit.nn.attention import AdditiveAttention, DotProductAttention, masked_softmax, scaled_dot_product_attention
from divekit.nn.multihead_attention import MultiHeadAttention, reorder_kv_cache

VALUE_TOL = 1e-10
GRAD_TOL = 1e-9
FAST = settings(max_examples=30, deadline=None)
F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: thread hand-offs would cost more than the arithmetic on a shared CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def randn(*shape: int, seed: int, requires_grad: bool = False) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=F64).requires_grad_(requires_grad)


def random_keep(shape: tuple[int, ...], seed: int, p: float = 0.6) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=gen) < p


def loop_masked_softmax(scores: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Softmax of each row restricted to its kept entries, zero elsewhere, by explicit indexing."""
    keep = keep.expand(scores.shape).reshape(-1, scores.shape[-1])
    rows = []
    for row, row_keep in zip(scores.reshape(-1, scores.shape[-1]), keep):
        out = row * 0.0  # stays in the graph, so an all-empty input still has a gradient
        idx = row_keep.nonzero().flatten()
        if len(idx):
            out = out.index_put((idx,), torch.softmax(row[idx], dim=0))
        rows.append(out)
    return torch.stack(rows).reshape(scores.shape)


def lens_to_keep(valid_lens: torch.Tensor, queries: int, keys: int) -> torch.Tensor:
    """(B,) or (B, T) lengths -> (B, T, S) keep mask, by a loop."""
    keep = torch.zeros(valid_lens.shape[0], queries, keys, dtype=torch.bool)
    for b in range(valid_lens.shape[0]):
        for t in range(queries):
            n = int(valid_lens[b] if valid_lens.dim() == 1 else valid_lens[b, t])
            keep[b, t, :n] = True
    return keep


def values_and_grads(fn, inputs: list[torch.Tensor], upstream: torch.Tensor):
    out = fn(*inputs)
    grads = torch.autograd.grad((out * upstream).sum(), inputs, allow_unused=True)
    return out, grads


# ---------------------------------------------------------------- masked softmax


@FAST
@given(
    batch=st.integers(1, 3),
    queries=st.integers(1, 4),
    keys=st.integers(1, 6),
    per_query=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_masked_softmax_valid_lens_matches_loop(batch, queries, keys, per_query, seed):
    scores = randn(batch, queries, keys, seed=seed, requires_grad=True)
    gen = torch.Generator().manual_seed(seed + 1)
    lens_shape = (batch, queries) if per_query else (batch,)
    valid_lens = torch.randint(0, keys + 1, lens_shape, generator=gen)  # 0 = an empty row
    upstream = randn(batch, queries, keys, seed=seed + 2)
    ours, (g_ours,) = values_and_grads(lambda s: masked_softmax(s, valid_lens), [scores], upstream)
    keep = lens_to_keep(valid_lens, queries, keys)
    ref, (g_ref,) = values_and_grads(lambda s: loop_masked_softmax(s, keep), [scores], upstream)
    torch.testing.assert_close(ours, ref, atol=VALUE_TOL, rtol=0)
    torch.testing.assert_close(g_ours, g_ref, atol=GRAD_TOL, rtol=0)
    assert torch.all(ours[~keep] == 0) and torch.all(g_ours[~keep] == 0)


@FAST
@given(
    batch=st.integers(1, 3),
    queries=st.integers(1, 4),
    keys=st.integers(1, 6),
    layout=st.sampled_from(["full", "per_batch", "per_query"]),
    seed=st.integers(0, 10_000),
)
def test_masked_softmax_broadcast_bool_mask_matches_loop(batch, queries, keys, layout, seed):
    shape = {"full": (batch, queries, keys), "per_batch": (batch, 1, keys), "per_query": (1, queries, keys)}[layout]
    keep = random_keep(shape, seed)
    scores = randn(batch, queries, keys, seed=seed, requires_grad=True)
    upstream = randn(batch, queries, keys, seed=seed + 2)
    ours, (g_ours,) = values_and_grads(lambda s: masked_softmax(s, mask=keep), [scores], upstream)
    ref, (g_ref,) = values_and_grads(lambda s: loop_masked_softmax(s, keep), [scores], upstream)
    torch.testing.assert_close(ours, ref, atol=VALUE_TOL, rtol=0)
    torch.testing.assert_close(g_ours, g_ref, atol=GRAD_TOL, rtol=0)


def test_masked_softmax_combines_valid_lens_and_mask_with_and():
    scores = randn(2, 3, 5, seed=0)
    valid_lens = torch.tensor([4, 2])
    keep = random_keep((2, 3, 5), seed=1)
    expected = loop_masked_softmax(scores, keep & lens_to_keep(valid_lens, 3, 5))
    torch.testing.assert_close(masked_softmax(scores, valid_lens, keep), expected, atol=VALUE_TOL, rtol=0)


def test_masked_softmax_four_d_scores_follow_each_head():
    scores = randn(2, 3, 4, 5, seed=3)  # (B, H, T, S)
    for valid_lens in (torch.tensor([5, 2]), torch.tensor([[1, 0, 5, 3], [2, 2, 4, 0]])):
        ours = masked_softmax(scores, valid_lens)
        for head in range(3):
            expected = loop_masked_softmax(scores[:, head], lens_to_keep(valid_lens, 4, 5))
            torch.testing.assert_close(ours[:, head], expected, atol=VALUE_TOL, rtol=0)


def test_empty_rows_give_zeros_and_finite_gradients():
    scores = (randn(2, 3, 4, seed=5) * 1e4).requires_grad_(True)  # large scores stress the fill value
    valid_lens = torch.tensor([[0, 2, 0], [0, 0, 0]])
    weights = masked_softmax(scores, valid_lens)
    (weights * randn(2, 3, 4, seed=6)).sum().backward()
    empty = valid_lens == 0
    assert torch.isfinite(weights).all() and torch.isfinite(scores.grad).all()
    assert torch.all(weights[empty] == 0) and torch.all(scores.grad[empty] == 0)
    torch.testing.assert_close(weights[0, 1].sum(), torch.tensor(1.0, dtype=F64))


def test_masked_keys_get_zero_weight_and_zero_gradient_even_with_extreme_scores():
    scores = randn(1, 2, 4, seed=7)
    scores[..., 2:] = torch.tensor([1e300, float("inf")], dtype=F64)  # masked and absurd
    scores.requires_grad_(True)
    weights = masked_softmax(scores, torch.tensor([2]))
    (weights * randn(1, 2, 4, seed=8)).sum().backward()
    assert torch.all(weights[..., 2:] == 0) and torch.all(scores.grad[..., 2:] == 0)
    torch.testing.assert_close(weights[..., :2], torch.softmax(scores[..., :2].detach(), -1), atol=VALUE_TOL, rtol=0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"valid_lens": torch.tensor([1, 2, 3])},  # wrong batch
        {"valid_lens": torch.ones(2, 5, dtype=torch.long)},  # wrong number of queries
        {"mask": torch.ones(2, 3, 4)},  # float mask
        {"mask": torch.ones(3, 3, 4, dtype=torch.bool)},  # does not broadcast
    ],
)
def test_masked_softmax_rejects_bad_masks(kwargs):
    with pytest.raises(ShapeError):
        masked_softmax(torch.zeros(2, 3, 4), **kwargs)


# ---------------------------------------------------------------- scaled dot-product


@FAST
@given(
    lead=st.sampled_from([(2,), (1,), (2, 3)]),
    queries=st.integers(1, 4),
    keys=st.integers(1, 5),
    width=st.integers(1, 6),
    mask_kind=st.sampled_from(["none", "bool", "valid_lens", "per_query_lens"]),
    seed=st.integers(0, 10_000),
)
def test_sdpa_matches_torch(lead, queries, keys, width, mask_kind, seed):
    q = randn(*lead, queries, width, seed=seed, requires_grad=True)
    k = randn(*lead, keys, width, seed=seed + 1, requires_grad=True)
    v = randn(*lead, keys, width + 1, seed=seed + 2, requires_grad=True)
    upstream = randn(*lead, queries, width + 1, seed=seed + 3)
    batch, gen = lead[0], torch.Generator().manual_seed(seed)
    mask = valid_lens = None
    torch_mask = None
    if mask_kind == "bool":
        mask = torch_mask = random_keep((*lead, queries, keys), seed)
    elif mask_kind in ("valid_lens", "per_query_lens"):
        shape = (batch,) if mask_kind == "valid_lens" else (batch, queries)
        valid_lens = torch.randint(0, keys + 1, shape, generator=gen)
        torch_mask = lens_to_keep(valid_lens, queries, keys)
        torch_mask = torch_mask.view(batch, *(1,) * (len(lead) - 1), queries, keys)
    ours, g_ours = values_and_grads(
        lambda *t: scaled_dot_product_attention(*t, mask=mask, valid_lens=valid_lens), [q, k, v], upstream
    )
    ref, g_ref = values_and_grads(
        lambda *t: F.scaled_dot_product_attention(*t, attn_mask=torch_mask), [q, k, v], upstream
    )
    torch.testing.assert_close(ours, ref, atol=VALUE_TOL, rtol=0)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, atol=GRAD_TOL, rtol=0)


def test_dot_product_module_matches_function_and_returns_weights():
    q, k, v = randn(2, 3, 4, seed=0), randn(2, 5, 4, seed=1), randn(2, 5, 2, seed=2)
    valid_lens = torch.tensor([2, 5])
    attention = DotProductAttention(dropout=0.5).eval()
    out, weights = attention(q, k, v, valid_lens=valid_lens)
    torch.testing.assert_close(out, scaled_dot_product_attention(q, k, v, valid_lens=valid_lens), atol=0, rtol=0)
    expected = loop_masked_softmax(q @ k.transpose(1, 2) / 2.0, lens_to_keep(valid_lens, 3, 5))  # sqrt(d) = 2
    torch.testing.assert_close(weights, expected, atol=VALUE_TOL, rtol=0)
    out_only, none = attention(q, k, v, valid_lens=valid_lens, need_weights=False)
    assert none is None and torch.equal(out_only, out)
    assert not hasattr(attention, "attention_weights")  # returned, never kept on the module


def test_dot_product_dropout_acts_only_in_training():
    q, k, v = randn(4, 6, 8, seed=0), randn(4, 7, 8, seed=1), randn(4, 7, 8, seed=2)
    attention = DotProductAttention(dropout=0.5)
    torch.manual_seed(0)
    train_out, train_weights = attention(q, k, v)
    eval_out, eval_weights = attention.eval()(q, k, v)
    assert not torch.allclose(train_out, eval_out)
    torch.testing.assert_close(train_weights, eval_weights, atol=0, rtol=0)  # returned before dropout


# ---------------------------------------------------------------- additive


def loop_additive(attn: AdditiveAttention, q, k, v, keep):
    """score[b, i, j] = w_v . tanh(W_q q_i + W_k k_j), one pair at a time."""
    batch, queries, keys = q.shape[0], q.shape[1], k.shape[1]
    w_q, w_k, w_v = attn.W_q.weight, attn.W_k.weight, attn.w_v.weight[0]
    scores = torch.stack(
        [
            torch.stack([torch.stack([w_v @ torch.tanh(w_q @ q[b, i] + w_k @ k[b, j]) for j in range(keys)])
                         for i in range(queries)])
            for b in range(batch)
        ]
    )
    return loop_masked_softmax(scores, keep) @ v


@settings(max_examples=20, deadline=None)
@given(
    batch=st.integers(1, 2),
    queries=st.integers(1, 3),
    keys=st.integers(1, 4),
    sizes=st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 6), st.integers(1, 3)),
    seed=st.integers(0, 10_000),
)
def test_additive_attention_matches_pairwise_loop(batch, queries, keys, sizes, seed):
    d_q, d_k, hidden, d_v = sizes
    torch.manual_seed(seed)
    attn = AdditiveAttention(key_size=d_k, query_size=d_q, num_hiddens=hidden, dropout=0.0).double()
    q = randn(batch, queries, d_q, seed=seed, requires_grad=True)
    k = randn(batch, keys, d_k, seed=seed + 1, requires_grad=True)
    v = randn(batch, keys, d_v, seed=seed + 2, requires_grad=True)
    valid_lens = torch.randint(0, keys + 1, (batch, queries), generator=torch.Generator().manual_seed(seed))
    upstream = randn(batch, queries, d_v, seed=seed + 3)
    ours, g_ours = values_and_grads(lambda *t: attn(*t, valid_lens=valid_lens)[0], [q, k, v], upstream)
    ref, g_ref = values_and_grads(
        lambda *t: loop_additive(attn, *t, lens_to_keep(valid_lens, queries, keys)), [q, k, v], upstream
    )
    torch.testing.assert_close(ours, ref, atol=VALUE_TOL, rtol=0)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, atol=GRAD_TOL, rtol=0)
    assert attn(q, k, v, valid_lens=valid_lens)[1].shape == (batch, queries, keys)


def test_additive_attention_ignores_masked_keys_and_values():
    torch.manual_seed(0)
    attn = AdditiveAttention(key_size=3, query_size=2, num_hiddens=4).double()
    q, k, v = randn(2, 3, 2, seed=0), randn(2, 5, 3, seed=1, requires_grad=True), randn(2, 5, 4, seed=2)
    valid_lens = torch.tensor([2, 4])
    out, _ = attn(q, k, v, valid_lens=valid_lens)
    out.sum().backward()
    k2, v2 = k.detach().clone(), v.clone()
    k2[0, 2:], v2[0, 2:], k2[1, 4:], v2[1, 4:] = 9.0, -9.0, 7.0, 3.0
    torch.testing.assert_close(attn(q, k2, v2, valid_lens=valid_lens)[0], out.detach(), atol=VALUE_TOL, rtol=0)
    assert torch.all(k.grad[0, 2:] == 0) and torch.all(k.grad[1, 4:] == 0)
    assert torch.all(k.grad[0, :2] != 0)


# ---------------------------------------------------------------- multi-head


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
