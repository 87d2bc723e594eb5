"""BERT and masked-LM pretraining: masking statistics, specials never masked, padding invariance, heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from divekit.data.timemachine import IGNORE_INDEX
from divekit.errors import DivekitError, ShapeError
from divekit.models.bert import BERT, BERTClassifier, BERTConfig
from divekit.registry import get_model
from divekit.tasks.masked_lm import (CLS, FIRST_WORD, MASK, PAD, SEP, MaskedLMTask, build_examples, distinct,
                                     make_vocab, mask_tokens, maskable_positions, pair_tokens, timemachine_pieces)
from divekit.train.config import TrainConfig
from divekit.train.trainer import Trainer

from conftest import data_dir_with

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only adds hand-offs

TINY = dict(vocab_size=40, max_len=16, d_model=16, num_heads=2, layers=2, ffn_hidden=32, dropout=0.0, num_steps=16)
WORDS = "the time traveller for so it will be convenient to speak of him was expounding a matter to us".split()


def tiny_bert(**overrides) -> BERT:
    torch.manual_seed(0)
    return BERT(BERTConfig(**{**TINY, **overrides})).double().eval()


def test_masking_follows_80_10_10_of_15_percent_within_tolerance():
    g = torch.Generator().manual_seed(0)
    vocab_size, mask_id = 1000, 4
    tokens = torch.randint(FIRST_WORD, vocab_size, (400, 64), generator=g)
    tokens[:, 0], tokens[:, 30], tokens[:, 50:] = 2, 3, 1  # <cls>, <sep>, padding
    maskable = maskable_positions(tokens)
    chosen = masked = randomised = kept = 0
    for _ in range(20):
        inputs, labels = mask_tokens(tokens, maskable, mask_id=mask_id, first_word=FIRST_WORD,
                                     vocab_size=vocab_size, generator=g)
        picked = labels != IGNORE_INDEX
        assert torch.equal(labels[picked], tokens[picked]) and torch.equal(inputs[~picked], tokens[~picked])
        chosen += int(picked.sum())
        masked += int((inputs[picked] == mask_id).sum())
        kept += int((inputs[picked] == tokens[picked]).sum())
        randomised += int(((inputs[picked] != mask_id) & (inputs[picked] != tokens[picked])).sum())
        assert (inputs[picked & (inputs != mask_id)] >= FIRST_WORD).all()  # random words are ordinary words
    candidates = 20 * int(maskable.sum())  # 20 draws of 400 x 48 ordinary words: 384,000 candidates
    # Standard errors: 0.0006 for the 15%, 0.002 for 80% and 0.0016 for 10% of ~57,600 chosen; tolerances ~5 sigma.
    assert abs(chosen / candidates - 0.15) < 0.003
    assert abs(masked / chosen - 0.8) < 0.01
    assert abs(randomised / chosen - 0.1 * (1 - 1 / (vocab_size - FIRST_WORD))) < 0.008
    assert abs(kept / chosen - 0.1) < 0.008  # (a random word equal to the original counts as kept)


def test_special_tokens_and_unknown_words_are_never_masked():
    vocab = make_vocab([WORDS, WORDS], 23)
    examples = build_examples([WORDS[:5], WORDS[5:9], WORDS[9:], ["zzz", "the"]], vocab, 16)
    tokens = examples[0]
    assert int((tokens == vocab["<unk>"]).sum()) == 1  # "zzz" was never seen twice
    special = tokens < FIRST_WORD
    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        inputs, labels = mask_tokens(tokens, maskable_positions(tokens), mask_id=vocab[MASK], first_word=FIRST_WORD,
                                     vocab_size=len(vocab), rate=0.9, generator=g)
        assert (labels[special] == IGNORE_INDEX).all() and torch.equal(inputs[special], tokens[special])
        assert (inputs[~special] >= FIRST_WORD).logical_or(inputs[~special] == vocab[MASK]).all()


def test_examples_join_two_pieces_with_segments_and_cut_the_longer_first():
    tokens, segments = pair_tokens(list("abcdefgh"), list("xyz"), 10)
    assert tokens == [CLS, "a", "b", "c", "d", SEP, "x", "y", "z", SEP]
    assert segments == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
    vocab = make_vocab([WORDS, WORDS], 23)
    ids, segs, valid = build_examples([WORDS[:3], WORDS[3:5], WORDS[5:6]], vocab, 12)  # the odd piece is unused
    assert ids.shape == segs.shape == (1, 12) and valid.tolist() == [8]
    assert ids[0, 8:].eq(vocab[PAD]).all() and segs[0].tolist() == [0] * 5 + [1] * 3 + [0] * 4
    assert timemachine_pieces("a b c d e", 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert distinct([["a"], ["b"], ["a"]]) == [["a"], ["b"]]
    with pytest.raises(DivekitError, match="vocab_size"):
        make_vocab([WORDS, WORDS], 1000)


def test_padding_changes_no_real_token_output():
    model = tiny_bert()
    g = torch.Generator().manual_seed(0)
    short = torch.randint(FIRST_WORD, 40, (1, 6), generator=g)
    short_segments = torch.tensor([[0, 0, 0, 1, 1, 1]])
    alone = model(short, short_segments, torch.tensor([6]))
    padded = torch.cat([short, torch.ones(1, 10, dtype=torch.long)], 1)  # ten <pad> tokens after it
    other = torch.randint(FIRST_WORD, 40, (1, 16), generator=g)
    batch = torch.cat([padded, other])
    segments = torch.cat([F.pad(short_segments, (0, 10)), torch.zeros(1, 16, dtype=torch.long)])
    together = model(batch, segments, torch.tensor([6, 16]))
    torch.testing.assert_close(together[0, :6], alone[0], rtol=0, atol=1e-12)
    # Without valid_lens the padding is attended to, and the real tokens' outputs move.
    assert not torch.allclose(model(batch, segments)[0, :6], alone[0])


def test_heads_have_the_documented_shapes_and_the_output_is_the_embedding():
    model = tiny_bert()
    tokens = torch.randint(FIRST_WORD, 40, (3, 9))
    valid = torch.tensor([9, 5, 7])
    full = model(tokens, None, valid)
    assert full.shape == (3, 9, 40)
    masked = torch.zeros(3, 9, dtype=torch.bool)
    masked[0, 2] = masked[2, 4] = True
    torch.testing.assert_close(model(tokens, None, valid, masked=masked), full[masked], rtol=0, atol=1e-12)
    assert model.pooled(tokens, None, valid).shape == (3, 16)
    classifier = BERTClassifier(model, 3).double().eval()
    logits = classifier(tokens, torch.zeros_like(tokens), valid)
    assert logits.shape == (3, 3) and torch.isfinite(logits).all()
    assert not any("mlm.embedding" in n for n, _ in model.named_parameters())  # one tensor, not a copy
    with pytest.raises(DivekitError, match="2 classes"):
        BERTClassifier(model, 1)


def test_bad_inputs_and_options_are_refused():
    model = tiny_bert()
    with pytest.raises(ShapeError, match=r"\(B, T\)"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ShapeError, match="segments"):
        model(torch.zeros(2, 4, dtype=torch.long), torch.full((2, 4), 2))
    with pytest.raises(ShapeError, match="valid_lens"):
        model(torch.zeros(2, 4, dtype=torch.long), None, torch.tensor([0, 4]))
    with pytest.raises(ShapeError, match="masked"):
        model(torch.zeros(2, 4, dtype=torch.long), masked=torch.ones(2, 4))
    for bad, phrase in ((dict(num_heads=3), "divisible"), (dict(num_steps=17), "num_steps"),
                        (dict(mask_rate=0.0), "mask_rate"), (dict(dropout=1.0), "dropout")):
        with pytest.raises(DivekitError, match=phrase):
            BERTConfig(**{**TINY, **bad})


def _pieces() -> dict[str, list[list[str]]]:
    """One sentence over and over: which word was masked follows from its position and its neighbours."""
    return {"train": [WORDS] * 200, "val": [WORDS] * 10, "test": [WORDS] * 10}


def test_pretraining_learns_the_masked_words_of_a_repeated_sentence(tmp_path):
    spec = get_model("bert")
    assert spec.task == "masked-lm"
    config = spec.make_config({**TINY, "vocab_size": 23})
    task = MaskedLMTask(vocab_size=23, num_steps=16, batch_size=8, pieces=_pieces())
    inputs, segments, valid, labels = next(iter(task.train_loader(_dist())))
    assert inputs.shape == labels.shape == segments.shape and inputs.shape[1] == int(valid.max())
    torch.manual_seed(0)
    model = spec.build(config)
    before = task.evaluate(model, "val")
    assert before == task.evaluate(model, "val")  # the evaluation masking is fixed
    trainer = Trainer(model, task, TrainConfig(epochs=8, lr=3e-3, optimizer="adam", grad_clip=1.0),
                      model_name="bert", model_config={}, run_dir=tmp_path, progress=False, log=lambda *_: None)
    trainer.fit()
    after = task.evaluate(model, "val")
    assert set(after) == {"loss", "perplexity", "accuracy"}
    assert after["loss"] < 0.5 * before["loss"] and after["accuracy"] > 0.5, (before, after)


def test_ranks_share_each_global_batch_and_mask_their_shares_independently():
    from divekit.tasks.masked_lm import ExampleBatches, MaskedBatches

    n, width = 21, 12
    tokens = torch.arange(FIRST_WORD, FIRST_WORD + n * width).view(n, width)
    examples = (tokens, torch.zeros_like(tokens), torch.full((n,), width))
    whole = [b[0] for b in ExampleBatches(examples, 8, seed=3)]
    shares = [[b[0] for b in ExampleBatches(examples, 8, seed=3, rank=r, world_size=2)] for r in (0, 1)]
    assert len(ExampleBatches(examples, 8, world_size=2)) == 3 == len(whole)
    for k, batch in enumerate(whole):
        assert torch.equal(torch.cat([shares[0][k], shares[1][k]]), batch)
    masked = [next(iter(MaskedBatches(examples, 400, 4, rate=0.5, batch_size=20, rank=r, world_size=2)))[3]
              for r in (0, 1)]
    assert not torch.equal(masked[0] != IGNORE_INDEX, masked[1] != IGNORE_INDEX)


def _dist():
    from divekit.train.distributed import DistInfo

    return DistInfo()


@pytest.mark.skipif(data_dir_with("fra-eng.zip") is None or data_dir_with("timemachine.txt") is None,
                    reason="fra-eng.zip or The Time Machine not found")
def test_no_held_out_sentence_is_in_the_pretraining_text():
    from divekit.tasks.masked_lm import real_pieces

    pieces = real_pieces()
    train = {tuple(p) for p in pieces["train"]}
    assert len(pieces["train"]) > 100_000
    for split in ("val", "test"):
        assert not train.intersection(tuple(p) for p in pieces[split]), split


@pytest.mark.skipif(data_dir_with("fra-eng.zip") is None or data_dir_with("timemachine.txt") is None,
                    reason="fra-eng.zip or The Time Machine not found")
def test_divekit_train_bert_runs_on_the_real_text(tmp_path, capsys):
    from divekit.cli import main

    tiny = ["-o", "d_model=16", "-o", "num_heads=2", "-o", "layers=1", "-o", "ffn_hidden=32", "-o", "vocab_size=500"]
    assert main(["train", "bert", "--epochs", "1", "--limit", "300", "--threads", "1", *tiny,
                 "--out", str(tmp_path / "bert")]) == 0
    out = capsys.readouterr().out
    assert "bert: test_loss" in out and "test_accuracy" in out and (tmp_path / "bert" / "best.pt").is_file()
    assert main(["train", "bert", "-o", "vocab_size=100000", "--epochs", "1"]) == 2
    assert "vocab_size must lie in" in capsys.readouterr().err


# --- next-sentence prediction ------------------------------------------------------------------


def test_next_pieces_are_the_successor_half_the_time_and_never_it_otherwise():
    from divekit.tasks.masked_lm import next_pieces

    followers, is_next = next_pieces(4001, seed=3)
    assert len(followers) == len(is_next) == 2000
    assert abs(sum(is_next) / 2000 - 0.5) < 0.04  # 4 standard deviations of a fair coin over 2000
    for k, (j, label) in enumerate(zip(followers, is_next)):
        assert (j == 2 * k + 1) == bool(label) and 0 <= j < 4001
    assert (followers, is_next) == next_pieces(4001, seed=3)
    assert next_pieces(4001, seed=4) != (followers, is_next)


def _two_group_pieces(n: int, seed: int) -> list[list[str]]:
    """Each A piece holds words of one group and its successor B words of another. A random follower is
    another A (detectably not next) or another B (indistinguishable): 75% is the best accuracy."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        out += [rng.sample(WORDS[:8], 4), rng.sample(WORDS[8:18], 4)]
    return out


def test_nsp_examples_carry_their_labels_and_the_model_learns_them(tmp_path):
    from divekit.tasks.masked_lm import make_vocab

    pieces = {"train": _two_group_pieces(300, 0), "val": _two_group_pieces(100, 1), "test": _two_group_pieces(60, 2)}
    vocab = make_vocab(pieces["train"], 22)
    tokens, segments, valid, is_next = build_examples(pieces["val"], vocab, 16, nsp_seed=5)
    for i in range(len(is_next)):
        b = vocab.to_tokens(tokens[i, : int(valid[i])])
        b = b[b.index(SEP) + 1: -1]
        assert (b == pieces["val"][2 * i + 1]) == bool(is_next[i])
    spec = get_model("bert")
    task = MaskedLMTask(vocab_size=22, num_steps=16, batch_size=16, pieces=pieces, nsp=True)
    torch.manual_seed(0)
    model = spec.build(spec.make_config({**TINY, "vocab_size": 22, "nsp": True}))
    assert task.evaluate(model, "val")["nsp_accuracy"] < 0.6
    trainer = Trainer(model, task, TrainConfig(epochs=6, lr=3e-3, optimizer="adam", grad_clip=1.0),
                      model_name="bert", model_config={}, run_dir=tmp_path, progress=False, log=lambda *_: None)
    trainer.fit()
    assert task.evaluate(model, "val")["nsp_accuracy"] > 0.62


def test_the_nsp_head_is_for_pretraining_only():
    model = tiny_bert()
    tokens = torch.randint(FIRST_WORD, 40, (2, 6))
    with pytest.raises(DivekitError, match="nsp=True"):
        model.pretraining_logits(tokens, torch.zeros_like(tokens), torch.tensor([6, 4]), tokens > 0)
    nsp = tiny_bert(nsp=True)
    mlm, sentence = nsp.pretraining_logits(tokens, torch.zeros_like(tokens), torch.tensor([6, 4]), tokens > 20)
    assert mlm.shape == (int((tokens > 20).sum()), 40) and sentence.shape == (2, 2)
