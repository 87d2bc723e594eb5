"""Checkpoints: plain data written atomically and read back with ``weights_only=True``.

A checkpoint holds tensors, numbers, strings, lists and dicts only: the model's name and config, the
training config, task state such as vocabularies, the position in training, optimizer state and the
random-number state. Loading uses ``torch.load(weights_only=True)``, whose restricted unpickler
refuses any object that would run code, so a crafted file is rejected rather than executed.

Each checkpoint also stores the SHA-256 digest of its payload (:func:`payload_digest`: every
tensor's dtype, shape and bytes and every plain value, in a fixed order). Loading recomputes it, so
a file whose bytes were altered after it was written, tensor data included, is refused rather
than silently used.
"""

from __future__ import annotations

import hashlib
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
VERSION = 2  # 2: the payload digest


def _feed(h: "hashlib._Hash", value: Any) -> None:
    """Hash ``value`` unambiguously: a type tag, then its content (lengths before variable parts)."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, dict):
        h.update(f"D{len(value)}".encode())
        for key in sorted(value, key=lambda k: (type(k).__name__, str(k))):
            _feed(h, key)
            _feed(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(f"{'L' if isinstance(value, list) else 'U'}{len(value)}".encode())
        for item in value:
            _feed(h, item)
    elif isinstance(value, str):
        data = value.encode()
        h.update(f"S{len(data)}:".encode() + data)
    elif isinstance(value, bytes):
        h.update(f"B{len(value)}:".encode() + value)
    elif value is None or isinstance(value, (bool, int, float)):
        h.update(f"{type(value).__name__}:{value!r};".encode())
    else:
        raise TypeError(f"a checkpoint holds plain data only, not {type(value).__name__}")


def payload_digest(payload: dict[str, Any]) -> str:
    """SHA-256 over everything in a checkpoint except its header (format, version, digest)."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k not in ("format", "version", "digest")})
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same directory, then rename.

    A crash mid-write leaves the previous checkpoint intact, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "version": VERSION, **payload}
    data["digest"] = payload_digest(data)
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


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file as given, or for a run directory its ``best.pt`` (else its ``checkpoint.pt``)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "checkpoint.pt"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"'{path}' is a directory holding no checkpoint (best.pt or checkpoint.pt)")
    return path


def load_checkpoint(path: str | os.PathLike, *, expect_model: str | None = None) -> dict[str, Any]:
    """Read a checkpoint safely; raise :class:`CheckpointError` with a one-line reason if it is not one of ours.

    ``path`` may be a run directory: its ``best.pt`` is read (its ``checkpoint.pt`` if it has no best).

    Args:
        expect_model: when given, a checkpoint of any other model is refused.
    """
    path = resolve_checkpoint(path)
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
    try:
        actual = payload_digest(data)
    except TypeError as e:
        raise CheckpointError(f"'{path}' is not a divekit checkpoint: {e}") from None
    if data.get("digest") != actual:
        raise CheckpointError(
            f"checkpoint '{path}' is damaged: its contents do not match the digest stored in it; "
            f"it was altered after it was written"
        )
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
