"""The Adam every optimiser of the suite uses: torch's, on its fused kernel.

The fused kernel computes Adam's update in one pass over all parameters instead of about a dozen
tensor operations per parameter; on the MNIST MLP that is a fraction of the loop's time a step
(``benchmarks/design_choices.py`` prints both). It differs from the per-parameter loop only in
rounding (at most a few ulps), not in the update rule.

The fused kernel reads a gradient in raw memory order: a gradient whose strides differ from its
parameter's (a transposed view, or the channels-last weight gradient that a convolution returns
for channels-last input) would be applied to the wrong elements. ``Adam.step`` therefore first
copies such a gradient into its parameter's layout (NHWC-strided images once gave the float64
CNN's conv weights such gradients: tests/test_cnn_fidelity.py).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class Adam(torch.optim.Adam):
    """torch's Adam, with every gradient in its parameter's memory layout before a step."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.stride() != p.stride():
                    p.grad = torch.empty_like(p).copy_(p.grad)
        return super().step(closure)


def adam(parameters: Iterable[torch.nn.Parameter], **options) -> torch.optim.Adam:
    """``Adam(parameters, **options)``, fused where every parameter allows it."""
    parameters = list(parameters)
    fusable = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in parameters)
    return Adam(parameters, fused=fusable or None, **options)
