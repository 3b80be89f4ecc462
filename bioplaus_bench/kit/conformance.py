"""Conformance checks for algorithm plugins (``bench check-plugin NAME|FILE``).

Each check drives the algorithm the way the runner does (``training.train_cell``): a forward pass
(with a graph only if ``record_graph``), ``forward_updates(fwd)``, ``feedback_step(fwd)`` on the
same pass, the updates written to ``.grad`` of the trainable forward parameters, one forward Adam
step with ``lr / lr_normalizer()``. Networks are tiny (an MLP 6-7-5-3 and a CNN with one 3×3 conv
block), so all checks of one algorithm take about a second.

Checks, each reported as one PASS/FAIL line with its reason:

- ``loads``: capabilities declared; ``Params`` a frozen dataclass whose defaults pass the suite
  schema; ``forward_updates`` (and ``feedback_step`` with trainable feedback) implemented;
- per architecture it claims (MLP, CNN):
  ``step``: a few training steps run; one update per forward parameter with its shape and dtype,
  finite and not all zero; the algorithm does not write the forward weights itself; they move;
  ``precision``: the same in float32 and float64;
  ``deterministic``: two runs from the same seed propose identical updates and feedback losses;
  ``feedback`` (trainable feedback only): feedback steps lower the feedback loss on a fixed batch
  (measured with common noise samples) and leave the forward weights alone;
  ``frozen layers``: with only layer 1 trainable (MLP: ``train_cell`` on the teacher task, with a
  checkpoint), layers 2..L do not move, layer 1 does, trainable feedback still trains;
  ``checkpoint``: an algorithm restored from its ``state_dict`` proposes the same updates.

A check whose prerequisite did not pass (a failed ``step`` makes every later check fail the same
way) is reported as SKIP, so one defect gives one FAIL line; SKIP counts as not passed.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import math
import random
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import PluginError, SuiteError, did_you_mean
from ..model.algorithm import Algorithm, Capabilities
from ..model.networks import ArchitectureSpec, Network, build_network, forward_pass
from ..model.optim import adam
from ..model.tasks import Classification, Task
from ..registry import AlgorithmInfo, Registry
from ..spec.schema import Source, coerce_dataclass

ARCHITECTURES: dict[str, tuple[ArchitectureSpec, tuple[int, ...]]] = {
    "mlp": (ArchitectureSpec(type="mlp", hidden=(7, 5)), (6,)),
    "cnn": (ArchitectureSpec(type="cnn", conv_channels=(3,), hidden=(5,), kernel_size=3),
            (2, 6, 6)),
}
N_OUTPUTS = 3
BATCH = 8
LR = 1e-3
FEEDBACK_STEPS = 40  # feedback steps between the two measurements of the feedback loss
FEEDBACK_SAMPLES = 6  # noise samples (seeds) averaged per measurement
SCHEDULE_KEYS = ("feedback_pretraining_epochs", "extra_feedback_epochs")


@dataclass(frozen=True)
class CheckResult:
    check: str
    passed: bool
    reason: str
    skipped: bool = False  # not run because a check it builds on failed (counts as not passed)

    def line(self) -> str:
        status = "SKIP" if self.skipped else "PASS" if self.passed else "FAIL"
        return f"{status}  {self.check}: {self.reason}"


class Failure(Exception):
    """A conformance failure with the reason to show."""


# --- Finding what to check ----------------------------------------------------------------------

def find_algorithms(target: str, registry: Registry) -> list[AlgorithmInfo]:
    """The algorithms named by ``target``: an algorithm name, a plugin file (loaded into
    ``registry`` with ``--plugin``), or a distribution / module that provides algorithms.
    Raises ``PluginError`` (exit 2) when nothing loadable matches."""
    path = Path(target)
    if target.endswith(".py"):
        resolved = str(path.resolve())
        found = [info for info in registry.algorithms.values()
                 if info.origin == "file" and info.source == resolved]
        if not found:
            raise PluginError(f"plugin file {resolved} provides no algorithm: it needs a "
                              "`bioplaus_bench_algorithms` hook marked with `@hookimpl` that "
                              "returns Algorithm subclasses")
        return found
    if target in registry:
        return [registry.get(target)]
    found = [info for info in registry.algorithms.values()
             if info.source.endswith(f"({target})") or info.source.split(" ")[0] == target
             or info.source.split(" ")[0].startswith(f"{target}.")]
    if found:
        return found
    for warning in registry.warnings:
        if f"plugin {target} " in warning or target in warning.split(" failed to load")[0]:
            raise PluginError(f"{target} cannot be loaded: {warning}")
    raise PluginError(f"no algorithm, plugin file or plugin package '{target}'"
                      f"{did_you_mean(target, registry.algorithms)}; known algorithms: "
                      f"{', '.join(registry.algorithms)}")


# --- Helpers ------------------------------------------------------------------------------------

def _where(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return ""
    frame = frames[-1]
    return f" (at {Path(frame.filename).name}:{frame.lineno} in {frame.name})"


def _describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}{_where(error)}"
    if "does not require grad" in str(error):
        text += "; set `record_graph = True` if forward_updates needs the autograd graph"
    return text


def _parameter_names(network: Network) -> list[str]:
    names = []
    for i in range(1, network.depth + 1):
        for name, _ in network.layer(i).named_parameters():
            names.append(f"layer {i} {name.rsplit('.', 1)[-1]}")
    return names


@contextmanager
def _rng_preserved() -> Iterator[None]:
    """Checks seed the global RNGs; leave the caller's RNG state as it was."""
    state = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    try:
        yield
    finally:
        torch.set_rng_state(state[0])
        np.random.set_state(state[1])
        random.setstate(state[2])


def _seed(seed: int) -> None:
    """The runner's seeding (``training.seed_everything``): Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class _Setting:
    """A tiny network with its algorithm, the runner's Adam and a fixed data stream."""

    network: Network
    algorithm: Algorithm
    task: Task
    parameters: list[torch.nn.Parameter]
    names: list[str]
    optimiser: torch.optim.Optimizer | None
    trainable: list[bool]
    generator: torch.Generator
    input_shape: tuple[int, ...]

    def batch(self) -> tuple[Tensor, Tensor]:
        dtype = self.parameters[0].dtype
        x = torch.randn(BATCH, *self.input_shape, generator=self.generator, dtype=torch.float64)
        y = torch.randint(0, N_OUTPUTS, (BATCH,), generator=self.generator)
        return x.to(dtype), y

    def forward(self, x: Tensor, y: Tensor, record_graph: bool):
        return forward_pass(self.network, self.task, x, y, record_graph=record_graph)


def _setting(cls: type[Algorithm], kind: str, dtype: torch.dtype, seed: int = 0,
             trainable_layers: Sequence[int] | None = None) -> _Setting:
    """Seed, build the network (after ``adapt_architecture``) and the algorithm, in the runner's
    order, and the forward Adam over the trainable layers (all by default)."""
    spec, input_shape = ARCHITECTURES[kind]
    params = cls.Params()
    _seed(seed)
    spec = cls.adapt_architecture(spec, params)
    network = build_network(spec, input_shape, N_OUTPUTS, dtype=dtype)
    task = Classification(N_OUTPUTS)
    algorithm = cls(network, task, params)
    layers = list(trainable_layers or range(1, network.depth + 1))
    moving = {id(p) for i in layers for p in network.layer_parameters(i)}
    parameters = list(network.parameters())
    normalizer = algorithm.lr_normalizer()
    if isinstance(normalizer, bool) or not isinstance(normalizer, int | float) \
            or not math.isfinite(normalizer) or normalizer <= 0:
        raise Failure(f"lr_normalizer() must return a positive finite number, got {normalizer!r}")
    trainable = [id(p) in moving for p in parameters]
    chosen = [p for p, t in zip(parameters, trainable, strict=True) if t]
    optimiser = adam(chosen, lr=LR / normalizer) if chosen else None
    generator = torch.Generator().manual_seed(1000 + seed)
    return _Setting(network, algorithm, task, parameters, _parameter_names(network), optimiser,
                    trainable, generator, input_shape)


def _validate(updates: Any, setting: _Setting) -> list[Tensor]:
    parameters, names = setting.parameters, setting.names
    expected = f"one tensor per forward parameter ({len(parameters)}: {', '.join(names)})"
    if updates is None:
        raise Failure(f"forward_updates returned None; it must return a list with {expected}")
    if not isinstance(updates, Sequence) or isinstance(updates, str | Tensor):
        raise Failure(f"forward_updates returned {type(updates).__name__}; it must return a list "
                      f"with {expected}")
    updates = list(updates)
    if len(updates) != len(parameters):
        raise Failure(f"forward_updates proposed {len(updates)} updates for {len(parameters)} "
                      f"forward parameters; expected {expected}, in network.parameters() order")
    for index, (update, parameter, name) in enumerate(zip(updates, parameters, names, strict=True)):
        want = f"shape {tuple(parameter.shape)} and dtype {parameter.dtype}"
        if not isinstance(update, Tensor):
            raise Failure(f"update {index} ({name}) should be a tensor of {want}, "
                          f"got {type(update).__name__}")
        if update.shape != parameter.shape or update.dtype != parameter.dtype:
            raise Failure(f"update {index} ({name}) should be a tensor of {want}, got shape "
                          f"{tuple(update.shape)} and dtype {update.dtype}")
        if update.device != parameter.device:
            raise Failure(f"update {index} ({name}) is on {update.device}, its parameter on "
                          f"{parameter.device}")
        if not torch.isfinite(update).all():
            raise Failure(f"update {index} ({name}) has non-finite values")
        if not update.detach().abs().sum() > 0:
            raise Failure(f"update {index} ({name}) is all zeros: that parameter would never learn")
    return updates


def _snapshot(tensors: Sequence[Tensor]) -> list[Tensor]:
    return [t.detach().clone() for t in tensors]


def _first_moved(before: Sequence[Tensor], after: Sequence[Tensor], names: Sequence[str]) -> str | None:
    for b, a, name in zip(before, after, names, strict=True):
        if not torch.equal(b, a):
            return name
    return None


def _step(setting: _Setting, record_graph: bool, feedback_only: bool = False
          ) -> tuple[list[Tensor], float | None]:
    """One minibatch as the runner does it; checks the updates and that the algorithm does not
    write the forward weights itself."""
    x, y = setting.batch()
    before = _snapshot(setting.parameters)
    fwd = setting.forward(x, y, record_graph and not feedback_only)
    updates: list[Tensor] = []
    if not feedback_only:
        updates = _validate(setting.algorithm.forward_updates(fwd), setting)
    loss = setting.algorithm.feedback_step(fwd)
    if loss is not None:
        if isinstance(loss, Tensor):
            loss = loss.item()
        if isinstance(loss, bool) or not isinstance(loss, int | float):
            raise Failure(f"feedback_step returned {type(loss).__name__}; it must return a float "
                          "(the feedback loss) or None")
        if not math.isfinite(loss):
            raise Failure(f"feedback_step returned a non-finite loss ({loss})")
        loss = float(loss)
    moved = _first_moved(before, setting.parameters, setting.names)
    if moved is not None:
        raise Failure(f"{'feedback_step' if feedback_only else 'forward_updates/feedback_step'} "
                      f"changed the forward weights themselves ({moved}); only the runner's "
                      "optimiser may move them: return the update instead")
    if not feedback_only:
        for parameter, update, moves in zip(setting.parameters, updates, setting.trainable,
                                            strict=True):
            if moves:
                parameter.grad = update.detach()
        if setting.optimiser is not None:
            setting.optimiser.step()
            setting.optimiser.zero_grad(set_to_none=True)
    return updates, loss


# --- The checks ---------------------------------------------------------------------------------

def check_loads(cls: type[Algorithm]) -> str:
    caps = cls.capabilities
    if not isinstance(caps, Capabilities):
        raise Failure(f"capabilities must be a bioplaus_bench.api.Capabilities, got {caps!r}")
    if not (caps.mlp or caps.cnn):
        raise Failure("capabilities claims neither MLP nor CNN: the algorithm could never run")
    for attribute in ("label", "summary"):
        if not isinstance(getattr(cls, attribute), str):
            raise Failure(f"{attribute} must be a string, got {getattr(cls, attribute)!r}")
    params = cls.Params
    if not dataclasses.is_dataclass(params) or not params.__dataclass_params__.frozen:
        raise Failure(f"Params ({params.__name__}) must be a frozen dataclass: "
                      "@dataclass(frozen=True)")
    missing = [f.name for f in dataclasses.fields(params)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise Failure(f"Params ({params.__name__}) needs defaults for {', '.join(missing)}")
    defaults = params()
    try:  # the defaults, written into a suite, must validate back to the same value
        raw = {f.name: _plain(getattr(defaults, f.name)) for f in dataclasses.fields(params)}
        validated = coerce_dataclass(raw, params, (), Source("<Params defaults>"))
    except TypeError as error:
        raise Failure(f"Params ({params.__name__}) uses a type suites cannot give: {error}; "
                      "use int, float, bool, str, Literal, tuples, lists or dataclasses") from None
    except SuiteError as error:
        raise Failure(f"a default of Params ({params.__name__}) does not match its type: "
                      f"{error.key}: {error.message}") from None
    if validated != defaults:
        raise Failure(f"Params defaults do not survive validation: {defaults!r} became "
                      f"{validated!r}")
    schedule = cls.default_schedule
    if not isinstance(schedule, dict) or any(
            key not in SCHEDULE_KEYS or isinstance(value, bool) or not isinstance(value, int)
            or value < 0 for key, value in schedule.items()):
        raise Failure(f"default_schedule must map {' / '.join(SCHEDULE_KEYS)} to non-negative "
                      f"integers, got {schedule!r}")
    if cls.forward_updates is Algorithm.forward_updates:
        raise Failure("forward_updates is not implemented")
    if caps.trainable_feedback and cls.feedback_step is Algorithm.feedback_step:
        raise Failure("capabilities.trainable_feedback is set but feedback_step is not implemented")
    fields = ", ".join(f"{f.name}={getattr(defaults, f.name)!r}" for f in dataclasses.fields(params))
    return f"capabilities: {caps.describe()}; {params.__name__}({fields})"


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def check_step(cls: type[Algorithm], kind: str) -> str:
    setting = _setting(cls, kind, torch.float32)
    before = _snapshot(setting.parameters)
    steps = 3
    for _ in range(steps):
        _step(setting, cls.record_graph)
    still = [name for b, a, name in zip(before, setting.parameters, setting.names, strict=True)
             if torch.equal(b, a)]
    if still:
        raise Failure(f"the forward weights did not move after {steps} steps: {', '.join(still)}")
    return (f"{steps} steps: {len(setting.parameters)} updates with the parameters' shapes and "
            "dtype, finite and non-zero; every forward parameter moved")


def check_precision(cls: type[Algorithm], kind: str) -> str:
    for dtype in (torch.float32, torch.float64):
        try:
            setting = _setting(cls, kind, dtype)
            _step(setting, cls.record_graph)
            _step(setting, cls.record_graph)
        except Failure as failure:
            raise Failure(f"in {str(dtype).removeprefix('torch.')}: {failure}") from None
        except Exception as error:
            raise Failure(f"in {str(dtype).removeprefix('torch.')}: {_describe(error)}") from None
        own = [name for name, t in [*setting.algorithm.named_parameters(),
                                    *setting.algorithm.named_buffers()]
               if t.is_floating_point() and t.dtype != dtype]
        if own:
            raise Failure(f"in {str(dtype).removeprefix('torch.')}: the algorithm's tensors "
                          f"{', '.join(own)} are not in the network's dtype; create them with "
                          "dtype=network.dtype")
    return "two steps each in float32 and float64, updates and own tensors in the network's dtype"


def _run_twice(cls: type[Algorithm], kind: str) -> tuple[list, list]:
    runs = []
    for _ in range(2):
        setting = _setting(cls, kind, torch.float64)
        record = []
        for _ in range(2):
            updates, loss = _step(setting, cls.record_graph)
            record.append((_snapshot(updates), loss))
        runs.append((setting.names, record))
    return runs[0], runs[1]


def check_deterministic(cls: type[Algorithm], kind: str) -> str:
    (names, first), (_, second) = _run_twice(cls, kind)
    for step, ((u1, l1), (u2, l2)) in enumerate(zip(first, second, strict=True), start=1):
        for a, b, name in zip(u1, u2, names, strict=True):
            if not torch.equal(a, b):
                diff = (a - b).abs().max().item()
                raise Failure(f"two runs from the same seed proposed different updates (step "
                              f"{step}, {name}: max difference {diff:.3g}); draw random numbers "
                              "from torch's global RNG (the runner seeds it), not from an "
                              "unseeded generator or the clock")
        if l1 != l2:
            raise Failure(f"two runs from the same seed gave different feedback losses (step "
                          f"{step}: {l1!r} vs {l2!r})")
    return "two runs from the same seed gave identical updates and feedback losses (2 steps)"


def _feedback_trainable(algorithm: Algorithm) -> list[tuple[str, Tensor]]:
    return [(name, p) for name, p in algorithm.named_parameters() if p.requires_grad]


def _mean_feedback_loss(algorithm: Algorithm, fwd, seeds: Sequence[int]) -> float | None:
    """The feedback loss at the current feedback weights, averaged over fixed noise samples:
    ``feedback_step`` on a copy (it returns the loss before its update) after seeding. None if
    the algorithm cannot be copied."""
    losses = []
    for seed in seeds:
        try:
            clone = copy.deepcopy(algorithm)
        except Exception:
            return None
        torch.manual_seed(seed)
        losses.append(float(clone.feedback_step(fwd)))
    return sum(losses) / len(losses)


def check_feedback(cls: type[Algorithm], kind: str) -> str:
    setting = _setting(cls, kind, torch.float64)
    algorithm = setting.algorithm
    if not _feedback_trainable(algorithm):
        raise Failure("trainable_feedback is set but the algorithm has no parameter with "
                      "requires_grad (register feedback weights as nn.Parameter)")
    x, y = setting.batch()
    fwd = setting.forward(x, y, cls.record_graph)
    forward_before = _snapshot(setting.parameters)
    seeds = range(10_000, 10_000 + FEEDBACK_SAMPLES)
    first = copy.deepcopy(algorithm).feedback_step(fwd)
    if first is None:
        raise Failure("feedback_step returned None; with trainable feedback it must return the "
                      "feedback loss (a float)")
    before = _mean_feedback_loss(algorithm, fwd, seeds)
    torch.manual_seed(0)
    trace = []
    for _ in range(FEEDBACK_STEPS):
        loss = algorithm.feedback_step(fwd)
        if loss is None or not math.isfinite(float(loss)):
            raise Failure(f"feedback_step returned {loss!r} during training on a fixed batch")
        trace.append(float(loss))
    moved = _first_moved(forward_before, setting.parameters, setting.names)
    if moved is not None:
        raise Failure(f"feedback_step changed the forward weights ({moved}); feedback-only epochs "
                      "must leave them alone")
    after = _mean_feedback_loss(algorithm, fwd, seeds)
    how = f"mean of {FEEDBACK_SAMPLES} fixed noise samples"
    if before is None or after is None:  # not copyable: compare running means instead
        before = sum(trace[:FEEDBACK_SAMPLES]) / FEEDBACK_SAMPLES
        after = sum(trace[-FEEDBACK_SAMPLES:]) / FEEDBACK_SAMPLES
        how = f"mean of the first and the last {FEEDBACK_SAMPLES} steps"
    if not after < before:
        raise Failure(f"the feedback loss did not go down on a fixed batch: {before:.6g} → "
                      f"{after:.6g} after {FEEDBACK_STEPS} feedback steps ({how})")
    return (f"feedback loss on a fixed batch {before:.6g} → {after:.6g} after {FEEDBACK_STEPS} "
            f"steps ({how}); forward weights untouched")


def _frozen_by_runner(cls: type[Algorithm]) -> tuple[list[list[Tensor]], list[list[Tensor]],
                                                      dict[str, Tensor], dict[str, Tensor],
                                                      dict[str, Any]]:
    """One epoch of ``train_cell`` on the teacher task with layers 2..L frozen, checkpointed."""
    from ..registry import AlgorithmInfo as Info
    from ..run.training import Environment, prepare, train_cell
    from ..suite import load_suite

    spec, _ = ARCHITECTURES["mlp"]
    depth = spec.depth
    schedule = "{feedback_pretraining_epochs: 1, extra_feedback_epochs: 1}" \
        if cls.capabilities.trainable_feedback else "{}"
    text = (
        "name: conformance\nseeds: [0]\nprecision: float64\n"
        "datasets:\n  teacher:\n    source: teacher\n"
        "    options: {n_train: 48, n_test: 16, hidden: [16]}\n"
        f"    architecture: {{type: mlp, hidden: {list(spec.hidden)}}}\n"
        "    protocol: {epochs: 1, batch_size: 16, validation: 16, "
        f"frozen_layers: {list(range(2, depth + 1))}}}\n"
        "algorithms:\n  candidate:\n"
        f"    algorithm: {json.dumps(cls.name)}\n"
        "    optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}\n"
        f"    schedule: {schedule}\n")
    registry = Registry({cls.name: Info(cls.name, cls, "file", "conformance")}, [])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "conformance.yaml"
        path.write_text(text)
        cell = load_suite(path, registry).cells(registry=registry)[0]
        env = Environment()
        _, network, algorithm = prepare(cell, cls, env)
        before = [_snapshot(network.layer_parameters(i)) for i in range(1, depth + 1)]
        feedback_before = {k: v.detach().clone() for k, v in algorithm.state_dict().items()
                           if isinstance(v, Tensor)}
        checkpoint = Path(folder) / "cell.ckpt"
        result = train_cell(cell, cls, env, checkpoint=checkpoint)
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    network.load_state_dict(saved["network"])
    after = [_snapshot(network.layer_parameters(i)) for i in range(1, depth + 1)]
    feedback_after = {k: v for k, v in saved["algorithm"].items() if isinstance(v, Tensor)}
    return before, after, feedback_before, feedback_after, result


def check_frozen(cls: type[Algorithm], kind: str) -> str:
    if kind == "mlp":
        before, after, feedback_before, feedback_after, result = _frozen_by_runner(cls)
        if result["status"] != "ok":
            raise Failure(f"one epoch of train_cell ended with status {result['status']!r}")
        how = "train_cell, one epoch on the teacher task, checkpointed"
    else:
        setting = _setting(cls, kind, torch.float64, trainable_layers=[1])
        depth = setting.network.depth
        before = [_snapshot(setting.network.layer_parameters(i)) for i in range(1, depth + 1)]
        feedback_before = {k: v.detach().clone() for k, v in setting.algorithm.state_dict().items()
                           if isinstance(v, Tensor)}
        if cls.capabilities.trainable_feedback:
            _step(setting, cls.record_graph, feedback_only=True)
        for _ in range(3):
            _step(setting, cls.record_graph)
        after = [_snapshot(setting.network.layer_parameters(i)) for i in range(1, depth + 1)]
        feedback_after = {k: v.detach() for k, v in setting.algorithm.state_dict().items()
                          if isinstance(v, Tensor)}
        how = "the runner's step logic, 3 steps"
    moved = [str(i) for i in range(2, len(before) + 1)
             if any(not torch.equal(b, a) for b, a in zip(before[i - 1], after[i - 1], strict=True))]
    if moved:
        raise Failure(f"frozen layers moved: {', '.join(moved)} (only layer 1 was trainable)")
    if all(torch.equal(b, a) for b, a in zip(before[0], after[0], strict=True)):
        raise Failure("layer 1, the only trainable layer, did not move")
    detail = ""
    if cls.capabilities.trainable_feedback:
        changed = [k for k in feedback_before if k in feedback_after
                   and not torch.equal(feedback_before[k], feedback_after[k])]
        if not changed:
            raise Failure("the feedback weights did not train while the forward layers were "
                          "frozen (or they are not in the algorithm's state_dict)")
        detail = f"; feedback trained ({len(changed)} tensors changed)"
    return f"only layer 1 trainable ({how}): layers 2..{len(before)} unchanged, layer 1 moved{detail}"


def check_checkpoint(cls: type[Algorithm], kind: str) -> str:
    original = _setting(cls, kind, torch.float64, seed=0)
    for _ in range(2):
        _step(original, cls.record_graph)
    buffer = io.BytesIO()
    try:
        torch.save(original.algorithm.state_dict(), buffer)
    except Exception as error:
        raise Failure(f"the algorithm's state_dict cannot be saved in a checkpoint: "
                      f"{_describe(error)}") from None
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored = _setting(cls, kind, torch.float64, seed=1)  # other random draws at construction
    restored.network.load_state_dict(original.network.state_dict())
    try:
        restored.algorithm.load_state_dict(state)
    except Exception as error:
        raise Failure(f"load_state_dict of a saved state failed: {_describe(error)}") from None
    x, y = original.batch()
    results = []
    for setting in (original, restored):
        _seed(7)
        fwd = setting.forward(x, y, cls.record_graph)
        updates = _snapshot(_validate(setting.algorithm.forward_updates(fwd), setting))
        loss = setting.algorithm.feedback_step(fwd)
        results.append((updates, None if loss is None else float(loss)))
    (u1, l1), (u2, l2) = results
    for a, b, name in zip(u1, u2, original.names, strict=True):
        if not torch.equal(a, b):
            raise Failure(f"an algorithm restored from its state_dict proposes a different update "
                          f"({name}): keep feedback weights in nn.Parameters or buffers "
                          "(self.register_buffer) and optimisers as attributes, so checkpoints "
                          "save them")
    if l1 != l2:
        raise Failure(f"an algorithm restored from its state_dict gives a different feedback loss "
                      f"({l1!r} vs {l2!r}): its state is not all in the state_dict")
    return "restored from a saved state_dict, it proposes the same updates"


PER_ARCHITECTURE: list[tuple[str, Callable[[type[Algorithm], str], str], tuple[str, ...]]] = [
    # (check, function, checks it needs to have passed: one defect gives one FAIL, not many)
    ("step", check_step, ()),
    ("precision", check_precision, ("step",)),
    ("deterministic", check_deterministic, ("step", "precision")),
    ("feedback", check_feedback, ("step", "precision")),
    ("frozen layers", check_frozen, ("step", "precision")),
    ("checkpoint", check_checkpoint, ("deterministic",)),
]


def _run(name: str, function: Callable[[], str]) -> CheckResult:
    try:
        with _rng_preserved():
            return CheckResult(name, True, function())
    except Failure as failure:
        return CheckResult(name, False, str(failure))
    except Exception as error:  # the plugin crashed: that is a failure of this check
        return CheckResult(name, False, f"raised {_describe(error)}")


def check_algorithm(info: AlgorithmInfo | type[Algorithm],
                    report: Callable[[CheckResult], None] | None = None) -> list[CheckResult]:
    """Run every check on one algorithm; ``report`` is called with each result as it comes."""
    cls = info.cls if isinstance(info, AlgorithmInfo) else info
    results: list[CheckResult] = []

    def add(result: CheckResult) -> None:
        results.append(result)
        if report is not None:
            report(result)

    add(_run("loads", lambda: check_loads(cls)))
    if not results[0].passed:
        return results
    caps = cls.capabilities
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: threads cost more than they give
    try:
        for kind in ("mlp", "cnn"):
            if not getattr(caps, kind):
                continue
            done: dict[str, bool] = {}
            for name, function, needs in PER_ARCHITECTURE:
                if name == "feedback" and not caps.trainable_feedback:
                    continue
                label = f"{name} [{kind}]"
                failed = [f"{need} [{kind}]" for need in needs if not done.get(need, True)]
                if failed:
                    result = CheckResult(label, False, f"not run: {', '.join(failed)} did not "
                                         "pass", skipped=True)
                else:
                    result = _run(label, lambda f=function, k=kind: f(cls, k))
                done[name] = result.passed
                add(result)
    finally:
        torch.set_num_threads(threads)
    return results


@dataclass(frozen=True)
class Summary:
    passed: int
    failed: int
    skipped: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.skipped == 0

    def line(self) -> str:
        skipped = f", {self.skipped} skipped" if self.skipped else ""
        return f"{self.passed} passed, {self.failed} failed{skipped} in {self.seconds:.1f} s"


def run_checks(infos: Sequence[AlgorithmInfo], emit: Callable[[str], None]) -> Summary:
    """Check every algorithm, emitting one line per check."""
    started = time.perf_counter()
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for info in infos:
        emit(f"checking {info.name} ({info.label}) from {info.source} [{info.origin}]")
        for result in check_algorithm(info, lambda r: emit(r.line())):
            key = "skipped" if result.skipped else "passed" if result.passed else "failed"
            counts[key] += 1
    return Summary(**counts, seconds=time.perf_counter() - started)
