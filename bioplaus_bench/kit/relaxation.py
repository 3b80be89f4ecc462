"""The conformance check of rules with an inference phase (``InferenceRule``): on the tiny
network, every relaxation phase the rule runs (``relaxation_phases``) must lower its energy
from the start of the relaxation to its end, and its steps must shrink (the last step moves the
state less than the first): a relaxation that diverges, oscillates or goes uphill fails."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..model.algorithm import Algorithm
from ..model.inference import InferenceRule
from ..model.networks import forward_pass
from .harness import Failure, setting


def check_relaxation(cls: type[Algorithm], kind: str) -> str:
    checked = setting(cls, kind, torch.float64)
    rule = checked.algorithm
    if not isinstance(rule, InferenceRule):
        raise Failure(f"{cls.__name__} is not an InferenceRule")
    x, y = checked.batch()
    fwd = forward_pass(checked.network, rule.task, x, y)
    phases = list(rule.relaxation_phases())
    if not phases:
        raise Failure("relaxation_phases() is empty: name the (beta, steps) of every phase "
                      "forward_updates relaxes")
    found = []
    with torch.no_grad():
        for beta, steps in phases:
            if not isinstance(steps, int) or steps < 1:
                raise Failure(f"phase beta={beta}: steps must be a positive int, got {steps!r}")
            found.append(_one_phase(rule, fwd, float(beta), steps))
    return "; ".join(found)


def _one_phase(rule: InferenceRule, fwd, beta: float, steps: int) -> str:
    where = f"phase beta={beta:g}"
    state = rule.initial_state(fwd)
    start = _energy(rule, fwd, state, beta, where, 0)
    changes = []
    for step in range(1, steps + 1):
        following = rule.relax_step(fwd, state, beta)
        changes.append(_distance(state, following))
        if not math.isfinite(changes[-1]):
            raise Failure(f"{where}: step {step} gave a non-finite state")
        state = following
    end = _energy(rule, fwd, state, beta, where, steps)
    if not end < start:
        raise Failure(f"{where}: the energy did not go down over {steps} inference steps "
                      f"({start:.6g} → {end:.6g})")
    if steps > 1 and not changes[-1] < changes[0]:
        raise Failure(f"{where}: the inference steps did not shrink (state change "
                      f"{changes[0]:.3g} at step 1, {changes[-1]:.3g} at step {steps})")
    return (f"{where}: energy {start:.4g} → {end:.4g} in {steps} steps, step size "
            f"{changes[0]:.2g} → {changes[-1]:.2g}")


def _energy(rule: InferenceRule, fwd, state: Sequence[Tensor], beta: float, where: str,
            step: int) -> float:
    value = rule.energy(fwd, state, beta)
    if not isinstance(value, Tensor) or value.numel() != 1:
        raise Failure(f"{where}: energy() must return a scalar tensor for one seed, got "
                      f"{type(value).__name__}{tuple(getattr(value, 'shape', ()))}")
    scalar = float(value)
    if not math.isfinite(scalar):
        raise Failure(f"{where}: the energy after {step} steps is {scalar}")
    return scalar


def _distance(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    if len(a) != len(b):
        raise Failure(f"relax_step returned {len(b)} state tensors for {len(a)}")
    return math.sqrt(sum(float((u - v).square().sum()) for u, v in zip(a, b, strict=True)))
