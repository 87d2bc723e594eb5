"""The GRU encoder-decoder and the fra-eng task: padding independence, equivalences, batching, training."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import reversal_pairs
from hypothesis import given, settings
from hypothesis import strategies as st

from divekit.data.buckets import BucketLoader, trim
from divekit.data.fra_eng import BOS, EOS, shift_right
from divekit.decode.beam import decode_batch
from divekit.errors import DivekitError, ShapeError
from divekit.models.seq2seq import Seq2SeqConfig, build_seq2seq
from divekit.nn.masked_loss import masked_cross_entropy, select_real
from divekit.registry import create_model, get_model
from divekit.tasks.translation import Translation, make_vocab, training_vocab
from divekit.train.config import TrainConfig
from divekit.train.distributed import DistInfo
from divekit.train.trainer import Trainer

SETTINGS = settings(max_examples=25, deadline=None)
SRC_V, TGT_V = 11, 13


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only adds hand-offs


def small_model(seed: int = 0, impl: str = "torch", layers: int = 2, dtype=torch.float64) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = Seq2SeqConfig(src_vocab_size=SRC_V, tgt_vocab_size=TGT_V, embed_size=6, hidden_size=7,
                           num_layers=layers, dropout=0.0, num_steps=8, rnn_impl=impl)
    return build_seq2seq(config).to(dtype).eval()


def random_batch(seed: int, batch: int = 4, steps: int = 6):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, SRC_V, (batch, steps), generator=g)
    src_len = torch.randint(1, steps + 1, (batch,), generator=g)
    dec = torch.randint(0, TGT_V, (batch, steps), generator=g)
    tgt_len = torch.randint(1, steps + 1, (batch,), generator=g)
    return src, src_len, dec, tgt_len


# --- the model ----------------------------------------------------------------------------------


def test_shapes_and_real_only_logits():
    model = small_model()
    src, src_len, dec, tgt_len = random_batch(0)
    logits = model(src, src_len, dec)
    assert logits.shape == (4, 6, TGT_V)
    real = model(src, src_len, dec, tgt_len)
    assert real.shape == (int(tgt_len.sum()), TGT_V)
    torch.testing.assert_close(real, select_real(logits, tgt_len), rtol=0, atol=1e-12)
    outputs, state = model.encoder(src, src_len)
    assert outputs.shape == (4, 6, 7) and state.shape == (2, 4, 7)


@SETTINGS
@given(st.integers(0, 10_000), st.integers(1, 5), st.sampled_from(["torch", "scratch"]))
def test_pads_after_the_source_change_nothing(seed, extra, impl):
    """Whatever follows the real tokens (pads, junk, more columns), state and translation stay the same."""
    model = small_model(seed % 7, impl)
    src, src_len, dec, _ = random_batch(seed)
    g = torch.Generator().manual_seed(seed + 1)
    junk = torch.randint(0, SRC_V, (src.shape[0], src.shape[1] + extra), generator=g)
    keep = torch.arange(src.shape[1] + extra) < src_len.unsqueeze(1)
    padded = torch.where(keep, F.pad(src, (0, extra)), junk)
    _, state = model.encoder(src, src_len)
    _, state_padded = model.encoder(padded, src_len)
    torch.testing.assert_close(state_padded, state, rtol=0, atol=1e-12)
    torch.testing.assert_close(model(padded, src_len, dec), model(src, src_len, dec), rtol=0, atol=1e-12)
    for k in (1, 3):
        a = decode_batch(model, src, src_len, bos=2, eos=3, max_len=6, beam_size=k, alpha=0.75)
        b = decode_batch(model, padded, src_len, bos=2, eos=3, max_len=6, beam_size=k, alpha=0.75)
        assert [h.tokens for h in a] == [h.tokens for h in b]


def test_the_state_after_the_padded_end_would_depend_on_padding():
    """The book's summary (the state after the last padded step) differs: the property above is not vacuous."""
    model = small_model(1, layers=1)
    src, src_len = torch.tensor([[4, 5, 6, 0, 0]]), torch.tensor([3])
    _, state = model.encoder(src, src_len)
    outputs, _ = model.encoder.layers[0](model.encoder.embedding(src))
    assert not torch.allclose(outputs[:, -1], state[0], atol=1e-6)
    torch.testing.assert_close(outputs[:, 2], state[0], rtol=0, atol=0)


def test_scratch_and_torch_gru_give_the_same_model():
    a, b = small_model(3, "torch"), small_model(4, "scratch")
    b.load_state_dict(a.state_dict())
    src, src_len, dec, tgt_len = random_batch(5)
    la, lb = a(src, src_len, dec, tgt_len), b(src, src_len, dec, tgt_len)
    torch.testing.assert_close(lb, la, rtol=1e-10, atol=1e-10)
    labels = torch.randint(0, TGT_V, (la.shape[0],), generator=torch.Generator().manual_seed(0))
    F.cross_entropy(la, labels).backward()
    F.cross_entropy(lb, labels).backward()
    grads_b = dict(b.named_parameters())
    for name, p in a.named_parameters():
        torch.testing.assert_close(grads_b[name].grad, p.grad, rtol=1e-9, atol=1e-10, msg=name)


@SETTINGS
@given(st.integers(0, 10_000))
def test_step_by_step_decoding_equals_teacher_forcing(seed):
    model = small_model(seed % 5)
    src, src_len, dec, _ = random_batch(seed)
    expected = F.log_softmax(model(src, src_len, dec), dim=-1)
    state, steps = model.init_state(src, src_len), []
    for t in range(dec.shape[1]):
        log_probs, state = model.step(dec[:, t], state)
        steps.append(log_probs)
    torch.testing.assert_close(torch.stack(steps, dim=1), expected, rtol=1e-10, atol=1e-12)


def test_decoder_is_causal_and_reorder_picks_rows():
    model = small_model(2)
    src, src_len, dec, _ = random_batch(3)
    changed = dec.clone()
    changed[:, 4:] = (changed[:, 4:] + 1) % TGT_V
    torch.testing.assert_close(model(src, src_len, changed)[:, :4], model(src, src_len, dec)[:, :4], rtol=0, atol=0)
    state = model.init_state(src, src_len)
    index = torch.tensor([2, 2, 0])
    hidden, context = model.reorder_state(state, index)
    torch.testing.assert_close(hidden, state[0][:, index])
    torch.testing.assert_close(context, state[1][index])


def test_every_parameter_learns_and_bad_inputs_name_the_shape():
    model = small_model(0, dtype=torch.float32).train()
    src, src_len, dec, tgt_len = random_batch(1)
    model(src, src_len, dec, tgt_len).logsumexp(-1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    with pytest.raises(ShapeError, match=r"\(B, S\)"):
        model(src.float(), src_len, dec)
    with pytest.raises(ShapeError, match=r"\[1, S=6\]"):
        model(src, torch.zeros(4, dtype=torch.long), dec)
    with pytest.raises(ShapeError, match=r"\(B, T\)"):
        model(src, src_len, dec[:2])
    with pytest.raises(DivekitError, match="rnn_impl"):
        Seq2SeqConfig(rnn_impl="cudnn")


def test_registered_with_the_book_architecture():
    spec = get_model("seq2seq")
    assert spec.task == "fra-eng" and spec.chapter == "mt"
    model = create_model("seq2seq", src_vocab_size=100, tgt_vocab_size=200, num_layers=2)
    e, h = 256, 256
    gru = lambda i: 3 * h * (i + h) + 6 * h  # noqa: E731 - weights and both biases of one GRU layer
    expected = 100 * e + gru(e) + gru(h) + 200 * e + gru(e + h) + gru(h) + (h + 1) * 200
    assert sum(p.numel() for p in model.parameters()) == expected


# --- the task on synthetic pairs ----------------------------------------------------------------




def synthetic_task(batch_size: int = 16, **kw) -> Translation:
    splits = (reversal_pairs(600, 0), reversal_pairs(60, 1), reversal_pairs(60, 2))
    return Translation(src_vocab_size=19, tgt_vocab_size=19, num_steps=8, batch_size=batch_size, splits=splits, **kw)


def test_bucket_loader_covers_every_pair_once_and_resumes():
    task = synthetic_task()
    loader = task.train_loader(DistInfo())
    loader.set_epoch(3)
    batches = loader.batch_indices()
    seen = torch.cat(batches).sort().values
    assert torch.equal(seen, torch.arange(600)) and len(batches) == len(loader)
    assert all(len(b) == 16 for b in batches[:-1] if len(b) != 600 % 16)
    again = BucketLoader(task.arrays["train"], batch_size=16, seed=0)
    again.set_epoch(3)
    assert all(torch.equal(a, b) for a, b in zip(batches, again.batch_indices()))
    resumed = list(again.iter_from(5))
    assert len(resumed) == len(batches) - 5 and torch.equal(resumed[0][0], trim(
        tuple(t[batches[5]] for t in task.arrays["train"]))[0])
    again.set_epoch(4)
    assert not all(torch.equal(a, b) for a, b in zip(batches, again.batch_indices()))


def test_buckets_hold_similar_lengths_and_are_trimmed():
    task = synthetic_task()
    bucketed = [b[3].float().std().item() for b in task.train_loader(DistInfo())]
    plain = [b[3].float().std().item() for b in BucketLoader(task.arrays["train"], batch_size=16, bucket=False)]
    assert sum(bucketed) < 0.5 * sum(plain)
    for src, src_len, tgt, tgt_len in task.train_loader(DistInfo()):
        assert src.shape[1] == src_len.max() and tgt.shape[1] == tgt_len.max()


def test_ranks_share_each_global_batch():
    task = synthetic_task()
    whole = list(task.train_loader(DistInfo()))
    parts = [list(task.train_loader(DistInfo(rank=r, world_size=2))) for r in range(2)]
    for full, a, b in zip(whole, *parts):
        assert torch.equal(torch.cat((a[1], b[1])), full[1]) and torch.equal(torch.cat((a[3], b[3])), full[3])


def test_real_only_softmax_and_trimming_change_no_number():
    task, book_way = synthetic_task(), synthetic_task(real_only_softmax=False)
    model = build_seq2seq(Seq2SeqConfig(src_vocab_size=19, tgt_vocab_size=19, embed_size=8, hidden_size=8,
                                        num_steps=8, dropout=0.0)).double()
    full = tuple(t[:16] for t in task.arrays["train"])
    results = []
    for t, batch in ((task, trim(full)), (book_way, full)):
        model.zero_grad()
        out = t.step(model, batch)
        out.loss.backward()
        results.append((out.loss.item(), out.count, out.correct, [p.grad.clone() for p in model.parameters()]))
    (la, ca, ka, ga), (lb, cb, kb, gb) = results
    assert la == pytest.approx(lb, rel=1e-12) and (ca, ka) == (cb, kb)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)
    src, src_len, tgt, tgt_len = full
    direct = masked_cross_entropy(model(src, src_len, shift_right(tgt, task.bos)), tgt, tgt_len)
    assert direct.item() == pytest.approx(la, rel=1e-12)


def test_vocabularies_are_cut_by_frequency_and_stored_as_plain_data():
    task = synthetic_task()
    state = task.state()
    assert len(task.tgt_vocab) == 19 and task.tgt_vocab.idx_to_token[:4] == ["<unk>", "<pad>", BOS, EOS]
    cut = make_vocab([t for _, t in task.pairs["train"]], 10, side="target")
    assert cut.idx_to_token == task.tgt_vocab.idx_to_token[:10]
    assert state["tgt_vocab"]["idx_to_token"] == task.tgt_vocab.idx_to_token and state["num_steps"] == 8
    with pytest.raises(DivekitError, match="at most 19"):
        make_vocab([t for _, t in task.pairs["train"]], 25, side="target")


def test_a_split_is_counted_once_and_a_changed_split_afresh():
    train = reversal_pairs(60, 0)
    first = training_vocab(train, 10, side="source")
    assert first == make_vocab([s for s, _ in train], 10, side="source")
    assert training_vocab(train, 12, side="source") == make_vocab([s for s, _ in train], 12, side="source")
    other = [(src + ["zz", "zz"], tgt) for src, tgt in train]  # a new split object: counted again
    assert "zz" in training_vocab(other, 12, side="source") and "zz" not in first
    assert training_vocab(other, 12, side="target") == make_vocab([t for _, t in other], 12, side="target")


def test_the_trainer_learns_reversal_on_reversal_pairs(tmp_path):
    torch.manual_seed(0)
    task = synthetic_task(batch_size=32)
    config = Seq2SeqConfig(src_vocab_size=19, tgt_vocab_size=19, embed_size=32, hidden_size=64, num_steps=8,
                           dropout=0.0)
    model = build_seq2seq(config)
    untrained = task.evaluate(model, "val")
    trainer = Trainer(model, task, TrainConfig(epochs=12, lr=0.01, optimizer="adam", grad_clip=1.0, seed=0),
                      model_name="seq2seq", model_config={}, run_dir=tmp_path, progress=False, log=lambda *_: None)
    result = trainer.fit()
    best = max(h["val_bleu"] for h in result.history)
    assert result.history[-1]["val_loss"] < 0.5 * untrained["loss"]
    assert best > untrained["bleu"] + 30 and (tmp_path / "best.pt").is_file()


# --- real data ----------------------------------------------------------------------------------


def _have_fra_eng() -> bool:
    root = os.environ.get("DIVEKIT_DATA")
    return bool(root) and (Path(root) / "fra-eng.zip").is_file()


@pytest.mark.integration
@pytest.mark.skipif(not _have_fra_eng(), reason="fra-eng.zip not found under DIVEKIT_DATA")
def test_a_few_hundred_steps_on_real_pairs_lower_the_validation_loss(tmp_path):
    from divekit.pipeline import train_model

    options = {"src_vocab_size": 2000, "tgt_vocab_size": 2000, "embed_size": 64, "hidden_size": 64,
               "num_steps": 12}
    results = train_model("seq2seq", options=options, limit=6400,
                          train_overrides={"epochs": 3, "batch_size": 64, "lr": 0.005, "seed": 0},
                          out=tmp_path / "run", progress=False, log=lambda *_: None)
    losses = [h["val_loss"] for h in results["history"]]
    assert len(results["history"]) == 3 and sum(h["train_seconds"] for h in results["history"]) < 40
    assert losses[0] > losses[1] > losses[2], losses
    assert losses[-1] < 0.8 * torch.log(torch.tensor(2000.0)).item()
    assert results["test"]["test_loss"] < losses[0]
