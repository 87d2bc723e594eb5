"""The label-budget experiment end to end on synthetic sentences: both starts per budget and seed,
the pretrained runs starting from the encoder trained here, a table row per budget and its plot."""

from __future__ import annotations

import json

import pytest

import divekit.tasks.masked_lm as masked_lm
import divekit.tasks.question as question
from divekit.errors import DivekitError
from divekit.experiments import bert_labels
from divekit.experiments.base import run_experiment
from test_bert_question import synthetic

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny_text(monkeypatch):
    splits = {"train": synthetic(300, 0), "val": synthetic(60, 1), "test": synthetic(80, 2)}
    monkeypatch.setattr(question, "real_sentences", lambda: splits)
    monkeypatch.setattr(masked_lm, "real_pieces", lambda: splits)
    monkeypatch.setattr(bert_labels, "ENCODER", {"vocab_size": 26, "d_model": 16, "num_heads": 2, "ffn_hidden": 32,
                                                 "layers": 1, "max_len": 16, "num_steps": 8})
    return splits


def test_every_budget_is_fine_tuned_from_the_encoder_and_from_scratch(tmp_path, tiny_text):
    out = tmp_path / "bert-labels"
    result = run_experiment("bert-labels", out, quick=True, progress=False, options={"budgets": "40,20"})
    table = result["tables"][0]
    assert [row[0] for row in table["rows"]] == [20, 40]
    for budget in (20, 40):
        pre = json.loads((out / f"pretrained-{budget}-seed0" / "results.json").read_text())
        scratch = json.loads((out / f"scratch-{budget}-seed0" / "results.json").read_text())
        assert pre["model_config"]["pretrained"] == str(out / "bert" / "best.pt")
        assert scratch["model_config"]["pretrained"] == ""
        assert pre["limit"] == scratch["limit"] == budget
    row = dict(zip(table["columns"], table["rows"][0]))
    assert 0 <= row["pretrained acc."] <= 1 and row["gain (points)"] == pytest.approx(
        row["pretrained acc."] - row["scratch acc."])
    statements = sum(s[-1] != "?" for s in tiny_text["test"]) / len(tiny_text["test"])
    assert result["metrics"]["constant_test_accuracy"] == pytest.approx(statements)
    assert (out / "bert_labels.png").stat().st_size > 0
    probe, weights = result["tables"][1], result["tables"][2]
    assert [row[0] for row in probe["rows"]] == ["ELMo-style mix of all layers", "top layer only"]
    assert all(0 <= row[1] <= 1 for row in probe["rows"])
    assert [row[0] for row in weights["rows"]] == ["embedding", "block 1"]  # one block in the tiny encoder
    assert sum(row[1] for row in weights["rows"]) == pytest.approx(1.0)
    assert (out / "bert_layer_weights.png").stat().st_size > 0


def test_the_layer_features_average_each_sentence_over_its_real_tokens_only():
    import torch

    from divekit.models.bert import BERTConfig, BERTEncoder

    torch.manual_seed(0)
    encoder = BERTEncoder(BERTConfig(vocab_size=26, max_len=16, d_model=16, num_heads=2, layers=2, ffn_hidden=32,
                                     dropout=0.0, num_steps=8)).eval()
    tokens = torch.randint(6, 26, (3, 8))
    valid = torch.tensor([8, 5, 2])
    labels = torch.tensor([0, 1, 0])
    features, got = bert_labels.layer_features(encoder, (tokens, torch.zeros_like(tokens), valid, labels))
    assert features.shape == (3, 3, 1, 16) and torch.equal(got, labels)  # (L+1, N, 1, D)
    states = encoder.hidden_states(tokens, None, valid)
    assert torch.equal(states[-1], encoder(tokens, None, valid))
    for layer, state in enumerate(states):
        for i, n in enumerate(valid.tolist()):
            torch.testing.assert_close(features[layer, i, 0], state[i, :n].mean(0))
    padded = tokens.clone()
    padded[1, 5:] = 7  # other words after the valid length change nothing
    again, _ = bert_labels.layer_features(encoder, (padded, torch.zeros_like(tokens), valid, labels))
    torch.testing.assert_close(again, features)


@pytest.mark.parametrize("options, message", [
    ({"budgets": "100,lots"}, "whole numbers"),
    ({"budgets": "5"}, "at least 10"),
    ({"bert": "nowhere/best.pt"}, "no such checkpoint"),
])
def test_bad_options_are_refused_before_any_training(tmp_path, tiny_text, options, message):
    with pytest.raises(DivekitError, match=message):
        run_experiment("bert-labels", tmp_path / "x", quick=True, progress=False, options=options)
    assert not (tmp_path / "x" / "bert").exists()


def test_a_fine_tuned_checkpoint_loads_and_resumes_after_its_pretraining_file_is_gone(tmp_path, tiny_text):
    from divekit.pipeline import load_trained, train_model

    sizes = dict(bert_labels.ENCODER)
    quiet = {"progress": False, "log": lambda *a, **k: None}
    train_model("bert", options=sizes, train_overrides={"epochs": 1}, out=tmp_path / "bert", **quiet)
    encoder = tmp_path / "bert" / "best.pt"
    tuned = train_model("bert-question", options={**sizes, "pretrained": str(encoder)},
                        train_overrides={"epochs": 2}, limit=40, out=tmp_path / "tuned", **quiet)
    encoder.rename(tmp_path / "moved.pt")
    _, model, task, _ = load_trained(tmp_path / "tuned")
    assert task.evaluate(model, "test")["accuracy"] == pytest.approx(tuned["test"]["test_accuracy"])
    resumed = train_model("bert-question", train_overrides={"epochs": 3}, resume=tmp_path / "tuned", **quiet)
    assert resumed["last_epoch"] == 3 and resumed["model_config"]["pretrained"] == str(encoder)


def test_a_given_encoder_may_be_a_run_directory_and_must_be_a_bert(tmp_path, tiny_text):
    from divekit.errors import CheckpointError
    from divekit.pipeline import train_model

    quiet = {"progress": False, "log": lambda *a, **k: None}
    train_model("bert", options=dict(bert_labels.ENCODER), train_overrides={"epochs": 1}, out=tmp_path / "bert", **quiet)
    result = run_experiment("bert-labels", tmp_path / "x", quick=True, progress=False,
                            options={"bert": str(tmp_path / "bert"), "budgets": "20"})
    assert "the given encoder" in result["summary"] and not (tmp_path / "x" / "bert").exists()
    train_model("bert-question", options=dict(bert_labels.ENCODER), train_overrides={"epochs": 1}, limit=20,
                out=tmp_path / "clf", **quiet)
    with pytest.raises(CheckpointError, match="bert"):
        run_experiment("bert-labels", tmp_path / "y", quick=True, progress=False,
                       options={"bert": str(tmp_path / "clf"), "budgets": "20"})
