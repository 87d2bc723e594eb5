"""Ctrl-C and kill -9 at arbitrary moments of a real run, then resume: the uninterrupted result, bit for bit.

The run drops out (``-o dropout=0.3``), so a checkpoint whose random state belonged to another step
than its weights would show. The interrupt times are fixed fractions of the reference run's own
training time, so they land mid-epoch on a fast or a slow machine; the count of interrupts is
bounded. Every trial also checks what the run directory holds afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import needs_fashion_mnist

pytestmark = [needs_fashion_mnist, pytest.mark.slow]

COMMAND = ["train", "mlp", "-o", "dropout=0.3", "--seed", "3", "--limit", "8000", "--batch-size", "10",
           "--epochs", "3", "--threads", "1", "--no-progress"]


def start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "divekit", *COMMAND, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "divekit", *COMMAND, "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=300)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reference") / "run"
    began = time.perf_counter()
    r = finish(out)
    assert r.returncode == 0, r.stderr
    results = json.loads((out / "results.json").read_text())
    return {"weights": torch.load(out / "checkpoint.pt", weights_only=True)["model_state"],
            "test": results["test"], "epoch_seconds": results["train_seconds"] / 3,
            "wall_seconds": time.perf_counter() - began,
            "precision_cache": os.environ.get("DIVEKIT_PRECISION_CACHE")}


def test_the_reference_run_shares_the_tests_precision_cache(reference):
    """Set up before the per-test fixtures, the reference must still see the session's ``auto`` cache:
    a choice left in the home directory's cache would make it train in another precision than the runs
    it is compared with."""
    assert reference["precision_cache"] == os.environ["DIVEKIT_PRECISION_CACHE"]


def assert_same_as_reference(out: Path, reference: dict) -> None:
    weights = torch.load(out / "checkpoint.pt", weights_only=True)["model_state"]
    for name, value in reference["weights"].items():
        assert torch.equal(weights[name], value), name
    assert json.loads((out / "results.json").read_text())["test"] == reference["test"]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3]  # no duplicate or missing epoch
    assert not list(out.glob(".*.tmp")) and not list(out.glob(".*.json.*"))


def wait_for_epochs(out: Path, proc: subprocess.Popen, epochs: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    metrics = out / "metrics.jsonl"
    while proc.poll() is None and time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= epochs:
            return
        time.sleep(0.01)


@pytest.mark.parametrize("epochs_done, into_next", [(1, 0.2), (1, 0.6), (2, 0.4)])
def test_ctrl_c_mid_run_then_resume_equals_the_uninterrupted_run(tmp_path, reference, epochs_done, into_next):
    """SIGINT a fraction of an epoch after ``epochs_done`` epochs are logged: mid-epoch, in the backward
    pass or anywhere else a step may be."""
    out = tmp_path / "run"
    proc = start(out)
    wait_for_epochs(out, proc, epochs_done)
    time.sleep(into_next * reference["epoch_seconds"])
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 130, err
    assert "interrupted at epoch" in err and "--resume" in err and "Traceback" not in err
    r = finish(out, "--resume", str(out))  # the very command, with --resume added
    assert r.returncode == 0, r.stderr
    assert_same_as_reference(out, reference)


def test_kill_9_at_random_moments_then_resume_equals_the_uninterrupted_run(tmp_path, reference):
    """Six kills at spread-out moments (start-up and checkpointing included); after each, the same
    command again, with --resume once a checkpoint exists (before that there is nothing to resume)."""
    out = tmp_path / "run"
    kills = 0
    for fraction in (0.2, 0.35, 0.4, 0.45, 0.5, 0.55):  # each resume has less left to do
        resuming = (out / "checkpoint.pt").exists()
        proc = start(out, *(["--resume", str(out)] if resuming else []))
        time.sleep(fraction * reference["wall_seconds"])
        if proc.poll() is not None:
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
    r = finish(out, *(["--resume", str(out)] if (out / "checkpoint.pt").exists() else []))
    assert r.returncode == 0, r.stderr
    assert kills >= 3, f"only {kills} kills landed before the run finished"
    assert_same_as_reference(out, reference)


def test_two_runs_into_one_directory_the_second_is_refused(tmp_path, reference):
    out = tmp_path / "run"
    first = start(out)
    wait_for(out / "run.json", first)
    assert first.poll() is None, "the first run ended before it could be paused"
    # Pause the first run so it still holds the directory however fast it trains; a stopped
    # process keeps its lock, which is taken before run.json is written.
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = finish(out)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert second.returncode == 6, second.stderr
    assert "in use by another divekit run" in second.stderr and "Traceback" not in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    first.communicate(timeout=300)
    assert first.returncode == 0
    assert_same_as_reference(out, reference)
