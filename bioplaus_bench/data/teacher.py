"""The synthetic teacher regression task of algorithms.md §10, generated from the seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..model.tasks import Regression
from ..spec.schema import PositiveInt
from .types import Data, Dataset, DataSettings, Split


@dataclass(frozen=True)
class TeacherOptions:
    """The teacher network of algorithms.md §10 (validation size comes from the protocol)."""

    n_train: PositiveInt = 400
    n_test: PositiveInt = 200
    input_dim: PositiveInt = 6
    output_dim: PositiveInt = 2
    hidden: tuple[PositiveInt, ...] = (1000, 1000, 1000, 1000)
    gain: float = 3.0



def teacher_data(options: TeacherOptions, seed: int, n_val: int) -> tuple[Split, Split, Split]:
    """Train, test and validation sets of the teacher regression task (algorithms.md §10): a ReLU MLP with
    Glorot-normal weights of gain ``options.gain`` and zero biases; inputs ``U(−1, 1)``, drawn
    from a numpy RNG seeded with ``seed``; the teacher's weights from a torch generator with it."""
    generator = torch.Generator().manual_seed(seed)
    widths = [options.input_dim, *options.hidden, options.output_dim]
    weights = [torch.randn(n_out, n_in, generator=generator, dtype=torch.float64)
               * options.gain * (2.0 / (n_in + n_out)) ** 0.5
               for n_in, n_out in zip(widths[:-1], widths[1:], strict=True)]

    def teacher(x: Tensor) -> Tensor:
        for i, w in enumerate(weights):
            x = x @ w.t()
            if i < len(weights) - 1:
                x = torch.relu(x)
        return x

    rng = np.random.RandomState(seed)
    sets = []
    for n in (options.n_train, options.n_test, n_val):
        x = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(n, options.input_dim)))
        sets.append(Split(x, teacher(x)))
    return sets[0], sets[1], sets[2]


def standardize(train: Split, *others: Split) -> tuple[Split, ...]:
    """``train`` and ``others`` with targets standardised per output dimension by the training
    set's mean and (population) standard deviation, so that a test MSE is the fraction of the
    teacher's output variance left unexplained (0: perfect; about 1: predicting the mean)."""
    mean = train.y.mean(dim=0, keepdim=True)
    std = train.y.std(dim=0, unbiased=False, keepdim=True).clamp_min(1e-12)
    return tuple(Split(s.x, (s.y - mean) / std) for s in (train, *others))


def _loader(normalize: bool):
    """Load the teacher task, with its targets standardised (``standardize``) or as drawn."""
    def load(settings: DataSettings, options: TeacherOptions, *, seed: int,
             validation: int | None) -> Data:
        splits: tuple[Split, ...] = teacher_data(options, seed, validation or 0)
        if normalize:
            splits = standardize(*splits)
        train, test, val = (Split(s.x.float(), s.y.float()) for s in splits)
        return Data(train, val if validation else None, test, Regression(options.output_dim))
    return load


TEACHER = Dataset("teacher", "Teacher regression", "regression", _loader(False), TeacherOptions,
                  summary="a ReLU teacher network's outputs (algorithms.md §10), generated from the seed")

TEACHER_NORMALIZED = Dataset(
    "teacher-normalized", "Teacher regression, normalised targets", "regression",
    _loader(True), TeacherOptions,
    summary="the teacher task with targets standardised by the training set's mean and SD per "
            "output, so the test MSE is the fraction of output variance unexplained")
