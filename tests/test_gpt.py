"""The GPT language model: block = torch's pre-norm layer, causality, cached = recomputed, sliding window."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from divekit.decode.sampling import generate, next_token
from divekit.errors import DivekitError, ShapeError
from divekit.models.gpt import GPT, POSITIONS, GPTBlock, GPTConfig
from divekit.nn.transformer_blocks import causal_mask
from divekit.registry import get_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only adds hand-offs

TINY = dict(vocab_size=11, max_len=8, d_model=16, num_heads=2, layers=2, ffn_hidden=24, dropout=0.0,
            context_keep=3, num_steps=8)


def tiny_gpt(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**TINY, **overrides})).double().eval()


def test_block_equals_torch_pre_norm_encoder_layer_with_a_causal_mask():
    torch.manual_seed(0)
    torch_layer = nn.TransformerEncoderLayer(16, 4, 24, dropout=0.0, batch_first=True, norm_first=True).double()
    with torch.no_grad():  # non-trivial LayerNorm affine parameters, so a swapped norm would show
        for p in (torch_layer.norm1.weight, torch_layer.norm1.bias, torch_layer.norm2.weight, torch_layer.norm2.bias):
            p.normal_()
    ours = GPTBlock(16, 4, 24).double()
    ours.load_from_torch(torch_layer)
    x = torch.randn(3, 7, 16, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out = ours(x)
    ref = torch_layer(x_ref, src_mask=causal_mask(7), is_causal=False)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours.ffn.dense1.weight.grad, torch_layer.linear1.weight.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours.norm1.weight.grad, torch_layer.norm1.weight.grad, rtol=0, atol=1e-12)
    qkv = torch.cat([ours.attention.W_q.weight.grad, ours.attention.W_k.weight.grad,
                     ours.attention.W_v.weight.grad])
    torch.testing.assert_close(qkv, torch_layer.self_attn.in_proj_weight.grad, rtol=0, atol=1e-12)
    with pytest.raises(ShapeError, match="pre-norm"):
        ours.load_from_torch(nn.TransformerEncoderLayer(16, 4, 24, batch_first=True))


@pytest.mark.parametrize("positions", POSITIONS)
def test_fused_attention_equals_the_scratch_steps_in_logits_and_gradients(positions):
    # With ALiBi the fused kernel takes the biases and the causal mask as one additive mask.
    scratch = tiny_gpt(fused_attention=False, positions=positions)
    fused = tiny_gpt(fused_attention=True, positions=positions)
    fused.load_state_dict(scratch.state_dict())
    x = torch.randint(11, (3, 8))
    a, b = scratch(x[:, :5])[0], fused(x[:, :5])[0]
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    a.square().sum().backward()
    b.square().sum().backward()
    for (name, p), q in zip(scratch.named_parameters(), fused.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-12, msg=name)
    # Over a carried context (C = 5 cached, 3 new) the fused call takes an explicit causal mask.
    _, state = fused(x[:, :5])
    torch.testing.assert_close(fused(x[:, 5:], state)[0], scratch(x)[0][:, 5:], rtol=0, atol=1e-12)


@pytest.mark.parametrize("positions", POSITIONS)
def test_no_position_sees_the_future(positions):
    model = tiny_gpt(positions=positions)
    x = torch.randint(11, (2, 8))
    logits, _ = model(x)
    changed = x.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 11
    torch.testing.assert_close(model(changed)[0][:, :5], logits[:, :5], rtol=0, atol=0)
    assert not torch.allclose(model(changed)[0][:, 5:], logits[:, 5:])

    embedded = []
    hook = model.embed.register_forward_hook(lambda m, i, out: embedded.append(out) or out.retain_grad())
    t = 4
    model(x)[0][:, t].sum().backward()
    hook.remove()
    grad = embedded[0].grad  # (B, T, D)
    assert torch.count_nonzero(grad[:, t + 1:]) == 0  # exactly zero, not merely small
    assert (grad[:, : t + 1].abs().sum(-1) > 0).all()  # every position up to t does matter


def naive_logits(model: GPT, sequence: list[int]) -> torch.Tensor:
    """Each token's logits from a fresh forward pass over its window, no cache: the sliding rule by hand."""
    keep, max_len = model.config.context_keep, model.config.max_len
    window: list[int] = []
    rows = []
    for token in sequence:
        if len(window) == max_len:
            window = window[len(window) - keep:] if keep else []
        window.append(token)
        rows.append(model(torch.tensor([window]))[0][0, -1])
    return torch.stack(rows)  # (N, V)


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("keep", [0, 3, 7])
def test_any_cut_into_calls_equals_recomputing_each_window(keep, positions):
    model = tiny_gpt(context_keep=keep, positions=positions)
    sequence = torch.randint(11, (1, 29))
    expected = naive_logits(model, sequence[0].tolist())
    with torch.no_grad():
        whole, state = model(sequence)
        pieces, carried = [], None
        for start, stop in ((0, 1), (1, 6), (6, 7), (7, 20), (20, 29)):
            logits, carried = model(sequence[:, start:stop], carried)
            pieces.append(logits)
    torch.testing.assert_close(whole[0], expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.cat(pieces, 1)[0], expected, rtol=0, atol=1e-12)
    assert state.tokens.shape[1] <= 8 and torch.equal(state.tokens, carried.tokens)
    assert torch.equal(state.tokens[0], sequence[0, -state.tokens.shape[1]:])
    assert state.keys.shape == (2, 1, 2, state.tokens.shape[1], 8)


@pytest.mark.parametrize("positions", POSITIONS)
def test_cached_generation_equals_generation_by_full_recomputation(positions):
    model = tiny_gpt(positions=positions)
    prefix = [1, 4, 2]
    for temperature in (0.0, 1.0):
        cached = generate(model, prefix, 20, temperature=temperature, generator=torch.Generator().manual_seed(3))
        # The same draws, recomputing every window from scratch and never passing a state.
        g, sequence, recomputed = torch.Generator().manual_seed(3), list(prefix), []
        for _ in range(20):
            last = naive_logits(model, sequence)[-1:]
            token = int(next_token(last, temperature=temperature, generator=g))
            sequence.append(token)
            recomputed.append(token)
        assert cached == recomputed


def test_shapes_and_options_are_checked():
    model = tiny_gpt()
    with pytest.raises(ShapeError, match=r"\(B, T\)"):
        model(torch.zeros(7, dtype=torch.long))
    with pytest.raises(ShapeError, match=r"\(B, T\)"):
        model(torch.zeros(2, 3))
    with pytest.raises(ShapeError, match="V=11"):
        model(torch.full((1, 3), 11))
    _, state = model(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ShapeError, match="B=1"):
        model(torch.zeros(1, 3, dtype=torch.long), state)
    for bad, phrase in ((dict(num_heads=3), "divisible"), (dict(context_keep=8), "context_keep"),
                        (dict(num_steps=9), "exceeds max_len"), (dict(dropout=1.0), "dropout"),
                        (dict(layers=0), "positive"), (dict(positions="rotary"), "alibi, learned")):
        with pytest.raises(DivekitError, match=phrase):
            GPTConfig(**{**TINY, **bad})


def test_registered_model_trains_every_parameter_and_ties_the_output_to_the_embedding():
    spec = get_model("gpt-lm")
    assert spec.task == "timemachine" and spec.recipe["optimizer"] == "adamw"
    torch.manual_seed(0)
    model = spec.build(spec.make_config({"d_model": 16, "num_heads": 2, "layers": 2, "ffn_hidden": 32}))
    x = torch.randint(28, (3, 7))
    logits, _ = model(x)
    assert logits.shape == (3, 7, 28) and torch.isfinite(logits).all()
    F.cross_entropy(logits.reshape(-1, 28), x.reshape(-1)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert not any("head" in name for name, _ in model.named_parameters())  # the output reuses embed.weight


@pytest.mark.parametrize("positions", ["alibi", "learned"])
def test_one_batch_is_memorised(positions):
    # Random targets: only the context tells the positions apart, which ALiBi (distances, no
    # absolute position) learns more slowly than a position table; 300 steps suffice for both.
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY, "max_len": 16, "num_steps": 16, "positions": positions}))
    x, y = torch.randint(11, (4, 16)), torch.randint(11, (4, 16))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        loss = F.cross_entropy(model(x)[0].reshape(-1, 11), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses[::30]


def test_the_language_model_task_drives_gpt_with_a_carried_context():
    from divekit.data.timemachine import build_lm_data
    from divekit.tasks.language_model import LanguageModelTask
    from divekit.train.distributed import DistInfo

    data = build_lm_data("the time traveller for so it will be convenient to speak of him " * 20, "char")
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY, "vocab_size": len(data.vocab), "num_steps": 6, "sequential": True}))
    model.eval()  # no dropout, so the reference below is exact
    task = LanguageModelTask(batch_size=3, num_steps=6, sequential=True, data=data)
    first, second = list(task.train_loader(DistInfo()))[:2]
    task.start_epoch(model, 0)
    task.step(model, first)
    assert not any(t.requires_grad for t in task._state)  # gradients stop at the window boundary
    out = task.step(model, second)
    # Reference: both windows in one call, scored on the second; 12 characters slide the window of 8.
    logits, _ = model(torch.cat([first[0], second[0]], 1))
    ref = F.cross_entropy(logits[:, 6:].reshape(-1, logits.shape[-1]), second[1].reshape(-1))
    torch.testing.assert_close(out.loss, ref)
    out.loss.backward()
    assert model.embed.weight.grad is not None
    metrics = task.evaluate(model, "val")
    assert metrics["perplexity"] > 1 and set(metrics) >= {"loss", "perplexity", "bits_per_char"}


def test_alibi_gpt_has_no_position_parameters_and_biases_recent_keys():
    model = tiny_gpt()  # the registered choice
    assert model.config.positions == "alibi"
    assert not any("positional" in name for name, _ in model.named_parameters())
    assert not any("alibi" in key for key in model.state_dict())  # the slopes are rebuilt, not stored
    bias = model.alibi(3, 5)  # (H, T, S): the 3 queries stand at positions 2, 3, 4
    assert bias.shape == (2, 3, 5)
    assert bias[0, 0].tolist() == [-2 * 2 ** -4, -1 * 2 ** -4, 0, 0, 0]  # H = 2: slopes 2^-4, 2^-8
    assert bias[1, 2, 0].item() == -4 * 2 ** -8
