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
# # 1 Foundations: from pixels to class probabilities
#
# *Runs top to bottom in about 33 s on a 2-core CPU (measured with jupytext and nbclient while the machine was otherwise quiet, load average about 1).*
#
# A classifier turns a 28 x 28 Fashion-MNIST image $x$ into one score $o_k$ per class. The softmax
# turns those scores into probabilities, and training lowers the cross-entropy of the true class $y$,
# averaged over the training images:
#
# $$\hat{y} = \operatorname{softmax}(W x + b), \qquad
#   \hat{y}_k = \frac{\exp o_k}{\sum_j \exp o_j}, \qquad
#   \ell(x, y) = -\log \hat{y}_y .$$
#
# Softmax regression is this model with one linear layer; the multilayer perceptron (MLP) puts a hidden
# layer with a ReLU in between. Both are registered models of divekit, trained by the same loop.

# %%
# %matplotlib inline
import tempfile
from html import escape
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from IPython.display import HTML, Image, display

import divekit

WORK = Path(tempfile.mkdtemp(prefix="divekit-notebook-"))  # every run directory of this notebook goes here
print(divekit.list_models("*"))

# %% [markdown]
# ## Softmax and cross-entropy from scratch, beside torch
#
# Subtracting the largest score before exponentiating changes nothing (the factor $e^{-c}$ cancels in
# the fraction) but keeps $\exp$ from overflowing. We compare with `torch.softmax` and
# `F.cross_entropy` in float64 on scores large enough that a naive $\exp$ would overflow in float32.

# %%
def softmax(o: torch.Tensor) -> torch.Tensor:
    o = o - o.max(dim=1, keepdim=True).values  # exp(o - c) / sum exp(o - c) = exp(o) / sum exp(o)
    e = o.exp()
    return e / e.sum(dim=1, keepdim=True)


def cross_entropy(o: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    log_probs = o - o.logsumexp(dim=1, keepdim=True)  # log softmax, computed stably
    return -log_probs[torch.arange(len(y)), y].mean()  # -log y_hat_y, averaged over the batch


g = torch.Generator().manual_seed(0)
scores = 100 * torch.randn(8, 10, generator=g, dtype=torch.float64)
labels = torch.randint(0, 10, (8,), generator=g)
print("softmax       max |scratch - torch| =", (softmax(scores) - torch.softmax(scores, dim=1)).abs().max().item())
print("cross-entropy |scratch - torch|     =", abs(cross_entropy(scores, labels) - F.cross_entropy(scores, labels)).item())

# %% [markdown]
# The registered model computes exactly $W x + b$ on the flattened image: its output equals the matrix
# product written out by hand.

# %%
model = divekit.create_model("softmax-regression")
images = torch.rand(4, 1, 28, 28)
by_hand = images.flatten(1) @ model.linear.weight.T + model.linear.bias
print("output shape", tuple(model(images).shape), " max |model - by hand| =",
      (model(images) - by_hand).abs().max().item())

# %% [markdown]
# ## A small training run
#
# `divekit.train` runs the same pipeline as `divekit train`: it trains on the training split, keeps the
# epoch with the best validation accuracy and scores that model once on the test split. `limit=3000`
# trains on a slice of 3,000 images, so this takes seconds rather than minutes.
#
# `threads=1` keeps training on one CPU thread: for models this small a second thread saves little,
# and on a busy machine it can slow every step down many times over.

# %%
runs = {}
for name in ("softmax-regression", "mlp"):
    runs[name] = divekit.train(name, epochs=3, limit=3000, threads=1, out=WORK / name)
    print(f"{name}: test accuracy {runs[name].test['test_accuracy']:.1%}")

# %%
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.2))
for name, run in runs.items():
    epochs = [e["epoch"] for e in run.history]
    ax_loss.plot(epochs, [e["train_loss"] for e in run.history], marker="o", label=name)
    ax_acc.plot(epochs, [e["val_accuracy"] for e in run.history], marker="o", label=name)
ax_loss.set(xlabel="epoch", ylabel="training loss", title="Cross-entropy on the training slice")
ax_acc.set(xlabel="epoch", ylabel="validation accuracy", title="Accuracy on held-out images")
ax_acc.legend()
fig.tight_layout()
display(fig)
plt.close(fig)

# %% [markdown]
# ## The chapter's experiment, in quick mode
#
# `fashion-mnist-baselines` trains softmax regression, the MLP and both LeNets with the same loop and
# compares them on the test split. The tour's quick mode trains them on all 55,000 images (the modern
# LeNet passes 91%, in about a minute); here 10,000 images keep the cell to seconds.

# %%
from divekit.report.notebook import show_result  # summary, tables and first figure


result = divekit.run_experiment("fashion-mnist-baselines", out=WORK / "fashion-mnist-baselines",
                                train_images="10000")
show_result(result, WORK / "fashion-mnist-baselines")

# %% [markdown]
# ## Where to go next
#
# - The full experiment, on all 55,000 training images for ten epochs: `divekit run fashion-mnist-baselines --full`
# - One model with its book recipe: `divekit train mlp` (add `--option dropout=0.5` for the next chapter)
# - The code: `divekit.models.softmax_regression`, `divekit.models.mlp`, the training loop in
#   `divekit.train.trainer`, the image task in `divekit.tasks.image_classification`.
