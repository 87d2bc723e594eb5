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
# # 5 Modern recurrent networks: gated cells and character language models
#
# *Runs top to bottom in about 35 s on a 2-core CPU (measured with jupytext and nbclient while the machine was otherwise quiet, load average about 1).*
#
# A recurrent network reads a sequence one step at a time and carries a hidden state $h_t$ forward.
# A plain RNN overwrites that state at every step, so gradients through many steps vanish or explode.
# The gated recurrent unit (GRU) learns when to keep it: a reset gate $r_t$ and an update gate $z_t$ mix
# the old state with a candidate,
#
# $$r_t = \sigma(W_{r} x_t + U_{r} h_{t-1} + b_r), \quad z_t = \sigma(W_{z} x_t + U_{z} h_{t-1} + b_z),$$
# $$\tilde h_t = \tanh\big(W_{h} x_t + b_{ih} + r_t \odot (U_{h} h_{t-1} + b_{hh})\big), \qquad
#   h_t = z_t \odot h_{t-1} + (1 - z_t) \odot \tilde h_t .$$
#
# A language model predicts the next character from the state; it is scored by the perplexity of
# held-out text, $\exp\big(-\frac1n \sum_t \log p(x_t \mid x_{<t})\big)$: 28 for a uniform guess over the
# 28 characters, lower is better.

# %%
# %matplotlib inline
import tempfile
from html import escape
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython.display import HTML, Image, display
from torch import nn

import divekit
import divekit.nn

WORK = Path(tempfile.mkdtemp(prefix="divekit-notebook-"))  # every run directory of this notebook goes here

# %% [markdown]
# ## Scratch GRU and LSTM beside torch's
#
# `divekit.nn.GRU` and `divekit.nn.LSTM` take torch's constructor arguments and name their parameters as
# torch does, so torch's weights load straight into them. Two stacked layers, both directions, float64:
# outputs, final states and the gradients of every weight agree to rounding.

# %%
torch.manual_seed(0)
x = torch.randn(7, 3, 5, dtype=torch.float64)  # (T, B, input): time-major, torch's default
for scratch_cls, torch_cls in ((divekit.nn.GRU, nn.GRU), (divekit.nn.LSTM, nn.LSTM)):
    ref = torch_cls(5, 8, num_layers=2, bidirectional=True).double()
    ours = scratch_cls(5, 8, num_layers=2, bidirectional=True).double()
    ours.load_state_dict(ref.state_dict())  # the same weights in both
    out_ref, state_ref = ref(x)
    out_ours, state_ours = ours(x)
    out_ref.pow(2).sum().backward()
    out_ours.pow(2).sum().backward()
    states = zip(state_ours, state_ref) if isinstance(state_ref, tuple) else [(state_ours, state_ref)]
    grads = dict(ref.named_parameters())
    print(f"{torch_cls.__name__}: max |output diff| {(out_ours - out_ref).abs().max().item():.1e}, "
          f"final state {max((a - b).abs().max().item() for a, b in states):.1e}, "
          f"weight gradients {max((p.grad - grads[n].grad).abs().max().item() for n, p in ours.named_parameters()):.1e}")

# %% [markdown]
# ## Train a GRU language model on *The Time Machine*
#
# A small GRU (128 hidden units) on the first 60,000 characters of the book, a few epochs of truncated
# backpropagation through time. `impl="torch"` runs torch's fused GRU kernel; `impl="scratch"` (the
# default) trains the same model through `divekit.nn.GRU`, more slowly.
#
# `threads=1` keeps training on one CPU thread: for models this small a second thread saves little,
# and on a busy machine it can slow every step down many times over.

# %%
run = divekit.train("gru-lm", options={"hidden": 128, "impl": "torch"}, epochs=8, limit=60_000, threads=1,
                    out=WORK / "gru-lm")
print(f"test perplexity {run.test['test_perplexity']:.2f} (uniform guessing: 28)")

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
epochs = [e["epoch"] for e in run.history]
ax.plot(epochs, [e["val_perplexity"] for e in run.history], marker="o", label="validation perplexity")
ax.plot(epochs, [torch.tensor(e["train_loss"]).exp().item() for e in run.history], marker="o", label="training perplexity")
ax.set(xlabel="epoch", ylabel="perplexity", title="GRU character model")
ax.legend()
fig.tight_layout()
display(fig)
plt.close(fig)

# %% [markdown]
# Sampling from the trained model, one character at a time (temperature 0.8):

# %%
print(divekit.sample(run.run_dir / "best.pt", "time traveller", 120, temperature=0.8))

# %% [markdown]
# ## The chapter's experiment, in quick mode
#
# `char-lm` trains the RNN, GRU and LSTM models on the same text and compares their perplexity with
# n-gram baselines. One epoch each keeps the cell short; the tour's quick mode trains two to eight
# (its best LSTM reaches 3.9 test perplexity in about a minute for all five models).

# %%
from divekit.report.notebook import show_result  # summary, tables and first figure



result = divekit.run_experiment("char-lm", out=WORK / "char-lm", epochs="1")
show_result(result, WORK / "char-lm")

# %% [markdown]
# ## Where to go next
#
# - The full comparison: `divekit run char-lm --full`; bidirectional networks and an ELMo-style layer mix:
#   `divekit run bidirectional`.
# - Train the deep model with its full recipe, then sample from it:
#   `divekit train deep-lstm-lm` and `divekit sample --checkpoint RUN_DIR/best.pt --prefix "time traveller"`.
# - The code: `divekit.nn.rnn_cells` (one step of each cell), `divekit.nn.rnn` (layers, stacking,
#   directions), `divekit.models.char_lm`, `divekit.metrics.perplexity`.
