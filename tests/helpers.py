"""Shared test helpers, imported by the tests (``from .helpers import ...``): tiny datasets
written in torchvision's own on-disk formats, the ``bench`` command in this process and as a child
process, a tiny suite and two small algorithm plugins. Fixtures are in ``conftest``.

Nothing here touches the real datasets or the network. Each dataset writer returns the raw arrays
it wrote, so a test can compare what ``bioplaus_bench.data`` loads with the exact bytes on disk;
the fixtures ``make_idx_dataset`` and ``make_cifar`` return the plain writers.

Every sample carries its index in its first pixels (IDX: pixels (0, 0) and (0, 1) hold
``i % 256`` and ``i // 256``; CIFAR: byte 0 of the red channel is ``i % 256``, byte 1 is
``i // 256``), so samples are unique and a permuted sample can be traced back to its index.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
                     "dog", "frog", "horse", "ship", "truck"]


@dataclass
class RawImages:
    """What a writer put on disk: uint8 images and int64 labels of both official sets."""

    folder: Path
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic ``0x0800 | ndim`` (2049 labels, 2051 images),
    the dimensions as big-endian int32, then the data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def _tagged_images(rng: np.random.RandomState, n: int, shape: tuple[int, ...]) -> np.ndarray:
    images = rng.randint(0, 256, size=(n, *shape), dtype=np.uint8)
    flat = images.reshape(n, -1)
    flat[:, 0] = np.arange(n) % 256
    flat[:, 1] = np.arange(n) // 256
    return images


def write_idx_dataset(root: Path, cls_name: str = "MNIST", n_train: int = 60, n_test: int = 12,
                      seed: int = 0, *, gz: bool = False) -> RawImages:
    """Write an MNIST-like IDX dataset into ``root/<cls_name>/raw`` (``cls_name`` is the
    torchvision class name: ``MNIST`` or ``FashionMNIST``), plain or as ``.gz`` files."""
    rng = np.random.RandomState(seed)
    raw = Path(root) / cls_name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    data = RawImages(raw, _tagged_images(rng, n_train, (28, 28)),
                     rng.randint(0, 10, size=n_train).astype(np.int64),
                     _tagged_images(rng, n_test, (28, 28)),
                     rng.randint(0, 10, size=n_test).astype(np.int64))
    contents = {"train_images": data.train_x, "train_labels": data.train_y,
                "test_images": data.test_x, "test_labels": data.test_y}
    for key, name in IDX_FILES.items():
        payload = idx_bytes(contents[key])
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(payload))
        else:
            (raw / name).write_bytes(payload)
    return data


def write_cifar(root: Path, n_per_batch: int = 4, n_test: int = 6, seed: int = 0) -> RawImages:
    """Write a CIFAR-10-like python-pickle dataset into ``root/cifar-10-batches-py``: five
    training batches of ``n_per_batch`` images and one test batch, each a dict with ``data``
    (uint8, N × 3072, channel-major C, H, W) and ``labels``, plus ``batches.meta``.
    ``train_x`` / ``test_x`` of the result are the N × 3072 rows as written."""
    rng = np.random.RandomState(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    n_train = 5 * n_per_batch
    data = RawImages(folder, _tagged_images(rng, n_train, (3072,)),
                     rng.randint(0, 10, size=n_train).astype(np.int64),
                     _tagged_images(rng, n_test, (3072,)),
                     rng.randint(0, 10, size=n_test).astype(np.int64))

    def dump(name: str, x: np.ndarray, y: np.ndarray) -> None:
        batch = {"batch_label": name, "labels": [int(v) for v in y], "data": x,
                 "filenames": [f"{name}_{i}.png" for i in range(len(y))]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)

    for b, name in enumerate(CIFAR_TRAIN_BATCHES):
        rows = slice(b * n_per_batch, (b + 1) * n_per_batch)
        dump(name, data.train_x[rows], data.train_y[rows])
    dump("test_batch", data.test_x, data.test_y)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR_LABEL_NAMES, "num_cases_per_batch": n_per_batch,
                     "num_vis": 3072}, f)
    return data


# --- the `bench` command, in this process and as a child process ---------------------------------

# A suite of two entries, two seeds and two epochs on a tiny teacher task: seconds to run.
TINY_SUITE = """\
name: tiny
seeds: [0, 1]
precision: float64
datasets:
  teacher:
    source: teacher
    options: {n_train: 64, n_test: 32, hidden: [16, 16]}
    architecture: {type: mlp, hidden: [8, 8]}
    protocol: {epochs: 2, batch_size: 16, validation: 32}
algorithms:
  bp:
    optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}
  dfa:
    optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}
"""

# A --plugin file: a new rule written with the public API alone.
PLUGIN = '''\
from dataclasses import dataclass

import torch

from bioplaus_bench.api import Algorithm, Capabilities, hookimpl


@dataclass(frozen=True)
class SignParams:
    scale: float = 1.0


class SignGradient(Algorithm):
    """Backprop's gradient, but only its sign: a new rule written with the public API alone."""

    name = "sign-bp"
    label = "Sign BP"
    Params = SignParams
    capabilities = Capabilities(mlp=True)
    record_graph = True

    def forward_updates(self, fwd):
        grads = torch.autograd.grad(fwd.loss, list(self.network.parameters()))
        return [self.params.scale * g.sign() for g in grads]


@hookimpl
def bioplaus_bench_algorithms():
    return [SignGradient]
'''

# A --plugin file: backprop ("held-bp") that holds a run inside a cell until a test stops it, so
# that a signal never races with the work. It holds in the first step after the file named by
# $HOLD_AFTER exists (a cell's checkpoint: an epoch is kept), once per $HOLD_INSIDE, which it
# writes (its pid) as it starts to hold; a re-run finds that file and holds no more.
HELD_PLUGIN = '''\
import os
import time
from pathlib import Path

import torch

from bioplaus_bench.api import Algorithm, Capabilities, hookimpl


class Held(Algorithm):
    name = "held-bp"
    capabilities = Capabilities(mlp=True)
    record_graph = True

    def forward_updates(self, fwd):
        after, inside = os.environ.get("HOLD_AFTER"), os.environ.get("HOLD_INSIDE")
        if after and inside and os.path.exists(after) and not os.path.exists(inside):
            Path(inside).write_text(str(os.getpid()))
            for _ in range(12000):  # ten minutes at most: the test's signal ends it
                time.sleep(0.05)
        return list(torch.autograd.grad(fwd.loss, list(self.network.parameters())))


@hookimpl
def bioplaus_bench_algorithms():
    return [Held]
'''


def invoke(*args):
    """``bench ARGS`` in this process (Typer's test runner): exit code, stdout and stderr."""
    from typer.testing import CliRunner

    from bioplaus_bench.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def records(folder: Path) -> dict[str, dict]:
    """Every record under a results folder, by its path relative to it."""
    return {str(p.relative_to(folder)): json.loads(p.read_text())
            for p in sorted(folder.glob("*/*/seed-*.json"))}


def bench_process(*args, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    """``bench ARGS`` as a child process (one torch thread, output piped): for tests that
    signal or kill it. ``env`` adds to this process's environment."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([sys.executable, "-m", "bioplaus_bench", *map(str, args)], text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, **popen)


def wait_for(condition, process: subprocess.Popen, what: str, limit: float = 600) -> None:
    """Wait until ``condition()`` holds while ``process`` runs. The limit only ends a test that
    would otherwise wait for ever: the process is held at the point waited for (HELD_PLUGIN)."""
    import time

    end = time.monotonic() + limit
    while not condition():
        if process.poll() is not None:
            _, stderr = process.communicate()
            pytest.fail(f"the run ended (exit {process.returncode}) before {what}: {stderr}")
        if time.monotonic() > end:
            pytest.fail(f"no {what} within {limit:g} s")
        time.sleep(0.02)
