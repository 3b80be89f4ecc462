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

from ..model.algorithm import Algorithm
from ..model.networks import Network
from ..run.setup import Environment, prepare, seed_everything
from ..run.training import train_cell
from .harness import Failure, Setting, above_layer_1, describe, setting, snapshot, teacher_cell

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
    if kind == "mlp":
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


def check_checkpoint(cls: type[Algorithm], kind: str) -> str:
    original = setting(cls, kind, torch.float64, seed=0)
    for _ in range(2):
        original.step()
    state = _saved_and_loaded(original.algorithm.state_dict())
    restored = setting(cls, kind, torch.float64, seed=1)  # other random draws at construction
    restored.network.load_state_dict(original.network.state_dict())
    try:
        restored.algorithm.load_state_dict(state)
    except Exception as error:
        raise Failure(f"load_state_dict of a saved state failed: {describe(error)}") from None
    x, y = original.batch()
    (u1, l1), (u2, l2) = (_proposed(checked, x, y) for checked in (original, restored))
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


def _proposed(checked: Setting, x: Tensor, y: Tensor) -> tuple[list[Tensor], float | None]:
    """The runner's proposal for ``x, y`` after the same seeding, applied to nothing."""
    seed_everything(7)
    proposal = checked.propose(x, y)
    loss = proposal.feedback_loss
    return snapshot(proposal.updates), None if loss is None else float(loss)


PER_ARCHITECTURE: list[tuple[str, Callable[[type[Algorithm], str], str], tuple[str, ...]]] = [
    # (check, function, checks it needs to have passed: one defect gives one FAIL, not many)
    ("step", check_step, ()),
    ("precision", check_precision, ("step",)),
    ("deterministic", check_deterministic, ("step", "precision")),
    ("feedback", check_feedback, ("step", "precision")),
    ("frozen layers", check_frozen, ("step", "precision")),
    ("checkpoint", check_checkpoint, ("deterministic",)),
]
