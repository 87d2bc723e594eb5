"""The Python API does what the command line does, with the same errors."""

from __future__ import annotations

import pytest

import divekit
from conftest import needs_fashion_mnist
from divekit.errors import DivekitError


def test_train_is_the_function_and_the_subpackage_still_imports():
    from divekit.train.trainer import Trainer

    assert callable(divekit.train) and divekit.train is divekit.api.train and Trainer.__name__ == "Trainer"


def test_list_and_create_models():
    assert "lenet" in divekit.list_models() and divekit.list_models("*lm*")[0].endswith("lm")
    model = divekit.create_model("lenet", modern=True)
    assert sum(p.numel() for p in model.parameters()) > 0
    with pytest.raises(DivekitError, match="did you mean"):
        divekit.create_model("lenett")
    with pytest.raises(DivekitError, match="has no option"):
        divekit.create_model("lenet", depth=3)


@needs_fashion_mnist
def test_train_then_load_a_run(tmp_path):
    run = divekit.train("softmax-regression", epochs=1, limit=500, out=tmp_path / "run", progress=False)
    assert 0.1 < run.test["test_accuracy"] <= 1 and len(run.history) == 1
    assert not run.model.training and (run.run_dir / "best.pt").is_file()
    loaded = divekit.load(run.run_dir)
    assert loaded.name == "softmax-regression" and loaded.checkpoint["epoch"] == 1
    with pytest.raises(DivekitError, match="already holds run"):
        divekit.train("softmax-regression", epochs=1, limit=500, out=tmp_path / "run", progress=False)


def test_run_experiment_returns_its_result(tmp_path):
    result = divekit.run_experiment("polynomial-fit", out=tmp_path / "poly", progress=False)
    assert result["name"] == "polynomial-fit" and result["mode"] == "quick" and result["metrics"]
