"""ALiBi: the slopes of Press et al. (2022) and biases that attention adds, checked against the formula by hand."""

from __future__ import annotations

import math

import pytest
import torch

from divekit.errors import ShapeError
from divekit.nn.multihead_attention import MultiHeadAttention
from divekit.nn.positional import ALiBi, alibi_slopes


def test_slopes_are_the_papers_geometric_sequence():
    # The paper's values for 8 heads: 1/2, 1/4, ..., 1/256; for 16 heads they start at 1/sqrt(2).
    assert alibi_slopes(8).tolist() == [2.0 ** -k for k in range(1, 9)]
    torch.testing.assert_close(alibi_slopes(16)[:2], torch.tensor([2 ** -0.5, 2 ** -1.0]))
    assert alibi_slopes(1).tolist() == [2.0 ** -8]
    with pytest.raises(ShapeError, match="positive"):
        alibi_slopes(0)


@pytest.mark.parametrize("queries, keys", [(1, 1), (4, 4), (1, 6), (3, 7)])
def test_bias_is_minus_slope_times_distance_to_each_earlier_key(queries, keys):
    heads = 3
    bias = ALiBi(heads)(queries, keys)
    slopes = alibi_slopes(heads)
    assert bias.shape == (heads, queries, keys)
    for h in range(heads):
        for i in range(queries):
            position = keys - queries + i
            for j in range(keys):
                expected = -slopes[h].item() * (position - j) if j <= position else 0.0
                assert bias[h, i, j].item() == pytest.approx(expected, abs=1e-7)
    with pytest.raises(ShapeError, match="T <= S"):
        ALiBi(heads)(5, 4)


def test_attention_with_the_bias_equals_the_softmax_written_out():
    torch.manual_seed(0)
    heads, d_model, B, T = 2, 8, 2, 5
    attention = MultiHeadAttention(d_model, heads).double().eval()
    x = torch.randn(B, T, d_model, dtype=torch.float64)
    bias = ALiBi(heads)(T, T).double()
    out, _ = attention(x, x, x, attn_mask=bias, is_causal=True, need_weights=False)
    # By hand: per head, scores/sqrt(d) - m_h (i - j), future keys removed, softmax, then W_o.
    q, k, v = (w(x).view(B, T, heads, -1).transpose(1, 2) for w in (attention.W_q, attention.W_k, attention.W_v))
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_model // heads)
    slopes = alibi_slopes(heads).double()
    i = torch.arange(T)
    scores = scores - slopes[:, None, None] * (i[:, None] - i[None, :]).double()
    scores = scores.masked_fill(i[None, :] > i[:, None], float("-inf"))
    expected = attention.W_o((scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, d_model))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    fused = MultiHeadAttention(d_model, heads, fused=True).double().eval()
    fused.load_state_dict(attention.state_dict())
    torch.testing.assert_close(fused(x, x, x, attn_mask=bias, is_causal=True, need_weights=False)[0], expected,
                               rtol=0, atol=1e-12)
