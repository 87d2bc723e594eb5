"""Subword translation models (``-o subwords=N``): vocabulary, task, checkpoint, translate and mt-evaluate."""

from __future__ import annotations

import random

import pytest
import torch

from divekit.cli import main
from divekit.data.bpe import join_subwords, word_counts
from divekit.data.subwords import (
    SPECIALS,
    learn_joint,
    learn_to_size,
    segment_pairs,
    subword_vocab,
)
from divekit.errors import DivekitError
from divekit.models.seq2seq import Seq2SeqConfig, build_seq2seq
from divekit.models.transformer import TransformerConfig, build_transformer
from divekit.registry import config_to_dict
from divekit.tasks.translation import NoSpecials, Translation, load_translator
from divekit.train.config import TrainConfig
from divekit.train.distributed import DistInfo
from divekit.train.trainer import Trainer
from tests.conftest import data_dir_with

pytestmark = pytest.mark.usefixtures("one_thread")

needs_fra_eng = pytest.mark.skipif(data_dir_with("fra-eng.zip") is None, reason="fra-eng.zip not found")

TOY = [("he is calm .".split(), "il est calme .".split()), ("she is calm .".split(), "elle est calme .".split()),
       ("he is late .".split(), "il est en retard .".split()), ("we are late .".split(), "nous sommes en retard .".split())]


# --- the joint vocabulary -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [4 + 2 * 16, 45, 60])
def test_learn_to_size_gives_exactly_that_many_entries(size):
    bpe = learn_joint(TOY * 3, size)
    vocab = subword_vocab(bpe, segment_pairs(TOY, bpe))
    assert len(vocab) == size
    assert vocab.idx_to_token[:4] == list(SPECIALS)
    assert sorted(vocab.idx_to_token[4:]) == bpe.vocabulary()


def test_learn_to_size_refuses_sizes_the_text_cannot_give():
    counts = word_counts(side for pair in TOY for side in pair)
    with pytest.raises(DivekitError, match="too small.*use at least 36"):
        learn_to_size(counts, 35)  # 16 characters, two tokens each, and 4 specials
    with pytest.raises(DivekitError, match="too large"):
        learn_to_size(counts, 10_000)


def test_config_sets_both_sizes_and_refuses_a_conflicting_one():
    assert Seq2SeqConfig(subwords=300).src_vocab_size == Seq2SeqConfig(subwords=300).tgt_vocab_size == 300
    assert TransformerConfig(subwords=300, embeddings="shared").tgt_vocab_size == 300
    assert Seq2SeqConfig().src_vocab_size == 9779  # 0: word vocabularies, unchanged
    with pytest.raises(DivekitError, match="leave tgt_vocab_size unset"):
        Seq2SeqConfig(subwords=300, tgt_vocab_size=500)
    with pytest.raises(DivekitError, match="subwords must be 0"):
        TransformerConfig(subwords=-1)


# --- a tiny subword model on real pairs ---------------------------------------------------------

SIZE = 260


@pytest.fixture(scope="module")
def small_splits():
    if data_dir_with("fra-eng.zip") is None:
        pytest.skip("fra-eng.zip not found under DIVEKIT_DATA")
    from divekit.tasks.translation import real_splits

    train, val, test = real_splits(0)
    short = [p for p in train if len(p[0]) <= 4 and len(p[1]) <= 5]
    picked = random.Random(0).sample(short, 400)
    return picked, val[:50], test[:50]


@pytest.fixture(scope="module")
def subword_checkpoint(small_splits, tmp_path_factory):
    run = tmp_path_factory.mktemp("subwords")
    torch.manual_seed(0)
    config = Seq2SeqConfig(subwords=SIZE, embed_size=32, hidden_size=64, num_layers=1, num_steps=20, dropout=0.0)
    task = Translation(src_vocab_size=SIZE, tgt_vocab_size=SIZE, num_steps=20, batch_size=32,
                       splits=small_splits, subwords=SIZE)
    trainer = Trainer(build_seq2seq(config), task, TrainConfig(epochs=3, lr=0.01, optimizer="adam", grad_clip=1.0),
                      model_name="seq2seq", model_config=config_to_dict(config), run_dir=run, progress=False,
                      log=lambda *_: None)
    trainer.fit()
    return task, run / "checkpoint.pt"


def test_task_reads_subwords_learnt_on_training_pairs_only(small_splits, subword_checkpoint):
    task, _ = subword_checkpoint
    train, _, _ = small_splits
    assert len(task.src_vocab) == SIZE and task.src_vocab is task.tgt_vocab
    assert set(task.bpe.alphabet) == {ch for pair in train for side in pair for w in side for ch in w}
    src, _, tgt, _ = task.arrays["train"]
    assert not (src == task.src_vocab.unk).any() and not (tgt == task.tgt_vocab.unk).any()
    # BLEU references stay words: the pairs the task scores against are not segmented.
    assert task.pairs["test"] == small_splits[2]


def test_checkpoint_carries_the_merges_as_plain_data(subword_checkpoint):
    task, path = subword_checkpoint
    state = torch.load(path, weights_only=True)["task_state"]
    assert state["subwords"] == SIZE and state["bpe"] == task.bpe.to_state()
    translator, _ = load_translator(path)
    assert translator.bpe == task.bpe and translator.src_vocab == task.src_vocab


def test_translate_never_prints_unk_for_the_training_alphabet(subword_checkpoint, capsys):
    task, path = subword_checkpoint
    sentences = [" ".join(src) for src, _ in task.pairs["val"][:20]]
    code = main(["translate", "--checkpoint", str(path), sentences[0]])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    assert "<unk>" not in out and "@@" not in out
    translator, _ = load_translator(path)
    outputs = translator.translate([src for src, _ in task.pairs["val"][:20]], beam_size=2)
    known = set(task.bpe.alphabet)
    for (src, _), text in zip(task.pairs["val"][:20], outputs):
        if set("".join(src)) <= known:
            assert "<unk>" not in text and "@@" not in text


def test_no_specials_renormalises_over_the_other_tokens(subword_checkpoint):
    task, _ = subword_checkpoint
    model = build_seq2seq(Seq2SeqConfig(subwords=SIZE, embed_size=8, hidden_size=8, num_layers=1, num_steps=20))
    banned = [task.tgt_vocab[t] for t in SPECIALS if t != "<eos>"]
    decoder = NoSpecials(model.eval(), banned)
    src, src_len = task.arrays["val"][0][:3], task.arrays["val"][1][:3]
    state = decoder.init_state(src, src_len)
    log_probs, _ = decoder.step(torch.full((3,), task.tgt_vocab["<bos>"]), state)  # (B, V)
    assert torch.isneginf(log_probs[:, banned]).all()
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(3))
    raw, _ = model.step(torch.full((3,), task.tgt_vocab["<bos>"]), model.init_state(src, src_len))
    keep = [i for i in range(SIZE) if i not in banned]
    # Renormalising keeps the ratios of the allowed tokens: the log-probabilities shift by one constant per row.
    shift = log_probs[:, keep] - raw[:, keep]
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-5)


def test_translate_notes_characters_outside_the_alphabet(subword_checkpoint, capsys):
    task, path = subword_checkpoint
    outside = next(ch for ch in "ζжק#" if ch not in task.bpe.alphabet)
    code = main(["translate", "--checkpoint", str(path), f"tom is {outside}{outside}a ."])
    out, err = capsys.readouterr()
    assert code == 0 and out.count("\n") == 1
    assert err.splitlines() == [f"note: characters outside the training alphabet, read as <unk>: {outside}"]


def test_translate_refuses_a_sentence_too_long_in_subwords(subword_checkpoint, capsys):
    task, path = subword_checkpoint
    words = ["breakfast"] * 6  # six words, well within 19, but many more subword tokens
    assert len(task.bpe.segment(words)) > 19
    code = main(["translate", "--checkpoint", str(path), " ".join(words)])
    _, err = capsys.readouterr()
    assert code != 0 and len(err.splitlines()) == 1 and "subword tokens" in err and "Traceback" not in err


def test_mt_evaluate_scores_joined_words_equal_to_sacrebleu(subword_checkpoint, capsys):
    sacrebleu = pytest.importorskip("sacrebleu")
    from divekit.tasks.translation import real_splits

    _, path = subword_checkpoint
    code = main(["mt-evaluate", "--checkpoint", str(path), "--limit", "30", "--beam", "2"])
    out, _ = capsys.readouterr()
    assert code == 0 and f"{SIZE} subwords" in out.splitlines()[0]
    translator, _ = load_translator(path)
    test = real_splits(0)[2][:30]
    hyps = translator.translate([s for s, _ in test], unk="UNK")
    assert all("@@" not in h for h in hyps)
    expected = sacrebleu.corpus_bleu(hyps, [[" ".join(t) for _, t in test]])
    line = next(l for l in out.splitlines() if l.strip().startswith("BLEU per pair"))
    assert f"BLEU = {expected.score:.2f} " in line


def test_transformer_with_shared_subword_embeddings_trains_a_step(small_splits):
    config = TransformerConfig(subwords=SIZE, d_model=32, num_heads=2, ffn_hidden=64, num_encoder_layers=1,
                               num_decoder_layers=1, embeddings="shared", num_steps=20)
    task = Translation(src_vocab_size=SIZE, tgt_vocab_size=SIZE, num_steps=20, batch_size=16,
                       splits=small_splits, subwords=SIZE)
    model = build_transformer(config)
    batch = next(iter(task.train_loader(DistInfo())))
    out = task.step(model, batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)


@needs_fra_eng
def test_train_refuses_a_subword_size_below_the_alphabet(capsys):
    code = main(["train", "seq2seq", "-o", "subwords=50", "--limit", "10", "--epochs", "1", "--no-progress"])
    _, err = capsys.readouterr()
    assert code != 0 and len(err.strip().splitlines()) == 1 and "too small" in err and "Traceback" not in err


def test_joining_undoes_segmentation_of_the_toy_corpus():
    bpe = learn_joint(TOY, 45)
    for src, tgt in TOY:
        assert join_subwords(bpe.segment(src)) == src and join_subwords(bpe.segment(tgt)) == tgt


def test_a_subword_seq2seq_learns_the_phrasebook_exactly(tmp_path):
    from tests.test_translate_cli import phrasebook

    torch.manual_seed(0)
    pairs = phrasebook()
    bpe = learn_joint(pairs, 70)
    assert any(tok.endswith("@@") for src, tgt in pairs for tok in bpe.segment(src + tgt))  # words really split
    config = Seq2SeqConfig(subwords=70, embed_size=32, hidden_size=64, num_steps=16, dropout=0.0)
    task = Translation(src_vocab_size=70, tgt_vocab_size=70, num_steps=16, batch_size=16,
                       splits=(pairs, pairs[:20], pairs[:20]), subwords=70)
    trainer = Trainer(build_seq2seq(config), task, TrainConfig(epochs=15, lr=0.01, optimizer="adam", grad_clip=1.0),
                      model_name="seq2seq", model_config=config_to_dict(config), run_dir=tmp_path, progress=False,
                      log=lambda *_: None)
    trainer.fit()
    assert trainer.best_value == pytest.approx(100.0)  # BLEU on the joined words
    translator, _ = load_translator(tmp_path / "best.pt")
    assert translator.translate([src for src, _ in pairs[:20]]) == [" ".join(tgt) for _, tgt in pairs[:20]]
