"""The data store: lookup order, checksum refusal, atomic downloads, messages, the real files."""

from __future__ import annotations

import gzip
import hashlib
import io
import urllib.error
from pathlib import Path

import pytest

from divekit.data import store
from divekit.data.store import DataFile
from divekit.errors import ChecksumError, DataError, UnknownNameError

from conftest import data_dir_with

PLAIN = b"It was a bright cold day in April.\n" * 50
PACKED = bytes(range(256)) * 40  # the decompressed payload of the toy gzip entry




def _toy_files() -> tuple[DataFile, DataFile]:
    plain = DataFile("toy/plain", "toy/plain.txt", "https://example.invalid/plain.txt", "sha1",
                     hashlib.sha1(PLAIN).hexdigest(), False, len(PLAIN))
    packed = DataFile("toy/packed", "toy/packed.bin.gz", "https://example.invalid/packed.bin.gz", "sha256",
                      hashlib.sha256(PACKED).hexdigest(), True, len(PACKED))
    return plain, packed


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """An isolated world: toy registry entries, empty DIVEKIT_DATA, system dir and cache, no network."""
    roots = {name: tmp_path / name for name in ("data", "system", "xdg")}
    for root in roots.values():
        root.mkdir()
    monkeypatch.setitem(store.DATASETS, "toy", _toy_files())
    monkeypatch.setenv("DIVEKIT_DATA", str(roots["data"]))
    monkeypatch.setenv("XDG_CACHE_HOME", str(roots["xdg"]))
    monkeypatch.setattr(store, "SYSTEM_DIRS", (roots["system"],))

    def no_network(url: str, timeout: float) -> io.BytesIO:
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(store, "open_url", no_network)
    return {**roots, "cache": roots["xdg"] / "divekit"}


def _put(root: Path, relpath: str, content: bytes) -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _flip(content: bytes, at: int) -> bytes:
    return content[:at] + bytes([content[at] ^ 0x01]) + content[at + 1 :]


class _Response(io.BytesIO):
    """A stand-in for an HTTP response: bytes plus a Content-Length header."""

    def __init__(self, body: bytes) -> None:
        super().__init__(body)
        self.headers = {"Content-Length": str(len(body))}


def _serve(monkeypatch: pytest.MonkeyPatch, bodies: dict[str, bytes]) -> list[str]:
    requested: list[str] = []

    def opener(url: str, timeout: float) -> _Response:
        requested.append(url)
        return _Response(bodies[url])

    monkeypatch.setattr(store, "open_url", opener)
    return requested


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------ checksums


def test_good_copies_load_and_gzip_is_decompressed(dirs: dict[str, Path]) -> None:
    _put(dirs["data"], "toy/plain.txt", PLAIN)
    path = _put(dirs["data"], "toy/packed.bin.gz", gzip.compress(PACKED))
    assert store.load_bytes("toy/plain") == PLAIN
    assert store.load_bytes("toy/packed") == PACKED
    assert store.locate("toy/packed") == path


def test_differently_compressed_copies_of_the_same_content_both_verify(dirs: dict[str, Path]) -> None:
    fast, best = gzip.compress(PACKED, compresslevel=1, mtime=0), gzip.compress(PACKED, compresslevel=9, mtime=7)
    assert fast != best
    for blob in (fast, best):
        _put(dirs["data"], "toy/packed.bin.gz", blob)
        assert store.load_bytes("toy/packed", download=False) == PACKED


@pytest.mark.parametrize("at", [0, len(PLAIN) // 2, len(PLAIN) - 1])
def test_a_flipped_byte_is_refused_and_never_returned(dirs: dict[str, Path], at: int) -> None:
    bad = _flip(PLAIN, at)
    path = _put(dirs["data"], "toy/plain.txt", bad)
    # A good copy further down the lookup order must not be used to paper over the bad one.
    _put(dirs["cache"], "toy/plain.txt", PLAIN)
    with pytest.raises(ChecksumError) as info:
        store.load_bytes("toy/plain")
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and "sha1" in message
    assert hashlib.sha1(PLAIN).hexdigest() in message and hashlib.sha1(bad).hexdigest() in message
    assert "divekit data fetch toy" in message and "DIVEKIT_DATA" in message
    with pytest.raises(ChecksumError):
        store.locate("toy/plain")


def test_a_copy_altered_after_a_good_load_is_refused(dirs: dict[str, Path]) -> None:
    """Loads within one process reuse verified contents only while the file is the one verified."""
    path = _put(dirs["data"], "toy/plain.txt", PLAIN)
    assert store.load_bytes("toy/plain") == PLAIN
    assert store.load_bytes("toy/plain") == PLAIN  # the second load is served from memory
    path.write_bytes(_flip(PLAIN, 3))  # same size, new modification time
    with pytest.raises(ChecksumError):
        store.load_bytes("toy/plain")


def test_corrupted_gzip_payload_is_refused(dirs: dict[str, Path]) -> None:
    # Flip a payload byte before compressing, so the gzip itself is valid but its content is not.
    bad = _flip(PACKED, 1000)
    _put(dirs["data"], "toy/packed.bin.gz", gzip.compress(bad))
    with pytest.raises(ChecksumError, match=hashlib.sha256(bad).hexdigest()):
        store.load_bytes("toy/packed")


def test_an_unreadable_gzip_is_a_data_error_naming_the_file(dirs: dict[str, Path]) -> None:
    path = _put(dirs["data"], "toy/packed.bin.gz", gzip.compress(PACKED)[:-20])
    with pytest.raises(DataError, match=str(path)) as info:
        store.load_bytes("toy/packed")
    assert not isinstance(info.value, ChecksumError)


# --------------------------------------------------------------------------------- lookup order


def test_lookup_order_data_dir_then_system_then_cache(dirs: dict[str, Path]) -> None:
    in_cache = _put(dirs["cache"], "toy/plain.txt", PLAIN)
    assert store.locate("toy/plain") == in_cache
    in_system = _put(dirs["system"], "toy/plain.txt", PLAIN)
    assert store.locate("toy/plain") == in_system
    in_data = _put(dirs["data"], "toy/plain.txt", PLAIN)
    assert store.locate("toy/plain") == in_data


def test_bare_file_name_in_data_dir_is_accepted(dirs: dict[str, Path]) -> None:
    path = _put(dirs["data"], "plain.txt", PLAIN)
    assert store.locate("toy/plain") == path


def test_cache_defaults_to_home_when_xdg_is_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert store.cache_dir() == tmp_path / ".cache" / "divekit"


# ------------------------------------------------------------------------------------- download


def test_download_lands_in_cache_verified(dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    plain, packed = _toy_files()
    blob = gzip.compress(PACKED)
    requested = _serve(monkeypatch, {packed.url: blob})
    assert store.load_bytes("toy/packed") == PACKED
    assert requested == [packed.url]
    assert _files_under(dirs["xdg"]) == [dirs["cache"] / "toy/packed.bin.gz"]
    assert (dirs["cache"] / "toy/packed.bin.gz").read_bytes() == blob
    # Present now: found without asking the network again.
    assert store.locate("toy/packed", download=False) == dirs["cache"] / "toy/packed.bin.gz"
    assert requested == [packed.url]


def test_bad_download_leaves_nothing_behind(dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    plain, packed = _toy_files()
    _serve(monkeypatch, {plain.url: _flip(PLAIN, 3), packed.url: b"not a gzip at all"})
    with pytest.raises(ChecksumError, match="nothing was saved"):
        store.load_bytes("toy/plain")
    with pytest.raises(DataError, match="not a readable gzip"):
        store.load_bytes("toy/packed")
    assert _files_under(dirs["xdg"]) == []


def test_interrupted_download_leaves_nothing_behind(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken(_Response):
        def read(self, size: int = -1) -> bytes:
            if self.tell() > 0:
                raise TimeoutError("read timed out")
            return super().read(10)

    monkeypatch.setattr(store, "open_url", lambda url, timeout: Broken(PLAIN))
    with pytest.raises(DataError, match="DIVEKIT_DATA"):
        store.load_bytes("toy/plain")
    assert _files_under(dirs["xdg"]) == []


def test_no_network_message_explains_data_dir_and_layout(dirs: dict[str, Path]) -> None:
    with pytest.raises(DataError) as info:
        store.load_bytes("toy/packed")
    message = str(info.value)
    assert "\n" not in message
    assert "DIVEKIT_DATA" in message and "divekit data fetch toy" in message
    # The expected layout names every file of the dataset.
    assert "$DIVEKIT_DATA/toy/plain.txt" in message and "$DIVEKIT_DATA/toy/packed.bin.gz" in message
    assert "network disabled in tests" in message


def test_download_false_never_opens_the_network(dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    requested = _serve(monkeypatch, {})
    with pytest.raises(DataError, match="DIVEKIT_DATA"):
        store.load_bytes("toy/plain", download=False)
    assert requested == []


def test_only_https_urls_are_downloaded(dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    plain = DataFile("toy/plain", "toy/plain.txt", "http://example.invalid/plain.txt", "sha1",
                     hashlib.sha1(PLAIN).hexdigest(), False, len(PLAIN))
    monkeypatch.setitem(store.DATASETS, "toy", (plain,))
    requested = _serve(monkeypatch, {plain.url: PLAIN})
    with pytest.raises(DataError, match="non-HTTPS"):
        store.load_bytes("toy/plain")
    assert requested == []


def test_registry_urls_are_https_and_digests_well_formed() -> None:
    lengths = {"sha1": 40, "sha256": 64}
    for files in store.DATASETS.values():
        for f in files:
            assert f.url.startswith("https://") and f.url.endswith(f.filename)
            assert len(f.digest) == lengths[f.algorithm] and int(f.digest, 16) >= 0


# ---------------------------------------------------------------------------- verify and fetch


def test_verify_reports_each_state(dirs: dict[str, Path]) -> None:
    bad = _flip(PLAIN, 5)
    _put(dirs["data"], "toy/plain.txt", bad)
    by_key = {s.key: s for s in store.verify("toy")}
    assert by_key["toy/plain"].status == "bad-checksum"
    assert by_key["toy/plain"].actual == hashlib.sha1(bad).hexdigest()
    assert by_key["toy/plain"].expected == hashlib.sha1(PLAIN).hexdigest()
    assert by_key["toy/packed"].status == "missing" and by_key["toy/packed"].path is None
    line = by_key["toy/plain"].describe()
    assert "\n" not in line and line.startswith("bad-checksum") and hashlib.sha1(bad).hexdigest() in line
    assert str(dirs["cache"] / "toy/packed.bin.gz") in by_key["toy/packed"].describe()  # where it looked
    _put(dirs["data"], "toy/plain.txt", PLAIN)
    _put(dirs["data"], "toy/packed.bin.gz", b"garbage")
    by_key = {s.key: s for s in store.verify("toy")}
    assert by_key["toy/plain"].ok and by_key["toy/packed"].status == "corrupt"


def test_fetch_downloads_only_what_is_missing(dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    plain, packed = _toy_files()
    present = _put(dirs["system"], "toy/plain.txt", PLAIN)
    requested = _serve(monkeypatch, {packed.url: gzip.compress(PACKED)})
    assert store.fetch("toy") == [present, dirs["cache"] / "toy/packed.bin.gz"]
    assert requested == [packed.url]


# ------------------------------------------------------------------------------------- names


def test_unknown_key_suggests_a_close_one() -> None:
    with pytest.raises(UnknownNameError, match="fashion-mnist/train-images"):
        store.get_file("fashion-mnist/train-image")
    with pytest.raises(UnknownNameError, match="'timemachine'"):
        store.load_bytes("timemachin")


def test_unknown_dataset_suggests_a_close_one() -> None:
    with pytest.raises(UnknownNameError, match="'fashion-mnist'"):
        store.verify("fashion_mnist")
    with pytest.raises(UnknownNameError, match="'fra-eng'"):
        store.fetch("fra_eng")


def test_registry_groups() -> None:
    assert {k: len(v) for k, v in store.DATASETS.items()} == {"fashion-mnist": 4, "timemachine": 1, "fra-eng": 1}
    assert store.get_file("fashion-mnist/test-labels").relpath == "fashion-mnist/t10k-labels-idx1-ubyte.gz"


# --------------------------------------------------------------------------------- real data


@pytest.fixture
def shared_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    root = data_dir_with("fashion-mnist")
    if root is None:
        pytest.skip("shared data directory not present (set DIVEKIT_DATA to a directory holding the files)")
    monkeypatch.setenv("DIVEKIT_DATA", str(root))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(store, "SYSTEM_DIRS", ())
    return root


def test_real_shared_data_verifies(shared_data: Path) -> None:
    statuses = store.verify()
    assert [s.status for s in statuses] == ["ok"] * 6, [(s.key, s.status, s.detail) for s in statuses]
    assert all(s.path is not None and s.path.is_relative_to(shared_data) for s in statuses)


def test_real_files_match_the_registry_independently(shared_data: Path) -> None:
    # Recompute every digest here with hashlib/gzip directly, not through the store.
    for files in store.DATASETS.values():
        for f in files:
            raw = (shared_data / f.relpath).read_bytes()
            content = gzip.decompress(raw) if f.decompressed else raw
            assert len(content) == f.size
            assert hashlib.new(f.algorithm, content).hexdigest() == f.digest
            if f.key != "fashion-mnist/train-images":  # the 47 MB one is covered by verify()
                assert store.load_bytes(f.key, download=False) == content
