"""All seeds of a cell in one computation (``bench run --vectorize-seeds``).

Each seed is first set up exactly as its serial run is (``training.restore``: seeded, its data
split, its network and algorithm built, or restored from its checkpoint), so its initialisation
is its serial run's; then the seeds' modules are stacked (``model.seeds``) and trained together,
each seed drawing its data order and noise from its own generator, which continues its serial
run's stream. What the serial loop does per cell is done here per seed: the history, evaluation,
best-epoch selection, divergence (a diverged seed stops counting, the others go on), pruning,
and a checkpoint per epoch in the serial format, so that a killed run resumes vectorised or
serially alike. Each seed's result is the result its serial run returns, to rounding.

Seeds whose memory does not fit at once train in chunks (``seeds_per_chunk``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..model.algorithm import Algorithm
from ..model.networks import ConvBlock, Network
from ..model.seeds import seed_part, seed_streams
from ..model.tasks import Task
from ..spec.cell import Cell
from .checkpoint import Checkpoint, rng_state
from .runner import Runner
from .seed_data import SamplePool, SeedData, SplitRows, evaluate_seeds
from .setup import Environment
from .stacked import StackedRunner, stack_runners
from .training import EpochCallback, deadline, restore, summarise

# --- setting the seeds up ------------------------------------------------------------------

@dataclass
class SeedRun:
    """One seed as its serial run sets it up, and where it stands."""

    cell: Cell
    runner: Runner
    state: dict[str, Any]
    store: Checkpoint
    rng: dict[str, Any]  # every generator's state after the set-up (as ``rng_state``)
    generator: torch.Generator  # its stream on the cell's device, from here on
    elapsed_before: float = field(default=0.0)
    stacked: int = 1  # how many seeds it trained with, itself included (its time is a share)
    # Its network, algorithm, optimisers and generators where its run ended (a fault), which
    # its checkpoint keeps while the stack goes on.
    ended: dict[str, Any] | None = None

    @property
    def active(self) -> bool:
        protocol = self.cell.dataset.protocol
        return self.state["status"] == "ok" and self.state["pruned_at"] is None \
            and self.state["epoch"] < protocol.epochs

    def progress(self) -> tuple[int, int]:
        return self.state["pretrained"], self.state["epoch"]

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
                pool: SamplePool) -> tuple[SeedRun, SplitRows, Task]:
    """One seed set up as its serial run is, its data indexed into ``pool``."""
    store = Checkpoint(checkpoint, cell.config_hash())
    data, runner, state = restore(cell, cls, env, store)
    run = SeedRun(cell, runner, state, store, rng_state(), _device_generator(env.device),
                  state["elapsed"])
    return run, pool.rows(data), data.task  # the seed's own copy of the data is dropped here


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
        runs: list[SeedRun]
        splits: list[SplitRows]
        pool, runs, splits = SamplePool(), [], []
        for cell, path in zip(cells, checkpoints, strict=True):
            run, rows, task = set_up_seed(cell, cls, env, path, pool)
            reason = None if chunk or runs else stacking_does_not_pay(run.runner.network,
                                                                      env.device)
            if reason is not None:  # known from the first seed: set up no other
                say(f"{group}: its seeds run one after the other: {reason}")
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
        for chosen in chunks:
            _train_stacked([runs[s] for s in chosen], data.seeds(chosen), cls, on_epoch,
                           out_of_time)
    return [_result(run, data) for run in runs]


def _result(run: SeedRun, data: SeedData) -> dict[str, Any]:
    result = summarise(run.state, data.task.kind, data.val is not None)
    result["wall_time"] = run.state["elapsed"]
    if run.stacked > 1:
        result["stacked_seeds"] = run.stacked
    if run.state["metrics"]:
        result["metrics"] = run.state["metrics"]
    return result


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


def _train_stacked(runs: list[SeedRun], data: SeedData, cls: type[Algorithm],
                   on_epoch: EpochCallback | None, out_of_time: Callable[[], None]) -> None:
    cell = runs[0].cell
    for run in runs:
        run.stacked = len(runs)
    runner = stack_runners([run.runner for run in runs], cell.settings.optimizer,
                           cell.dataset.protocol.frozen_layers)
    protocol, schedule = cell.dataset.protocol, cell.settings.schedule
    task = data.task
    trains_feedback = cls.capabilities.trainable_feedback
    generators = [run.generator for run in runs]
    notify = on_epoch or (lambda *args: None)
    started = time.perf_counter()

    def feedback_epoch() -> list[float]:
        losses: list[list[float]] = []
        for x, y in data.batches(data.train, protocol.batch_size, generators):
            out_of_time()
            step = runner.feedback_step(x, y)
            if step is not None:
                losses.append(step)
        return [float(np.mean(column)) for column in zip(*losses, strict=True)] if losses \
            else [math.nan] * len(runs)

    def snapshot(chosen: Sequence[int]) -> None:
        share = (time.perf_counter() - started) / len(runs)
        for s in chosen:
            run = runs[s]
            run.state["elapsed"] = run.elapsed_before + share
            run.store.save({**(run.ended or _seed_state(runner, run, s)), "state": run.state})

    with seed_streams(generators):
        pretraining = schedule.feedback_pretraining_epochs if trains_feedback else 0
        while runs[0].state["pretrained"] < pretraining:
            for run, loss in zip(runs, feedback_epoch(), strict=True):
                run.state["pretraining"].append(loss)
                run.state["pretrained"] += 1
            snapshot(range(len(runs)))
            notify("feedback pre-training", runs[0].state["pretrained"], pretraining)

        while any(run.active for run in runs):
            epoch_start = time.perf_counter()
            active = [run.active for run in runs]
            epoch = runs[0].state["epoch"] + 1
            rows = _training_epoch(runner, runs, data, epoch, active, out_of_time)
            ok = [a and run.state["status"] == "ok" for a, run in zip(active, runs, strict=True)]
            if any(ok):
                extra = schedule.extra_feedback_epochs if trains_feedback else 0
                extra_losses = [feedback_epoch() for _ in range(extra)]
                for s in (s for s, good in enumerate(ok) if good):
                    rows[s]["extra_feedback_loss"] = [loss[s] for loss in extra_losses] or None
                _evaluate(runner, runs, data, epoch, rows, ok)
            seconds = (time.perf_counter() - epoch_start) / sum(active)
            chosen = [s for s, a in enumerate(active) if a]
            for s in chosen:
                run, row = runs[s], rows[s]
                row["seconds"] = seconds
                run.state["history"].append(row)
                run.state["epoch"] = epoch
                pruning = protocol.pruning
                if pruning and run.state["status"] == "ok" and task.kind == "classification" \
                        and epoch >= pruning.from_epoch \
                        and row["train_accuracy"] < pruning.min_train_accuracy:
                    run.state["pruned_at"] = epoch
            snapshot(chosen)
            notify("epoch", epoch, protocol.epochs)


def _seed_state(runner: StackedRunner, run: SeedRun, s: int) -> dict[str, Any]:
    """Seed ``s``'s network, algorithm, optimisers and generators as its serial checkpoint
    holds them."""
    return {"network": seed_part(runner.network.state_dict(), s),
            "algorithm": seed_part(runner.algorithm.state_dict(), s),
            "optimisers": seed_part(runner.optimisers.state_dict(), s),
            "rng": run.rng_snapshot()}


def _training_epoch(runner: StackedRunner, runs: Sequence[SeedRun], data: SeedData, epoch: int,
                    active: Sequence[bool], out_of_time: Callable[[], None]
                    ) -> list[dict[str, Any]]:
    """One epoch of stacked steps; each active seed's history row. A seed that meets a NaN or
    infinite loss or update ends with its reason, as in ``training._training_epoch``."""
    cell = runs[0].cell
    task, metrics = data.task, cell.settings.metrics
    seeds = len(runs)
    device = data.train.device
    loss_sum = torch.zeros(seeds, dtype=torch.float64, device=device)
    correct = torch.zeros(seeds, dtype=torch.long, device=device)
    counting = torch.tensor(list(active), device=device)  # seeds whose run goes on
    running = list(active)
    feedback: list[list[float]] = [[] for _ in runs]
    generators = [run.generator for run in runs]
    for index, (x, y) in enumerate(data.batches(data.train, cell.dataset.protocol.batch_size,
                                                generators)):
        out_of_time()
        logs = metrics.log_interval and index % metrics.log_interval == 0
        step = runner.step_seeds(x, y, running, metrics if logs else None, on_fault=lambda s:
                                 setattr(runs[s], "ended", _seed_state(runner, runs[s], s)))
        losses = step.feedback_losses()
        for s in range(seeds):
            if not running[s]:
                continue
            if losses is not None:
                feedback[s].append(losses[s])
            fault = step.faults[s]
            if fault is not None:
                state = runs[s].state
                state["status"] = "diverged" if fault == "training loss" else "error"
                state["reason"] = f"{fault} non-finite at epoch {epoch}, minibatch {index + 1}"
                running[s] = False
                counting[s] = False
            elif (logged := step.metrics[s]) is not None:
                runs[s].state["metrics"].append({"epoch": epoch, "batch": index, **logged})
        fwd = step.proposal.fwd
        loss_sum += torch.where(counting, fwd.loss.detach().double(), 0.0) * y.shape[1]
        hits = task.correct(fwd.output.detach(), y)
        if hits is not None:
            correct += torch.where(counting, hits, 0)
    n = data.train.shape[1]
    rows = []
    for s, run in enumerate(runs):
        finished = active[s] and run.state["status"] == "ok"
        rows.append({
            "epoch": epoch,
            "train_loss": float(loss_sum[s]) / n if finished else None,
            "train_accuracy": int(correct[s]) / n if task.kind == "classification" and finished
            else None,
            "feedback_loss": float(np.mean(feedback[s])) if feedback[s] else None,
        })
    return rows


def _evaluate(runner: StackedRunner, runs: Sequence[SeedRun], data: SeedData, epoch: int,
              rows: list[dict[str, Any]], ok: Sequence[bool]) -> None:
    """The test set, then the validation set, of every seed still running."""
    cell = runs[0].cell
    splits = [("test", data.test)] + ([("val", data.val)] if data.val is not None else [])
    for name, split in splits:
        losses, accuracies = evaluate_seeds(runner.network, data.task, data, split,
                                            cell.dataset.protocol.eval_batch_size,
                                            runner.algorithm.predict)
        for s, run in enumerate(runs):
            if not ok[s]:
                continue
            rows[s][f"{name}_loss"], rows[s][f"{name}_accuracy"] = losses[s], accuracies[s]
            if not math.isfinite(losses[s]) and run.state["status"] == "ok":
                run.state["status"] = "diverged"
                run.state["reason"] = f"{name} loss is {losses[s]} after epoch {epoch}"

