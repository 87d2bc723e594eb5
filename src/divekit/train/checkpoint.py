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
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from divekit.errors import CheckpointError

FORMAT = "divekit-checkpoint"
VERSION = 2  # 2: the payload digest


_SCALARS = (bool, int, float)


def _scalar_bytes(value: Any) -> bytes | None:
    """The bytes :func:`_feed` writes for a string or a plain scalar, or None for anything else."""
    kind = type(value)
    if kind is str:
        data = value.encode()
        return b"S%d:" % len(data) + data
    if value is None or kind in _SCALARS:
        return f"{kind.__name__}:{value!r};".encode()
    return None


def _flat_bytes(value: Any) -> bytes | None:
    """What :func:`_feed` writes for a scalar, or for a list or tuple of scalars (a vocabulary's
    ``[token, count]`` pairs); None for anything else."""
    data = _scalar_bytes(value)
    if data is not None or type(value) not in (list, tuple):
        return data
    parts = [_scalar_bytes(item) for item in value]
    if None in parts:
        return None
    return f"{'L' if type(value) is list else 'U'}{len(value)}".encode() + b"".join(parts)  # type: ignore[arg-type]


def _feed(h: "hashlib._Hash", value: Any) -> None:
    """Hash ``value`` unambiguously: a type tag, then its content (lengths before variable parts).

    The strings, numbers and ``[token, count]`` pairs of a list go to the hash in one call
    (vocabularies hold tens of thousands of them); the bytes are the same as one call per item.
    """
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")  # the buffer, not a copy
    elif isinstance(value, dict):
        h.update(f"D{len(value)}".encode())
        for key in sorted(value, key=lambda k: (type(k).__name__, str(k))):
            _feed(h, key)
            _feed(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(f"{'L' if isinstance(value, list) else 'U'}{len(value)}".encode())
        pending: list[bytes] = []
        for item in value:
            data = _flat_bytes(item)
            if data is not None:
                pending.append(data)
                continue
            h.update(b"".join(pending))
            pending.clear()
            _feed(h, item)
        h.update(b"".join(pending))
    elif isinstance(value, bytes):
        h.update(f"B{len(value)}:".encode() + value)
    elif isinstance(value, str):
        data = value.encode()
        h.update(b"S%d:" % len(data) + data)
    elif value is None or isinstance(value, _SCALARS):
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
    data = {"format": FORMAT, "version": VERSION, **payload}
    data["digest"] = payload_digest(data)
    return _write_atomically(path, lambda f: torch.save(data, f))


def copy_checkpoint(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Copy the checkpoint file ``source`` to ``path`` atomically, byte for byte (``best.pt`` is
    the epoch's ``checkpoint.pt``: copying it costs a fraction of serialising the state again)."""
    with open(source, "rb") as src:
        return _write_atomically(Path(path), lambda f: shutil.copyfileobj(src, f, 1 << 20))


def _write_atomically(path: Path, write) -> Path:
    """Run ``write(file)`` on a temporary file beside ``path``, sync it, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
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
