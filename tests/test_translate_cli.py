"""``divekit translate`` and ``divekit mt-evaluate`` on a checkpoint trained on a tiny phrasebook."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from divekit.cli import main
from divekit.models.seq2seq import Seq2SeqConfig, build_seq2seq
from divekit.registry import config_to_dict
from divekit.tasks.translation import Translation, load_translator
from divekit.train.checkpoint import save_checkpoint
from divekit.train.config import TrainConfig
from divekit.train.trainer import Trainer

SUBJECTS = {"he": "il", "she": "elle", "tom": "tom", "mary": "marie"}
ADJECTIVES = {"calm": "calme", "tired": "fatigué", "happy": "heureux", "ready": "prêt", "late": "en retard"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only adds hand-offs


def phrasebook() -> list:
    pairs = [(f"{s} is {a} .".split(), f"{fs} est {fa} .".split()) for s, fs in SUBJECTS.items()
             for a, fa in ADJECTIVES.items()]
    return pairs * 8


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A seq2seq that has learnt "X is Y ." -> "X' est Y' ." (sentences of at most 5 tokens)."""
    run = tmp_path_factory.mktemp("phrasebook")
    torch.manual_seed(0)
    pairs = phrasebook()
    config = Seq2SeqConfig(src_vocab_size=15, tgt_vocab_size=16, embed_size=32, hidden_size=64, num_steps=6,
                           dropout=0.0)
    task = Translation(src_vocab_size=15, tgt_vocab_size=16, num_steps=6, batch_size=16,
                       splits=(pairs, pairs[:20], pairs[:20]))
    trainer = Trainer(build_seq2seq(config), task, TrainConfig(epochs=30, lr=0.01, optimizer="adam", grad_clip=1.0),
                      model_name="seq2seq", model_config=config_to_dict(config), run_dir=run, progress=False,
                      log=lambda *_: None)
    trainer.fit()
    assert trainer.best_value == pytest.approx(100.0)  # the phrasebook is learnt exactly
    return run / "best.pt"


def translate(capsys, *args: str, stdin: str | bytes | None = None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin is not None:
        raw = stdin.encode() if isinstance(stdin, str) else stdin
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))
    code = main(["translate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_one_sentence_greedy_and_beam(checkpoint, capsys):
    for extra in ([], ["--beam", "3"]):
        code, out, err = translate(capsys, "--checkpoint", str(checkpoint), "Mary is tired.", *extra)
        assert (code, out, err) == (0, "marie est fatigué .\n", "")


def test_file_mode_keeps_one_line_per_input(checkpoint, capsys, tmp_path):
    text = "he is calm .\n\nshe is late !\nhe is calm and she is tired .\nxyzzy plugh\n"
    path = tmp_path / "in.txt"
    path.write_text(text)
    code, out, err = translate(capsys, "--checkpoint", str(checkpoint), "--file", str(path))
    lines = out.split("\n")[:-1]
    assert code == 1 and len(lines) == 5
    assert lines[0] == "il est calme ." and lines[1] == "" and lines[3] == "" and lines[4] == ""
    assert lines[2].startswith("elle est")  # "!" was never seen: read as <unk>, translated anyway
    assert "line 2: the sentence is empty" in err
    assert "line 4: the sentence has 8 tokens" in err and "at most 5" in err
    assert "line 5: none of the words" in err
    assert "line 3: not in the vocabulary, read as <unk>: !" in err


def test_stdin_mode_and_unknown_word_note(checkpoint, capsys, monkeypatch):
    code, out, err = translate(capsys, "--checkpoint", str(checkpoint), stdin="tom is ready .\nhe is sleepy .\n",
                               monkeypatch=monkeypatch)
    assert code == 0 and out.split("\n")[0] == "tom est prêt ."
    assert "note: line 2: not in the vocabulary, read as <unk>: sleepy" in err


def test_invalid_utf8_is_refused_alike_from_stdin_and_from_a_file(checkpoint, capsys, monkeypatch, tmp_path):
    bad = b"he is calm .\n\xff\xfe tired .\n"
    code, out, err = translate(capsys, "--checkpoint", str(checkpoint), stdin=bad, monkeypatch=monkeypatch)
    assert code == 2 and out == "" and "not valid UTF-8" in err and err.count("\n") == 1
    path = tmp_path / "bad.txt"
    path.write_bytes(bad)
    code, out, err = translate(capsys, "--checkpoint", str(checkpoint), "--file", str(path))
    assert code == 2 and out == "" and "utf-8" in err.lower() and err.count("\n") == 1


def test_single_sentence_refusals_are_one_line_errors(checkpoint, capsys):
    for sentence, phrase in (("   ", "the sentence is empty"), ("he is calm and she is tired .", "at most 5"),
                             ("xyzzy", "none of the words")):
        code, out, err = translate(capsys, "--checkpoint", str(checkpoint), sentence)
        assert code == 2 and out == "" and phrase in err and "Traceback" not in err


def test_the_checkpoint_carries_its_vocabularies_and_translates_its_phrasebook(checkpoint):
    translator, ckpt = load_translator(checkpoint)
    assert ckpt["task"] == "fra-eng" and translator.num_steps == 6
    sources = [p[0] for p in phrasebook()[:20]]
    greedy = translator.translate(sources)
    assert greedy == [" ".join(p[1]) for p in phrasebook()[:20]]
    assert translator.src_vocab.idx_to_token[:5] == ["<unk>", "<pad>", "<bos>", "<eos>", "."]


def test_the_entry_point_and_foreign_checkpoints(checkpoint, tmp_path):
    env = {**os.environ}
    r = subprocess.run([sys.executable, "-m", "divekit", "translate", "--checkpoint", str(checkpoint),
                        "she is happy ."], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and r.stdout == "elle est heureux .\n", r.stderr
    other = save_checkpoint(tmp_path / "mlp.pt", {"model": "mlp", "task": "fashion-mnist", "model_config": {}})
    r = subprocess.run([sys.executable, "-m", "divekit", "translate", "--checkpoint", str(other), "hi ."],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 4 and "not a fra-eng translation model" in r.stderr and "Traceback" not in r.stderr


def _have_fra_eng() -> bool:
    root = os.environ.get("DIVEKIT_DATA")
    return bool(root) and (Path(root) / "fra-eng.zip").is_file()


@pytest.mark.skipif(not _have_fra_eng(), reason="fra-eng.zip not found under DIVEKIT_DATA")
def test_mt_evaluate_prints_sacrebleu_scores_and_signature(checkpoint, capsys):
    sacrebleu = pytest.importorskip("sacrebleu")
    from sacrebleu.metrics import BLEU, CHRF

    from divekit.metrics.mt_scores import group_by_source
    from divekit.metrics.bleu import reference_streams
    from divekit.tasks.translation import real_splits

    code = main(["mt-evaluate", "--checkpoint", str(checkpoint), "--limit", "40", "--beam", "2"])
    out, _ = capsys.readouterr()
    assert code == 0
    lines = out.splitlines()
    signatures = {name.strip(): sig for name, sig in
                  (line.strip().rsplit(" ", 1) for line in lines[lines.index("signatures:") + 1:])}
    assert signatures["BLEU per pair"] == "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
    translator, _ = load_translator(checkpoint)
    test = real_splits(0)[2][:40]
    sources, ref_sets, _ = group_by_source(test)
    assert len(sources) < len(test)  # some sources of the first 40 test pairs have several translations
    refs = [" ".join(t) for _, t in test]
    streams = reference_streams(ref_sets)
    for method, k in (("greedy", 1), ("beam 2, alpha 0.75", 2)):
        hyps = translator.translate([s for s, _ in test], beam_size=k, alpha=0.75, unk="UNK")
        grouped = translator.translate(sources, beam_size=k, alpha=0.75, unk="UNK")
        block = lines[lines.index(f"  {method}") + 1:][:6]
        expected = {
            "BLEU per pair": sacrebleu.corpus_bleu(hyps, [refs]),
            "chrF per pair": CHRF().corpus_score(hyps, [refs]),
            "chrF++ per pair": CHRF(word_order=2).corpus_score(hyps, [refs]),
            "BLEU grouped": BLEU().corpus_score(grouped, streams),
            "chrF grouped": CHRF().corpus_score(grouped, streams),
            "chrF++ grouped": CHRF(word_order=2).corpus_score(grouped, streams),
        }
        for (name, score), line in zip(expected.items(), block):
            assert line.strip().startswith(name), (line, name)
            assert f"{score.name} = {score.score:.2f}" in line, (line, score)
    metric = BLEU()
    metric.corpus_score(grouped, streams)
    assert signatures["BLEU grouped"] == str(metric.get_signature())
    metric = CHRF(word_order=2)
    metric.corpus_score(grouped, streams)
    assert signatures["chrF++ grouped"] == str(metric.get_signature())
