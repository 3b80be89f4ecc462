"""All seeds of a cell in one computation: each seed's result, weights and checkpoint are its
serial run's (float64, to 1e-9 relative), for every built-in algorithm, through resumption,
divergence of one seed and chunking."""

from __future__ import annotations

import math

import pytest
import torch

from bioplaus_bench.data import DataSettings
from bioplaus_bench.execution.seed_group import train_seed_group
from bioplaus_bench.execution.setup import Environment
from bioplaus_bench.execution.training import train_cell
from bioplaus_bench.registry import load_registry
from bioplaus_bench.suite import load_suite
from tests.helpers import write_idx_dataset

BUILT_INS = ["bp", "dfa", "dtp", "dtp-pretrained", "dtp-drl", "ddtp-linear", "ddtp-rhl",
             "ddtp-control", "feedback-alignment", "usf", "brsf", "frsf", "kolen-pollack", "drtp",
             "pc", "ep"]
CNN = ["bp", "dfa", "ddtp-linear", "ddtp-control", "feedback-alignment", "usf", "brsf", "frsf",
       "kolen-pollack", "drtp"]

ADAM = "optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}"
TP = ("optimizer: {lr: 1.0e-5, betas: [0.9, 0.999], eps: 1.0e-8}\n"
      "    schedule: {feedback_pretraining_epochs: 1, extra_feedback_epochs: 1}\n"
      "    params: {feedback_lr: 1.0e-3, sigma: 0.1}")
TRAINABLE = {"dtp", "dtp-pretrained", "dtp-drl", "ddtp-linear", "ddtp-rhl", "ddtp-control"}
PARAMS = {"ddtp-rhl": "    params: {feedback_lr: 1.0e-3, sigma: 0.1, random_width: 16}"}


def suite_text(algorithms, *, epochs=2, log_interval=None) -> str:
    entries = []
    for name in algorithms:
        body = TP if name in TRAINABLE else ADAM
        if name in PARAMS:
            body = body.rsplit("\n", 1)[0] + "\n" + PARAMS[name]
        if log_interval:
            body += f"\n    metrics: {{log_interval: {log_interval}}}"
        entries.append(f"  {name}:\n    {body}")
    return f"""\
name: vectorised
seeds: [0, 1, 2]
precision: float64
datasets:
  mnist:
    source: mnist
    architecture: {{type: mlp, hidden: [12, 10]}}
    protocol: {{epochs: {epochs}, batch_size: 8, validation: 12, eval_batch_size: 5}}
  cnn:
    source: mnist
    architecture: {{type: cnn, conv_channels: [2], kernel_size: 3, hidden: [8]}}
    protocol: {{epochs: {epochs}, batch_size: 8, validation: 12, eval_batch_size: 5}}
  teacher:
    source: teacher
    options: {{n_train: 40, n_test: 10, hidden: [6]}}
    architecture: {{type: mlp, hidden: [9, 7]}}
    protocol: {{epochs: {epochs}, batch_size: 8, validation: 8}}
algorithms:
""" + "\n".join(entries) + "\n"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_idx_dataset(root, n_train=52, n_test=10)
    return Environment(data=DataSettings(root=root, cache_dir=root / "cache",
                                         verify_checksums=False))


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def seed_cells(tmp_path, registry, algorithm, dataset, **options):
    path = tmp_path / "suite.yaml"
    path.write_text(suite_text([algorithm], **options))
    cells = load_suite(path, registry).cells(only=[algorithm], datasets=[dataset])
    assert len(cells) == 3 and not any(c.skip_reason for c in cells)
    return cells


def serial(cells, cls, env, folder):
    folder.mkdir()
    return [train_cell(cell, cls, env, checkpoint=folder / f"{cell.seed}.ckpt") for cell in cells]


TIMINGS = {"seconds", "wall_time", "elapsed", "stacked_seeds"}


def assert_same(a, b, where="result"):
    """Equal up to 1e-9 relative for numbers and tensors (a tensor's elements relative to its
    largest), exactly otherwise; timings (and the label of a stack's timings) skipped."""
    if isinstance(a, dict):
        keys = set(a) - TIMINGS
        assert keys == set(b) - TIMINGS, where
        for key in keys:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{index}]")
    elif isinstance(a, torch.Tensor):
        assert a.shape == b.shape, where
        if a.is_floating_point():
            scale = float(b.abs().max()) if b.numel() else 0.0
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * scale + 1e-15,
                                       msg=lambda text: f"{where}: {text}")
        else:
            assert torch.equal(a, b), where
    elif isinstance(a, float) and not (math.isnan(a) and math.isnan(b)):
        # An angle is acos(cosine): near 0° a rounding error ε of the cosine is sqrt(2ε) rad,
        # so angles are compared to 1e-5° (a few ulps), everything else to 1e-9 relative.
        absolute = 1e-5 if "angle" in where else 1e-12
        assert a == pytest.approx(b, rel=1e-9, abs=absolute), where
    else:
        assert a == b, where


def checkpoint(path):
    return torch.load(path, weights_only=True)


def assert_seeds_match(cells, serial_dir, vector_dir, serial_results, vector_results):
    for cell, ours, theirs in zip(cells, vector_results, serial_results, strict=True):
        assert_same(ours, theirs, f"seed {cell.seed}")
        mine = checkpoint(vector_dir / f"{cell.seed}.ckpt")
        reference = checkpoint(serial_dir / f"{cell.seed}.ckpt")
        for key in ("network", "algorithm", "optimisers", "rng", "state"):
            assert_same(mine[key], reference[key], f"seed {cell.seed} checkpoint {key}")


def run_vectorised(cells, cls, env, folder, **options):
    """All of ``cells``'s seeds stacked (chunk: all of them, unless given; None: the automatic
    choice, which on a CPU runs a CNN's seeds serially)."""
    folder.mkdir(exist_ok=True)
    options.setdefault("chunk", len(cells))
    return train_seed_group(cells, cls, env,
                            checkpoints=[folder / f"{c.seed}.ckpt" for c in cells], **options)


@pytest.mark.parametrize("dataset, algorithm",
                         [("mnist", name) for name in BUILT_INS]
                         + [("cnn", name) for name in CNN]
                         + [("teacher", name) for name in BUILT_INS if name != "drtp"])
def test_every_seed_of_a_vectorised_run_is_its_serial_run(tmp_path, env, registry, dataset,
                                                          algorithm):
    cls = registry.get(algorithm).cls
    assert cls.capabilities.vectorize_seeds
    cells = seed_cells(tmp_path, registry, algorithm, dataset)
    expected = serial(cells, cls, env, tmp_path / "serial")
    results = run_vectorised(cells, cls, env, tmp_path / "vectorised")
    assert results is not None
    assert all(r["status"] == "ok" for r in expected)
    assert_seeds_match(cells, tmp_path / "serial", tmp_path / "vectorised", expected, results)
    # the seeds differ from each other: nothing was computed once for all
    assert results[0]["final"]["test_loss"] != results[1]["final"]["test_loss"]


@pytest.mark.parametrize("algorithm", ["bp", "ddtp-linear", "brsf"])
def test_logged_metrics_are_each_seeds_own(tmp_path, env, registry, algorithm):
    cls = registry.get(algorithm).cls
    cells = seed_cells(tmp_path, registry, algorithm, "mnist", log_interval=2)
    expected = serial(cells, cls, env, tmp_path / "serial")
    results = run_vectorised(cells, cls, env, tmp_path / "vectorised")
    assert expected[0]["metrics"] and "bp_angle" in expected[0]["metrics"][0]
    assert_seeds_match(cells, tmp_path / "serial", tmp_path / "vectorised", expected, results)


class Stop(Exception):
    pass


def stop_after(epochs):
    def callback(phase, done, total):
        if phase == "epoch" and done == epochs:
            raise Stop
    return callback


@pytest.mark.parametrize("algorithm", ["ddtp-linear", "dtp-pretrained", "kolen-pollack", "brsf"])
@pytest.mark.parametrize("resume", ["vectorised", "serial"])
def test_a_killed_vectorised_run_resumes_to_the_serial_result(tmp_path, env, registry, algorithm,
                                                              resume):
    cls = registry.get(algorithm).cls
    cells = seed_cells(tmp_path, registry, algorithm, "mnist", epochs=3)
    expected = serial(cells, cls, env, tmp_path / "serial")
    folder = tmp_path / "vectorised"
    with pytest.raises(Stop):
        run_vectorised(cells, cls, env, folder, on_epoch=stop_after(1))
    assert all(checkpoint(folder / f"{c.seed}.ckpt")["state"]["epoch"] == 1 for c in cells)
    if resume == "vectorised":
        results = run_vectorised(cells, cls, env, folder)
    else:  # the checkpoints are the serial run's: a serial run takes over
        results = [train_cell(c, cls, env, checkpoint=folder / f"{c.seed}.ckpt") for c in cells]
    assert_seeds_match(cells, tmp_path / "serial", folder, expected, results)


def test_a_serial_checkpoint_resumes_vectorised(tmp_path, env, registry):
    cls = registry.get("dtp-drl").cls
    cells = seed_cells(tmp_path, registry, "dtp-drl", "mnist", epochs=3)
    expected = serial(cells, cls, env, tmp_path / "serial")
    folder = tmp_path / "mixed"
    folder.mkdir()
    for cell in cells:
        with pytest.raises(Stop):
            train_cell(cell, cls, env, checkpoint=folder / f"{cell.seed}.ckpt",
                       on_epoch=stop_after(2))
    results = run_vectorised(cells, cls, env, folder)
    assert_seeds_match(cells, tmp_path / "serial", folder, expected, results)


def test_seeds_at_different_epochs_run_serially(tmp_path, env, registry):
    cls = registry.get("bp").cls
    cells = seed_cells(tmp_path, registry, "bp", "mnist", epochs=3)
    folder = tmp_path / "uneven"
    folder.mkdir()
    with pytest.raises(Stop):
        train_cell(cells[0], cls, env, checkpoint=folder / "0.ckpt", on_epoch=stop_after(1))
    notes = []
    assert run_vectorised(cells, cls, env, folder, note=notes.append) is None
    assert "different epochs" in notes[0]


def test_chunks_give_the_records_of_one_chunk(tmp_path, env, registry):
    cls = registry.get("ddtp-rhl").cls
    cells = seed_cells(tmp_path, registry, "ddtp-rhl", "mnist")
    whole = run_vectorised(cells, cls, env, tmp_path / "whole")
    notes = []
    chunked = run_vectorised(cells, cls, env, tmp_path / "chunked", chunk=2, note=notes.append)
    assert_seeds_match(cells, tmp_path / "whole", tmp_path / "chunked", whole, chunked)
    assert notes == ["mnist/ddtp-rhl: 3 seeds in 2 chunks of at most 2 (--seed-chunk)"]


def test_seeds_that_do_not_fit_in_memory_run_in_chunks(tmp_path, env, registry, monkeypatch):
    from bioplaus_bench.execution import seed_group

    cls = registry.get("bp").cls
    cells = seed_cells(tmp_path, registry, "bp", "mnist")
    whole = run_vectorised(cells, cls, env, tmp_path / "whole")
    first = seed_group.set_up_seed(cells[0], cls, env, None, seed_group.SamplePool())[0]
    one_seed = seed_group.seeds_per_chunk(first, env)
    free = seed_group._free_memory(env.device)
    monkeypatch.setattr(seed_group, "_free_memory", lambda device: 1.5 * free / one_seed)
    notes = []
    chunked = run_vectorised(cells, cls, env, tmp_path / "chunked", chunk=None,
                             note=notes.append)
    assert notes == ["mnist/bp: 3 seeds in 3 chunks of at most 1 (memory)"]
    assert_seeds_match(cells, tmp_path / "whole", tmp_path / "chunked", whole, chunked)


def test_on_a_cpu_seeds_are_stacked_only_where_it_pays(tmp_path, env, registry, monkeypatch):
    from bioplaus_bench.execution import seed_group

    cls = registry.get("bp").cls
    notes = []
    cnn = seed_cells(tmp_path, registry, "bp", "cnn")
    assert run_vectorised(cnn, cls, env, tmp_path / "cnn", chunk=None, note=notes.append) is None
    assert notes == ["cnn/bp: its seeds are not stacked: on a CPU a grouped convolution "
                     "of stacked seeds costs more than their own"]
    monkeypatch.setattr(seed_group, "CPU_STACKING_MAX_BYTES", 1000)
    mlp = seed_cells(tmp_path, registry, "bp", "mnist")
    assert run_vectorised(mlp, cls, env, tmp_path / "mlp", chunk=None, note=notes.append) is None
    assert "on a CPU stacking pays for small networks only" in notes[1]
    monkeypatch.setattr(seed_group, "CPU_STACKING_MAX_BYTES", 2 ** 30)
    assert run_vectorised(mlp, cls, env, tmp_path / "mlp", chunk=None) is not None


def diverging(base):
    """BP whose third update of layer 1 is NaN for the seeds whose first weight is positive."""

    class Diverging(base):
        def __init__(self, *args):
            super().__init__(*args)
            self.steps = 0

        def forward_updates(self, fwd):
            updates = super().forward_updates(fwd)
            self.steps += 1
            if self.steps == 3:
                weight = self.network.layer(1).linear.weight
                positive = weight[..., 0, 0] > 0
                updates[0] = torch.where(positive[..., None, None], math.nan, updates[0])
            return updates
    return Diverging


def test_a_diverging_seed_does_not_disturb_the_others(tmp_path, env, registry):
    cls = diverging(registry.get("bp").cls)
    path = tmp_path / "suite.yaml"
    path.write_text(suite_text(["bp"]).replace("seeds: [0, 1, 2]", "seeds: [0, 1, 2, 3, 4, 5]"))
    cells = load_suite(path, registry).cells(only=["bp"], datasets=["mnist"])
    expected = serial(cells, cls, env, tmp_path / "serial")
    statuses = [r["status"] for r in expected]
    assert "error" in statuses and "ok" in statuses  # some seeds fail, some do not
    results = run_vectorised(cells, cls, env, tmp_path / "vectorised")
    assert_seeds_match(cells, tmp_path / "serial", tmp_path / "vectorised", expected, results)


ENDINGS = {  # how the first seed of a stack ends early: the seeds, protocol, its status
    "diverged": ("[3, 0, 1]", "", "error"),
    "pruned": ("[1, 0]", ", pruning: {from_epoch: 2, min_train_accuracy: 0.2}", "ok"),
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_the_stack_goes_on_when_its_first_seed_ends(tmp_path, env, registry, ending):
    seeds, protocol, status = ENDINGS[ending]
    cls = diverging(registry.get("bp").cls) if ending == "diverged" else registry.get("bp").cls
    path = tmp_path / "suite.yaml"
    text = suite_text(["bp"], epochs=3).replace("seeds: [0, 1, 2]", f"seeds: {seeds}")
    path.write_text(text.replace("eval_batch_size: 5}", f"eval_batch_size: 5{protocol}}}", 1))
    cells = load_suite(path, registry).cells(only=["bp"], datasets=["mnist"])
    expected = serial(cells, cls, env, tmp_path / "serial")
    first, *others = expected
    assert first["status"] == status and len(first["history"]) < 3  # it ends early
    assert all(r["status"] == "ok" and len(r["history"]) == 3 for r in others)
    epochs = []

    def count(phase, done, total):
        epochs.append(done)
        if len(epochs) > 3:
            raise AssertionError(f"the stack did not stop: epochs {epochs}")
    results = run_vectorised(cells, cls, env, tmp_path / "vectorised", on_epoch=count)
    assert epochs == [1, 2, 3]
    assert_seeds_match(cells, tmp_path / "serial", tmp_path / "vectorised", expected, results)


# --- through the command line ------------------------------------------------------------------

CLI_SUITE = """\
name: tiny
seeds: [0, 1, 2]
precision: float64
datasets:
  teacher:
    source: teacher
    options: {n_train: 64, n_test: 32, hidden: [16, 16]}
    architecture: {type: mlp, hidden: [8, 8]}
    protocol: {epochs: 2, batch_size: 16, validation: 32}
algorithms:
  ddtp-linear:
    optimizer: {lr: 1.0e-5, betas: [0.9, 0.999], eps: 1.0e-8}
  sign-bp:
    optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}
"""

SERIAL_PLUGIN = '''\
import torch

from bioplaus_bench.api import Algorithm, hookimpl


class SignGradient(Algorithm):
    """Backprop's gradient's sign; it does not declare vectorize_seeds."""

    name = "sign-bp"
    record_graph = True

    def forward_updates(self, fwd):
        grads = torch.autograd.grad(fwd.loss, list(self.network.parameters()))
        return [g.sign() for g in grads]


@hookimpl
def bioplaus_bench_algorithms():
    return [SignGradient]
'''


def cli_records(folder):
    import json

    return {str(p.relative_to(folder)): json.loads(p.read_text())
            for p in sorted(folder.glob("*/*/seed-*.json"))}


def comparable(record):
    """A record without what differs between two runs of the same cell (timings, machine)."""
    return {key: value for key, value in record.items() if key not in ("provenance",)}


def test_bench_run_vectorize_seeds_gives_the_serial_records(tmp_path):
    from typer.testing import CliRunner

    from bioplaus_bench.cli import app

    suite = tmp_path / "tiny.yaml"
    suite.write_text(CLI_SUITE)
    plugin = tmp_path / "sign_bp.py"
    plugin.write_text(SERIAL_PLUGIN)
    runner = CliRunner()
    serial_run = runner.invoke(app, ["run", str(suite), "--plugin", str(plugin), "--quiet",
                                     "--out", str(tmp_path / "serial")])
    assert serial_run.exit_code == 0, serial_run.output
    vectorised = runner.invoke(app, ["run", str(suite), "--plugin", str(plugin), "--quiet",
                                     "--vectorize-seeds", "--seed-chunk", "2",
                                     "--out", str(tmp_path / "vectorised")])
    assert vectorised.exit_code == 0, vectorised.output
    assert "teacher/sign-bp: sign-bp does not declare vectorize_seeds; its seeds are not " \
           "stacked" in vectorised.output
    assert "teacher/ddtp-linear: 3 seeds in 2 chunks of at most 2 (--seed-chunk)" \
        in vectorised.output
    expected, records = cli_records(tmp_path / "serial"), cli_records(tmp_path / "vectorised")
    assert sorted(records) == sorted(expected) and len(records) == 6
    for name, record in records.items():
        assert record["status"] == "ok"
        assert_same(comparable(record), comparable(expected[name]), name)
    assert not list((tmp_path / "vectorised").rglob("*.ckpt"))  # finished: checkpoints dropped
    # the suite may ask for it too; a second run finds every record
    suite.write_text(CLI_SUITE.replace("precision: float64", "precision: float64\n"
                                       "vectorize_seeds: true"))
    again = runner.invoke(app, ["run", str(suite), "--plugin", str(plugin), "--quiet",
                                "--out", str(tmp_path / "vectorised")])
    assert again.exit_code == 0 and "6 from earlier runs" in again.output


def without_timings(value):
    """A record's results, at every depth: what two runs of the same arithmetic give bit for
    bit (timings and the machine apart)."""
    if isinstance(value, dict):
        return {key: without_timings(item) for key, item in value.items()
                if key not in TIMINGS and key != "provenance"}
    if isinstance(value, list):
        return [without_timings(item) for item in value]
    return value


def test_vectorize_seeds_with_jobs_runs_each_stack_in_a_worker_as_in_this_process(tmp_path):
    """`--vectorize-seeds -j 2`: each stack of seeds (and each seed of a rule that does not
    stack) runs in a worker process, and its records are those of the stack run in the `bench`
    process, bit for bit; the worker's notes reach the parent's log."""
    from typer.testing import CliRunner

    from bioplaus_bench.cli import app

    suite = tmp_path / "tiny.yaml"
    suite.write_text(CLI_SUITE)
    plugin = tmp_path / "sign_bp.py"
    plugin.write_text(SERIAL_PLUGIN)
    runner = CliRunner()
    base = ["run", str(suite), "--plugin", str(plugin), "--quiet", "--vectorize-seeds",
            "--seed-chunk", "2"]
    here = runner.invoke(app, [*base, "--out", str(tmp_path / "here")])
    assert here.exit_code == 0, here.output
    workers = runner.invoke(app, [*base, "-j", "2", "--out", str(tmp_path / "workers")])
    assert workers.exit_code == 0, workers.output
    assert "teacher/ddtp-linear: 3 seeds in 2 chunks of at most 2 (--seed-chunk)" \
        in workers.output  # said in the worker
    expected, records = cli_records(tmp_path / "here"), cli_records(tmp_path / "workers")
    assert sorted(records) == sorted(expected) and len(records) == 6
    for name, record in records.items():
        assert record["status"] == "ok", name
        assert without_timings(record) == without_timings(expected[name]), name
    assert records["teacher/ddtp-linear/seed-0.json"]["stacked_seeds"] == 2
    assert not list((tmp_path / "workers").rglob("*.ckpt"))


def test_the_seeds_of_one_stack_carry_one_finish_time(tmp_path, monkeypatch):
    """A stack's records are told apart from seeds run alone by what they share, the finish
    time among it: a clock that ticks between two seeds' records must not split the stack."""
    import itertools
    from datetime import datetime, timedelta

    from typer.testing import CliRunner

    from bioplaus_bench.cli import app
    from bioplaus_bench.results import store

    ticks = itertools.count()

    class TickingClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 1, 1, tzinfo=tz) + timedelta(seconds=next(ticks))

    # under store.timestamp, not over it: a stamp taken per record, by any module that
    # imports timestamp, differs
    monkeypatch.setattr(store, "datetime", TickingClock)
    suite = tmp_path / "tiny.yaml"
    suite.write_text(CLI_SUITE)
    result = CliRunner().invoke(app, ["run", str(suite), "--quiet", "--vectorize-seeds",
                                      "--only", "ddtp-linear", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    records = cli_records(tmp_path / "out")
    assert [r["stacked_seeds"] for r in records.values()] == [3, 3, 3]
    assert len({r["provenance"]["finished_at"] for r in records.values()}) == 1


# In every process that loads it, stacking does not pay, as for the CIFAR-10 MLP on a CPU.
NO_STACKING_PLUGIN = SERIAL_PLUGIN + """
import bioplaus_bench.execution.seed_group as seed_group

seed_group.CPU_STACKING_MAX_BYTES = 0
"""


def test_with_jobs_seeds_that_do_not_stack_run_side_by_side_each_in_a_worker(tmp_path,
                                                                              monkeypatch):
    """`--vectorize-seeds -j 2`: a stack whose seeds the worker finds it cannot stack is split
    by the parent into its seeds, each a unit of its own, run side by side (not one after the
    other in one worker while the other waits; each record kept as its seed ends), and they are
    the serial run's records, bit for bit. `--seed-chunk 1` splits a stack the same way."""
    from typer.testing import CliRunner

    from bioplaus_bench.cli import app
    from bioplaus_bench.execution import seed_group

    # the plugin lowers the limit in this process too (the serial run imports it here): put
    # back afterwards, or every later test's stacks are split
    monkeypatch.setattr(seed_group, "CPU_STACKING_MAX_BYTES", seed_group.CPU_STACKING_MAX_BYTES)
    suite = tmp_path / "tiny.yaml"
    suite.write_text(CLI_SUITE)
    plugin = tmp_path / "no_stacking.py"
    plugin.write_text(NO_STACKING_PLUGIN)
    runner = CliRunner()
    base = ["run", str(suite), "--plugin", str(plugin), "--quiet", "--only", "ddtp-linear"]
    serial = runner.invoke(app, [*base, "--out", str(tmp_path / "serial")])
    assert serial.exit_code == 0, serial.output
    expected = cli_records(tmp_path / "serial")
    for options, said in (
            ([], ["teacher/ddtp-linear: its seeds are not stacked: on a CPU stacking pays for "
                  "small networks only",  # the worker's note
                  "teacher/ddtp-linear: its 3 seeds run side by side, one a worker"]),
            (["--seed-chunk", "1"], ["teacher/ddtp-linear: 3 seeds in 3 chunks of at most 1 "
                                     "(--seed-chunk), each in a worker"])):
        out = tmp_path / f"workers{len(options)}"
        workers = runner.invoke(app, [*base, "--vectorize-seeds", "-j", "2", *options,
                                      "--out", str(out)])
        assert workers.exit_code == 0, workers.output
        assert all(line in workers.output for line in said), workers.output
        records = cli_records(out)
        assert sorted(records) == sorted(expected) and len(records) == 3
        for name, record in records.items():
            assert record["status"] == "ok", name
            assert without_timings(record) == without_timings(expected[name]), name


@pytest.mark.slow
def test_a_stack_that_kills_its_worker_gives_error_records_for_its_seeds(tmp_path):
    """With `--vectorize-seeds -j 2`, a worker that dies mid-stack ends its seeds as `error`
    records (the run does not hang), and the other stack's seeds are kept."""
    from typer.testing import CliRunner

    from bioplaus_bench.cli import app

    suite = tmp_path / "tiny.yaml"
    suite.write_text(CLI_SUITE.replace("  sign-bp:", "  killer:"))
    plugin = tmp_path / "killer.py"
    plugin.write_text(KILLER_PLUGIN)
    result = CliRunner().invoke(app, ["run", str(suite), "--plugin", str(plugin), "--quiet",
                                      "--vectorize-seeds", "-j", "2",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    statuses = {name: record["status"] for name, record in cli_records(tmp_path / "out").items()}
    assert statuses == {f"teacher/{entry}/seed-{seed}.json": status for entry, status in
                        (("ddtp-linear", "ok"), ("killer", "error")) for seed in (0, 1, 2)}
    killed = cli_records(tmp_path / "out")["teacher/killer/seed-2.json"]
    assert killed["reason"].startswith("BrokenProcessPool")


@pytest.mark.parametrize("args, message", [
    (["--vectorize-seeds", "--executor", "ray"], "use it with the local executor (-j N runs N "
     "such stacks at once)"),
    (["--seed-chunk", "2"], "--seed-chunk needs --vectorize-seeds"),
])
def test_vectorize_seeds_refuses_what_it_cannot_do(tmp_path, args, message):
    from typer.testing import CliRunner

    from bioplaus_bench.cli import app

    suite = tmp_path / "tiny.yaml"
    suite.write_text(CLI_SUITE.replace("  sign-bp:\n    optimizer: {lr: 1.0e-3, betas: [0.9, "
                                       "0.999], eps: 1.0e-8}\n", ""))
    result = CliRunner().invoke(app, ["run", str(suite), "--quiet", *args])
    assert result.exit_code == 2 and message in result.output


GLOBAL_NOISE = '''\
import torch

from bioplaus_bench.api import Algorithm, Capabilities, hookimpl


class NoisyGradient(Algorithm):
    """BP plus noise from the global generator: it claims vectorize_seeds wrongly."""

    name = "noisy-bp"
    record_graph = True
    capabilities = Capabilities(mlp=True, vectorize_seeds=True)

    def forward_updates(self, fwd):
        grads = torch.autograd.grad(fwd.loss.sum(), list(self.network.parameters()))
        return [g + 1e-3 * torch.randn_like(g) for g in grads]


@hookimpl
def bioplaus_bench_algorithms():
    return [NoisyGradient]
'''

# A stackable rule whose first step ends its process, as a crashing extension would.
KILLER_PLUGIN = GLOBAL_NOISE.replace('"noisy-bp"', '"killer"').replace(
    "        grads = torch.autograd.grad(fwd.loss.sum(), list(self.network.parameters()))\n"
    "        return [g + 1e-3 * torch.randn_like(g) for g in grads]\n",
    "        __import__('os')._exit(7)\n")


def test_check_plugin_catches_a_rule_that_vectorises_wrongly(tmp_path):
    from typer.testing import CliRunner

    from bioplaus_bench.cli import app

    plugin = tmp_path / "noisy.py"
    plugin.write_text(GLOBAL_NOISE)
    result = CliRunner().invoke(app, ["check-plugin", str(plugin), "--plugin", str(plugin)])
    assert result.exit_code == 1
    line = next(line for line in result.output.splitlines() if "vectorised seeds [mlp]" in line)
    assert line.startswith("FAIL") and "seed 0's update of layer 1 weight at step 1" in line
    fixed = GLOBAL_NOISE.replace("torch.randn_like(g)", "randn_like(g)").replace(
        "Capabilities, hookimpl", "Capabilities, hookimpl, randn_like")
    plugin = tmp_path / "fixed.py"
    plugin.write_text(fixed)
    result = CliRunner().invoke(app, ["check-plugin", str(plugin), "--plugin", str(plugin)])
    assert "PASS  vectorised seeds [mlp]" in result.output, result.output
