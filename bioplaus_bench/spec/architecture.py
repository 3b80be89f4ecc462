"""What network to build, as a frozen dataclass of the cell's specification (``cell.DatasetConfig``
holds one); ``model.networks`` and the architecture plugins build it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from .schema import Name, NonNegativeInt, PositiveInt

Activation = Literal["tanh", "relu", "linear"]


@dataclass(frozen=True)
class ArchitectureSpec:
    """What to build. ``hidden`` are the fully connected hidden widths; a CNN puts
    ``conv_channels`` conv → activation → max-pool blocks in front of them."""

    type: Name = "mlp"  # an architecture plugin: the built-in "mlp" or "cnn", or one of yours
    hidden: tuple[PositiveInt, ...] = (256, 256, 256, 256, 256)
    activation: Activation = "tanh"
    conv_channels: tuple[PositiveInt, ...] = ()
    kernel_size: PositiveInt = 5
    pool: tuple[PositiveInt, PositiveInt, NonNegativeInt] = (3, 2, 1)  # kernel, stride, padding
    no_bias_layers: tuple[int, ...] = ()  # 1-based layer indices built without a bias
    options: dict[str, Any] = field(default_factory=dict)  # the architecture plugin's own

    @property
    def depth(self) -> int:
        """L, the number of layers with parameters (the output layer included)."""
        return len(self.conv_channels) + len(self.hidden) + 1

    def without_bias(self, layer: int) -> ArchitectureSpec:
        """The same architecture with layer ``layer`` (1-based) built without a bias."""
        return dataclasses.replace(self, no_bias_layers=tuple(sorted({*self.no_bias_layers, layer})))
