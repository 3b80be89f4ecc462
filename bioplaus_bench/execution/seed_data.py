"""The data of several seeds of a cell, held once: each seed's train, validation and test sets are
index arrays into one pool of distinct samples (the seeds' validation splits differ, their samples
do not), and a minibatch of every seed is one gather ``pool[index[:, order]]`` (``[S, B, …]``).

Each seed's samples come in the order its serial run would see them: its data order is drawn
from its own generator, which continues the serial run's stream (``model.seeds``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import cast

import torch
from torch import Tensor

from ..data import Data, Split
from ..model.networks import Network
from ..model.tasks import Task


class SamplePool:
    """Distinct samples (``x``, ``y``) that splits are index arrays into. A split's rows are
    found in the pool by a fingerprint and then compared exactly; rows not found are added."""

    def __init__(self) -> None:
        self.x: Tensor | None = None
        self.y: Tensor | None = None
        self._direction: Tensor | None = None
        self._sorted: Tensor | None = None  # the pool's fingerprints, sorted
        self._order: Tensor | None = None  # pool row of each sorted fingerprint

    def _fingerprint(self, split: Split) -> Tensor:
        flat = split.x.flatten(1).double()
        if self._direction is None:
            generator = torch.Generator().manual_seed(0)
            self._direction = torch.randn(flat.shape[1], dtype=torch.float64,
                                          generator=generator).to(flat.device)
        labels = split.y.reshape(len(split), -1).double().sum(1)
        return flat @ self._direction + labels * 1e3

    def rows(self, data: Data) -> SplitRows:
        """The pool rows of ``data``'s train, validation (or None) and test samples."""
        return (self.index(data.train), None if data.val is None else self.index(data.val),
                self.index(data.test))

    def index(self, split: Split) -> Tensor:
        """The pool rows of ``split``'s samples (new ones added to the pool)."""
        fingerprint = self._fingerprint(split)
        if self.x is None:
            self.x, self.y = split.x, split.y
            self._sorted, self._order = torch.sort(fingerprint)
            return torch.arange(len(split), device=split.x.device)
        # All four are set together, with the first split.
        assert self.y is not None and self._sorted is not None and self._order is not None
        position = torch.searchsorted(self._sorted, fingerprint).clamp_(max=len(self._sorted) - 1)
        rows = self._order[position]
        found = (self._sorted[position] == fingerprint) \
            & (self.x[rows] == split.x).flatten(1).all(1) \
            & (self.y[rows] == split.y).reshape(len(split), -1).all(1)
        new = ~found
        if bool(new.any()):
            start = len(self.x)
            rows = rows.clone()
            rows[new] = torch.arange(start, start + int(new.sum()), device=rows.device)
            self.x = torch.cat([self.x, split.x[new]])
            self.y = torch.cat([self.y, split.y[new]])
            fingerprints = torch.cat([self._sorted, fingerprint[new]])
            order = torch.cat([self._order, rows[new]])
            self._sorted, permutation = torch.sort(fingerprints)
            self._order = order[permutation]
        return rows


SplitRows = tuple[Tensor, Tensor | None, Tensor]  # a seed's train, validation, test pool rows


class SeedData:
    """The train, validation (or None) and test index arrays (``[S, n]``) of stacked seeds."""

    def __init__(self, pool: SamplePool, train: Tensor, val: Tensor | None, test: Tensor,
                 task: Task):
        self.pool, self.train, self.val, self.test, self.task = pool, train, val, test, task

    @classmethod
    def stack(cls, pool: SamplePool, splits: Sequence[SplitRows], task: Task) -> SeedData | None:
        """The seeds' splits (``SamplePool.rows``) stacked; None when they differ in size (the
        seeds cannot be stacked)."""
        if len({tuple(None if rows is None else len(rows) for rows in seed)
                for seed in splits}) != 1:
            return None

        def stacked(which: int) -> Tensor:
            # A split is there for every seed or for none (their sizes agree, checked above).
            return torch.stack([cast(Tensor, s[which]) for s in splits])
        return cls(pool, stacked(0), None if splits[0][1] is None else stacked(1), stacked(2), task)

    def seeds(self, chosen: Sequence[int]) -> SeedData:
        """The data of the seeds ``chosen`` (positions in this stack)."""
        pick = torch.tensor(list(chosen), device=self.train.device)
        return SeedData(self.pool, self.train[pick], None if self.val is None else self.val[pick],
                        self.test[pick], self.task)

    def batches(self, rows: Tensor, batch_size: int,
                generators: Sequence[torch.Generator] | None = None
                ) -> Iterator[tuple[Tensor, Tensor]]:
        """Minibatches ``([S, B, …], [S, B, …])`` of the splits ``rows`` (``[S, n]``): in each
        seed's own random order when ``generators`` are given (the order ``setup.batches``
        draws in the seed's serial run), else in the split's order."""
        if generators is not None:
            orders = torch.stack([torch.randperm(rows.shape[1], generator=g, device=rows.device)
                                  for g in generators])
            rows = rows.gather(1, orders)
        x, y = self.pool.x, self.pool.y
        if x is None or y is None:
            raise RuntimeError("SeedData.batches: the sample pool holds no samples")
        for start in range(0, rows.shape[1], batch_size):
            chosen = rows[:, start:start + batch_size]
            yield x[chosen], y[chosen]


@torch.no_grad()
def evaluate_seeds(network: Network, task: Task, data: SeedData, rows: Tensor, batch_size: int,
                   predict: Callable[[Tensor], Tensor] | None = None
                   ) -> tuple[list[float], list[float | None]]:
    """Each seed's exact per-sample mean loss and accuracy (None for regression) on its split
    ``rows``, as ``setup.evaluate`` computes them for one seed."""
    seeds, n = rows.shape
    loss = torch.zeros(seeds, dtype=torch.float64, device=rows.device)
    correct = torch.zeros(seeds, dtype=torch.long, device=rows.device)
    for x, y in data.batches(rows, batch_size):
        output = network(x) if predict is None else predict(x)
        loss += task.loss(output, y).double() * y.shape[1]
        hits = task.correct(output, y)
        if hits is not None:
            correct += hits
    classification = task.kind == "classification"
    return ((loss / n).tolist(),
            [c / n for c in correct.tolist()] if classification else [None] * seeds)
