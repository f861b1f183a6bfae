"""The IDX parser: round trips, each malformed input, and fuzzing.

The oracle is `encode_idx` below, an independent writer of the format built with
struct, so a parser bug cannot hide behind a matching writer bug.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tritonnet import idx
from tritonnet.idx import IDX_TYPES, IDXError, parse_idx, read_idx

TYPE_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of `array`: magic, big-endian uint32 sizes, big-endian items."""
    header = struct.pack(">BBBB", 0, 0, TYPE_CODES[array.dtype], array.ndim)
    sizes = struct.pack(f">{array.ndim}I", *array.shape)
    return header + sizes + array.astype(array.dtype.newbyteorder(">")).tobytes()


def sample_array(dtype: np.dtype, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", list(TYPE_CODES), ids=str)
@pytest.mark.parametrize("shape", [(7,), (5, 3, 4), (2, 3, 2, 2), (0, 28, 28)], ids=str)
def test_parse_round_trip(dtype, shape):
    array = sample_array(dtype, shape)
    parsed = parse_idx(encode_idx(array))
    assert parsed.shape == array.shape
    assert parsed.dtype == array.dtype and parsed.dtype.isnative
    np.testing.assert_array_equal(parsed, array)
    assert parsed.flags.writeable


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_read_idx_files(tmp_path, compress):
    images = sample_array(np.dtype(np.uint8), (6, 28, 28))
    labels = sample_array(np.dtype(np.uint8), (6,)) % 10
    for name, array in (("images", images), ("labels", labels)):
        data = encode_idx(array)
        path = tmp_path / name
        path.write_bytes(gzip.compress(data) if compress else data)
        np.testing.assert_array_equal(read_idx(path), array)


def test_parse_accepts_bytearray_and_memoryview():
    data = encode_idx(sample_array(np.dtype(np.int16), (3, 2)))
    expected = parse_idx(data)
    np.testing.assert_array_equal(parse_idx(bytearray(data)), expected)
    np.testing.assert_array_equal(parse_idx(memoryview(data)), expected)


VALID = encode_idx(sample_array(np.dtype(np.uint8), (2, 3, 4)))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "expected a 4-byte magic number, got 0 bytes"),
        (VALID[:3], "expected a 4-byte magic number, got 3 bytes"),
        (b"\x01" + VALID[1:], "two zero bytes, got 0100"),
        (b"\x00\x07" + VALID[2:], "two zero bytes, got 0007"),
        (VALID[:2] + b"\x0a" + VALID[3:], "type code must be one of 0x08, .*got 0x0A"),
        (VALID[:3] + b"\x00" + VALID[4:], "number of dimensions must be at least 1, got 0"),
        (VALID[:10], "3 dimensions takes 16 bytes, got only 10"),
        (VALID[:-1], r"needs a payload of 24 bytes, got 23 \(truncated\)"),
        (VALID[:16], r"needs a payload of 24 bytes, got 0 \(truncated\)"),
        (VALID + b"\x00", r"needs a payload of 24 bytes, got more \(trailing bytes\)"),
        (VALID[:3] + b"\x02" + VALID[4:], r"shape \(2, 3\) .* needs a payload of 6 bytes"),
        (VALID[:2] + b"\x0c" + VALID[3:], r"4-byte items needs a payload of 96 bytes, got 24"),
        (b"\x1f\x8b" + VALID, "not a readable gzip stream"),
        (gzip.compress(VALID)[:-5], "not a readable gzip stream"),
    ],
    ids=[
        "empty", "short-magic", "nonzero-first-byte", "nonzero-second-byte", "unknown-type",
        "no-dimensions", "short-header", "truncated-payload", "no-payload", "trailing-byte",
        "fewer-dimensions", "wider-type", "corrupt-gzip", "truncated-gzip",
    ],
)
def test_malformed_input_raises_idx_error(data, message):
    with pytest.raises(IDXError, match=message) as caught:
        parse_idx(data, source="sample.idx")
    assert str(caught.value).startswith("sample.idx: ")


def test_gzip_checksum_mismatch_raises_idx_error():
    compressed = bytearray(gzip.compress(VALID))
    compressed[-8] ^= 0xFF  # the CRC32 of the uncompressed data
    with pytest.raises(IDXError, match="not a readable gzip stream"):
        parse_idx(bytes(compressed))


def test_gzipped_malformed_idx_raises_idx_error():
    with pytest.raises(IDXError, match=r"\(truncated\)"):
        parse_idx(gzip.compress(VALID[:-4]))


def test_numpy_unrepresentable_shape_raises_idx_error():
    # Empty, so the payload size matches, but far beyond numpy's largest array.
    shape = (2**32 - 1, 2**32 - 1, 0)
    data = struct.pack(">BBBB3I", 0, 0, 0x08, 3, *shape)
    with pytest.raises(IDXError, match="numpy cannot hold an array of shape"):
        parse_idx(data)


def test_too_many_dimensions_raises_idx_error():
    # IDX allows up to 255 dimensions; numpy holds at most 64 (32 before numpy 2).
    data = struct.pack(">BBBB", 0, 0, 0x08, 200) + bytes(4 * 200)
    with pytest.raises(IDXError, match="numpy cannot hold"):
        parse_idx(data)


def test_read_idx_names_the_file(tmp_path):
    path = tmp_path / "broken-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(VALID[:-1]))
    with pytest.raises(IDXError, match=f"^{path}: .*truncated"):
        read_idx(path)


class BoundedFile:
    """A file that fails the test when more than `budget` bytes of it are read."""

    def __init__(self, path: Path, budget: int):
        self.file = open(path, "rb")
        self.budget = budget

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > self.budget:
            raise AssertionError(f"asked for {size} bytes with {self.budget} left to read")
        data = self.file.read(size)
        self.budget -= len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.file.close()


GIGABYTE = 1 << 30
ANNOUNCED_BYTES = 1000
BOMB_HEADER = struct.pack(">BBBBI", 0, 0, 0x08, 1, ANNOUNCED_BYTES)


def gzip_bomb(path: Path) -> Path:
    """A header announcing 1,000 bytes, then 2 GiB of zeros in about 2 MiB of gzip:
    gzip members concatenate, so one member of 1 MiB of zeros is written 2,048 times."""
    member = gzip.compress(bytes(1 << 20), mtime=0)
    with open(path, "wb") as file:
        file.write(gzip.compress(BOMB_HEADER, mtime=0))
        for _ in range(2 * GIGABYTE // (1 << 20)):
            file.write(member)
    return path


def sparse_bomb(path: Path) -> Path:
    """The same header, then 2 GiB of zeros in a sparse file: nothing on disk."""
    with open(path, "wb") as file:
        file.write(BOMB_HEADER)
        file.truncate(len(BOMB_HEADER) + 2 * GIGABYTE)
    return path


@pytest.mark.parametrize("make_bomb", [gzip_bomb, sparse_bomb], ids=["gzip", "raw"])
def test_data_past_the_announced_payload_is_rejected_unread(tmp_path, monkeypatch, make_bomb):
    path = make_bomb(tmp_path / "bomb-idx1-ubyte")
    # At most a quarter of the compressed file (gzip reads 128 KiB at a time), and
    # a few megabytes of the raw one: never the 2 GiB that follow the header.
    budget = (path.stat().st_size // 4) if make_bomb is gzip_bomb else 1 << 22
    monkeypatch.setattr(idx, "open", lambda path, mode: BoundedFile(path, budget), raising=False)
    with pytest.raises(IDXError, match=f"needs a payload of {ANNOUNCED_BYTES} bytes, got more"):
        read_idx(path)


def test_read_idx_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent")


def test_read_idx_unreadable_path_raises_idx_error(tmp_path):
    with pytest.raises(IDXError, match=f"^{tmp_path}: cannot read the file"):
        read_idx(tmp_path)


def test_parse_rejects_text():
    with pytest.raises(TypeError, match="data must be bytes, got str"):
        parse_idx("\x00\x00\x08\x01")


# Fuzzing. Any input either parses or raises IDXError: never struct.error,
# EOFError, zlib.error, a numpy error or a crash. When an input parses, writing the
# result back must give the input again, so a parser that accepts garbage fails.

FUZZ_SETTINGS = settings(
    max_examples=5000,
    deadline=None,
    derandomize=True,  # the same inputs on every run and every machine
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

SEEDS = [
    encode_idx(sample_array(np.dtype(np.uint8), (3, 2, 2))),
    encode_idx(sample_array(np.dtype(np.uint8), (5,))),
    encode_idx(sample_array(np.dtype(np.int16), (2, 3))),
    encode_idx(sample_array(np.dtype(np.float32), (4,))),
    encode_idx(sample_array(np.dtype(np.float64), (1, 1, 2))),
]

# Bytes shaped like an IDX header, so that the fuzzer reaches the checks past the
# magic number far more often than uniform bytes do.
type_codes = st.sampled_from([*IDX_TYPES, 0x00, 0x0A, 0xFF])
header_like = st.builds(
    lambda type_code, dimension_count, rest: bytes([0, 0, type_code, dimension_count]) + rest,
    type_codes,
    st.integers(0, 6) | st.integers(0, 255),
    st.binary(max_size=64),
)
raw_inputs = st.binary(max_size=128) | header_like


def check_parse(data: bytes) -> None:
    try:
        parsed = parse_idx(data)
    except IDXError:
        return
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    assert encode_idx(parsed) == raw


@FUZZ_SETTINGS
@given(data=raw_inputs, compress=st.booleans())
def test_fuzz_arbitrary_bytes(data, compress):
    check_parse(gzip.compress(data) if compress else data)


@st.composite
def mutated_files(draw):
    """A valid file, maybe gzipped, then cut, overwritten, extended or spliced."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    if draw(st.booleans()):
        data = bytearray(gzip.compress(bytes(data)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["truncate", "overwrite", "insert", "append", "delete"]))
        position = draw(st.integers(0, len(data)))
        if action == "truncate":
            del data[position:]
        elif action == "overwrite" and position < len(data):
            data[position] = draw(st.integers(0, 255))
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif action == "append":
            data += draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del data[position:position + draw(st.integers(1, 8))]
    return bytes(data)


@FUZZ_SETTINGS
@given(data=mutated_files())
def test_fuzz_mutated_files(data):
    check_parse(data)
