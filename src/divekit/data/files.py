"""The dataset files divekit reads, each pinned by its canonical HTTPS URL, a digest and a size.

For the d2l files the digest is the SHA-1 of the file itself; for Fashion-MNIST it is the SHA-256
of the gzip-*decompressed* IDX bytes, because the same images circulate in differently compressed
``.gz`` files (the canonical ones and Debian's repacks) whose compressed bytes differ while their
contents agree. :mod:`divekit.data.store` finds, verifies and fetches them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

D2L_BASE = "https://d2l-data.s3-accelerate.amazonaws.com/"
FASHION_BASE = "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/"


@dataclass(frozen=True)
class DataFile:
    """One pinned file.

    Attributes:
        key: registry name, ``"<dataset>"`` or ``"<dataset>/<part>"``.
        relpath: path below a data directory, e.g. ``fashion-mnist/train-images-idx3-ubyte.gz``.
        url: canonical HTTPS source.
        algorithm: ``hashlib`` name of the digest (``"sha1"`` or ``"sha256"``).
        digest: lowercase hex digest of the verified bytes.
        decompressed: the digest is of the gzip-decompressed bytes, not of the file.
        size: length in bytes of what the digest covers (decompressed length when ``decompressed``).
    """

    key: str
    relpath: str
    url: str
    algorithm: str
    digest: str
    decompressed: bool
    size: int

    @property
    def dataset(self) -> str:
        return self.key.split("/", 1)[0]

    @property
    def filename(self) -> str:
        return Path(self.relpath).name


def _fashion(part: str, stem: str, digest: str, size: int) -> DataFile:
    name = f"{stem}.gz"
    return DataFile(key=f"fashion-mnist/{part}", relpath=f"fashion-mnist/{name}", url=FASHION_BASE + name,
                    algorithm="sha256", digest=digest, decompressed=True, size=size)


DATASETS: dict[str, tuple[DataFile, ...]] = {
    "fashion-mnist": (
        _fashion("train-images", "train-images-idx3-ubyte",
                 "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47_040_016),
        _fashion("train-labels", "train-labels-idx1-ubyte",
                 "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60_008),
        _fashion("test-images", "t10k-images-idx3-ubyte",
                 "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7_840_016),
        _fashion("test-labels", "t10k-labels-idx1-ubyte",
                 "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10_008),
    ),
    "timemachine": (
        DataFile("timemachine", "timemachine.txt", D2L_BASE + "timemachine.txt", "sha1",
                 "090b5e7e70c295757f55df93cb0a180b9691891a", False, 178_979),
    ),
    "fra-eng": (
        DataFile("fra-eng", "fra-eng.zip", D2L_BASE + "fra-eng.zip", "sha1",
                 "94646ad1522d915e7b0f9296181140edcf86a4f5", False, 3_420_152),
    ),
}
