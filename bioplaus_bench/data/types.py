"""The data a cell trains on, and datasets as plugins: a ``Dataset`` says how to load its train,
validation and test sets into tensors (and, where it reads files, what they are); the built-in
MNIST, Fashion-MNIST, CIFAR-10 and teacher task register through the same hook as anyone's.

The validation split of the built-in image datasets is ``torch.utils.data.random_split`` on the
globally seeded RNG, exactly as the original code, so it differs per seed (``split_validation``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import Tensor

from ..errors import InputError
from ..model.tasks import Task

DATA_ENV = "BIOPLAUS_DATA"
CACHE_ENV = "BIOPLAUS_CACHE"


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_ENV, "data"))


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "bioplaus_bench"))


def make_cache_folder(folder: Path, cache_dir: Path | None = None) -> Path:
    """Create ``folder``, inside the cache folder ``cache_dir`` (default: ``folder`` itself);
    one line (``cache_error``) when it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise cache_error(cache_dir or folder, error) from None
    return folder


def file_in_the_way(folder: Path) -> Path | None:
    """The file (anything but a folder) at ``folder`` or above it that keeps it from being a
    folder; None when there is none."""
    return next((path for path in (*reversed(folder.parents), folder)
                 if path.exists() and not path.is_dir()), None)


def cache_error(cache_dir: Path, error: OSError) -> InputError:
    """The one line for a cache folder that cannot be written: it names the variable that sets
    it, the path, and says that a folder is expected where a file is in the way."""
    in_the_way = file_in_the_way(cache_dir)
    if in_the_way is not None:
        where = "is a file" if in_the_way == cache_dir else f"is below a file, {in_the_way}"
        return InputError(f"{CACHE_ENV}: the cache folder {cache_dir} {where}; expected a "
                          f"folder: set {CACHE_ENV} to a writable folder")
    return InputError(f"cannot write into the cache folder {cache_dir} "
                      f"({error}); set {CACHE_ENV} to a writable folder")


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



@dataclass(frozen=True)
class NoOptions:
    pass



@dataclass(frozen=True)
class Dataset:
    """What ``datasets.<id>.source: <name>`` reads.

    ``kind`` is its task. ``load(settings, options, seed=…, validation=…)`` returns the cell's
    ``Data`` (train, validation or None, test, task) as float32 CPU tensors; it is called after
    the global torch RNG is seeded with the cell's seed. ``validation`` is the number of
    training samples to hold out (None: none); ``split_validation`` does it as the paper does.
    ``Options`` is the dataclass that ``datasets.<id>.options`` is validated against.
    ``check(settings)`` raises ``DataMissingError`` (one line naming the folder and the files)
    before anything runs; ``fingerprint(settings)`` identifies the files read, for records'
    hashes (None: the data is generated from the options and the seed, which the hash covers)."""

    name: str
    label: str
    kind: Literal["classification", "regression"]  # its task, known before anything loads
    load: Callable[..., Data]
    Options: type = NoOptions
    check: Callable[[DataSettings], None] | None = None
    fingerprint: Callable[[DataSettings], dict[str, Any]] | None = None
    summary: str = ""


def split_validation(full: Split, validation: int | None, label: str) -> tuple[Split, Split | None]:
    """Hold ``validation`` samples of ``full`` out with ``random_split`` on the global torch RNG
    (the original code's split, so it differs per seed)."""
    if not validation:
        return full, None
    if validation >= len(full):
        raise InputError(f"validation split of {validation} needs more than the "
                         f"{len(full)} training samples of {label}")
    # A range stands in for a Dataset here: random_split only takes its length.
    train_subset, val_subset = torch.utils.data.random_split(
        cast("torch.utils.data.Dataset[int]", range(len(full))), [len(full) - validation, validation])
    train_idx, val_idx = torch.tensor(train_subset.indices), torch.tensor(val_subset.indices)
    return Split(full.x[train_idx], full.y[train_idx]), Split(full.x[val_idx], full.y[val_idx])
