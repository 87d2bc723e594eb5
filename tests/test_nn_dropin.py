"""Every scratch layer that mirrors a ``torch.nn`` class is a drop-in for it.

Two checks per class:

* Signature: the parameters of ``inspect.signature`` of torch's ``__init__`` (for ``nn.RNN``,
  ``nn.GRU`` and ``nn.LSTM``, whose ``__init__`` is ``(*args, **kwargs)``, the typed overload torch
  declares) are a prefix of ours, with the same names, kinds, order and defaults, ``device`` and
  ``dtype`` included wherever torch has them (so factory calls run unchanged). Anything we add comes
  after them and is keyword-only. ``forward`` is held to the same rule.
* Behaviour: code written for the torch class, as a function of the module namespace (``torch.nn``
  or ``divekit.nn``), with positional arguments in torch's order or keywords, is run with each. Both
  modules are built from the same seed and must start with equal tensors under equal names; the
  torch module's tensors are then copied into ours by name (a shape assert per tensor), and in
  float64 the outputs and the gradients of a fixed random functional of all outputs with respect to
  every floating input and every parameter must agree to ``atol = rtol = 1e-10``. RNN inputs are
  time-major ``(T, B, I)`` unless the snippet passes ``batch_first=True``, as torch's are.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import pytest
import torch
from torch import Tensor, nn

import divekit.nn as dk

TOL = {"atol": 1e-10, "rtol": 1e-10}

PAIRS: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    name: (getattr(dk, name), getattr(nn, name))
    for name in ("RNN", "GRU", "LSTM", "RNNCell", "GRUCell", "LSTMCell", "Conv2d", "MaxPool2d", "AvgPool2d",
                 "BatchNorm1d", "BatchNorm2d", "MultiheadAttention", "Dropout")
}


def torch_signature(function: Callable) -> inspect.Signature:
    """The declared signature; for a ``(*args, **kwargs)`` function, its first typed overload."""
    signature = inspect.signature(function)
    kinds = {p.kind for p in signature.parameters.values()}
    if kinds >= {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD}:
        overloads = typing.get_overloads(function)
        assert overloads, f"{function.__qualname__} takes *args, **kwargs and declares no overload"
        signature = inspect.signature(overloads[0])
    return signature


def assert_prefix_signature(ours: Callable, theirs: Callable) -> None:
    """torch's parameters (names, kinds, defaults, in order) start ours; our extras are keyword-only."""
    mine = list(inspect.signature(ours).parameters.values())
    reference = list(torch_signature(theirs).parameters.values())
    described = [(p.name, p.kind, p.default) for p in reference]
    assert [(p.name, p.kind, p.default) for p in mine[: len(reference)]] == described
    extras = mine[len(reference):]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in extras), [str(p) for p in extras]


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_constructor_and_forward_signatures_match_torch(name: str) -> None:
    ours, theirs = PAIRS[name]
    assert_prefix_signature(ours.__init__, theirs.__init__)
    assert_prefix_signature(ours.forward, theirs.forward)


def test_every_exported_layer_is_checked_here() -> None:
    assert set(dk.__all__) == set(PAIRS)


def test_signature_check_fails_on_the_old_recurrent_order() -> None:
    """The check itself can fail: the earlier order (bidirectional 4th, batch-first default) is caught."""

    def old(self, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False,
            batch_first: bool = True, dropout: float = 0.0, *, fast: bool = True) -> None: ...

    with pytest.raises(AssertionError):
        assert_prefix_signature(old, nn.GRU.__init__)


@dataclass(frozen=True)
class Case:
    """Code written for a torch class: ``build(namespace)`` and the float64 inputs it is called with."""

    id: str
    build: Callable[[ModuleType], nn.Module]
    inputs: Callable[[torch.Generator], tuple]
    train: bool = True


def randn(g: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def padding_mask(g: torch.Generator, batch: int, keys: int) -> Tensor:
    """Bool ``(B, S)``, True = padding, never the first key (so no query loses every key)."""
    mask = torch.rand(batch, keys, generator=g) < 0.4
    mask[:, 0] = False
    return mask


CASES = [
    # Recurrent layers: time-major (T, B, I) input unless batch_first=True is passed.
    Case("rnn-positional-relu", lambda m: m.RNN(3, 4, 2, "relu", True, False, 0.0, True),
         lambda g: (randn(g, 5, 2, 3),)),
    Case("rnn-default-tanh-state", lambda m: m.RNN(3, 4), lambda g: (randn(g, 5, 2, 3), randn(g, 1, 2, 4))),
    Case("gru-positional", lambda m: m.GRU(3, 4, 2, True, False, 0.0, True), lambda g: (randn(g, 6, 2, 3),)),
    Case("gru-no-bias", lambda m: m.GRU(3, 4, 1, False), lambda g: (randn(g, 6, 2, 3),)),
    Case("gru-keywords-batch-first", lambda m: m.GRU(input_size=3, hidden_size=4, num_layers=2, batch_first=True),
         lambda g: (randn(g, 2, 6, 3), randn(g, 2, 2, 4))),
    Case("gru-unbatched", lambda m: m.GRU(3, 4, bidirectional=True), lambda g: (randn(g, 5, 3),)),
    Case("lstm-positional", lambda m: m.LSTM(3, 4, 2, True, False, 0.0, True),
         lambda g: (randn(g, 5, 2, 3), (randn(g, 4, 2, 4), randn(g, 4, 2, 4)))),
    Case("lstm-projections", lambda m: m.LSTM(3, 5, 2, proj_size=2, bidirectional=True),
         lambda g: (randn(g, 4, 2, 3), (randn(g, 4, 2, 2), randn(g, 4, 2, 5)))),
    Case("lstm-dropout-eval", lambda m: m.LSTM(3, 4, 3, True, False, 0.5), lambda g: (randn(g, 4, 2, 3),),
         train=False),
    Case("rnncell-relu", lambda m: m.RNNCell(3, 4, True, "relu"), lambda g: (randn(g, 2, 3), randn(g, 2, 4))),
    Case("grucell-no-bias", lambda m: m.GRUCell(3, 4, False), lambda g: (randn(g, 2, 3),)),
    Case("lstmcell", lambda m: m.LSTMCell(3, 4), lambda g: (randn(g, 2, 3), (randn(g, 2, 4), randn(g, 2, 4)))),
    # Convolution and pooling: (B, C, H, W), or unbatched (C, H, W).
    Case("conv-positional-reflect", lambda m: m.Conv2d(4, 6, 3, 2, 1, 1, 2, True, "reflect"),
         lambda g: (randn(g, 2, 4, 7, 6),)),
    Case("conv-same-even-kernel", lambda m: m.Conv2d(2, 3, (2, 4), padding="same", dilation=(1, 2), bias=False),
         lambda g: (randn(g, 2, 2, 5, 9),)),
    Case("conv-unbatched-circular", lambda m: m.Conv2d(2, 3, 3, padding=(1, 2), padding_mode="circular"),
         lambda g: (randn(g, 2, 5, 5),)),
    Case("maxpool-positional-indices", lambda m: m.MaxPool2d(3, 2, 1, 1, True, True), lambda g: (randn(g, 2, 3, 8, 7),)),
    Case("maxpool-dilation-ceil", lambda m: m.MaxPool2d((2, 3), stride=(2, 1), dilation=2, ceil_mode=True),
         lambda g: (randn(g, 3, 9, 8),)),
    Case("avgpool-positional", lambda m: m.AvgPool2d(3, 2, 1, True, False), lambda g: (randn(g, 2, 3, 8, 7),)),
    Case("avgpool-divisor", lambda m: m.AvgPool2d((2, 3), (1, 2), (1, 1), divisor_override=5),
         lambda g: (randn(g, 2, 3, 6, 7),)),
    Case("avgpool-ceil-counts-pad", lambda m: m.AvgPool2d(3, 2, 1, ceil_mode=True), lambda g: (randn(g, 1, 2, 6, 6),)),
    # Batch norm: one training step (batch statistics, running averages updated) and evaluation.
    Case("batchnorm1d-positional", lambda m: m.BatchNorm1d(3, 1e-3, 0.3, True, True), lambda g: (randn(g, 5, 3),)),
    Case("batchnorm1d-sequence", lambda m: m.BatchNorm1d(3), lambda g: (randn(g, 4, 3, 6),)),
    Case("batchnorm1d-no-bias", lambda m: m.BatchNorm1d(3, bias=False), lambda g: (randn(g, 4, 3),)),
    Case("batchnorm2d-untracked", lambda m: m.BatchNorm2d(3, 1e-5, 0.1, False, False),
         lambda g: (randn(g, 2, 3, 4, 4),), train=False),
    Case("batchnorm2d-eval", lambda m: m.BatchNorm2d(3, momentum=None), lambda g: (randn(g, 2, 3, 4, 4),), train=False),
    # Attention: time-major (T, B, D) unless batch_first=True; masks as torch takes them.
    Case("mha-positional-time-major", lambda m: m.MultiheadAttention(8, 2, 0.0, True, True, True, 6, 5),
         lambda g: (randn(g, 4, 3, 8), randn(g, 5, 3, 6), randn(g, 5, 3, 5), padding_mask(g, 3, 5))),
    Case("mha-self-attention-causal",
         lambda m: _SelfAttention(m.MultiheadAttention(embed_dim=8, num_heads=4)),
         lambda g: (randn(g, 5, 2, 8),)),
    Case("mha-batch-first-float-mask",
         lambda m: _KeywordCall(m.MultiheadAttention(6, 3, bias=False, batch_first=True)),
         lambda g: (randn(g, 2, 4, 6), randn(g, 2, 5, 6), randn(g, 2, 4, 5))),
    Case("mha-unbatched", lambda m: m.MultiheadAttention(4, 2), lambda g: (randn(g, 3, 4), randn(g, 5, 4), randn(g, 5, 4))),
    Case("dropout-eval", lambda m: m.Dropout(0.4), lambda g: (randn(g, 3, 4),), train=False),
    Case("dropout-zero-rate", lambda m: m.Dropout(0.0), lambda g: (randn(g, 3, 4),)),
]


class _SelfAttention(nn.Module):
    """``attn(x, x, x)`` with a bool causal mask and per-head weights, as a decoder would call it."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        steps = x.shape[0]
        causal = torch.triu(torch.ones(steps, steps, dtype=torch.bool), diagonal=1)
        return self.attention(x, x, x, attn_mask=causal, average_attn_weights=False, is_causal=True)


class _KeywordCall(nn.Module):
    """Every argument by keyword, a float ``(T, S)`` mask added to the scores."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, query: Tensor, key: Tensor, float_mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.attention(query=query, key=key, value=key, attn_mask=float_mask[0], need_weights=True)


def leaves(value: object) -> list[Tensor]:
    """The tensors in a nested tuple of outputs (a None weight, as torch returns it, is skipped)."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in leaves(item)]
    return []


def transplant(source: nn.Module, target: nn.Module) -> None:
    """Copy every tensor of ``source``'s state dict into ``target``'s by name, refusing shape changes."""
    theirs, ours = source.state_dict(), target.state_dict()
    assert list(ours) == list(theirs)
    for name, tensor in theirs.items():
        assert ours[name].shape == tensor.shape, f"{name}: {tuple(ours[name].shape)} vs {tuple(tensor.shape)}"
    target.load_state_dict(theirs)


def outputs_and_gradients(module: nn.Module, inputs: tuple) -> tuple[list[Tensor], list[Tensor], dict[str, Tensor]]:
    """Outputs, and the gradients of ``sum_k <probe_k, output_k>`` w.r.t. floating inputs and parameters."""
    floats = [t for t in leaves(inputs) if t.is_floating_point()]
    for t in floats:
        t.requires_grad_(True)
    outputs = leaves(module(*inputs))
    g = torch.Generator().manual_seed(99)
    differentiable = [o for o in outputs if o.is_floating_point() and o.requires_grad]
    functional = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in differentiable)
    params = dict(module.named_parameters())
    grads = torch.autograd.grad(functional, floats + list(params.values()), allow_unused=True) if differentiable else []
    input_grads = list(grads[: len(floats)])
    param_grads = dict(zip(params, grads[len(floats):], strict=True)) if grads else {}
    return [o.detach() for o in outputs], input_grads, param_grads


TORCH_HAS_BATCHNORM_BIAS = "bias" in inspect.signature(nn.BatchNorm1d.__init__).parameters


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_torch_code_runs_unchanged_on_the_scratch_class(case: Case) -> None:
    if case.id == "batchnorm1d-no-bias" and not TORCH_HAS_BATCHNORM_BIAS:
        pytest.skip("this torch's BatchNorm1d has no bias argument")
    torch.manual_seed(0)
    theirs = case.build(nn).double().train(case.train)
    torch.manual_seed(0)
    ours = case.build(dk).double().train(case.train)
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=f"{name} differs from the same seed")
    transplant(theirs, ours)
    results = []
    for module in (ours, theirs):
        inputs = case.inputs(torch.Generator().manual_seed(1))  # fresh leaves for each module
        results.append(outputs_and_gradients(module, inputs))
    (out_a, dx_a, dp_a), (out_b, dx_b, dp_b) = results
    assert len(out_a) == len(out_b) and [o.shape for o in out_a] == [o.shape for o in out_b]
    for a, b in zip(out_a, out_b, strict=True):
        torch.testing.assert_close(a, b, **TOL)
    for a, b in zip(dx_a, dx_b, strict=True):
        torch.testing.assert_close(a, b, **TOL)
    assert list(dp_a) == list(dp_b)
    for name in dp_a:
        torch.testing.assert_close(dp_a[name], dp_b[name], **TOL, msg=f"gradient of {name}")
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, **TOL, msg=f"{name} after the step")  # e.g. running statistics


def test_time_major_input_is_read_time_major() -> None:
    """A ``(T, B, I)`` tensor written for ``nn.GRU`` must not be read as ``(B, T, I)``: both axes differ."""
    torch.manual_seed(0)
    theirs = nn.GRU(3, 4).double()
    ours = dk.GRU(3, 4).double()
    transplant(theirs, ours)
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    (out_a, h_a), (out_b, h_b) = ours(x), theirs(x)
    assert out_a.shape == (7, 2, 4) and h_a.shape == (1, 2, 4)
    torch.testing.assert_close(out_a, out_b, **TOL)
    torch.testing.assert_close(h_a, h_b, **TOL)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
def test_fast_switch_is_keyword_only_and_both_engines_agree(fast: bool) -> None:
    with pytest.raises(TypeError):
        dk.LSTM(3, 4, 1, True, False, 0.0, False, 0, None, None, fast)  # type: ignore[misc]
    torch.manual_seed(0)
    theirs = nn.LSTM(3, 4, 2, bias=False).double()
    ours = dk.LSTM(3, 4, 2, bias=False, fast=fast).double()
    transplant(theirs, ours)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], **TOL)


def test_factory_kwargs_reach_the_parameters() -> None:
    for build in (lambda m: m.GRU(3, 4, dtype=torch.float64), lambda m: m.Conv2d(2, 3, 3, dtype=torch.float64),
                  lambda m: m.BatchNorm2d(3, dtype=torch.float64), lambda m: m.LSTMCell(2, 3, dtype=torch.float64),
                  lambda m: m.MultiheadAttention(4, 2, kdim=3, dtype=torch.float64)):
        ours, theirs = build(dk), build(nn)
        assert {n: t.dtype for n, t in ours.state_dict().items()} == {n: t.dtype for n, t in theirs.state_dict().items()}


def test_dropout_contract_in_training() -> None:
    """Masks differ from torch's (torch draws them with its own Bernoulli kernel), so the contract is
    checked instead: each element is zero or ``x / (1 - p)``; ``inplace`` returns the input tensor."""
    x = torch.rand(200, 50, dtype=torch.float64) + 1
    for module in (dk.Dropout(0.3), nn.Dropout(0.3)):
        y = module(x)
        kept = y != 0
        torch.testing.assert_close(y[kept], x[kept] / 0.7, **TOL)
        assert 0.25 < 1 - kept.double().mean().item() < 0.35
    for cls in (dk.Dropout, nn.Dropout):
        with pytest.raises(ValueError):
            cls(1.5)
    for module in (dk.Dropout(0.3, True), nn.Dropout(0.3, True)):
        z = x.clone()
        assert module(z).data_ptr() == z.data_ptr()
        assert ((z == 0) | torch.isclose(z, x / 0.7)).all()


def test_batchnorm_running_statistics_over_several_steps() -> None:
    torch.manual_seed(0)
    theirs, ours = nn.BatchNorm2d(3, 1e-5, None).double(), dk.BatchNorm2d(3, 1e-5, None).double()
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        x = 2 * torch.randn(4, 3, 2, 5, generator=g, dtype=torch.float64) + 1
        torch.testing.assert_close(ours(x), theirs(x), **TOL)
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, **TOL, msg=name)


def test_deliberate_differences_are_as_documented() -> None:
    """Packed sequences are refused with a clear error; a query with every key blocked gets zero
    weights and a finite output where torch gives NaN."""
    packed = nn.utils.rnn.pack_padded_sequence(torch.randn(4, 2, 3), torch.tensor([4, 2]))
    with pytest.raises(TypeError, match="PackedSequence"):
        dk.GRU(3, 4)(packed)
    torch.manual_seed(0)
    theirs = nn.MultiheadAttention(4, 2).double()
    ours = dk.MultiheadAttention(4, 2).double()
    transplant(theirs, ours)
    x = torch.randn(3, 1, 4, dtype=torch.float64)
    blocked = torch.tensor([[True, True, True]])  # (B, S): the only sequence is all padding
    out_a, w_a = ours(x, x, x, key_padding_mask=blocked)
    out_b, _ = theirs(x, x, x, key_padding_mask=blocked)
    assert torch.isnan(out_b).all() and torch.isfinite(out_a).all()
    assert torch.equal(w_a, torch.zeros_like(w_a))
