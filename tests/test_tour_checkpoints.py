"""Every checkpoint the tour writes works with every command that takes it.

The experiments that train models run here as the tour runs them (quick mode, the same code that
writes their checkpoints), shrunk to a few hundred examples and tiny widths; then each checkpoint
found in their directories goes through ``divekit evaluate`` (by file and by run directory) and,
by task, ``sample`` and ``lm-evaluate`` or ``translate`` and ``mt-evaluate``. The fine-tuned BERT
checkpoints are evaluated after their pretraining file has been moved away: they carry what they need.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from divekit.cli import main
from divekit.errors import DivekitError
from divekit.experiments import (attention, bert_labels, char_lm, cnn_compare, fashion_mnist_baselines, gpt_vs_lstm,
                                 translation)
from divekit.experiments.base import run_experiment
from divekit.tasks import masked_lm, question
from divekit.tasks import translation as mt_task
from divekit.train.checkpoint import load_checkpoint

from conftest import needs_fashion_mnist
from test_bert_question import synthetic
from test_experiments_gpt_vs_lstm import TINY_GPT, TINY_LSTM

TINY_GRU = {"src_vocab_size": 400, "tgt_vocab_size": 400, "embed_size": 16, "hidden_size": 16, "num_layers": 1,
            "num_steps": 10}
TINY_TRANSFORMER = {"src_vocab_size": 400, "tgt_vocab_size": 400, "num_steps": 10, "d_model": 16, "num_heads": 2,
                    "ffn_hidden": 32, "num_encoder_layers": 1, "num_decoder_layers": 1, "dropout": 0.0}


@pytest.fixture
def tiny_tour(monkeypatch):
    """The tour's model-training experiments at toy scale: same code paths, seconds instead of minutes."""
    full_splits = mt_task.real_splits

    def few_pairs(seed: int = mt_task.SPLIT_SEED):
        train, val, test = full_splits(seed)
        return train, val[:40], test[:40]

    for module in (mt_task, translation, attention):
        monkeypatch.setattr(module, "real_splits", few_pairs)
    for key, value in TINY_GRU.items():
        monkeypatch.setitem(translation.QUICK_OPTIONS, key, value)  # attention's GRU models share this dict
    monkeypatch.setitem(translation.QUICK_TRAIN, "epochs", 1)
    monkeypatch.setitem(translation.QUICK_PAIRS, "train", 300)
    monkeypatch.setitem(attention.QUICK_OPTIONS, "transformer", TINY_TRANSFORMER)
    monkeypatch.setitem(attention.QUICK_LIMIT, "seq2seq-attention", 300)
    monkeypatch.setitem(attention.QUICK_LIMIT, "seq2seq", 300)
    monkeypatch.setitem(attention.QUICK_LIMIT, "transformer", 300)
    # One model per kind of checkpoint: a scratch RNN and a torch-cell LSTM of the five LMs, the
    # softmax regression and the modern LeNet of the four classifiers (the suite stays short).
    monkeypatch.setattr(char_lm, "_QUICK", tuple((name, {**options, "hidden": 8}, {"epochs": 1})
                                                 for name, options, _ in char_lm._QUICK
                                                 if name in ("rnn-lm", "lstm-lm")))
    monkeypatch.setattr(cnn_compare, "QUICK", {"BN-LeNet": {"epochs": 1}})
    monkeypatch.setattr(cnn_compare, "QUICK_LIMIT", 256)
    monkeypatch.setattr(fashion_mnist_baselines, "QUICK_LIMIT", 256)
    # BERT: synthetic English for pretraining and the question task, a one-block encoder.
    text = {"train": synthetic(300, 0), "val": synthetic(60, 1), "test": synthetic(60, 2)}
    monkeypatch.setattr(question, "real_sentences", lambda: text)
    monkeypatch.setattr(masked_lm, "real_pieces", lambda: text)
    monkeypatch.setattr(bert_labels, "ENCODER", {"vocab_size": 26, "d_model": 16, "num_heads": 2, "ffn_hidden": 32,
                                                 "layers": 1, "max_len": 16, "num_steps": 8})
    monkeypatch.setattr(fashion_mnist_baselines, "MODELS", [
        (label, name, options, full, {**quick, "epochs": 1}) for label, name, options, full, quick in
        fashion_mnist_baselines.MODELS if name == "softmax-regression" or options])


def commands_for(checkpoint: Path, task: str) -> list[list[str]]:
    run_dir = str(checkpoint.parent)
    every = [["evaluate", "--checkpoint", str(checkpoint)], ["evaluate", "--checkpoint", run_dir]]
    if task == "timemachine":
        return every + [["sample", "--checkpoint", str(checkpoint), "--prefix", "The time", "--length", "12"],
                        ["lm-evaluate", "--checkpoint", str(checkpoint)]]
    if task == "fra-eng":
        return every + [["translate", "--checkpoint", str(checkpoint), "Where is the station?"],
                        ["translate", "--checkpoint", str(checkpoint), "--beam", "3", "I am cold."],
                        ["mt-evaluate", "--checkpoint", str(checkpoint), "--limit", "20", "--beam", "1", "2"]]
    return every


@needs_fashion_mnist
@pytest.mark.usefixtures("tiny_tour")
def test_every_tour_checkpoint_works_with_every_command(tmp_path, capsys, monkeypatch):
    tour = tmp_path / "tour"
    monkeypatch.setitem(gpt_vs_lstm.PLAN, "quick", {"gpt-lm": (TINY_GPT, 1, 3000), "deep-lstm-lm": (TINY_LSTM, 1, 3000)})
    monkeypatch.setattr(gpt_vs_lstm, "EVAL_CHARACTERS", 1000)
    for name in ("fashion-mnist-baselines", "char-lm", "translation", "attention", "cnn-compare", "gpt-vs-lstm"):
        run_experiment(name, tour / name, quick=True, progress=False)
    run_experiment("bert-labels", tour / "bert-labels", quick=True, progress=False, options={"budgets": "20"})
    summary = (tour / "attention" / "results.json").read_text()
    assert "The seq2seq model is the translation experiment's, trained once for both sections." in summary
    # Both MT sections report BLEU per pair and grouped, chrF and chrF++, with their signatures; the
    # per-pair BLEU is the figure the experiment reports elsewhere.
    for name, method, metric in (("translation", "greedy", "test_bleu_greedy"),
                                 ("attention", "transformer, beam 4", "transformer_bleu_beam4")):
        result = json.loads((tour / name / "results.json").read_text())
        scores, signatures = (t for t in result["tables"] if t["title"].startswith(("Test scores as", "Signatures")))
        assert scores["columns"] == ["method", "BLEU per pair", "chrF per pair", "chrF++ per pair", "BLEU grouped",
                                     "chrF grouped", "chrF++ grouped"]
        row = next(r for r in scores["rows"] if r[0] == method)
        assert row[1] == pytest.approx(result["metrics"][metric], abs=1e-9)
        assert any(s.startswith("nrefs:var") or "nrefs:var" in s for _, s in signatures["rows"])
    checkpoints = sorted(tour.rglob("best.pt"))
    tasks = {path: load_checkpoint(path)["task"] for path in checkpoints}
    models = {load_checkpoint(path)["model"] for path in checkpoints}
    # What the tour writes: image classifiers, character LMs, the three translation models, BERT
    # pretrained and fine-tuned.
    assert set(tasks.values()) == {"fashion-mnist", "timemachine", "fra-eng", "masked-lm", "eng-question"}
    assert {"seq2seq", "seq2seq-attention", "transformer", "lstm-lm", "bn-lenet", "lenet", "bert",
            "bert-question", "gpt-lm", "deep-lstm-lm"} <= models
    encoder = tour / "bert-labels" / "bert"
    encoder.rename(tour / "bert-moved")
    tasks = {(tour / "bert-moved" / p.relative_to(encoder) if p.is_relative_to(encoder) else p): t
             for p, t in tasks.items()}
    for path, task in tasks.items():
        for argv in commands_for(path, task):
            capsys.readouterr()
            code = main(argv)
            out, err = capsys.readouterr()
            assert code == 0, f"divekit {' '.join(argv)} exited {code}: {err.strip()}"
            assert out.strip(), f"divekit {' '.join(argv)} printed nothing"


@pytest.mark.parametrize("name, options, message", [
    ("fashion-mnist-baselines", {"train_images": "many"}, "train_images must be a whole number, got 'many'"),
    ("fashion-mnist-baselines", {"train_images": "10"}, "train_images must be at least 100, got 10"),
    ("attention", {"train_pairs": "0"}, "train_pairs must be at least 100, got 0"),
    ("attention", {"transformer": "runs/x/best.pt"}, "trained checkpoints are scored by the full run: add --full"),
    ("char-lm", {"epochs": "-1"}, "epochs must be at least 1, got -1"),
])
def test_quick_size_options_are_checked_before_training(tmp_path, name, options, message):
    with pytest.raises(DivekitError) as caught:
        run_experiment(name, tmp_path / name, quick=True, progress=False, options=options)
    assert str(caught.value) == message
    assert not list((tmp_path / name).rglob("*.pt"))


@pytest.mark.parametrize("name, option", [("fashion-mnist-baselines", "train_images"), ("attention", "train_pairs"),
                                          ("char-lm", "epochs")])
def test_quick_size_options_are_refused_by_the_full_run(tmp_path, name, option):
    with pytest.raises(DivekitError, match=f"^{option} sizes the quick run"):
        run_experiment(name, tmp_path / name, quick=False, progress=False, options={option: "200"})


def test_heatmap_sentence_is_the_first_mid_length_pair_without_unknown_words():
    from types import SimpleNamespace

    short = (["hi", "."], ["salut", "."])
    unknown = (["i", "saw", "a", "quokka", "in", "the", "park", "."], ["j'ai", "vu", "un", "quokka", "."])
    good = (["i", "saw", "a", "dog", "in", "the", "park", "."], ["j'ai", "vu", "un", "chien", "."])
    task = SimpleNamespace(pairs={"test": [short, unknown, good]},
                           src_vocab={"hi", ".", "i", "saw", "a", "dog", "in", "the", "park", "quokka"},
                           tgt_vocab={"salut", ".", "j'ai", "vu", "un", "chien"})
    assert attention.heatmap_sentence(task) == 2
    assert attention.heatmap_sentence(SimpleNamespace(pairs={"test": [short]}, src_vocab=set(), tgt_vocab=set())) == 0
