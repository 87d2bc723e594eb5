"""Bad input of every kind: one line on stderr, the exit code of its kind, no traceback, nothing changed.

The exit codes, one per kind of failure (also listed in the README): 2 a usage mistake or a bad
value, 3 missing, unreadable or corrupt data, 4 a checkpoint that cannot be used, 5 a loss that
turned NaN, 6 a run directory that cannot be used, 130 interrupted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import needs_fashion_mnist
from divekit.cli import main
from divekit.data import store
from divekit.errors import DataError


def one_line(capsys, code: int, got: int, *phrases: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert got == code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("option, phrase", [
    ("hidden=0", "positive"), ("hidden=-5", "positive"), ("kind=foo", "kind must be"),
    ("dropout=1.5", "dropout"), ("dropout=nan", "expects a value"),
])
def test_invalid_model_options_are_one_line(capsys, option, phrase):
    one_line(capsys, 2, main(["train", "rnn-lm", "-o", option, "--epochs", "1"]), phrase)


@pytest.mark.parametrize("flags, phrase", [
    (["--lr", "inf"], "--lr"), (["--lr", "nan"], "--lr"), (["--grad-clip", "inf"], "--grad-clip"),
    (["--seed", "-1"], "--seed"), (["--epochs", "two"], "--epochs"), (["--optimizer", "lbfgs"], "--optimizer"),
])
def test_bad_flag_values_are_one_line_pointing_at_help(capsys, flags, phrase):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "mlp", *flags])
        raise SystemExit(0)  # a value that reaches the recipe is refused by TrainConfig instead
    line = one_line(capsys, 2, exit_info.value.code, phrase)
    assert "see `divekit train --help`" in line


def test_the_recipe_refuses_what_the_command_line_would_have_refused():
    from divekit.errors import DivekitError
    from divekit.train.config import TrainConfig

    for bad in (dict(seed=-3), dict(lr=float("inf")), dict(weight_decay=float("nan")), dict(grad_clip=float("inf"))):
        with pytest.raises(DivekitError):
            TrainConfig(**bad)


def test_an_unknown_command_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["trian"])
    one_line(capsys, 2, exit_info.value.code, "invalid choice")


@pytest.mark.parametrize("value, offline", [("", False), ("0", False), ("false", False), ("no", False),
                                            ("1", True), ("true", True), ("YES", True), ("on", True)])
def test_divekit_offline_means_what_it_says(monkeypatch, value, offline):
    monkeypatch.setenv("DIVEKIT_OFFLINE", value)
    assert store.offline() is offline


def test_divekit_offline_with_a_nonsense_value_is_refused(monkeypatch):
    monkeypatch.setenv("DIVEKIT_OFFLINE", "maybe")
    with pytest.raises(DataError, match="DIVEKIT_OFFLINE must be"):
        store.offline()


def test_an_unreadable_data_directory_is_a_data_error(monkeypatch, capsys, tmp_path):
    """Root reads any file, so the permission failure is staged where the store meets it."""
    monkeypatch.setenv("DIVEKIT_DATA", str(tmp_path))
    real_is_file = Path.is_file

    def denied(self):
        if str(self).startswith(str(tmp_path)):
            raise PermissionError(13, "Permission denied", str(self))
        return real_is_file(self)

    monkeypatch.setattr(Path, "is_file", denied)
    one_line(capsys, 3, main(["train", "mlp", "--epochs", "1"]), "permission denied")


def test_data_verify_says_unreadable_and_exits_like_train(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("DIVEKIT_DATA", str(tmp_path))
    (tmp_path / "timemachine.txt").write_text("x")
    real_read = Path.read_bytes

    def denied(self):
        if self.name == "timemachine.txt":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    code = main(["data", "verify", "timemachine"])
    out, err = capsys.readouterr()
    assert code == 3 and "unreadable" in out and "Traceback" not in err
    assert code == DataError.exit_code


@needs_fashion_mnist
def test_report_of_an_empty_directory_is_one_line(capsys, tmp_path):
    one_line(capsys, 2, main(["report", str(tmp_path)]), "no experiment results.json")
