"""A training run's directory, owned by exactly one process at a time.

The rules, which keep two runs from ever mixing their files:

- A run owns its directory through an exclusive lock on ``run.lock``, taken atomically
  (``flock``) before anything is written. The operating system drops the lock when the process
  ends, even by ``kill -9``, so a stale lock never blocks a resume. A second run into a locked
  directory is refused with one line naming the owner.
- A new run starts only in a directory that does not exist yet or is empty. A directory that
  holds a run is never written to again except by resuming that run; one that holds other
  files is refused.
- ``run.json`` names the run (a random ``run_id``), its model and, for a fork, where it came
  from. Every checkpoint and every ``metrics.jsonl`` line carries the run id.
- Temporary files a killed run left behind (``.checkpoint.pt.*.tmp``) are removed when the next
  owner takes the directory.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import uuid
from pathlib import Path
from typing import Any

from divekit.errors import DivekitError
from divekit.runs import now_iso, read_json, write_json

LOCK_FILE = "run.lock"
RECORD_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"


class RunDirError(DivekitError):
    """A run directory that this run may not use (owned, used, not writable)."""

    exit_code = 6


def _os_problem(path: Path, e: OSError) -> RunDirError:
    if isinstance(e, PermissionError):
        return RunDirError(f"cannot write run directory '{path}': permission denied")
    if e.errno in (errno.ENOTDIR, errno.EEXIST) or (path.exists() and not path.is_dir()):
        return RunDirError(f"run directory '{path}' is a file or lies under a file; choose another --out")
    return RunDirError(f"cannot use run directory '{path}': {e.strerror or e}")


class RunDir:
    """The directory of one run, locked for as long as this object holds it (a context manager)."""

    def __init__(self, path: Path, record: dict[str, Any], lock_fd: int, created: bool) -> None:
        self.path = path
        self.record = record
        self._lock_fd: int | None = lock_fd
        self._created = created

    # ----------------------------------------------------------------------------- opening
    @classmethod
    def create(cls, path: Path, *, model: str, forked_from: dict[str, Any] | None = None) -> "RunDir":
        """Take a fresh (absent or empty) directory for a new run of ``model``."""
        path = Path(path)
        created = not path.exists()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _os_problem(path, e) from None
        if not path.is_dir():
            raise RunDirError(f"run directory '{path}' is a file; choose another --out")
        fd = cls._lock(path)
        try:
            if (path / RECORD_FILE).exists() and _holds_work(path):
                other = _read_record(path)
                raise RunDirError(
                    f"'{path}' already holds run {other.get('run_id', '?')} of model '{other.get('model', '?')}'; "
                    f"continue it with --resume {path}, or choose another --out"
                )
            _remove_abandoned_start(path)
            leftovers = [p.name for p in path.iterdir() if p.name != LOCK_FILE]
            if leftovers:
                raise RunDirError(
                    f"'{path}' is not empty ({', '.join(sorted(leftovers)[:3])}{', ...' if len(leftovers) > 3 else ''}) "
                    f"and holds no divekit run; choose another --out"
                )
            record = {"run_id": uuid.uuid4().hex[:12], "model": model, "created": now_iso(),
                      "forked_from": forked_from}
            write_json(path / RECORD_FILE, record)
        except BaseException:
            cls._unlock(fd)
            raise
        return cls(path, record, fd, created)

    @classmethod
    def open(cls, path: Path) -> "RunDir":
        """Take the directory of an existing run, to continue it."""
        path = Path(path)
        if not (path / RECORD_FILE).is_file():
            raise RunDirError(f"'{path}' holds no divekit run ({RECORD_FILE} is missing)")
        fd = cls._lock(path)
        try:
            record = _read_record(path)
            _remove_stale_temporaries(path)
        except BaseException:
            cls._unlock(fd)
            raise
        return cls(path, record, fd, created=False)

    @staticmethod
    def _lock(path: Path) -> int:
        lock_path = path / LOCK_FILE
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise _os_problem(path, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            raise RunDirError(f"run directory '{path}' is in use by another divekit run ({owner})") from None
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": now_iso()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)
        return fd

    @staticmethod
    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    # ----------------------------------------------------------------------------- use
    @property
    def run_id(self) -> str:
        return self.record["run_id"]

    def rewrite_metrics(self, history: list[dict[str, Any]]) -> None:
        """Make ``metrics.jsonl`` exactly ``history``: a resume cuts what a killed run wrote past its checkpoint."""
        tmp = self.path / f".{METRICS_FILE}.tmp"
        with open(tmp, "w") as f:
            for record in history:
                f.write(json.dumps(record) + "\n")
        os.replace(tmp, self.path / METRICS_FILE)

    def release(self, *, failed: bool = False) -> None:
        """Give the directory up; a failed new run that never saved a checkpoint leaves nothing behind."""
        if self._lock_fd is None:
            return
        if failed and self._created and not _holds_work(self.path):
            _remove_abandoned_start(self.path)
            (self.path / LOCK_FILE).unlink(missing_ok=True)
        self._unlock(self._lock_fd)
        self._lock_fd = None
        if failed and self._created:
            try:
                self.path.rmdir()  # only if empty
            except OSError:
                pass

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release(failed=exc_type is not None)


def run_in_progress(root: Path) -> str | None:
    """The owner of a run under ``root`` that a live process holds (its lock), or None if there is none."""
    for lock_path in Path(root).rglob(LOCK_FILE):
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            return f"{lock_path.parent}: {_read_owner(fd)}"
        finally:
            os.close(fd)
    return None


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = read_json(path / RECORD_FILE)
    except (OSError, ValueError) as e:
        raise RunDirError(f"cannot read '{path / RECORD_FILE}': {e}") from None
    if not isinstance(record, dict) or "run_id" not in record:
        raise RunDirError(f"'{path / RECORD_FILE}' is not a divekit run record")
    return record


def _read_owner(fd: int) -> str:
    try:
        owner = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {owner['pid']} on {owner['host']}, since {owner['since']}"
    except (ValueError, KeyError, OSError):
        return "owner unknown"


def _holds_work(path: Path) -> bool:
    """Whether a run directory holds anything worth keeping: a checkpoint or results."""
    return any(path.glob("*.pt")) or (path / "results.json").exists()


def _remove_abandoned_start(path: Path) -> None:
    """A run killed before its first checkpoint left only its record: nothing to resume, nothing to keep."""
    if (path / RECORD_FILE).exists() and not _holds_work(path):
        for name in (RECORD_FILE, METRICS_FILE):
            (path / name).unlink(missing_ok=True)
        _remove_stale_temporaries(path)


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary files of atomic writes a killed process never renamed (we hold the lock: nobody writes them)."""
    for tmp in path.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    for tmp in path.glob(".*.json.*"):  # write_json's temporaries
        tmp.unlink(missing_ok=True)
