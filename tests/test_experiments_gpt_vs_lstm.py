"""The GPT-against-LSTM experiment on tiny models and a slice of The Time Machine, and its FLOP count
checked against torch's counter."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from divekit.errors import DivekitError
from divekit.experiments import gpt_vs_lstm
from divekit.experiments.base import run_experiment
from divekit.registry import get_model

from conftest import data_dir_with

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def short_eval(monkeypatch):
    monkeypatch.setattr(gpt_vs_lstm, "EVAL_CHARACTERS", 1500)

TINY_GPT = {"d_model": 16, "num_heads": 2, "layers": 2, "ffn_hidden": 32, "max_len": 32, "num_steps": 32,
            "context_keep": 16, "attn_dropout": 0.0}
TINY_LSTM = {"hidden": 16, "embedding": 8, "num_steps": 16}


def _step_flops(model: torch.nn.Module, tokens: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        logits, _ = model(tokens, None)
        F.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()
    return counter.get_total_flops()


def test_gpt_flops_per_token_equal_torchs_count_of_a_training_step():
    spec = get_model("gpt-lm")
    model = spec.build(spec.make_config(TINY_GPT))
    tokens = torch.randint(0, 28, (3, 32))
    assert gpt_vs_lstm.training_flops_per_token(model, 32) * tokens.numel() == _step_flops(model, tokens)


def test_lstm_flops_count_its_gate_and_output_matrices_only():
    spec = get_model("deep-lstm-lm")
    model = spec.build(spec.make_config(TINY_LSTM))
    hidden, embedding, vocab = 16, 8, 28
    gates = 4 * hidden * (embedding + hidden) + 4 * hidden * (hidden + hidden)  # two layers
    assert gpt_vs_lstm.training_flops_per_token(model, 16) == 6 * (gates + hidden * vocab)


@pytest.mark.skipif(data_dir_with("timemachine.txt") is None, reason="The Time Machine not found")
def test_both_models_are_trained_plotted_and_ensembled(tmp_path, monkeypatch):
    monkeypatch.setitem(gpt_vs_lstm.PLAN, "quick", {"gpt-lm": (TINY_GPT, 2, 3000),
                                                    "deep-lstm-lm": (TINY_LSTM, 2, 3000)})
    monkeypatch.setattr(gpt_vs_lstm, "EVAL_CHARACTERS", None)
    monkeypatch.setattr(gpt_vs_lstm, "QUICK_EVAL_CHARACTERS", 1200)
    out = tmp_path / "gpt-vs-lstm"
    result = run_experiment("gpt-vs-lstm", out, quick=True, progress=False)
    saved = json.loads((out / "results.json").read_text())
    assert (out / "val_perplexity_vs_seconds.png").stat().st_size > 0
    for name in ("gpt-lm", "deep-lstm-lm"):
        run = saved["runs"][name]
        assert len(run["curve"]["seconds"]) == len(run["curve"]["val_perplexity"]) == 2
        assert run["curve"]["seconds"][0] < run["curve"]["seconds"][1] == pytest.approx(run["train_seconds"], rel=1e-6)
        assert run["gflops_per_s"] > 0 and run["parameters"] > 0
        assert run["precision"] in ("fp32", "bf16")
        assert run["dynamic"]["lr"] == gpt_vs_lstm.DYNAMIC_LRS[name][1]  # quick: the middle step size, untried
        # The experiment's one-stream static score is a fresh evaluation of the selected checkpoint.
        # Four steps, all inside the recipe's warm-up: near the uniform 28, not far from it either way.
        assert 20 < run["dynamic"]["test_perplexity_one_stream"] < 32
    members = [saved["runs"][n]["dynamic"]["test_perplexity_one_stream"] for n in ("gpt-lm", "deep-lstm-lm")]
    # A mixture of probabilities is never worse than its worse member (log-sum-exp is convex).
    assert saved["ensemble"]["static_test_perplexity"] <= max(members) + 1e-9
    assert saved["ensemble"]["scored_characters"] == 1199  # quick mode reads the start of the block
    assert "first 1,200 test characters" in result["summary"]
    assert saved["ensemble"]["train_seconds"] == pytest.approx(
        sum(saved["runs"][n]["train_seconds"] for n in ("gpt-lm", "deep-lstm-lm")))
    assert result["metrics"]["uniform_test_perplexity"] == pytest.approx(28.0)  # the 28-character vocabulary
    assert result["metrics"]["trigram_test_perplexity"] < result["metrics"]["bigram_test_perplexity"]
    assert f"bigrams score {result['metrics']['bigram_test_perplexity']:.2f}" in result["summary"]
    assert result["metrics"]["gpt_minus_lstm_test_perplexity"] == pytest.approx(
        saved["runs"]["gpt-lm"]["test_perplexity"] - saved["runs"]["deep-lstm-lm"]["test_perplexity"])


@pytest.fixture
def tiny_full_plan(monkeypatch):
    """Full mode on tiny models and 1,500 training characters, two step sizes to try per model."""
    monkeypatch.setitem(gpt_vs_lstm.PLAN, "full", {"gpt-lm": (TINY_GPT, None, 1500),
                                                   "deep-lstm-lm": (TINY_LSTM, None, 1500)})
    monkeypatch.setattr(gpt_vs_lstm, "DYNAMIC_LRS", {"gpt-lm": (1e-4, 3e-3), "deep-lstm-lm": (1e-3, 3e-2)})


@pytest.mark.skipif(data_dir_with("timemachine.txt") is None, reason="The Time Machine not found")
def test_full_mode_sizes_the_epochs_from_a_probe_epoch_and_tries_each_step_size(tmp_path, tiny_full_plan):
    out = tmp_path / "full"
    run_experiment("gpt-vs-lstm", out, quick=False, progress=False, options={"seconds": "1"})
    saved = json.loads((out / "results.json").read_text())
    for name in ("gpt-lm", "deep-lstm-lm"):
        run = saved["runs"][name]
        probe = json.loads((out / f"{name}-probe" / "results.json").read_text())
        assert run["probe_epoch_seconds"] == probe["train_seconds"]
        assert run["epochs"] == max(2, round(1 / probe["train_seconds"]))
        tried = run["dynamic"]["val_perplexity_by_lr"]
        assert set(tried) == {f"{lr:g}" for lr in gpt_vs_lstm.DYNAMIC_LRS[name]}
        assert tried[f"{run['dynamic']['lr']:g}"] == min(tried.values())
    weight = saved["ensemble"]["gpt_weight"]
    assert 0 <= weight <= 1 and round(20 * weight) == pytest.approx(20 * weight)
    assert "weighted_dynamic_test_perplexity" in saved["ensemble"]
    with pytest.raises(DivekitError, match="seconds must be at least 1"):
        run_experiment("gpt-vs-lstm", tmp_path / "bad", quick=False, progress=False, options={"seconds": "0"})


def test_mixture_weights_give_the_gpt_its_share_and_split_the_rest_among_the_lstms():
    assert gpt_vs_lstm._weights(0.25, 4) == [0.25, 0.25, 0.25, 0.25]
    assert gpt_vs_lstm._weights(0.4, 2) == [0.4, 0.6]
    assert sum(gpt_vs_lstm._weights(0.35, 5)) == pytest.approx(1.0)


@pytest.mark.skipif(data_dir_with("timemachine.txt") is None, reason="The Time Machine not found")
def test_more_lstms_of_successive_seeds_join_the_ensemble_with_epochs_given_directly(tmp_path, tiny_full_plan):
    out = tmp_path / "three"
    result = run_experiment("gpt-vs-lstm", out, quick=False, progress=False, seed=5,
                            options={"lstms": "2", "gpt_epochs": "1", "lstm_epochs": "2"})
    saved = json.loads((out / "results.json").read_text())
    runs = saved["runs"]
    assert list(runs) == ["gpt-lm", "deep-lstm-lm", "deep-lstm-lm-2"]
    assert [runs[k]["seed"] for k in runs] == [5, 5, 6] and [runs[k]["epochs"] for k in runs] == [1, 2, 2]
    assert all(runs[k]["probe_epoch_seconds"] is None for k in runs)  # no probe when epochs are given
    assert not (out / "gpt-lm-probe").exists() and not (out / "deep-lstm-lm-probe").exists()
    # Different seeds: different models, so different scores.
    assert runs["deep-lstm-lm"]["test_perplexity"] != runs["deep-lstm-lm-2"]["test_perplexity"]
    mixture = saved["ensemble"]
    assert mixture["members"] == list(runs) and result["metrics"]["ensemble_members"] == 3
    assert mixture["train_seconds"] == pytest.approx(sum(r["train_seconds"] for r in runs.values()))
    assert mixture["machine_seconds"] >= mixture["train_seconds"]
    assert "the GPT and 2 LSTMs (seeds 5, 6)" in result["summary"]
    rows = saved["tables"][0]["rows"]
    assert [row[0] for row in rows[:3]] == ["GPT (gpt-lm)", "LSTM (deep-lstm-lm)", "LSTM (deep-lstm-lm), seed 6"]
    with pytest.raises(DivekitError, match="lstms must be at least 1"):
        run_experiment("gpt-vs-lstm", tmp_path / "bad", quick=False, progress=False, options={"lstms": "0"})
