"""The command line: user mistakes give one clear line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import needs_fashion_mnist

from divekit.train.checkpoint import save_checkpoint


def divekit(*args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "divekit", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def assert_user_error(r: subprocess.CompletedProcess, code: int, *phrases: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    for phrase in phrases:
        assert phrase in r.stderr, r.stderr


def test_unknown_model_suggests_close_names():
    assert_user_error(divekit("train", "lenett"), 2, "unknown model 'lenett'", "did you mean lenet")
    assert_user_error(divekit("summary", "mpl"), 2, "did you mean mlp")


def test_unknown_experiment_and_bad_flag_values():
    assert_user_error(divekit("run", "no-such-experiment"), 2, "unknown experiment")
    assert_user_error(divekit("train", "mlp", "--epochs", "0"), 2, "--epochs", "at least 1")
    assert_user_error(divekit("train", "mlp", "--lr", "fast"), 2, "--lr")
    assert_user_error(divekit("train", "mlp", "--option", "depth=3"), 2, "has no option 'depth'")
    assert_user_error(divekit("train", "mlp", "--option", "dropout=high"), 2, "option 'dropout' expects")


def test_experiment_options_are_checked_before_any_work():
    assert_user_error(divekit("run", "polynomial-fit", "-o", "degree=3"), 2, "has no option degree",
                      "accepts: none")
    assert_user_error(divekit("run", "attention", "-o", "transformer"), 2, "KEY=VALUE")
    assert_user_error(divekit("run", "attention", "-o", "transformer=run/best.pt"), 2, "add --full")


def test_missing_data_explains_divekit_data(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"DIVEKIT_DATA": str(empty), "XDG_CACHE_HOME": str(tmp_path / "cache"), "DIVEKIT_OFFLINE": "1"}
    r = divekit("train", "mlp", "--epochs", "1", "--no-progress", env=env)
    if r.returncode == 0:
        pytest.skip("Fashion-MNIST is installed in a system location")
    assert_user_error(r, 3, "DIVEKIT_DATA", "not found")


def test_unreadable_or_foreign_checkpoints_are_refused(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_text("hello")
    assert_user_error(divekit("evaluate", "--checkpoint", str(junk)), 4, "cannot read checkpoint")
    assert_user_error(divekit("evaluate", "--checkpoint", str(tmp_path / "none.pt")), 4, "does not exist")
    other = save_checkpoint(tmp_path / "lenet.pt", {"model": "lenet", "model_config": {}})
    assert_user_error(divekit("train", "mlp", "--resume", str(other)), 4, "checkpoint of model 'lenet'")


def test_report_needs_results(tmp_path):
    assert_user_error(divekit("report", str(tmp_path)), 2, "no experiment results.json")


def test_list_and_summary():
    r = divekit("list")
    assert r.returncode == 0 and "lenet" in r.stdout and "fashion-mnist-baselines" in r.stdout
    r = divekit("summary", "lenet")
    assert r.returncode == 0
    assert "(1, 16, 5, 5)" in r.stdout and "total parameters 61,706" in r.stdout


@needs_fashion_mnist
def test_train_evaluate_and_resume_round_trip(tmp_path):
    out = tmp_path / "run"
    r = divekit("train", "softmax-regression", "--epochs", "1", "--limit", "2000", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "test_accuracy" in r.stdout and (out / "results.json").is_file()
    r = divekit("train", "softmax-regression", "--resume", str(out / "checkpoint.pt"), "--epochs", "2",
                "--no-progress")
    assert r.returncode == 0, r.stderr
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and len(ckpt["history"]) == 2
    r = divekit("evaluate", "--checkpoint", str(out / "best.pt"), "--split", "val")
    assert r.returncode == 0 and "accuracy" in r.stdout
    assert_user_error(divekit("evaluate", "--checkpoint", str(out / "best.pt"), "-o", "test_shift=true"),
                      2, "has no option 'test_shift'")
    assert_user_error(divekit("train", "softmax-regression", "--resume", str(out / "checkpoint.pt"), "--lr", "1"),
                      2, "keeps its recipe")


@needs_fashion_mnist
def test_nan_loss_is_a_clear_error():
    r = divekit("train", "mlp", "--lr", "1e12", "--epochs", "2", "--limit", "1000", "--no-progress")
    assert_user_error(r, 5, "loss became nan", "--grad-clip")


def test_data_verify_reports_every_file():
    r = divekit("data", "verify")
    if r.returncode == 0:
        assert r.stdout.count("ok") == 6
    else:
        assert_user_error(r, 3, "missing, unreadable or corrupt")


@needs_fashion_mnist
def test_ctrl_c_saves_a_checkpoint_that_resumes(tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    args = [sys.executable, "-m", "divekit", "train", "mlp", "--epochs", "500", "--limit", "3000", "--no-progress",
            "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    metrics = out / "metrics.jsonl"
    while time.time() < deadline and proc.poll() is None and not (metrics.exists() and metrics.read_text()):
        time.sleep(0.1)  # until the first epoch is logged
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at epoch" in err and "--resume" in err and "Traceback" not in err
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] >= 1
    r = divekit("train", "mlp", "--resume", str(out / "checkpoint.pt"), "--epochs", str(ckpt["epoch"] + 1),
                "--no-progress")
    assert r.returncode == 0, r.stderr
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == ckpt["epoch"] + 1


def test_a_second_tour_moves_the_first_aside_and_never_into_a_live_run(tmp_path, capsys):
    from divekit.cli import main
    from divekit.train.rundir import RunDir

    out = tmp_path / "tour"
    assert main(["tour", "--only", "polynomial-fit", "--out", str(out)]) == 0
    first = (out / "polynomial-fit" / "results.json").read_text()
    (out / "polynomial-fit" / "model").mkdir()  # as a training experiment leaves a run directory
    capsys.readouterr()
    assert main(["tour", "--only", "polynomial-fit", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("tour.previous-")]
    assert len(moved) == 1 and f"was moved to {moved[0]}" in printed
    assert (moved[0] / "polynomial-fit" / "results.json").read_text() == first  # kept whole
    assert (out / "report.html").is_file() and not (out / "polynomial-fit" / "model").exists()

    with RunDir.create(out / "polynomial-fit" / "busy", model="mlp"):  # a run still going
        assert main(["tour", "--only", "polynomial-fit", "--out", str(out)]) != 0
    assert "holds a run in progress" in capsys.readouterr().err
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("tour.previous-")]) == 1

    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    assert main(["tour", "--only", "polynomial-fit", "--out", str(other)]) != 0
    assert "holds no earlier tour" in capsys.readouterr().err and (other / "todo.txt").read_text() == "mine"
