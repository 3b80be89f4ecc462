"""Building blocks of the target-propagation family (algorithms.md §4.2–§4.8).

A method is a *feedback path* (the maps g_1..g_{L-1} that carry targets down) and a *feedback
loss* (how those maps are trained):

- paths: ``LayerwisePath`` (g_i from layer i+1, DTP), ``DirectPath`` (g_i from the output, linear
  or tanh: DDTP-linear, DDTP-control, DFA when frozen), ``RandomHiddenLayerPath`` (g_i from the
  output through a fixed random tanh layer: DDTP-RHL);
- losses: ``ReconstructionLoss`` (DTP's, clipped 1/σ²; DDTP-control's, unscaled) and
  ``DifferenceReconstructionLoss`` (DRL, Eq. 10, 1/σ²).

Every path computes difference-corrected targets the same way, ``ĥ_i = g_i(ĥ_s) + h_i − g_i(h_s)``
with ``s = source(i)`` (i+1 for a layer-wise path, L for a direct one), top-down from ``ĥ_L = ŷ``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch
from torch import Tensor, nn

from ..model.networks import ForwardPass, Network
from ..model.seeds import linear, mse_per_seed, randn_like


class FeedbackMap(nn.Module):
    """``g(v) = s(Q v + c)``, reshaped to the target layer's activation shape. ``Q`` is
    Glorot-normal and ``c`` zero (algorithms.md §1)."""

    def __init__(self, n_in: int, out_shape: Sequence[int], activation: str = "linear",
                 bias: bool = True, dtype=None, device=None):
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.linear = nn.Linear(n_in, math.prod(self.out_shape), bias=bias, dtype=dtype,
                                device=device)
        nn.init.xavier_normal_(self.linear.weight)
        if bias:
            nn.init.zeros_(self.linear.bias)
        self.activation = activation

    def forward(self, v: Tensor) -> Tensor:
        lead = self.linear.weight.dim() - 2  # 1 with stacked seeds' maps
        out = linear(v.flatten(lead + 1), self.linear.weight, self.linear.bias)
        if self.activation == "tanh":
            out = torch.tanh(out)
        return out.view(*out.shape[:lead + 1], *self.out_shape)


def _reference(per_layer: Sequence[Tensor | None], i: int) -> Tensor:
    """Hidden layer ``i``'s entry of a list of ``g_i`` values: only index 0 (no map) is None."""
    return cast(Tensor, per_layer[i])


def _difference_corrected(reached: Tensor, h: Tensor, reference: Tensor) -> Tensor:
    """``g_i(ĥ_s) + h_i − g_i(h_s)`` from ``reached = g_i(ĥ_s)`` and ``reference = g_i(h_s)``."""
    return reached + h - reference


PathT = TypeVar("PathT", bound="FeedbackPath")


class FeedbackPath(nn.Module):
    """The feedback maps ``g_1..g_{L-1}``; ``maps[i - 1]`` is ``g_i``."""

    maps: nn.ModuleList
    network: Network  # set with object.__setattr__ below

    def __init__(self, network: Network):
        super().__init__()
        object.__setattr__(self, "network", network)  # the runner's, not a submodule
        self._kept: tuple[ForwardPass, list[Tensor | None], list[int]] | None = None

    @property
    def depth(self) -> int:
        return self.network.depth

    def source(self, i: int) -> int:
        """The layer whose activation ``g_i`` reads."""
        raise NotImplementedError

    def g(self, i: int, v: Tensor) -> Tensor:
        return self.maps[i - 1](v)

    def map_parameters(self, i: int) -> list[nn.Parameter]:
        return list(self.maps[i - 1].parameters())

    def freeze(self: PathT) -> PathT:
        """Fixed random feedback (DFA): nothing is trained."""
        self.requires_grad_(False)
        return self

    def references(self, fwd: ForwardPass) -> list[Tensor | None]:
        """``g_i(h_s)``, ``s = source(i)``, of every hidden layer (index 0 unused), with the
        autograd graph to the maps' parameters."""
        with torch.enable_grad():
            return [None, *(self.g(i, fwd.h[self.source(i)]) for i in range(1, self.depth))]

    def __getstate__(self) -> dict:
        """Copies and pickles leave the kept references (one minibatch's graph) behind."""
        return {**self.__dict__, "_kept": None}

    def _versions(self) -> list[int]:
        return [p._version for p in self.parameters()]

    def _references_for_targets(self, fwd: ForwardPass) -> list[Tensor | None]:
        """The references, kept for the feedback loss of the same minibatch, which needs the
        very same values (same activations, feedback weights from before its step)."""
        references = self.references(fwd)
        self._kept = (fwd, references, self._versions())
        return references

    def take_references(self, fwd: ForwardPass) -> list[Tensor | None]:
        """The references of ``fwd`` for a feedback loss: those the targets of ``fwd`` computed,
        if the weights have not moved since (once: their graph is freed by the backward pass),
        else freshly computed."""
        kept, self._kept = self._kept, None
        if kept is not None and kept[0] is fwd and kept[2] == self._versions():
            return kept[1]
        return self.references(fwd)

    def correct(self, i: int, target_source: Tensor, fwd: ForwardPass, reference: Tensor
                ) -> Tensor:
        """The difference-corrected target of layer ``i`` given its source's target and the
        reference ``g_i(h_s)``: ``g_i(ĥ_s) + h_i − g_i(h_s)``."""
        return _difference_corrected(self.g(i, target_source), fwd.h[i], reference)

    def targets(self, fwd: ForwardPass, output_target: Tensor) -> list[Tensor | None]:
        """Targets of every layer, indexed 0..L (index 0 unused), top-down from the output."""
        references = self._references_for_targets(fwd)
        targets: list[Tensor | None] = [None] * (self.depth + 1)
        targets[self.depth] = output_target
        with torch.no_grad():
            for i in range(self.depth - 1, 0, -1):  # a source's target is set before its layer's
                targets[i] = self.correct(i, cast(Tensor, targets[self.source(i)]), fwd,
                                          _reference(references, i).detach())
        return targets

    def reconstruct(self, i: int, output: Tensor, fwd: ForwardPass,
                    references: Sequence[Tensor | None]) -> Tensor:
        """Carry ``output`` (a value in the output space) down to layer ``i`` through every
        difference-corrected map on the way, with the real activations of ``fwd``; only
        ``g_i`` itself is differentiated (algorithms.md §4.5 steps 3–4)."""
        chain = [i]
        while chain[-1] != self.depth:
            chain.append(self.source(chain[-1]))
        values = {self.depth: output}
        with torch.no_grad():
            for k in reversed(chain[1:-1]):
                values[k] = self.correct(k, values[self.source(k)], fwd,
                                         _reference(references, k).detach())
        return self.correct(i, values[self.source(i)], fwd, _reference(references, i))


class LayerwisePath(FeedbackPath):
    """``g_i(v) = s(Q_{i+1} v + c_{i+1})`` from layer i+1 (DTP's, tanh; algorithms.md §4.3)."""

    def __init__(self, network: Network, activation: str = "tanh"):
        super().__init__(network)
        factory: dict[str, Any] = {"dtype": network.dtype, "device": network.device}
        self.maps = nn.ModuleList(
            FeedbackMap(math.prod(network.activation_shape(i + 1)), network.activation_shape(i),
                        activation, **factory)
            for i in range(1, network.depth))

    def source(self, i: int) -> int:
        return i + 1


class DirectPath(FeedbackPath):
    """``g_i(v) = s(Q_i v + c_i)`` straight from the output (DDTP-linear, DDTP-control, DFA;
    algorithms.md §4.6, §4.8). ``no_bias`` lists the layers whose map has no bias."""

    def __init__(self, network: Network, activation: str = "linear",
                 no_bias: Collection[int] = ()):
        super().__init__(network)
        factory: dict[str, Any] = {"dtype": network.dtype, "device": network.device}
        self.maps = nn.ModuleList(
            FeedbackMap(network.n_outputs, network.activation_shape(i), activation,
                        bias=i not in no_bias, **factory)
            for i in range(1, network.depth))

    def source(self, i: int) -> int:
        return self.depth

    def g_each(self, v: Tensor) -> list[Tensor | None]:
        """``[None, g_1(v), …, g_{L-1}(v)]``: every map applied to one output-space value."""
        return [None, *(self.g(i, v) for i in range(1, self.depth))]

    def references(self, fwd: ForwardPass) -> list[Tensor | None]:
        with torch.enable_grad():
            return self.g_each(fwd.output)

    def targets(self, fwd: ForwardPass, output_target: Tensor) -> list[Tensor | None]:
        """As ``FeedbackPath.targets``; every layer reads the same ``ŷ``, so the maps are
        applied to it together."""
        references = self._references_for_targets(fwd)
        with torch.no_grad():
            reached = self.g_each(output_target)
            return [None, *(_difference_corrected(_reference(reached, i), fwd.h[i],
                                                  _reference(references, i).detach())
                            for i in range(1, self.depth)), output_target]


class RandomHiddenLayerPath(DirectPath):
    """DDTP-RHL (algorithms.md §4.7): ``g_i(v) = tanh(Q_i r(v) + c_i)`` with a fixed random expansion
    ``r(v) = tanh(R v + ρ)`` of width ``width`` (PyTorch's default ``nn.Linear`` init, never
    trained); the last hidden layer bypasses ``r``: ``g_{L-1}(v) = tanh(Q_{L-1} v + c_{L-1})``."""

    R: Tensor  # buffers, registered in __init__
    rho: Tensor

    def __init__(self, network: Network, width: int):
        FeedbackPath.__init__(self, network)
        factory: dict[str, Any] = {"dtype": network.dtype, "device": network.device}
        random_layer = nn.Linear(network.n_outputs, width, **factory)  # U(±1/sqrt(fan_in))
        self.register_buffer("R", random_layer.weight.detach().clone())
        self.register_buffer("rho", random_layer.bias.detach().clone())
        last = network.depth - 1
        self.maps = nn.ModuleList(
            FeedbackMap(network.n_outputs if i == last else width, network.activation_shape(i),
                        "tanh", **factory)
            for i in range(1, network.depth))

    def expand(self, v: Tensor) -> Tensor:
        """``r(v) = tanh(R v + ρ)``."""
        return torch.tanh(linear(v, self.R, self.rho))

    def g(self, i: int, v: Tensor) -> Tensor:
        return self.maps[i - 1](self.expand(v) if i < self.depth - 1 else v)

    def g_each(self, v: Tensor) -> list[Tensor | None]:
        expanded = self.expand(v)  # once for all layers: 1024 or 2048 wide, the dearest part
        return [None, *(self.maps[i - 1](expanded if i < self.depth - 1 else v)
                        for i in range(1, self.depth))]


def _perturb_and_propagate(path: FeedbackPath, fwd: ForwardPass, sigma: float,
                           layers: Sequence[int] | None, stop: Callable[[int], int]
                           ) -> tuple[list[int], list[Tensor], list[Tensor]]:
    """The hidden ``layers`` (default: all), their noisy activations ``h̃_i = h_i + σ ε`` (a
    fresh sample each, layer by layer) and those carried up to layer ``stop(i)`` by the forward
    layers, without a graph and stacked per forward layer."""
    layers = list(layers) if layers is not None else list(range(1, path.depth))
    noisy = [randn_like(fwd.h[i]).mul_(sigma).add_(fwd.h[i]) for i in layers]
    with torch.no_grad():
        reached = path.network.propagate_many(noisy, layers, [stop(i) for i in layers])
    return layers, noisy, reached


class _EveryLayerLoss:
    """A feedback loss whose ``layers`` computes all hidden layers' losses at once; calling it
    for one layer computes just that one."""

    def __call__(self, path: FeedbackPath, i: int, fwd: ForwardPass, sigma: float) -> Tensor:
        return self.layers(path, fwd, sigma, [i])[0]

    def layers(self, path: FeedbackPath, fwd: ForwardPass, sigma: float,
               layers: Sequence[int] | None = None) -> list[Tensor]:
        """``ℒ_i`` of every layer of ``layers`` (default: all hidden layers), in that order."""
        raise NotImplementedError


@dataclass(frozen=True)
class ReconstructionLoss(_EveryLayerLoss):
    """``ℒ_i = scale · mean_{b,units}(g_i(f_{i→s}(h̃_i)) − h̃_i)²`` with ``s = source(i)``: DTP's
    loss on a layer-wise path with ``scale = 1/max(σ, clip)²`` (algorithms.md §4.3), DDTP-control's on a
    direct path with no scale (``scaled=False``, algorithms.md §4.8)."""

    scaled: bool = True
    clip: float = 0.02

    def layers(self, path: FeedbackPath, fwd: ForwardPass, sigma: float,
               layers: Sequence[int] | None = None) -> list[Tensor]:
        layers, noisy, reached = _perturb_and_propagate(path, fwd, sigma, layers, path.source)
        divisor = max(sigma, self.clip) ** 2 if self.scaled else 1.0
        seeds = path.network.seeds
        return [mse_per_seed(path.g(i, r), n, seeds) / divisor
                for i, r, n in zip(layers, reached, noisy, strict=True)]


@dataclass(frozen=True)
class DifferenceReconstructionLoss(_EveryLayerLoss):
    """The difference reconstruction loss (DRL, Eq. 10; algorithms.md §4.5–§4.7): propagate
    ``h̃_i`` to the output, carry it back down through the difference-corrected maps, and
    ``ℒ_i = (1/σ²) · mean_{b,units}(r_i − h̃_i)²``."""

    def layers(self, path: FeedbackPath, fwd: ForwardPass, sigma: float,
               layers: Sequence[int] | None = None) -> list[Tensor]:
        layers, noisy, outputs = _perturb_and_propagate(path, fwd, sigma, layers,
                                                        lambda i: path.depth)
        references = path.take_references(fwd)
        seeds = path.network.seeds
        return [mse_per_seed(path.reconstruct(i, output, fwd, references), n, seeds) / sigma ** 2
                for i, output, n in zip(layers, outputs, noisy, strict=True)]


FeedbackLoss = ReconstructionLoss | DifferenceReconstructionLoss
