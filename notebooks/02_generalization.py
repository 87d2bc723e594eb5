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
# # 2 Generalization: fitting the training data is not the goal
#
# *Runs top to bottom in about 10 s on a 2-core CPU (measured with jupytext and nbclient while the machine was otherwise quiet, load average about 1).*
#
# A model is judged on data it has not seen. With enough capacity it can drive the training loss to
# zero and still predict new data badly: the gap between training and test loss grows. Capacity
# control trades some training fit for a smaller gap. Weight decay adds an L2 penalty on the weights,
#
# $$L_\lambda(w) = L(w) + \frac{\lambda}{2}\lVert w \rVert^2, \qquad
#   w \leftarrow w - \eta\,\big(\nabla L(w) + \lambda w\big),$$
#
# and dropout zeroes each hidden unit with probability $p$ during training, scaling the survivors by
# $1/(1-p)$ so that the expected activation is unchanged: $y_i = m_i x_i / (1-p)$, $m_i \sim \text{Bernoulli}(1-p)$.

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
# ## Scratch dropout beside `nn.Dropout`
#
# The two draw their masks with different random kernels, so single masks differ; what must agree is
# the rule. On a million ones, both zero a fraction $p$ of the entries, scale every survivor to exactly
# $1/(1-p)$, and in evaluation mode both are the identity.

# %%
p = 0.3
x = torch.ones(1_000_000, dtype=torch.float64)
for layer in (divekit.nn.Dropout(p), nn.Dropout(p)):
    y = layer.train()(x)
    survivors = y[y != 0]
    print(f"{type(layer).__module__}.Dropout: zeroed {(y == 0).double().mean().item():.4f}, "
          f"survivors all {survivors.unique().tolist()}, eval is identity: {torch.equal(layer.eval()(x), x)}")

# %% [markdown]
# ## Weight decay is an L2 penalty
#
# One SGD step on $L + \frac{\lambda}{2}\lVert w\rVert^2$, with the penalty written out, lands on the same
# weights as torch's `SGD(weight_decay=λ)` on $L$ alone.

# %%
torch.manual_seed(0)
X, t = torch.randn(64, 20, dtype=torch.float64), torch.randn(64, dtype=torch.float64)
w0 = torch.randn(20, dtype=torch.float64)
lr, lam = 0.1, 0.05

w_penalty = w0.clone().requires_grad_()
loss = ((X @ w_penalty - t) ** 2).mean() + lam / 2 * w_penalty.pow(2).sum()  # L(w) + (λ/2) ||w||²
loss.backward()
with torch.no_grad():
    w_penalty -= lr * w_penalty.grad

w_torch = w0.clone().requires_grad_()
opt = torch.optim.SGD([w_torch], lr=lr, weight_decay=lam)
((X @ w_torch - t) ** 2).mean().backward()
opt.step()
print("max |penalty step - SGD weight_decay step| =", (w_penalty - w_torch).abs().max().item())

# %% [markdown]
# ## Dropout in a real training run
#
# The same MLP trained on only 2,000 Fashion-MNIST images, without and with dropout (`p = 0.5`).
# Watch the gap between training and validation accuracy: with so few images the plain MLP fits its
# training slice faster than it generalises, and dropout narrows the gap.
#
# `threads=1` keeps training on one CPU thread: for models this small a second thread saves little,
# and on a busy machine it can slow every step down many times over.

# %%
runs = {}
for label, dropout in (("no dropout", 0.0), ("dropout 0.5", 0.5)):
    runs[label] = divekit.train("mlp", options={"dropout": dropout, "hidden": (512,)}, epochs=6, limit=2000, threads=1,
                                out=WORK / f"mlp-dropout-{dropout}")

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for (label, run), color in zip(runs.items(), ("tab:blue", "tab:orange")):
    epochs = [e["epoch"] for e in run.history]
    ax.plot(epochs, [e["train_accuracy"] for e in run.history], color=color, ls="--", label=f"{label}: train")
    ax.plot(epochs, [e["val_accuracy"] for e in run.history], color=color, marker="o", label=f"{label}: validation")
ax.set(xlabel="epoch", ylabel="accuracy", title="MLP on 2,000 images")
ax.legend()
fig.tight_layout()
display(fig)
plt.close(fig)
for label, run in runs.items():
    last = run.history[-1]
    print(f"{label}: train {last['train_accuracy']:.1%}  validation {last['val_accuracy']:.1%}  "
          f"test {run.test['test_accuracy']:.1%}")

# %% [markdown]
# ## The chapter's experiment, in quick mode
#
# `polynomial-fit` fits polynomials of degree 1, 3 and 20 to data from a cubic: the first underfits,
# the third overfits its 15 training points, and a sweep over every degree shows test error falling and
# then rising with capacity.

# %%
from divekit.report.notebook import show_result  # summary, tables and first figure



result = divekit.run_experiment("polynomial-fit", out=WORK / "polynomial-fit")
show_result(result, WORK / "polynomial-fit")

# %% [markdown]
# ## Where to go next
#
# - The other experiments of the chapter: `divekit run weight-decay` and `divekit run dropout-mlp`
#   (quick mode); add `--full` for the full-size runs, e.g. `divekit run polynomial-fit --full`.
# - The code: `divekit.experiments.polynomial_fit`, `divekit.experiments.weight_decay`, the scratch
#   dropout in `divekit.nn.dropout`.
