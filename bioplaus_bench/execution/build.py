"""Networks built by the architecture plugins a registry holds. This lives above the registry
(which imports the model) so that the model never imports the registry: imports go one way."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..model.networks import Network
from ..registry import Registry, default_registry
from ..spec.architecture import ArchitectureSpec


def build_network(spec: ArchitectureSpec, input_shape: Sequence[int], n_outputs: int,
                  dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                  *, registry: Registry | None = None) -> Network:
    """The network of ``spec`` built by its architecture plugin, found in ``registry`` (default:
    the built-in and installed plugins)."""
    architecture = (registry if registry is not None else default_registry()).architecture(spec.type)
    return architecture.build(spec, tuple(input_shape), n_outputs, dtype=dtype, device=device)
