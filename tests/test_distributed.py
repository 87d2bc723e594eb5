"""`divekit train` under torchrun with two processes equals one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import needs_fashion_mnist

ARGS = ["train", "mlp", "--option", "hidden=64", "--epochs", "2", "--limit", "1024", "--batch-size", "64",
        "--lr", "0.1", "--momentum", "0.9", "--threads", "1", "--no-progress", "--device", "cpu"]


def run(cmd: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
@needs_fashion_mnist
def test_two_process_ddp_equals_single_process(tmp_path):
    run([sys.executable, "-m", "divekit", *ARGS, "--out", str(tmp_path / "single")])
    run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
         "-m", "divekit", *ARGS, "--out", str(tmp_path / "ddp")])
    single = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=True)
    ddp = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    assert ddp["epoch"] == single["epoch"] == 2
    for name, a in single["model_state"].items():
        # Same data, same global batches: only the order of floating-point reductions differs.
        torch.testing.assert_close(ddp["model_state"][name], a, rtol=1e-4, atol=1e-5, msg=name)
    for a, b in zip(single["history"], ddp["history"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["val_accuracy"] == pytest.approx(a["val_accuracy"], abs=1e-3)
    assert not any(p.name.startswith(".") for p in (tmp_path / "ddp").iterdir())  # no stray temp files
