"""Building blocks written from scratch, each tested against the PyTorch built-in it mirrors.

The layers below are drop-ins for the ``torch.nn`` class of the same name: the same constructor
arguments in the same order with the same defaults (``device`` and ``dtype`` included where torch
has them), the same parameter and buffer names, the same ``forward`` call and return values. So
code written for ``nn.GRU`` runs unchanged, with the same numbers, on ``divekit.nn.GRU`` (which, like
``nn.GRU``, is time-major unless ``batch_first=True``; divekit's own models always pass it).
Options that only divekit has come after torch's arguments and are keyword-only (``fast`` on the
recurrent layers, ``generator`` on ``Dropout``).

    RNN  GRU  LSTM  RNNCell  GRUCell  LSTMCell      divekit.nn.rnn, divekit.nn.rnn_cells
    Conv2d                                         divekit.nn.conv
    MaxPool2d  AvgPool2d                           divekit.nn.pooling
    BatchNorm1d  BatchNorm2d                       divekit.nn.batchnorm
    MultiheadAttention                             divekit.nn.mha
    Dropout                                        divekit.nn.dropout

The other classes mirror no torch class and say so: the teaching attention layers
(``MultiHeadAttention``, ``DotProductAttention``, ``AdditiveAttention``), the Transformer blocks,
``Conv2d1x1``, ``GlobalAvgPool2d``, the positional encodings, and the ``BatchNorm`` base class.
"""

from divekit.nn.batchnorm import BatchNorm1d, BatchNorm2d
from divekit.nn.conv import Conv2d
from divekit.nn.dropout import Dropout
from divekit.nn.mha import MultiheadAttention
from divekit.nn.pooling import AvgPool2d, MaxPool2d
from divekit.nn.rnn import GRU, LSTM, RNN
from divekit.nn.rnn_cells import GRUCell, LSTMCell, RNNCell

__all__ = [
    "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv2d", "Dropout", "GRU", "GRUCell", "LSTM", "LSTMCell",
    "MaxPool2d", "MultiheadAttention", "RNN", "RNNCell",
]
