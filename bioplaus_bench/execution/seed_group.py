"""All seeds of a cell in one computation (``bench run --vectorize-seeds``).

Each seed is first set up exactly as its serial run is (``training.set_up``: seeded, its data
split, its network and algorithm built, or restored from its checkpoint), so its initialisation
is its serial run's; then the seeds' modules are stacked (``model.seeds``) and trained together
by the serial run's epoch loop (``training.train_seeds``) through ``StackedSeedEngine``, each
seed drawing its data order and noise from its own generator, which continues its serial run's
stream. Each seed's result and checkpoints are those of its serial run, to rounding, so a
killed run resumes vectorised or serially alike.

Seeds whose memory does not fit at once train in chunks (``seeds_per_chunk``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..model.algorithm import Algorithm
from ..model.networks import ConvBlock, Network
from ..model.seeds import seed_part, seed_streams
from ..model.tasks import Task
from ..spec.cell import Cell, MetricsConfig
from .checkpoint import rng_state
from .seed_data import SamplePool, SeedData, SplitRows, evaluate_seeds
from .setup import Environment
from .stacked import stack_runners
from .training import EpochCallback, Minibatch, SeedRun, deadline, seed_result, set_up, train_seeds

# --- setting the seeds up ------------------------------------------------------------------

@dataclass
class StackedSeed(SeedRun):
    """One seed as its serial run sets it up, with the generators it draws from when stacked."""

    rng: dict[str, Any]  # every generator's state after the set-up (as ``rng_state``)
    generator: torch.Generator  # its stream on the cell's device, from here on

    def rng_snapshot(self) -> dict[str, Any]:
        """This seed's generators as its serial checkpoint holds them."""
        state = dict(self.rng)
        if self.generator.device.type == "cuda":
            cuda = list(state["cuda"])
            cuda[self.generator.device.index or 0] = self.generator.get_state()
            state["cuda"] = cuda
        else:
            state["torch"] = self.generator.get_state()
        return state


def _device_generator(device: str) -> torch.Generator:
    """A generator in the state of the global one of ``device`` (what a serial run draws from)."""
    generator = torch.Generator(device=device)
    if generator.device.type == "cuda":
        generator.set_state(torch.cuda.get_rng_state(generator.device))
    else:
        generator.set_state(torch.get_rng_state())
    return generator


def set_up_seed(cell: Cell, cls: type[Algorithm], env: Environment, checkpoint: Path | None,
                pool: SamplePool) -> tuple[StackedSeed, SplitRows, Task]:
    """One seed set up as its serial run is, its data indexed into ``pool``."""
    data, run = set_up(cell, cls, env, checkpoint)
    seed = StackedSeed(run.cell, run.runner, run.state, run.store, rng_state(),
                       _device_generator(env.device))
    return seed, pool.rows(data), data.task  # the seed's own copy of the data is dropped here


# --- training ------------------------------------------------------------------------------

def train_seed_group(cells: Sequence[Cell], cls: type[Algorithm], env: Environment, *,
                     checkpoints: Sequence[Path | None] | None = None,
                     chunk: int | None = None, on_epoch: EpochCallback | None = None,
                     note: Callable[[str], None] | None = None,
                     time_limit: float | None = None) -> list[dict[str, Any]] | None:
    """Train the seeds ``cells`` (the same cell but for the seed) together; return each one's
    result, in order, as ``train_cell`` returns it. None when they cannot be stacked (splits of
    different sizes, or checkpoints at different points): the caller runs them serially.
    ``chunk``: at most this many seeds at once (default: as many as memory holds, on a CPU
    only for networks where stacking pays, ``stacking_does_not_pay``; else None)."""
    checkpoints = list(checkpoints) if checkpoints is not None else [None] * len(cells)
    say = note or (lambda message: None)
    group = f"{cells[0].dataset_id}/{cells[0].algorithm_id}"
    with deadline(time_limit) as out_of_time:
        runs: list[StackedSeed]
        splits: list[SplitRows]
        pool, runs, splits = SamplePool(), [], []
        for cell, path in zip(cells, checkpoints, strict=True):
            run, rows, task = set_up_seed(cell, cls, env, path, pool)
            reason = None if chunk or runs else stacking_does_not_pay(run.runner.network,
                                                                      env.device)
            if reason is not None:  # known from the first seed: set up no other
                say(f"{group}: its seeds are not stacked: {reason}")
                return None
            runs.append(run)
            splits.append(rows)
        data = SeedData.stack(pool, splits, task)
        if data is None:
            say(f"{group}: the seeds' data splits differ in size; they run serially")
            return None
        pending = [s for s, run in enumerate(runs) if run.active]
        if len({runs[s].progress() for s in pending}) > 1:
            say(f"{group}: the seeds' checkpoints are at different epochs; they run serially")
            return None
        size = chunk or seeds_per_chunk(runs[0], env)
        chunks = [pending[k:k + size] for k in range(0, len(pending), size)]
        if len(chunks) > 1:
            say(f"{group}: {len(pending)} seeds in {len(chunks)} chunks of at most {size} "
                f"({'--seed-chunk' if chunk else 'memory'})")
        stack_sizes = [1] * len(runs)  # how many seeds each trained with, itself included
        for chosen in chunks:
            stack = [runs[s] for s in chosen]
            with seed_streams([run.generator for run in stack]):
                train_seeds(stack, StackedSeedEngine(stack, data.seeds(chosen)), on_epoch,
                            out_of_time)
            for s in chosen:
                stack_sizes[s] = len(chosen)
    return [seed_result(run, data.task.kind, data.val is not None, stacked=stacked)
            for run, stacked in zip(runs, stack_sizes, strict=True)]


# On a CPU stacking pays for the MNIST MLP (3.7 MB of float64 weights a seed), not for the
# CIFAR-10 MLP (21-42 MB) nor the CNN (a grouped convolution costs more than the seeds' own
# convolutions): benchmarks/seed_batching.py prints stacked against serial for all three.
CPU_STACKING_MAX_BYTES = 8 * 2 ** 20


def stacking_does_not_pay(network: Network, device: str) -> str | None:
    """Why stacking seeds of ``network`` would be slower than running them one after the other
    on ``device``, or None. On a CPU a seed's step of a large network is already one of large
    products that use every core, and a stack of them only misses the caches; a CNN's stacked
    grouped convolution is slower than the seeds' own. On a GPU stacking always pays."""
    if not device.startswith("cpu"):
        return None
    if any(isinstance(layer, ConvBlock) for layer in network.layers):
        return "on a CPU a grouped convolution of stacked seeds costs more than their own"
    size = sum(p.numel() * p.element_size() for p in network.parameters())
    if size > CPU_STACKING_MAX_BYTES:
        return (f"on a CPU stacking pays for small networks only (a seed's weights here: "
                f"{size / 2 ** 20:.0f} MB, more than {CPU_STACKING_MAX_BYTES // 2 ** 20} MB)")
    return None


def seeds_per_chunk(run: SeedRun, env: Environment) -> int:
    """How many seeds of this cell fit at once: half the free memory of the device over an
    estimate of one seed's: parameters, gradients and optimiser moments of the network and the
    algorithm, and the activations of a training minibatch (with the copies target methods make
    of them: targets, noisy copies of each layer carried up) or of an evaluation batch."""
    network, algorithm = run.runner.network, run.runner.algorithm
    element = torch.finfo(network.dtype).bits // 8
    weights = sum(t.numel() for module in (network, algorithm)
                  for t in (*module.parameters(), *module.buffers()))
    protocol = run.cell.dataset.protocol
    activations = sum(math.prod(network.activation_shape(i)) for i in range(network.depth + 1))
    per_sample = max(protocol.batch_size * (4 + 2 * network.depth), protocol.eval_batch_size * 2)
    per_seed = element * (4 * weights + activations * per_sample)
    return max(1, int(0.5 * _free_memory(env.device) // per_seed))


def _free_memory(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2 ** 30


class StackedSeedEngine:
    """The seeds ``runs`` as one ``StackedRunner`` on their stacked data (``data``): the engine
    of the epoch loop (``training.SeedEngine``) for a stack of seeds. Train within
    ``seed_streams`` of the seeds' generators."""

    def __init__(self, runs: Sequence[StackedSeed], data: SeedData):
        protocol = runs[0].cell.dataset.protocol
        self.runner = stack_runners([run.runner for run in runs], runs[0].cell.settings.optimizer,
                                    protocol.frozen_layers)
        self.runs, self.data, self.task = runs, data, data.task
        self.generators = [run.generator for run in runs]
        self.batch_size, self.eval_batch_size = protocol.batch_size, protocol.eval_batch_size
        self.device = data.train.device
        self.train_size = data.train.shape[1]
        self.has_validation = data.val is not None
        # Where the run of a seed that met a fault ended, which its checkpoint keeps while the
        # stack goes on.
        self.ended: dict[int, dict[str, Any]] = {}

    def batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.data.batches(self.data.train, self.batch_size, self.generators)

    def step(self, x: Tensor, y: Tensor, running: Sequence[bool],
             metrics: MetricsConfig | None) -> Minibatch:
        step = self.runner.step_seeds(x, y, running, metrics, on_fault=self._end)
        fwd = step.proposal.fwd
        return Minibatch(fwd.loss.detach().double(), self.task.correct(fwd.output.detach(), y),
                         y.shape[1], step.faults, step.metrics, step.feedback_losses())

    def _end(self, s: int) -> None:
        self.ended[s] = self._seed_state(s)

    def feedback_step(self, x: Tensor, y: Tensor) -> list[float] | None:
        return self.runner.feedback_step(x, y)

    def evaluate(self, split: str) -> tuple[list[float], list[float | None]]:
        rows = self.data.test if split == "test" else self.data.val
        assert rows is not None, "only a cell with a validation set evaluates one"
        return evaluate_seeds(self.runner.network, self.task, self.data, rows,
                              self.eval_batch_size, self.runner.algorithm.predict)

    def saved(self, s: int) -> dict[str, Any]:
        return self.ended.get(s) or self._seed_state(s)

    def _seed_state(self, s: int) -> dict[str, Any]:
        """Seed ``s``'s network, algorithm, optimisers and generators as they are now."""
        return {"network": seed_part(self.runner.network.state_dict(), s),
                "algorithm": seed_part(self.runner.algorithm.state_dict(), s),
                "optimisers": seed_part(self.runner.optimisers.state_dict(), s),
                "rng": self.runs[s].rng_snapshot()}
