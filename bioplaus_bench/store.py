"""Results: one JSON record per cell, written atomically, found again by its config hash.

Layout: ``RESULTS_DIR/<dataset>/<algorithm>/seed-<n>.json`` (and ``.ckpt`` beside it while the
cell runs). A record is written to a temporary file and renamed into place, so a killed run never
leaves a half-written record; a re-run skips every cell whose record has the same config hash.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .data import SOURCES
from .suite import Cell

FINISHED = ("ok", "diverged", "skipped")  # statuses that are not run again


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@cache
def _static_provenance() -> dict[str, Any]:
    return {"bioplaus_bench": __version__, "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "host": socket.gethostname(), "git_commit": _git_commit()}


def provenance(device: str, precision: str, config_hash: str) -> dict[str, Any]:
    return {**_static_provenance(), "device": device, "dtype": precision,
            "config_hash": config_hash, "torch_threads": torch.get_num_threads(),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def make_record(cell: Cell, result: dict[str, Any], device: str) -> dict[str, Any]:
    return {
        "suite": cell.suite,
        "dataset": cell.dataset_id,
        "dataset_label": cell.dataset.label,
        "task": SOURCES[cell.dataset.source].kind,
        "algorithm": cell.algorithm_id,
        "algorithm_name": cell.algorithm,
        "label": cell.label,
        "seed": cell.seed,
        "order": list(cell.order),
        "paper_protocol": not cell.deviations,
        "deviations": list(cell.deviations),
        "metric": cell.metric,
        "config": cell.config(),
        "config_hash": cell.config_hash(),
        "provenance": provenance(device, cell.precision, cell.config_hash()),
        **result,
    }


class ResultStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def path(self, cell: Cell) -> Path:
        return self.root / cell.dataset_id / cell.algorithm_id / f"seed-{cell.seed}.json"

    def checkpoint_path(self, cell: Cell) -> Path:
        return self.path(cell).with_suffix(".ckpt")

    def load(self, cell: Cell) -> dict[str, Any] | None:
        return _read(self.path(cell))

    def is_finished(self, cell: Cell) -> bool:
        record = self.load(cell)
        return (record is not None and record.get("config_hash") == cell.config_hash()
                and record.get("status") in FINISHED)

    def write(self, record: dict[str, Any], cell: Cell) -> Path:
        path = self.path(cell)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp", delete=False) as tmp:
            json.dump(record, tmp, indent=1)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, path)
        return path

    def records(self) -> Iterator[dict[str, Any]]:
        for path in sorted(self.root.glob("*/*/seed-*.json")):
            record = _read(path)
            if record is not None:
                yield record


def _read(path: Path) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as error:
        print(f"warning: ignoring unreadable record {path}: {error}", file=sys.stderr)
        return None
