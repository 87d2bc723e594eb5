"""The CNN family: shapes at both resolutions, parameter counts, blocks, training, bad input, scratch LeNet.

Expected feature-map shapes and parameter counts are worked out by hand from the architectures
(the arithmetic is in the comments), not read back from the code under test.
"""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
import torch.nn.functional as F
from conftest import needs_fashion_mnist
from torch import nn

from divekit.data.fashion_mnist import FashionMNIST
from divekit.errors import DivekitError, ShapeError
from divekit.models.densenet import DenseBlock, transition
from divekit.models.googlenet import Inception
from divekit.models.resnet import Residual
from divekit.registry import create_model, get_model, list_models
from divekit.tasks.image_augmented import (
    AugmentedImageClassification,
    evaluation_views,
    random_crop_flip,
    random_erase,
    shift_images,
)
from divekit.tasks.image_classification import prepare_images
from divekit.train.distributed import DistInfo

# name -> (book resolution, feature shape at 28, feature shape at the book's resolution)
FAMILY = {
    "alexnet": (224, (64, 2, 2), (256, 5, 5)),  # 224: 11x11/4 pad 1 -> 54, pools -> 26, 12, 5
    "vgg": (224, (128, 3, 3), (128, 7, 7)),  # 28 -> 14 -> 7 -> 3 (then no pooling below 6); 224 / 2**5 = 7
    "nin": (224, (192, 2, 2), (384, 5, 5)),  # 28 -> 13 -> 6 -> 2;  224 -> 54 -> 26 -> 12 -> 5
    "googlenet": (96, (512, 2, 2), (1024, 3, 3)),  # 28 -> 14 -> 7 -> 4 -> 2;  96 -> 48 -> 24 -> 12 -> 6 -> 3
    "resnet": (96, (256, 2, 2), (512, 3, 3)),  # 28 -> 14 -> 7 -> 4 -> 2;  96 -> 48 -> 24 -> 12 -> 6 -> 3
    "densenet": (96, (248, 1, 1), (248, 3, 3)),  # 64 + 4*32 = 192 -> 96 -> 224 -> 112 -> 240 -> 120 -> 248
}
LENETS = {("lenet", ()): (16, 5, 5), ("lenet", (("modern", True),)): (16, 5, 5), ("bn-lenet", ()): (16, 4, 4)}
# Per model: (Adam learning rate, steps, required final/initial loss ratio) for the one-batch check.
# Plain deep ReLU nets (no batch norm) leave the initial plateau slowly, so they get smaller steps
# and a looser ratio; the classic LeNet's sigmoids sit on a plateau for a few dozen steps first.
ONE_BATCH = {"lenet": (3e-3, 150, 0.5), "bn-lenet": (3e-3, 30, 0.5), "alexnet": (1e-3, 30, 0.5),
             "vgg": (1e-3, 30, 0.5), "nin": (1e-3, 30, 0.9), "googlenet": (5e-4, 30, 0.6),
             "resnet": (1e-3, 30, 0.5), "densenet": (1e-3, 30, 0.5)}
NO_DROPOUT = {"alexnet": {"dropout": 0.0}, "vgg": {"dropout": 0.0, "hidden": 256}, "nin": {"dropout": 0.0}}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only adds hand-offs


def test_every_cnn_is_registered():
    assert {"lenet", "bn-lenet", *FAMILY} <= set(list_models())
    assert all(get_model(n).chapter == "cnn" for n in ["lenet", "bn-lenet", *FAMILY])


@pytest.mark.parametrize("name", FAMILY)
def test_feature_and_logit_shapes_at_both_resolutions(name):
    book, native_shape, book_shape = FAMILY[name]
    for resolution, shape in [(28, native_shape), (book, book_shape)]:
        torch.manual_seed(0)
        model = create_model(name, resolution=resolution)
        x = torch.randn(2, 1, resolution, resolution)
        assert tuple(model.forward_features(x).shape) == (2, *shape), resolution
        logits = model(x)
        assert logits.shape == (2, 10) and torch.isfinite(logits).all()


@pytest.mark.parametrize(("name", "options"), list(LENETS), ids=["lenet", "lenet-modern", "bn-lenet"])
def test_lenet_shapes(name, options):
    model = create_model(name, **dict(options))
    x = torch.randn(3, 1, 28, 28)
    assert tuple(model.forward_features(x).shape) == (3, *LENETS[(name, options)])
    assert model(x).shape == (3, 10)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_by_hand():
    # LeNet-5: conv 1->6 5x5 (156), conv 6->16 5x5 (2,416), 400->120 (48,120), 120->84 (10,164), 84->10 (850).
    assert _params(create_model("lenet")) == 156 + 2_416 + 48_120 + 10_164 + 850
    # The book's AlexNet at 224 with one input channel and ten classes.
    alexnet = (96 * 121 + 96) + (256 * 96 * 25 + 256) + (384 * 256 * 9 + 384) + (384 * 384 * 9 + 384) \
        + (256 * 384 * 9 + 256) + (6400 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 10 + 10)
    assert _params(create_model("alexnet", resolution=224)) == alexnet
    # ResNet-18 at 96: torchvision's 11,689,512 for 3 channels and 1,000 classes, less 2 * 64 * 49 stem
    # weights, less the 1000-way head plus a 10-way one, and with bias-only (not BN) projections: -896.
    resnet18 = 11_689_512 - 2 * 64 * 49 - (512 * 1000 + 1000) + (512 * 10 + 10) - 2 * (128 + 256 + 512) \
        + (128 + 256 + 512)
    assert _params(create_model("resnet", resolution=96)) == resnet18
    # Halving every width of a bias-free convolution quarters its weights: the native ResNet's stages.
    assert _params(create_model("resnet").stages[3][1].conv1) == 256 * 256 * 9


def one_batch(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """16 or 20 images with labels: class templates plus noise, or (for the sigmoid LeNet) pure noise."""
    g = torch.Generator().manual_seed(0)
    if name == "lenet":
        return torch.randn(16, 1, 28, 28, generator=g), torch.arange(16) % 10
    templates = torch.randn(10, 1, 28, 28, generator=g)
    y = torch.arange(20) % 10
    return templates[y] + 0.5 * torch.randn(20, 1, 28, 28, generator=g), y


@pytest.mark.parametrize("name", ["lenet", "bn-lenet", *FAMILY])
def test_a_few_steps_reduce_the_loss_on_one_batch(name):
    torch.manual_seed(0)
    model = create_model(name, **NO_DROPOUT.get(name, {}))
    lr, steps, ratio = ONE_BATCH[name]
    x, y = one_batch(name)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < ratio * losses[0], losses[::5]


@pytest.mark.parametrize("name", ["lenet", "bn-lenet", *FAMILY])
def test_bad_input_names_the_expected_shape(name):
    model = create_model(name)
    with pytest.raises(ShapeError, match=r"\(batch, 1, 28, 28\)"):
        model(torch.randn(2, 3, 28, 28))
    with pytest.raises(ShapeError, match=r"\(batch, 1, 28, 28\)"):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(ShapeError, match=r"\(batch, 1, 28, 28\)"):
        model(torch.randn(1, 28, 28))
    with pytest.raises(ShapeError, match="floating-point"):
        model(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    if name in FAMILY:
        book = FAMILY[name][0]
        with pytest.raises(ShapeError, match=rf"\(batch, 1, {book}, {book}\)"):
            create_model(name, resolution=book)(torch.randn(1, 1, 28, 28))


@pytest.mark.parametrize(("name", "options"), [("resnet", {"resolution": 20}), ("nin", {"resolution": 40}),
                                               ("alexnet", {"resolution": 64}), ("vgg", {"convs": (1, 2)}),
                                               ("densenet", {"growth": 0}), ("googlenet", {"width": 0.0})])
def test_bad_configs_are_user_errors(name, options):
    with pytest.raises(DivekitError):
        create_model(name, **options)


@pytest.mark.parametrize(("name", "options"), [("lenet", {}), ("lenet", {"modern": True}), ("bn-lenet", {})],
                         ids=["lenet", "lenet-modern", "bn-lenet"])
@pytest.mark.parametrize("training", [True, False])
def test_scratch_lenet_equals_torch_lenet(name, options, training):
    """Same weights in float64: same logits, input and weight gradients, and running statistics."""
    torch.manual_seed(0)
    reference = create_model(name, **options).double().train(training)
    scratch = create_model(name, **options, scratch=True).double().train(training)
    scratch.load_state_dict(reference.state_dict())
    x = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    cotangent = torch.randn(6, 10, dtype=torch.float64)
    grads = []
    for model in (reference, scratch):
        xi = x.clone().requires_grad_()
        out = model(xi)
        out.backward(cotangent)
        grads.append((out.detach(), xi.grad, {n: p.grad for n, p in model.named_parameters()}))
    (out_r, gx_r, gp_r), (out_s, gx_s, gp_s) = grads
    tol = {"atol": 1e-10, "rtol": 1e-10}
    torch.testing.assert_close(out_s, out_r, **tol)
    torch.testing.assert_close(gx_s, gx_r, **tol)
    assert gp_s.keys() == gp_r.keys()
    for key in gp_r:
        torch.testing.assert_close(gp_s[key], gp_r[key], **tol, msg=key)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(scratch.state_dict()[key], value, **tol, msg=key)
    assert any(isinstance(m, nn.Conv2d) for m in reference.modules())
    assert not any(isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d)) for m in scratch.modules())


def test_residual_block_with_and_without_projection():
    x = torch.randn(2, 8, 6, 6)
    same = Residual(8, 8)
    assert isinstance(same.shortcut, nn.Identity) and same(x).shape == (2, 8, 6, 6)
    projected = Residual(8, 8, use_1x1conv=True)
    assert _params(projected) == _params(same) + 8 * 8 + 8  # a 1x1 convolution with bias on top
    down = Residual(8, 16, stride=2, use_1x1conv=True)
    assert down(x).shape == (2, 16, 3, 3)
    with pytest.raises(ValueError, match="use_1x1conv"):
        Residual(8, 16, stride=2)
    # With the residual branch switched off (its last BN scales and shifts to zero) a block is
    # relu(shortcut(x)): the identity on non-negative inputs, the 1x1 projection otherwise.
    for block in (same, down):
        nn.init.zeros_(block.bn2.weight)
        nn.init.zeros_(block.bn2.bias)
    z = x.relu()
    torch.testing.assert_close(same(z), z)
    torch.testing.assert_close(down(x), F.conv2d(x, down.shortcut.weight, down.shortcut.bias, stride=2).relu())


def test_nin_with_batch_norm_normalises_every_convolution():
    plain, normed = create_model("nin"), create_model("nin", batch_norm=True)
    convs = [m for m in normed.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in normed.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == 12 and [n.num_features for n in norms] == [c.out_channels for c in convs]
    assert _params(normed) == _params(plain) + 2 * sum(c.out_channels for c in convs)
    x = torch.randn(4, 1, 28, 28)
    assert normed(x).shape == (4, 10)


def test_inception_dense_block_and_transition_channels():
    x = torch.randn(2, 12, 7, 7)
    inception = Inception(12, 4, (3, 5), (2, 6), 7)
    assert inception(x).shape == (2, 4 + 5 + 6 + 7, 7, 7)
    block = DenseBlock(12, layers=3, growth=5)
    y = block(x)
    assert y.shape == (2, 12 + 3 * 5, 7, 7)
    torch.testing.assert_close(y[:, :12], x)  # dense connectivity: the input is passed on unchanged
    assert transition(27, 13)(y).shape == (2, 13, 3, 3)


def test_summary_command_shows_both_resolutions():
    from divekit.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["summary", "resnet"]) == 0
        assert main(["summary", "resnet", "-o", "resolution=96"]) == 0
    text = out.getvalue()
    assert "(1, 256, 2, 2)" in text and "(1, 512, 3, 3)" in text


# ------------------------------------------------------------------------------ the augmented task
def _numbered(batch: int, size: int = 6) -> torch.Tensor:
    """Images whose pixels are all different, so a crop identifies its own offset (values 1..)."""
    return torch.arange(1, batch * size * size + 1, dtype=torch.int32).view(batch, size, size)


def _source_window(out: torch.Tensor, image: torch.Tensor, padding: int) -> tuple[int, int, bool] | None:
    padded = F.pad(image, (padding,) * 4)
    h, w = image.shape
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            window = padded[dy : dy + h, dx : dx + w]
            for mirrored in (False, True):
                if torch.equal(out, window.flip(1) if mirrored else window):
                    return dy, dx, mirrored
    return None


def test_random_crop_flip_is_a_shifted_possibly_mirrored_window():
    images = _numbered(300)
    out = random_crop_flip(images, 2, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == images.dtype
    found = [_source_window(o, i, 2) for o, i in zip(out, images)]
    assert None not in found
    assert len(set(found)) > 40  # 25 offsets x 2 mirrorings = 50 outcomes, nearly all drawn
    assert 0.35 < sum(m for _, _, m in found) / len(found) < 0.65


def test_random_crop_without_padding_or_flip_is_the_identity():
    images = _numbered(4)
    torch.testing.assert_close(random_crop_flip(images, 0, flip=False), images)
    with pytest.raises(ShapeError, match=r"\(batch, H, W\)"):
        random_crop_flip(images[:, None])


def test_random_erase_replaces_one_rectangle_of_chosen_images():
    images = torch.full((400, 28, 28), 7, dtype=torch.uint8)  # noise equals 7 with probability 1/256 only
    out = random_erase(images, 0.5, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == images.dtype
    changed = out != images
    erased = changed.flatten(1).any(1)
    assert 0.4 < erased.double().mean() < 0.6
    for mask in changed[erased][:50]:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        box = mask[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
        assert box.double().mean() > 0.95  # one filled rectangle (a few noise pixels may equal 7)
        assert 0.01 < box.numel() / 784 < 0.45  # 2-40% of the area, up to rounding of the sides
    assert torch.equal(random_erase(images, 0.0), images)
    with pytest.raises(ShapeError, match=r"\(batch, H, W\)"):
        random_erase(images[:, None])


def _tiny_task(**kwargs) -> AugmentedImageClassification:
    g = torch.Generator().manual_seed(0)
    train = (torch.randint(0, 256, (120, 28, 28), dtype=torch.uint8, generator=g), torch.arange(120) % 10)
    test = (torch.randint(0, 256, (30, 28, 28), dtype=torch.uint8, generator=g), torch.arange(30) % 10)
    return AugmentedImageClassification(batch_size=16, data=FashionMNIST(train, test), val_size=20, **kwargs)


def test_test_time_flip_averages_image_and_mirror_logits():
    torch.manual_seed(0)
    model = create_model("lenet", modern=True).eval()
    task = _tiny_task(test_flip=True)
    logits, labels = task.predict(model, "test")
    x = prepare_images(task.splits["test"][0])
    with torch.no_grad():
        expected = (model(x) + model(torch.flip(x, dims=[3]))) / 2
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(labels, task.splits["test"][1])
    plain, _ = _tiny_task().predict(model, "test")
    with torch.no_grad():
        torch.testing.assert_close(plain, model(x))


def _moved(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Reference shift: roll, then blank the rows and columns that wrapped around."""
    out = torch.roll(images, shifts=(dy, dx), dims=(1, 2)).clone()
    if dy > 0:
        out[:, :dy] = 0
    elif dy < 0:
        out[:, dy:] = 0
    if dx > 0:
        out[:, :, :dx] = 0
    elif dx < 0:
        out[:, :, dx:] = 0
    return out


@pytest.mark.parametrize("dy, dx", [(0, 0), (1, 0), (-1, 0), (0, 2), (-3, 1), (2, -2)])
def test_shift_images_moves_content_and_fills_black(dy, dx):
    images = torch.randint(1, 256, (3, 7, 9), dtype=torch.uint8)
    moved = shift_images(images, dy, dx)
    assert moved.dtype == torch.uint8 and moved.shape == images.shape
    torch.testing.assert_close(moved, _moved(images, dy, dx))


def test_evaluation_views_are_the_shifts_and_their_mirrors():
    images = torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8)
    for flip, shift, count in [(False, False, 1), (True, False, 2), (False, True, 5), (True, True, 10)]:
        views = evaluation_views(images, flip=flip, shift=shift)
        assert len(views) == count and all(v.shape == images.shape for v in views)
        assert len({v.numpy().tobytes() for v in views}) == count  # no view repeated
    views = evaluation_views(images, flip=True, shift=True)
    torch.testing.assert_close(views[0], images)
    torch.testing.assert_close(views[2], _moved(images, 1, 0))
    torch.testing.assert_close(views[5], images.flip(-1))
    torch.testing.assert_close(views[9], _moved(images, 0, 1).flip(-1))
    with pytest.raises(ShapeError, match=r"\(batch, H, W\)"):
        evaluation_views(images[:, None], flip=True, shift=True)


def test_test_time_shifts_average_ten_views():
    torch.manual_seed(0)
    model = create_model("lenet", modern=True).eval()
    task = _tiny_task(test_flip=True, test_shift=True)
    logits, labels = task.predict(model, "test")
    images = task.splits["test"][0]
    moves = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]
    with torch.no_grad():
        per_view = [model(prepare_images(_moved(images, dy, dx).flip(-1) if mirror else _moved(images, dy, dx)))
                    for mirror in (False, True) for dy, dx in moves]
    torch.testing.assert_close(logits, torch.stack(per_view).mean(0))
    torch.testing.assert_close(labels, task.splits["test"][1])
    shift_only, _ = _tiny_task(test_shift=True).predict(model, "test")
    torch.testing.assert_close(shift_only, torch.stack(per_view[:5]).mean(0))


def test_augmented_training_batches_keep_shapes_and_labels():
    task = _tiny_task(augment=True)
    torch.manual_seed(0)
    x, y = next(iter(task.train_loader(DistInfo())))
    plain_x, plain_y = next(iter(_tiny_task().train_loader(DistInfo())))
    assert x.shape == plain_x.shape == (16, 1, 28, 28) and x.dtype == torch.float32
    torch.testing.assert_close(y, plain_y)  # same order: augmentation never touches the labels
    assert not torch.equal(x, plain_x)
    assert task.state() == {"resolution": 28, "limit": None, "augment": True, "test_flip": False,
                            "test_shift": False, "erase": 0.0}


@needs_fashion_mnist
def test_evaluation_options_change_a_saved_models_test_views(tmp_path):
    from divekit.errors import CheckpointError
    from divekit.pipeline import load_trained
    from divekit.registry import config_to_dict
    from divekit.train.checkpoint import save_checkpoint
    from divekit.train.config import TrainConfig

    spec = get_model("resnet")
    config = spec.make_config({"blocks": (1,), "width": 0.25, "test_flip": True})
    path = save_checkpoint(tmp_path / "tiny.pt", {
        "model": "resnet", "model_config": config_to_dict(config), "train_config": TrainConfig().to_dict(),
        "epoch": 1, "model_state": spec.build(config).state_dict()})
    _, _, task, _ = load_trained(path, data_limit=100)
    assert task.test_flip and not task.test_shift
    _, model, task, _ = load_trained(path, data_limit=100, option_pairs=["test_shift=true"])
    assert task.test_flip and task.test_shift and model.config.test_shift
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_trained(path, data_limit=100, option_pairs=["width=0.5"])  # weights of another shape
