"""CIFAR-10 batches are Python pickles, and the stock unpickler calls whatever a pickle names
(``os.system``, ``exec``, ...): a crafted data file would run code. These are read with an
unpickler that admits only what a batch holds (dicts, lists, strings, numbers, numpy arrays) and
refuses anything else by name."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..errors import InputError

_CIFAR_GLOBALS = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
})


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 batch without running code from it: the stock unpickler calls
    whatever a pickle names (``os.system``, ``exec``, ...), this one only numpy's arrays."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")  # the original batches come from Python 2
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_GLOBALS:
            raise InputError(f"{self.path}: refusing to load: the pickle references "
                             f"{module}.{name}, which a CIFAR-10 batch never contains")
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    """The N × 3072 uint8 image rows (C, H, W order) and the N labels of one batch file."""
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, path).load()
    except InputError:
        raise
    except Exception as error:  # whatever a damaged file makes the unpickler raise
        raise InputError(f"{path}: not a readable CIFAR-10 batch "
                         f"({type(error).__name__}: {error})") from None
    entries = batch if isinstance(batch, dict) else {}
    rows, labels = entries.get("data"), entries.get("labels")
    if not (isinstance(rows, np.ndarray) and rows.dtype == np.uint8 and rows.ndim == 2
            and rows.shape[1] == 3072 and isinstance(labels, list) and len(labels) == len(rows)
            and all(isinstance(label, (int, np.integer)) and 0 <= label < 10 for label in labels)):
        raise InputError(f"{path}: not a CIFAR-10 batch: expected a dict with 'data' (N × 3072 "
                         "uint8 rows) and 'labels' (N integers 0-9)")
    return rows, labels
