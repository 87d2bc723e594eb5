"""Recurrent cells and layers from scratch against PyTorch.

References: ``nn.RNNCell`` / ``nn.GRUCell`` / ``nn.LSTMCell`` and ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM`` with
the same weights (loaded through ``state_dict``), and ``torch.autograd.gradcheck`` (finite differences)
for the hand-written backward passes. Both engines of each layer (cell-by-cell reference and fast
kernel) are compared with the PyTorch module: outputs, final states, and the gradients of a random
linear functional of all of them with respect to the input, the initial states and every parameter.
Tolerances (absolute and relative): 1e-9 in float64, 1e-5 in float32.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import divekit.nn.rnn_kernels as rnn_kernels
from divekit.errors import ShapeError, UnknownNameError
from divekit.nn.rnn import GRU, LSTM, RNN, make_rnn
from divekit.nn.rnn_cells import GRUCell, LSTMCell, RNNCell
from divekit.nn.rnn_kernels import GRUSequence, LSTMSequence, TanhRNNSequence

TOL = {torch.float64: 1e-9, torch.float32: 1e-5}
FAST = settings(max_examples=25, deadline=None)
OURS = {"rnn": RNN, "gru": GRU, "lstm": LSTM}
THEIRS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
CELLS = {"rnn": (RNNCell, nn.RNNCell), "gru": (GRUCell, nn.GRUCell), "lstm": (LSTMCell, nn.LSTMCell)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: thread hand-offs would cost more than the arithmetic on a shared CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def randn(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def flat(state: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def pair(kind: str, dtype: torch.dtype, fast: bool, seed: int, **kw) -> tuple[nn.Module, nn.Module]:
    """A PyTorch layer with seeded weights and our layer holding a copy of them."""
    torch.manual_seed(seed)
    theirs = THEIRS[kind](**kw).to(dtype)
    ours = OURS[kind](**kw, fast=fast).to(dtype)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def outputs_and_grads(module: nn.Module, x: Tensor, hx, probes: list[Tensor]) -> list[Tensor]:
    """Output, final states, and d(sum_k <probe_k, result_k>)/d(input, given states, parameters)."""
    output, state = module(x, hx)
    results = [output, *flat(state)]
    functional = sum((r * p).sum() for r, p in zip(results, probes))
    leaves = [t for t in (x, *flat(hx if hx is not None else ())) if t.requires_grad]
    grads = torch.autograd.grad(functional, leaves + list(module.parameters()))
    return [r.detach() for r in results] + list(grads)


def assert_all_close(ours: list[Tensor], theirs: list[Tensor], dtype: torch.dtype) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=TOL[dtype], rtol=TOL[dtype])


layer_cases = st.fixed_dictionaries(
    {
        "batch": st.integers(1, 4),
        "steps": st.integers(1, 6),
        "input_size": st.integers(1, 5),
        "hidden_size": st.integers(1, 6),
        "num_layers": st.integers(1, 3),
        "bidirectional": st.booleans(),
        "batch_first": st.booleans(),
        "give_state": st.booleans(),
        "input_grad": st.booleans(),
        "seed": st.integers(0, 2**16),
    }
)


def check_layer(kind: str, fast: bool, dtype: torch.dtype, case: dict) -> None:
    b, t, seed = case["batch"], case["steps"], case["seed"]
    kw = {k: case[k] for k in ("input_size", "hidden_size", "num_layers", "bidirectional", "batch_first")}
    ours, theirs = pair(kind, dtype, fast, seed, **kw)
    shape = (b, t, kw["input_size"]) if kw["batch_first"] else (t, b, kw["input_size"])
    x = randn(*shape, seed=seed + 1, dtype=dtype).requires_grad_(case["input_grad"])
    state_shape = (kw["num_layers"] * (2 if kw["bidirectional"] else 1), b, kw["hidden_size"])
    hx = None
    if case["give_state"]:
        parts = [randn(*state_shape, seed=seed + 2 + k, dtype=dtype).requires_grad_() for k in range(2)]
        hx = tuple(parts) if kind == "lstm" else parts[0]
    out_shape = (*shape[:2], state_shape[0] // kw["num_layers"] * kw["hidden_size"])
    probes = [randn(*out_shape, seed=seed + 5, dtype=dtype)]
    probes += [randn(*state_shape, seed=seed + 6 + k, dtype=dtype) for k in range(2 if kind == "lstm" else 1)]
    assert_all_close(outputs_and_grads(ours, x, hx, probes), outputs_and_grads(theirs, x, hx, probes), dtype)


@pytest.mark.parametrize("fast", [False, True], ids=["reference", "fast"])
@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@FAST
@given(case=layer_cases)
def test_layer_matches_torch_float64(kind: str, fast: bool, case: dict) -> None:
    check_layer(kind, fast, torch.float64, case)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@settings(max_examples=15, deadline=None)
@given(case=layer_cases)
def test_fast_layer_matches_torch_float32(kind: str, case: dict) -> None:
    """Float32 on the CPU takes the oneDNN products inside the fast kernels."""
    check_layer(kind, True, torch.float32, case)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_fast_layer_without_onednn_matches_torch_float32(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the build lacks oneDNN the kernels fall back to torch's products, with equal results."""
    monkeypatch.setattr(rnn_kernels, "_ONEDNN", None)
    case = {"batch": 3, "steps": 5, "input_size": 4, "hidden_size": 6, "num_layers": 2, "bidirectional": True,
            "batch_first": True, "give_state": True, "input_grad": True, "seed": 7}
    check_layer(kind, True, torch.float32, case)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("reverse", [False, True])
def test_sequence_kernels_pass_gradcheck(kind: str, reverse: bool) -> None:
    """The hand-written backward passes against finite differences, every input at once."""
    t, b, i, h = 4, 2, 3, 3
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[kind]
    x, h0, c0 = randn(t, b, i, seed=1), randn(b, h, seed=2), randn(b, h, seed=3)
    w_ih, w_hh = randn(gates * h, i, seed=4) * 0.5, randn(gates * h, h, seed=5) * 0.5
    b_ih, b_hh = randn(gates * h, seed=6), randn(gates * h, seed=7)
    if kind == "rnn":
        fn, args = TanhRNNSequence.apply, (x, h0, w_ih, w_hh, b_ih)
    elif kind == "gru":
        fn, args = GRUSequence.apply, (x, h0, w_ih, w_hh, b_ih, b_hh)
    else:
        fn, args = LSTMSequence.apply, (x, h0, c0, w_ih, w_hh, b_ih)
    args = tuple(a.requires_grad_() for a in args)
    assert torch.autograd.gradcheck(lambda *a: fn(*a, reverse), args)


cell_cases = st.fixed_dictionaries(
    {
        "batch": st.integers(1, 5),
        "input_size": st.integers(1, 6),
        "hidden_size": st.integers(1, 7),
        "give_state": st.booleans(),
        "unbatched": st.booleans(),
        "seed": st.integers(0, 2**16),
    }
)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@FAST
@given(case=cell_cases)
def test_cell_matches_torch(kind: str, case: dict) -> None:
    seed, hidden = case["seed"], case["hidden_size"]
    torch.manual_seed(seed)
    theirs = CELLS[kind][1](case["input_size"], hidden).double()
    ours = CELLS[kind][0](case["input_size"], hidden).double()
    ours.load_state_dict(theirs.state_dict())
    lead = () if case["unbatched"] else (case["batch"],)
    x = randn(*lead, case["input_size"], seed=seed + 1).requires_grad_()
    hx = None
    if case["give_state"]:
        parts = [randn(*lead, hidden, seed=seed + 2 + k).requires_grad_() for k in range(2)]
        hx = tuple(parts) if kind == "lstm" else parts[0]
    probes = [randn(*lead, hidden, seed=seed + 5 + k) for k in range(2)]
    results = []
    for module in (ours, theirs):
        out = flat(module(x, hx))
        functional = sum((o * p).sum() for o, p in zip(out, probes))
        leaves = [x, *flat(hx if hx is not None else ())] + list(module.parameters())
        results.append([o.detach() for o in out] + list(torch.autograd.grad(functional, leaves)))
    assert_all_close(results[0], results[1], torch.float64)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_state_dict_interchange_both_ways(kind: str) -> None:
    kw = {"input_size": 3, "hidden_size": 4, "num_layers": 2, "bidirectional": True}
    torch.manual_seed(0)
    theirs, ours = THEIRS[kind](**kw, batch_first=True), OURS[kind](**kw, batch_first=True)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert a.shape == b.shape, name
    x = randn(2, 5, 3, seed=1, dtype=torch.float32)
    ours.load_state_dict(theirs.state_dict())  # torch -> ours
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], atol=1e-5, rtol=1e-5)
    ours.reset_parameters()
    theirs.load_state_dict(ours.state_dict())  # ours -> torch
    torch.testing.assert_close(theirs(x)[0], ours(x)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("fast", [False, True], ids=["reference", "fast"])
def test_unbatched_input_matches_torch(kind: str, fast: bool) -> None:
    ours, theirs = pair(kind, torch.float64, fast, 3, input_size=3, hidden_size=4, num_layers=2,
                        bidirectional=True)
    x = randn(5, 3, seed=4)
    h0 = randn(4, 4, seed=5)
    hx = (h0, randn(4, 4, seed=6)) if kind == "lstm" else h0
    (out_a, state_a), (out_b, state_b) = ours(x, hx), theirs(x, hx)
    assert out_a.shape == (5, 8)
    assert_all_close([out_a, *flat(state_a)], [out_b, *flat(state_b)], torch.float64)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("fast", [False, True], ids=["reference", "fast"])
def test_dropout_between_layers_as_torch(kind: str, fast: bool) -> None:
    """p = 1 zeroes every deeper layer's input, so training output is deterministic and comparable."""
    x = randn(2, 4, 3, seed=1)
    for p, training in ((1.0, True), (0.5, False)):
        ours, theirs = pair(kind, torch.float64, fast, 2, input_size=3, hidden_size=4, num_layers=3,
                            batch_first=True, dropout=p)
        ours.train(training)
        theirs.train(training)
        (out_a, state_a), (out_b, state_b) = ours(x), theirs(x)
        assert_all_close([out_a, *flat(state_a)], [out_b, *flat(state_b)], torch.float64)
    ours.train()
    assert not torch.allclose(ours(x)[0], theirs.eval()(x)[0])  # p = 0.5 in training changes the output


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_make_rnn_gives_interchangeable_modules(kind: str) -> None:
    class Tagger(nn.Module):
        """One model class, either implementation."""

        def __init__(self, impl: str) -> None:
            super().__init__()
            self.rnn = make_rnn(kind, impl, 3, 5, num_layers=2, bidirectional=True)
            self.head = nn.Linear(10, 2)

        def forward(self, x: Tensor) -> Tensor:
            output, _ = self.rnn(x)
            return self.head(output)

    scratch, reference = Tagger("scratch"), Tagger("torch")
    assert isinstance(scratch.rnn, OURS[kind]) and type(reference.rnn) is THEIRS[kind]
    assert reference.rnn.batch_first
    scratch.load_state_dict(reference.state_dict())
    x = randn(4, 6, 3, seed=0, dtype=torch.float32)
    torch.testing.assert_close(scratch(x), reference(x), atol=1e-5, rtol=1e-5)


def test_make_rnn_rejects_unknown_names() -> None:
    with pytest.raises(UnknownNameError, match="lstm"):
        make_rnn("transformer", "scratch", 3, 4)
    with pytest.raises(UnknownNameError, match="scratch"):
        make_rnn("lstm", "cudnn", 3, 4)


def test_no_grad_inference_matches_training_forward() -> None:
    ours, _ = pair("lstm", torch.float32, True, 0, input_size=3, hidden_size=4, num_layers=2)
    x = randn(2, 5, 3, seed=1, dtype=torch.float32)
    with torch.no_grad():
        inference = ours(x)[0]
    torch.testing.assert_close(inference, ours(x)[0].detach(), atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_layer_shape_errors_name_the_expected_shape(kind: str) -> None:
    layer = OURS[kind](3, 4, num_layers=2, bidirectional=True, batch_first=True)
    with pytest.raises(ShapeError, match=r"\(B, T, I\) with I=3"):
        layer(torch.randn(2, 5, 7))
    with pytest.raises(ShapeError, match=r"\(B, T, I\)"):
        layer(torch.randn(2, 5, 3, 1))
    with pytest.raises(ShapeError, match="T, B > 0"):
        layer(torch.randn(2, 0, 3))
    with pytest.raises(ShapeError, match="dtype"):
        layer(torch.randn(2, 5, 3, dtype=torch.float64))
    bad = torch.randn(2, 2, 4)  # two states, but layers * directions = 4
    with pytest.raises(ShapeError, match=r"h_0 must have shape \(L\*D, B, H\)=\(4, 2, 4\)"):
        layer(torch.randn(2, 5, 3), (bad, bad) if kind == "lstm" else bad)
    time_first = OURS[kind](3, 4)  # torch's default layout
    with pytest.raises(ShapeError, match=r"\(T, B, I\)"):
        time_first(torch.randn(5, 2, 6))


def test_lstm_cell_state_error_names_the_expected_shape() -> None:
    good = torch.zeros(2, 4)
    with pytest.raises(ShapeError, match=r"c must have shape \(B, H\)=\(2, 4\)"):
        LSTMCell(3, 4)(torch.randn(2, 3), (good, torch.zeros(2, 5)))
    with pytest.raises(ShapeError, match=r"input must have shape \(B, I\)=\(\?, 3\)"):
        GRUCell(3, 4)(torch.randn(2, 2))


def test_invalid_configuration_is_rejected() -> None:
    with pytest.raises(ValueError, match="dropout"):
        LSTM(3, 4, num_layers=2, dropout=1.5)
    with pytest.raises(ValueError, match="positive"):
        GRU(3, 0)
