"""MNIST, Fashion-MNIST and CIFAR-10 in torchvision's folder layout and file formats.

Files are trusted only as far as their MD5s go: the originals load; any other files only with
``verify_checksums=False`` (--skip-checksums), which always warns, and the fingerprint tells the
two apart. No code runs from a data file: CIFAR-10 pickles go through an unpickler that admits
numpy arrays only. Images are decoded once per process and normalised as in algorithms.md §7 (MNIST
``(x − 0.1307)/0.3081``, Fashion-MNIST none, CIFAR-10 ``(x − 0.5)/0.5``).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import Tensor

from ..errors import DataMissingError, InputError
from ..files import write_atomically
from ..model.tasks import Classification
from .pickles import read_cifar_batch
from .types import (
    DATA_ENV,
    Data,
    Dataset,
    DataSettings,
    Split,
    cache_error,
    split_validation,
)

if TYPE_CHECKING:  # torchvision is imported when a dataset is first read
    from torchvision.datasets import MNIST

LABELS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}

# --- Files on disk, and how far they are trusted ---------------------------------------------

# MD5s of the decompressed IDX files (torchvision lists only those of the .gz files), computed by
# decompressing the .gz files in /work/shared/data/{MNIST,FashionMNIST}/raw, which match
# torchvision's MD5s: so these are the MD5s of the original decompressed files.
IDX_MD5: dict[str, dict[str, str]] = {
    "MNIST": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "FashionMNIST": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}

# MD5s of the CIFAR-10 copy on the project's machines (/work/shared/data/MD5SUMS). It was rebuilt
# from public sources: pixels and labels are exact, but the "filenames" entries are placeholders,
# so the six batches do not match torchvision's MD5s (batches.meta does). It is recognised in
# messages and fingerprints, yet still needs --skip-checksums, as the copy's README asks.
CIFAR_REBUILT_MD5: dict[str, str] = {
    "data_batch_1": "897eeddf3b2c1a0b39434b7290a5899c",
    "data_batch_2": "24c8d3f14bfa0ed1b43740fad7243c97",
    "data_batch_3": "6d88dbb604b2cc8012ce5bcca16aa1e9",
    "data_batch_4": "20f95af0818fe4513315302da056a9f9",
    "data_batch_5": "bb75b640e48793d724860fbd0c215be4",
    "test_batch": "30f0cc100fd6daaff6425305afeba61e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}

# torchvision's dataset classes, by their names: torchvision is imported only when data is read
# (an import every `bench` command would otherwise pay: benchmarks/startup.py times it).
IDX_CLASSES = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


def _tv() -> Any:
    from torchvision import datasets

    return datasets


def _idx_class(name: str) -> Any:
    return getattr(_tv(), IDX_CLASSES[name])

# What a dataset's files are, as the --skip-checksums warning and data_fingerprint say it.
_DESCRIPTION = {
    "original": "the original files (their MD5s match anyway)",
    "rebuilt": "the known rebuilt copy (exact pixels and labels, not byte-identical to the "
               "originals)",
    "unknown": "unknown files (their MD5s match no known copy)",
}
_CHECKSUMS = {"original": "verified", "rebuilt": "known rebuilt copy (exact pixels)",
              "unknown": "skipped"}


@dataclass(frozen=True)
class _Files:
    """The files that a dataset is read from, accepted for use."""

    folder: Path
    md5s: dict[Path, str]
    kind: str  # "original", "rebuilt" or "unknown"


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _while_files_unchanged(function: Callable[[str, DataSettings], Any]):
    """Cache ``function(name, settings)`` for as long as the dataset's files keep their size and
    modification time: a file changed within the process (a long session, a test) is read and
    checked again instead of being served from the cache."""
    @functools.lru_cache(maxsize=16)
    def cached(name: str, settings: DataSettings, state: tuple) -> Any:
        return function(name, settings)

    @functools.wraps(function)
    def wrapper(name: str, settings: DataSettings) -> Any:
        stats = ((path, path.stat()) for path in _located(name, settings))
        state = tuple((str(path), stat.st_size, stat.st_mtime_ns) for path, stat in stats)
        return cached(name, settings, state)
    return wrapper


@_while_files_unchanged
def _accepted(name: str, settings: DataSettings) -> _Files:
    """The files of dataset ``name`` with their MD5s, once they may be used: the originals always,
    other files only with --skip-checksums, which always says what they are. Cached, so that
    loading and ``data_fingerprint`` see the same files, hashed once per process."""
    originals = _located(name, settings)
    md5s = {path: _md5(path) for path in originals}
    files = _Files(next(iter(originals)).parent, md5s, _kind(name, md5s, originals))
    if not settings.verify_checksums:
        print(f"warning: {LABELS[name]} checksums are not verified (--skip-checksums): "
              f"{files.folder} holds {_DESCRIPTION[files.kind]}", file=sys.stderr)
    elif files.kind == "rebuilt":
        raise InputError(f"{files.folder}: this is the known rebuilt copy of CIFAR-10 (exact "
                         "pixels and labels, but not byte-identical to the originals, so "
                         "torchvision's MD5s do not match); pass --skip-checksums to use it")
    elif files.kind == "unknown":
        path = next(path for path in originals if md5s[path] != originals[path])
        raise InputError(f"{path}: MD5 {md5s[path]} does not match the original's "
                         f"{originals[path]}; use --skip-checksums to accept it")
    return files


def _kind(name: str, md5s: dict[Path, str], originals: dict[Path, str]) -> str:
    if md5s == originals:
        return "original"
    if name == "cifar10" and {path.name: md5 for path, md5 in md5s.items()} == CIFAR_REBUILT_MD5:
        return "rebuilt"
    return "unknown"


def _located(name: str, settings: DataSettings) -> dict[Path, str]:
    """The files that dataset ``name`` is read from, each with its original's MD5. Missing files
    are downloaded where that is allowed, else raise DataMissingError."""
    if name == "cifar10":
        return _cifar_located(settings)
    return _idx_located(_idx_class(name), settings)


# --- MNIST and Fashion-MNIST: IDX files, plain or .gz -----------------------------------------

def _idx_located(cls: type[MNIST], settings: DataSettings) -> dict[Path, str]:
    raw = settings.root / cls.__name__ / "raw"
    files = _idx_files_in(raw, cls)
    if files is None and settings.download:
        cls(str(settings.root), download=True)  # fetches, checks and decompresses into raw/
        files = _idx_files_in(raw, cls)
    if files is None:
        expected = ", ".join(f"{gz_name.removesuffix('.gz')}[.gz]" for gz_name, _ in cls.resources)
        raise DataMissingError(
            f"{cls.__name__} not found in {raw}: expected {expected}; set --data-dir or "
            f"{DATA_ENV} to a folder holding {cls.__name__}/raw/, or allow --download")
    return files


def _idx_files_in(raw: Path, cls: type[MNIST]) -> dict[Path, str] | None:
    """Each IDX file of ``cls`` in ``raw`` with its original's MD5: the decompressed file where
    there is one (as torchvision reads it), else the .gz; None when one is missing."""
    files = {}
    for gz_name, gz_md5 in cls.resources:
        name = gz_name.removesuffix(".gz")
        if (raw / name).is_file():
            files[raw / name] = IDX_MD5[cls.__name__][name]
        elif (raw / gz_name).is_file():
            files[raw / gz_name] = gz_md5
        else:
            return None
    return files


@_while_files_unchanged
def _idx_paths(name: str, settings: DataSettings) -> dict[str, Path]:
    """The decompressed IDX files to read, by name: the data folder's own, or its .gz files
    decompressed into a cache folder (the data folder may be read-only). The cache folder is
    named after the files' contents, so two data folders never share a stale copy."""
    cls = _idx_class(name)
    files = _accepted(name, settings)
    key = hashlib.sha1("".join(files.md5s.values()).encode()).hexdigest()[:12]
    cache_raw = settings.cache_dir / f"{cls.__name__}-{key}" / cls.__name__ / "raw"
    paths = {}
    for path, md5 in files.md5s.items():
        if path.suffix == ".gz":
            target = cache_raw / path.stem
            _unpack(path, target, _unpacked_md5(cls, path, md5), settings.cache_dir)
            path = target
        paths[path.name] = path
    return paths


def _unpacked_md5(cls: type[MNIST], gz: Path, md5: str) -> str | None:
    """The MD5 of what ``gz`` decompresses to, where it is known: for the original .gz files."""
    return IDX_MD5[cls.__name__][gz.stem] if dict(cls.resources).get(gz.name) == md5 else None


def _unpack(gz: Path, target: Path, md5: str | None, cache_dir: Path) -> None:
    """Decompress ``gz`` into the cache file ``target``. A cache file already there is reused
    only if it is exactly what ``gz`` decompresses to (one cut short or edited is replaced):
    checked by its MD5 where that is known, else against the decompressed bytes."""
    if md5 is not None and target.is_file() and _md5(target) == md5:
        return
    content = _gunzip(gz)
    if target.is_file() and target.read_bytes() == content:
        return
    _write_cache_file(target, content, cache_dir)
    print(f"{gz} unpacked into {target.parent}", file=sys.stderr)


def _gunzip(path: Path) -> bytes:
    compressed = path.read_bytes()
    if not compressed:  # gzip reads an empty file as an empty stream, without complaint
        raise InputError(f"{path}: truncated or corrupt gzip (the file is empty)")
    try:
        return gzip.decompress(compressed)
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise InputError(f"{path}: truncated or corrupt gzip ({error})") from None


def _write_cache_file(target: Path, content: bytes, cache_dir: Path) -> None:
    """Write through a temporary file and a rename, so that no reader sees half a file and
    nothing is written through a link; the temporary file never outlives a failed write."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(target, content, inside=cache_dir)
    except OSError as error:
        raise cache_error(cache_dir, error) from None


def _load_idx(name: str, settings: DataSettings) -> tuple[Split, Split]:
    paths = _idx_paths(name, settings)

    from torchvision.datasets.mnist import read_image_file, read_label_file

    def split(prefix: str) -> Split:
        x = _read_idx(paths[f"{prefix}-images-idx3-ubyte"], read_image_file)
        y = _read_idx(paths[f"{prefix}-labels-idx1-ubyte"], read_label_file)
        if len(x) != len(y):
            raise InputError(f"{paths[f'{prefix}-images-idx3-ubyte'].parent}: {prefix} set has "
                             f"{len(x)} images but {len(y)} labels")
        return Split(x.unsqueeze(1).float() / 255.0, y.long())
    return split("train"), split("t10k")


def _read_idx(path: Path, reader: Callable[[str], Tensor]) -> Tensor:
    try:
        return reader(str(path))
    except (AssertionError, TypeError, ValueError, RuntimeError) as error:  # torchvision's checks
        raise InputError(f"{path}: not an IDX file of MNIST images or labels ({error})") from None


def _check_idx(name: str) -> Callable[[DataSettings], None]:
    def check(settings: DataSettings) -> None:
        # raises the message that names the folder and files; decompressing now reports an
        # unwritable cache folder before any training
        _idx_paths(name, settings)
    return check


# --- CIFAR-10: pickled batches ----------------------------------------------------------------

# The only globals that a CIFAR-10 batch pickle references: numpy's array reconstruction under
# its numpy 1.x (numpy.core, as in the original files) and 2.x (numpy._core) names, for pickle
# protocols up to 4 (_reconstruct) and 5 (_frombuffer), and _codecs.encode, by which Python 3
# writes bytes at protocol 2.
def _cifar_originals(settings: DataSettings) -> dict[Path, str]:
    """Every CIFAR-10 file with torchvision's MD5: the batches in reading order, then the meta."""
    tv = _tv()
    listed = tv.CIFAR10.train_list + tv.CIFAR10.test_list + \
        [(tv.CIFAR10.meta["filename"], tv.CIFAR10.meta["md5"])]
    return {settings.root / tv.CIFAR10.base_folder / name: md5 for name, md5 in listed}


def _require_cifar(files: dict[Path, str]) -> None:
    if all(path.is_file() for path in files):
        return
    folder = next(iter(files)).parent
    raise DataMissingError(
        f"CIFAR-10 not found in {folder}: expected {', '.join(path.name for path in files)}; set "
        f"--data-dir or {DATA_ENV} to the folder that holds cifar-10-batches-py/, or allow "
        "--download")


def _check_cifar(settings: DataSettings) -> None:
    if not settings.download:  # with --download, missing files are fetched when loading
        _require_cifar(_cifar_originals(settings))


def _cifar_located(settings: DataSettings) -> dict[Path, str]:
    files = _cifar_originals(settings)
    if settings.download and not all(path.is_file() for path in files):
        from torchvision.datasets.utils import download_and_extract_archive

        tv = _tv()
        download_and_extract_archive(tv.CIFAR10.url, str(settings.root),
                                     filename=tv.CIFAR10.filename, md5=tv.CIFAR10.tgz_md5)
    _require_cifar(files)
    return files


def _load_cifar(settings: DataSettings) -> tuple[Split, Split]:
    folder = _accepted("cifar10", settings).folder

    def split(listed: list) -> Split:
        batches = [read_cifar_batch(folder / name) for name, _ in listed]
        rows = np.vstack([rows for rows, _ in batches])
        labels = [label for _, batch_labels in batches for label in batch_labels]
        # torchvision holds the images as H, W, C; viewing that memory as N, C, H, W (channels
        # last, as this loader always has) keeps results bit-identical to earlier runs
        hwc = np.ascontiguousarray(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        x = torch.from_numpy(hwc).permute(0, 3, 1, 2)
        return Split(x.float() / 255.0, torch.tensor(labels, dtype=torch.long))
    cifar = _tv().CIFAR10
    return split(cifar.train_list), split(cifar.test_list)


# --- Decoded images -----------------------------------------------------------------------------

@_while_files_unchanged
def _load_images(name: str, settings: DataSettings) -> tuple[Split, Split]:
    """Decode a dataset once per process into float32 tensors in [0, 1]."""
    return _load_cifar(settings) if name == "cifar10" else _load_idx(name, settings)


def _image_source(name: str, mean: float | None, std: float | None):
    def load(settings: DataSettings) -> tuple[Split, Split]:
        # Fresh tensors every time: a cell may modify its data without touching the cache.
        return cast("tuple[Split, Split]", tuple(
            Split(s.x.clone() if mean is None else (s.x - mean) / std, s.y.clone())
            for s in _load_images(name, settings)))
    return load



def _fingerprint(name: str) -> Callable[[DataSettings], dict[str, Any]]:
    def fingerprint(settings: DataSettings) -> dict[str, Any]:
        files = _accepted(name, settings)
        if files.kind == "original":
            return {"source": name, "checksums": "verified"}
        return {"source": name, "checksums": _CHECKSUMS[files.kind],
                "files": {path.name: md5 for path, md5 in files.md5s.items()}}
    return fingerprint


def _image_dataset(name: str, mean: float | None, std: float | None,
                   check: Callable[[DataSettings], None]) -> Dataset:
    images = _image_source(name, mean, std)

    def load(settings: DataSettings, options: Any, *, seed: int, validation: int | None) -> Data:
        full, test = images(settings)
        train, val = split_validation(full, validation, LABELS[name])
        return Data(train, val, test, Classification(10))
    return Dataset(name, LABELS[name], "classification", load, check=check,
                   fingerprint=_fingerprint(name))


MNIST = _image_dataset("mnist", 0.1307, 0.3081, _check_idx("mnist"))
FASHION_MNIST = _image_dataset("fashion_mnist", None, None, _check_idx("fashion_mnist"))
CIFAR10 = _image_dataset("cifar10", 0.5, 0.5, _check_cifar)
