"""The GNT damping search of algorithms.md §9.2: which λ makes each hidden layer's update closest to its
Gauss-Newton-target update."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import Data
from ..errors import InputError
from ..model.algorithm import Algorithm
from ..spec.cell import Cell, MetricsConfig
from .runner import Runner
from .setup import Environment, batches
from .training import train_cell

DAMPING_GRID = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def damping_search(cell: Cell, cls: type[Algorithm], env: Environment | None = None,
                   grid: tuple[float, ...] = DAMPING_GRID, log_interval: int | None = None
                   ) -> dict[str, Any]:
    """The GNT damping search of algorithms.md §9.2: train the cell (the paper stops after 3 epochs),
    then make one more pass over the training set with the forward weights frozen (the
    feedback still trains), logging the GNT angles every ``log_interval`` minibatches; per
    hidden layer keep the λ of ``grid`` with the smallest mean angle. Every λ is measured in
    the same pass (the original made one pass per λ, with the same frozen forward weights)."""
    interval = log_interval or cell.settings.metrics.log_interval or 80

    def probe(runner: Runner, data: Data) -> dict[str, Any]:
        config = MetricsConfig(bp_angles=False, gnt_angles=False, damping_grid=grid)
        logged: dict[str, list[list[float]]] = {str(d): [] for d in grid}
        minibatches = batches(data.train, cell.dataset.protocol.batch_size, shuffle=True)
        for index, (x, y) in enumerate(minibatches):
            logs = index % interval == 0
            step = runner.step(x, y, metrics=config if logs else None, update_forward=False)
            if step.fault is not None:
                raise InputError(f"{cell.key}: the damping search pass met a non-finite "
                                 f"{step.fault} at minibatch {index + 1}")
            if step.metrics is not None:
                for damping, angles in step.metrics["gnt_angle_grid"].items():
                    logged[damping].append(angles)
        means = {d: np.mean(rows, axis=0).tolist() for d, rows in logged.items()}
        layers = runner.network.depth - 1
        # mypy cannot infer a lambda with a default argument (the loop's i, bound per layer).
        best = [min(grid, key=lambda d, i=i: means[str(d)][i])  # type: ignore[misc]
                for i in range(layers)]
        return {"grid": list(grid), "mean_angle": means, "best": best}

    result = train_cell(cell, cls, env, probe=probe)
    if result["status"] != "ok":
        raise InputError(f"{cell.key}: training before the damping search ended "
                         f"{result['status']} ({result.get('reason', '')}); no λ can be chosen")
    return result["probe"]


