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
# # 8 Convolutional networks
#
# *Runs top to bottom in about 11 s on a 2-core CPU (measured with jupytext and nbclient while the machine was otherwise quiet, load average about 1).*
#
# A convolutional layer slides one small kernel $K$ over the image and takes a weighted sum of each
# window (a cross-correlation, as deep-learning libraries compute it):
#
# $$Y[i, j] = \sum_{a=0}^{k_h - 1} \sum_{b=0}^{k_w - 1} X[i + a,\, j + b]\; K[a, b] + b_0,
#   \qquad H_\text{out} = \Big\lfloor \frac{H + 2p - k}{s} \Big\rfloor + 1 .$$
#
# The same few weights are used at every position, so a layer is cheap and finds a pattern wherever it
# occurs. Pooling summarises each window (its maximum or mean) and shrinks the image. LeNet stacks two
# such convolution + pooling stages before a classifier; later networks (VGG, NiN, GoogLeNet, ResNet,
# DenseNet) go deeper, with batch norm and residual connections to keep them trainable.

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
from divekit.nn.conv import conv_output_shape, corr2d

WORK = Path(tempfile.mkdtemp(prefix="divekit-notebook-"))  # every run directory of this notebook goes here

# %% [markdown]
# ## The convolution by hand, then the scratch layers beside torch's
#
# `corr2d` is the two loops of the equation above. `divekit.nn.Conv2d` takes `nn.Conv2d`'s arguments
# (stride, padding, dilation, groups) and parameter names, so it loads its weights; with those, outputs
# and gradients agree in float64. The same holds for the pooling layers.

# %%
X = torch.ones(4, 8)
X[:, 2:6] = 0  # a dark vertical stripe on a light image
K = torch.tensor([[1.0, -1.0]])  # responds where brightness changes from left to right
print("corr2d:\n", corr2d(X, K))
print("max |corr2d - F.conv2d| =", (corr2d(X, K) - F.conv2d(X[None, None], K[None, None])[0, 0]).abs().max().item())

torch.manual_seed(0)
x = torch.randn(2, 4, 11, 9, dtype=torch.float64, requires_grad=True)
for kwargs in ({"kernel_size": 3, "padding": 1}, {"kernel_size": (3, 2), "stride": 2, "dilation": (1, 2)},
               {"kernel_size": 3, "padding": "same", "groups": 2}):
    ref = nn.Conv2d(4, 6, **kwargs).double()
    ours = divekit.nn.Conv2d(4, 6, **kwargs).double()
    ours.load_state_dict(ref.state_dict())
    y_ref, y_ours = ref(x), ours(x)
    (g_ref,) = torch.autograd.grad(y_ref.pow(2).sum(), x)
    (g_ours,) = torch.autograd.grad(y_ours.pow(2).sum(), x)
    print(f"Conv2d {kwargs}: out {tuple(y_ours.shape)}, max |output diff| {(y_ours - y_ref).abs().max().item():.1e}, "
          f"|input grad diff| {(g_ours - g_ref).abs().max().item():.1e}")

for scratch_cls, torch_cls in ((divekit.nn.MaxPool2d, nn.MaxPool2d), (divekit.nn.AvgPool2d, nn.AvgPool2d)):
    diff = (scratch_cls(3, stride=2, padding=1)(x) - torch_cls(3, stride=2, padding=1)(x)).abs().max().item()
    print(f"{torch_cls.__name__}(3, stride=2, padding=1): max |scratch - torch| = {diff:.1e}")
print("output size for H=28, k=5, p=2, s=1:", conv_output_shape(28, 28, 5, padding=2))

# %% [markdown]
# ## Train LeNet on Fashion-MNIST
#
# The modern LeNet (ReLU, max pooling, batch norm) on 4,000 training images for three epochs.
# `scratch=True` would build the same network from `divekit.nn`'s layers instead of `torch.nn`'s.
#
# `threads=1` keeps training on one CPU thread: for models this small a second thread saves little,
# and on a busy machine it can slow every step down many times over.

# %%
run = divekit.train("lenet", options={"modern": True}, epochs=3, limit=4000, threads=1, lr=0.1, momentum=0.9,
                    out=WORK / "lenet")
print(f"test accuracy {run.test['test_accuracy']:.1%}")

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
epochs = [e["epoch"] for e in run.history]
ax.plot(epochs, [e["train_accuracy"] for e in run.history], marker="o", label="training")
ax.plot(epochs, [e["val_accuracy"] for e in run.history], marker="o", label="validation")
ax.set(xlabel="epoch", ylabel="accuracy", title="Modern LeNet on 4,000 images")
ax.legend()
fig.tight_layout()
display(fig)
plt.close(fig)

# %% [markdown]
# What the first layer learned: its six 5 x 5 kernels.

# %%
kernels = run.model.state_dict()
first = next(v for k, v in kernels.items() if k.endswith("weight") and v.dim() == 4)  # (6, 1, 5, 5)
fig, axes = plt.subplots(1, first.shape[0], figsize=(1.4 * first.shape[0], 1.6))
for ax, kernel in zip(axes, first[:, 0]):
    ax.imshow(kernel, cmap="RdBu")
    ax.axis("off")
fig.suptitle("first-layer kernels")
display(fig)
plt.close(fig)

# %% [markdown]
# ## The chapter's experiment, in quick mode
#
# `conv-basics` finds vertical edges with a hand-made kernel, learns that kernel back from input and
# output by gradient descent, and checks output shapes for padding and stride.

# %%
from divekit.report.notebook import show_result  # summary, tables and first figure



result = divekit.run_experiment("conv-basics", out=WORK / "conv-basics")
show_result(result, WORK / "conv-basics")

# %% [markdown]
# ## Where to go next
#
# - Every CNN of the chapter on the same data: `divekit run cnn-compare` (quick mode, a few minutes) and
#   `divekit run cnn-compare --full`; one model: `divekit train resnet`, `divekit summary resnet`,
#   `divekit flops resnet`.
# - The code: `divekit.nn.conv`, `divekit.nn.pooling`, `divekit.nn.batchnorm`, and one file per network
#   in `divekit.models` (`lenet`, `alexnet`, `vgg`, `nin`, `googlenet`, `resnet`, `densenet`).
