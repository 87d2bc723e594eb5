# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6 Machine translation: encoder, decoder, beam search, BLEU
#
# *Runs top to bottom in about 85 s on a 2-core CPU (measured with jupytext and nbclient on a quiet machine, 2026-12-01); the translation experiment at the end trains on 20,000 pairs to keep it there.*
#
# An encoder GRU reads the English sentence $x$ into states; a decoder GRU, started from the encoder's
# final state, writes the French sentence one token at a time, each step conditioned on the tokens
# before it. Training maximises $\log P(y \mid x) = \sum_t \log P(y_t \mid y_{<t}, x)$ over the real
# tokens only (padding is masked out of the loss). At test time beam search keeps the $k$ best partial
# translations, scored with a length penalty,
#
# $$\operatorname{score}(y) = \frac{\log P(y \mid x)}{|y|^{\alpha}},$$
#
# and corpus BLEU compares the outputs with reference translations: the geometric mean of the clipped
# $n$-gram precisions $p_1..p_4$, times a brevity penalty for output shorter than the references,
#
# $$\text{BLEU} = \min\big(1, e^{1 - r/c}\big) \cdot \exp\Big(\tfrac14 \textstyle\sum_{n=1}^{4} \log p_n\Big).$$

# %%
# %matplotlib inline
import math
import tempfile
from collections import Counter
from html import escape
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from IPython.display import HTML, Image, display

import divekit
from divekit.metrics.bleu import corpus_bleu
from divekit.nn.masked_loss import masked_cross_entropy

WORK = Path(tempfile.mkdtemp(prefix="divekit-notebook-"))  # every run directory of this notebook goes here

# %% [markdown]
# ## BLEU by hand, beside `divekit.metrics.bleu`
#
# Two sentence pairs, counted by hand: every hypothesis $n$-gram that also occurs in its reference is a
# match (at most as often as it occurs there), and the counts are pooled over the corpus before the
# precisions are taken. divekit's `corpus_bleu` (tested equal to sacreBLEU) must give the same number.

# %%
hypotheses = ["the cat sat on the mat .", "there is a dog in the garden ."]
references = ["the cat sat on a mat .", "a dog is in the garden ."]


def ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


matches, totals = [0] * 4, [0] * 4
for hyp, ref in zip(hypotheses, references):
    h, r = hyp.split(), ref.split()
    for n in range(1, 5):
        matches[n - 1] += sum((ngrams(h, n) & ngrams(r, n)).values())  # clipped counts
        totals[n - 1] += sum(ngrams(h, n).values())
c, r = sum(len(h.split()) for h in hypotheses), sum(len(x.split()) for x in references)
brevity = min(1.0, math.exp(1 - r / c))
by_hand = 100 * brevity * math.exp(sum(math.log(m / t) for m, t in zip(matches, totals)) / 4)
ours = corpus_bleu(hypotheses, references)
print("matches", matches, "of", totals, f" brevity penalty {brevity:.3f}")
print(f"BLEU by hand {by_hand:.4f}   divekit {ours.score:.4f}   |difference| {abs(by_hand - ours.score):.1e}")
print(ours)

# %% [markdown]
# ## The masked loss beside torch's `ignore_index`
#
# A batch of target sentences is padded to one length; only the first `valid_len` tokens of each row
# count. Selecting the real positions and averaging over them is the same as torch's cross-entropy with
# the padded targets marked `ignore_index`.

# %%
torch.manual_seed(0)
logits = torch.randn(3, 6, 11, dtype=torch.float64)  # (B, T, V)
targets = torch.randint(0, 11, (3, 6))
valid_len = torch.tensor([6, 2, 4])
padded = targets.masked_fill(torch.arange(6) >= valid_len[:, None], -100)  # -100: torch's ignore_index
reference = F.cross_entropy(logits.reshape(-1, 11), padded.reshape(-1), ignore_index=-100)
print("max |masked loss - torch ignore_index| =",
      abs(masked_cross_entropy(logits, targets, valid_len) - reference).item())

# %% [markdown]
# ## Train a small encoder-decoder on English-French pairs
#
# A one-layer GRU encoder-decoder with 64 hidden units and 2,000-word vocabularies, on 10,000 of the
# Tatoeba pairs for three epochs. Its validation BLEU (greedy decoding) is printed after each epoch; it is
# far too small and too briefly trained to translate well, but the loss falls and the outputs start to
# take French shape.
#
# `threads=1` keeps training on one CPU thread: for models this small a second thread saves little,
# and on a busy machine it can slow every step down many times over.

# %%
options = {"embed_size": 64, "hidden_size": 64, "num_layers": 1, "src_vocab_size": 2000,
           "tgt_vocab_size": 2000, "num_steps": 16}
run = divekit.train("seq2seq", options=options, epochs=3, limit=10_000, threads=1, batch_size=128, lr=0.008,
                    schedule="constant", warmup_steps=0, out=WORK / "seq2seq")

# %%
fig, (ax_loss, ax_bleu) = plt.subplots(1, 2, figsize=(9, 3.2))
epochs = [e["epoch"] for e in run.history]
ax_loss.plot(epochs, [e["train_loss"] for e in run.history], marker="o", label="training")
ax_loss.plot(epochs, [e["val_loss"] for e in run.history], marker="o", label="validation")
ax_loss.set(xlabel="epoch", ylabel="masked cross-entropy", title="Loss per target token")
ax_loss.legend()
ax_bleu.plot(epochs, [e["val_bleu"] for e in run.history], marker="o")
ax_bleu.set(xlabel="epoch", ylabel="BLEU", title="Validation BLEU (greedy)")
fig.tight_layout()
display(fig)
plt.close(fig)

sentences = ["i am cold .", "he is calm .", "we are friends ."]
for beam in (1, 4):
    print(f"beam {beam}:", divekit.translate(run.run_dir / "best.pt", sentences, beam=beam))

# %% [markdown]
# ## The chapter's experiment, in quick mode
#
# `translation` trains a bigger encoder-decoder (256 units) and scores greedy and beam search with
# corpus BLEU on held-out pairs. Here it trains on 20,000 pairs to stay within a minute and a half;
# the tour's quick mode uses 25,000 and the full run all of them.

# %%
from divekit.report.notebook import show_result  # summary, tables and first figure



result = divekit.run_experiment("translation", out=WORK / "translation", train_pairs="20000")
show_result(result, WORK / "translation")

# %% [markdown]
# ## Where to go next
#
# - The full run (all pairs, the book's two-layer model): `divekit run translation --full`.
# - Train and use a model from the command line: `divekit train seq2seq`, then
#   `divekit translate --checkpoint RUN_DIR/best.pt "he is calm ." --beam 4` and
#   `divekit mt-evaluate --checkpoint RUN_DIR/best.pt`.
# - The code: `divekit.models.seq2seq`, `divekit.decode.beam` (and greedy search beside it),
#   `divekit.metrics.bleu`, `divekit.metrics.chrf`, `divekit.nn.masked_loss`.
