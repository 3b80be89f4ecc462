"""Per-epoch snapshots of a running cell, so that a killed run resumes to exactly the result of
an unbroken one. A checkpoint is plain data (tensors, numbers, strings, lists, dicts) read with
``torch.load(weights_only=True)``: a crafted file in a results folder cannot run code."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..files import write_atomically


class Checkpoint:
    """Atomic per-epoch snapshots of a running cell. Read with ``weights_only=True``: a
    checkpoint is data (tensors, numbers, strings, lists, dicts), never code, so a crafted file
    in a results folder cannot run anything; one that does not load or does not match this
    cell is ignored with a warning."""

    def __init__(self, path: Path | None, config_hash: str):
        self.path, self.config_hash = path, config_hash
        self.unwritable = False

    def load(self) -> dict[str, Any] | None:
        if self.path is None:
            return None
        # A run killed while saving leaves its temporary file; one run holds the folder, so no
        # other process is writing it now.
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # torch's text would advise loading it as code: say what it is
            warn(f"ignoring checkpoint {self.path}: it is not a checkpoint of plain data "
                 "(damaged, or it holds code, which is never run)")
            return None
        if not isinstance(state, dict) or not state.keys() >= CHECKPOINT_KEYS:
            warn(f"ignoring checkpoint {self.path}: not a checkpoint of this version")
            return None
        if state["config_hash"] != self.config_hash:
            warn(f"ignoring checkpoint {self.path}: it belongs to another configuration")
            return None
        return state

    def save(self, state: dict[str, Any]) -> None:
        if self.path is None or self.unwritable:
            return
        saved = {**state, "config_hash": self.config_hash}
        try:  # through a file object, a full disk is an OSError; never through a link
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, lambda file: torch.save(saved, file))
        except (OSError, RuntimeError) as error:
            self.unwritable = True  # training goes on; only resuming this cell is lost
            reason = error.strerror if isinstance(error, OSError) and error.strerror else error
            warn(f"cannot write checkpoint {self.path} ({reason}); this cell goes on without "
                 "checkpoints")


CHECKPOINT_KEYS = {"network", "algorithm", "optimisers", "rng", "state", "config_hash"}


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def rng_state() -> dict[str, Any]:
    """Every generator's state as plain data (tensors, numbers, tuples)."""
    # The legacy state is a tuple (numpy's stubs also allow the dict of legacy=False).
    kind, keys, position, has_gauss, gauss = cast("tuple[str, np.ndarray, int, int, float]",
                                                  np.random.get_state())
    state = {"torch": torch.get_rng_state(),
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


