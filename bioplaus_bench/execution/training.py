"""The training loop of a cell (algorithms.md §5), written once for any number of seeds trained
together: feedback pre-training, forward epochs of runner steps, extra feedback epochs,
evaluation, best-validation selection, divergence detection, optional pruning and a time limit.
A serial run is a stack of one seed. Nothing here knows any particular algorithm, nor how the
seeds step: a ``SeedEngine`` does (``SingleSeedEngine``: one seed's ``Runner``, the arithmetic
of a serial run; ``seed_group.StackedSeedEngine``: a ``StackedRunner``).

Each seed checkpoints after every epoch (network, algorithm, optimisers, RNG states, history) in
the serial format, so a run that is killed resumes where it stopped, stacked or serially alike,
and ends with exactly the result of an unbroken run.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from ..data import Data
from ..model.algorithm import Algorithm
from ..model.tasks import Task
from ..results.record import select_epoch
from ..spec.cell import Cell, MetricsConfig
from .checkpoint import Checkpoint, rng_state, set_rng_state, warn
from .runner import ForwardOptimisers, Runner
from .setup import Environment, batches, evaluate, prepare

EpochCallback = Callable[[str, int, int], None]  # (phase, epoch done, epochs in phase)
# Called after each finished epoch with the seed's whole history so far (a resumed run's
# restored epochs too); True stops the cell there as pruned (`bench tune`'s pruner, which
# judges a trial by its validation error so far).
StopRule = Callable[[list[dict[str, Any]]], bool]


class CellTimeout(BaseException):
    """The cell's time limit passed. A BaseException, so that a plugin's ``except Exception``
    cannot swallow it."""


def train_cell(cell: Cell, cls: type[Algorithm], env: Environment | None = None, *,
               checkpoint: Path | None = None, on_epoch: EpochCallback | None = None,
               probe: Callable[[Runner, Data], Any] | None = None,
               time_limit: float | None = None, stop: StopRule | None = None
               ) -> dict[str, Any]:
    """Train one cell; return its result (status, history, selected epoch, final metrics, and
    the logged metrics). ``probe``, if given, is called with the runner and the data after the
    last epoch of a cell that finished ok; what it returns is stored under ``"probe"``.
    ``time_limit`` (seconds of this call) raises ``CellTimeout`` when it passes; ``stop``
    prunes the cell after an epoch for which it returns True."""
    env = env or Environment()
    with deadline(time_limit) as out_of_time:
        data, run = set_up(cell, cls, env, checkpoint)
        train_seeds([run], SingleSeedEngine(run, data), on_epoch, out_of_time, stop)
        result = seed_result(run, data.task.kind, data.val is not None)
        if probe is not None and run.state["status"] == "ok":  # a probe of a failed run means nothing
            result["probe"] = probe(run.runner, data)
        return result


# --- the seeds and what steps them ---------------------------------------------------------

@dataclass
class SeedRun:
    """One seed of a cell as its serial run sets it up (or restores it), and where it stands:
    ``state`` is its progress record (epochs done, history, status), saved with each snapshot."""

    cell: Cell
    runner: Runner
    state: dict[str, Any]
    store: Checkpoint

    @property
    def active(self) -> bool:
        """Whether it has forward epochs to go: not failed, pruned nor finished."""
        return self.state["status"] == "ok" and self.state["pruned_at"] is None \
            and self.state["epoch"] < self.cell.dataset.protocol.epochs

    def progress(self) -> tuple[int, int]:
        return self.state["pretrained"], self.state["epoch"]


@dataclass
class Minibatch:
    """One training minibatch of every seed of a stack, as the epoch loop counts it."""

    loss: Tensor  # [S], float64: each seed's mean loss over the minibatch
    hits: Tensor | None  # [S]: each seed's correct predictions (None: regression)
    size: int  # samples of each seed
    faults: list[str | None]  # what was NaN or infinite (None: nothing)
    metrics: list[dict[str, Any] | None]  # the logged metrics (None: not logged)
    feedback_losses: list[float] | None  # as the algorithm's feedback step returned them


class SeedEngine(Protocol):
    """How the seeds of a stack train together: their minibatches, steps, evaluation and
    snapshots. Seed ``s`` is the ``s``-th of the stack; a list has one entry per seed."""

    task: Task
    device: torch.device
    train_size: int  # training samples of each seed
    has_validation: bool

    def batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        """The training minibatches of an epoch, each seed's in its own random order."""

    def step(self, x: Tensor, y: Tensor, running: Sequence[bool],
             metrics: MetricsConfig | None) -> Minibatch:
        """A training minibatch (``Runner.step``); a seed not ``running`` is not counted."""

    def feedback_step(self, x: Tensor, y: Tensor) -> list[float] | None:
        """A minibatch of a feedback-only epoch; each seed's feedback loss."""

    def evaluate(self, split: str) -> tuple[list[float], list[float | None]]:
        """Each seed's loss and accuracy on its ``"test"`` or ``"val"`` split."""

    def saved(self, s: int) -> dict[str, Any]:
        """Seed ``s``'s network, algorithm, optimisers and generators as its checkpoint holds
        them (where its run ended, for a seed that met a fault)."""


class SingleSeedEngine:
    """One seed's ``Runner`` on its own data, drawing from the global generators: a serial run."""

    def __init__(self, run: SeedRun, data: Data):
        self.runner, self.data, self.task = run.runner, data, data.task
        protocol = run.cell.dataset.protocol
        self.batch_size, self.eval_batch_size = protocol.batch_size, protocol.eval_batch_size
        self.device = data.train.x.device
        self.train_size = len(data.train)
        self.has_validation = data.val is not None

    def batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        return batches(self.data.train, self.batch_size, shuffle=True)

    def step(self, x: Tensor, y: Tensor, running: Sequence[bool],
             metrics: MetricsConfig | None) -> Minibatch:
        # The loop steps a lone seed only while it runs: ``running`` is all True.
        step = self.runner.step(x, y, metrics=metrics)
        fwd = step.proposal.fwd
        hits = self.task.correct(fwd.output.detach(), y)
        feedback = step.feedback_loss
        return Minibatch(fwd.loss.detach().double().reshape(1),
                         None if hits is None else hits.reshape(1), len(y), [step.fault],
                         [step.metrics], None if feedback is None else [feedback])

    def feedback_step(self, x: Tensor, y: Tensor) -> list[float] | None:
        loss = self.runner.feedback_step(x, y)
        return None if loss is None else [loss]

    def evaluate(self, split: str) -> tuple[list[float], list[float | None]]:
        samples = self.data.test if split == "test" else self.data.val
        assert samples is not None, "only a cell with a validation set evaluates one"
        loss, accuracy = evaluate(self.runner.network, self.task, samples,
                                  self.eval_batch_size, self.runner.algorithm.predict)
        return [loss], [accuracy]

    def saved(self, s: int) -> dict[str, Any]:
        # A step that met a fault applied no forward update: the runner is where the run ended.
        return {"network": self.runner.network.state_dict(),
                "algorithm": self.runner.algorithm.state_dict(),
                "optimisers": self.runner.optimisers.state_dict(), "rng": rng_state()}


# --- the epoch loop ------------------------------------------------------------------------

def train_seeds(runs: Sequence[SeedRun], engine: SeedEngine, on_epoch: EpochCallback | None,
                out_of_time: Callable[[], None], stop: StopRule | None = None) -> None:
    """Train the seeds ``runs`` (one cell's, at the same point of their runs) together, stepped
    by ``engine``, to the end of the protocol; each seed's ``state`` holds its result. A seed
    that fails or is pruned (by the protocol's rule, or by ``stop``) stops counting, the others
    go on; the epoch's time is shared."""
    cell = runs[0].cell
    protocol, schedule = cell.dataset.protocol, cell.settings.schedule
    trains_feedback = type(runs[0].runner.algorithm).capabilities.trainable_feedback
    notify = on_epoch or (lambda *args: None)
    started = time.perf_counter()
    elapsed_before = [run.state["elapsed"] for run in runs]

    def feedback_epoch() -> list[float]:
        losses: list[list[float]] = []
        for x, y in engine.batches():
            out_of_time()
            step = engine.feedback_step(x, y)
            if step is not None:
                losses.append(step)
        return [float(np.mean(column)) for column in zip(*losses, strict=True)] if losses \
            else [math.nan] * len(runs)

    def snapshot(chosen: Sequence[int]) -> None:
        share = (time.perf_counter() - started) / len(runs)
        for s in chosen:
            run = runs[s]
            run.state["elapsed"] = elapsed_before[s] + share
            run.store.save({**engine.saved(s), "state": run.state})

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
        chosen = [s for s, a in enumerate(active) if a]
        epoch = runs[chosen[0]].state["epoch"] + 1  # the same for every active seed
        rows = _training_epoch(engine, runs, epoch, active, out_of_time)
        ok = [a and run.state["status"] == "ok" for a, run in zip(active, runs, strict=True)]
        if any(ok):
            extra = schedule.extra_feedback_epochs if trains_feedback else 0
            extra_losses = [feedback_epoch() for _ in range(extra)]
            for s in (s for s, good in enumerate(ok) if good):
                rows[s]["extra_feedback_loss"] = [loss[s] for loss in extra_losses] or None
            _evaluate(engine, runs, epoch, rows, ok)
        seconds = (time.perf_counter() - epoch_start) / len(chosen)
        for s in chosen:
            run, row = runs[s], rows[s]
            row["seconds"] = seconds
            run.state["history"].append(row)
            run.state["epoch"] = epoch
            pruning = protocol.pruning
            too_poor = pruning and engine.task.kind == "classification" \
                and epoch >= pruning.from_epoch and row["train_accuracy"] < pruning.min_train_accuracy
            if run.state["status"] == "ok" and (too_poor or stop is not None
                                                and stop(run.state["history"])):
                run.state["pruned_at"] = epoch
        snapshot(chosen)
        notify("epoch", epoch, protocol.epochs)


def _training_epoch(engine: SeedEngine, runs: Sequence[SeedRun], epoch: int,
                    active: Sequence[bool], out_of_time: Callable[[], None]
                    ) -> list[dict[str, Any]]:
    """One epoch of steps; each seed's row of the history it starts (the rows of seeds not
    ``active`` are not kept). A NaN or infinite loss (divergence) or update (a fault of the
    rule) ends that seed's run with its reason."""
    cell = runs[0].cell
    metrics = cell.settings.metrics
    classification = engine.task.kind == "classification"
    seeds = len(runs)
    loss_sum = torch.zeros(seeds, dtype=torch.float64, device=engine.device)
    correct = torch.zeros(seeds, dtype=torch.long, device=engine.device)
    counting = torch.tensor(list(active), device=engine.device)  # seeds whose run goes on
    running = list(active)
    feedback: list[list[float]] = [[] for _ in runs]
    for index, (x, y) in enumerate(engine.batches()):
        out_of_time()
        logs = metrics.log_interval and index % metrics.log_interval == 0
        step = engine.step(x, y, running, metrics if logs else None)
        for s in range(seeds):
            if not running[s]:
                continue
            if step.feedback_losses is not None:
                feedback[s].append(step.feedback_losses[s])
            fault = step.faults[s]
            if fault is not None:
                state = runs[s].state
                state["status"] = "diverged" if fault == "training loss" else "error"
                state["reason"] = f"{fault} non-finite at epoch {epoch}, minibatch {index + 1}"
                running[s] = False
                counting[s] = False
            elif (logged := step.metrics[s]) is not None:
                runs[s].state["metrics"].append({"epoch": epoch, "batch": index, **logged})
        if not any(running):  # every seed has ended: nothing of the epoch is left to count
            break
        loss_sum += torch.where(counting, step.loss, 0.0) * step.size
        if step.hits is not None:
            correct += torch.where(counting, step.hits, 0)
    n = engine.train_size
    rows = []
    for s, run in enumerate(runs):
        finished = active[s] and run.state["status"] == "ok"
        rows.append({
            "epoch": epoch,
            "train_loss": float(loss_sum[s]) / n if finished else None,
            "train_accuracy": int(correct[s]) / n if classification and finished else None,
            "feedback_loss": float(np.mean(feedback[s])) if feedback[s] else None,
        })
    return rows


def _evaluate(engine: SeedEngine, runs: Sequence[SeedRun], epoch: int,
              rows: list[dict[str, Any]], ok: Sequence[bool]) -> None:
    """The test set, then the validation set, as the original does, of every seed still
    running; a non-finite loss there is divergence too."""
    for name in ("test", "val") if engine.has_validation else ("test",):
        losses, accuracies = engine.evaluate(name)
        for s, run in enumerate(runs):
            if not ok[s]:
                continue
            rows[s][f"{name}_loss"], rows[s][f"{name}_accuracy"] = losses[s], accuracies[s]
            if not math.isfinite(losses[s]) and run.state["status"] == "ok":
                run.state["status"] = "diverged"
                run.state["reason"] = f"{name} loss is {losses[s]} after epoch {epoch}"


def seed_result(run: SeedRun, kind: str, has_val: bool, stacked: int = 1) -> dict[str, Any]:
    """A seed's result: its summary, wall time (its share of a stack's), logged metrics, and
    how many seeds it trained with when more than itself (``stacked``)."""
    result = summarise(run.state, kind, has_val)
    result["wall_time"] = run.state["elapsed"]
    if stacked > 1:
        result["stacked_seeds"] = stacked
    if run.state["metrics"]:
        result["metrics"] = run.state["metrics"]
    return result


# --- setting a seed up ---------------------------------------------------------------------

def set_up(cell: Cell, cls: type[Algorithm], env: Environment, checkpoint: Path | None
           ) -> tuple[Data, SeedRun]:
    """The cell's data, and its seed's run: from its checkpoint when there is a valid one,
    otherwise fresh. A checkpoint that fails half-way is not trusted: start afresh."""
    store = Checkpoint(checkpoint, cell.config_hash())
    data, runner = _build(cell, cls, env)
    saved = store.load()
    if saved is None:
        return data, SeedRun(cell, runner, _fresh_state(), store)
    try:
        runner.network.load_state_dict(saved["network"])
        runner.algorithm.load_state_dict(saved["algorithm"])
        runner.optimisers.load_state_dict(saved["optimisers"])
        set_rng_state(saved["rng"])
        if not isinstance(saved["state"], dict) or not _fresh_state().keys() <= saved["state"].keys():
            raise ValueError("its progress record is incomplete")
        return data, SeedRun(cell, runner, saved["state"], store)
    except Exception as error:
        first_line = " ".join(str(error).split("\n", 1)[0].split())
        warn(f"ignoring checkpoint {store.path}: it does not fit this cell "
             f"({type(error).__name__}: {first_line})")
        data, runner = _build(cell, cls, env)
        return data, SeedRun(cell, runner, _fresh_state(), store)


def _build(cell: Cell, cls: type[Algorithm], env: Environment) -> tuple[Data, Runner]:
    data, network, algorithm = prepare(cell, cls, env)
    optimisers = ForwardOptimisers(network, algorithm, cell.settings.optimizer,
                                   cell.dataset.protocol.frozen_layers)
    metrics = [env.plugins.metric(name) for name in ("alignment", *cell.settings.metrics.extra)]
    return data, Runner(network, algorithm, optimisers, metrics)


def _fresh_state() -> dict[str, Any]:
    return {"epoch": 0, "pretrained": 0, "history": [], "pretraining": [], "elapsed": 0.0,
            "status": "ok", "reason": None, "pruned_at": None, "metrics": []}


@contextlib.contextmanager
def deadline(seconds: float | None):
    """Yield a check that raises ``CellTimeout`` once ``seconds`` have passed. In the main
    thread an interval timer also interrupts a plugin that hangs between two checks."""
    if seconds is None:
        yield lambda: None
        return
    end = time.monotonic() + seconds
    message = f"exceeded the cell time limit of {seconds:g} s"

    def check() -> None:
        if time.monotonic() > end:
            raise CellTimeout(message)

    def alarm(signum, frame) -> None:
        raise CellTimeout(message)

    timer = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
    if timer:
        previous = signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield check
    finally:
        if timer:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def summarise(state: dict[str, Any], kind: str, has_val: bool) -> dict[str, Any]:
    summary: dict[str, Any] = {"status": state["status"], "history": state["history"],
                               "pretraining_feedback_loss": state["pretraining"],
                               "pruned_at_epoch": state["pruned_at"]}
    if state.get("reason"):
        summary["reason"] = state["reason"]
    selected_epoch, final = select_epoch(state["history"], kind, has_val)
    summary.update(selected_epoch=selected_epoch, final=final)
    return summary
