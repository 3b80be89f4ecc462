"""A plugin package written against ``bioplaus_bench.api`` alone, as an outside author would: one
dataset, one architecture, one metric and one executor, each through its hook. The tests run a
suite that uses all four without any change to the core."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bioplaus_bench.api import (
    Architecture,
    ArchitectureSpec,
    Classification,
    Data,
    Dataset,
    Executor,
    Metric,
    Network,
    Split,
    hookimpl,
    mlp_layers,
    split_validation,
)

# --- a dataset: Gaussian blobs, generated from the seed ---------------------------------------

@dataclass(frozen=True)
class BlobOptions:
    n_train: int = 96
    n_test: int = 32
    dim: int = 5
    classes: int = 3


def load_blobs(settings, options: BlobOptions, *, seed: int, validation: int | None) -> Data:
    generator = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(options.classes, options.dim, generator=generator)

    def draw(n: int) -> Split:
        y = torch.randint(0, options.classes, (n,), generator=generator)
        return Split(centres[y] + torch.randn(n, options.dim, generator=generator), y)

    full, test = draw(options.n_train), draw(options.n_test)
    train, val = split_validation(full, validation, "Gaussian blobs")
    return Data(train, val, test, Classification(options.classes))


BLOBS = Dataset("blobs", "Gaussian blobs", "classification", load_blobs, BlobOptions)


# --- an architecture: an MLP whose hidden widths halve from layer to layer ----------------------

@dataclass(frozen=True)
class FunnelOptions:
    narrowest: int = 2


def build_funnel(spec: ArchitectureSpec, input_shape, n_outputs: int, *, dtype=None,
                 device=None) -> Network:
    first = spec.hidden[0]
    widths = tuple(max(first // 2 ** k, spec.options.narrowest) for k in range(len(spec.hidden)))
    funnel = ArchitectureSpec(type=spec.type, hidden=widths, activation=spec.activation,
                              no_bias_layers=spec.no_bias_layers, options=spec.options)
    layers = mlp_layers(funnel, math.prod(input_shape), n_outputs, dtype=dtype, device=device)
    return Network(funnel, layers, input_shape, n_outputs)


FUNNEL = Architecture("funnel", build_funnel, frozenset({"dense"}), Options=FunnelOptions)


# --- a metric: the size of every proposed update ----------------------------------------------

def update_norms(network, task, fwd, updates, config) -> dict:
    return {"norms": [float(u.norm()) for u in updates]}


UPDATE_NORM = Metric("update-norm", update_norms)


# --- an executor: the pending cells one after the other, last first ---------------------------

def run_reversed(todo, context) -> None:
    for index, cell in reversed(todo):
        context.finish(index, cell, context.execute(cell))


REVERSED = Executor("reversed", run_reversed, "the cells in this process, last first")


@hookimpl
def bioplaus_bench_datasets():
    return [BLOBS]


@hookimpl
def bioplaus_bench_architectures():
    return [FUNNEL]


@hookimpl
def bioplaus_bench_metrics():
    return [UPDATE_NORM]


@hookimpl
def bioplaus_bench_executors():
    return [REVERSED]
