"""The IDX reader: round trips, and every malformed header or payload refused with a named file."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from divekit.data.idx import parse_idx, write_idx
from divekit.errors import DataError, ShapeError


def _header(*dims: int, code: int = 0x08) -> bytes:
    """An IDX header assembled by hand from the format description (independent of write_idx)."""
    return bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(0, 6), min_size=1, max_size=4), seed=st.integers(0, 2**31 - 1))
def test_round_trip(shape: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, size=shape, dtype=np.uint8)
    blob = write_idx(torch.from_numpy(array))
    assert blob == _header(*shape) + array.tobytes()
    parsed = parse_idx(blob)
    assert parsed.dtype == torch.uint8 and tuple(parsed.shape) == tuple(shape)
    np.testing.assert_array_equal(parsed.numpy(), array)


def test_parses_hand_built_file_row_major() -> None:
    payload = bytes(range(24))
    parsed = parse_idx(_header(2, 3, 4) + payload)
    assert parsed.shape == (2, 3, 4)
    assert parsed[1, 2, 3].item() == 23 and parsed[1, 0, 0].item() == 12 and parsed[0, 1, 0].item() == 4


@pytest.mark.filterwarnings("error")  # torch warns when a tensor wraps a read-only buffer
@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_parsed_tensor_is_writable_and_does_not_alias_the_input(kind: type) -> None:
    original = _header(3) + bytes([1, 2, 3])
    blob = kind(original)
    parsed = parse_idx(blob)
    parsed += 1
    assert parsed.tolist() == [2, 3, 4]
    assert bytes(blob) == original


def test_wrong_magic() -> None:
    with pytest.raises(DataError, match=r"labels\.idx: not an IDX file.*0x0102"):
        parse_idx(b"\x01\x02\x08\x01" + struct.pack(">I", 1) + b"\x00", name="labels.idx")


@pytest.mark.parametrize(("code", "kind"), [(0x09, "signed byte"), (0x0D, "float32"), (0x42, "unknown")])
def test_wrong_dtype_code(code: int, kind: str) -> None:
    with pytest.raises(DataError, match=f"images: element type 0x{code:02x} .*{kind}"):
        parse_idx(_header(2, code=code) + b"\x00\x00", name="images")


def test_truncated_payload() -> None:
    with pytest.raises(DataError, match=r"f\.idx: payload truncated: shape 2 x 3 needs 6 bytes, found 5"):
        parse_idx(_header(2, 3) + bytes(5), name="f.idx")


def test_extra_bytes() -> None:
    with pytest.raises(DataError, match=r"f\.idx: payload has trailing bytes: shape 4 needs 4 bytes, found 5"):
        parse_idx(_header(4) + bytes(5), name="f.idx")


def test_zero_dimensions_refused() -> None:
    with pytest.raises(DataError, match="0 dimensions"):
        parse_idx(bytes([0, 0, 8, 0]) + b"\x07", name="scalar")


def test_zero_length_dimension_is_an_empty_tensor() -> None:
    parsed = parse_idx(_header(0, 28, 28))
    assert parsed.shape == (0, 28, 28) and parsed.dtype == torch.uint8


@pytest.mark.parametrize("blob", [b"", b"\x00\x00", _header(5, 5)[:9]])
def test_truncated_header(blob: bytes) -> None:
    with pytest.raises(DataError, match="short|header needs"):
        parse_idx(blob, name="h")


def test_write_idx_rejects_non_uint8_and_scalars() -> None:
    with pytest.raises(ShapeError):
        write_idx(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ShapeError):
        write_idx(torch.tensor(3, dtype=torch.uint8))
