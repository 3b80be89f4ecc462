"""Architectures as plugins: a name, how to build the network of an ``ArchitectureSpec``, and the
kinds of layer it is made of, against which an algorithm's capabilities are checked. The built-in
tanh MLP and small CNN of the paper (algorithms.md §1, §4.10) register through the same hook as anyone's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..hookspecs import hookimpl
from ..spec.architecture import ArchitectureSpec
from .networks import ConvBlock, Network, mlp_layers

Builder = Callable[..., Network]  # (spec, input_shape, n_outputs, *, dtype, device) -> Network


@dataclass(frozen=True)
class Architecture:
    """What ``architecture.type: <name>`` builds.

    ``build(spec, input_shape, n_outputs, dtype=…, device=…)`` returns the ``Network``;
    ``layer_kinds`` are the kinds of its layers (``"dense"``, ``"conv"`` or your own), which
    every algorithm run on it must support (``Capabilities.layer_kinds``); ``check(spec)``
    returns what is wrong with a spec for this architecture, or None; ``Options`` is the
    dataclass that ``architecture.options`` in a suite is validated against."""

    name: str
    build: Builder
    layer_kinds: frozenset[str]
    check: Callable[[ArchitectureSpec], str | None] = lambda spec: None
    Options: type | None = None
    summary: str = ""


def _build_mlp(spec: ArchitectureSpec, input_shape: tuple[int, ...], n_outputs: int, *,
               dtype: torch.dtype | None = None, device: torch.device | str | None = None
               ) -> Network:
    layers = mlp_layers(spec, math.prod(input_shape), n_outputs, dtype=dtype, device=device)
    return Network(spec, layers, input_shape, n_outputs)


def _build_cnn(spec: ArchitectureSpec, input_shape: tuple[int, ...], n_outputs: int, *,
               dtype: torch.dtype | None = None, device: torch.device | str | None = None
               ) -> Network:
    if len(input_shape) != 3:
        raise ValueError(f"a CNN needs image inputs (C, H, W), got shape {input_shape}")
    channels, height, width = input_shape
    kernel, stride, padding = spec.pool
    layers: list[nn.Module] = []
    for index, c_out in enumerate(spec.conv_channels, start=1):
        layers.append(ConvBlock(channels, c_out, spec.kernel_size, spec.pool, spec.activation,
                                bias=index not in spec.no_bias_layers, dtype=dtype,
                                device=device))
        height = (height + 2 * padding - kernel) // stride + 1
        width = (width + 2 * padding - kernel) // stride + 1
        channels = c_out
    layers += mlp_layers(spec, channels * height * width, n_outputs,
                         first=len(spec.conv_channels) + 1, dtype=dtype, device=device)
    network = Network(spec, layers, input_shape, n_outputs)
    if network.dtype != torch.float64:
        # oneDNN's convolutions, their backward and the pooling run faster on channels-last
        # weights; oneDNN has no float64 kernels, and the fallback gains nothing from them
        # (a CIFAR-10 CNN step in either layout and dtype: benchmarks/design_choices.py).
        network.to(memory_format=torch.channels_last)
    return network


def _mlp_check(spec: ArchitectureSpec) -> str | None:
    return "an MLP takes no conv_channels (use type: cnn)" if spec.conv_channels else None


def _cnn_check(spec: ArchitectureSpec) -> str | None:
    return None if spec.conv_channels else "a CNN needs conv_channels"


MLP = Architecture("mlp", _build_mlp, frozenset({"dense"}), _mlp_check,
                   summary="fully connected layers (algorithms.md §1)")
CNN = Architecture("cnn", _build_cnn, frozenset({"conv", "dense"}), _cnn_check,
                   summary="conv → activation → max-pool blocks, then dense layers (algorithms.md §4.10)")


@hookimpl
def bioplaus_bench_architectures() -> list[Architecture]:
    return [MLP, CNN]
