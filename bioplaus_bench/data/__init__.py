"""Datasets: the data a cell trains on, loaded into tensors by dataset plugins (``types``), and
the built-in ones: MNIST, Fashion-MNIST and CIFAR-10 (``images``) and the teacher task, with raw
or standardised targets (``teacher``), registered through the ``bioplaus_bench_datasets`` hook
like anyone's."""

from __future__ import annotations

from typing import Any

from ..errors import DataMissingError, InputError
from ..hookspecs import hookimpl
from .images import CIFAR10, CIFAR_REBUILT_MD5, FASHION_MNIST, IDX_CLASSES, IDX_MD5, MNIST
from .teacher import TEACHER, TEACHER_NORMALIZED, TeacherOptions, teacher_data
from .types import (
    CACHE_ENV,
    DATA_ENV,
    Data,
    Dataset,
    DataSettings,
    NoOptions,
    Split,
    default_cache_dir,
    default_data_dir,
    split_validation,
)

__all__ = ["CACHE_ENV", "CIFAR10", "CIFAR_REBUILT_MD5", "DATA_ENV", "DataMissingError",
           "FASHION_MNIST", "IDX_CLASSES", "IDX_MD5", "InputError", "MNIST", "TEACHER",
           "TEACHER_NORMALIZED", "Data",
           "DataSettings", "Dataset", "NoOptions", "Split", "TeacherOptions", "check_available",
           "data_fingerprint", "default_cache_dir", "default_data_dir", "load_data",
           "split_validation", "teacher_data"]


@hookimpl
def bioplaus_bench_datasets() -> list[Dataset]:
    return [MNIST, FASHION_MNIST, CIFAR10, TEACHER, TEACHER_NORMALIZED]


def _dataset(source: str | Dataset) -> Dataset:
    """``source`` itself, or the built-in dataset of that name: a plugin's dataset comes as the
    object the caller's registry holds (``registry.dataset(name)``), so that this package never
    imports the registry, which imports it."""
    if isinstance(source, Dataset):
        return source
    built_in = {dataset.name: dataset for dataset in bioplaus_bench_datasets()}
    if source not in built_in:
        raise InputError(f"'{source}' is not a built-in dataset ({', '.join(sorted(built_in))}); "
                         "pass a plugin's dataset as the object registry.dataset(name) returns")
    return built_in[source]


def check_available(source: str | Dataset, settings: DataSettings) -> None:
    """Raise ``DataMissingError`` (one line naming the folder and files) before any training."""
    dataset = _dataset(source)
    if dataset.check is not None:
        dataset.check(settings)


def data_fingerprint(source: str | Dataset, settings: DataSettings) -> dict[str, Any]:
    """What data ``source`` is, for provenance and for the cache key of results, so that a result
    computed on other files never stands in for one on the originals. Verified files are named
    by no digest (verified results are portable between machines); any other files are listed,
    each with its MD5. The files are those that ``load_data`` reads, hashed once per process;
    raises what loading raises (``DataMissingError`` as ``check_available`` does, ``InputError``
    for files refused)::

        {"source": "teacher", "files": "generated"}
        {"source": "mnist", "checksums": "verified"}
        {"source": "cifar10", "checksums": "known rebuilt copy (exact pixels)", "files": {...}}
        {"source": "mnist", "checksums": "skipped", "files": {"train-images-idx3-ubyte.gz": md5,
                                                             ...}}
    """
    dataset = _dataset(source)
    if dataset.fingerprint is None:
        return {"source": dataset.name, "files": "generated"}
    return dataset.fingerprint(settings)


def load_data(source: str | Dataset, options: Any, settings: DataSettings, *, seed: int,
              validation: int | None, subset: int | None = None) -> Data:
    """The train / validation / test sets of one cell, as float32 CPU tensors (the runner moves
    them to the cell's device and dtype). Call after seeding the global torch RNG: the
    validation split is drawn from it. ``subset``: train on the first N training samples."""
    data = _dataset(source).load(settings, options, seed=seed, validation=validation)
    if subset is not None:
        data = Data(Split(data.train.x[:subset], data.train.y[:subset]), data.val, data.test,
                    data.task)
    return data
