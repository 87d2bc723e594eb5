"""divekit: a deep-learning curriculum made real.

Every model and technique is implemented from scratch beside its PyTorch built-in, tested against it,
trained on real data (Fashion-MNIST, The Time Machine, English-French Tatoeba pairs), measured and
reported.

Shapes are batch-first in every model and task: sequences ``(B, T, ...)``, images ``(B, C, H, W)``.
The from-scratch layers of :mod:`divekit.nn` that mirror a torch class keep that class's signature
and defaults, time-major recurrent and attention layers included, so each is a drop-in; divekit's
models pass ``batch_first=True`` explicitly.
"""

__version__ = "0.1.0"
