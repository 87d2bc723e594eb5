"""Positional encodings and Transformer blocks against hand-checked values and torch's layers.

Encoder/decoder blocks are compared with ``torch.nn.TransformerEncoderLayer`` /
``TransformerDecoderLayer`` (batch_first, post-norm, ReLU, dropout 0) after ``load_from_torch``, in
float64: outputs within ``atol = 1e-10``, gradients within ``atol = 1e-9``. Incremental decoding is
compared with full recomputation under the causal mask at the same tolerance.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from divekit.errors import ShapeError
from divekit.nn.positional import LearnedPositionalEncoding, SinusoidalPositionalEncoding, sinusoidal_table
from divekit.nn.transformer_blocks import AddNorm, DecoderBlock, EncoderBlock, PositionWiseFFN, causal_mask

VALUE_TOL = 1e-10
GRAD_TOL = 1e-9
FAST = settings(max_examples=25, deadline=None)
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


def randomise(module: nn.Module, seed: int) -> None:
    """Random values for every parameter, so that zero-initialised biases and unit norms are checked too."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)


# ---------------------------------------------------------------- positional encodings


def test_sinusoid_values_at_hand_checked_positions():
    table = sinusoidal_table(max_len=4, d_model=4).double()
    torch.testing.assert_close(table[0], torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=F64))
    # 10000^(2/4) = 100, so the second column pair turns 0.01 rad per position.
    expected_1 = [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)]
    expected_3 = [math.sin(3), math.cos(3), math.sin(0.03), math.cos(0.03)]
    torch.testing.assert_close(table[1], torch.tensor(expected_1, dtype=F64), atol=1e-7, rtol=0)
    torch.testing.assert_close(table[3], torch.tensor(expected_3, dtype=F64), atol=1e-7, rtol=0)
    odd = sinusoidal_table(max_len=3, d_model=5)  # the fifth column is a sine at 2i = 4
    assert odd[2, 4].item() == pytest.approx(math.sin(2 / 10000 ** (4 / 5)), abs=1e-7)
    assert odd[2, 3].item() == pytest.approx(math.cos(2 / 10000 ** (2 / 5)), abs=1e-7)


@FAST
@given(max_len=st.integers(1, 30), d_model=st.integers(1, 12))
def test_sinusoid_table_matches_formula(max_len, d_model):
    table = sinusoidal_table(max_len, d_model)
    expected = torch.tensor(
        [
            [(math.sin if j % 2 == 0 else math.cos)(p / 10000 ** ((j - j % 2) / d_model)) for j in range(d_model)]
            for p in range(max_len)
        ]
    )
    assert table.shape == (max_len, d_model)
    torch.testing.assert_close(table, expected, atol=1e-6, rtol=0)


def test_sinusoid_shift_is_a_rotation_per_frequency():
    table = sinusoidal_table(max_len=50, d_model=8).double()
    shift = 7
    for i in range(4):
        angle = shift / 10000 ** (2 * i / 8)
        rotation = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=F64)
        pair = table[:, 2 * i : 2 * i + 2]  # (sin a, cos a) at every position
        torch.testing.assert_close(pair[:-shift] @ rotation, pair[shift:], atol=1e-6, rtol=0)


@pytest.mark.parametrize("encoding_cls", [SinusoidalPositionalEncoding, LearnedPositionalEncoding])
def test_offset_encodes_later_positions(encoding_cls):
    torch.manual_seed(0)
    encoding = encoding_cls(d_model=6, max_len=10, dropout=0.3).eval()
    x = randn(2, 8, 6, seed=1).float()
    full = encoding(x)
    torch.testing.assert_close(full - x, encoding.table[:8].expand(2, 8, 6), atol=1e-6, rtol=0)
    torch.testing.assert_close(encoding(x[:, 5:], offset=5), full[:, 5:], atol=0, rtol=0)
    with pytest.raises(ShapeError, match="max_len=10"):
        encoding(x, offset=3)
    with pytest.raises(ShapeError, match=r"D=6"):
        encoding(torch.zeros(2, 3, 5))


def test_sinusoid_table_is_not_checkpointed_but_learned_table_is():
    assert "table" not in SinusoidalPositionalEncoding(4, 10).state_dict()
    assert "table" in LearnedPositionalEncoding(4, 10).state_dict()


def test_learned_encoding_trains_only_the_rows_it_used():
    encoding = LearnedPositionalEncoding(d_model=3, max_len=9)
    encoding(torch.zeros(2, 3, 3), offset=4).sum().backward()
    used = torch.zeros(9, dtype=torch.bool)
    used[4:7] = True
    assert torch.all(encoding.table.grad[used] == 2.0)  # two sequences each add 1 per entry
    assert torch.all(encoding.table.grad[~used] == 0)


# ---------------------------------------------------------------- add & norm, FFN


def test_add_norm_matches_hand_computed_layer_norm():
    block = AddNorm(d_model=5, dropout=0.0, eps=1e-5).double()
    randomise(block, seed=0)
    x, y = randn(2, 3, 5, seed=1), randn(2, 3, 5, seed=2)
    s = x + y
    mean = s.sum(-1, keepdim=True) / 5
    var = ((s - mean) ** 2).sum(-1, keepdim=True) / 5  # biased variance, as layer norm uses
    expected = (s - mean) / torch.sqrt(var + 1e-5) * block.norm.weight + block.norm.bias
    torch.testing.assert_close(block(x, y), expected, atol=VALUE_TOL, rtol=0)
    with pytest.raises(ShapeError):
        block(x, y[:, :2])


def test_ffn_matches_matrix_formula_and_acts_per_position():
    ffn = PositionWiseFFN(d_model=4, ffn_hidden=7).double()
    x = randn(3, 5, 4, seed=0)
    w1, b1, w2, b2 = ffn.dense1.weight, ffn.dense1.bias, ffn.dense2.weight, ffn.dense2.bias
    expected = torch.clamp(x @ w1.T + b1, min=0) @ w2.T + b2
    torch.testing.assert_close(ffn(x), expected, atol=VALUE_TOL, rtol=0)
    perm = torch.randperm(5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ffn(x[:, perm]), ffn(x)[:, perm], atol=VALUE_TOL, rtol=0)


# ---------------------------------------------------------------- encoder and decoder blocks


def grad_pairs(ours: nn.Module, theirs: nn.Module, attention_names: dict[str, str]) -> list[tuple]:
    """(our grad, torch grad) for every parameter; torch's packed q/k/v projection is split in three."""
    pairs = []
    for our_name, their_name in attention_names.items():
        mine, other = getattr(ours, our_name), getattr(theirs, their_name)
        d = mine.d_model
        for i, linear in enumerate([mine.W_q, mine.W_k, mine.W_v]):
            pairs.append((linear.weight.grad, other.in_proj_weight.grad[i * d : (i + 1) * d]))
            pairs.append((linear.bias.grad, other.in_proj_bias.grad[i * d : (i + 1) * d]))
        pairs += [(mine.W_o.weight.grad, other.out_proj.weight.grad), (mine.W_o.bias.grad, other.out_proj.bias.grad)]
    for mine, other in [(ours.ffn.dense1, theirs.linear1), (ours.ffn.dense2, theirs.linear2)]:
        pairs += [(mine.weight.grad, other.weight.grad), (mine.bias.grad, other.bias.grad)]
    for i in range(1, 4):
        if hasattr(theirs, f"norm{i}"):
            mine, other = getattr(ours, f"addnorm{i}").norm, getattr(theirs, f"norm{i}")
            pairs += [(mine.weight.grad, other.weight.grad), (mine.bias.grad, other.bias.grad)]
    return pairs


def source_padding(batch: int, src: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random valid lengths in 1..src and the matching torch padding mask (True = pad)."""
    lens = torch.randint(1, src + 1, (batch,), generator=torch.Generator().manual_seed(seed))
    return lens, torch.arange(src)[None, :] >= lens[:, None]


def assert_close_all(pairs: list[tuple]) -> None:
    assert pairs
    for a, b in pairs:
        torch.testing.assert_close(a, b, atol=GRAD_TOL, rtol=0)


block_sizes = dict(
    batch=st.integers(1, 3),
    heads=st.sampled_from([1, 2]),
    head_width=st.integers(1, 3),
    ffn_hidden=st.integers(1, 8),
    seed=st.integers(0, 10_000),
)


@FAST
@given(src=st.integers(1, 5), mask_kind=st.sampled_from(["none", "padding", "valid_lens"]), **block_sizes)
def test_encoder_block_matches_torch(batch, heads, head_width, ffn_hidden, seed, src, mask_kind):
    d = heads * head_width
    theirs = nn.TransformerEncoderLayer(d, heads, ffn_hidden, dropout=0.0, batch_first=True, dtype=F64)
    randomise(theirs, seed)
    ours = EncoderBlock(d, heads, ffn_hidden, dropout=0.0).double()
    ours.load_from_torch(theirs)
    x = randn(batch, src, d, seed=seed, requires_grad=True)
    lens, padding = source_padding(batch, src, seed)
    our_kwargs = {"none": {}, "padding": {"key_padding_mask": padding}, "valid_lens": {"valid_lens": lens}}[mask_kind]
    their_kwargs = {} if mask_kind == "none" else {"src_key_padding_mask": padding}
    upstream = randn(batch, src, d, seed=seed + 1)
    out, ref = ours(x, **our_kwargs), theirs(x, **their_kwargs)
    torch.testing.assert_close(out, ref, atol=VALUE_TOL, rtol=0)
    (g_ours,) = torch.autograd.grad((out * upstream).sum(), [x], retain_graph=True)
    (g_ref,) = torch.autograd.grad((ref * upstream).sum(), [x], retain_graph=True)
    torch.testing.assert_close(g_ours, g_ref, atol=GRAD_TOL, rtol=0)
    (out * upstream).sum().backward()
    (ref * upstream).sum().backward()
    assert_close_all(grad_pairs(ours, theirs, {"self_attention": "self_attn"}))


def paired_decoder(d: int, heads: int, ffn_hidden: int, seed: int) -> tuple[DecoderBlock, nn.TransformerDecoderLayer]:
    theirs = nn.TransformerDecoderLayer(d, heads, ffn_hidden, dropout=0.0, batch_first=True, dtype=F64)
    randomise(theirs, seed)
    ours = DecoderBlock(d, heads, ffn_hidden, dropout=0.0).double()
    ours.load_from_torch(theirs)
    return ours, theirs


@FAST
@given(
    tgt=st.integers(1, 5),
    src=st.integers(1, 5),
    memory_mask=st.sampled_from(["none", "padding", "valid_lens"]),
    target_padding=st.booleans(),
    **block_sizes,
)
def test_decoder_block_matches_torch(batch, heads, head_width, ffn_hidden, seed, tgt, src, memory_mask, target_padding):
    d = heads * head_width
    ours, theirs = paired_decoder(d, heads, ffn_hidden, seed)
    x = randn(batch, tgt, d, seed=seed, requires_grad=True)
    memory = randn(batch, src, d, seed=seed + 1, requires_grad=True)
    lens, padding = source_padding(batch, src, seed)
    our_kwargs = {
        "none": {},
        "padding": {"memory_key_padding_mask": padding},
        "valid_lens": {"memory_valid_lens": lens},
    }[memory_mask]
    their_kwargs = {} if memory_mask == "none" else {"memory_key_padding_mask": padding}
    if target_padding:  # padding at the end of a target never hides position 0 from itself
        _, tgt_padding = source_padding(batch, tgt, seed + 5)
        our_kwargs["tgt_key_padding_mask"] = their_kwargs["tgt_key_padding_mask"] = tgt_padding
    causal = nn.Transformer.generate_square_subsequent_mask(tgt, dtype=F64)
    upstream = randn(batch, tgt, d, seed=seed + 2)
    out = ours(x, memory, **our_kwargs)
    ref = theirs(x, memory, tgt_mask=causal, **their_kwargs)
    torch.testing.assert_close(out, ref, atol=VALUE_TOL, rtol=0)
    g_ours = torch.autograd.grad((out * upstream).sum(), [x, memory], retain_graph=True)
    g_ref = torch.autograd.grad((ref * upstream).sum(), [x, memory], retain_graph=True)
    assert_close_all(list(zip(g_ours, g_ref)))
    (out * upstream).sum().backward()
    (ref * upstream).sum().backward()
    assert_close_all(grad_pairs(ours, theirs, {"self_attention": "self_attn", "cross_attention": "multihead_attn"}))


@FAST
@given(
    tgt=st.integers(1, 6),
    src=st.integers(1, 5),
    prefill=st.integers(1, 3),
    use_valid_lens=st.booleans(),
    **block_sizes,
)
def test_decoder_incremental_equals_full_recomputation(
    batch, heads, head_width, ffn_hidden, seed, tgt, src, prefill, use_valid_lens
):
    d = heads * head_width
    torch.manual_seed(seed)
    block = DecoderBlock(d, heads, ffn_hidden).double()
    randomise(block, seed)
    x, memory = randn(batch, tgt, d, seed=seed), randn(batch, src, d, seed=seed + 1)
    lens, padding = source_padding(batch, src, seed)
    kwargs = {"memory_valid_lens": lens} if use_valid_lens else {"memory_key_padding_mask": padding}
    full = block(x, memory, **kwargs)
    cache: dict = {}
    starts = [0, *range(min(prefill, tgt), tgt)]  # a prefill chunk, then one position per call
    pieces = []
    for start, stop in zip(starts, [*starts[1:], tgt]):
        assert DecoderBlock.cached_length(cache) == start
        pieces.append(block(x[:, start:stop], memory, cache=cache, **kwargs))
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=VALUE_TOL, rtol=0)


def test_decoder_is_causal():
    torch.manual_seed(0)
    block = DecoderBlock(4, 2, 8).double()
    randomise(block, 1)
    x, memory = randn(2, 5, 4, seed=2), randn(2, 3, 4, seed=3)
    changed = x.clone()
    changed[:, 3:] = randn(2, 2, 4, seed=4)
    out, out_changed = block(x, memory), block(changed, memory)
    torch.testing.assert_close(out[:, :3], out_changed[:, :3], atol=0, rtol=0)
    assert not torch.allclose(out[:, 3:], out_changed[:, 3:])
    assert not torch.allclose(block(x, memory, causal=False)[:, :3], out[:, :3])  # the mask is what hides them


def test_causal_mask_with_offset():
    expected = torch.tensor([[False, False, False, True], [False, False, False, False]])
    assert torch.equal(causal_mask(2, offset=2), expected)


def test_load_from_torch_refuses_different_layers():
    block = EncoderBlock(4, 2, 8)
    for layer in (
        nn.TransformerEncoderLayer(4, 2, 8, norm_first=True, batch_first=True),
        nn.TransformerEncoderLayer(4, 2, 8, activation="gelu", batch_first=True),
        nn.TransformerEncoderLayer(4, 2, 8, layer_norm_eps=1e-6, batch_first=True),
        nn.TransformerEncoderLayer(4, 2, 16, batch_first=True),
        nn.TransformerEncoderLayer(4, 1, 8, batch_first=True),
    ):
        with pytest.raises(ShapeError):
            block.load_from_torch(layer)


def test_blocks_check_input_shapes():
    with pytest.raises(ShapeError, match=r"\(B, S, D=4\)"):
        EncoderBlock(4, 2, 8)(torch.zeros(2, 3, 5))
    with pytest.raises(ShapeError, match="memory"):
        DecoderBlock(4, 2, 8)(torch.zeros(2, 3, 4), torch.zeros(2, 3))
