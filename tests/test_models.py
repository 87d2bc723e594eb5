"""Smoke tests over the whole model registry: shapes, finite outputs, a gradient for every parameter."""

from __future__ import annotations

import pytest
import torch

from divekit.errors import ShapeError
from divekit.registry import MODELS, create_model, get_model, list_models
from divekit.tasks.image_classification import ImageClassification

IMAGE_MODELS = [n for n in list_models() if MODELS[n].task == "fashion-mnist"]


def image_batch(name: str, batch: int = 3) -> torch.Tensor:
    resolution = getattr(get_model(name).make_config(), "resolution", 28)
    return torch.randn(batch, 1, resolution, resolution)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name)
    logits = model(image_batch(name))
    assert logits.shape == (3, 10)
    assert torch.isfinite(logits).all()
    logits.logsumexp(1).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_wrong_input_names_the_expected_shape(name):
    model = create_model(name)
    with pytest.raises(ShapeError, match=r"\(batch, 1, "):
        model(torch.randn(2, 3, 28, 28))
    with pytest.raises(ShapeError, match="floating-point"):
        model(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_a_few_steps_reduce_the_loss_on_one_batch(name):
    torch.manual_seed(0)
    model = create_model(name)
    x, y = image_batch(name, 16), torch.arange(16) % 10
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses[::10]


def test_lists_and_options():
    assert "lenet" in list_models("le*") and "mlp" not in list_models("le*")
    assert sum(p.numel() for p in create_model("mlp", hidden=(32, 16)).parameters()) == 784 * 32 + 32 + 32 * 16 + 16 + 170


def test_image_task_on_synthetic_data():
    from divekit.data.fashion_mnist import FashionMNIST
    from divekit.train.distributed import DistInfo

    g = torch.Generator().manual_seed(0)
    train = (torch.randint(0, 256, (300, 28, 28), dtype=torch.uint8, generator=g), torch.arange(300) % 10)
    test = (torch.randint(0, 256, (50, 28, 28), dtype=torch.uint8, generator=g), torch.arange(50) % 10)
    task = ImageClassification(batch_size=32, data=FashionMNIST(train, test), val_size=100, limit=150, resolution=32)
    x, y = next(iter(task.train_loader(DistInfo())))
    assert x.shape == (32, 1, 32, 32) and x.dtype == torch.float32 and y.shape == (32,)
    assert task.splits["train"][0].shape[0] == 150 and task.splits["val"][0].shape[0] == 100
    metrics = task.evaluate(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 10)), "test")
    assert set(metrics) == {"loss", "accuracy"} and 0 <= metrics["accuracy"] <= 1


@pytest.mark.parametrize("name", list_models())
def test_summary_runs_for_every_registered_model(name):
    from divekit.summary import example_input, format_summary, summarize

    spec = get_model(name)
    config = spec.make_config()
    if name in ("alexnet", "vgg", "nin", "googlenet", "resnet", "densenet"):
        config = spec.make_config({"resolution": 28})  # the book resolutions are slow for a smoke test
    model = spec.build(config)
    example = example_input(spec.task, config)
    rows = summarize(model, example)
    assert rows and "total parameters" in format_summary(rows, model, example)
