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
# # 7 Attention and the Transformer
#
# *Runs top to bottom in about 65 s on a 2-core CPU (measured with jupytext and nbclient while the machine was otherwise quiet, load average about 1).*
#
# Attention lets every output position read every input position. A query $q$ is compared with each
# key $k_j$; the softmax of the scores weights the values $v_j$. Scaled by $\sqrt d$ so that the scores
# of $d$-dimensional vectors stay near unit variance, and with masked positions (padding, or the future
# in a language model) removed before the softmax:
#
# $$\operatorname{Attention}(Q, K, V) = \operatorname{softmax}\!\Big(\frac{Q K^\top}{\sqrt d} + M\Big) V,
#   \qquad M_{ij} = \begin{cases} 0 & \text{key } j \text{ visible to query } i \\ -\infty & \text{masked.} \end{cases}$$
#
# Multi-head attention runs $H$ such attentions on learned projections of width $D/H$ and concatenates
# them. A Transformer stacks attention and a position-wise feed-forward network with residual connections
# and layer norm. GPT is a stack of such blocks with a causal mask (position $t$ sees only $\le t$) trained
# to predict the next token; BERT uses no causal mask and is trained to fill in masked words.

# %%
# %matplotlib inline
import tempfile
from html import escape
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from IPython.display import HTML, Image, display
from torch import nn

import divekit
import divekit.nn
from divekit.nn.attention import masked_softmax, scaled_dot_product_attention

WORK = Path(tempfile.mkdtemp(prefix="divekit-notebook-"))  # every run directory of this notebook goes here
print([m for m in divekit.list_models() if m in ("seq2seq-attention", "transformer", "gpt-lm", "bert", "bert-question")])

# %% [markdown]
# ## Masked softmax and attention beside torch
#
# The scratch masked softmax gives masked keys weight exactly zero; torch gets the same by filling the
# masked scores with $-\infty$. The scratch scaled dot-product attention matches
# `F.scaled_dot_product_attention` with the same keep mask, and `divekit.nn.MultiheadAttention`, loaded
# with the weights of an `nn.MultiheadAttention`, matches it with a padding mask and a causal mask.

# %%
torch.manual_seed(0)
B, H, T, S, d = 2, 4, 5, 6, 8
scores = torch.randn(B, T, S, dtype=torch.float64)
valid_lens = torch.tensor([3, 6])  # the first sequence has 3 real keys, the second 6
keep = torch.arange(S) < valid_lens[:, None, None]  # (B, 1, S), True = may attend
ours = masked_softmax(scores, valid_lens)
theirs = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1)
print("masked softmax      max |scratch - torch| =", (ours - theirs).abs().max().item(),
      "  weight on padding:", ours[0, :, 3:].abs().max().item())

q, k, v = (torch.randn(B, H, n, d, dtype=torch.float64) for n in (T, S, S))
mask = torch.rand(B, 1, T, S) > 0.3
mask[..., 0] = True  # every query keeps at least one key
print("dot-product attn.   max |scratch - torch| =",
      (scaled_dot_product_attention(q, k, v, mask) - F.scaled_dot_product_attention(q, k, v, attn_mask=mask)).abs().max().item())

D = 16
ref = nn.MultiheadAttention(D, num_heads=4, batch_first=True).double().eval()
mha = divekit.nn.MultiheadAttention(D, num_heads=4, batch_first=True).double().eval()
mha.load_state_dict(ref.state_dict())  # same parameter names: torch's weights load as they are
x = torch.randn(B, T, D, dtype=torch.float64)
padding = torch.arange(T) >= torch.tensor([5, 3])[:, None]  # (B, T), True = padding, torch's convention
causal = torch.ones(T, T, dtype=torch.bool).triu(1)  # True above the diagonal: the future is blocked
out_ours, w_ours = mha(x, x, x, key_padding_mask=padding, attn_mask=causal)
out_ref, w_ref = ref(x, x, x, key_padding_mask=padding, attn_mask=causal)
print("MultiheadAttention  max |scratch - torch| =", (out_ours - out_ref).abs().max().item(),
      " weights:", (w_ours - w_ref).abs().max().item())

# %% [markdown]
# ## GPT and BERT: the mask is the difference
#
# Change the last token of a sequence. A GPT's logits at every earlier position must stay exactly the
# same (nothing there may see the future), while a BERT's change everywhere, since every position reads
# the whole sequence.

# %%
gpt = divekit.create_model("gpt-lm", d_model=32, num_heads=2, layers=2, ffn_hidden=64, max_len=16,
                           num_steps=16, context_keep=8).eval()
bert = divekit.create_model("bert", vocab_size=28, d_model=32, num_heads=2, layers=2, ffn_hidden=64,
                            max_len=16, num_steps=16).eval()
tokens = torch.randint(4, 28, (1, 12))
changed = tokens.clone()
changed[0, -1] = (tokens[0, -1] + 1) % 28
with torch.no_grad():
    gpt_diff = (gpt(tokens)[0] - gpt(changed)[0])[0, :-1].abs().max().item()
    bert_diff = (bert(tokens) - bert(changed))[0, :-1].abs().max().item()
print(f"earlier positions after changing the last token: GPT moves by {gpt_diff:.1e}, BERT by {bert_diff:.1e}")

# %% [markdown]
# ## Train a small GPT on *The Time Machine*
#
# Two pre-norm blocks of width 64, a 64-character window, on the first 30,000 characters for three
# epochs: a character-level GPT, scored by perplexity like the recurrent models of chapter 5.
#
# `threads=1` keeps training on one CPU thread: for models this small a second thread saves little,
# and on a busy machine it can slow every step down many times over.

# %%
options = {"d_model": 64, "num_heads": 4, "layers": 2, "ffn_hidden": 256, "max_len": 64, "num_steps": 64,
           "context_keep": 32, "dropout": 0.0}
run = divekit.train("gpt-lm", options=options, epochs=3, limit=30_000, threads=1, batch_size=16, lr=0.003,
                    warmup_steps=20, precision="fp32", out=WORK / "gpt-lm")

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
epochs = [e["epoch"] for e in run.history]
ax.plot(epochs, [e["val_perplexity"] for e in run.history], marker="o", label="validation perplexity")
ax.axhline(28, color="grey", ls=":", label="uniform guess")
ax.set(xlabel="epoch", ylabel="perplexity", title="A small character GPT")
ax.legend()
fig.tight_layout()
display(fig)
plt.close(fig)
print(divekit.sample(run.run_dir / "best.pt", "the time machine", 100))

# %% [markdown]
# ## The chapter's experiment, in quick mode
#
# `attention` trains the GRU encoder-decoder, its Bahdanau-attention version and a small Transformer
# on the same English-French pairs, compares them, and draws attention heatmaps and the positional
# encodings.
# Here each model trains on 5,000 pairs, so the cell runs in under a minute and the models barely
# translate yet; the tour's quick run (`divekit run attention`, about three minutes) trains them on
# 25,000 and 100,000 pairs, and its Transformer passes 20 test BLEU.

# %%
from divekit.report.notebook import show_result  # summary, tables and first figure



result = divekit.run_experiment("attention", out=WORK / "attention", train_pairs="5000")
show_result(result, WORK / "attention")

# %% [markdown]
# ## Where to go next
#
# - The full comparison: `divekit run attention --full`; the models one by one:
#   `divekit train seq2seq-attention`, `divekit train transformer`, `divekit train gpt-lm`,
#   `divekit train bert` and `divekit train bert-question` (BERT fine-tuned on a sentence task).
# - The code: `divekit.nn.attention` (masked softmax, dot-product and additive attention),
#   `divekit.nn.mha` and `divekit.nn.multihead_attention`, `divekit.nn.transformer_blocks`,
#   `divekit.nn.positional`, `divekit.models.transformer`, `divekit.models.gpt`, `divekit.models.bert`.
