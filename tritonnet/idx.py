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
import io
import math
import os
import zlib
from typing import BinaryIO

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
READ_CHUNK_BYTES = 1 << 24


class IDXError(ValueError):
    """A file or byte string is not a well-formed IDX array (or not a readable gzip of one)."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in the IDX file at `path`; gzip is recognized by its magic bytes.

    Raises FileNotFoundError when there is no file at `path`, and IDXError for
    everything else that goes wrong: an unreadable file, a bad gzip stream, or a
    malformed IDX header or payload.
    """
    source = os.fspath(path)
    try:
        file = open(path, "rb")
    except FileNotFoundError:
        raise
    except OSError as error:
        raise IDXError(f"{source}: cannot read the file ({error})") from error
    with file:
        return _load(file, source)


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """The array encoded by the IDX bytes `data`, gzipped or raw, in native byte order.

    `source` names the data in error messages (read_idx passes the path). Raises
    TypeError when `data` is not bytes-like, and IDXError for any malformed input.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    return _load(io.BytesIO(data), source)


def _load(file: BinaryIO, source: str) -> np.ndarray:
    """Read an IDX array from the seekable binary `file`, unpacking gzip on the fly.

    Reading is bounded by the header: at most the payload it announces plus one
    byte, so a file that goes on past its payload (a small .gz can unpack to
    gigabytes) is rejected after that one byte, not after reading it all.
    """
    gzipped = file.read(len(GZIP_MAGIC)) == GZIP_MAGIC
    file.seek(0)
    stream = gzip.GzipFile(fileobj=file, mode="rb") if gzipped else file
    # gzip reports a broken stream as BadGzipFile (an OSError), EOFError or zlib.error;
    # callers see one error type instead.
    try:
        return _parse(stream, source)
    except (OSError, EOFError, zlib.error) as error:
        problem = "not a readable gzip stream" if gzipped else "cannot read the file"
        raise IDXError(f"{source}: {problem} ({error})") from error


def _parse(stream: BinaryIO, source: str) -> np.ndarray:
    magic = _read_at_most(stream, MAGIC_BYTES)
    if len(magic) < MAGIC_BYTES:
        raise IDXError(f"{source}: expected a {MAGIC_BYTES}-byte magic number, got {len(magic)} bytes")
    zeros, type_code, dimension_count = magic[:2], magic[2], magic[3]
    if zeros != b"\x00\x00":
        raise IDXError(f"{source}: the magic number must start with two zero bytes, got {zeros.hex()}")
    if type_code not in IDX_TYPES:
        known = ", ".join(f"0x{code:02X}" for code in IDX_TYPES)
        raise IDXError(f"{source}: the type code must be one of {known}, got 0x{type_code:02X}")
    if dimension_count == 0:
        raise IDXError(f"{source}: the number of dimensions must be at least 1, got 0")

    header_bytes = MAGIC_BYTES + DIMENSION_BYTES * dimension_count
    sizes = _read_at_most(stream, header_bytes - MAGIC_BYTES)
    if len(sizes) < header_bytes - MAGIC_BYTES:
        raise IDXError(
            f"{source}: a header with {dimension_count} dimensions takes {header_bytes} bytes, "
            f"got only {MAGIC_BYTES + len(sizes)}"
        )
    shape = tuple(
        int.from_bytes(sizes[offset:offset + DIMENSION_BYTES], "big")
        for offset in range(0, len(sizes), DIMENSION_BYTES)
    )

    item_type = IDX_TYPES[type_code]
    # Python integers: the product of 255 dimensions of up to 2**32 cannot overflow.
    expected_bytes = math.prod(shape) * item_type.itemsize
    payload = _read_at_most(stream, expected_bytes + 1)
    if len(payload) != expected_bytes:
        found = f"{len(payload)} (truncated)" if len(payload) < expected_bytes else "more (trailing bytes)"
        raise IDXError(
            f"{source}: shape {shape} of {item_type.itemsize}-byte items needs a payload of "
            f"{expected_bytes} bytes, got {found}"
        )
    items = np.frombuffer(payload, dtype=item_type)
    try:
        # Empty arrays pass the size check whatever their other sizes, and IDX allows
        # 255 dimensions: numpy refuses shapes too large or with too many dimensions.
        array = items.reshape(shape)
    except ValueError as error:
        raise IDXError(f"{source}: numpy cannot hold an array of shape {shape} ({error})") from error
    # astype copies into a writable array in the machine's byte order.
    return array.astype(item_type.newbyteorder("="))


def _read_at_most(stream: BinaryIO, count: int) -> bytes:
    """`count` bytes from `stream`, fewer only where it ends. Read in chunks, so that
    a header announcing more than the file holds costs only what the file holds."""
    chunks = []
    while count > 0:
        chunk = stream.read(min(count, READ_CHUNK_BYTES))
        if not chunk:
            break
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)
