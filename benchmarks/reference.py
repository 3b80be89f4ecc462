"""The reference campaign: the paper's tables at the full protocol, as shipped in suites/, written
as ordinary records under results/reference/<suite>/ (committed to git; checkpoints stay out).

    .venv/bin/python benchmarks/reference.py status [--stages a,b]
    .venv/bin/python benchmarks/reference.py run [--stages a] [--jobs 1] [--threads 1]
        [--data-dir DIR] [--skip-checksums] [--device cpu] [--seeds N]
    .venv/bin/python benchmarks/reference.py collect

(`make reference` runs the first list that is not complete.)

The lists, each complete before the next starts (cheaper methods first within a list, so that
an interrupted campaign leaves as many finished cells as possible):
  a. Table 1 MNIST, all eight methods, seeds 0-2;
  b. Table 1 Frozen-MNIST and Fashion-MNIST: every method the paper ran there, seeds 0-2;
  c. Table 1 CIFAR-10 MLP and Table 3 CNN: BP, DFA, DDTP-linear, seeds 0-2;
  d. the rest of Tables 1-3, and every cell of lists a-d at the suites' ten seeds.
`--seeds N` asks for the first N seeds of every list (10 on a GPU, where stacking pays).

Each group (one suite, dataset and algorithm, the seeds it still misses) is one `bench run
--vectorize-seeds --only-seeds ...` of the shipped suite, with nothing changed: no tuning, no
shorter schedule, the configs' precision. It works in a folder of its own under the work folder
($BIOPLAUS_CACHE/reference, outside the repository), where its checkpoints live: a campaign that
is stopped (Ctrl-C, SIGTERM, the end of a working session) resumes from the last epoch of every
running cell, as long as the code and settings are unchanged (the config hash decides). Finished
records are copied into results/reference/<suite>/ as each group ends (`collect` copies what
has finished so far, e.g. before committing while the campaign goes on).

A cell counts as done when results/reference holds its record, finished (ok, or diverged, which
is a result too), at the suite's protocol and with the settings the suite has now; a record of
older code still counts (`bench table` marks it when the algorithm's source has changed since),
while one of other settings is stale and is run again.

`status` reads the work folder's checkpoints too: a running or stopped cell shows the epoch it
has reached and whether it resumes there, that is whether its checkpoint belongs to the cell as
this code and data give it (the config hash, as `bench run` decides). Checkpoints survive
commits that leave the algorithm's code alone, so a campaign spread over several working
sessions keeps running from one checkout; a change to an algorithm's module (or its base
classes) makes its running cells start over, and `status` says so before anything is lost.

The time left of a cell under way is its own pace so far (seconds per epoch of its checkpoint);
of a cell not started, the wall time per seed of its group's records, else a rough prior for
this machine type (2 CPU cores, one thread per process, seeds stacked), scaled by how fast the
groups with records ran against their priors, and printed with a '~'.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from arguments import one_line_errors  # noqa: E402

from bioplaus_bench.data import check_available  # noqa: E402
from bioplaus_bench.data.types import (  # noqa: E402
    CACHE_ENV,
    DataSettings,
    default_cache_dir,
    file_in_the_way,
    make_cache_folder,
)
from bioplaus_bench.errors import InputError  # noqa: E402
from bioplaus_bench.execution.checkpoint import CHECKPOINT_KEYS  # noqa: E402
from bioplaus_bench.execution.inputs import with_inputs  # noqa: E402
from bioplaus_bench.files import write_atomically  # noqa: E402
from bioplaus_bench.registry import load_registry  # noqa: E402
from bioplaus_bench.results.record import Record  # noqa: E402
from bioplaus_bench.results.store import ResultStore  # noqa: E402
from bioplaus_bench.suite.load import load_suite  # noqa: E402

FINISHED = ("ok", "diverged")
TABLE1_METHODS = ("bp", "dfa", "ddtp-linear", "dtp", "ddtp-control", "dtp-drl",
                  "dtp-pretrained", "ddtp-rhl")  # cheapest first (benchmarks/epoch_time.py)


@dataclass(frozen=True)
class Group:
    suite: str
    dataset: str
    algorithm: str

    @property
    def name(self) -> str:
        return f"{self.suite}/{self.dataset}/{self.algorithm}"


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    groups: tuple[Group, ...]
    seeds: int  # the first N seeds of the suite


def _groups(suite: str, datasets: tuple[str, ...], algorithms: tuple[str, ...]
            ) -> tuple[Group, ...]:
    return tuple(Group(suite, d, a) for d in datasets for a in algorithms)


STAGES = (
    Stage("a", "Table 1 MNIST, all eight methods",
          _groups("table1", ("mnist",), TABLE1_METHODS), 3),
    Stage("b", "Table 1 Frozen-MNIST and Fashion-MNIST, every method the paper ran there",
          _groups("table1", ("frozen_mnist", "fashion_mnist"), TABLE1_METHODS), 3),
    Stage("c", "Table 1 CIFAR-10 MLP and Table 3 CNN, BP, DFA, DDTP-linear",
          _groups("table1", ("cifar10",), ("bp", "dfa", "ddtp-linear"))
          + _groups("table3", ("cifar10_cnn",), ("bp", "dfa", "ddtp-linear")), 3),
    Stage("d", "the rest of Tables 1-3, ten seeds",
          _groups("table1", ("mnist", "frozen_mnist", "fashion_mnist", "cifar10"), TABLE1_METHODS)
          + _groups("table2", ("mnist", "frozen_mnist", "fashion_mnist", "cifar10"),
                    TABLE1_METHODS)
          + _groups("table3", ("cifar10_cnn",), ("bp", "ddtp-linear", "ddtp-control", "dfa")),
          10),
)

# A rough prior, in seconds per seed and epoch (feedback-only epochs included), before a group
# has records of its own: MNIST measured for BP and DFA (2 seeds stacked, one thread, loaded
# machine: 13 and 22 minutes for 100 epochs), the others scaled by their float64 step times and
# feedback epochs in benchmarks/seed_batching.py; CIFAR-10 by its step-time ratio.
PRIOR = {"bp": 4, "dfa": 7, "ddtp-linear": 22, "dtp": 23, "ddtp-control": 30, "dtp-drl": 24,
         "dtp-pretrained": 40, "ddtp-rhl": 60}
DATASET_FACTOR = {"cifar10": 5, "cifar10_cnn": 40}


@dataclass(frozen=True)
class Partial:
    """The last checkpoint of a cell under way."""

    done: int  # epochs finished, feedback pre-training ones included
    total: int
    elapsed: float  # the cell's seconds so far
    resumes: bool | None  # whether `bench run` would resume it (None: unknown, see `why`)
    why: str = ""

    def seconds_left(self) -> float | None:
        """At the cell's own pace so far; None before its first epoch."""
        return self.elapsed * (self.total - self.done) / self.done if self.done else None


class Campaign:
    def __init__(self, out: Path, work: Path, seeds: int | None,
                 data: DataSettings | None = None):
        """``data``: where the datasets are, to tell whether checkpoints resume (their config
        hash names the data); default: ``bench run``'s."""
        self.out, self.work, self.seeds = out, work, seeds
        self.data = data or DataSettings()
        self.registry = load_registry()
        self.suites = {}

    def suite(self, name: str):
        if name not in self.suites:
            self.suites[name] = load_suite(ROOT / "suites" / f"{name}.yaml", self.registry)
        return self.suites[name]

    def cells(self, stage: Stage, group: Group) -> list:
        """The group's cells at the suite's protocol, for the stage's seeds."""
        suite = self.suite(group.suite)
        wanted = list(suite.seeds)[: self.seeds or stage.seeds]
        return [cell for cell in suite.cells(only=[group.algorithm], datasets=[group.dataset],
                                             registry=self.registry)
                if cell.seed in wanted and not cell.skip_reason]

    def record_path(self, root: Path, cell) -> Path:
        return root / cell.suite / cell.dataset_id / cell.algorithm_id / f"seed-{cell.seed}.json"

    def reference_record(self, cell) -> Record | None:
        """The cell's record in the reference folder, read as `bench` reads records."""
        return _record(ResultStore(self.out / cell.suite), cell)

    def state(self, cell) -> str:
        """done, stale (a record of other settings, an unfinished one or a file that is no
        record) or missing."""
        if not _exists(self.record_path(self.out, cell)):
            return "missing"
        record = self.reference_record(cell)
        if record is None or record.status not in FINISHED:
            return "stale"
        if not record.paper_protocol or _settings(record.config) != _settings(cell.config()):
            return "stale"
        return "done"

    def full_protocol(self, record: Record, cell) -> bool:
        """Whether ``record`` is of the suite's own protocol: no deviation, the suite's epochs."""
        return record.paper_protocol and record.epochs == cell.dataset.protocol.epochs

    def group_cells(self, group: Group) -> list:
        """Every seed's cell of the group (not only a stage's seeds)."""
        return [cell for cell in self.suite(group.suite).cells(
                    only=[group.algorithm], datasets=[group.dataset], registry=self.registry)
                if not cell.skip_reason]

    def seconds_per_seed(self, group: Group, pace: float | None = None) -> tuple[float, bool]:
        """(estimate, measured?) of one seed's wall time for the group's full protocol.
        ``pace``: this machine's, if already known (it reads every group's records)."""
        measured = self._measured(group)
        if measured is not None:
            return measured, True
        return self._prior(group) * (self._pace() if pace is None else pace), False

    def _measured(self, group: Group) -> float | None:
        """The mean wall time per seed of the group's finished records."""
        times = [r.wall_time for cell in self.group_cells(group)
                 if (r := self.reference_record(cell)) and r.status in FINISHED and r.wall_time]
        return sum(times) / len(times) if times else None

    def _prior(self, group: Group) -> float:
        epochs = self.suite(group.suite).datasets[group.dataset].protocol.epochs
        return PRIOR.get(group.algorithm, 40) * DATASET_FACTOR.get(group.dataset, 1) * epochs

    def _pace(self) -> float:
        """How fast this machine ran the groups with records, against their priors (median)."""
        groups = {group for stage in STAGES for group in stage.groups}
        ratios = [measured / self._prior(group) for group in sorted(groups, key=str)
                  if (measured := self._measured(group)) is not None]
        return median(ratios) if ratios else 1.0

    def partial(self, group: Group, cell) -> Partial | None:
        """The cell's checkpoint in the work folder, if one there can be read."""
        path = ResultStore(self.work / group.name).checkpoint_path(cell)
        if not _exists(path):  # a regular file: a FIFO would block the reading
            return None
        try:  # plain data only, as `bench run` reads it; anything else is no progress
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not state.keys() >= CHECKPOINT_KEYS:
                return None  # `bench run` would not resume it either
            progress = state["state"]
            done = int(progress["pretrained"]) + int(progress["epoch"])
            elapsed, config_hash = float(progress["elapsed"]), state["config_hash"]
        except Exception:
            return None
        trains_feedback = self.registry.get(cell.algorithm).cls.capabilities.trainable_feedback
        pretraining = cell.settings.schedule.feedback_pretraining_epochs if trains_feedback else 0
        total = pretraining + cell.dataset.protocol.epochs
        try:
            resolved, = with_inputs([cell], self.registry, self.data)
        except InputError as error:
            return Partial(done, total, elapsed, None, str(error))
        return Partial(done, total, elapsed, config_hash == resolved.config_hash())

    def missing(self, stage: Stage, group: Group) -> list:
        return [cell for cell in self.cells(stage, group) if self.state(cell) != "done"]

    def status(self, stages: list[Stage]) -> None:
        total_left, any_prior, pace = 0.0, False, self._pace()
        for stage in stages:
            print(f"list {stage.name}: {stage.title} (seeds: first {self.seeds or stage.seeds})")
            for group in stage.groups:
                cells = self.cells(stage, group)
                if not cells:
                    continue
                states = [self.state(cell) for cell in cells]
                left = [c for c, s in zip(cells, states, strict=True) if s != "done"]
                line = f"  {group.name:40} {states.count('done')}/{len(cells)} done"
                if left:
                    estimate, guessed, under_way = self._left(group, left, pace)
                    total_left += estimate
                    any_prior |= guessed
                    line += (f"; missing seeds {','.join(str(c.seed) for c in left)}"
                             + (f" ({states.count('stale')} stale)" if "stale" in states else "")
                             + f", {'~' if guessed else ''}{_hours(estimate)} left"
                             + (f"; {under_way}" if under_way else ""))
                print(line)
        print(f"time left: {'~' if any_prior else ''}{_hours(total_left)} of one process "
              "(one thread, seeds stacked); --jobs N divides it, roughly, up to the cores")

    def _left(self, group: Group, cells: list, pace: float | None = None
              ) -> tuple[float, bool, str]:
        """The time the missing cells still need, whether a prior went into it, and where
        those under way stand."""
        seconds, measured = self.seconds_per_seed(group, pace)
        total, guessed, partials = 0.0, False, []
        for cell in cells:
            partial = self.partial(group, cell)
            left = partial.seconds_left() if partial and partial.resumes is not False else None
            total += seconds if left is None else left
            guessed |= left is None and not measured
            if partial is not None:
                partials.append(partial)
        return total, guessed, _under_way(partials)

    def collect(self) -> int:
        """Copy the finished records of the work folder into the reference folder."""
        copied = 0
        for path, target in self.to_collect():
            if not target.is_file() or target.read_bytes() != path.read_bytes():
                try:  # never through a link in the reference folder
                    self.out.mkdir(parents=True, exist_ok=True)
                    write_atomically(target, path.read_bytes(), inside=self.out)
                except OSError as error:
                    raise InputError(f"cannot write {target}: {error.strerror or error}"
                                     ) from None
                copied += 1
        return copied

    def to_collect(self) -> list[tuple[Path, Path]]:
        """(record, its place in the reference folder) of every finished record of the work
        folder, cell by cell of the campaign's groups, read as `bench` reads records. A record
        of the suite's full protocol is never replaced by one of another protocol (a quick
        trial run into the work folder): that one is refused, in one line."""
        found = []
        for group in sorted({group for stage in STAGES for group in stage.groups}, key=str):
            work = ResultStore(self.work / group.name)
            for cell in self.group_cells(group):
                record = _record(work, cell)
                if record is None or record.status not in FINISHED:
                    continue
                path, target = work.path(cell), self.record_path(self.out, cell)
                committed = self.reference_record(cell)
                if committed is not None and self.full_protocol(committed, cell) \
                        and not self.full_protocol(record, cell):
                    print(f"refused: {path} ({_protocol(record)}) would replace {target}, a "
                          f"record of the suite's full protocol ({_protocol(committed)}); kept "
                          "the reference's", file=sys.stderr)
                    continue
                found.append((path, target))
        return found

    def check_data(self, groups: Sequence[Group]) -> None:
        """Raise the data layer's one line (the folder and the files expected) for the first
        dataset of ``groups`` that is not there, before any group starts."""
        sources = {self.suite(group.suite).datasets[group.dataset].source for group in groups}
        for source in sorted(sources):
            check_available(self.registry.dataset(source), self.data)

    def command(self, group: Group, seeds: list[int], args) -> list[str]:
        return bench_run(ROOT / "suites" / f"{group.suite}.yaml", group.dataset,
                         group.algorithm, seeds, self.work / group.name, device=args.device,
                         data_dir=args.data_dir, skip_checksums=args.skip_checksums,
                         extra=["--vectorize-seeds"])


def bench_run(suite_file: Path, dataset: str, entry: str, seeds: Sequence[int], out: Path, *,
              device: str, data_dir: Path | None, skip_checksums: bool,
              extra: Sequence[str] = ()) -> list[str]:
    """The `bench run` of some seeds of one (dataset, entry) of a suite, at its protocol but
    for what ``extra`` says, into ``out``."""
    command = [sys.executable, "-m", "bioplaus_bench", "run", str(suite_file),
               "--datasets", dataset, "--only", entry, "--only-seeds", ",".join(map(str, seeds)),
               *extra, "--out", str(out), "--quiet", "--device", device]
    if data_dir:
        command += ["--data-dir", str(data_dir)]
    if skip_checksums:
        command.append("--skip-checksums")
    return command


def run(campaign: Campaign, stages: list[Stage], args) -> int:
    """Run the missing cells of ``stages``; an ``InputError`` before any group starts when the
    data of one is not there or the work folder cannot be made."""
    pending = [(stage, group) for stage in stages for group in stage.groups
               if campaign.missing(stage, group)]
    campaign.check_data([group for _, group in pending])
    running: dict[Group, subprocess.Popen] = {}
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
                   "MKL_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}  # live logs
    logs = make_cache_folder(campaign.work / "logs", campaign.work)
    stopping: list[int] = []

    def stop(signum, frame):  # the children checkpoint and stop on their own signal
        stopping.append(signum)
        for process in running.values():
            process.send_signal(signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    failed = 0
    while (pending or running) and not stopping:
        while pending and len(running) < args.jobs and not stopping:
            stage, group = pending.pop(0)
            missing = campaign.missing(stage, group)
            if not missing:
                continue
            seeds = [cell.seed for cell in missing]
            under_way = _under_way([p for cell in missing
                                    if (p := campaign.partial(group, cell)) is not None])
            log = open(logs / f"{group.name.replace('/', '-')}.log", "a")  # noqa: SIM115
            print(f"{_now()} start {group.name} seeds {','.join(map(str, seeds))} (list "
                  f"{stage.name}; log {log.name})" + (f"; {under_way}" if under_way else ""),
                  flush=True)
            running[group] = subprocess.Popen(campaign.command(group, seeds, args), stdout=log,
                                              stderr=subprocess.STDOUT, env=environment)
        time.sleep(2)
        for group, process in list(running.items()):
            if process.poll() is not None:
                del running[group]
                failed += process.returncode not in (0, 130, 143)
                copied = campaign.collect()
                print(f"{_now()} end {group.name}: exit {process.returncode}, {copied} new "
                      "records in the reference folder", flush=True)
    for process in running.values():
        process.wait()
    campaign.collect()
    if stopping:
        print(f"stopped: finished records are in {campaign.out}; checkpoints in "
              f"{campaign.work}; run the same command to resume", flush=True)
        return 128 + stopping[0]
    return 1 if failed else 0


def _under_way(partials: list[Partial]) -> str:
    """Where a group's checkpoints stand: their epoch, and whether they resume there."""
    if not partials:
        return ""
    at = ", ".join(sorted({f"{p.done}/{p.total}" for p in partials}))
    resumes = {p.resumes for p in partials}
    unknown = next((p.why for p in partials if p.resumes is None), None)
    if unknown is not None:
        verdict = f"cannot tell whether it resumes ({unknown})"
    elif resumes == {True}:
        verdict = "resumes there"
    elif resumes == {False}:
        verdict = "checkpoints of other code or settings: starts over"
    else:
        verdict = "some checkpoints of other code or settings: those start over"
    return f"checkpoint at epoch {at} (pre-training included), {verdict}"


def _settings(config: dict) -> dict:
    """A cell's settings without the code and data identities (the record keeps those in its
    provenance; older code still gives a reference cell, which the table marks)."""
    return {key: value for key, value in config.items() if key != "inputs"}


def _exists(path: Path) -> bool:
    """Whether ``path`` is a regular file (or a link to one): nothing else is read, since a FIFO
    named like a record or checkpoint would block the reading."""
    return path.is_file()


def _record(store: ResultStore, cell) -> Record | None:
    """The cell's record in ``store``, read and checked as `bench` reads it (a file that is no
    record: None, with the store's warning); a special file is not opened."""
    return store.load(cell) if _exists(store.path(cell)) else None


def _protocol(record: Record) -> str:
    """A record's protocol in a few words: its epochs, and how it deviates from the suite's."""
    deviations = "" if record.paper_protocol else f", {'; '.join(record.deviations)}"
    return f"{record.epochs} epochs{deviations}"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _now() -> str:
    return time.strftime("%H:%M:%S")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("status", "run", "collect"))
    parser.add_argument("--stages", default=None,
                        help="lists to consider, e.g. a,b [default: every list]; run: the first "
                        "list not complete")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "reference")
    parser.add_argument("--work", type=Path, default=default_cache_dir() / "reference")
    parser.add_argument("--seeds", type=int, default=None, help="first N seeds in every list")
    parser.add_argument("--jobs", type=int, default=1, help="groups run at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per group")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--skip-checksums", action="store_true",
                        help="accept data whose checksums differ (the rebuilt CIFAR-10 copy)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    names = [stage.name for stage in STAGES]
    if args.stages is not None and not set(args.stages.split(",")) <= set(names):
        parser.error(f"--stages: expected some of {','.join(names)}, got '{args.stages}'")
    chosen = [s for s in STAGES if args.stages is None or s.name in args.stages.split(",")]
    for option in ("seeds", "jobs", "threads"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            parser.error(f"--{option}: expected a positive number, got {getattr(args, option)}")
    return one_line_errors(lambda: campaign_action(args, chosen))


def campaign_action(args, chosen: list[Stage]) -> int:
    for option, folder in (("--out", args.out), ("--work", args.work)):
        if (in_the_way := file_in_the_way(folder)) is not None:
            from_cache = folder == default_cache_dir() / "reference" and CACHE_ENV in os.environ
            raise InputError(f"{option} {folder}: {in_the_way} is a file; expected a folder"
                             + (f" (${CACHE_ENV}/reference by default)" if from_cache else ""))
    data = DataSettings(verify_checksums=not args.skip_checksums,
                        **({"root": args.data_dir} if args.data_dir else {}))
    campaign = Campaign(args.out, args.work, args.seeds, data)
    if args.action == "status":
        campaign.status(chosen)
        return 0
    if args.action == "collect":
        print(f"{campaign.collect()} new records in {campaign.out}")
        return 0
    if args.stages is None:  # the first list not complete, and what follows it
        while len(chosen) > 1 and not any(campaign.missing(chosen[0], g)
                                          for g in chosen[0].groups):
            chosen.pop(0)
    return run(campaign, chosen, args)


if __name__ == "__main__":
    sys.exit(main())
