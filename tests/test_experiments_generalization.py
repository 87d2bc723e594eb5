"""The generalization and stability experiments: their building blocks against independent references,
and end-to-end runs whose results.json must back the claims the summaries make."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from divekit import seeding
from divekit.data.fashion_mnist import FashionMNIST
from divekit.data.synthetic import POLY_COEFFICIENTS, linear_data, polynomial_data
from divekit.errors import DivekitError, ShapeError
from divekit.experiments import gradient_flow, polynomial_fit, weight_decay
from divekit.experiments.base import run_experiment
from divekit.cpu import single_thread
from divekit.experiments.deep_mlp import DeepMLP, DeepMLPConfig
from divekit.experiments.dropout import DropoutMLP, DropoutMLPConfig
from divekit.experiments.fashion_mnist_study import train_study_model
from divekit.experiments.heatmap_plot import heatmap_plot
from divekit.nn.init import init_linear_layers_
from divekit.registry import EXPERIMENTS, load_all

from conftest import needs_fashion_mnist

OURS = {"polynomial-fit": "generalization", "weight-decay": "generalization", "dropout-mlp": "generalization",
        "gradient-flow": "stability", "initialization": "stability", "batchnorm-depth": "stability"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only adds hand-offs


def test_experiments_are_registered_in_their_chapters() -> None:
    load_all()
    for name, chapter in OURS.items():
        assert EXPERIMENTS[name].chapter == chapter


# ----------------------------------------------------------------------------------- weight decay
def test_l2_penalty_gradient_is_w() -> None:
    w = torch.randn(7, dtype=torch.float64, requires_grad=True)
    weight_decay.l2_penalty(w).backward()
    torch.testing.assert_close(w.grad, w.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("optimizer,momentum", [("sgd", 0.0), ("sgd", 0.9), ("adam", 0.0)])
def test_scratch_penalty_follows_weight_decay_trajectory(optimizer: str, momentum: float) -> None:
    data = linear_data(seed=1)
    kwargs = dict(epochs=5, optimizer=optimizer, momentum=momentum, seed=2, record=True)
    a = weight_decay.train_linear(data, 3.0, method="penalty", **kwargs)
    b = weight_decay.train_linear(data, 3.0, method="optimizer", **kwargs)
    assert len(a.trajectory) == len(b.trajectory) == 5 * 4  # 20 examples in batches of 5
    for wa, wb in zip(a.trajectory, b.trajectory):
        torch.testing.assert_close(wa, wb, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a.b, b.b, rtol=1e-12, atol=1e-12)


def test_adamw_is_not_an_l2_penalty() -> None:
    """The comparison can fail: decoupled decay must give a different trajectory."""
    assert weight_decay.trajectory_gap(linear_data(seed=1), 3.0, epochs=3, optimizer="adamw") > 1e-2


def test_weight_decay_shrinks_weights_and_penalty_is_used() -> None:
    data = linear_data(seed=3)
    plain = weight_decay.train_linear(data, 0.0, epochs=20)
    decayed = weight_decay.train_linear(data, 3.0, epochs=20)
    # Per step SGD multiplies the unconstrained directions by (1 - lr * lambda) = 0.991: after 80
    # steps that is 0.49, so the norm must have dropped by at least a third.
    assert decayed.history[-1][2] < 0.67 * plain.history[-1][2]
    assert decayed.history[-1][1] < plain.history[-1][1]


@pytest.mark.parametrize("lambd", [0.1, 3.0])
def test_ridge_minimiser_zeroes_the_penalised_gradient(lambd: float) -> None:
    data = linear_data(seed=4)
    w, b = weight_decay.ridge_minimiser(data, lambd)
    w, b = w.clone().requires_grad_(), b.clone().requires_grad_()
    loss = weight_decay.squared_loss(data.train_x, data.train_y, w, b) + lambd * weight_decay.l2_penalty(w)
    gw, gb = torch.autograd.grad(loss, (w, b))
    assert gw.abs().max().item() < 1e-10 and abs(gb.item()) < 1e-10


def test_bad_method_and_optimizer_are_user_errors() -> None:
    data = linear_data()
    with pytest.raises(DivekitError, match="method"):
        weight_decay.train_linear(data, 1.0, method="magic", epochs=1)
    with pytest.raises(DivekitError, match="optimizer"):
        weight_decay.train_linear(data, 1.0, optimizer="lion", epochs=1)


# ----------------------------------------------------------------------------------- polynomial fit
def test_least_squares_matches_pseudo_inverse_and_recovers_truth() -> None:
    data = polynomial_data(200, 10, max_degree=6, noise=0.0, seed=1)
    w = polynomial_fit.least_squares(data.train_x, data.train_y)
    torch.testing.assert_close(w, torch.linalg.pinv(data.train_x) @ data.train_y, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(w[:4], torch.tensor(POLY_COEFFICIENTS, dtype=torch.float64), rtol=1e-7, atol=1e-7)


def test_training_error_never_rises_with_degree_and_test_error_is_u_shaped() -> None:
    rows = polynomial_fit.complexity_sweep(n_train=50, seeds=4)
    train = [r[1] for r in rows]
    test = [r[2] for r in rows]
    # Nested model classes fitted exactly: more features can only lower the training error.
    assert all(b <= a * (1 + 1e-6) for a, b in zip(train, train[1:]))
    assert min(range(len(test)), key=test.__getitem__) in (3, 4)
    assert test[0] > 10 * test[3] and test[-1] > 10 * test[3]


def test_sgd_recovers_the_cubic() -> None:
    data = polynomial_data(100, 100, max_degree=3, seed=0)
    w, history = polynomial_fit.sgd_fit(data, 3, 100, epochs=150)
    assert len(history) == 150 and history[-1][0] < history[0][0]
    torch.testing.assert_close(w, torch.tensor(POLY_COEFFICIENTS, dtype=torch.float64), rtol=0, atol=0.15)


def test_geometric_mean() -> None:
    assert polynomial_fit.geometric_mean([1e-2, 1e2, 1.0]) == pytest.approx(1.0)
    assert polynomial_fit.geometric_mean([2.0, 8.0]) == pytest.approx(4.0)


# ----------------------------------------------------------------------------------- gradient flow
def test_sigmoid_derivative_is_sigma_times_one_minus_sigma() -> None:
    xs, ys, grads = gradient_flow.sigmoid_saturation(points=41)
    s = torch.sigmoid(torch.tensor(xs, dtype=torch.float64))
    torch.testing.assert_close(torch.tensor(grads, dtype=torch.float64), s * (1 - s), rtol=1e-12, atol=0)
    assert max(grads) == pytest.approx(0.25)


def test_random_matrix_products_explode_with_unit_variance() -> None:
    norms = gradient_flow.matrix_product_norms(60, seeds=5, std=1.0)
    # Each N(0, 1) 4x4 factor multiplies the norm by about 10^0.25 on average in log terms.
    assert norms[-1] > 10 and norms[-1] > norms[9] + 5


def test_layer_gradient_norms_show_vanishing_and_balanced_cases() -> None:
    sig = gradient_flow.layer_gradient_norms("xavier", "linear", "sigmoid", depth=20, width=32, batch=64)
    relu = gradient_flow.layer_gradient_norms("kaiming", "relu", "relu", depth=20, width=32, batch=64)
    assert len(sig) == len(relu) == 21
    assert sig[0] < 1e-6 * sig[-1]  # 20 sigmoid layers: at most 4^-20 = 1e-12 of the signal survives
    assert 0.05 < relu[0] / relu[-1] < 20


def test_layer_gradient_norms_match_autograd_on_a_plain_sequential() -> None:
    """Rebuild the same network as nn.Sequential from its weights: the same per-layer gradients."""
    norms = gradient_flow.layer_gradient_norms("kaiming", "relu", "tanh", depth=4, width=8, batch=16, seed=3)
    model = DeepMLP(DeepMLPConfig(in_features=8, width=8, depth=4, activation="tanh")).double()
    init_linear_layers_(model, "kaiming", nonlinearity="relu", generator=seeding.generator(3, "init"))
    g = seeding.generator(3, "data")
    x = torch.randn(16, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (16,), generator=g)
    plain = nn.Sequential(*[m for layer in model.linear_layers()[:-1] for m in (layer, nn.Tanh())],
                          model.linear_layers()[-1])
    nn.functional.cross_entropy(plain(x), y).backward()
    expected = [layer.weight.grad.norm().item() for layer in model.linear_layers()]
    assert norms == pytest.approx(expected, rel=1e-12)


def test_clipping_keeps_training_stable_and_scratch_equals_torch() -> None:
    steps = 40
    none, _ = gradient_flow.clipping_run("none", steps=steps)
    scratch_losses, scratch_norms = gradient_flow.clipping_run("scratch", steps=steps)
    torch_losses, torch_norms = gradient_flow.clipping_run("torch", steps=steps)
    assert len(none) < steps  # without clipping the loss passes 1e6 within 40 steps
    assert len(scratch_losses) == len(torch_losses) == steps
    assert scratch_losses == pytest.approx(torch_losses, rel=1e-9, abs=1e-12)
    assert scratch_norms == pytest.approx(torch_norms, rel=1e-9)
    assert max(scratch_norms) > 1.0  # clipping was actually active


# ----------------------------------------------------------------------------------- models
def test_deep_mlp_scratch_and_torch_batchnorm_agree_in_float64() -> None:
    outputs, grads = [], []
    x = torch.randn(32, 1, 28, 28, dtype=torch.float64)
    y = torch.randint(0, 10, (32,))
    for norm in ("scratch", "torch"):
        torch.manual_seed(0)
        model = DeepMLP(DeepMLPConfig(depth=4, width=16, norm=norm)).double()
        out = model(x)
        nn.functional.cross_entropy(out, y).backward()
        outputs.append(out)
        grads.append(model.linear_layers()[0].weight.grad)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-8, atol=1e-12)


def test_deep_mlp_shapes_and_errors() -> None:
    model = DeepMLP(DeepMLPConfig(in_features=12, out_features=3, width=5, depth=3, activation="relu"))
    assert model(torch.randn(4, 12)).shape == (4, 3)
    assert model(torch.randn(4, 3, 4)).shape == (4, 3)  # flattened to 12
    assert len(model.linear_layers()) == 4
    with pytest.raises(ShapeError, match=r"\(batch, 12\)"):
        model(torch.randn(4, 13))
    with pytest.raises(DivekitError, match="activation"):
        DeepMLPConfig(activation="gelu")
    with pytest.raises(DivekitError, match="norm"):
        DeepMLPConfig(norm="layer")


def test_dropout_mlp_variants_share_weights_and_agree_in_eval_mode() -> None:
    torch.manual_seed(0)
    reference = DropoutMLP(DropoutMLPConfig(rates=(0.0, 0.0), implementation="torch"))
    x = torch.randn(8, 1, 28, 28)
    expected = reference.eval()(x)
    for implementation in ("scratch", "torch"):
        model = DropoutMLP(DropoutMLPConfig(implementation=implementation))
        model.load_state_dict(reference.state_dict())  # same keys whatever the rates
        torch.testing.assert_close(model.eval()(x), expected, rtol=0, atol=0)
        assert not torch.equal(model.train()(x), expected)  # dropout acts in training mode
    with pytest.raises(ShapeError):
        reference(torch.randn(8, 784))
    with pytest.raises(DivekitError, match="one dropout rate per hidden layer"):
        DropoutMLPConfig(rates=(0.5,))


def test_train_study_model_learns_a_separable_toy_problem() -> None:
    """Tiny fake Fashion-MNIST: class 1 images are bright, class 0 dark. Runs without the real files."""
    g = torch.Generator().manual_seed(0)

    def fake(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, 2, (n,), generator=g)
        noise = torch.randint(0, 100, (n, 28, 28), generator=g, dtype=torch.uint8)
        images = noise + (labels * 120).to(torch.uint8)[:, None, None]
        return images, labels

    data = FashionMNIST(train=fake(600), test=fake(200), download=False)
    torch.manual_seed(0)
    model = DropoutMLP(DropoutMLPConfig(hidden=(16, 16)))
    run = train_study_model(model, name="toy", model_config={}, data=data, epochs=3, lr=0.1, limit=None, seed=0,
                            device="cpu", batch_size=32, val_size=100)
    assert len(run.history) == 3 and run.test_accuracy > 0.95
    assert run.scores["train"]["accuracy"] > 0.95


def test_heatmap_plot_writes_a_png_and_checks_labels(tmp_path) -> None:
    values = torch.tensor([[0.0, float("-inf")], [1.0, 2.0]])
    path = heatmap_plot(tmp_path / "h.png", values, row_labels=["a", "b"], col_labels=["1", "2"], xlabel="x",
                        colorbar_label="v", center=0.0)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="rows"):
        heatmap_plot(tmp_path / "bad.png", values, row_labels=["a"], col_labels=["1", "2"], xlabel="x",
                     colorbar_label="v")


def test_single_thread_restores_the_thread_count() -> None:
    before = torch.get_num_threads()
    with single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


# ----------------------------------------------------------------------------------- end to end
def _check_figures(result: dict, out) -> None:
    assert result["figures"]
    for fig in result["figures"]:
        assert (out / fig["file"]).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name", ["polynomial-fit", "weight-decay", "gradient-flow"])
def test_synthetic_experiments_run_and_back_their_claims(name: str, tmp_path) -> None:
    result = run_experiment(name, tmp_path / name, quick=True, progress=False)
    assert (tmp_path / name / "results.json").is_file()
    _check_figures(result, tmp_path / name)
    m = result["metrics"]
    if name == "polynomial-fit":
        assert m["best_degree"] in (3, 4)
        assert m["degree20_test_mse"] > 2 * m["degree20_train_mse"]  # overfitting shows as a gap
        assert m["degree1_test_mse"] > 100 * m["degree3_test_mse"]  # underfitting
    elif name == "weight-decay":
        assert m["penalty_vs_weight_decay_max_diff"] < 1e-10 < 1e-2 < m["penalty_vs_adamw_max_diff"]
        assert m["best_test_loss"] < 0.1 * m["test_loss_no_decay"]
        assert m["best_lambda"] > 0
    else:
        assert m["xavier_sigmoid_first_over_last_log10"] < -10  # vanishing
        assert m["kaiming_tanh_first_over_last_log10"] > 0.5  # growing towards the input
        assert abs(m["kaiming_relu_first_over_last_log10"]) < 1.5  # balanced
        assert m["unclipped_diverged_at_step"] > 0 and m["scratch_vs_torch_clip_max_loss_diff"] < 1e-6


@needs_fashion_mnist
@pytest.mark.integration
def test_initialization_experiment_on_fashion_mnist(tmp_path) -> None:
    result = run_experiment("initialization", tmp_path / "init", quick=True, progress=False)
    _check_figures(result, tmp_path / "init")
    m = result["metrics"]
    assert m["init_variance_max_rel_error"] < 0.05
    assert m["test_accuracy_normal001"] < 0.2 < 0.5 < m["test_accuracy_kaiming"]
    assert m["test_accuracy_kaiming"] > m["test_accuracy_xavier"]
    assert 0.5 < m["kaiming_relu_last_layer_moment"] < 8 and m["xavier_relu_last_layer_moment"] < 1e-5


@needs_fashion_mnist
@pytest.mark.integration
def test_batchnorm_rescues_a_deep_sigmoid_network_on_fashion_mnist() -> None:
    """A 5-layer sigmoid MLP on 4,000 real images, 3 epochs: stuck without BN, learning with either BN."""
    data = FashionMNIST()
    accuracy = {}
    for norm in ("none", "scratch", "torch"):
        torch.manual_seed(0)
        run = train_study_model(DeepMLP(DeepMLPConfig(depth=5, width=64, norm=norm)), name="bn", model_config={},
                                data=data, epochs=3, lr=0.5, limit=4_000, seed=0, device="cpu",
                                splits=("test",))
        accuracy[norm] = run.test_accuracy
    assert accuracy["none"] < 0.2
    assert accuracy["scratch"] > 0.5 and abs(accuracy["scratch"] - accuracy["torch"]) < 0.01


@needs_fashion_mnist
@pytest.mark.integration
def test_dropout_mlp_trains_with_scratch_dropout_on_fashion_mnist() -> None:
    data = FashionMNIST()
    torch.manual_seed(0)
    run = train_study_model(DropoutMLP(DropoutMLPConfig()), name="dropout", model_config={}, data=data,
                            epochs=2, lr=0.1, limit=2_000, seed=0, device="cpu")
    assert run.test_accuracy > 0.5 and run.scores["train"]["accuracy"] > 0.5  # chance is 0.1
