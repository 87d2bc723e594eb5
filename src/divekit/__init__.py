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

# `divekit.train` is the training subpackage and, at the top level, the API's train function. The
# subpackage is imported first so that the name below is the function; its modules stay importable
# as usual (`from divekit.train.trainer import Trainer`), since imports look in sys.modules.
import divekit.train  # noqa: E402, F401
from divekit.api import (  # noqa: E402
    Loaded,
    TrainedRun,
    create_model,
    list_models,
    load,
    run_experiment,
    sample,
    train,
    translate,
)

__all__ = ["__version__", "list_models", "create_model", "train", "load", "run_experiment", "translate",
           "sample", "TrainedRun", "Loaded"]
