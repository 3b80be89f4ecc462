"""The networks that the speed benchmarks (benchmarks/epoch_time.py, seed_batching.py) time, and
how: the paper's MNIST and CIFAR-10 MLPs and the CNN, at its minibatch size, with an optimiser
whose step changes the weights little (a timing, not a training); variants timed in turns
(benchmarks/design_choices.py, energy_defaults.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import torch

from .api import ArchitectureSpec
from .spec.cell import OptimizerConfig

# (network, input shape, minibatches of an epoch at BATCH) of each timed model
MODELS = {
    "mnist": (ArchitectureSpec(hidden=(256,) * 5), (1, 28, 28), 430),
    "cifar": (ArchitectureSpec(hidden=(1024,) * 3), (3, 32, 32), 352),
    "cnn": (ArchitectureSpec(type="cnn", conv_channels=(32, 64), hidden=(512,)), (3, 32, 32), 352),
}
BATCH = 128
RANDOM_WIDTH = {"mnist": 1024, "cifar": 2048}
OPTIMIZER = OptimizerConfig(lr=1e-6, betas=(0.9, 0.999), eps=1e-8)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def seconds(function: Callable[[], object], repeats: int) -> float:
    """Seconds per call of ``function``, over ``repeats`` calls."""
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def take_turns(variants: Mapping[str, Callable[[], object]], repeats: int, rounds: int
               ) -> dict[str, list[float]]:
    """Seconds per call of each variant in every round (after one warm-up call each)."""
    for function in variants.values():
        function()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, function in variants.items():
            times[name].append(seconds(function, repeats))
    return times
