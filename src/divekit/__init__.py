"""divekit: a deep-learning curriculum made real.

Every model and technique is implemented from scratch beside its PyTorch built-in, tested against it,
trained on real data (Fashion-MNIST, The Time Machine, English-French Tatoeba pairs), measured and
reported.
"""

__version__ = "0.1.0"
