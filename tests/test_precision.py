"""``--precision auto``: the rule, the probe that leaves the run untouched, the cache, the record."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from divekit.cpu import native_bf16
from divekit.train import precision
from divekit.train.config import TrainConfig
from divekit.train.trainer import Trainer

from conftest import needs_fashion_mnist
from test_trainer import ToyTask, make_model

CPU = torch.device("cpu")
NATIVE = {"avx512_bf16": True}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Each test here starts from an empty cache of its own."""
    monkeypatch.setenv("DIVEKIT_PRECISION_CACHE", str(tmp_path / "precision.json"))


def _loss_of(x: torch.Tensor, y: torch.Tensor):
    return lambda m: F.cross_entropy(m(x).float(), y)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)


@pytest.mark.parametrize("fp32_s, bf16_s, chosen", [(1.0, 0.5, "bf16"), (1.0, 1.0 / 1.16, "bf16"),
                                                     (1.0, 1.0 / 1.1, "fp32"), (1.0, 2.0, "fp32")])
def test_bf16_only_when_it_is_worth_the_threshold(fp32_s, bf16_s, chosen):
    choice = precision.decide(fp32_s, bf16_s)
    assert choice.precision == chosen
    assert (choice.fp32_step_s, choice.bf16_step_s) == (fp32_s, bf16_s)
    assert f"{fp32_s / bf16_s:.2f}x" in choice.reason


@pytest.mark.parametrize("fp32_s, bf16_s", [(0.0003, 0.0001), (0.0019, 0.0005)])
def test_a_step_too_short_to_time_stays_fp32_whatever_the_ratio(fp32_s, bf16_s):
    choice = precision.decide(fp32_s, bf16_s)
    assert choice.precision == "fp32" and "too short" in choice.reason
    assert (choice.fp32_step_s, choice.bf16_step_s) == (fp32_s, bf16_s)


def test_native_bf16_needs_avx512_bf16_or_amx():
    assert native_bf16({"avx512_bf16": True}) and native_bf16({"amx_bf16": True, "avx512_bf16": False})
    assert not native_bf16({"avx2": True, "avx512f": True, "avx512_bf16": False, "amx_bf16": False})


def test_a_cpu_without_native_bf16_gets_fp32_without_measuring():
    def never(_model):
        raise AssertionError("nothing is measured on a CPU that would emulate bf16")

    choice = precision.choose(make_model(), never, CPU, flags={"avx2": True})
    assert choice.precision == "fp32" and "neither AVX512-BF16 nor AMX" in choice.reason
    assert choice.fp32_step_s is None


def test_measuring_leaves_the_model_and_the_random_stream_as_they_were():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    expected_next = torch.rand(4)
    torch.manual_seed(123)
    fp32_s, bf16_s = precision.measure(model, _loss_of(*_data()), CPU)
    assert fp32_s > 0 and bf16_s > 0
    assert torch.equal(torch.rand(4), expected_next)  # dropout in the probe drew from a restored stream
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # BN's running statistics included
    assert all(p.grad is None for p in model.parameters())


def test_the_measured_choice_is_cached_per_key(monkeypatch):
    calls = []

    def fake(model, loss_of, device):
        calls.append(1)
        return 1.0, 0.5

    monkeypatch.setattr(precision, "measure", fake)
    key = precision.cache_key("toy", {"width": 16}, ((16, 8),))
    first = precision.choose(make_model(), _loss_of(*_data()), CPU, key=key, flags=NATIVE)
    second = precision.choose(make_model(), _loss_of(*_data()), CPU, key=key, flags=NATIVE)
    assert len(calls) == 1 and first.precision == second.precision == "bf16"
    assert not first.cached and second.cached and second.reason == first.reason
    other = precision.cache_key("toy", {"width": 32}, ((16, 8),))
    assert other != key
    precision.choose(make_model(), _loss_of(*_data()), CPU, key=other, flags=NATIVE)
    assert len(calls) == 2


def test_the_cache_file_can_be_named(tmp_path, monkeypatch):
    monkeypatch.setenv("DIVEKIT_PRECISION_CACHE", str(tmp_path / "elsewhere.json"))
    assert precision._cache_path() == tmp_path / "elsewhere.json"
    monkeypatch.delenv("DIVEKIT_PRECISION_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert precision._cache_path() == tmp_path / "xdg" / "divekit" / "precision.json"


def test_a_damaged_cache_is_measured_again(monkeypatch):
    monkeypatch.setattr(precision, "measure", lambda *a: (1.0, 2.0))
    path = precision._cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    choice = precision.choose(make_model(), _loss_of(*_data()), CPU, key="k", flags=NATIVE)
    assert choice.precision == "fp32" and not choice.cached
    assert json.loads(path.read_text())["k"]["precision"] == "fp32"


@pytest.mark.parametrize("measured, chosen", [((1.0, 0.5), "bf16"), ((1.0, 1.5), "fp32")])
def test_the_trainer_resolves_auto_once_and_checkpoints_the_choice(tmp_path, monkeypatch, measured, chosen):
    monkeypatch.setattr(precision, "native_bf16", lambda flags=None: True)
    monkeypatch.setattr(precision, "measure", lambda *a: measured)
    config = TrainConfig(epochs=1, batch_size=24, lr=0.1, precision="auto")
    trainer = Trainer(make_model(), ToyTask(), config, model_name="toy", model_config={}, run_dir=tmp_path,
                      progress=False, log=lambda *a: None)
    trainer.fit()
    assert config.precision == chosen and trainer.precision_choice.precision == chosen
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["train_config"]["precision"] == chosen  # a resumed run keeps what was chosen


def test_auto_trains_like_the_precision_it_chose(tmp_path, monkeypatch):
    """The probe draws no random numbers the run would see: auto -> fp32 equals an fp32 run."""
    monkeypatch.setattr(precision, "native_bf16", lambda flags=None: True)
    monkeypatch.setattr(precision, "decide", lambda *a: precision.PrecisionChoice("fp32", "test"))
    results = []
    for name in ("fp32", "auto"):
        config = TrainConfig(epochs=2, batch_size=24, lr=0.1, precision=name)
        trainer = Trainer(make_model(), ToyTask(), config, model_name="toy", model_config={},
                          run_dir=tmp_path / name, progress=False, log=lambda *a: None)
        results.append(trainer.fit().history)
    assert [h["train_loss"] for h in results[0]] == [h["train_loss"] for h in results[1]]


def test_precision_is_validated():
    with pytest.raises(Exception, match="--precision must be one of fp32, bf16, auto"):
        TrainConfig(precision="fp16")


@needs_fashion_mnist
def test_a_recipe_run_records_its_choice_and_resumes_with_auto(tmp_path):
    from divekit.pipeline import train_model

    out = tmp_path / "run"
    first = train_model("softmax-regression", limit=512, train_overrides={"epochs": 1}, out=out,
                        progress=False, log=lambda *a: None)
    chosen = first["precision_choice"]
    assert chosen["precision"] in ("fp32", "bf16") and chosen["reason"]
    assert first["train_config"]["precision"] == chosen["precision"]
    # Asking for auto again on resume means "what this run chose": accepted, and kept.
    second = train_model("softmax-regression", train_overrides={"epochs": 2, "precision": "auto"}, resume=out,
                         progress=False, log=lambda *a: None)
    assert second["train_config"]["precision"] == chosen["precision"] and len(second["history"]) == 2


class CarryingToyTask(ToyTask):
    """A task that carries state from step to step, as a language model carries its hidden state."""

    def __init__(self) -> None:
        super().__init__()
        self.carried: torch.Tensor | None = None
        self.first_steps_saw: list[bool] = []
        self.fresh = True

    def start_epoch(self, model, epoch):
        self.carried, self.fresh = None, True

    def step(self, model, batch):
        if self.fresh:
            self.first_steps_saw.append(self.carried is not None)
            self.fresh = False
        out = super().step(model, batch)
        self.carried = out.loss.detach()  # the dtype autocast gave it: bf16 state must not leak into fp32
        return out


def test_the_probe_never_carries_a_tasks_state_into_training(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda flags=None: True)
    task = CarryingToyTask()
    config = TrainConfig(epochs=1, batch_size=24, lr=0.1, precision="auto")
    Trainer(make_model(), task, config, model_name="toy", model_config={}, progress=False,
            log=lambda *a: None).fit()
    assert task.first_steps_saw and not any(task.first_steps_saw)  # every probe step and the run start afresh
    assert len(task.first_steps_saw) == 1 + 2 * (1 + precision.PROBE_ROUNDS)
