"""What the command line tells a new user: model options with types and defaults, wrapped lists, hints."""

from __future__ import annotations

import pytest

from divekit.cli import main
from divekit.registry import get_model, option_docs


def test_list_model_shows_every_option_with_type_default_and_meaning(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["list", "rnn-lm"]) == 0
    out = capsys.readouterr().out
    for doc in option_docs(get_model("rnn-lm")):
        assert f"{doc.name}={doc.default!r}" in out
    assert "hidden units per layer" in out and "recipe" in out and "batch_size=32" in out


def test_train_model_help_adds_the_models_options(capsys):
    assert main(["train", "lenet", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--grad-clip" in out and "modern=False" in out and "ReLU, max pooling" in out


def test_train_unknown_model_help_is_one_error_line(capsys):
    assert main(["train", "lenett", "--help"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean lenet" in err


@pytest.mark.parametrize("columns", [60, 100, 160])
def test_list_wraps_to_the_terminal_width(capsys, monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= max(columns, 24 + 30)
    assert any("Modern recurrent networks" in line for line in lines)  # chapter names in full


def test_every_train_flag_has_help():
    from divekit.cli import build_parser

    train = build_parser().commands["train"]
    missing = [a.dest for a in train._actions if not a.help]
    assert missing == []


def test_every_model_option_has_a_comment():
    from divekit.registry import MODELS, load_all

    load_all()
    undocumented = [(m, d.name) for m in MODELS for d in option_docs(MODELS[m])
                    if not d.help and d.name != "num_classes"]  # the one name that explains itself
    assert undocumented == []
