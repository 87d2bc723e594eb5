"""Reader and writer for IDX files holding unsigned bytes (the MNIST family's format).

Layout, all integers big-endian::

    bytes 0-1   0x00 0x00
    byte  2     element type, 0x08 = unsigned byte (the only type read here)
    byte  3     k, the number of dimensions
    4k bytes    k uint32 sizes d_1 ... d_k
    payload     d_1 * ... * d_k bytes, row-major, nothing after it

A file of images is ``(n, rows, cols)``, a file of labels ``(n,)``. The payload becomes a tensor in a
single ``torch.frombuffer`` call, so parsing 47 MB costs one memory copy and no Python per element.
"""

from __future__ import annotations

import struct

import torch

from divekit.errors import DataError, ShapeError

UBYTE = 0x08
# Codes the format defines for other element types; named only to make errors readable.
_OTHER_TYPES = {0x09: "signed byte", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}


def _header(data: bytes | bytearray | memoryview, name: str) -> tuple[int, ...]:
    """Validate the magic number and return the stated shape ``(d_1, ..., d_k)``."""
    if len(data) < 4:
        raise DataError(f"{name}: {len(data)} bytes is too short for an IDX header (4 bytes of magic number)")
    zero, code, ndim = struct.unpack_from(">HBB", data)
    if zero != 0:
        raise DataError(f"{name}: not an IDX file: magic number starts 0x{zero:04x}, expected 0x0000")
    if code != UBYTE:
        kind = _OTHER_TYPES.get(code, "an unknown type")
        raise DataError(f"{name}: element type 0x{code:02x} ({kind}); only unsigned bytes (0x08) are supported")
    if ndim == 0:
        raise DataError(f"{name}: IDX header states 0 dimensions; expected at least 1")
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{name}: header needs {4 + 4 * ndim} bytes for {ndim} dimensions, found {len(data)}")
    return struct.unpack_from(f">{ndim}I", data, 4)


def parse_idx(data: bytes | bytearray | memoryview, *, name: str = "<bytes>") -> torch.Tensor:
    """Parse an unsigned-byte IDX file into a uint8 tensor of the shape its header states.

    Raises:
        DataError: naming ``name``, for a bad magic number, a non-byte element type, zero
            dimensions, or a payload whose length is not exactly the product of the dimensions.
    """
    shape = _header(data, name)
    offset = 4 + 4 * len(shape)
    expected = 1
    for d in shape:
        expected *= d
    found = len(data) - offset
    if found != expected:
        dims = " x ".join(map(str, shape))
        what = "truncated" if found < expected else "has trailing bytes"
        raise DataError(f"{name}: payload {what}: shape {dims} needs {expected:,} bytes, found {found:,}")
    if expected == 0:
        return torch.empty(shape, dtype=torch.uint8)
    # One copy into a writable buffer: tensors over read-only bytes would let in-place ops
    # mutate an immutable object.
    payload = bytearray(memoryview(data)[offset:])
    return torch.frombuffer(payload, dtype=torch.uint8).view(shape)


def write_idx(tensor: torch.Tensor) -> bytes:
    """Serialise a uint8 tensor of rank >= 1 as an IDX file (the inverse of :func:`parse_idx`)."""
    if tensor.dtype != torch.uint8 or tensor.dim() == 0:
        raise ShapeError(f"write_idx needs a uint8 tensor of rank >= 1, got {tensor.dtype} of rank {tensor.dim()}")
    header = struct.pack(f">HBB{tensor.dim()}I", 0, UBYTE, tensor.dim(), *tensor.shape)
    return header + tensor.detach().cpu().contiguous().numpy().tobytes()
