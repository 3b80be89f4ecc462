"""Where a cell runs and how it starts: the environment (data location, device, time limit), the
seeding, the data split and the network and algorithm built in the spec's order (§5), the
minibatches, and the evaluation of a split."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..data import Data, DataSettings, Split, load_data
from ..errors import InputError
from ..model.algorithm import Algorithm
from ..model.networks import Network
from ..model.tasks import Task
from ..registry import Registry, default_registry
from ..spec.cell import Cell
from .build import build_network

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class Environment:
    """Where and how cells run: data location, device, and the command line's time limit per
    cell (which overrides the suite's). Not part of a cell's config hash."""

    data: DataSettings = field(default_factory=DataSettings)
    device: str = "cpu"
    cell_timeout: float | None = None
    # The plugins cells resolve their dataset, architecture and metrics from (None: the
    # built-in and installed ones). Set where a cell runs, never sent to a worker.
    registry: Registry | None = field(default=None, compare=False, repr=False)

    @property
    def plugins(self) -> Registry:
        return self.registry if self.registry is not None else default_registry()

    def __post_init__(self) -> None:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise InputError(f"--device must be cpu, cuda or cuda:N, got '{self.device}'")
        if self.device.startswith("cuda"):
            index = int(self.device.partition(":")[2] or 0)
            if not torch.cuda.is_available():
                raise InputError(f"--device {self.device}: CUDA is not available on this machine")
            if index >= torch.cuda.device_count():
                raise InputError(f"--device {self.device}: this machine has "
                                 f"{torch.cuda.device_count()} CUDA device(s)")
        if self.cell_timeout is not None and not self.cell_timeout > 0:
            raise InputError(f"--cell-timeout must be a positive number of seconds, "
                             f"got {self.cell_timeout}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def batches(split: Split, batch_size: int, shuffle: bool):
    n = len(split)
    order = torch.randperm(n, device=split.x.device) if shuffle else None
    for start in range(0, n, batch_size):
        if order is None:
            yield split.x[start:start + batch_size], split.y[start:start + batch_size]
        else:
            index = order[start:start + batch_size]
            yield split.x[index], split.y[index]


@torch.no_grad()
def evaluate(network: Network, task: Task, split: Split, batch_size: int,
             predict: Callable[[Tensor], Tensor] | None = None) -> tuple[float, float | None]:
    """Exact per-sample mean loss and accuracy (None for regression) of ``predict`` (the
    algorithm's ``predict``; default: the network's forward pass)."""
    loss, correct = 0.0, 0
    for x, y in batches(split, batch_size, shuffle=False):
        output = network(x) if predict is None else predict(x)
        loss += float(task.loss(output, y)) * len(y)
        hits = task.correct(output, y)
        correct += int(hits) if hits is not None else 0
    accuracy = correct / len(split) if task.kind == "classification" else None
    return loss / len(split), accuracy


def prepare(cell: Cell, cls: type[Algorithm], env: Environment) -> tuple[Data, Network, Algorithm]:
    """Seed, split the data, build the network and the algorithm, in the spec's order."""
    dtype = DTYPES[cell.precision]
    seed_everything(cell.seed)
    protocol = cell.dataset.protocol
    data = load_data(env.plugins.dataset(cell.dataset.source), cell.dataset.options, env.data,
                     seed=cell.seed, validation=protocol.validation, subset=cell.subset)
    data = Data(data.train.to(dtype, env.device),
                data.val.to(dtype, env.device) if data.val is not None else None,
                data.test.to(dtype, env.device), data.task)
    spec = cls.adapt_architecture(cell.dataset.architecture, cell.params)
    network = build_network(spec, data.input_shape, data.task.n_outputs, dtype=dtype,
                            device=env.device, registry=env.plugins)
    algorithm = cls(network, data.task, cell.params)
    return data, network, algorithm


