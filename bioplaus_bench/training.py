"""The training loop of one cell (spec §5): feedback pre-training, forward epochs with one feedback
step per minibatch, extra feedback epochs, evaluation, best-validation selection, divergence
detection and optional pruning. Nothing here knows any particular algorithm.

A cell checkpoints after every epoch (network, algorithm, optimisers, RNG states, history), so a
run that is killed resumes where it stopped and ends with exactly the result of an unbroken run.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .algorithm import Algorithm
from .data import Data, DataSettings, Split, load_data
from .errors import InputError
from .metrics import MetricsConfig, alignment
from .networks import Network, build_network, forward_pass
from .optim import adam
from .suite import Cell
from .tasks import Task

DTYPES = {"float32": torch.float32, "float64": torch.float64}

EpochCallback = Callable[[str, int, int], None]  # (phase, epoch done, epochs in phase)


@dataclass(frozen=True)
class Environment:
    """Where cells run: data location and device. Not part of a cell's config hash."""

    data: DataSettings = field(default_factory=DataSettings)
    device: str = "cpu"


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


class _Checkpoint:
    """Atomic per-epoch snapshots of a running cell."""

    def __init__(self, path: Path | None, config_hash: str):
        self.path, self.config_hash = path, config_hash

    def load(self) -> dict[str, Any] | None:
        if self.path is None or not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception:  # a torn file cannot exist (atomic writes), but never trust disk blindly
            return None
        return state if state.get("config_hash") == self.config_hash else None

    def save(self, state: dict[str, Any]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        torch.save({**state, "config_hash": self.config_hash}, tmp)
        os.replace(tmp, self.path)

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
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
               probe: Callable[[Network, Algorithm, Data], Any] | None = None) -> dict[str, Any]:
    """Train one cell; return its result (status, history, selected epoch, final metrics, and
    the logged alignment metrics). ``probe``, if given, is called with the trained network,
    algorithm and data after the last epoch; what it returns is stored under ``"probe"``."""
    env = env or Environment()
    if env.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device '{env.device}' requested but CUDA is not available")
    started = time.perf_counter()
    data, network, algorithm = prepare(cell, cls, env)
    task, protocol, schedule = data.task, cell.dataset.protocol, cell.settings.schedule
    optimisers = _Optimisers(cell, network, algorithm)
    parameters = list(network.parameters())
    trainable = [id(p) in optimisers.trainable for p in parameters]
    trains_feedback = cls.capabilities.trainable_feedback
    notify = on_epoch or (lambda *args: None)

    def feedback_epoch() -> float:
        losses = []
        for x, y in _batches(data.train, protocol.batch_size, shuffle=True):
            loss = algorithm.feedback_step(forward_pass(network, task, x, y, layer_graphs=False))
            if loss is not None:
                losses.append(float(loss))
        return float(np.mean(losses)) if losses else math.nan

    store = _Checkpoint(checkpoint, cell.config_hash())
    state = {"epoch": 0, "pretrained": 0, "history": [], "pretraining": [], "elapsed": 0.0,
             "status": "ok", "pruned_at": None, "metrics": []}
    metrics = cell.settings.metrics
    log_interval = metrics.log_interval
    saved = store.load()
    if saved is not None:
        network.load_state_dict(saved["network"])
        algorithm.load_state_dict(saved["algorithm"])
        optimisers.load_state_dict(saved["optimisers"])
        _set_rng_state(saved["rng"])
        state = saved["state"]

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
        loss_sum = torch.zeros((), dtype=torch.float64, device=env.device)
        correct = torch.zeros((), dtype=torch.long, device=env.device)
        feedback_losses = []
        batches = _batches(data.train, protocol.batch_size, shuffle=True)
        for index, (x, y) in enumerate(batches):
            fwd = forward_pass(network, task, x, y, record_graph=cls.record_graph)
            updates = algorithm.forward_updates(fwd)
            feedback_loss = algorithm.feedback_step(fwd)
            if feedback_loss is not None:
                feedback_losses.append(float(feedback_loss))
            if not checked:
                _check_updates(updates, parameters, cls.name)
                checked = True
            # Metrics see this minibatch's updates and the feedback weights after its step.
            if log_interval and index % log_interval == 0:
                state["metrics"].append({"epoch": state["epoch"] + 1, "batch": index,
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
            "epoch": state["epoch"] + 1,
            "train_loss": train_loss,
            "train_accuracy": int(correct) / n if task.kind == "classification" else None,
            "feedback_loss": float(np.mean(feedback_losses)) if feedback_losses else None,
        }
        if not math.isfinite(train_loss):
            state["status"] = "diverged"
        else:
            extra = schedule.extra_feedback_epochs if trains_feedback else 0
            row["extra_feedback_loss"] = [feedback_epoch() for _ in range(extra)] or None
            # The original evaluates the test set, then the validation set.
            row["test_loss"], row["test_accuracy"] = evaluate(network, task, data.test,
                                                              protocol.eval_batch_size)
            if data.val is not None:
                row["val_loss"], row["val_accuracy"] = evaluate(network, task, data.val,
                                                                protocol.eval_batch_size)
        row["seconds"] = time.perf_counter() - epoch_start
        state["history"].append(row)
        state["epoch"] += 1
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
    evaluated = [row for row in history if "test_loss" in row]
    summary: dict[str, Any] = {"status": state["status"], "history": history,
                               "pretraining_feedback_loss": state["pretraining"],
                               "pruned_at_epoch": state["pruned_at"]}
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
