"""Checkpoints: plain data written atomically and read back with ``weights_only=True``.

A checkpoint holds tensors, numbers, strings, lists and dicts only: the model's name and config, the
training config, task state such as vocabularies, the position in training, optimizer state and the
random-number state. Loading uses ``torch.load(weights_only=True)``, whose restricted unpickler
refuses any object that would run code, so a crafted file is rejected rather than executed.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from divekit.errors import CheckpointError

FORMAT = "divekit-checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same directory, then rename.

    A crash mid-write leaves the previous checkpoint intact, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "version": VERSION, **payload}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, *, expect_model: str | None = None) -> dict[str, Any]:
    """Read a checkpoint safely; raise :class:`CheckpointError` with a one-line reason if it is not one of ours.

    Args:
        expect_model: when given, a checkpoint of any other model is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    if not zipfile.is_zipfile(path):  # torch.save always writes a zip archive
        raise CheckpointError(f"cannot read checkpoint '{path}': not a PyTorch save file (truncated or another format)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is long; the line naming the forbidden global is the useful part.
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        what = f" (it would call {found.group(1)})" if found else ""
        raise CheckpointError(
            f"refusing to load '{path}': it holds objects other than plain data{what}, "
            f"so it is not a divekit checkpoint and may carry code"
        ) from None
    except Exception as e:  # a truncated zip, a text file, random bytes ...
        raise CheckpointError(f"cannot read checkpoint '{path}': {type(e).__name__}: {str(e)[:160]}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not a divekit checkpoint")
    if data.get("version") != VERSION:
        raise CheckpointError(f"'{path}' has checkpoint version {data.get('version')}, this divekit reads {VERSION}")
    if expect_model is not None and data.get("model") != expect_model:
        raise CheckpointError(
            f"'{path}' is a checkpoint of model '{data.get('model')}', not of '{expect_model}'"
        )
    return data


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """``load_state_dict`` with mismatches reported as a :class:`CheckpointError`."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:240]
        raise CheckpointError(f"checkpoint '{source}' does not fit this model: {detail}") from None
