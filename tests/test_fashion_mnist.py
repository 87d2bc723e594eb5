"""Fashion-MNIST: the real files' contents, deterministic disjoint splits, float conversion, loaders."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from divekit.data import fashion_mnist as fm
from divekit.data import store
from divekit.data.idx import write_idx
from divekit.errors import DataError, ShapeError

from conftest import data_dir_with




@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    root = data_dir_with("fashion-mnist")
    if root is None:
        pytest.skip("shared data directory not present (set DIVEKIT_DATA to a directory holding the files)")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIVEKIT_DATA", str(root))
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg")))
        mp.setattr(store, "SYSTEM_DIRS", ())
        return {split: fm.load_fashion_mnist(split, download=False) for split in ("train", "test")}


def _synthetic(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n distinct images: pixels (0, 0) and (0, 1) spell the image's index in base 256."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=g)
    index = torch.arange(n)
    images[:, 0, 0], images[:, 0, 1] = (index % 256).to(torch.uint8), (index // 256).to(torch.uint8)
    return images, index % 10


def _ids(images: torch.Tensor) -> list[int]:
    if images.dim() == 4:  # float (N, 1, H, W) from a loader
        images = (images[:, 0] * 255).round().to(torch.uint8)
    return (images[:, 0, 0].long() + 256 * images[:, 0, 1].long()).tolist()


# ------------------------------------------------------------------------------------ real data


def test_real_shapes_dtypes_and_label_range(real: dict) -> None:
    for split, n in (("train", 60_000), ("test", 10_000)):
        images, labels = real[split]
        assert images.shape == (n, 28, 28) and images.dtype == torch.uint8
        assert labels.shape == (n,) and labels.dtype == torch.int64
        assert labels.min().item() == 0 and labels.max().item() == 9


def test_real_classes_are_balanced(real: dict) -> None:
    assert torch.bincount(real["train"][1], minlength=10).tolist() == [6_000] * 10
    assert torch.bincount(real["test"][1], minlength=10).tolist() == [1_000] * 10
    assert len(fm.CLASS_NAMES) == 10 and fm.CLASS_NAMES[0] == "T-shirt/top" and fm.CLASS_NAMES[9] == "Ankle boot"


def test_real_test_split_matches_a_direct_numpy_decode(real: dict) -> None:
    root = data_dir_with("fashion-mnist")
    assert root is not None
    raw = gzip.decompress((root / "fashion-mnist/t10k-images-idx3-ubyte.gz").read_bytes())
    expected = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(10_000, 28, 28)
    np.testing.assert_array_equal(real["test"][0].numpy(), expected)
    raw = gzip.decompress((root / "fashion-mnist/t10k-labels-idx1-ubyte.gz").read_bytes())
    np.testing.assert_array_equal(real["test"][1].numpy(), np.frombuffer(raw, dtype=np.uint8, offset=8))


def test_stated_training_mean_and_std(real: dict) -> None:
    # Exact moments from the histogram of pixel values, computed without the float tensor.
    counts = torch.bincount(real["train"][0].flatten(), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64) / 255
    mean = (counts * values).sum() / counts.sum()
    std = ((counts * (values - mean) ** 2).sum() / counts.sum()).sqrt()
    assert abs(mean.item() - fm.TRAIN_MEAN) < 1e-6 and abs(std.item() - fm.TRAIN_STD) < 1e-6


def test_real_split_sizes(real: dict) -> None:
    splits = fm.FashionMNIST(real["train"], real["test"]).train_val_test()
    assert [s[0].shape[0] for s in splits] == [55_000, 5_000, 10_000]
    assert [s[1].shape[0] for s in splits] == [55_000, 5_000, 10_000]


# ------------------------------------------------------------------------------ loading checks


def _serve_idx(monkeypatch: pytest.MonkeyPatch, blobs: dict[str, bytes]) -> None:
    monkeypatch.setattr(fm, "load_bytes", lambda key, download=True: blobs[key])


def test_load_checks_counts_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fm, "SPLIT_SIZES", {"train": 3, "test": 2})
    images, labels = torch.zeros(2, 28, 28, dtype=torch.uint8), torch.tensor([1, 2], dtype=torch.uint8)
    _serve_idx(monkeypatch, {"fashion-mnist/test-images": write_idx(images),
                             "fashion-mnist/test-labels": write_idx(labels),
                             "fashion-mnist/train-images": write_idx(torch.zeros(3, 28, 28, dtype=torch.uint8)),
                             "fashion-mnist/train-labels": write_idx(labels)})
    x, y = fm.load_fashion_mnist("test")
    assert x.shape == (2, 28, 28) and y.tolist() == [1, 2] and y.dtype == torch.int64
    with pytest.raises(DataError, match=r"labels \(3,\).*\(2,\)"):
        fm.load_fashion_mnist("train")


def test_unknown_split() -> None:
    with pytest.raises(DataError, match="'valid'"):
        fm.load_fashion_mnist("valid")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- splits


def test_split_is_deterministic_disjoint_and_from_train_only() -> None:
    train, test = _synthetic(300), _synthetic(40, seed=1)
    data = fm.FashionMNIST(train, test)
    a, b = data.train_val_test(val_size=50, seed=3), data.train_val_test(val_size=50, seed=3)
    for part_a, part_b in zip(a, b):
        assert torch.equal(part_a[0], part_b[0]) and torch.equal(part_a[1], part_b[1])
    train_ids, val_ids = _ids(a.train[0]), _ids(a.val[0])
    assert len(val_ids) == 50 and len(train_ids) == 250
    assert set(train_ids).isdisjoint(val_ids) and sorted(train_ids + val_ids) == list(range(300))
    assert a.train[1].tolist() == [i % 10 for i in train_ids]  # labels travel with their images
    assert torch.equal(a.test[0], test[0])
    assert _ids(data.train_val_test(val_size=50, seed=4).val[0]) != val_ids


def test_bad_val_size() -> None:
    with pytest.raises(DataError, match="val_size"):
        fm.FashionMNIST(_synthetic(10), _synthetic(2)).train_val_test(val_size=10)


# --------------------------------------------------------------------------------------- floats


def test_to_float_without_resize_is_a_scaling() -> None:
    images = _synthetic(7)[0]
    out = fm.to_float(images)
    assert out.shape == (7, 1, 28, 28) and out.dtype == torch.float32
    np.testing.assert_allclose(out[:, 0].numpy(), images.numpy().astype(np.float32) / 255, rtol=0, atol=1e-7)


@pytest.mark.parametrize("size", [12, 40])
def test_chunked_resize_matches_a_single_interpolate(size: int) -> None:
    images = _synthetic(10)[0]
    out = fm.to_float(images, resize=size, chunk=3)
    whole = F.interpolate(images[:, None].float() / 255, size=(size, size), mode="bilinear", align_corners=False)
    exact = F.interpolate(images[:, None].double() / 255, size=(size, size), mode="bilinear", align_corners=False)
    assert out.shape == (10, 1, size, size)
    torch.testing.assert_close(out, whole, rtol=0, atol=1e-7)  # chunking changes nothing
    torch.testing.assert_close(out.double(), exact, rtol=0, atol=1e-5)  # float32 rounding only
    assert out.min() >= 0 and out.max() <= 1


def test_to_float_shape_errors() -> None:
    with pytest.raises(ShapeError, match="uint8"):
        fm.to_float(torch.zeros(2, 28, 28))
    with pytest.raises(ShapeError, match=r"\(N, H, W\) or \(N, 1, H, W\)"):
        fm.to_float(torch.zeros(2, 3, 28, 28, dtype=torch.uint8))


def test_normalize_round_trip() -> None:
    x = torch.rand(4, 1, 28, 28)
    assert abs(fm.normalize(torch.tensor(fm.TRAIN_MEAN)).item()) < 1e-7
    torch.testing.assert_close(fm.denormalize(fm.normalize(x)), x)


# -------------------------------------------------------------------------------------- loaders


def test_loaders_shapes_shuffling_and_limit() -> None:
    data = fm.FashionMNIST(_synthetic(200), _synthetic(30, seed=1))
    splits = data.train_val_test(val_size=20, seed=5)
    loaders = data.loaders(16, resize=32, seed=5, limit=100, val_size=20)
    x, y = next(iter(loaders.train))
    assert x.shape == (16, 1, 32, 32) and x.dtype == torch.float32 and y.shape == (16,)
    assert loaders.train.num_examples == 100 and loaders.val.num_examples == 20 and loaders.test.num_examples == 30
    plain = data.loaders(16, seed=5, limit=100, val_size=20)
    seen = [i for xb, _ in plain.train for i in _ids(xb)]
    first_100 = _ids(splits.train[0][:100])
    assert sorted(seen) == sorted(first_100) and seen != first_100  # the limited subset, shuffled
    assert [i for xb, _ in plain.val for i in _ids(xb)] == _ids(splits.val[0])  # not shuffled
    assert [i for xb, _ in plain.test for i in _ids(xb)] == list(range(30))


def test_loaders_shard_across_ranks() -> None:
    data = fm.FashionMNIST(_synthetic(64), _synthetic(8, seed=1))
    whole = [_ids(xb) for xb, _ in data.loaders(8, val_size=8).train]
    shards = [[_ids(xb) for xb, _ in data.loaders(8, val_size=8, rank=r, world_size=2).train] for r in range(2)]
    assert [a + b for a, b in zip(*shards)] == whole
