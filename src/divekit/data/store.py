"""Where each dataset file is found, how it is verified, how it is fetched.

Every file divekit reads is pinned by a digest (:mod:`divekit.data.files`, which says why
Fashion-MNIST's digests are of the decompressed bytes).

A file is looked for, in order, at

1. ``$DIVEKIT_DATA/<relpath>``, or the bare file name directly inside ``$DIVEKIT_DATA``;
2. ``<system dir>/<relpath>`` for each directory in :data:`SYSTEM_DIRS` (Debian's
   ``dataset-fashion-mnist`` installs under ``/usr/share/datasets``);
3. the user cache ``$XDG_CACHE_HOME/divekit/<relpath>`` (default ``~/.cache/divekit``);
4. and, when allowed (not with ``download=False`` nor with ``DIVEKIT_OFFLINE`` set), downloaded
   from its HTTPS URL into the cache.

The first copy found is the one used; if it fails its checksum it is refused with
:class:`~divekit.errors.ChecksumError` rather than silently passed over, so a bad copy never hides.

:func:`load_bytes` reads, decompresses and hashes a file once and returns exactly the bytes that were
hashed. There is no verification cache: hashing costs about a tenth of decompressing, so skipping it
would save little and would weaken the guarantee that returned bytes are checked bytes.
"""

from __future__ import annotations

import difflib
import gzip
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from tqdm import tqdm

from divekit.data.files import DATASETS, DataFile
from divekit.errors import ChecksumError, DataError, UnknownNameError

# Read-only locations where a distribution may have installed the datasets; searched after
# DIVEKIT_DATA and before the user cache. Tests replace this tuple.
SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets"),)

DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileStatus:
    """The outcome of checking one registered file without downloading it.

    ``status`` is ``"ok"``, ``"missing"`` (no copy anywhere), ``"unreadable"`` (a copy that cannot
    be read), ``"bad-checksum"`` or ``"corrupt"`` (a gzip that does not decompress); ``path`` is the
    copy that was checked, if any.
    """

    key: str
    status: Literal["ok", "missing", "unreadable", "bad-checksum", "corrupt"]
    path: Path | None
    algorithm: str
    expected: str
    actual: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def describe(self) -> str:
        """One line for ``divekit data verify``: state, key, path and, when it matters, why."""
        line = f"{self.status:<12}  {self.key:<26}  {self.path or '-'}"
        if self.status == "bad-checksum":
            line += f"  {self.algorithm} {self.actual}, expected {self.expected}"
        elif self.detail:
            line += f"  ({self.detail})"
        return line


# ----------------------------------------------------------------------------------------- lookup


def _unknown(kind: str, name: str, known: Iterable[str]) -> UnknownNameError:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    return UnknownNameError(f"unknown {kind} {name!r}; {hint}known: {', '.join(known)}")


def get_file(key: str) -> DataFile:
    """The registry entry for ``key``; an unknown key suggests the closest registered ones."""
    files = {f.key: f for group in DATASETS.values() for f in group}
    if key not in files:
        raise _unknown("data file", key, files)
    return files[key]


def get_dataset(name: str) -> tuple[DataFile, ...]:
    """The files of dataset ``name``; an unknown name suggests the closest registered ones."""
    if name not in DATASETS:
        raise _unknown("dataset", name, DATASETS)
    return DATASETS[name]


def _selected(dataset: str | None) -> tuple[DataFile, ...]:
    if dataset is None:
        return tuple(f for group in DATASETS.values() for f in group)
    return get_dataset(dataset)


def cache_dir() -> Path:
    """The per-user download directory, ``$XDG_CACHE_HOME/divekit`` (default ``~/.cache/divekit``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "divekit"


def candidates(file: DataFile) -> list[Path]:
    """Every place ``file`` may live, in lookup order (existing or not)."""
    paths: list[Path] = []
    data_dir = os.environ.get("DIVEKIT_DATA")
    if data_dir:
        paths += [Path(data_dir) / file.relpath, Path(data_dir) / file.filename]
    paths += [Path(d) / file.relpath for d in SYSTEM_DIRS]
    paths.append(cache_dir() / file.relpath)
    return paths


def _find(file: DataFile) -> Path | None:
    for path in candidates(file):
        try:
            if path.is_file():
                return path
        except PermissionError:
            raise DataError(f"cannot look for {file.relpath} in {path.parent}: permission denied; make the "
                            f"directory readable or point DIVEKIT_DATA elsewhere") from None
    return None


def offline() -> bool:
    """``DIVEKIT_OFFLINE`` set to 1, true, yes or on (any case) forbids downloads; 0, false, no, off or empty allow them."""
    value = os.environ.get("DIVEKIT_OFFLINE", "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise DataError(f"DIVEKIT_OFFLINE must be 1 or 0 (true/false, yes/no, on/off), got '{value}'")


# ----------------------------------------------------------------------------------- verification


def _contents(file: DataFile, raw: bytes, path: Path) -> bytes:
    """The bytes the digest covers: ``raw`` itself, or its gzip decompression."""
    if not file.decompressed:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(
            f"{path} is not a readable gzip file ({exc}); delete it and run "
            f"`divekit data fetch {file.dataset}`, or point DIVEKIT_DATA at a good copy"
        ) from exc


def _digest(file: DataFile, data: bytes) -> str:
    return hashlib.new(file.algorithm, data).hexdigest()


def _checksum_error(file: DataFile, path: Path, data: bytes, actual: str) -> ChecksumError:
    what = "decompressed contents" if file.decompressed else "file"
    sizes = f" ({len(data):,} bytes, expected {file.size:,})" if len(data) != file.size else ""
    return ChecksumError(
        f"{path}: {file.algorithm} of the {what} is {actual}, expected {file.digest}{sizes}; the file "
        f"is not used. Delete it and run `divekit data fetch {file.dataset}`, or point DIVEKIT_DATA at "
        f"a directory holding a good copy"
    )


def _verified(file: DataFile, raw: bytes, path: Path) -> bytes:
    """Decompress if needed, hash once, and return the hashed bytes or raise ChecksumError."""
    data = _contents(file, raw, path)
    actual = _digest(file, data)
    if actual != file.digest:
        raise _checksum_error(file, path, data, actual)
    return data


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc


# --------------------------------------------------------------------------------------- download


def open_url(url: str, timeout: float) -> BinaryIO:
    """Open ``url`` for reading; the single point of network access (tests replace it)."""
    return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - only registry https URLs


def _layout(file: DataFile) -> str:
    return ", ".join(f"$DIVEKIT_DATA/{f.relpath}" for f in DATASETS.get(file.dataset, (file,)))


def _missing_error(file: DataFile, reason: str) -> DataError:
    searched = ", ".join(str(p) for p in dict.fromkeys(candidates(file)))
    return DataError(
        f"data file {file.relpath} ({file.key}) was not found (searched {searched}) and {reason}. "
        f"Point the DIVEKIT_DATA environment variable at a directory holding the files in this "
        f"layout: {_layout(file)}; or, with network access, run `divekit data fetch {file.dataset}` "
        f"to download into {cache_dir()}"
    )


def _stream(response: BinaryIO, out: BinaryIO, label: str) -> None:
    headers = getattr(response, "headers", None)
    length = headers.get("Content-Length") if headers is not None else None
    total = int(length) if length and str(length).isdigit() else None
    # disable=None hides the bar when stderr is not a terminal (logs, tests).
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, disable=None) as bar:
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            bar.update(len(chunk))


def _checked_download(file: DataFile, raw: bytes) -> bytes:
    """Verify freshly downloaded bytes; on failure nothing is kept, so the message says so."""
    advice = f"nothing was saved; point DIVEKIT_DATA at a directory holding a good copy as {_layout(file)}"
    try:
        data = _contents(file, raw, Path(file.url))
    except DataError as exc:
        raise DataError(f"the download of {file.url} is not a readable gzip file; {advice}") from exc
    actual = _digest(file, data)
    if actual != file.digest:
        raise ChecksumError(
            f"the download of {file.url} has {file.algorithm} {actual}, expected {file.digest}; {advice}"
        )
    return data


def _download(file: DataFile) -> tuple[Path, bytes]:
    """Fetch ``file`` into the cache atomically; return its path and verified bytes."""
    if not file.url.startswith("https://"):
        raise DataError(f"refusing to download {file.key} from non-HTTPS URL {file.url}")
    dest = cache_dir() / file.relpath
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # The temporary file sits beside the destination so os.replace is a same-filesystem rename.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{file.filename}.", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise DataError(f"cannot write to the data cache {dest.parent}: {exc.strerror or exc}; "
                        f"set XDG_CACHE_HOME to a writable directory or DIVEKIT_DATA to one holding "
                        f"{file.relpath}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with open_url(file.url, DOWNLOAD_TIMEOUT_S) as response:
                    _stream(response, out, file.relpath)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise _missing_error(file, f"downloading {file.url} failed ({reason})") from exc
        data = _checked_download(file, tmp.read_bytes())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest, data


# ------------------------------------------------------------------------------------- public API


# Verified contents by key, with the file's identity when it was read: a tour loads Fashion-MNIST
# some thirty times, and decompressing and hashing it each time cost seconds. A file replaced or
# touched since (another size, mtime or inode) is read and verified again.
_VERIFIED: dict[str, tuple[tuple[str, int, int, int] | None, bytes]] = {}


def _identity(path: Path) -> tuple[str, int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None  # reading it will say what is wrong
    return str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino


def _obtain(key: str, download: bool) -> tuple[Path, bytes]:
    file = get_file(key)
    path = _find(file)
    if path is not None:
        identity = _identity(path)
        cached = _VERIFIED.get(key)
        if identity is not None and cached is not None and cached[0] == identity:
            return path, cached[1]
        data = _verified(file, _read(path), path)
        if identity is not None:
            _VERIFIED[key] = (identity, data)
        return path, data
    if not download or offline():
        raise _missing_error(file, "downloading was not allowed" + (" (DIVEKIT_OFFLINE is set)" if download else ""))
    return _download(file)


def load_bytes(key: str, *, download: bool = True) -> bytes:
    """The verified contents of ``key`` (gzip-decompressed when its digest is of decompressed bytes)."""
    return _obtain(key, download)[1]


def locate(key: str, *, download: bool = True) -> Path:
    """The path of a verified copy of ``key`` (the compressed file itself for gzip entries)."""
    return _obtain(key, download)[0]


def _status(file: DataFile) -> FileStatus:
    path = _find(file)
    base = dict(key=file.key, path=path, algorithm=file.algorithm, expected=file.digest)
    if path is None:
        return FileStatus(status="missing", detail=f"looked in: {', '.join(map(str, candidates(file)))}", **base)
    try:
        raw = _read(path)
    except DataError as exc:
        return FileStatus(status="unreadable", detail=str(exc), **base)
    try:
        data = _contents(file, raw, path)
    except DataError as exc:
        return FileStatus(status="corrupt", detail=str(exc), **base)
    actual = _digest(file, data)
    return FileStatus(status="ok" if actual == file.digest else "bad-checksum", actual=actual, **base)


def verify(dataset: str | None = None) -> list[FileStatus]:
    """Check every file of ``dataset`` (all datasets when ``None``) where it is found; never downloads."""
    return [_status(f) for f in _selected(dataset)]


def fetch(dataset: str | None = None) -> list[Path]:
    """Make every file of ``dataset`` (all when ``None``) available, downloading only missing ones.

    A copy that exists but fails its checksum raises :class:`ChecksumError`, as on any other use.
    """
    return [locate(f.key, download=True) for f in _selected(dataset)]
