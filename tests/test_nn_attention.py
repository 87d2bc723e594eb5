"""Attention from scratch against independent references.

References: a per-row loop that applies ``torch.softmax`` to only the kept entries; a per-pair loop for
additive scores; ``torch.nn.functional.scaled_dot_product_attention``. All comparisons run in float64 with ``atol = 1e-10`` (values) and ``atol = 1e-9``
(gradients); masked positions are compared exactly against zero.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from divekit.errors import ShapeError
from divekit.nn.attention import AdditiveAttention, DotProductAttention, masked_softmax, scaled_dot_product_attention

VALUE_TOL = 1e-10
GRAD_TOL = 1e-9
FAST = settings(max_examples=30, deadline=None)
F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only adds hand-offs


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
