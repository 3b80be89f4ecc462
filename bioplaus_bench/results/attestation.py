"""Which code is known to reproduce a reference cell: the attestation that `make reference-check`
(benchmarks/reference_check.py) writes beside the records of a reference folder, and that
``bench table`` and ``bench report`` read before marking a cell †.

A record's code digest covers the plugin's module and every base class, so an edit of a core
class changes the digest of every cell, whether or not it changes a number. What decides is what
the check measures: the cell's first epoch, re-run under the current code, still reproduces its
record. The check then writes that the code of digest ``code`` reproduced the records made by
the code of digest ``record_code``, with the commit and time of the check, into
``ATTESTATION_FILE``::

    {"cells": {"<dataset>/<entry>": [{"code": "<digest>", "record_code": "<digest>",
                                      "git_commit": "<hex>" or null, "checked_at": "<ISO time>"}]}}

A later check adds to what is there, never drops an entry (one per pair of digests, with its
latest check). The file may come from anyone, like the records: it is read only as a regular
file of at most MAX_ATTESTATION_BYTES, never through a link, its every field checked; a file
that is not an attestation is ignored with one warning line (its cells keep their marks).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..files import write_atomically
from .store import Refused, _read_json, _warn  # the records' own reading of untrusted files

ATTESTATION_FILE = "attested-code.json"
MAX_ATTESTATION_BYTES = 2**20  # thousands of checks of every cell of Table 1
_DIGEST = re.compile(r"[0-9a-f]{8,64}")
_COMMIT = re.compile(r"[0-9a-f]{7,64}")
_CELL = re.compile(r"[^/]+/[^/]+")  # names only compared, never made into paths
EXPECTED = ('expected {"cells": {"<dataset>/<entry>": [{"code": <hex digest>, "record_code": '
            '<hex digest>, "git_commit": <hex> or null, "checked_at": <ISO time>}, ...]}}')
ABOUT = ("Written by `make reference-check` (benchmarks/reference_check.py): per cell, the code "
         "digests under which its records' first epoch reproduced ('code'), the digest of the "
         "records it reproduced ('record_code'), and the commit and time of the latest such "
         "check. `bench table` marks a cell with a dagger only where the current code is "
         "neither its records' nor attested here for them.")


@dataclass(frozen=True)
class Attested:
    """One check: the code of digest ``code`` reproduced the records of digest ``record_code``."""

    code: str
    record_code: str
    git_commit: str | None
    checked_at: str


Attestation = dict[tuple[str, str], list[Attested]]  # (dataset, entry) -> its checks


def read_attestation(folder: Path) -> Attestation:
    """The attestation of a results folder ({} when it has none). ``Refused`` when its file is
    not one: not a regular file, too large, not JSON, or not of the layout above."""
    data = _read_json(folder / ATTESTATION_FILE, MAX_ATTESTATION_BYTES)
    if data is None:
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("cells"), dict) \
            or not isinstance(data.get("about", ""), str):
        raise Refused(f"not an attestation: {EXPECTED}")
    found: Attestation = {}
    for key, checks in data["cells"].items():
        if not _CELL.fullmatch(key) or not isinstance(checks, list):
            raise Refused(f"not an attestation: cell {json.dumps(key)}; {EXPECTED}")
        dataset, entry = key.split("/")
        found[(dataset, entry)] = [_attested(check, key, i) for i, check in enumerate(checks)]
    return found


def _attested(check: Any, key: str, index: int) -> Attested:
    where = f"cells.{json.dumps(key)}[{index}]"
    if not isinstance(check, dict) or set(check) != {"code", "record_code", "git_commit",
                                                      "checked_at"}:
        raise Refused(f"not an attestation: {where}; {EXPECTED}")
    for name, pattern, optional in (("code", _DIGEST, False), ("record_code", _DIGEST, False),
                                    ("git_commit", _COMMIT, True)):
        value = check[name]
        if not (optional and value is None
                or isinstance(value, str) and pattern.fullmatch(value)):
            raise Refused(f"not an attestation: {where}.{name} is {json.dumps(value)[:80]}; "
                          + EXPECTED)
    if not isinstance(check["checked_at"], str) or not _is_time(check["checked_at"]):
        raise Refused(f"not an attestation: {where}.checked_at is "
                      f"{json.dumps(check['checked_at'])[:80]}; {EXPECTED}")
    return Attested(**check)


def _is_time(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def attested_code(folder: Path, prefix: str = "") -> set[tuple[str, str, str, str]]:
    """What a table needs of a folder's attestation: (dataset, ``prefix`` + entry, record
    digest, attested digest) per check. A file that is not an attestation is one warning line
    and counts as none."""
    try:
        attestation = read_attestation(folder)
    except Refused as why:
        _warn(folder / ATTESTATION_FILE, str(why))
        return set()
    return {(dataset, prefix + entry, check.record_code, check.code)
            for (dataset, entry), checks in attestation.items() for check in checks}


def merged(old: Attestation, new: Mapping[tuple[str, str], Iterable[Attested]]) -> Attestation:
    """``old`` with the checks of ``new`` added: one entry per cell and pair of digests, the
    latest check's commit and time; nothing of ``old`` dropped."""
    cells = {cell: {(c.code, c.record_code): c for c in checks} for cell, checks in old.items()}
    for cell, checks in new.items():
        for check in checks:
            cells.setdefault(cell, {})[(check.code, check.record_code)] = check
    return {cell: list(checks.values()) for cell, checks in sorted(cells.items())}


def write_attestation(folder: Path, attestation: Attestation) -> Path:
    """Write ``attestation`` as the folder's attestation file (atomically, never through a
    link; ``OSError`` otherwise)."""
    text = json.dumps({"about": ABOUT, "cells": {
        f"{dataset}/{entry}": [asdict(check) for check in checks]
        for (dataset, entry), checks in sorted(attestation.items())}}, indent=1)
    return write_atomically(folder / ATTESTATION_FILE, text + "\n", inside=folder)
