"""A small reader for the IDX format of MNIST and Fashion-MNIST, gzipped or raw.

We parse IDX ourselves, in numpy, so that loading the data needs no torchvision
and every malformed file fails the same way: with `IDXError`, whose message names
the file and says what was expected and what was found. The dataset loader trusts
nothing it did not check here.

The format (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"):
- a 4-byte magic number: two zero bytes, a type code (below) and the number of
  dimensions;
- one big-endian unsigned 32-bit size per dimension;
- the items, big-endian, in C order: exactly the product of the sizes of them.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib

import numpy as np

# Type code -> item type, as the format lists them. All multi-byte types are big-endian.
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

GZIP_MAGIC = b"\x1f\x8b"

MAGIC_BYTES = 4
DIMENSION_BYTES = 4


class IDXError(ValueError):
    """A file or byte string is not a well-formed IDX array (or not a readable gzip of one)."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in the IDX file at `path`; gzip is recognized by its magic bytes.

    Raises FileNotFoundError when there is no file at `path`, and IDXError for
    everything else that goes wrong: an unreadable file, a bad gzip stream, or a
    malformed IDX header or payload.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        raise
    except OSError as error:
        raise IDXError(f"{os.fspath(path)}: cannot read the file ({error})") from error
    return parse_idx(data, source=os.fspath(path))


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """The array encoded by the IDX bytes `data`, gzipped or raw, in native byte order.

    `source` names the data in error messages (read_idx passes the path). Raises
    TypeError when `data` is not bytes-like, and IDXError for any malformed input.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if data.startswith(GZIP_MAGIC):
        data = _gunzip(data, source)

    if len(data) < MAGIC_BYTES:
        raise IDXError(f"{source}: expected a {MAGIC_BYTES}-byte magic number, got {len(data)} bytes")
    zeros, type_code, dimension_count = data[:2], data[2], data[3]
    if zeros != b"\x00\x00":
        raise IDXError(f"{source}: the magic number must start with two zero bytes, got {zeros.hex()}")
    if type_code not in IDX_TYPES:
        known = ", ".join(f"0x{code:02X}" for code in IDX_TYPES)
        raise IDXError(f"{source}: the type code must be one of {known}, got 0x{type_code:02X}")
    if dimension_count == 0:
        raise IDXError(f"{source}: the number of dimensions must be at least 1, got 0")

    header_bytes = MAGIC_BYTES + DIMENSION_BYTES * dimension_count
    if len(data) < header_bytes:
        raise IDXError(
            f"{source}: a header with {dimension_count} dimensions takes {header_bytes} bytes, "
            f"got only {len(data)}"
        )
    shape = tuple(
        int.from_bytes(data[offset:offset + DIMENSION_BYTES], "big")
        for offset in range(MAGIC_BYTES, header_bytes, DIMENSION_BYTES)
    )

    item_type = IDX_TYPES[type_code]
    # Python integers: the product of 255 dimensions of up to 2**32 cannot overflow.
    expected_bytes = math.prod(shape) * item_type.itemsize
    payload_bytes = len(data) - header_bytes
    if payload_bytes != expected_bytes:
        problem = "truncated" if payload_bytes < expected_bytes else "trailing bytes"
        raise IDXError(
            f"{source}: shape {shape} of {item_type.itemsize}-byte items needs a payload of "
            f"{expected_bytes} bytes, got {payload_bytes} ({problem})"
        )
    items = np.frombuffer(data, dtype=item_type, offset=header_bytes)
    try:
        # Empty arrays pass the size check whatever their other sizes, and IDX allows
        # 255 dimensions: numpy refuses shapes too large or with too many dimensions.
        array = items.reshape(shape)
    except ValueError as error:
        raise IDXError(f"{source}: numpy cannot hold an array of shape {shape} ({error})") from error
    # astype copies into a writable array in the machine's byte order.
    return array.astype(item_type.newbyteorder("="))


def _gunzip(data: bytes, source: str) -> bytes:
    # gzip reports a broken stream as BadGzipFile (an OSError), EOFError or zlib.error;
    # callers see one error type instead.
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise IDXError(f"{source}: not a readable gzip stream ({error})") from error
