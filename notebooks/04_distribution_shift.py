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
# # 4 Distribution shift: when test data differ from training data
#
# *Runs top to bottom in about 15 s on a 2-core CPU (measured with jupytext and nbclient while the machine was otherwise quiet, load average about 1).*
#
# A classifier is trained on a source distribution and deployed on a target one. Under **label shift**
# the class proportions change, $q_t(y) \ne q_s(y)$, while each class looks the same, $p_t(x \mid y) = p_s(x \mid y)$.
# Everything then hinges on the weights $w_y = q_t(y) / q_s(y)$, and they can be estimated without a single
# target label. Let $C_{ij} = P_s(f(x) = i, y = j)$ be the classifier's joint confusion matrix on held-out
# source data and $\mu_i = P_t(f(x) = i)$ its mean prediction on the unlabelled target inputs. Label shift gives
#
# $$\mu = C\,w \qquad\Longrightarrow\qquad \hat w = C^{-1}\mu
#   \quad\text{(black-box shift estimation, BBSE)},$$
#
# and the corrected classifier predicts $\arg\max_y\, w_y\, p_s(y \mid x)$, i.e. logits $+ \log w$.
# (Covariate shift, the other common case, reweights inputs instead: $\beta(x) = p_t(x)/p_s(x)$.)

# %%
# %matplotlib inline
import tempfile
from html import escape
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython.display import HTML, Image, display

import divekit
from divekit.data.fashion_mnist import CLASS_NAMES
from divekit.data.shift import class_prior, dominant_prior, prior_counts
from divekit.shift.label import adjust_logits, bbse_weights, em_prior, joint_confusion, prediction_mean

WORK = Path(tempfile.mkdtemp(prefix="divekit-notebook-"))  # every run directory of this notebook goes here

# %% [markdown]
# ## The BBSE solver against a plain linear solve
#
# divekit solves $C w = \mu$ as a least-squares problem constrained to valid weights ($w \ge 0$ and
# $\sum_y w_y q_s(y) = 1$), since with noisy estimates the plain solution can go negative. When $\mu$ is
# exactly $C w$ for valid weights, the constrained solution must be the unconstrained one,
# `torch.linalg.solve(C, mu)`, and the true $w$.

# %%
g = torch.Generator().manual_seed(0)
K = 10
hits = torch.eye(K, dtype=torch.float64) * 8 + torch.rand(K, K, generator=g, dtype=torch.float64)
C = hits / hits.sum() # a joint confusion matrix: a strong diagonal, entries summing to 1
q_source = C.sum(0)  # column sums: the source label prior
w_true = torch.rand(K, generator=g, dtype=torch.float64) * 2
w_true = w_true / (w_true @ q_source)  # valid weights: the target prior q_source * w sums to 1
mu = C @ w_true
w_bbse = bbse_weights(C, mu)
print("max |BBSE - linalg.solve| =", (w_bbse - torch.linalg.solve(C, mu)).abs().max().item())
print("max |BBSE - true weights| =", (w_bbse - w_true).abs().max().item())

# %% [markdown]
# ## A real classifier under a real shift
#
# Train softmax regression on a slice of Fashion-MNIST (balanced classes), then build a target set from
# the test images in which one class, shirts, makes up half of the images. The classifier never sees a
# target label; the weights come from its confusion matrix on the validation images and its predictions
# on the target.
#
# `threads=1` keeps training on one CPU thread: for models this small a second thread saves little,
# and on a busy machine it can slow every step down many times over.

# %%
run = divekit.train("softmax-regression", epochs=4, limit=5000, threads=1, out=WORK / "softmax-regression")
task = divekit.load(run.run_dir).task
val_logits, val_labels = task.predict(run.model, "val")
test_logits, test_labels = task.predict(run.model, "test")

shirt = CLASS_NAMES.index("Shirt")
target_prior = dominant_prior(K, shirt, 0.5)
counts = prior_counts(target_prior, 1800).tolist()
g = torch.Generator().manual_seed(1)
pick = torch.cat([torch.nonzero(test_labels == k).flatten()[torch.randperm(int((test_labels == k).sum()), generator=g)[:n]]
                  for k, n in enumerate(counts)])
target_logits, target_labels = test_logits[pick], test_labels[pick]

q_s = class_prior(val_labels, K)
w_true = class_prior(target_labels, K) / q_s
C = joint_confusion(val_logits.argmax(1), val_labels, K)
w_bbse = bbse_weights(C, prediction_mean(target_logits.argmax(1), K))
w_em = em_prior(target_logits.double().softmax(1), q_s).weights

fig, ax = plt.subplots(figsize=(8, 3.5))
x = torch.arange(K)
for offset, (label, w) in zip((-0.27, 0, 0.27), (("true", w_true), ("BBSE", w_bbse), ("EM", w_em))):
    ax.bar(x + offset, w, width=0.27, label=label)
ax.set_xticks(x, CLASS_NAMES, rotation=30, ha="right")
ax.set(ylabel="w_y = q_t(y) / q_s(y)", title="Label weights estimated without target labels")
ax.legend()
fig.tight_layout()
display(fig)
plt.close(fig)


def accuracy(logits: torch.Tensor) -> float:
    return (logits.argmax(1) == target_labels).double().mean().item()


print(f"target accuracy: uncorrected {accuracy(target_logits):.1%}, corrected with BBSE "
      f"{accuracy(adjust_logits(target_logits, w_bbse)):.1%}, with the true weights "
      f"{accuracy(adjust_logits(target_logits, w_true)):.1%}")

# %% [markdown]
# The training run itself, epoch by epoch:

# %%
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot([e["epoch"] for e in run.history], [e["train_loss"] for e in run.history], marker="o", label="training loss")
ax.plot([e["epoch"] for e in run.history], [e["val_loss"] for e in run.history], marker="o", label="validation loss")
ax.set(xlabel="epoch", ylabel="cross-entropy", title="softmax regression on 5,000 images")
ax.legend()
fig.tight_layout()
display(fig)
plt.close(fig)

# %% [markdown]
# ## The chapter's experiment, in quick mode
#
# `label-shift` repeats this over several shifted priors and seeds, compares BBSE with EM, and corrects
# by posterior adjustment or by retraining with class weights, with 95% confidence intervals.

# %%
from divekit.report.notebook import show_result  # summary, tables and first figure



result = divekit.run_experiment("label-shift", out=WORK / "label-shift")
show_result(result, WORK / "label-shift")

# %% [markdown]
# ## Where to go next
#
# - The other experiments of the chapter: `divekit run covariate-shift` (domain-classifier importance
#   weights) and `divekit run concept-shift` (a drifting stream and a drift detector); `--full` for the
#   full-size runs, e.g. `divekit run label-shift --full`.
# - The code: `divekit.shift.label` (BBSE, EM, posterior adjustment), `divekit.shift.covariate`,
#   `divekit.shift.concept`, and the shifted splits in `divekit.data.shift`.
