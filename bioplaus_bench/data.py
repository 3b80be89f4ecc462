"""Datasets as in-memory tensors: MNIST, Fashion-MNIST and CIFAR-10 through torchvision's dataset
classes and folder layout, and the synthetic teacher regression task of spec §10.

Images are decoded once per process and normalised as in spec §7 (MNIST ``(x − 0.1307)/0.3081``,
Fashion-MNIST none, CIFAR-10 ``(x − 0.5)/0.5``); minibatches are then sliced from tensors, never
decoded again. The validation split is ``torch.utils.data.random_split`` on the globally seeded RNG,
exactly as the original code, so it differs per seed.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import pickle
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision import datasets as tv

from .errors import DataMissingError, InputError
from .tasks import Classification, Regression, Task

DATA_ENV = "BIOPLAUS_DATA"
CACHE_ENV = "BIOPLAUS_CACHE"


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_ENV, "data"))


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "bioplaus_bench"))


@dataclass(frozen=True)
class DataSettings:
    """Where datasets are and what may be done to get them."""

    root: Path = field(default_factory=default_data_dir)
    download: bool = False
    verify_checksums: bool = True
    cache_dir: Path = field(default_factory=default_cache_dir)


@dataclass
class Split:
    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, dtype: torch.dtype, device: torch.device | str) -> Split:
        x = self.x.to(device=device, dtype=dtype)
        y = self.y.to(device=device, dtype=dtype if self.y.is_floating_point() else self.y.dtype)
        return Split(x, y)


@dataclass
class Data:
    train: Split
    val: Split | None
    test: Split
    task: Task

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


# --- Sources -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class NoOptions:
    pass


@dataclass(frozen=True)
class TeacherOptions:
    """The teacher network of spec §10 (validation size comes from the protocol)."""

    n_train: int = 400
    n_test: int = 200
    input_dim: int = 6
    output_dim: int = 2
    hidden: tuple[int, ...] = (1000, 1000, 1000, 1000)
    gain: float = 3.0


@dataclass(frozen=True)
class Source:
    name: str
    label: str
    kind: str  # "classification" or "regression"
    Options: type
    n_outputs: int
    # (settings) -> (official training set, test set); None for generated data
    load: Callable[[DataSettings], tuple[Split, Split]] | None = None
    check: Callable[[DataSettings], None] | None = None  # raises DataMissingError


def _decompress(gz: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp, \
            gzip.open(gz, "rb") as stream:
        shutil.copyfileobj(stream, tmp)
    os.replace(tmp.name, target)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _idx_root(cls: type, settings: DataSettings) -> Path:
    """A root from which torchvision's ``cls`` loads without writing: the data folder itself
    when the decompressed IDX files are there, otherwise a cache folder into which the ``.gz``
    files are decompressed (the data folder may be read-only). The cache folder is named after
    the files' contents, so two data folders never share a stale copy."""
    raw = settings.root / cls.__name__ / "raw"
    names = [name.removesuffix(".gz") for name, _ in cls.resources]
    if all((raw / name).is_file() for name in names):
        return settings.root
    files = [raw / name if (raw / name).is_file() else raw / gz_name
             for (gz_name, _), name in zip(cls.resources, names, strict=True)]
    if not all(path.is_file() for path in files):
        if settings.download:
            cls(str(settings.root), download=True)
            return settings.root
        expected = ", ".join(f"{n}[.gz]" for n in names)
        raise DataMissingError(
            f"{cls.__name__} not found in {raw}: expected {expected}; set --data-dir or "
            f"{DATA_ENV} to a folder holding {cls.__name__}/raw/, or allow --download")
    found = [(path, _md5(path)) for path in files]
    for (path, digest), (_, expected_md5) in zip(found, cls.resources, strict=True):
        if settings.verify_checksums and path.suffix == ".gz" and digest != expected_md5:
            raise InputError(f"{path}: MD5 {digest} does not match torchvision's {expected_md5}"
                             "; use --skip-checksums to accept it")
    key = hashlib.sha1("".join(digest for _, digest in found).encode()).hexdigest()[:12]
    cache_root = settings.cache_dir / f"{cls.__name__}-{key}"
    for (path, _), name in zip(found, names, strict=True):
        target = cache_root / cls.__name__ / "raw" / name
        if not target.is_file():
            _decompress(path, target) if path.suffix == ".gz" else _copy(path, target)
            print(f"{cls.__name__}: {path.name} unpacked into {target.parent}", file=sys.stderr)
    return cache_root


def _copy(path: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.copyfile(path, tmp)
    os.replace(tmp, target)


class _UncheckedCIFAR10(tv.CIFAR10):
    """CIFAR-10 for copies whose pixels are exact but whose file checksums differ: only checks
    that the files exist. Chosen explicitly (``verify_checksums=False``), never silently."""

    def _check_integrity(self) -> bool:
        return all(os.path.isfile(os.path.join(self.root, self.base_folder, name))
                   for name, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


def _cifar_files() -> list[str]:
    return [name for name, _ in tv.CIFAR10.train_list + tv.CIFAR10.test_list] + \
        [tv.CIFAR10.meta["filename"]]


def _check_cifar(settings: DataSettings) -> None:
    folder = settings.root / tv.CIFAR10.base_folder
    if settings.download or all((folder / name).is_file() for name in _cifar_files()):
        return
    raise DataMissingError(
        f"CIFAR-10 not found in {folder}: expected {', '.join(_cifar_files())}; set --data-dir "
        f"or {DATA_ENV} to the folder that holds cifar-10-batches-py/, or allow --download")


@functools.lru_cache(maxsize=8)
def _load_images(name: str, settings: DataSettings) -> tuple[Split, Split]:
    """Decode a torchvision dataset once per process into float32 tensors in [0, 1]."""
    if name == "cifar10":
        _check_cifar(settings)
        cls = tv.CIFAR10
        if not settings.verify_checksums:
            print(f"warning: CIFAR-10 checksums are not verified ({settings.root})", file=sys.stderr)
            cls = _UncheckedCIFAR10
        root = str(settings.root)
        try:
            train, test = (cls(root, train=t, download=settings.download) for t in (True, False))
        except RuntimeError as error:  # torchvision's "not found or corrupted"
            raise InputError(f"CIFAR-10 in {settings.root / cls.base_folder}: {error}; if the "
                             "pixels are exact but the checksums differ, use "
                             "--skip-checksums") from None

        def convert(d):
            x = torch.from_numpy(np.ascontiguousarray(d.data)).permute(0, 3, 1, 2)
            return Split(x.float() / 255.0, torch.tensor(d.targets, dtype=torch.long))
    else:
        cls = {"mnist": tv.MNIST, "fashion_mnist": tv.FashionMNIST}[name]
        root = str(_idx_root(cls, settings))
        train, test = cls(root, train=True), cls(root, train=False)

        def convert(d):
            x = d.data.unsqueeze(1).float() / 255.0
            return Split(x, d.targets.long())
    return convert(train), convert(test)


def _image_source(name: str, mean: float | None, std: float | None):
    def load(settings: DataSettings) -> tuple[Split, Split]:
        # Fresh tensors every time: a cell may modify its data without touching the cache.
        return tuple(Split(s.x.clone() if mean is None else (s.x - mean) / std, s.y.clone())
                     for s in _load_images(name, settings))
    return load


def _check_idx(cls: type) -> Callable[[DataSettings], None]:
    def check(settings: DataSettings) -> None:
        _idx_root(cls, settings)  # raises the message that names the folder and files
    return check


def teacher_data(options: TeacherOptions, seed: int, n_val: int) -> tuple[Split, Split, Split]:
    """Train, test and validation sets of the teacher regression task (spec §10): a ReLU MLP with
    Glorot-normal weights of gain ``options.gain`` and zero biases; inputs ``U(−1, 1)``, drawn
    from a numpy RNG seeded with ``seed``; the teacher's weights from a torch generator with it."""
    generator = torch.Generator().manual_seed(seed)
    widths = [options.input_dim, *options.hidden, options.output_dim]
    weights = [torch.randn(n_out, n_in, generator=generator, dtype=torch.float64)
               * options.gain * (2.0 / (n_in + n_out)) ** 0.5
               for n_in, n_out in zip(widths[:-1], widths[1:], strict=True)]

    def teacher(x: Tensor) -> Tensor:
        for i, w in enumerate(weights):
            x = x @ w.t()
            if i < len(weights) - 1:
                x = torch.relu(x)
        return x

    rng = np.random.RandomState(seed)
    sets = []
    for n in (options.n_train, options.n_test, n_val):
        x = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(n, options.input_dim)))
        sets.append(Split(x, teacher(x)))
    return sets[0], sets[1], sets[2]


SOURCES: dict[str, Source] = {
    "mnist": Source("mnist", "MNIST", "classification", NoOptions, 10,
                    _image_source("mnist", 0.1307, 0.3081), _check_idx(tv.MNIST)),
    "fashion_mnist": Source("fashion_mnist", "Fashion-MNIST", "classification", NoOptions, 10,
                            _image_source("fashion_mnist", None, None),
                            _check_idx(tv.FashionMNIST)),
    "cifar10": Source("cifar10", "CIFAR-10", "classification", NoOptions, 10,
                      _image_source("cifar10", 0.5, 0.5), _check_cifar),
    "teacher": Source("teacher", "Teacher regression", "regression", TeacherOptions, 2),
}


def check_available(source: str, settings: DataSettings) -> None:
    """Raise ``DataMissingError`` (one line naming the folder and files) before any training."""
    check = SOURCES[source].check
    if check is not None:
        check(settings)


def load_data(source: str, options, settings: DataSettings, *, seed: int, validation: int | None,
              subset: int | None = None) -> Data:
    """The train / validation / test sets of one cell, as float32 CPU tensors (the runner moves
    them to the cell's device and dtype). Call after seeding the global torch RNG: the
    validation split is drawn from it."""
    spec = SOURCES[source]
    if source == "teacher":
        train, test, val = teacher_data(options, seed, validation or 0)
        train, test, val = (Split(s.x.float(), s.y.float()) for s in (train, test, val))
        task: Task = Regression(options.output_dim)
        return Data(train, val if validation else None, test, task)
    full, test = spec.load(settings)
    task = Classification(spec.n_outputs)
    val = None
    train = full
    if validation:
        if validation >= len(full):
            raise InputError(f"validation split of {validation} needs more than the "
                             f"{len(full)} training samples of {spec.label}")
        train_idx, val_idx = torch.utils.data.random_split(
            range(len(full)), [len(full) - validation, validation])
        train_idx = torch.tensor(train_idx.indices)
        val_idx = torch.tensor(val_idx.indices)
        train, val = Split(full.x[train_idx], full.y[train_idx]), \
            Split(full.x[val_idx], full.y[val_idx])
    if subset is not None:
        train = Split(train.x[:subset], train.y[:subset])
    return Data(train, val, test, task)
