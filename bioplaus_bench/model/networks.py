"""Forward architectures built from a spec: the tanh MLP and the small CNN (algorithms.md §1, §4.10).

Layers are numbered 1..L as in the spec; layer L is the linear output layer. A forward pass returns
every layer's pre-activation ``a[i]`` and activation ``h[i]`` (``h[0]`` is the input) instead of
storing them on the layers, so passes are re-entrant: evaluation never overwrites training state.
For a conv layer the "activation" is the pooled output, the thing that receives targets and noise.

A network of several seeds stacked (``model.seeds``) has a leading seed dimension on every
parameter and every activation; its layers then run batched products (``Dense``) and grouped
convolutions (``ConvBlock``), one group per seed.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..spec.architecture import Activation, ArchitectureSpec
from .seeds import linear, mse_per_seed, stacked_seeds
from .substitute import substitute_conv2d, substitute_linear


@dataclass(frozen=True)
class LayerGraph:
    """A layer's activation with the autograd graph of that layer alone (its input detached),
    kept from the forward pass so that the layer's local update needs no second pass through it.
    Valid while the layer's parameters are unchanged."""

    h: Tensor
    versions: tuple[int, ...]

    def valid_for(self, layer: nn.Module) -> bool:
        return self.versions == tuple(p._version for p in layer.parameters())


@dataclass
class ForwardPass:
    """One minibatch through the network. Index ``i`` is layer ``i`` everywhere:
    ``h[0] = a[0] = x``, ``a[i]`` the pre-activation, ``h[i]`` the activation, ``h[L]`` the logits."""

    x: Tensor
    y: Tensor
    a: list[Tensor]
    h: list[Tensor]
    # batch-mean task loss (one per seed when seeds are stacked), with an autograd graph only
    # when one was recorded
    loss: Tensor
    # Conv layers' graphs, kept by a pass that records none otherwise (see ``LayerGraph``).
    layer_graphs: dict[int, LayerGraph] = field(default_factory=dict)

    @property
    def output(self) -> Tensor:
        return self.h[-1]

    @property
    def batch_size(self) -> int:
        return self.h[-1].shape[-2]  # the output is [B, n] (one seed) or [S, B, n]

    def seed(self, s: int) -> ForwardPass:
        """Seed ``s``'s pass, out of a stacked one (its layers' graphs are not kept)."""
        return ForwardPass(x=self.x[s], y=self.y[s], a=[t[s] for t in self.a],
                           h=[t[s] for t in self.h], loss=self.loss[s])


def _activate(kind: Activation, a: Tensor) -> Tensor:
    if kind == "tanh":
        return torch.tanh(a)
    if kind == "relu":
        return torch.relu(a)
    return a


def _activation_derivative(kind: Activation, a: Tensor, h: Tensor) -> Tensor:
    if kind == "tanh":
        return 1.0 - h * h
    if kind == "relu":
        return (a > 0).to(a.dtype)
    return torch.ones_like(a)


class Dense(nn.Module):
    """A fully connected layer ``h = s(W h_prev + b)``; flattens a conv input."""

    linear: nn.Linear  # declared: nn.Module's attribute lookup would type it Tensor | Module

    def __init__(self, n_in: int, n_out: int, activation: Activation, bias: bool = True,
                 **factory):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out, bias=bias, **factory)
        self.activation = activation

    def forward(self, h_prev: Tensor, backward_weight: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
        """``backward_weight``: used in place of the weight for the input's gradient in the
        backward pass (a backward-pass rule, ``api.BackwardRule``); None: backprop."""
        h_prev = self.flat_input(h_prev)
        if backward_weight is None:
            a = linear(h_prev, self.linear.weight, self.linear.bias)
        else:
            a = substitute_linear(h_prev, self.linear.weight, self.linear.bias, backward_weight)
        return a, _activate(self.activation, a)

    def flat_input(self, h_prev: Tensor) -> Tensor:
        """The input as ``[B, in]``, or ``[S, B, in]`` when seeds are stacked."""
        return h_prev.flatten(2 if self.linear.weight.dim() == 3 else 1)

    def activation_derivative(self, a: Tensor, h: Tensor) -> Tensor:
        return _activation_derivative(self.activation, a, h)

    def local_gradients(self, h_prev: Tensor, a: Tensor, h: Tensor, target: Tensor,
                        graph: LayerGraph | None = None) -> list[Tensor]:
        """Gradient of ``(1/B) Σ_b ‖h − ĥ‖²`` w.r.t. this layer's parameters (algorithms.md §3):
        ``δ = 2 s'(a) ⊙ (h − ĥ)``, ``∇W = δᵀ h_prev / B``, ``∇b = Σ_b δ / B``."""
        # δ/B before the matmul: one pass over the batch instead of one over the weight-sized
        # gradient (bitwise the same result for a power-of-two B).
        scaled = (h - target).mul_(self.activation_derivative(a, h)).mul_(2.0 / h.shape[-2])
        return self.gradients(scaled, h_prev)

    def gradients(self, delta: Tensor, h_prev: Tensor) -> list[Tensor]:
        """The weight and bias gradients for the errors ``delta`` on the pre-activation:
        ``δᵀ h_prev`` and ``Σ_b δ`` (each seed's own when seeds are stacked)."""
        grads = [delta.mT @ self.flat_input(h_prev)]
        if self.linear.bias is not None:
            grads.append(delta.sum(-2))
        return grads


class ConvBlock(nn.Module):
    """conv → activation → max-pool; its activation ``h`` is the pooled output (algorithms.md §4.10)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, pool: tuple[int, int, int],
                 activation: Activation, bias: bool = True, **factory):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=1, padding=kernel // 2, bias=bias,
                              **factory)
        self.pool = nn.MaxPool2d(*pool)
        self.activation = activation

    def memory_format(self) -> torch.memory_format:
        """The memory layout of the convolution's weight (channels-last or standard)."""
        weight = self.conv.weight
        if weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
            return torch.channels_last
        return torch.contiguous_format

    def forward(self, h_prev: Tensor, backward_weight: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
        """``backward_weight``: used in place of the conv weight for the input's gradient in the
        backward pass (a backward-pass rule, ``api.BackwardRule``); None: backprop."""
        # The input goes in the weight's layout, so that autograd returns the weight's gradient
        # in the weight's layout too. A channels-last gradient of a standard-layout weight (what
        # NHWC-strided images gave the float64 CNN) is read by torch's fused Adam in raw memory
        # order, i.e. applied to the wrong elements of the weight (tests/test_cnn_fidelity.py;
        # ``optim.Adam`` also guards against it, at the cost of a copy per step).
        seeds = self.seeds
        if seeds is not None:
            return self._forward_stacked(h_prev, backward_weight, seeds)
        layout = self.memory_format()
        if backward_weight is None:
            a = self.conv(h_prev.contiguous(memory_format=layout))
        else:
            a = substitute_conv2d(h_prev.contiguous(memory_format=layout), self.conv,
                                  backward_weight.contiguous(memory_format=layout))
        # The activation leaves in the standard layout, whatever the convolution used inside:
        # targets, noise and feedback maps are then never mixed-layout.
        return a, self.pool(_activate(self.activation, a)).contiguous()

    @property
    def seeds(self) -> int | None:
        return stacked_seeds(self.conv.weight, 4)

    def _forward_stacked(self, h_prev: Tensor, backward_weight: Tensor | None, seeds: int
                         ) -> tuple[Tensor, Tensor]:
        """Seeds stacked: one grouped convolution, the seeds' channels side by side
        (``[B, S·C, H, W]``), each seed's kernels on its own channels."""
        conv, batch = self.conv, h_prev.shape[1]
        x = h_prev.transpose(0, 1).flatten(1, 2)
        weight = conv.weight.flatten(0, 1)
        bias = conv.bias.flatten() if conv.bias is not None else None
        if backward_weight is None:
            a = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, seeds)
        else:
            a = substitute_conv2d(x, conv, backward_weight.flatten(0, 1), weight=weight,
                                  bias=bias, groups=seeds)
        h = self.pool(_activate(self.activation, a))

        def per_seed(t: Tensor) -> Tensor:
            return t.view(batch, seeds, -1, *t.shape[2:]).transpose(0, 1)
        return per_seed(a), per_seed(h).contiguous()

    def local_gradients(self, h_prev: Tensor, a: Tensor, h: Tensor, target: Tensor,
                        graph: LayerGraph | None = None) -> list[Tensor]:
        """Autograd of the element-mean ``mse_loss(h, ĥ)`` through conv, activation and pool
        (algorithms.md §3: conv layers are normalised over all B·C·H·W elements), through ``graph``
        when the forward pass kept one, else through a second pass of the layer."""
        with torch.enable_grad():
            if graph is not None and graph.valid_for(self):
                h_graph = graph.h
            else:
                _, h_graph = self(h_prev.detach())
            loss = mse_per_seed(h_graph, target.detach(), self.seeds).sum()
            return list(torch.autograd.grad(loss, list(self.parameters()), retain_graph=True))

    def forward_with_graph(self, h_prev: Tensor) -> tuple[Tensor, Tensor, LayerGraph]:
        """``forward`` recording the graph of this layer alone, returned as a ``LayerGraph``."""
        with torch.enable_grad():
            a, h = self(h_prev.detach())
        versions = tuple(p._version for p in self.parameters())
        return a.detach(), h.detach(), LayerGraph(h, versions)


Layer = Dense | ConvBlock


class Network(nn.Module):
    """A feed-forward network whose layers are addressed 1..L, as in the spec. Each layer maps
    the previous activation to its pre-activation and activation (``Dense``, ``ConvBlock``, or
    any module with the same interface: ``forward(h_prev, backward_weight=None) -> (a, h)`` and
    ``local_gradients(h_prev, a, h, target, graph=None)``); an architecture plugin builds the
    list."""

    def __init__(self, spec: ArchitectureSpec, layers: Sequence[nn.Module],
                 input_shape: Sequence[int], n_outputs: int):
        super().__init__()
        self.spec = spec
        self.input_shape = tuple(input_shape)
        self.n_outputs = n_outputs
        self.layers = nn.ModuleList(layers)
        self.seeds: int | None = None  # S when several seeds are stacked (``model.seeds``)
        self.reset_parameters()

    @property
    def depth(self) -> int:
        return len(self.layers)

    def layer(self, i: int) -> Layer:
        """Layer ``i``, 1-based as in the spec."""
        return typing.cast(Layer, self.layers[i - 1])

    def dense(self, i: int) -> Dense:
        """Layer ``i`` of a rule that runs on fully connected layers only (its capabilities say
        MLP); a ``TypeError`` naming the layer otherwise."""
        layer = self.layer(i)
        if not isinstance(layer, Dense):
            raise TypeError(f"layer {i} is a {type(layer).__name__}, not a fully connected "
                            "layer (Dense)")
        return layer

    def layer_parameters(self, i: int) -> list[nn.Parameter]:
        return list(self.layer(i).parameters())

    def parameter_names(self) -> list[str]:
        """``layer 1 weight``, …, in ``parameters()`` order: the names messages use."""
        return [f"layer {i} {name.rsplit('.', 1)[-1]}" for i in range(1, self.depth + 1)
                for name, _ in self.layer(i).named_parameters()]

    def reset_parameters(self) -> None:
        """Glorot-normal weights (gain 1), zero biases: the paper's ``xavier_normal``."""
        for layer in self.layers:
            for name, parameter in layer.named_parameters():
                if name.endswith("weight"):
                    nn.init.xavier_normal_(parameter)
                else:
                    nn.init.zeros_(parameter)

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for layer in self.layers:
            _, h = layer(h)
        return h

    def activations(self, x: Tensor, graphs: dict[int, LayerGraph] | None = None,
                    backward_weights: Sequence[Tensor | None] | None = None
                    ) -> tuple[list[Tensor], list[Tensor]]:
        """All pre-activations and activations, each list indexed 0..L (index 0 = the input).
        With ``graphs`` (and grad mode off), conv layers also put their ``LayerGraph`` in it.
        ``backward_weights`` (indexed 0..L like the layers, None entries: the layer's own
        weight) are what each layer uses in place of its weight in the backward pass."""
        a, h = [x], [x]
        for i, layer in enumerate(self.layers, start=1):
            if graphs is not None and isinstance(layer, ConvBlock) and not torch.is_grad_enabled():
                a_i, h_i, graphs[i] = layer.forward_with_graph(h[-1])
            elif backward_weights is not None and backward_weights[i] is not None:
                a_i, h_i = layer(h[-1], backward_weights[i])
            else:
                a_i, h_i = layer(h[-1])
            a.append(a_i)
            h.append(h_i)
        return a, h

    def propagate(self, h: Tensor, start: int, stop: int | None = None) -> Tensor:
        """Layer ``stop``'s activation reached from layer ``start``'s activation ``h``
        (the map f̄_{start,stop}; by default up to the output, f̄_{start,L})."""
        for layer in self.layers[start:stop]:
            _, h = layer(h)
        return h

    def propagate_many(self, values: Sequence[Tensor], starts: Sequence[int],
                       stops: Sequence[int]) -> list[Tensor]:
        """``[propagate(v, start, stop) for …]`` with one call per layer: the values passing
        through the same layer go through it stacked as one batch (larger, faster matmuls)."""
        values = list(values)
        for k in range(min(starts), max(stops)):  # apply layer k + 1
            active = [j for j in range(len(values)) if starts[j] <= k < stops[j]]
            if self.seeds is not None:  # products already batched over the seeds: no copies
                for j in active:
                    values[j] = self.layers[k](values[j])[1]
                continue
            if not active:
                continue
            stacked = torch.cat([values[j] for j in active]) if len(active) > 1 else values[active[0]]
            _, h = self.layers[k](stacked)
            for j, part in zip(active, h.split([len(values[j]) for j in active]), strict=True):
                values[j] = part
        return values

    def activation_shape(self, i: int) -> tuple[int, ...]:
        """Shape of one sample's activation of layer ``i`` (0 = the input)."""
        lead = () if self.seeds is None else (self.seeds,)
        with torch.no_grad():
            probe = torch.zeros(*lead, 1, *self.input_shape, dtype=self.dtype, device=self.device)
            _, h = self.activations(probe)
        return tuple(h[i].shape[len(lead) + 1:])

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def mlp_layers(spec: ArchitectureSpec, width_in: int, n_outputs: int, first: int = 1,
               **factory: Any) -> list[nn.Module]:
    """The dense layers: ``spec.hidden`` with the activation, then the linear output layer
    (layers ``first``, ``first + 1``, … for the biases of ``spec.no_bias_layers``)."""
    layers: list[nn.Module] = []
    for index, width_out in enumerate([*spec.hidden, n_outputs], start=first):
        activation = "linear" if index == first + len(spec.hidden) else spec.activation
        layers.append(Dense(width_in, width_out, activation,
                            bias=index not in spec.no_bias_layers, **factory))
        width_in = width_out
    return layers


def forward_pass(network: Network, task, x: Tensor, y: Tensor, record_graph: bool = False,
                 layer_graphs: bool = True,
                 backward_weights: Sequence[Tensor | None] | None = None) -> ForwardPass:
    """Run ``x`` through ``network`` and keep every layer's activations and the batch-mean loss.
    ``record_graph`` keeps the autograd graph (needed by backprop); otherwise only the conv
    layers' own graphs are kept, for local updates, unless ``layer_graphs`` is false (a pass
    for a feedback step alone, which then records nothing: benchmarks/design_choices.py).
    ``backward_weights`` (indexed 0..L): what each layer uses in place of its weight in the
    backward pass of the recorded graph (``Algorithm.backward_weights``); None: backprop's."""
    graphs: dict[int, LayerGraph] = {}
    with torch.set_grad_enabled(record_graph):
        a, h = network.activations(x, graphs if layer_graphs else None, backward_weights)
        loss = task.loss(h[-1], y)
    return ForwardPass(x=x, y=y, a=a, h=h, loss=loss, layer_graphs=graphs)
