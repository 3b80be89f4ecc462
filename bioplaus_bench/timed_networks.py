"""The networks that the speed benchmarks (benchmarks/epoch_time.py, seed_batching.py) time, and
how: the paper's MNIST and CIFAR-10 MLPs and the CNN, at its minibatch size, with an optimiser
whose step changes the weights little (a timing, not a training)."""

from __future__ import annotations

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
