"""The checks that run an algorithm, once per architecture it claims. Each returns the line to
show when it passes and raises ``Failure`` with the reason when it does not. They step through
the suite's runner (``harness.Setting``; the MLP's frozen-layer check through ``train_cell``
itself), so a rule that passes them trains as it was checked.
"""

from __future__ import annotations

import copy
import io
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..execution.setup import Environment, prepare, seed_everything
from ..execution.stacked import stack_runners
from ..execution.training import train_cell
from ..model.algorithm import Algorithm
from ..model.networks import Network
from ..model.seeds import seed_streams
from .harness import (
    OPTIMIZER,
    Failure,
    Setting,
    _updates_checked,
    above_layer_1,
    describe,
    setting,
    snapshot,
    teacher_cell,
)
from .relaxation import check_relaxation

FEEDBACK_STEPS = 40  # feedback steps between the two measurements of the feedback loss
FEEDBACK_SAMPLES = 6  # noise samples (seeds) averaged per measurement


def check_step(cls: type[Algorithm], kind: str) -> str:
    checked = setting(cls, kind, torch.float32)
    before = snapshot(checked.parameters)
    steps = 3
    for _ in range(steps):
        checked.step()
    still = [name for b, a, name in zip(before, checked.parameters, checked.names, strict=True)
             if torch.equal(b, a)]
    if still:
        raise Failure(f"the forward weights did not move after {steps} steps: {', '.join(still)}")
    return (f"{steps} steps: {len(checked.parameters)} updates with the parameters' shapes and "
            "dtype, finite and non-zero; every forward parameter moved")


def check_precision(cls: type[Algorithm], kind: str) -> str:
    for dtype in (torch.float32, torch.float64):
        where = f"in {str(dtype).removeprefix('torch.')}"
        try:
            checked = setting(cls, kind, dtype)
            checked.step()
            checked.step()
        except Failure as failure:
            raise Failure(f"{where}: {failure}") from None
        except Exception as error:
            raise Failure(f"{where}: {describe(error)}") from None
        own = [name for name, t in [*checked.algorithm.named_parameters(),
                                    *checked.algorithm.named_buffers()]
               if t.is_floating_point() and t.dtype != dtype]
        if own:
            raise Failure(f"{where}: the algorithm's tensors {', '.join(own)} are not in the "
                          "network's dtype; create them with dtype=network.dtype")
    return "two steps each in float32 and float64, updates and own tensors in the network's dtype"


def check_deterministic(cls: type[Algorithm], kind: str) -> str:
    (names, first), (_, second) = (_two_steps(setting(cls, kind, torch.float64))
                                   for _ in range(2))  # one after the other: the global RNG
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


def _two_steps(checked: Setting) -> tuple[list[str], list[tuple[list[Tensor], float | None]]]:
    """The parameter names, and the updates and feedback loss of each of two steps."""
    results = [checked.step() for _ in range(2)]
    return checked.names, [(snapshot(r.proposal.updates), r.feedback_loss) for r in results]


def check_feedback(cls: type[Algorithm], kind: str) -> str:
    checked = setting(cls, kind, torch.float64)
    if not any(p.requires_grad for p in checked.algorithm.parameters()):
        raise Failure("trainable_feedback is set but the algorithm has no parameter with "
                      "requires_grad (register feedback weights as nn.Parameter)")
    x, y = checked.batch()
    seeds = range(10_000, 10_000 + FEEDBACK_SAMPLES)
    before = _mean_feedback_loss(checked, x, y, seeds)
    torch.manual_seed(0)
    trace = [_feedback_loss(checked.feedback_step(x, y)) for _ in range(FEEDBACK_STEPS)]
    after = _mean_feedback_loss(checked, x, y, seeds)
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


def _feedback_loss(loss: float | None) -> float:
    if loss is None:
        raise Failure("feedback_step returned None; with trainable feedback it must return the "
                      "feedback loss (a float)")
    return loss


def _mean_feedback_loss(checked: Setting, x: Tensor, y: Tensor, seeds: Sequence[int]
                        ) -> float | None:
    """The feedback loss at the current feedback weights, averaged over fixed noise samples:
    a feedback step of a copy of the runner (it returns the loss before its update), after
    seeding, so the measurement trains nothing. None if the runner cannot be copied."""
    losses = []
    for seed in seeds:
        try:
            clone = copy.deepcopy(checked.runner)
        except Exception:
            return None
        torch.manual_seed(seed)
        losses.append(_feedback_loss(clone.feedback_step(x, y)))
    return sum(losses) / len(losses)


def check_frozen(cls: type[Algorithm], kind: str) -> str:
    # train_cell runs the teacher task, a regression: classification-only rules take the steps.
    if kind == "mlp" and cls.capabilities.supports_task("regression"):
        before, after, how = _frozen_by_train_cell(cls)
    else:
        before, after, how = _frozen_by_steps(cls, kind)
    layers_before, feedback_before = before
    layers_after, feedback_after = after
    depth = len(layers_before)
    moved = [str(i) for i in range(2, depth + 1)
             if any(not torch.equal(b, a) for b, a in zip(layers_before[i - 1],
                                                          layers_after[i - 1], strict=True))]
    if moved:
        raise Failure(f"frozen layers moved: {', '.join(moved)} (only layer 1 was trainable)")
    if all(torch.equal(b, a) for b, a in zip(layers_before[0], layers_after[0], strict=True)):
        raise Failure("layer 1, the only trainable layer, did not move")
    detail = ""
    if cls.capabilities.trainable_feedback:
        changed = [k for k in feedback_before if k in feedback_after
                   and not torch.equal(feedback_before[k], feedback_after[k])]
        if not changed:
            raise Failure("the feedback weights did not train while the forward layers were "
                          "frozen (or they are not in the algorithm's state_dict)")
        detail = f"; feedback trained ({len(changed)} tensors changed)"
    return f"only layer 1 trainable ({how}): layers 2..{depth} unchanged, layer 1 moved{detail}"


State = tuple[list[list[Tensor]], dict[str, Tensor]]  # (each layer's parameters, algorithm's tensors)


def _state(network: Network, algorithm_state: dict[str, Any]) -> State:
    layers = [snapshot(network.layer_parameters(i)) for i in range(1, network.depth + 1)]
    return layers, {k: v.detach().clone() for k, v in algorithm_state.items()
                    if isinstance(v, Tensor)}


def _frozen_by_train_cell(cls: type[Algorithm]) -> tuple[State, State, str]:
    """One epoch of ``train_cell`` on the teacher task with layers 2..L frozen, checkpointed;
    the state before (as ``prepare`` builds it) and the state in the checkpoint."""
    cell = teacher_cell(cls, frozen_layers=above_layer_1("mlp"))
    env = Environment()
    _, network, algorithm = prepare(cell, cls, env)
    before = _state(network, algorithm.state_dict())
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "cell.ckpt"
        result = train_cell(cell, cls, env, checkpoint=checkpoint)
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if result["status"] != "ok":
        raise Failure(f"one epoch of train_cell ended with status {result['status']!r}")
    network.load_state_dict(saved["network"])
    return before, _state(network, saved["algorithm"]), \
        "train_cell, one epoch on the teacher task, checkpointed"


def _frozen_by_steps(cls: type[Algorithm], kind: str) -> tuple[State, State, str]:
    """A feedback-only step (trainable feedback) and three runner steps with layers 2..L
    frozen; the state before and after."""
    checked = setting(cls, kind, torch.float64, frozen_layers=above_layer_1(kind))
    before = _state(checked.network, checked.algorithm.state_dict())
    if cls.capabilities.trainable_feedback:
        checked.feedback_step()
    for _ in range(3):
        checked.step()
    return before, _state(checked.network, checked.algorithm.state_dict()), \
        "the runner's step, 3 steps"


CHECKPOINT_AFTER = 2  # steps before the checkpoint
CHECKPOINT_STEPS = 8  # steps in all: the restored run takes the last 6, compared step by step


def check_checkpoint(cls: type[Algorithm], kind: str) -> str:
    """A run interrupted after ``CHECKPOINT_AFTER`` steps and resumed from a checkpoint (the
    network, the forward Adam, the algorithm's ``state_dict``: what ``train_cell`` saves) into
    an algorithm built with other random draws must propose what the uninterrupted run proposes
    at every later step, and end with the same plain Python attributes (a step counter kept
    outside the state_dict differs even before it changes an update)."""
    uninterrupted = setting(cls, kind, torch.float64, seed=0)
    batches = [uninterrupted.batch() for _ in range(CHECKPOINT_STEPS)]
    expected = []
    for step, (x, y) in enumerate(batches, start=1):
        expected.append(_stepped(uninterrupted, x, y, step))
        if step == CHECKPOINT_AFTER:
            checkpoint = _checkpoint(uninterrupted)
    restored = setting(cls, kind, torch.float64, seed=1)  # other random draws at construction
    _restore(restored, checkpoint)
    where = f"after a checkpoint at step {CHECKPOINT_AFTER}"
    for step in range(CHECKPOINT_AFTER + 1, CHECKPOINT_STEPS + 1):
        (u1, l1), (u2, l2) = expected[step - 1], _stepped(restored, *batches[step - 1], step)
        for a, b, name in zip(u1, u2, uninterrupted.names, strict=True):
            if not torch.equal(a, b):
                raise Failure(f"an algorithm restored from its state_dict proposes a different "
                              f"update ({name}) at step {step} than the uninterrupted run "
                              f"({where}): keep feedback weights in nn.Parameters or buffers "
                              "(self.register_buffer) and optimisers as attributes, so "
                              f"checkpoints save them{_unsaved(uninterrupted, restored, step)}")
        if l1 != l2:
            raise Failure(f"an algorithm restored from its state_dict gives a different feedback "
                          f"loss at step {step} ({l1!r} vs {l2!r}, {where}): its state is not "
                          f"all in the state_dict{_unsaved(uninterrupted, restored, step)}")
    differ = _differing_attributes(uninterrupted.algorithm, restored.algorithm)
    if differ:
        raise Failure(f"after {CHECKPOINT_STEPS} steps the algorithm restored from its state_dict "
                      f"({where}) has other values in {_listed(differ)} than the uninterrupted "
                      f"run: Python values that change during training are not saved in "
                      f"checkpoints, so a resumed cell would go on differently; {_ADVICE}")
    return (f"resumed from a checkpoint after step {CHECKPOINT_AFTER} (network, forward Adam, "
            f"state_dict), it proposes the same updates and feedback losses as the uninterrupted "
            f"run at steps {CHECKPOINT_AFTER + 1}..{CHECKPOINT_STEPS}, and its plain attributes "
            "agree")


_ADVICE = ("keep such a value in a buffer (self.register_buffer('steps', torch.zeros((), "
           "dtype=torch.long)), updated in place) so that the state_dict holds it")


def _stepped(checked: Setting, x: Tensor, y: Tensor, step: int
             ) -> tuple[list[Tensor], float | None]:
    """One runner step on ``x, y`` after seeding with ``step``: its updates and feedback loss."""
    seed_everything(100 + step)
    result = checked.step(x, y)
    loss = result.feedback_loss
    return snapshot(result.proposal.updates), None if loss is None else float(loss)


def _checkpoint(checked: Setting) -> dict[str, Any]:
    """What ``train_cell`` checkpoints, through ``torch.save`` and ``torch.load``."""
    network = {k: v.detach().clone() for k, v in checked.network.state_dict().items()}
    return {"network": network, "algorithm": _saved_and_loaded(checked.algorithm.state_dict()),
            "optimisers": _saved_and_loaded({"forward": checked.runner.optimisers.state_dict()})}


def _restore(checked: Setting, checkpoint: dict[str, Any]) -> None:
    checked.network.load_state_dict(checkpoint["network"])
    try:
        checked.algorithm.load_state_dict(checkpoint["algorithm"])
    except Exception as error:
        raise Failure(f"load_state_dict of a saved state failed: {describe(error)}") from None
    checked.runner.optimisers.load_state_dict(checkpoint["optimisers"]["forward"])


def _unsaved(uninterrupted: Setting, restored: Setting, step: int) -> str:
    differ = _differing_attributes(uninterrupted.algorithm, restored.algorithm)
    if not differ:
        return ""
    return (f"; {_listed(differ)} differ (uninterrupted run after step {CHECKPOINT_STEPS}, "
            f"restored one after step {step}): not saved in checkpoints; {_ADVICE}")


def _listed(differ: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"`{name}` ({a!r} vs {b!r})" for name, (a, b) in differ.items())


# nn.Module's own bookkeeping, and what the base class keeps that is not the algorithm's state.
_NOT_STATE = {*vars(torch.nn.Module()), "network", "task", "params"}


def _plain_attributes(algorithm: Algorithm) -> dict[str, Any]:
    """The plain Python values (numbers, strings, and containers of them) that the algorithm
    and its submodules keep as attributes: what a state_dict never holds."""
    found = {}
    for prefix, module in algorithm.named_modules():
        for key, value in vars(module).items():
            if key not in _NOT_STATE and _is_plain(value):
                found[f"{prefix}.{key}" if prefix else key] = value
    return found


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, tuple | list):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_is_plain(k) and _is_plain(v) for k, v in value.items())
    return False


def _differing_attributes(a: Algorithm, b: Algorithm) -> dict[str, tuple[Any, Any]]:
    first, second = _plain_attributes(a), _plain_attributes(b)
    return {name: (first.get(name), second.get(name)) for name in sorted({*first, *second})
            if not _same(first.get(name), second.get(name))}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True  # NaN
    return type(a) is type(b) and a == b


def _saved_and_loaded(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` through ``torch.save`` and ``torch.load`` as a checkpoint takes it."""
    buffer = io.BytesIO()
    try:
        torch.save(state, buffer)
    except Exception as error:
        raise Failure(f"the algorithm's state_dict cannot be saved in a checkpoint: "
                      f"{describe(error)}") from None
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


VECTORISED_SEEDS = (0, 1, 2)
VECTORISED_STEPS = 4


def check_vectorised(cls: type[Algorithm], kind: str) -> str:
    """Three seeds stacked (``bench run --vectorize-seeds``) must propose, step after step, what
    each seed's serial run proposes (float64, 1e-9 relative), each seed on its own minibatches
    and drawing its noise from its own stream (its serial run draws the same numbers from the
    global generator)."""
    serial = [setting(cls, kind, torch.float64, seed=s) for s in VECTORISED_SEEDS]
    stacked = stack_runners([setting(cls, kind, torch.float64, seed=s).runner
                             for s in VECTORISED_SEEDS], OPTIMIZER)
    batches = [[one.batch() for _ in range(VECTORISED_STEPS)] for one in serial]
    streams = [torch.Generator().manual_seed(2000 + s) for s in VECTORISED_SEEDS]
    states = [g.get_state() for g in streams]
    for step in range(VECTORISED_STEPS):
        expected = []
        for s, one in enumerate(serial):
            torch.set_rng_state(states[s])
            result = one.step(*batches[s][step])
            states[s] = torch.get_rng_state()
            loss = result.feedback_loss
            expected.append((snapshot(result.proposal.updates), loss))
        x = torch.stack([batches[s][step][0] for s in range(len(serial))])
        y = torch.stack([batches[s][step][1] for s in range(len(serial))])
        with _updates_checked(), seed_streams(streams):
            proposal = stacked.step_seeds(x, y, [True] * len(serial)).proposal
        losses = proposal.feedback_loss
        for s, (updates, loss) in enumerate(expected):
            for update, together, name in zip(updates, proposal.updates, serial[s].names,
                                              strict=True):
                if not _close(update, together[s]):
                    raise Failure(f"with seeds stacked, seed {s}'s update of {name} at step "
                                  f"{step + 1} differs from its serial run's (max difference "
                                  f"{float((update - together[s]).abs().max()):.3g}); "
                                  f"{_VECTORISE_ADVICE}")
            if (loss is None) != (losses is None) or loss is not None and not _close(
                    torch.tensor(loss, dtype=torch.float64), torch.as_tensor(losses)[s].double().cpu()):
                raise Failure(f"with seeds stacked, seed {s}'s feedback loss at step {step + 1} "
                              f"is not its serial run's ({loss!r}); feedback_step must return "
                              f"one loss per seed; {_VECTORISE_ADVICE}")
    return (f"{len(serial)} seeds stacked propose, for {VECTORISED_STEPS} steps, each seed's "
            "serial updates and feedback losses (1e-9)")


_VECTORISE_ADVICE = ("write the rule over the leading seed dimension, or leave "
                     "vectorize_seeds out of its capabilities (docs/plugins.md, Vectorised seeds)")


def _close(a: Tensor, b: Tensor) -> bool:
    scale = float(a.abs().max()) if a.numel() else 0.0
    return a.shape == b.shape and torch.allclose(b, a, rtol=1e-9, atol=1e-9 * scale + 1e-15)


PER_ARCHITECTURE: list[tuple[str, Callable[[type[Algorithm], str], str], tuple[str, ...]]] = [
    # (check, function, checks it needs to have passed: one defect gives one FAIL, not many)
    ("step", check_step, ()),
    ("precision", check_precision, ("step",)),
    ("deterministic", check_deterministic, ("step", "precision")),
    ("feedback", check_feedback, ("step", "precision")),
    ("frozen layers", check_frozen, ("step", "precision")),
    ("checkpoint", check_checkpoint, ("deterministic",)),
    ("vectorised seeds", check_vectorised, ("deterministic",)),
    ("relaxation", check_relaxation, ("step",)),  # InferenceRule only (kit/relaxation.py)
]
