"""``BackwardRule``: backprop with another tensor in place of each layer's weight in the backward
pass, and the declarative kinds of such tensors (fixed random, sign of the forward weight, random
magnitude with the forward sign, learned).

A rule overrides ``backward_weight(i, weight)``, or declares its kind with ``build_feedback``.
Per training step the runner asks ``backward_weights()`` (once, before the forward pass), runs
its usual forward pass with them (``forward_pass(..., backward_weights=...)``), recording the
graph; ``forward_updates`` is autograd's gradient of the loss through that graph. The layer's
forward pass and its weight's and bias's gradients are the ordinary ones; only the gradient
w.r.t. the layer's input uses the substitute (``model.substitute``).

The core's alignment metrics compute the BP gradient with a forward pass of their own
(``network(x)``), so a rule's angle to BP is measured against the true gradient.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..model.algorithm import Algorithm, Capabilities
from ..model.networks import ForwardPass, Network
from ..model.seeds import draw


def glorot_std(weight: Tensor) -> float:
    """The std of Glorot (Xavier) initialisation, gain 1, for a tensor of ``weight``'s shape:
    ``sqrt(2 / (fan_in + fan_out))`` (a conv kernel's receptive field counts in both fans)."""
    receptive = weight[0][0].numel() if weight.dim() > 2 else 1
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    return math.sqrt(2.0 / (fan_in + fan_out))


def like_weight(values: Tensor, weight: Tensor) -> Tensor:
    """``values`` stored in ``weight``'s memory layout (a float32 conv weight is channels-last),
    so that a kept feedback tensor is never converted again in the backward pass."""
    return torch.empty_like(weight).copy_(values)


def glorot_normal_like(weight: Tensor) -> Tensor:
    """Glorot-normal values of ``weight``'s shape, dtype, device and layout, drawn from the
    global RNG (in the standard layout's order, so the values do not depend on the layout)."""
    values = torch.randn(weight.shape, dtype=weight.dtype, device=weight.device)
    return like_weight(values.mul_(glorot_std(weight)), weight)


def glorot_uniform_magnitude(weight: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``|M|`` for ``M`` Glorot-uniform (``U(−a, a)``, ``a = sqrt(3)·glorot_std``) of ``weight``'s
    shape, dtype and device (standard layout): ``U(0, a)``, drawn from the global RNG with 16
    random bits a value (the midpoints of 2¹⁶ equal bins of ``[0, a)``). brSF draws a value for
    every weight every step: four values from each 64 random bits cost a fraction of
    ``torch.rand``'s one per value, which would add a noticeable share to a BP step of the MNIST
    MLP (``benchmarks/design_choices.py`` prints both). ``generator``: draw from it instead (one
    seed's stream, ``seeds.draw``)."""
    count = weight.numel()
    bits = torch.empty((count + 3) // 4, dtype=torch.int64, device=weight.device)
    bits.random_(-2 ** 63, None, generator=generator)  # the full 64 bits
    levels = bits.view(torch.int16)[:count].view(weight.shape).to(weight.dtype)  # −2¹⁵ … 2¹⁵−1
    bound = math.sqrt(3.0) * glorot_std(weight)
    return levels.add_(32768.5).mul_(bound / 65536)


class BackwardMatrices(nn.Module):
    """A declarative kind of backward weight: ``weight(i, W_i)`` is the tensor layer ``i``
    (2..L) uses in place of ``W_i``. Its tensors are buffers or parameters of this module, built
    from the network in the constructor (the network itself is not kept)."""

    def weight(self, i: int, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def _layer_weights(self, network: Network) -> dict[int, Tensor]:
        return {i: network.layer_parameters(i)[0] for i in range(2, network.depth + 1)}


class FixedRandom(BackwardMatrices):
    """Feedback alignment: a fixed random ``B_i``, Glorot-normal times ``scale``, drawn once
    (buffers ``B2 … BL``, saved in checkpoints)."""

    def __init__(self, network: Network, scale: float = 1.0):
        super().__init__()
        for i, weight in self._layer_weights(network).items():
            self.register_buffer(f"B{i}", scale * glorot_normal_like(weight))

    def weight(self, i: int, weight: Tensor) -> Tensor:
        return getattr(self, f"B{i}")


class SignOfForward(BackwardMatrices):
    """Uniform sign-concordant feedback: ``B_i = c_i sign(W_i)`` with the current forward weight;
    ``c_i`` is the Glorot std of the layer when ``scaled`` (as BioTorch does, so that the
    backward pass keeps the scale of the initialisation), else 1."""

    def __init__(self, network: Network, scaled: bool = True):
        super().__init__()
        self.scales = {i: glorot_std(w) if scaled else 1.0
                       for i, w in self._layer_weights(network).items()}

    def weight(self, i: int, weight: Tensor) -> Tensor:
        return torch.sign(weight).mul_(self.scales[i])


class RandomMagnitudeSign(BackwardMatrices):
    """Sign-concordant feedback with random magnitudes: ``B_i = |M_i| ⊙ sign(W_i)``, ``M_i``
    Glorot-uniform. ``redraw=True``: a new ``M_i`` every training step (batch-wise, brSF);
    ``False``: ``|M_i|`` drawn once and fixed (buffers ``M2 … ML``, frSF)."""

    def __init__(self, network: Network, redraw: bool):
        super().__init__()
        self.redraw = redraw
        if not redraw:
            for i, weight in self._layer_weights(network).items():
                self.register_buffer(f"M{i}", like_weight(glorot_uniform_magnitude(weight), weight))

    def magnitude(self, i: int, weight: Tensor) -> Tensor:
        if self.redraw:  # each seed its own draw when seeds are stacked
            return draw(glorot_uniform_magnitude, weight)
        return getattr(self, f"M{i}")

    def weight(self, i: int, weight: Tensor) -> Tensor:
        # sign(W) has W's layout, and the product keeps it: a redrawn magnitude is not converted.
        return torch.sign(weight).mul_(self.magnitude(i, weight))


class Learned(BackwardMatrices):
    """Trainable backward weights ``B_i`` (parameters ``B2 … BL``), Glorot-normal at the start;
    the rule's ``feedback_step`` trains them (Kolen-Pollack)."""

    def __init__(self, network: Network, scale: float = 1.0):
        super().__init__()
        for i, weight in self._layer_weights(network).items():
            self.register_parameter(f"B{i}", nn.Parameter(scale * glorot_normal_like(weight)))

    def weight(self, i: int, weight: Tensor) -> Tensor:
        return getattr(self, f"B{i}")


class BackwardRule(Algorithm):
    """Backprop with ``backward_weight(i, W_i)`` in place of ``W_i`` in the backward pass of every
    layer i = 2..L (dense and conv alike): the gradient w.r.t. layer i's input is computed with
    it, the gradients w.r.t. the weights and biases are the usual ones (``δ_i h_{i−1}ᵀ``,
    ``Σ δ_i``). ``forward_updates`` is that gradient of the batch-mean loss.

    A subclass either overrides ``backward_weight`` (same shape, dtype and device as ``weight``,
    the layer's current forward weight; None: the weight itself, i.e. backprop at that layer),
    or returns one of the declarative kinds from ``build_feedback`` (``FixedRandom``,
    ``SignOfForward``, ``RandomMagnitudeSign``, ``Learned``; kept as ``self.feedback``, so its
    tensors are in the state_dict). ``backward_weight`` is called for every layer once per
    training step, under ``torch.no_grad``; random draws there go through ``api.draw`` (each
    seed its own stream when seeds are stacked)."""

    record_graph = True
    capabilities = Capabilities(mlp=True, cnn=True)

    def __init__(self, network: Network, task, params):
        super().__init__(network, task, params)
        self.feedback = self.build_feedback()

    def build_feedback(self) -> BackwardMatrices | None:
        """The declarative kind of backward weight, or None when ``backward_weight`` is
        overridden. Called once, at the end of the base constructor."""
        return None

    def backward_weight(self, i: int, weight: Tensor) -> Tensor | None:
        """The tensor layer ``i`` (2..L) uses in place of its forward weight ``weight`` in the
        backward pass of this training step."""
        if self.feedback is None:
            raise NotImplementedError(f"{type(self).__name__} must override backward_weight(i, "
                                      "weight) or return a kind from build_feedback()")
        return self.feedback.weight(i, weight)

    def backward_weights(self) -> list[Tensor | None]:
        weights: list[Tensor | None] = [None, None]
        with torch.no_grad():
            for i in range(2, self.network.depth + 1):
                weight = self.network.layer_parameters(i)[0]
                substitute = self.backward_weight(i, weight)
                if substitute is not None and (substitute.shape != weight.shape
                                               or substitute.dtype != weight.dtype
                                               or substitute.device != weight.device):
                    raise ValueError(
                        f"{type(self).__name__}.backward_weight({i}, weight) returned a tensor of "
                        f"shape {tuple(substitute.shape)}, {substitute.dtype} on "
                        f"{substitute.device}; expected the weight's: {tuple(weight.shape)}, "
                        f"{weight.dtype} on {weight.device}")
                weights.append(substitute)
        return weights

    def forward_updates(self, fwd: ForwardPass) -> list[Tensor]:
        # One loss per seed when seeds are stacked: their sum's gradient is each seed's own.
        return list(torch.autograd.grad(fwd.loss.sum(), list(self.network.parameters())))
