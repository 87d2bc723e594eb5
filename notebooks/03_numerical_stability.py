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
# # 3 Numerical stability: keeping signals and gradients in range
#
# *Runs top to bottom in about 16 s on a 2-core CPU (measured with jupytext and nbclient while the machine was otherwise quiet, load average about 1).*
#
# Backpropagation through $L$ layers multiplies $L$ Jacobians, so a gradient shrinks or grows
# geometrically with depth unless each layer keeps the variance of what passes through it near one.
# For $y = Wx$ with $n_\text{in}$ inputs, $\operatorname{Var}[y] = n_\text{in}\operatorname{Var}[w]\operatorname{Var}[x]$,
# and the backward pass scales by $n_\text{out}\operatorname{Var}[w]$. Xavier initialisation balances both;
# Kaiming corrects for the ReLU, which zeroes half its input:
#
# $$\operatorname{Var}[w] = \frac{2}{n_\text{in} + n_\text{out}} \ \text{(Xavier)}, \qquad
#   \operatorname{Var}[w] = \frac{2}{n_\text{in}} \ \text{(Kaiming, ReLU)}.$$
#
# What initialisation cannot fix, two guards handle: clipping caps the global gradient norm,
# $g \leftarrow g \min(1, \theta / \lVert g \rVert)$, and batch normalisation re-standardises every
# layer's inputs over the minibatch.

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
from divekit.nn import init as scratch_init
from divekit.nn.clip import clip_grad_norm

WORK = Path(tempfile.mkdtemp(prefix="divekit-notebook-"))  # every run directory of this notebook goes here

# %% [markdown]
# ## Scratch initialisers, clipping and batch norm beside torch
#
# Given the same random generator, the scratch initialisers draw exactly torch's weights; the scratch
# clipping rescales gradients exactly as `clip_grad_norm_`; the scratch `BatchNorm1d`, with the same
# affine weights, gives torch's outputs, gradients and running statistics.

# %%
for name in ("xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_"):
    ours = getattr(scratch_init, name)(torch.empty(64, 128, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    theirs = getattr(nn.init, name)(torch.empty(64, 128, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    print(f"{name:18s} max |scratch - torch| = {(ours - theirs).abs().max().item():.1e}   std {ours.std().item():.4f}")

torch.manual_seed(0)
grads = [torch.randn(30, 20, dtype=torch.float64) * 5, torch.randn(20, dtype=torch.float64) * 5]
ours, theirs = [nn.Parameter(torch.zeros_like(g)) for g in grads], [nn.Parameter(torch.zeros_like(g)) for g in grads]
for p, q, g in zip(ours, theirs, grads):
    p.grad, q.grad = g.clone(), g.clone()
norm_ours, norm_theirs = clip_grad_norm(ours, max_norm=1.0), nn.utils.clip_grad_norm_(theirs, max_norm=1.0)
print(f"clipping: norm before {norm_ours.item():.3f} (torch {norm_theirs.item():.3f}), max |clipped grads differ| =",
      max((p.grad - q.grad).abs().max().item() for p, q in zip(ours, theirs)))

bn_ours, bn_torch = divekit.nn.BatchNorm1d(16).double(), nn.BatchNorm1d(16).double()
with torch.no_grad():
    bn_ours.weight.uniform_(0.5, 1.5)
    bn_ours.bias.normal_()
bn_torch.load_state_dict(bn_ours.state_dict())  # same parameter and buffer names, so the weights copy over
x = (3 * torch.randn(32, 16, dtype=torch.float64) + 1).requires_grad_()
y_ours, y_torch = bn_ours(x), bn_torch(x)
(g_ours,), (g_torch,) = torch.autograd.grad(y_ours.pow(3).sum(), x), torch.autograd.grad(y_torch.pow(3).sum(), x)
print("BatchNorm1d: max |output diff| =", (y_ours - y_torch).abs().max().item(),
      " |input grad diff| =", (g_ours - g_torch).abs().max().item(),
      " |running mean diff| =", (bn_ours.running_mean - bn_torch.running_mean).abs().max().item())

# %% [markdown]
# ## Why the scale matters: activations through a deep ReLU stack
#
# Twenty linear + ReLU layers of width 256, applied to standard normal inputs. With Kaiming weights the
# spread of the activations stays put; Xavier weights lose about half the variance at each ReLU, and a
# small fixed standard deviation kills the signal within a few layers.

# %%
def activation_stds(init_fn, depth: int = 20, width: int = 256) -> list[float]:
    g = torch.Generator().manual_seed(0)
    h, stds = torch.randn(1024, width, generator=g), []
    for _ in range(depth):
        w = init_fn(torch.empty(width, width), g)
        h = torch.relu(h @ w.T)
        stds.append(h.std().item())
    return stds


schemes = {
    "Kaiming": lambda w, g: scratch_init.kaiming_normal_(w, nonlinearity="relu", generator=g),
    "Xavier": lambda w, g: scratch_init.xavier_normal_(w, generator=g),
    "normal(0, 0.01)": lambda w, g: scratch_init.normal_with_std_(w, 0.01, generator=g),
}
fig, ax = plt.subplots(figsize=(6, 3.5))
for label, fn in schemes.items():
    ax.semilogy(range(1, 21), activation_stds(fn), marker=".", label=label)
ax.set(xlabel="layer", ylabel="std of the activations", title="A deep ReLU stack at initialisation")
ax.legend()
fig.tight_layout()
display(fig)
plt.close(fig)

# %% [markdown]
# ## Batch norm in a real training run
#
# The book's LeNet uses sigmoids, which saturate: with few epochs it barely leaves chance level.
# The same network with batch norm before every sigmoid (`bn-lenet`) trains at once. Both on 3,000
# Fashion-MNIST images for three epochs, each with its own recipe.
#
# `threads=1` keeps training on one CPU thread: for models this small a second thread saves little,
# and on a busy machine it can slow every step down many times over.

# %%
runs = {name: divekit.train(name, epochs=3, limit=3000, threads=1, out=WORK / name) for name in ("lenet", "bn-lenet")}

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for name, run in runs.items():
    ax.plot([e["epoch"] for e in run.history], [e["val_accuracy"] for e in run.history], marker="o", label=name)
ax.axhline(0.1, color="grey", ls=":", label="chance")
ax.set(xlabel="epoch", ylabel="validation accuracy", title="LeNet with and without batch norm")
ax.legend()
fig.tight_layout()
display(fig)
plt.close(fig)

# %% [markdown]
# ## The chapter's experiment, in quick mode
#
# `initialization` trains the same deep network from several initialisations (the scratch Xavier and Kaiming among them) and compares how far each gets.

# %%
from divekit.report.notebook import show_result  # summary, tables and first figure



result = divekit.run_experiment("initialization", out=WORK / "initialization")
show_result(result, WORK / "initialization")

# %% [markdown]
# ## Where to go next
#
# - All three experiments of the chapter: `divekit run gradient-flow`, `divekit run initialization`,
#   `divekit run batchnorm-depth`; add `--full` for the full-size runs.
# - The code: `divekit.nn.init` (Xavier and Kaiming), `divekit.nn.clip` (clipping by global norm),
#   `divekit.nn.batchnorm`, and `divekit train bn-lenet` for the model above with its full recipe.
