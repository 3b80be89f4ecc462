"""The reference stays true: re-run the first epoch of one seed of every reference cell and compare
it with the first epoch stored in its record, so that a later change to the numerics is caught.

    .venv/bin/python benchmarks/reference_check.py [--results results/reference] [--suites suites]
        [--data-dir DIR] [--device cpu] [--suite table1] [--keep DIR]

(`make reference-check`; not part of CI: it trains one epoch of every cell on the real data.)

For every folder results/reference/<suite>/ and every (dataset, entry) in it, the lowest seed
whose record is `ok` is run again through the normal runner, together with the seeds it was
stacked with (the campaign stacks seeds: the records of one stacked run carry the same commit,
finish time, stack size and wall time, an equal share of the stack's), in this process:
`bioplaus_bench.run("suites/<suite>.yaml", datasets=[D], only=[E], only_seeds=[S, ...],
epochs=1, vectorize_seeds=True)` (False for a seed that ran alone), into a temporary folder.
Stacked as it was run, a seed's arithmetic is the record's, so every seed of the stack is
compared. Each re-run record must have its reference record's
settings but for the epoch count (``results.protocol.settings_differences``: a suite edited
since is a mismatch, the records are no longer its cells), and its epoch-1 figures (training
loss, test and validation loss and error, the feedback losses, and every feedback pre-training
epoch's loss) must equal the record's within the tolerance of its precision (errors counted in
samples of their split, whose sizes the dataset plugin gives):

  float64: relative 1e-9 on the losses, errors exact. Measured at the table1 settings (epoch
           1 after the feedback pre-training, one thread): re-run as they were run, the 17
           committed cells (49 seeds) are bit-identical, float32 ones too, on another machine
           of this type than the one that ran them. Why the stack matters: stacked against
           serial, MNIST differs by at most 1.9e-15 (DFA), 3.5e-13 (DDTP-linear) and 1.7e-11
           (DTP-DRL), but Frozen-MNIST DDTP-linear by 1.0e-5 on the validation loss, no error
           changed. That cell amplifies any last-bit change: the learning rate times
           (1 + 1e-15) alone moves its epoch-1 test loss by 6.1e-7 (MNIST DDTP-linear: 2.6e-13),
           with the feedback pre-training's losses still equal to 1e-16, so the forward
           epoch does it (its step, lr/target_stepsize = 8.6e-3, is 26 times MNIST's). A
           serial re-run would need a tolerance that hides real changes of that size.
  float32: relative 2e-3 on the losses, errors within 10 samples of their split. Measured,
           stacked against serial: BP at most 5.4e-8, no error changed; DDTP-linear run in
           float32 (--set): 1.9e-4 on the validation loss, 1e-4 on the test loss, 2 samples
           on the training and validation errors (target propagation amplifies float32
           rounding: the tolerance is 10 times it); BP on 2 threads instead of 1: within 5.4e-8.

Before any re-run, every finished record of a cell is checked against itself and its suite:
its history holds every epoch of its protocol, its selected epoch and `final` are what the
selection rule (`select_epoch`) gives on that history, and its settings are the suite's now (the
data's identity and the code digest apart: the re-run compares those). A record that fails, or a
file named like a record that the store does not count, is a failed cell with one line; the
cell is not re-run.

Where a cell reproduces, the code digest it was re-run under is attested for the digest of the
records it reproduced, with the commit and time of the check, in the folder's
attested-code.json (`bioplaus_bench.results.attestation`; added to what is there, nothing
dropped): `bench table` marks the cell † only where the current code is neither its records'
nor attested. An attestation file that is not one stops the check before any re-run (exit 2).

Another CPU than the one that ran a cell rounds otherwise in its kernels, and a cell that
amplifies rounding carries that beyond 1e-9 (Frozen-MNIST DDTP-linear, run on another machine
of these and checked on an Intel Xeon: 7.5e-6 on the validation loss, one validation sample;
Frozen-MNIST DDTP-RHL in float32: 13 training samples). So a cell that mismatches is measured
once more on the checking machine: re-run in another order of the same arithmetic (each seed
alone where they ran stacked, stacked with the suite's next seed where it ran alone). Where
that moves its losses beyond 1e-9, its *spread*, it is compared within 10 × the spread (the
losses' relative difference, and the errors' in samples, at least 10 samples), or its
precision's tolerance if larger, and its line says so. A change of the numerics is still caught
there when it exceeds the cell's own rounding, and at 1e-9 in every cell that does not amplify it.

A record computed on another device (CUDA) is compared with 10 × those tolerances, which were
not measured there, and its line says so. Cells whose algorithm source has changed since they
were run (their code digest differs from the re-run's) are named: a mismatch there is the
change, not a fault. One line per cell; the exit code is 1 when any cell differs or fails, 2 for
bad input (a folder that is not there or is a file, data missing for a cell: found before any
re-run), with one line.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import torch

import bioplaus_bench
from bioplaus_bench.data import DataSettings, check_available, load_data
from bioplaus_bench.data.types import file_in_the_way
from bioplaus_bench.errors import InputError
from bioplaus_bench.execution.progress import LogReporter
from bioplaus_bench.registry import Registry, load_registry
from bioplaus_bench.results.attestation import (
    ATTESTATION_FILE,
    Attested,
    merged,
    read_attestation,
    write_attestation,
)
from bioplaus_bench.results.protocol import settings_differences
from bioplaus_bench.results.record import Record, select_epoch
from bioplaus_bench.results.store import Refused, ResultStore
from bioplaus_bench.scripts import device, one_line_errors
from bioplaus_bench.spec.cell import Cell
from bioplaus_bench.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]
# (relative tolerance of losses, samples an error may differ by) per precision; see above.
TOLERANCE = {"float64": (1e-9, 0), "float32": (2e-3, 10)}
OTHER_DEVICE = 10.0  # the factor for a record of another device (not measured)
# A cell that amplifies rounding (see above) is compared within this many times the spread
# that another order of its arithmetic gives on the checking machine, and at least float32's
# samples: another CPU's kernels round otherwise, and such a cell carries that to 1e-5.
SENSITIVE_FACTOR, SENSITIVE_SAMPLES = 10, TOLERANCE["float32"][1]
LOSSES = ("train_loss", "test_loss", "val_loss", "feedback_loss", "extra_feedback_loss")
ACCURACIES = {"test_accuracy": "test", "val_accuracy": "val", "train_accuracy": "train"}
# What a re-run of the first epoch changes in a record's settings: its epoch count, and the code
# digest (a cell run by older code is re-run by the current one).
RERUN_IGNORES = ("dataset.protocol.epochs", "inputs.code")


@dataclass(frozen=True)
class Job:
    """One reference cell: its records, and the stacked run of them that is run again."""

    folder: Path  # the reference folder of its suite, where its attestation goes
    suite_file: Path
    records: tuple[Record, ...]  # one stacked run's records, the lowest seed first
    cell_records: tuple[Record, ...]  # every finished record of the cell, each checked alone

    @property
    def cell(self) -> str:
        r = self.records[0]
        return f"{r.suite or self.suite_file.stem} {r.dataset}/{r.algorithm}"

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.records]


def default_data_dir() -> Path:
    env = os.environ.get("BIOPLAUS_DATA")
    if env:
        return Path(env)
    shared = ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else ROOT / "data"


def jobs(results: Path, suites: Path, only: str | None, cells_wanted: Sequence[str] = ()
         ) -> tuple[list[Job], list[str]]:
    """One job per reference cell (its lowest finished seed and the seeds stacked with it), of
    the cells named ``DATASET/ENTRY`` in ``cells_wanted`` if any, and the cells that cannot be
    checked, each as a line."""
    found, problems = [], []
    for folder in sorted(p for p in results.iterdir() if p.is_dir()):
        if only is not None and folder.name != only:
            continue
        cells: dict[tuple[str, str], list[Record]] = {}
        store = ResultStore(folder)
        for record in store.records():
            if record.status == "ok" and record.history:
                cells.setdefault((record.dataset, record.algorithm), []).append(record)
        problems += [f"{folder.name} {skipped.name}: FAILED, not counted: {skipped.why}"
                     for skipped in store.skipped]
        for (dataset, entry), records in sorted(cells.items()):
            if cells_wanted and f"{dataset}/{entry}" not in cells_wanted:
                continue
            first, *others = sorted(records, key=lambda r: r.seed)
            stack = (first, *(r for r in others if _run(r) == _run(first)))
            suite_file = suites / f"{first.suite or folder.name}.yaml"
            if suite_file.is_file():
                found.append(Job(folder, suite_file, stack, (first, *others)))
            else:
                problems.append(f"{folder.name} {dataset}/{entry}: cannot check, no suite file "
                                f"{suite_file}")
    named = {f"{job.records[0].dataset}/{job.records[0].algorithm}" for job in found}
    unknown = [cell for cell in cells_wanted if cell not in named]
    if unknown:
        raise InputError(f"--cells: no reference cell {unknown[0]} in {results}; expected "
                         "DATASET/ENTRY of its records, e.g. mnist/bp")
    return found, problems


def _run(record: Record) -> tuple:
    """What the records of one stacked run share: the commit, the moment they finished, the
    stack's size and its wall time, of which each seed's is an equal share. Seeds run apart
    (`--seed-chunk 1`, a worker each) can finish within the same second of the same commit, but
    not with the same wall time to the last digit; records older than ``stacked_seeds`` are told
    apart by that alone."""
    return (record.provenance.get("git_commit"), record.provenance.get("finished_at"),
            record.stacked_seeds, record.wall_time)


def rerun(job: Job, out: Path, data_dir: Path, device: str, seeds: Sequence[int] | None = None,
          stacked: bool | None = None) -> dict[int, Record] | str:
    """The first epoch of the job's seeds (or of ``seeds``) through `bioplaus_bench.run`,
    stacked as they were run (or as ``stacked`` says); the records by seed, or why there are
    none."""
    r, seeds = job.records[0], list(job.seeds if seeds is None else seeds)
    try:
        results = bioplaus_bench.run(
            job.suite_file, datasets=[r.dataset], only=[r.algorithm], only_seeds=seeds,
            epochs=1, vectorize_seeds=len(seeds) > 1 if stacked is None else stacked,
            out=out, data_dir=data_dir,
            verify_checksums=not _skip_checksums(r), device=device, progress=Silent())
    except InputError as error:
        return f"the re-run failed: {error}"
    assert results.outcome is not None  # a run's results say how it went
    return {record.seed: record for record in results.outcome.records.values()}


class Silent(LogReporter):
    """A re-run says nothing: the check's line for the cell says how it went."""

    def __init__(self) -> None:
        super().__init__(heartbeat=None)

    def log(self, message: str) -> None:
        pass


def _skip_checksums(record: Record) -> bool:
    """Whether the reference read other files than the verified ones: then so must we."""
    return (record.provenance.get("data") or {}).get("checksums") not in (None, "verified")


def check_data(found: list[Job], data_dir: Path) -> None:
    """The data layer's one line (the folder and the files expected) for the first cell whose
    data is not in ``data_dir``, before any re-run."""
    registry = _registry()
    for job in found:
        datasets = load_suite(job.suite_file, registry).datasets
        r = job.records[0]
        if r.dataset in datasets:  # else the re-run says that the suite lacks it
            check_available(registry.dataset(datasets[r.dataset].source),
                            DataSettings(root=data_dir, verify_checksums=not _skip_checksums(r)))


@cache
def _registry() -> Registry:
    return load_registry()


@cache
def suite_cells(suite_file: Path) -> dict[tuple[str, str, int], Cell]:
    """The suite's cells now, by (dataset, entry, seed)."""
    registry = _registry()
    return {(c.dataset_id, c.algorithm_id, c.seed): c
            for c in load_suite(suite_file, registry).cells(registry=registry)}


def inconsistencies(jobs: list[Job]) -> dict[int, str]:
    """Per job (its index) that fails, the line saying how: a record that does not agree with
    itself (its selected epoch and ``final`` are not what the selection rule gives on its
    history, or its history lacks an epoch of its protocol), or whose settings are no longer its
    suite's (the data's identity and the code digest apart: the re-run compares those). Found
    from the records alone, before any re-run."""
    found = {}
    for i, job in enumerate(jobs):
        for record in job.cell_records:
            problem = _inconsistency(record, suite_cells(job.suite_file))
            if problem:
                found[i] = f"{job.cell} seed {record.seed}: {problem}"
                break
    return found


def _inconsistency(record: Record, cells: dict[tuple[str, str, int], Cell]) -> str | None:
    cell = cells.get((record.dataset, record.algorithm, record.seed))
    if cell is None:
        return (f"MISMATCH, the suite has no cell {record.dataset}/{record.algorithm} seed "
                f"{record.seed}")
    differing = settings_differences(record.config, cell.config(), ignored=("inputs",))
    if differing:
        return "MISMATCH, the suite's settings are not the record's: " + ", ".join(differing)
    epochs = [row.get("epoch") for row in record.history or ()]
    if epochs != list(range(1, record.epochs + 1)):
        return (f"INCONSISTENT, its history holds epochs {_epoch_list(epochs)}, not 1 to "
                f"{record.epochs} as its protocol runs")
    selected, final = select_epoch(record.history or [], record.task,
                                   any("val_loss" in row for row in record.history or ()))
    if selected != record.selected_epoch:
        return (f"INCONSISTENT, selected epoch {record.selected_epoch} in the record, "
                f"{selected} by the selection rule on its history")
    stored = record.final or {}
    for key in sorted(final.keys() | stored.keys()):
        if final.get(key) != stored.get(key):
            return (f"INCONSISTENT, final {key} {stored.get(key)!r} in the record, "
                    f"{final.get(key)!r} at its selected epoch of its history")
    return None


def _epoch_list(epochs: list) -> str:
    shown = ", ".join(map(str, epochs[:5]))
    return f"{shown}, ... ({len(epochs)} rows)" if len(epochs) > 5 else shown or "none"


def first_epoch(record: Record) -> dict[str, Any]:
    """The first row of a record's history (a job's records have one: ``jobs``)."""
    assert record.history, f"{record.dataset}/{record.algorithm} seed {record.seed}: no history"
    return record.history[0]


def figures(record: Record) -> dict[str, float]:
    """The first epoch's numbers: losses, and errors counted in samples of their split."""
    row = first_epoch(record)
    found = {}
    for key, value in [*((key, row.get(key)) for key in LOSSES),
                       ("pretraining_feedback_loss", record.pretraining_feedback_loss)]:
        for name, number in _numbers(key, value):
            found[name] = number
    return found


def _numbers(name: str, value: Any) -> list[tuple[str, float]]:
    """A figure, or each number of a list of them (a loss per layer, per pre-training epoch)."""
    if isinstance(value, list):
        return [item for i, v in enumerate(value) for item in _numbers(f"{name}[{i}]", v)]
    return [] if value is None else [(name, float(value))]


def accuracies(record: Record) -> dict[str, float]:
    row = first_epoch(record)
    return {key: row[key] for key in ACCURACIES if row.get(key) is not None}


class Comparison(NamedTuple):
    """Two records' first epochs side by side."""

    largest: float  # the largest relative difference of the losses
    largest_name: str  # its figure
    samples: int  # the largest difference of an error, in samples of its split
    bad: list[str]  # the figures outside the tolerance


def precision_tolerance(record: Record) -> tuple[float, int]:
    return TOLERANCE.get(str(record.config.get("precision")), TOLERANCE["float32"])


def compare(reference: Record, new: Record, samples: dict[str, int] | None = None,
            tolerance: tuple[float, int] | None = None) -> Comparison:
    """The two records' first epochs compared within the tolerance (the reference's precision's,
    unless ``tolerance`` is given). ``samples``: the size of each split, to count error
    differences in samples (None: compared as losses)."""
    rel_tol, sample_tol = tolerance or precision_tolerance(reference)
    if reference.provenance.get("device", "cpu") != new.provenance.get("device", "cpu"):
        rel_tol, sample_tol = rel_tol * OTHER_DEVICE, math.ceil(sample_tol * OTHER_DEVICE)
    ours, theirs = figures(new), figures(reference)
    worst, worst_name, bad = 0.0, "", []
    for key in sorted(ours.keys() | theirs.keys()):
        a, b = theirs.get(key), ours.get(key)
        if a is None or b is None:
            bad.append(f"{key} {a} in the record, {b} now")
            continue
        rel = abs(a - b) / max(abs(a), abs(b), 1e-300)
        if rel > worst:
            worst, worst_name = rel, key
        if rel > rel_tol:
            bad.append(f"{key} {a!r} in the record, {b!r} now (relative {rel:.1e})")
    old, now, most_samples = accuracies(reference), accuracies(new), 0
    for key in sorted(old.keys() | now.keys()):
        a, b = old.get(key), now.get(key)
        n = (samples or {}).get(ACCURACIES[key])
        if a is None or b is None:
            bad.append(f"{key} {a} in the record, {b} now")
        elif n is not None:
            differ = round(abs(a - b) * n)
            most_samples = max(most_samples, differ)
            if differ > sample_tol:
                bad.append(f"{key} {a!r} in the record, {b!r} now ({differ} samples)")
        elif abs(a - b) > rel_tol * max(abs(a), abs(b), 1e-300):
            bad.append(f"{key} {a!r} in the record, {b!r} now")
    return Comparison(worst, worst_name, most_samples, bad)


def split_sizes(job: Job, data_dir: Path) -> dict[str, int]:
    """The number of samples of each split of the job's cell, as its dataset plugin gives them
    (to count errors in samples)."""
    r = job.records[0]
    cell = suite_cells(job.suite_file)[(r.dataset, r.algorithm, r.seed)]
    data = DataSettings(root=data_dir, verify_checksums=not _skip_checksums(r))
    with torch.random.fork_rng():  # the validation split draws from the global generator
        splits = load_data(_registry().dataset(cell.dataset.source), cell.dataset.options, data,
                           seed=cell.seed, validation=cell.dataset.protocol.validation,
                           subset=cell.subset)
    return {"train": len(splits.train), "val": len(splits.val) if splits.val else 0,
            "test": len(splits.test)}


def check(job: Job, out: Path, data_dir: Path, device: str) -> tuple[bool, str, list[Attested]]:
    """Whether the job's first epoch reproduces, its line, and what that attests: the digest of
    the code it ran under, for the digest of the records it reproduced."""
    r, cell = job.records[0], job.cell
    name = f"{cell} seed {r.seed}"
    news = rerun(job, out, data_dir, device)
    if isinstance(news, str):
        return False, f"{name}: FAILED, {news}", []
    notes, again = [], news[r.seed]  # the stack shares its code and device
    if (r.provenance.get("code") or {}).get("source_sha256") != \
            (again.provenance.get("code") or {}).get("source_sha256"):
        notes.append("the algorithm's source has changed since the record")
    if r.provenance.get("device", "cpu") != again.provenance.get("device", "cpu"):
        notes.append(f"record from {r.provenance.get('device')}, checked on "
                     f"{again.provenance.get('device')}: tolerance ×{OTHER_DEVICE:g}, not measured")
    note = f" ({'; '.join(notes)})" if notes else ""
    sizes = split_sizes(job, data_dir)
    for reference in job.records:
        new, name = news[reference.seed], f"{cell} seed {reference.seed}"
        if new.status != "ok":
            return (False, f"{name}: FAILED, the re-run ended '{new.status}' "
                    f"({new.explanation})", [])
        differing = settings_differences(reference.config, new.config, RERUN_IGNORES)
        if differing:
            return False, (f"{name}: MISMATCH, the suite's settings are not the record's: "
                           + ", ".join(differing)), []
    worst, worst_name, mismatch = _compared(job, news, sizes)
    if mismatch:
        # another CPU's kernels round otherwise, and some cells amplify that: measured here
        spread = rounding_spread(job, news, out / "other-order", data_dir, device, sizes)
        if spread.relative > TOLERANCE["float64"][0]:
            base_rel, base_samples = precision_tolerance(r)
            tolerance = (max(base_rel, SENSITIVE_FACTOR * spread.relative),
                         max(base_samples, SENSITIVE_SAMPLES, SENSITIVE_FACTOR * spread.samples))
            worst, worst_name, mismatch = _compared(job, news, sizes, tolerance)
            notes.append(f"amplifies rounding: another order of the same arithmetic moves it by "
                         f"{spread.relative:.1e} and {spread.samples} samples here, so compared "
                         f"within {tolerance[0]:.1e} and {tolerance[1]:g} samples")
            note = f" ({'; '.join(notes)})"
    if mismatch:
        return False, f"{mismatch}{note}", []
    seeds = (f"seeds {','.join(map(str, job.seeds))} stacked as run" if len(job.seeds) > 1
             else f"seed {r.seed}")
    return True, (f"{cell} {seeds}: ok (largest relative difference {worst:.1e}"
                  + (f", {worst_name}" if worst else "") + f"){note}"), attests(job, again)


def _compared(job: Job, news: dict[int, Record], sizes: dict[str, int],
              tolerance: tuple[float, int] | None = None) -> tuple[float, str, str]:
    """Every seed of the job against its re-run: the largest relative difference, its figure
    and seed, and the first mismatch's line ("" if none)."""
    worst, worst_name = 0.0, ""
    for reference in job.records:
        compared = compare(reference, news[reference.seed], sizes, tolerance)
        if compared.bad:
            return worst, worst_name, (f"{job.cell} seed {reference.seed}: MISMATCH at epoch 1: "
                                       + "; ".join(compared.bad))
        if compared.largest >= worst:
            worst, worst_name = compared.largest, f"{compared.largest_name}, seed {reference.seed}"
    return worst, worst_name, ""


@dataclass(frozen=True)
class Spread:
    """How far a first epoch moves under another order of the same arithmetic."""

    relative: float  # the largest relative difference of the losses
    samples: int  # the largest difference of an error, in samples of its split


def rounding_spread(job: Job, news: dict[int, Record], out: Path, data_dir: Path, device: str,
                    sizes: dict[str, int]) -> Spread:
    """The cell's spread on this machine, the largest over its seeds (a chaotic cell amplifies
    rounding by a factor of its own for each seed's path): each seed re-run alone where they
    ran stacked, stacked with the suite's next seed where it ran alone (the two agree to
    rounding: tested for every built-in algorithm), against its re-run as run; none where there
    is no other order."""
    r, none = job.records[0], Spread(0.0, 0)
    if len(job.seeds) > 1:
        seeds, stacked = job.seeds, False
    else:
        others = sorted(seed for (dataset, entry, seed) in suite_cells(job.suite_file)
                        if (dataset, entry) == (r.dataset, r.algorithm) and seed != r.seed)
        if not others:
            return none
        seeds, stacked = [r.seed, others[0]], True
    again = rerun(job, out, data_dir, device, seeds, stacked)
    if isinstance(again, str) or any(again[seed].status != "ok" for seed in job.seeds):
        return none
    compared = [compare(news[seed], again[seed], sizes) for seed in job.seeds]
    return Spread(max(c.largest for c in compared), max(c.samples for c in compared))


def attests(job: Job, again: Record) -> list[Attested]:
    """What a re-run that reproduced the job's records attests (nothing where a digest is
    unknown: a record older than code digests)."""
    code = _digest(again)
    if code is None:
        return []
    reproduced = {digest for record in job.records if (digest := _digest(record)) is not None}
    return [Attested(code, record_code, again.provenance.get("git_commit"),
                     str(again.provenance["finished_at"])) for record_code in sorted(reproduced)]


def _digest(record: Record) -> str | None:
    return (record.provenance.get("code") or {}).get("source_sha256")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "reference")
    parser.add_argument("--suites", type=Path, default=ROOT / "suites")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="default: $BIOPLAUS_DATA, else ../shared/data if present, else ./data")
    parser.add_argument("--device", type=device, default="cpu")
    parser.add_argument("--suite", default=None, help="only this reference suite (e.g. table1)")
    parser.add_argument("--cells", type=lambda text: text.split(","), default=(),
                        help="only these cells, DATASET/ENTRY separated by commas "
                        "(e.g. mnist/bp,mnist/dfa)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="write the re-runs' records here instead of a temporary folder")
    args = parser.parse_args(argv)
    return one_line_errors(lambda: check_all(args))


def check_all(args: argparse.Namespace) -> int:
    for option, folder in (("--results", args.results), ("--suites", args.suites)):
        if not folder.is_dir():
            raise InputError(f"{option} {folder}: " + ("not found" if not folder.exists()
                             else "not a folder") + "; expected a folder")
    if args.keep is not None and (in_the_way := file_in_the_way(args.keep)) is not None:
        raise InputError(f"--keep {args.keep}: {in_the_way} is a file; expected a folder")
    found, problems = jobs(args.results, args.suites, args.suite, args.cells)
    for line in problems:
        print(line, flush=True)
    if not found:
        print(f"no finished reference record in {args.results}", file=sys.stderr)
        return 1
    attestations = {folder: _attestation(folder) for folder in sorted({j.folder for j in found})}
    data_dir = args.data_dir or default_data_dir()
    check_data(found, data_dir)
    inconsistent = inconsistencies(found)
    for line in inconsistent.values():
        print(line, flush=True)
    failures = len(problems) + len(inconsistent)
    new: dict[Path, dict[tuple[str, str], list[Attested]]] = {}
    with tempfile.TemporaryDirectory(prefix="reference-check-") as temporary:
        for i, job in enumerate(found):
            if i in inconsistent:
                continue
            out = (args.keep or Path(temporary)) / f"{job.records[0].suite}-{i}"
            ok, line, attested = check(job, out, data_dir, args.device)
            failures += not ok
            print(line, flush=True)
            if attested:
                r = job.records[0]
                new.setdefault(job.folder, {})[(r.dataset, r.algorithm)] = attested
    for folder, cells in new.items():
        _write_attestation(folder, merged(attestations[folder], cells))
    differing = failures - len(problems)
    print(f"{len(found) - differing} of {len(found)} reference cells reproduce their first epoch"
          + (f"; {failures} cells fail the check" if failures else ""), flush=True)
    return 1 if failures else 0


def _attestation(folder: Path) -> dict:
    """The folder's attestation, to add to: one that is not an attestation stops the check
    before any re-run (writing over it would drop what it attests)."""
    try:
        return read_attestation(folder)
    except Refused as why:
        raise InputError(f"{folder / ATTESTATION_FILE}: {why}; fix or remove it") from None


def _write_attestation(folder: Path, attestation: dict) -> None:
    try:
        path = write_attestation(folder, attestation)
    except OSError as error:
        raise InputError(f"cannot write {folder / ATTESTATION_FILE}: "
                         f"{error.strerror or error}") from None
    print(f"attested in {path}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
