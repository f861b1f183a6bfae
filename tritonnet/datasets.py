"""MNIST and Fashion-MNIST: where to find them, how to check them, how to load them.

`load_dataset` returns a whole dataset as four tensors, normalized the way the
exercise normalizes MNIST. The trainer slices batches out of them, so there is no
per-sample Dataset or DataLoader on the hot path.

Where the files are looked for, for one dataset:
- A folder the user names, the `data_dir` argument (the CLI's --data-dir), else
  the TRITONNET_DATA environment variable, is the only place looked in, as
  torchvision does with an explicit root: the files directly in it, in
  `<dir>/<dataset>/`, or in torchvision's layout `<dir>/MNIST/raw/`
  (`<dir>/FashionMNIST/raw/`). When they are not there, loading fails and says
  which are missing; it never falls back to other data.
- Otherwise, in order: the cache, `$XDG_CACHE_HOME/tritonnet/<dataset>` (default
  `~/.cache`); system folders, such as Debian's dataset-fashion-mnist package;
  and a download from the dataset's mirrors into the cache (`tritonnet.download`),
  when `download` is set.
Each file may be gzipped or not. Files are found by name and then checked by
structure (counts, 28x28 images, labels in 0..9); only downloads are checked
against an md5, because Debian recompressed its .gz files and their md5s differ.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from tritonnet import checks
from tritonnet.download import DownloadError, RemoteFile, download_files, remove_leftovers
from tritonnet.idx import read_idx

FILE_ROLES = ("train_images", "train_labels", "test_images", "test_labels")

IMAGE_SHAPE = (28, 28)
CLASS_COUNT = 10


# The files of a dataset in MNIST's layout, in FILE_ROLES' order: MNIST and
# Fashion-MNIST name them alike.
IDX_FILE_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def idx_files(train_md5s: tuple[str, str], test_md5s: tuple[str, str]) -> dict[str, RemoteFile]:
    """A dataset's four files in MNIST's layout, by role, from the md5s of its
    (images, labels) for training and for testing."""
    md5s = train_md5s + test_md5s
    return {role: RemoteFile(name, md5) for role, name, md5 in zip(FILE_ROLES, IDX_FILE_NAMES, md5s)}


@dataclass(frozen=True)
class DatasetInfo:
    """What we know about a dataset before loading it."""

    name: str
    files: dict[str, RemoteFile]
    mirrors: tuple[str, ...]
    mean: float
    std: float
    classes: tuple[str, ...]
    torchvision_folder: str
    system_dirs: tuple[str, ...]
    train_size: int = 60000
    test_size: int = 10000


DATASETS = {
    "mnist": DatasetInfo(
        name="mnist",
        files=idx_files(
            ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432"),  # train images, labels
            ("9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),  # test images, labels
        ),
        # torchvision's mirrors and md5s (torchvision/datasets/mnist.py); the S3 copy
        # first, because yann.lecun.com has often refused downloads.
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        # The exercise's normalization.
        mean=0.1307,
        std=0.3081,
        classes=tuple(str(digit) for digit in range(CLASS_COUNT)),
        torchvision_folder="MNIST",
        system_dirs=("/usr/share/datasets/mnist",),
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        files=idx_files(
            ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe"),  # train images, labels
            ("bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),  # test images, labels
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        # Mean and standard deviation over all 47,040,000 training pixels scaled to
        # [0, 1], computed in float64 once from the training images (0.28604, 0.35302),
        # the same way as MNIST's 0.1307 and 0.3081.
        mean=0.2860,
        std=0.3530,
        classes=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
        torchvision_folder="FashionMNIST",
        system_dirs=("/usr/share/datasets/fashion-mnist",),
    ),
}

# "auto" takes MNIST, the exercise's dataset, wherever it can be found or
# downloaded; else Fashion-MNIST where it is already on disk.
AUTO_ORDER = ("mnist", "fashion-mnist")
DATASET_NAMES = ("auto", *DATASETS)

HOW_TO_PROVIDE = (
    "To provide the files: put the four IDX files (gzipped or not) in a folder and pass "
    "it with --data-dir or the TRITONNET_DATA environment variable, let tritonnet "
    "download them when online, or install Debian's package: apt-get install "
    "dataset-fashion-mnist."
)
HOW_TO_PROVIDE_NAMED = (
    "Put the four IDX files (gzipped or not) there, or name no folder (neither "
    "--data-dir nor TRITONNET_DATA) to use the cache, the system folders or a download."
)


class DatasetNotFoundError(FileNotFoundError):
    """No complete copy of the dataset where it was looked for, and none downloaded."""


@dataclass
class Dataset:
    """A whole dataset in memory: flattened normalized images and class labels.

    `train_images` and `test_images` are float32 `[count, 784]`, normalized as
    `(pixel / 255 - mean) / std`; the labels are int64 `[count]`. `source` is the
    folder the files were read from.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    mean: float
    std: float
    source: Path


def load_dataset(
    name: str = "auto",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    limit_train: int | None = None,
    limit_test: int | None = None,
) -> Dataset:
    """Find, check and load a dataset; see the module docstring for where it looks.

    `name` is "mnist", "fashion-mnist" or "auto". `limit_train` and `limit_test`
    keep at most the first so many samples, for tests and smoke runs.
    Raises DatasetNotFoundError, listing every place it looked and what was
    missing there, when no complete copy is found; IDXError or ValueError when a
    file found is malformed.
    """
    checks.check_choice("name", name, DATASET_NAMES)
    for limit_name, limit in (("limit_train", limit_train), ("limit_test", limit_test)):
        if limit is not None:
            checks.check_positive_int(limit_name, limit)
    for info in DATASETS.values():
        remove_leftovers(cache_dir(info), info.files.values())
    named = named_data_dir(data_dir)
    if named is not None and not named.path.is_dir():
        raise DatasetNotFoundError(f"{named.named_by} {named.path}: no such folder")

    attempts: list[str] = []
    # "auto" downloads only the preferred dataset; offline, that attempt fails fast
    # and the next dataset is used where it is on disk.
    candidates = AUTO_ORDER if name == "auto" else (name,)
    for candidate in candidates:
        allow_download = download and candidate == candidates[0]
        folder = find_dataset(DATASETS[candidate], named, allow_download, attempts)
        if folder is not None:
            return _load_from(DATASETS[candidate], folder, limit_train, limit_test)

    listing = "\n".join(f"  - {attempt}" for attempt in attempts)
    if named is None:
        raise DatasetNotFoundError(f"dataset {name!r} not found. Tried:\n{listing}\n{HOW_TO_PROVIDE}")
    raise DatasetNotFoundError(
        f"dataset {name!r} not found in {named.path}, named by {named.named_by}, the only place looked in "
        f"when a folder is named. Tried:\n{listing}\n{HOW_TO_PROVIDE_NAMED}"
    )


class NamedFolder(NamedTuple):
    """A data folder the user named, and what named it, for messages."""

    named_by: str
    path: Path


def named_data_dir(data_dir: str | os.PathLike | None) -> NamedFolder | None:
    """The folder the user named: `data_dir`, else TRITONNET_DATA; None if neither."""
    if data_dir is not None:
        return NamedFolder("data_dir (--data-dir)", Path(data_dir).expanduser())
    from_environment = os.environ.get("TRITONNET_DATA")
    if from_environment:
        return NamedFolder("TRITONNET_DATA", Path(from_environment).expanduser())
    return None


def find_dataset(
    info: DatasetInfo,
    named: NamedFolder | None,
    download: bool,
    attempts: list[str],
) -> Path | None:
    """The first folder holding all of the dataset's files: in the named folder
    alone when there is one, else the cache and the system folders, downloading as
    a last resort.

    Each place tried and why it failed is appended to `attempts`, for the
    not-found message.
    """
    for folder in candidate_dirs(info, named):
        if not folder.is_dir():
            attempts.append(f"{info.name}: {folder} (no such folder)")
            continue
        missing = [role for role in FILE_ROLES if info.files[role].find_in(folder) is None]
        if not missing:
            return folder
        names = ", ".join(info.files[role].stem for role in missing)
        attempts.append(f"{info.name}: {folder} (missing {names}, gzipped or not)")
    if named is not None:
        return None
    if not download:
        attempts.append(f"{info.name}: no download (download=False)")
        return None
    folder = cache_dir(info)
    try:
        download_files((info.files[role] for role in FILE_ROLES), info.mirrors, folder)
    except DownloadError as error:
        attempts.append(f"{info.name}: download failed: {error}")
        return None
    return folder


def candidate_dirs(info: DatasetInfo, named: NamedFolder | None) -> list[Path]:
    """The folders to search for `info`'s files, in look-up order."""
    if named is not None:
        root = named.path
        return [root, root / info.name, root / info.torchvision_folder / "raw"]
    return [cache_dir(info), *(Path(system_dir) for system_dir in info.system_dirs)]


def cache_dir(info: DatasetInfo) -> Path:
    """Where downloads go: `$XDG_CACHE_HOME/tritonnet/<dataset>`, `~/.cache` by default."""
    cache_root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_root) / "tritonnet" / info.name


def _load_from(info: DatasetInfo, folder: Path, limit_train: int | None, limit_test: int | None) -> Dataset:
    arrays = {role: read_idx(info.files[role].find_in(folder)) for role in FILE_ROLES}
    sizes = {"train": info.train_size, "test": info.test_size}
    for split, size in sizes.items():
        _check_images(f"{folder / info.files[f'{split}_images'].stem}", arrays[f"{split}_images"], size)
        _check_labels(f"{folder / info.files[f'{split}_labels'].stem}", arrays[f"{split}_labels"], size)
    return Dataset(
        name=info.name,
        train_images=_normalize(arrays["train_images"][:limit_train], info),
        train_labels=torch.from_numpy(arrays["train_labels"][:limit_train].astype(np.int64)),
        test_images=_normalize(arrays["test_images"][:limit_test], info),
        test_labels=torch.from_numpy(arrays["test_labels"][:limit_test].astype(np.int64)),
        mean=info.mean,
        std=info.std,
        source=folder,
    )


def _check_images(source: str, images: np.ndarray, count: int) -> None:
    expected = (count, *IMAGE_SHAPE)
    if images.dtype != np.uint8 or images.shape != expected:
        raise ValueError(
            f"{source}: expected uint8 images of shape {expected}, got {images.dtype} of shape {images.shape}"
        )


def _check_labels(source: str, labels: np.ndarray, count: int) -> None:
    if labels.dtype != np.uint8 or labels.shape != (count,):
        raise ValueError(
            f"{source}: expected uint8 labels of shape ({count},), got {labels.dtype} of shape {labels.shape}"
        )
    if count and labels.max() >= CLASS_COUNT:
        raise ValueError(f"{source}: expected labels in 0..{CLASS_COUNT - 1}, got a maximum of {labels.max()}")


def _normalize(images: np.ndarray, info: DatasetInfo) -> torch.Tensor:
    """Flattened float32 `(pixel / 255 - mean) / std`, the exercise's transform."""
    pixels = torch.from_numpy(images.reshape(len(images), -1)).to(torch.float32)
    # In place: the full training set is 188 MB in float32, and each temporary another.
    return pixels.div_(255.0).sub_(info.mean).div_(info.std)
