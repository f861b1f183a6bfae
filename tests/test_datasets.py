"""Dataset look-up, download and loading, without the network.

Every test runs with its own home, cache and system folders, and with a guard in
place of urllib's opener that serves file:// URLs only. The registry entries are
swapped for tiny datasets (6 training and 4 test images) written by the test with
`encode_idx`, so each place and layout can be told apart by its contents.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import http.server
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from test_idx import encode_idx
from tritonnet import download
from tritonnet.datasets import DATASETS, DatasetNotFoundError, load_dataset
from tritonnet.idx import IDXError

TRAIN_SIZE = 6
TEST_SIZE = 4
# float32 holds normalized pixels (|x| < 4) to about 4e-7; a few roundings add up to
# well under 1e-6 against the float64 oracle.
NORMALIZE_TOLERANCE = 1e-6
REAL_URLOPEN = urllib.request.urlopen


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private home and cache, no TRITONNET_DATA, and no network."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("TRITONNET_DATA", raising=False)
    opened = []
    real_urlopen = urllib.request.urlopen

    def file_only_urlopen(url, timeout=None):
        opened.append((url, timeout))
        if not url.startswith("file://"):
            raise urllib.error.URLError("the network is off in tests")
        return real_urlopen(url, timeout=timeout)

    monkeypatch.setattr(urllib.request, "urlopen", file_only_urlopen)
    return opened


def make_files(seed: int, train_size: int = TRAIN_SIZE, test_size: int = TEST_SIZE) -> dict[str, np.ndarray]:
    """Random images and labels for the four roles; the seed tells copies apart."""
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (train_size, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, train_size, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (test_size, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, test_size, dtype=np.uint8),
    }


def write_files(folder: Path, arrays: dict[str, np.ndarray], info, compress: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for role, array in arrays.items():
        data = encode_idx(array)
        remote = info.files[role]
        if compress:
            (folder / remote.name).write_bytes(gzip.compress(data, mtime=0))
        else:
            (folder / remote.stem).write_bytes(data)
    return folder


def md5_of_gzip(array: np.ndarray) -> str:
    return hashlib.md5(gzip.compress(encode_idx(array), mtime=0)).hexdigest()


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """Tiny MNIST and Fashion-MNIST entries: system folders in tmp_path, no mirrors.

    Their md5s are those of the gzipped `make_files(seed=1)` arrays, the copy that
    the download tests put on their mirrors.
    """
    mirror_arrays = make_files(seed=1)
    for name, info in DATASETS.items():
        files = {
            role: dataclasses.replace(remote, md5=md5_of_gzip(mirror_arrays[role]))
            for role, remote in info.files.items()
        }
        monkeypatch.setitem(
            DATASETS,
            name,
            dataclasses.replace(
                info,
                files=files,
                mirrors=(),
                system_dirs=(str(tmp_path / "system" / name),),
                train_size=TRAIN_SIZE,
                test_size=TEST_SIZE,
            ),
        )
    return mirror_arrays


def expected_images(images: np.ndarray, name: str) -> np.ndarray:
    """The float64 oracle of the exercise's transform, flattened."""
    info = DATASETS[name]
    return (images.reshape(len(images), -1) / 255.0 - info.mean) / info.std


def assert_loaded(dataset, arrays: dict[str, np.ndarray], name: str) -> None:
    assert dataset.name == name
    for split in ("train", "test"):
        images = getattr(dataset, f"{split}_images")
        labels = getattr(dataset, f"{split}_labels")
        assert images.dtype == torch.float32 and labels.dtype == torch.int64
        np.testing.assert_allclose(
            images.numpy(), expected_images(arrays[f"{split}_images"], name), rtol=0, atol=NORMALIZE_TOLERANCE
        )
        np.testing.assert_array_equal(labels.numpy(), arrays[f"{split}_labels"])


def cache_folder(tmp_path: Path, name: str) -> Path:
    return tmp_path / "home" / ".cache" / "tritonnet" / name


def file_url(folder: Path) -> str:
    return folder.as_uri() + "/"


# Look-up order.


def test_data_dir_comes_first(tmp_path, registry):
    info = DATASETS["mnist"]
    given = write_files(tmp_path / "given", make_files(seed=2), info)
    write_files(cache_folder(tmp_path, "mnist"), make_files(seed=3), info)
    write_files(tmp_path / "system" / "mnist", make_files(seed=4), info)
    dataset = load_dataset("mnist", data_dir=given)
    assert dataset.source == given
    assert_loaded(dataset, make_files(seed=2), "mnist")


def test_environment_variable_when_no_data_dir(tmp_path, registry, monkeypatch):
    info = DATASETS["mnist"]
    from_environment = write_files(tmp_path / "environment", make_files(seed=2), info)
    given = write_files(tmp_path / "given", make_files(seed=3), info)
    write_files(cache_folder(tmp_path, "mnist"), make_files(seed=4), info)
    monkeypatch.setenv("TRITONNET_DATA", str(from_environment))
    assert load_dataset("mnist").source == from_environment
    assert load_dataset("mnist", data_dir=given).source == given


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "raw"])
@pytest.mark.parametrize(
    "name, layout",
    [
        ("mnist", "."),
        ("mnist", "mnist"),
        ("mnist", "MNIST/raw"),
        ("fashion-mnist", "fashion-mnist"),
        ("fashion-mnist", "FashionMNIST/raw"),
    ],
)
def test_data_dir_layouts(tmp_path, registry, name, layout, compress):
    root = tmp_path / "data"
    folder = write_files(root / layout, make_files(seed=2), DATASETS[name], compress=compress)
    dataset = load_dataset(name, data_dir=root, download=False)
    assert dataset.source == folder
    assert_loaded(dataset, make_files(seed=2), name)


def test_cache_before_system_dir(tmp_path, registry):
    info = DATASETS["fashion-mnist"]
    cached = write_files(cache_folder(tmp_path, "fashion-mnist"), make_files(seed=2), info)
    write_files(tmp_path / "system" / "fashion-mnist", make_files(seed=3), info)
    dataset = load_dataset("fashion-mnist")
    assert dataset.source == cached
    assert_loaded(dataset, make_files(seed=2), "fashion-mnist")


def test_cache_honours_xdg_cache_home(tmp_path, registry, monkeypatch):
    xdg = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    write_files(cache_folder(tmp_path, "mnist"), make_files(seed=3), DATASETS["mnist"])
    cached = write_files(xdg / "tritonnet" / "mnist", make_files(seed=2), DATASETS["mnist"])
    assert load_dataset("mnist").source == cached


def test_system_dir_last_before_download(tmp_path, registry, isolated):
    system = write_files(tmp_path / "system" / "fashion-mnist", make_files(seed=2), DATASETS["fashion-mnist"])
    dataset = load_dataset("fashion-mnist")
    assert dataset.source == system
    assert_loaded(dataset, make_files(seed=2), "fashion-mnist")
    assert isolated == []


def test_incomplete_cache_is_skipped(tmp_path, registry):
    info = DATASETS["mnist"]
    partial = write_files(cache_folder(tmp_path, "mnist"), make_files(seed=2), info)
    (partial / info.files["test_labels"].name).unlink()
    system = write_files(tmp_path / "system" / "mnist", make_files(seed=3), info)
    assert load_dataset("mnist").source == system


# A folder the user names is the only place looked in.


@pytest.fixture
def data_elsewhere(tmp_path, registry):
    """Complete copies in the cache and the system folder, which a named folder hides."""
    for name, info in DATASETS.items():
        write_files(cache_folder(tmp_path, name), make_files(seed=3), info)
        write_files(tmp_path / "system" / name, make_files(seed=4), info)


@pytest.mark.parametrize("name", ["mnist", "auto"])
@pytest.mark.parametrize("how", ["data_dir", "TRITONNET_DATA"])
def test_named_folder_missing_a_file_fails_naming_it(tmp_path, data_elsewhere, monkeypatch, name, how):
    info = DATASETS["mnist"]
    given = write_files(tmp_path / "given", make_files(seed=2), info)
    (given / info.files["test_labels"].name).unlink()
    data_dir = given if how == "data_dir" else None
    if how == "TRITONNET_DATA":
        monkeypatch.setenv("TRITONNET_DATA", str(given))
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset(name, data_dir=data_dir)
    message = str(caught.value)
    assert f"not found in {given}, named by {how}" in message
    assert f"mnist: {given} (missing t10k-labels-idx1-ubyte, gzipped or not)" in message
    assert f"mnist: {given / 'MNIST' / 'raw'} (no such folder)" in message
    if name == "auto":
        assert f"fashion-mnist: {given / 'FashionMNIST' / 'raw'} (no such folder)" in message
    for elsewhere in (cache_folder(tmp_path, "mnist"), tmp_path / "system"):
        assert str(elsewhere) not in message


@pytest.mark.parametrize("how", ["data_dir", "TRITONNET_DATA"])
def test_named_folder_that_does_not_exist_fails(tmp_path, data_elsewhere, monkeypatch, how):
    absent = tmp_path / "absent"
    if how == "TRITONNET_DATA":
        monkeypatch.setenv("TRITONNET_DATA", str(absent))
    with pytest.raises(DatasetNotFoundError, match=f"^{how}.* {absent}: no such folder$"):
        load_dataset("mnist", data_dir=absent if how == "data_dir" else None)


# Downloads.


def test_download_into_cache(tmp_path, registry, isolated, monkeypatch):
    mirror = write_files(tmp_path / "mirror", registry, DATASETS["mnist"])
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(DATASETS["mnist"], mirrors=(file_url(mirror),)))
    dataset = load_dataset("mnist")
    cache = cache_folder(tmp_path, "mnist")
    assert dataset.source == cache
    assert_loaded(dataset, registry, "mnist")
    assert sorted(path.name for path in cache.iterdir()) == sorted(
        remote.name for remote in DATASETS["mnist"].files.values()
    )
    for remote in DATASETS["mnist"].files.values():
        assert (cache / remote.name).read_bytes() == (mirror / remote.name).read_bytes()
    # Every network call has a timeout, so an offline machine cannot hang on one.
    assert len(isolated) == 4
    assert all(timeout is not None and timeout > 0 for _, timeout in isolated)

    # The next load reads the cache: the mirror is gone and nothing is fetched.
    for path in mirror.iterdir():
        path.unlink()
    assert load_dataset("mnist").source == cache
    assert len(isolated) == 4


def test_download_tries_the_next_mirror(tmp_path, registry, monkeypatch):
    mirror = write_files(tmp_path / "mirror", registry, DATASETS["mnist"])
    mirrors = ("https://unreachable.invalid/mnist/", file_url(tmp_path / "empty"), file_url(mirror))
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(DATASETS["mnist"], mirrors=mirrors))
    assert_loaded(load_dataset("mnist"), registry, "mnist")


def test_checksum_mismatch_leaves_nothing(tmp_path, registry, monkeypatch):
    # A mirror serving other files than the md5s describe.
    mirror = write_files(tmp_path / "mirror", make_files(seed=5), DATASETS["mnist"])
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(DATASETS["mnist"], mirrors=(file_url(mirror),)))
    with pytest.raises(DatasetNotFoundError, match="md5 mismatch: expected [0-9a-f]{32}, got [0-9a-f]{32}"):
        load_dataset("mnist")
    assert not cache_folder(tmp_path, "mnist").exists()


class CutConnection:
    """A response that delivers part of a file, then loses the connection."""

    def __init__(self, data: bytes):
        self.chunks = [data[: len(data) // 2]]

    def read1(self, size: int) -> bytes:
        if self.chunks:
            return self.chunks.pop()
        raise http.client.IncompleteRead(b"")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


def test_partial_download_leaves_nothing(tmp_path, registry, monkeypatch):
    mirror = write_files(tmp_path / "mirror", registry, DATASETS["mnist"])
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(DATASETS["mnist"], mirrors=("https://example.test/",)))

    def cut_urlopen(url, timeout=None):
        return CutConnection((mirror / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", cut_urlopen)
    with pytest.raises(DatasetNotFoundError, match="download failed: .*IncompleteRead"):
        load_dataset("mnist")
    assert not cache_folder(tmp_path, "mnist").exists()


class TricklingHandler(http.server.BaseHTTPRequestHandler):
    """Announces 1,000 bytes, then sends one every 20 ms: 20 s, were it let finish."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            for _ in range(1000):
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(0.02)
        except OSError:  # the client gave up
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def trickling_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TricklingHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_download_stops_at_its_deadline(tmp_path, registry, monkeypatch, trickling_server):
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(DATASETS["mnist"], mirrors=(trickling_server,)))
    monkeypatch.setattr(urllib.request, "urlopen", REAL_URLOPEN)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setattr(download, "DOWNLOAD_DEADLINE_SECONDS", 0.3)
    with pytest.raises(DatasetNotFoundError, match=r"download failed: .*stopped: a download may take at most 0\.3 s"):
        load_dataset("mnist")
    assert not cache_folder(tmp_path, "mnist").exists()


def test_leftovers_of_a_killed_download_go_at_the_next_start(tmp_path, registry):
    cache = cache_folder(tmp_path, "mnist")
    cache.mkdir(parents=True)
    stale = cache / ".train-images-idx3-ubyte.gz.k1x2y3z4.tmp"
    running = cache / ".t10k-labels-idx1-ubyte.gz.a1b2c3d4.tmp"  # another process's, still going
    for path in (stale, running):
        path.write_bytes(b"part of a file")
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))
    empty = cache_folder(tmp_path, "fashion-mnist")  # what a failed download left
    empty.mkdir()
    write_files(tmp_path / "system" / "mnist", make_files(seed=2), DATASETS["mnist"])
    load_dataset("mnist")
    assert not stale.exists() and running.exists()
    assert not empty.exists()


def test_download_false_never_opens_a_url(registry, isolated):
    with pytest.raises(DatasetNotFoundError, match=r"no download \(download=False\)"):
        load_dataset("mnist", download=False)
    assert isolated == []


# "auto".


def test_auto_prefers_mnist(tmp_path, registry):
    write_files(tmp_path / "system" / "mnist", make_files(seed=2), DATASETS["mnist"])
    write_files(tmp_path / "system" / "fashion-mnist", make_files(seed=3), DATASETS["fashion-mnist"])
    assert load_dataset().name == "mnist"


def test_auto_downloads_mnist_before_using_fashion_mnist(tmp_path, registry, monkeypatch):
    mirror = write_files(tmp_path / "mirror", registry, DATASETS["mnist"])
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(DATASETS["mnist"], mirrors=(file_url(mirror),)))
    write_files(tmp_path / "system" / "fashion-mnist", make_files(seed=3), DATASETS["fashion-mnist"])
    assert load_dataset().name == "mnist"


def test_auto_falls_back_to_fashion_mnist_offline(tmp_path, registry, isolated, monkeypatch):
    offline = ("https://unreachable.invalid/",)
    for name in DATASETS:
        monkeypatch.setitem(DATASETS, name, dataclasses.replace(DATASETS[name], mirrors=offline))
    system = write_files(tmp_path / "system" / "fashion-mnist", make_files(seed=2), DATASETS["fashion-mnist"])
    dataset = load_dataset("auto")
    assert dataset.name == "fashion-mnist" and dataset.source == system
    # Only MNIST was worth a download; Fashion-MNIST was on disk.
    assert [url for url, _ in isolated] == ["https://unreachable.invalid/train-images-idx3-ubyte.gz"]


def test_not_found_lists_every_place(tmp_path, registry, monkeypatch):
    offline = ("https://unreachable.invalid/",)
    for name in DATASETS:
        monkeypatch.setitem(DATASETS, name, dataclasses.replace(DATASETS[name], mirrors=offline))
    partial = write_files(cache_folder(tmp_path, "mnist"), make_files(seed=2), DATASETS["mnist"])
    (partial / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("auto")
    message = str(caught.value)
    for name in DATASETS:
        for place in (cache_folder(tmp_path, name), tmp_path / "system" / name):
            assert f"{name}: {place} (" in message
    assert f"mnist: {partial} (missing train-labels-idx1-ubyte, gzipped or not)" in message
    assert "mnist: download failed: https://unreachable.invalid/train-labels-idx1-ubyte.gz" in message
    assert "fashion-mnist: no download" in message
    for advice in ("TRITONNET_DATA", "--data-dir", "apt-get install dataset-fashion-mnist"):
        assert advice in message


# Structural checks and arguments.


def test_wrong_count_is_rejected(tmp_path, registry):
    arrays = make_files(seed=2, train_size=TRAIN_SIZE + 1)
    folder = write_files(tmp_path / "given", arrays, DATASETS["mnist"])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: expected uint8 images of shape \(6, 28, 28\)"):
        load_dataset("mnist", data_dir=folder)


def test_label_out_of_range_is_rejected(tmp_path, registry):
    arrays = make_files(seed=2)
    arrays["test_labels"][-1] = 10
    folder = write_files(tmp_path / "given", arrays, DATASETS["mnist"])
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte: expected labels in 0..9, got a maximum of 10"):
        load_dataset("mnist", data_dir=folder)


def test_malformed_file_raises_idx_error(tmp_path, registry):
    folder = write_files(tmp_path / "given", make_files(seed=2), DATASETS["mnist"])
    path = folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(IDXError, match="train-labels-idx1-ubyte.gz: not a readable gzip stream"):
        load_dataset("mnist", data_dir=folder)


def test_limits_take_the_first_samples(tmp_path, registry):
    folder = write_files(tmp_path / "given", make_files(seed=2), DATASETS["mnist"])
    whole = load_dataset("mnist", data_dir=folder)
    limited = load_dataset("mnist", data_dir=folder, limit_train=3, limit_test=100)
    assert torch.equal(limited.train_images, whole.train_images[:3])
    assert torch.equal(limited.train_labels, whole.train_labels[:3])
    assert torch.equal(limited.test_images, whole.test_images)


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        ({"name": "cifar"}, ValueError, "name must be one of .*got 'cifar'"),
        ({"limit_train": 0}, ValueError, "limit_train must be a positive integer, got 0"),
        ({"limit_test": 2.5}, ValueError, "limit_test must be a positive integer, got 2.5"),
    ],
)
def test_bad_arguments(arguments, error, message):
    with pytest.raises(error, match=message):
        load_dataset(**arguments)


# The real files of Debian's dataset-fashion-mnist package.

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(
    not DEBIAN_FASHION_MNIST.is_dir(),
    reason=f"{DEBIAN_FASHION_MNIST} is absent (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist_from_debian():
    dataset = load_dataset("fashion-mnist", download=False)
    assert dataset.source == DEBIAN_FASHION_MNIST
    assert dataset.train_images.shape == (60000, 784) and dataset.test_images.shape == (10000, 784)
    assert dataset.train_labels.shape == (60000,) and dataset.test_labels.shape == (10000,)
    for labels in (dataset.train_labels, dataset.test_labels):
        # Fashion-MNIST is balanced: each class has a tenth of each split.
        assert torch.equal(torch.bincount(labels, minlength=10), torch.full((10,), len(labels) // 10))
    # The stored mean and std are rounded to 4 digits (exact: 0.28604, 0.35302), so
    # the normalized training pixels are off 0 and 1 by about 1e-4.
    assert abs(dataset.train_images.double().mean().item()) < 1e-3
    assert abs(dataset.train_images.double().std().item() - 1) < 1e-3
