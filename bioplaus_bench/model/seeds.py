"""Several seeds of one cell as one computation (``bench run --vectorize-seeds``).

A *stacked* module is an ordinary module (a ``Network``, an ``Algorithm``) whose every parameter
and buffer carries a leading seed dimension ``S``: the same classes, the same code. Activations
are then ``[S, B, …]``, the batch-mean loss is ``[S]`` (one per seed), and the layers' products
become batched products. Code written over the leading dimensions (``x.mT``, ``sum(-2)``,
``linear``, ``mean_per_seed``) runs unchanged on one seed and on a stack; Adam is elementwise, so
one Adam over stacked parameters is every seed's own Adam.

Randomness: each seed draws from its own generator, which continues exactly the stream the
serial run of that seed draws from the global generator (``draw``): same data order, same noise,
so a vectorised seed matches its serial run to rounding.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The per-seed generators of the stacked computation running now (None: a serial run).
_GENERATORS: ContextVar[Sequence[torch.Generator] | None] = ContextVar("seed_generators",
                                                                       default=None)


@contextlib.contextmanager
def seed_streams(generators: Sequence[torch.Generator]) -> Iterator[None]:
    """Within this block ``draw`` gives seed ``s`` its draws from ``generators[s]``."""
    token = _GENERATORS.set(tuple(generators))
    try:
        yield
    finally:
        _GENERATORS.reset(token)


def draw(make: Callable[[Tensor, torch.Generator | None], Tensor], like: Tensor) -> Tensor:
    """Random values for ``like``, one seed's worth at a time: ``make(like, None)`` in a serial
    run (the global generator), ``stack(make(like[s], generator_s))`` in a stacked one. ``make``
    draws for one seed with the generator it is given, e.g.
    ``lambda t, g: torch.randn(t.shape, generator=g, dtype=t.dtype, device=t.device)``."""
    generators = _GENERATORS.get()
    if generators is None:
        return make(like, None)
    if like.shape[0] != len(generators):
        raise ValueError(f"a stacked draw needs a leading seed dimension of {len(generators)}, "
                         f"got shape {tuple(like.shape)}")
    return torch.stack(_each_seed(make, like, generators))


def randn_like(like: Tensor) -> Tensor:
    """Standard normal values shaped like ``like``, each seed from its own stream (the values
    ``draw`` gives, drawn in place); in a serial run exactly ``torch.randn_like(like)``."""
    generators = _GENERATORS.get()
    if generators is None:
        return torch.randn_like(like)
    values = torch.empty(like.shape, dtype=like.dtype, device=like.device)
    # normal_ draws what torch.randn(shape, generator=…) draws
    _each_seed(lambda part, generator: part.normal_(generator=generator), values, generators)
    return values


def _each_seed(function: Callable[[Tensor, torch.Generator], Tensor], stacked: Tensor,
               generators: Sequence[torch.Generator]) -> list[Tensor]:
    """``function(stacked[s], generators[s])`` for every seed, each from its own generator."""
    return [function(part, generator) for part, generator in zip(stacked, generators,
                                                                 strict=True)]


def stacked_seeds(weight: Tensor, dims: int) -> int | None:
    """The number of seeds stacked in ``weight`` (a tensor of ``dims`` dimensions per seed), or
    None when it holds one seed's."""
    return weight.shape[0] if weight.dim() == dims + 1 else None


def linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x Wᵀ + b`` on ``[B, in]`` with one seed's weight (``F.linear``), or on ``[S, B, in]``
    with stacked weights ``[S, out, in]`` (one batched product)."""
    if weight.dim() == 2:
        return F.linear(x, weight, bias)
    return _StackedLinear.apply(x, weight, bias)


class _StackedLinear(torch.autograd.Function):
    """Stacked seeds' ``x Wᵀ + b``, whose weight gradient ``δᵀ x`` comes out in the weight's
    layout (autograd through ``bmm(x, W.mT)`` gives it transposed, which the optimiser would
    copy every step)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        if bias is None:
            return torch.bmm(x, weight.mT)
        return torch.baddbmm(bias.unsqueeze(-2), x, weight.mT)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        return (grad @ weight if needs[0] else None, grad.mT @ x if needs[1] else None,
                grad.sum(-2) if ctx.has_bias and needs[2] else None)


def mean_per_seed(values: Tensor, seeds: int | None) -> Tensor:
    """The mean of ``values`` (a scalar), or of each seed's part ``values[s]`` (``[S]``)."""
    return values.mean() if seeds is None else values.reshape(seeds, -1).mean(1)


def mse_per_seed(a: Tensor, b: Tensor, seeds: int | None) -> Tensor:
    """``F.mse_loss(a, b)`` (the element mean), per seed when ``seeds`` are stacked."""
    if seeds is None:
        return F.mse_loss(a, b)
    return mean_per_seed(F.mse_loss(a, b, reduction="none"), seeds)


def sum_per_seed(values: Tensor, seeds: int | None) -> Tensor:
    return values.sum() if seeds is None else values.reshape(seeds, -1).sum(1)


# --- stacking modules and their states -------------------------------------------------------

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def stack_modules(modules: Sequence[ModuleT], memo: dict[int, Any] | None = None) -> ModuleT:
    """One module holding ``modules`` (the same structure, one per seed) stacked: a copy of the
    first whose every parameter and buffer is the stack of theirs. Parameters keep their
    identity in the copy (``.data`` is replaced), so optimisers and lists that refer to them
    stay valid. ``memo`` maps objects the copy must not duplicate (``id(x)``: replacement), as
    ``copy.deepcopy`` does: an algorithm's network is the stacked network, not a copy."""
    stacked = copy.deepcopy(modules[0], memo)
    named = [dict(m.named_parameters(remove_duplicate=False)) for m in modules]
    for name, parameter in stacked.named_parameters(remove_duplicate=False):
        if parameter.dim() == named[0][name].dim():  # a shared parameter is stacked once
            parameter.data = torch.stack([n[name].detach() for n in named])
    buffers = [dict(m.named_buffers(remove_duplicate=False)) for m in modules]
    for name in buffers[0]:
        owner, _, attribute = name.rpartition(".")
        stacked.get_submodule(owner)._buffers[attribute] = torch.stack([b[name] for b in buffers])
    return stacked


def seed_part(value: Any, seed: int) -> Any:
    """Seed ``seed``'s part of a stacked state (a state_dict, an optimiser's state, nested
    lists and dicts): every tensor with dimensions is sliced; a scalar tensor (an optimiser's
    step count) is every seed's."""
    if isinstance(value, Tensor):
        return value[seed].clone() if value.dim() else value.clone()
    if isinstance(value, dict):
        return {key: seed_part(item, seed) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(seed_part(item, seed) for item in value)
    return value


def stack_optimiser_states(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The state of one optimiser over stacked parameters from one optimiser per seed (the
    inverse of ``seed_part``): moments stacked, step counts shared (they must agree)."""
    first = states[0]
    stacked: dict[str, Any] = {"param_groups": first["param_groups"], "state": {}}
    for key, per_parameter in first["state"].items():
        entry = {}
        for name, value in per_parameter.items():
            values = [state["state"][key][name] for state in states]
            if isinstance(value, Tensor) and value.dim():
                entry[name] = torch.stack(values)
            elif all(_equal(v, value) for v in values):
                entry[name] = value
            else:
                raise ValueError(f"the seeds' optimiser states differ in '{name}'; they cannot "
                                 "be stacked")
        stacked["state"][key] = entry
    return stacked


def _equal(a: Any, b: Any) -> bool:
    return bool(torch.equal(a, b)) if isinstance(a, Tensor) else a == b
