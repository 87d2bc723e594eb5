"""Run directories under misuse: a run owns its directory, a used one is never overwritten, resume
continues or forks by one rule, results describe the model they scored, altered checkpoints are refused.

Each case asserts the exit code, one line on stderr without a traceback, and that no file that
existed before changed (digests of the whole directory before and after).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import needs_fashion_mnist
from divekit.cli import main
from divekit.errors import CheckpointError
from divekit.train.checkpoint import load_checkpoint
from divekit.train.rundir import RunDir

pytestmark = needs_fashion_mnist

QUICK = ["--limit", "600", "--batch-size", "100", "--no-progress", "--threads", "1"]


def train(*args: str) -> int:
    return main(["train", "mlp", *QUICK, *args])


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "run.lock"}


def one_error_line(capsys, *phrases: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


def metrics_epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_locked_directory_is_refused_naming_its_owner(tmp_path, capsys):
    with RunDir.create(tmp_path / "run", model="mlp"):
        before = digests(tmp_path / "run")
        assert train("--epochs", "1", "--out", str(tmp_path / "run")) == 6
        one_error_line(capsys, "in use by another divekit run", "pid")
        assert digests(tmp_path / "run") == before


def test_a_used_directory_is_never_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    assert train("--epochs", "1", "--out", str(run)) == 0
    capsys.readouterr()
    before = digests(run)
    assert train("--epochs", "1", "--out", str(run)) == 6
    one_error_line(capsys, "already holds run", "--resume")
    assert main(["train", "softmax-regression", *QUICK, "--epochs", "1", "--out", str(run)]) == 6
    one_error_line(capsys, "already holds run")
    assert digests(run) == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    assert train("--epochs", "1", "--out", str(other)) == 6
    one_error_line(capsys, "not empty", "holds no divekit run")
    assert (other / "mine.txt").read_text() == "keep me"


def test_rerunning_the_command_with_resume_continues_and_only_changed_values_are_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert train("--seed", "3", "--epochs", "1", "--out", str(run)) == 0
    assert train("--seed", "3", "--epochs", "2", "--out", str(run), "--resume", str(run)) == 0
    assert metrics_epochs(run) == [1, 2]
    capsys.readouterr()
    before = digests(run)
    assert train("--seed", "4", "--epochs", "3", "--resume", str(run)) == 2
    one_error_line(capsys, "cannot change seed")
    assert train("-o", "dropout=0.4", "--epochs", "3", "--resume", str(run)) == 2
    one_error_line(capsys, "cannot change option dropout")
    assert digests(run) == before


def test_resume_from_best_continues_nothing_and_forks_into_a_new_directory(tmp_path, capsys):
    run, fork = tmp_path / "run", tmp_path / "fork"
    assert train("--epochs", "3", "--out", str(run)) == 0
    capsys.readouterr()
    before = digests(run)
    assert train("--epochs", "4", "--resume", str(run / "best.pt")) == 6
    one_error_line(capsys, "not the newest checkpoint", "--out")
    best_epoch = load_checkpoint(run / "best.pt")["epoch"]
    assert train("--epochs", str(best_epoch + 1), "--resume", str(run / "best.pt"), "--out", str(fork),
                 "--lr", "0.05") == 0
    assert digests(run) == before  # the parent run is untouched
    record = json.loads((fork / "run.json").read_text())
    parent = json.loads((run / "run.json").read_text())
    assert record["forked_from"]["run_id"] == parent["run_id"] and record["run_id"] != parent["run_id"]
    assert metrics_epochs(fork) == list(range(1, best_epoch + 2))
    results = json.loads((fork / "results.json").read_text())
    assert results["selected_epoch"] == best_epoch + 1  # a fork selects among its own epochs
    # Forking into a used directory is refused like any other new run.
    assert train("--epochs", "5", "--resume", str(run / "checkpoint.pt"), "--out", str(fork)) == 6
    one_error_line(capsys, "already holds run")


def test_results_describe_the_model_they_scored_when_best_is_missing(tmp_path):
    run = tmp_path / "run"
    assert train("--epochs", "2", "--out", str(run)) == 0
    (run / "best.pt").unlink()
    assert train("--epochs", "3", "--resume", str(run / "checkpoint.pt")) == 0
    results = json.loads((run / "results.json").read_text())
    if not (run / "best.pt").exists():  # epoch 3 did not improve on the lost best: the final model is scored
        assert results["selection"] == "final" and results["test"] == results["final_epoch"]
    assert results["selected_epoch"] == 3 == results["last_epoch"]


def _overwrite_tensor_bytes(path: Path) -> None:
    """Change bytes of one stored tensor in place, leaving the zip archive readable."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(f.read(2), "little") for _ in range(2))
        f.seek(info.header_offset + 30 + name_len + extra_len + info.file_size // 2)
        f.write(b"\x00\x01\x02\x03\x04\x05\x06\x07")


def test_a_checkpoint_with_altered_tensor_bytes_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert train("--epochs", "1", "--out", str(run)) == 0
    capsys.readouterr()
    _overwrite_tensor_bytes(run / "best.pt")
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(run / "best.pt")
    assert main(["evaluate", "--checkpoint", str(run / "best.pt")]) == 4
    one_error_line(capsys, "damaged")


def test_a_killed_runs_leftovers_are_cleaned_and_metrics_cut_back_on_resume(tmp_path):
    run = tmp_path / "run"
    assert train("--epochs", "2", "--out", str(run)) == 0
    # What kill -9 can leave: a temporary checkpoint never renamed, and a line past the checkpoint.
    (run / ".checkpoint.pt.x1y2.tmp").write_bytes(b"\0" * 1000)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([*lines, lines[-1], lines[-1]]) + "\n")
    assert train("--epochs", "3", "--resume", str(run)) == 0
    assert not list(run.glob(".*.tmp"))
    assert metrics_epochs(run) == [1, 2, 3]
    run_id = json.loads((run / "run.json").read_text())["run_id"]
    assert {json.loads(line)["run_id"] for line in (run / "metrics.jsonl").read_text().splitlines()} == {run_id}
    assert load_checkpoint(run / "checkpoint.pt")["run_id"] == run_id


def test_a_failed_new_run_leaves_no_directory(tmp_path, capsys):
    run = tmp_path / "run"
    assert train("--lr", "1e12", "--epochs", "2", "--out", str(run)) == 5
    line = one_error_line(capsys, "loss became nan", "start a new run")
    assert "--grad-clip" in line
    assert not run.exists()


@pytest.mark.parametrize("where", ["file", "under-file", "unwritable"])
def test_out_that_cannot_be_a_run_directory(tmp_path, capsys, where):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    out = {"file": a_file, "under-file": a_file / "run", "unwritable": Path("/proc/divekit-run")}[where]
    assert train("--epochs", "1", "--out", str(out)) == 6
    one_error_line(capsys, "run directory")
    assert a_file.read_text() == "x"


def test_an_interrupted_checkpoint_of_another_run_is_refused(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert train("--epochs", "1", "--out", str(a)) == 0
    assert train("--epochs", "1", "--out", str(b)) == 0
    capsys.readouterr()
    (b / "checkpoint.pt").write_bytes((a / "checkpoint.pt").read_bytes())  # a copied file, not b's own
    before = digests(b)
    assert train("--epochs", "2", "--resume", str(b)) == 6
    one_error_line(capsys, "belongs to run")
    assert digests(b) == before


def test_state_is_plain_data_with_its_run_id(tmp_path):
    run = tmp_path / "run"
    assert train("--epochs", "1", "--out", str(run)) == 0
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["run_id"] == json.loads((run / "run.json").read_text())["run_id"]
    assert len(ckpt["digest"]) == 64


def test_commands_take_a_run_directory_for_its_best_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert train("--epochs", "1", "--out", str(run)) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run), "--split", "val"]) == 0
    assert "best.pt" in capsys.readouterr().out
    assert main(["evaluate", "--checkpoint", str(tmp_path)]) == 4
    one_error_line(capsys, "holding no checkpoint")


def test_payload_digest_is_stable_across_versions():
    """The digest of a fixed payload, pinned when version 2 was introduced: a faster hash must write
    the same bytes, or every checkpoint saved before it would be refused as altered."""
    from divekit.train.checkpoint import payload_digest

    payload = {"model": "x", "vocab": {"idx_to_token": ["<unk>", "é", "a b"], "token_freqs": [["é", 3], ["a", 2]],
                                       "min_freq": 1},
               "vals": [1, 2.5, True, None, "s", (1, "t"), b"by", [[1, 2], [3]]],
               "t": torch.arange(6, dtype=torch.float32).reshape(2, 3), "e": torch.zeros(0)}
    assert payload_digest(payload) == "5ab692c9630fdbadbaf1d0b73f67e8e6dcbb4f7effab40a319460cfe172b5023"
