"""The training loop of one cell (algorithms.md §5): feedback pre-training, forward epochs of runner steps,
extra feedback epochs, evaluation, best-validation selection, divergence detection, optional
pruning and a time limit. Nothing here knows any particular algorithm.

A cell checkpoints after every epoch (network, algorithm, optimisers, RNG states, history), so a
run that is killed resumes where it stopped and ends with exactly the result of an unbroken run.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import Data
from ..model.algorithm import Algorithm
from ..results.record import select_epoch
from ..spec.cell import Cell
from .checkpoint import Checkpoint, rng_state, set_rng_state, warn
from .runner import ForwardOptimisers, Runner
from .setup import Environment, batches, evaluate, prepare

EpochCallback = Callable[[str, int, int], None]  # (phase, epoch done, epochs in phase)
# Called with each finished epoch's history row; True stops the cell there as pruned
# (`bench tune`'s pruner, which judges a trial by its validation error so far).
StopRule = Callable[[dict[str, Any]], bool]


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
        return _train(cell, cls, env, checkpoint, on_epoch, probe, out_of_time, stop)


def _train(cell: Cell, cls: type[Algorithm], env: Environment, checkpoint: Path | None,
           on_epoch: EpochCallback | None, probe: Callable[[Runner, Data], Any] | None,
           out_of_time: Callable[[], None], stop: StopRule | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    store = Checkpoint(checkpoint, cell.config_hash())
    data, runner, state = restore(cell, cls, env, store)
    task, protocol, schedule = data.task, cell.dataset.protocol, cell.settings.schedule
    trains_feedback = cls.capabilities.trainable_feedback
    notify = on_epoch or (lambda *args: None)

    def feedback_epoch() -> float:
        losses = []
        for x, y in batches(data.train, protocol.batch_size, shuffle=True):
            out_of_time()
            loss = runner.feedback_step(x, y)
            if loss is not None:
                losses.append(loss)
        return float(np.mean(losses)) if losses else math.nan

    def snapshot() -> None:
        state["elapsed"] = elapsed_before + time.perf_counter() - started
        store.save({"network": runner.network.state_dict(),
                    "algorithm": runner.algorithm.state_dict(),
                    "optimisers": runner.optimisers.state_dict(), "rng": rng_state(),
                    "state": state})

    elapsed_before = state["elapsed"]
    pretraining_epochs = schedule.feedback_pretraining_epochs if trains_feedback else 0
    while state["pretrained"] < pretraining_epochs:
        state["pretraining"].append(feedback_epoch())
        state["pretrained"] += 1
        snapshot()
        notify("feedback pre-training", state["pretrained"], pretraining_epochs)

    while state["epoch"] < protocol.epochs and state["status"] == "ok" \
            and state["pruned_at"] is None:
        epoch_start = time.perf_counter()
        epoch = state["epoch"] + 1
        row = _training_epoch(runner, cell, data, epoch, state, out_of_time)
        if state["status"] == "ok":
            extra = schedule.extra_feedback_epochs if trains_feedback else 0
            row["extra_feedback_loss"] = [feedback_epoch() for _ in range(extra)] or None
            _evaluate(runner, cell, data, epoch, row, state)
        row["seconds"] = time.perf_counter() - epoch_start
        state["history"].append(row)
        state["epoch"] = epoch
        pruning = protocol.pruning
        too_poor = pruning and task.kind == "classification" \
            and state["epoch"] >= pruning.from_epoch \
            and row["train_accuracy"] < pruning.min_train_accuracy
        if state["status"] == "ok" and (too_poor or stop is not None and stop(row)):
            state["pruned_at"] = state["epoch"]
        snapshot()
        notify("epoch", state["epoch"], protocol.epochs)

    result = summarise(state, task.kind, data.val is not None)
    result["wall_time"] = elapsed_before + time.perf_counter() - started
    if state["metrics"]:
        result["metrics"] = state["metrics"]
    if probe is not None and state["status"] == "ok":  # a probe of a failed run means nothing
        result["probe"] = probe(runner, data)
    return result


def _training_epoch(runner: Runner, cell: Cell, data: Data, epoch: int, state: dict[str, Any],
                    out_of_time: Callable[[], None]) -> dict[str, Any]:
    """One epoch of runner steps; the row of the history it starts. A NaN or infinite loss
    (divergence) or update (a fault of the rule) ends the cell with its reason."""
    task, metrics = data.task, cell.settings.metrics
    loss_sum = torch.zeros((), dtype=torch.float64, device=data.train.x.device)
    correct = torch.zeros((), dtype=torch.long, device=data.train.x.device)
    feedback_losses = []
    for index, (x, y) in enumerate(batches(data.train, cell.dataset.protocol.batch_size,
                                           shuffle=True)):
        out_of_time()
        logs = metrics.log_interval and index % metrics.log_interval == 0
        step = runner.step(x, y, metrics=metrics if logs else None)
        if step.feedback_loss is not None:
            feedback_losses.append(step.feedback_loss)
        if step.fault is not None:
            state["status"] = "diverged" if step.fault == "training loss" else "error"
            state["reason"] = f"{step.fault} non-finite at epoch {epoch}, minibatch {index + 1}"
            break
        if step.metrics is not None:
            state["metrics"].append({"epoch": epoch, "batch": index, **step.metrics})
        fwd = step.proposal.fwd
        loss_sum += fwd.loss.detach().double() * len(y)
        hits = task.correct(fwd.output.detach(), y)
        if hits is not None:
            correct += hits
    n, finished = len(data.train), state["status"] == "ok"
    return {
        "epoch": epoch,
        "train_loss": float(loss_sum) / n if finished else None,
        "train_accuracy": int(correct) / n if task.kind == "classification" and finished
        else None,
        "feedback_loss": float(np.mean(feedback_losses)) if feedback_losses else None,
    }


def _evaluate(runner: Runner, cell: Cell, data: Data, epoch: int, row: dict[str, Any],
              state: dict[str, Any]) -> None:
    """The test set, then the validation set, as the original does; a non-finite loss there is
    divergence too."""
    splits = [("test", data.test)] + ([("val", data.val)] if data.val is not None else [])
    for name, split in splits:
        loss, accuracy = evaluate(runner.network, data.task, split,
                                  cell.dataset.protocol.eval_batch_size, runner.algorithm.predict)
        row[f"{name}_loss"], row[f"{name}_accuracy"] = loss, accuracy
        if not math.isfinite(loss) and state["status"] == "ok":
            state["status"], state["reason"] = "diverged", f"{name} loss is {loss} after epoch {epoch}"


def restore(cell: Cell, cls: type[Algorithm], env: Environment, store: Checkpoint
             ) -> tuple[Data, Runner, dict[str, Any]]:
    """The cell's data, runner and progress: from its checkpoint when there is a valid one,
    otherwise fresh. A checkpoint that fails half-way is not trusted: start afresh."""
    data, runner = _build(cell, cls, env)
    saved = store.load()
    if saved is None:
        return data, runner, _fresh_state()
    try:
        runner.network.load_state_dict(saved["network"])
        runner.algorithm.load_state_dict(saved["algorithm"])
        runner.optimisers.load_state_dict(saved["optimisers"])
        set_rng_state(saved["rng"])
        if not isinstance(saved["state"], dict) or not _fresh_state().keys() <= saved["state"].keys():
            raise ValueError("its progress record is incomplete")
        return data, runner, saved["state"]
    except Exception as error:
        first_line = " ".join(str(error).split("\n", 1)[0].split())
        warn(f"ignoring checkpoint {store.path}: it does not fit this cell "
             f"({type(error).__name__}: {first_line})")
        data, runner = _build(cell, cls, env)
        return data, runner, _fresh_state()


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
