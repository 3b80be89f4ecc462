"""The training loop of one cell (spec §5): feedback pre-training, forward epochs with one feedback
step per minibatch, extra feedback epochs, evaluation, best-validation selection, divergence
detection and optional pruning. Nothing here knows any particular algorithm.

A cell checkpoints after every epoch (network, algorithm, optimisers, RNG states, history), so a
run that is killed resumes where it stopped and ends with exactly the result of an unbroken run.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data import Data, DataSettings, Split, load_data
from ..errors import InputError
from ..metrics.alignment import MetricsConfig, alignment
from ..model.algorithm import Algorithm
from ..model.networks import Network, build_network, forward_pass
from ..model.optim import adam
from ..model.tasks import Task
from ..spec.cell import Cell

DTYPES = {"float32": torch.float32, "float64": torch.float64}

EpochCallback = Callable[[str, int, int], None]  # (phase, epoch done, epochs in phase)


@dataclass(frozen=True)
class Environment:
    """Where and how cells run: data location, device, and the command line's time limit per
    cell (which overrides the suite's). Not part of a cell's config hash."""

    data: DataSettings = field(default_factory=DataSettings)
    device: str = "cpu"
    cell_timeout: float | None = None

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


def _batches(split: Split, batch_size: int, shuffle: bool):
    n = len(split)
    order = torch.randperm(n, device=split.x.device) if shuffle else None
    for start in range(0, n, batch_size):
        if order is None:
            yield split.x[start:start + batch_size], split.y[start:start + batch_size]
        else:
            index = order[start:start + batch_size]
            yield split.x[index], split.y[index]


@torch.no_grad()
def evaluate(network: Network, task: Task, split: Split, batch_size: int) -> tuple[float, float | None]:
    """Exact per-sample mean loss and accuracy (None for regression)."""
    loss, correct = 0.0, 0
    for x, y in _batches(split, batch_size, shuffle=False):
        output = network(x)
        loss += float(task.loss(output, y)) * len(y)
        hits = task.correct(output, y)
        correct += int(hits) if hits is not None else 0
    accuracy = correct / len(split) if task.kind == "classification" else None
    return loss / len(split), accuracy


class _Optimisers:
    """The forward Adam(s) the runner owns: one over all trainable layers, or one per layer when
    the suite gives a list of learning rates (the CNN configs)."""

    def __init__(self, cell: Cell, network: Network, algorithm: Algorithm):
        config = cell.settings.optimizer
        divisor = algorithm.lr_normalizer() if config.normalize_lr else 1.0
        frozen = set(cell.dataset.protocol.frozen_layers)
        layers = [i for i in range(1, network.depth + 1) if i not in frozen]
        self.trainable = {id(p) for i in layers for p in network.layer_parameters(i)}
        self.optimisers: list[torch.optim.Optimizer] = []
        if isinstance(config.lr, tuple):
            eps = config.eps if isinstance(config.eps, tuple) else (config.eps,) * network.depth
            for i in layers:
                if network.layer_parameters(i):
                    self.optimisers.append(adam(
                        network.layer_parameters(i), lr=config.lr[i - 1] / divisor,
                        betas=config.betas, eps=eps[i - 1]))
        else:
            parameters = [p for i in layers for p in network.layer_parameters(i)]
            if parameters:
                self.optimisers.append(adam(parameters, lr=config.lr / divisor,
                                            betas=config.betas, eps=config.eps))

    def step(self) -> None:
        for optimiser in self.optimisers:
            optimiser.step()

    def state_dict(self) -> list[dict[str, Any]]:
        return [o.state_dict() for o in self.optimisers]

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        for optimiser, state in zip(self.optimisers, states, strict=True):
            optimiser.load_state_dict(state)


def _check_updates(updates, parameters: list[torch.nn.Parameter], name: str) -> None:
    updates = list(updates)
    if len(updates) != len(parameters):
        raise RuntimeError(f"algorithm '{name}' proposed {len(updates)} updates for "
                           f"{len(parameters)} forward parameters")
    for index, (u, p) in enumerate(zip(updates, parameters, strict=True)):
        if not isinstance(u, torch.Tensor) or u.shape != p.shape or u.dtype != p.dtype:
            got = f"{tuple(u.shape)} {u.dtype}" if isinstance(u, torch.Tensor) else repr(u)
            raise RuntimeError(f"algorithm '{name}': update {index} should be a tensor of shape "
                               f"{tuple(p.shape)} and dtype {p.dtype}, got {got}")


class CellTimeout(BaseException):
    """The cell's time limit passed. A BaseException, so that a plugin's ``except Exception``
    cannot swallow it."""


class _Checkpoint:
    """Atomic per-epoch snapshots of a running cell. Read with ``weights_only=True``: a
    checkpoint is data (tensors, numbers, strings, lists, dicts), never code, so a crafted file
    in a results folder cannot run anything; one that does not load or does not match this
    cell is ignored with a warning."""

    def __init__(self, path: Path | None, config_hash: str):
        self.path, self.config_hash = path, config_hash
        self.unwritable = False

    def load(self) -> dict[str, Any] | None:
        if self.path is None or not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:
            _warn(f"ignoring checkpoint {self.path}: it does not load as plain data "
                  f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})")
            return None
        if not isinstance(state, dict) or not state.keys() >= CHECKPOINT_KEYS:
            _warn(f"ignoring checkpoint {self.path}: not a checkpoint of this version")
            return None
        if state["config_hash"] != self.config_hash:
            _warn(f"ignoring checkpoint {self.path}: it belongs to another configuration")
            return None
        return state

    def save(self, state: dict[str, Any]) -> None:
        if self.path is None or self.unwritable:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({**state, "config_hash": self.config_hash}, tmp)
            os.replace(tmp, self.path)
        except (OSError, RuntimeError) as error:  # torch.save reports a full disk as RuntimeError
            tmp.unlink(missing_ok=True)
            self.unwritable = True  # training goes on; only resuming this cell is lost
            _warn(f"cannot write checkpoint {self.path} ({error}); this cell goes on without "
                  "checkpoints")

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


CHECKPOINT_KEYS = {"network", "algorithm", "optimisers", "rng", "state", "config_hash"}


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _rng_state() -> dict[str, Any]:
    """Every generator's state as plain data (tensors, numbers, tuples)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def prepare(cell: Cell, cls: type[Algorithm], env: Environment) -> tuple[Data, Network, Algorithm]:
    """Seed, split the data, build the network and the algorithm, in the spec's order."""
    dtype = DTYPES[cell.precision]
    seed_everything(cell.seed)
    protocol = cell.dataset.protocol
    data = load_data(cell.dataset.source, cell.dataset.options, env.data, seed=cell.seed,
                     validation=protocol.validation, subset=cell.subset)
    data = Data(data.train.to(dtype, env.device),
                data.val.to(dtype, env.device) if data.val is not None else None,
                data.test.to(dtype, env.device), data.task)
    spec = cls.adapt_architecture(cell.dataset.architecture, cell.params)
    network = build_network(spec, data.input_shape, data.task.n_outputs, dtype=dtype,
                            device=env.device)
    algorithm = cls(network, data.task, cell.params)
    return data, network, algorithm


def train_cell(cell: Cell, cls: type[Algorithm], env: Environment | None = None, *,
               checkpoint: Path | None = None, on_epoch: EpochCallback | None = None,
               probe: Callable[[Network, Algorithm, Data], Any] | None = None,
               time_limit: float | None = None) -> dict[str, Any]:
    """Train one cell; return its result (status, history, selected epoch, final metrics, and
    the logged alignment metrics). ``probe``, if given, is called with the trained network,
    algorithm and data after the last epoch; what it returns is stored under ``"probe"``.
    ``time_limit`` (seconds of this call) raises ``CellTimeout`` when it passes."""
    env = env or Environment()
    with _deadline(time_limit) as out_of_time:
        return _train(cell, cls, env, checkpoint, on_epoch, probe, out_of_time)


def _train(cell: Cell, cls: type[Algorithm], env: Environment, checkpoint: Path | None,
           on_epoch: EpochCallback | None, probe: Callable[[Network, Algorithm, Data], Any] | None,
           out_of_time: Callable[[], None]) -> dict[str, Any]:
    started = time.perf_counter()
    store = _Checkpoint(checkpoint, cell.config_hash())
    data, network, algorithm, optimisers = _build(cell, cls, env)
    state = _fresh_state()
    saved = store.load()
    if saved is not None:
        try:
            network.load_state_dict(saved["network"])
            algorithm.load_state_dict(saved["algorithm"])
            optimisers.load_state_dict(saved["optimisers"])
            _set_rng_state(saved["rng"])
            if not isinstance(saved["state"], dict) or not state.keys() <= saved["state"].keys():
                raise ValueError("its progress record is incomplete")
            state = saved["state"]
        except Exception as error:  # half-restored objects are not trusted: start afresh
            _warn(f"ignoring checkpoint {checkpoint}: it does not fit this cell "
                  f"({type(error).__name__}: {error})")
            data, network, algorithm, optimisers = _build(cell, cls, env)
            state = _fresh_state()
    task, protocol, schedule = data.task, cell.dataset.protocol, cell.settings.schedule
    parameters = list(network.parameters())
    names = [name for name, _ in network.named_parameters()]
    trainable = [id(p) in optimisers.trainable for p in parameters]
    trains_feedback = cls.capabilities.trainable_feedback
    notify = on_epoch or (lambda *args: None)

    def feedback_epoch() -> float:
        losses = []
        for x, y in _batches(data.train, protocol.batch_size, shuffle=True):
            out_of_time()
            loss = algorithm.feedback_step(forward_pass(network, task, x, y, layer_graphs=False))
            if loss is not None:
                losses.append(float(loss))
        return float(np.mean(losses)) if losses else math.nan

    metrics = cell.settings.metrics
    log_interval = metrics.log_interval

    def snapshot() -> None:
        state["elapsed"] = elapsed_before + time.perf_counter() - started
        store.save({"network": network.state_dict(), "algorithm": algorithm.state_dict(),
                    "optimisers": optimisers.state_dict(), "rng": _rng_state(), "state": state})

    elapsed_before = state["elapsed"]
    pretraining_epochs = schedule.feedback_pretraining_epochs if trains_feedback else 0
    while state["pretrained"] < pretraining_epochs:
        state["pretraining"].append(feedback_epoch())
        state["pretrained"] += 1
        snapshot()
        notify("feedback pre-training", state["pretrained"], pretraining_epochs)

    checked = False
    while state["epoch"] < protocol.epochs and state["status"] == "ok" \
            and state["pruned_at"] is None:
        epoch_start = time.perf_counter()
        epoch = state["epoch"] + 1
        loss_sum = torch.zeros((), dtype=torch.float64, device=env.device)
        correct = torch.zeros((), dtype=torch.long, device=env.device)
        feedback_losses = []
        batches = _batches(data.train, protocol.batch_size, shuffle=True)
        for index, (x, y) in enumerate(batches):
            out_of_time()
            fwd = forward_pass(network, task, x, y, record_graph=cls.record_graph)
            updates = algorithm.forward_updates(fwd)
            feedback_loss = algorithm.feedback_step(fwd)
            if feedback_loss is not None:
                feedback_losses.append(float(feedback_loss))
            if not checked:
                _check_updates(updates, parameters, cls.name)
                checked = True
            fault = _non_finite(fwd.loss, updates, names, trainable)
            if fault is not None:
                state["status"], state["reason"] = (
                    "diverged" if fault == "training loss" else "error",
                    f"{fault} non-finite at epoch {epoch}, minibatch {index}")
                break
            # Metrics see this minibatch's updates and the feedback weights after its step.
            if log_interval and index % log_interval == 0:
                state["metrics"].append({"epoch": epoch, "batch": index,
                                         **alignment(network, task, fwd, updates, metrics)})
            for parameter, update, moves in zip(parameters, updates, trainable, strict=True):
                if moves:
                    parameter.grad = update.detach()
            optimisers.step()
            loss_sum += fwd.loss.detach().double() * len(y)
            hits = task.correct(fwd.output.detach(), y)
            if hits is not None:
                correct += hits
        n = len(data.train)
        train_loss = float(loss_sum) / n
        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": train_loss if state["status"] == "ok" else None,
            "train_accuracy": int(correct) / n
            if task.kind == "classification" and state["status"] == "ok" else None,
            "feedback_loss": float(np.mean(feedback_losses)) if feedback_losses else None,
        }
        if state["status"] == "ok":
            extra = schedule.extra_feedback_epochs if trains_feedback else 0
            row["extra_feedback_loss"] = [feedback_epoch() for _ in range(extra)] or None
            # The original evaluates the test set, then the validation set.
            splits = [("test", data.test)] + ([("val", data.val)] if data.val is not None else [])
            for split_name, split in splits:
                loss, accuracy = evaluate(network, task, split, protocol.eval_batch_size)
                row[f"{split_name}_loss"], row[f"{split_name}_accuracy"] = loss, accuracy
                if not math.isfinite(loss) and state["status"] == "ok":
                    state["status"] = "diverged"
                    state["reason"] = f"{split_name} loss is {loss} after epoch {epoch}"
        row["seconds"] = time.perf_counter() - epoch_start
        state["history"].append(row)
        state["epoch"] = epoch
        pruning = protocol.pruning
        if pruning and state["status"] == "ok" and task.kind == "classification" \
                and state["epoch"] >= pruning.from_epoch \
                and row["train_accuracy"] < pruning.min_train_accuracy:
            state["pruned_at"] = state["epoch"]
        snapshot()
        notify("epoch", state["epoch"], protocol.epochs)

    result = _summarise(state, task.kind, data.val is not None)
    result["wall_time"] = elapsed_before + time.perf_counter() - started
    if state["metrics"]:
        result["metrics"] = state["metrics"]
    if probe is not None:
        result["probe"] = probe(network, algorithm, data)
    return result


def _build(cell: Cell, cls: type[Algorithm], env: Environment
           ) -> tuple[Data, Network, Algorithm, _Optimisers]:
    data, network, algorithm = prepare(cell, cls, env)
    return data, network, algorithm, _Optimisers(cell, network, algorithm)


def _fresh_state() -> dict[str, Any]:
    return {"epoch": 0, "pretrained": 0, "history": [], "pretraining": [], "elapsed": 0.0,
            "status": "ok", "reason": None, "pruned_at": None, "metrics": []}


def _non_finite(loss: Tensor, updates, names: list[str], trainable: list[bool]) -> str | None:
    """What is NaN or infinite in this minibatch: "training loss", "update of parameter P",
    or None. One reduction and one host sync for the whole minibatch; the culprit is looked
    for only when there is one."""
    moving = [u.detach() for u, moves in zip(updates, trainable, strict=True) if moves]
    peaks = torch.stack([loss.detach().double().abs()] +
                        [u.abs().amax().double() for u in moving if u.numel()])
    if bool(torch.isfinite(peaks).all()):
        return None
    if not torch.isfinite(loss).all():
        return "training loss"
    for name, update, moves in zip(names, updates, trainable, strict=True):
        if moves and not torch.isfinite(update).all():
            return f"update of parameter {name}"
    return "an update"


@contextlib.contextmanager
def _deadline(seconds: float | None):
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


DAMPING_GRID = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def damping_search(cell: Cell, cls: type[Algorithm], env: Environment | None = None,
                   grid: tuple[float, ...] = DAMPING_GRID, log_interval: int | None = None
                   ) -> dict[str, Any]:
    """The GNT damping search of spec §9.2: train the cell (the paper stops after 3 epochs),
    then make one more pass over the training set with the forward weights frozen (the
    feedback still trains), logging the GNT angles every ``log_interval`` minibatches; per
    hidden layer keep the λ of ``grid`` with the smallest mean angle. Every λ is measured in
    the same pass (the original made one pass per λ, with the same frozen forward weights)."""
    interval = log_interval or cell.settings.metrics.log_interval or 80

    def probe(network: Network, algorithm: Algorithm, data: Data) -> dict[str, Any]:
        config = MetricsConfig(bp_angles=False, gnt_angles=False, damping_grid=grid)
        logged: dict[str, list[list[float]]] = {str(d): [] for d in grid}
        batches = _batches(data.train, cell.dataset.protocol.batch_size, shuffle=True)
        for index, (x, y) in enumerate(batches):
            fwd = forward_pass(network, data.task, x, y, record_graph=cls.record_graph)
            updates = algorithm.forward_updates(fwd)
            algorithm.feedback_step(fwd)
            if index % interval == 0:
                for damping, angles in alignment(network, data.task, fwd, updates,
                                                 config)["gnt_angle_grid"].items():
                    logged[damping].append(angles)
        means = {d: np.mean(rows, axis=0).tolist() for d, rows in logged.items()}
        layers = network.depth - 1
        best = [min(grid, key=lambda d, i=i: means[str(d)][i]) for i in range(layers)]
        return {"grid": list(grid), "mean_angle": means, "best": best}

    return train_cell(cell, cls, env, probe=probe)["probe"]


def _summarise(state: dict[str, Any], kind: str, has_val: bool) -> dict[str, Any]:
    history = state["history"]
    evaluated = [row for row in history if "test_loss" in row
                 and all(math.isfinite(row[key]) for key in ("test_loss", "val_loss") if key in row)]
    summary: dict[str, Any] = {"status": state["status"], "history": history,
                               "pretraining_feedback_loss": state["pretraining"],
                               "pruned_at_epoch": state["pruned_at"]}
    if state.get("reason"):
        summary["reason"] = state["reason"]
    if not evaluated:
        summary.update(selected_epoch=None, final={})
        return summary
    if has_val:
        if kind == "classification":  # the first epoch of maximal validation accuracy
            best = max(evaluated, key=lambda row: (row["val_accuracy"], -row["epoch"]))
        else:
            best = min(evaluated, key=lambda row: (row["val_loss"], row["epoch"]))
    else:
        best = evaluated[-1]
    final = {"test_loss": best["test_loss"], "train_loss_last": history[-1]["train_loss"]}
    if kind == "classification":
        final["test_error"] = 1.0 - best["test_accuracy"]
        final["test_accuracy"] = best["test_accuracy"]
    if has_val:
        final["val_loss"] = best["val_loss"]
        if kind == "classification":
            final["val_accuracy"] = best["val_accuracy"]
    summary.update(selected_epoch=best["epoch"], final=final)
    return summary
