"""Loading plugins: a ``--plugin`` file imports the modules next to it (and says where it looked
when one is missing; a helper named like another module is refused), an unknown algorithm name
says where algorithms come from, and ``bench run --only`` loads only the plugins it needs."""

import importlib.metadata
import json
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bioplaus_bench import registry as plugins
from bioplaus_bench.cli import app
from bioplaus_bench.errors import PluginError
from bioplaus_bench.execution.executors.execute import _worker_registry
from bioplaus_bench.execution.inputs import code_identity, describe_code
from bioplaus_bench.registry import Wanted, load_registry
from bioplaus_bench.suite import load_suite

runner = CliRunner()

# Backprop through the public API, named NAME, scaled by the helper's SCALE.
RULE = '''\
import torch

from bioplaus_bench.api import Algorithm, Capabilities, hookimpl
from HELPER import SCALE


class Rule(Algorithm):
    name = "NAME"
    capabilities = Capabilities(mlp=True)
    record_graph = True

    def forward_updates(self, fwd):
        grads = torch.autograd.grad(fwd.loss, list(self.network.parameters()))
        return [SCALE * g for g in grads]


@hookimpl
def bioplaus_bench_algorithms():
    return [Rule]
'''

SUITE = """\
name: loading
seeds: [0]
precision: float64
datasets:
  teacher:
    source: teacher
    options: {n_train: 32, n_test: 16, hidden: [8]}
    architecture: {type: mlp, hidden: [6]}
    protocol: {epochs: 1, batch_size: 16, validation: 16}
algorithms:
  bp: {optimizer: {lr: 1.0e-3}}
"""


def unique(prefix: str) -> str:
    """A module name no other test (or earlier run in this process) has imported."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def rule_file(folder: Path, name: str, helper: str, scale: str = "1.0") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{helper}.py").write_text(f"SCALE = {scale}\n")
    path = folder / f"{unique('rule')}.py"
    path.write_text(RULE.replace("HELPER", helper).replace("NAME", name))
    return path


def test_a_plugin_file_imports_a_module_next_to_it_without_leaving_its_folder_on_the_path(tmp_path):
    helper = unique("rule_helpers")
    plugin = rule_file(tmp_path / "rules", "helped-rule", helper)
    path_before = list(sys.path)
    result = runner.invoke(app, ["check-plugin", str(plugin)])
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.stdout
    assert sys.path == path_before
    assert Path(sys.modules[helper].__file__).parent == plugin.parent
    # The helper is part of the algorithm's code: editing it re-runs the cells.
    cls = load_registry([plugin]).get("helped-rule").cls
    before = code_identity(cls)
    assert f"{helper}.py" in before["files"] and plugin.name in before["files"]
    (plugin.parent / f"{helper}.py").write_text("SCALE = 2.0\n")
    assert code_identity(cls)["source_sha256"] != before["source_sha256"]


def test_a_module_missing_next_to_the_plugin_is_reported_with_the_folder_searched(tmp_path):
    helper = unique("rule_helpers")
    plugin = rule_file(tmp_path, "lost-rule", helper)
    plugin.write_text(plugin.read_text().replace(f"from {helper} import", f"from {helper}s import"))
    result = runner.invoke(app, ["check-plugin", str(plugin)])
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert f"failed to import: ModuleNotFoundError: No module named '{helper}s'" in message
    assert f"looked for a module '{helper}s' next to the plugin file, in {tmp_path}" in message
    assert "among the installed packages" in message
    assert f"(did you mean '{helper}'?)" in message


def test_a_relative_import_is_explained(tmp_path):
    helper = unique("rule_helpers")
    plugin = rule_file(tmp_path, "relative-rule", helper)
    plugin.write_text(plugin.read_text().replace(f"from {helper} import", f"from .{helper} import"))
    with pytest.raises(PluginError, match="import a module next to it by its plain name"):
        load_registry([plugin])


def test_a_helper_named_like_another_module_is_refused(tmp_path):
    # Named like a standard-library module: the plugin would get the library's.
    plugin = rule_file(tmp_path / "a", "stdlib-rule", "json")
    with pytest.raises(PluginError) as error:
        load_registry([plugin])
    assert f"imports 'json', which is both {tmp_path / 'a' / 'json.py'} next to it and the " \
           "standard library's module of that name" in str(error.value)
    assert f"e.g. {plugin.stem}_json.py" in str(error.value)
    # Named like another plugin folder's helper, already imported: it would get that one.
    shared = unique("shared_helpers")
    first = rule_file(tmp_path / "b", "first-rule", shared)
    second = rule_file(tmp_path / "c", "second-rule", shared)
    assert "first-rule" in load_registry([first]).algorithms
    with pytest.raises(PluginError, match=f"the module already imported from "
                                          f"{tmp_path / 'b' / shared}.py"):
        load_registry([first, second])


def test_an_unknown_algorithm_suggests_plugin_files_and_installed_packages(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE + "  my-rul: {optimizer: {lr: 1.0e-3}}\n")
    for result in (runner.invoke(app, ["validate", str(suite)]),
                   runner.invoke(app, ["check-plugin", "my-rul"])):
        assert result.exit_code == 2
        message = " ".join(result.stderr.split())
        assert "'my-rul'" in message
        assert "an algorithm in a plugin file is loaded with --plugin FILE" in message
        assert "entry-point group 'bioplaus_bench.plugins' (`pip install` it" in message
    suite.write_text(SUITE + "  dfb: {optimizer: {lr: 1.0e-3}}\n")
    result = runner.invoke(app, ["validate", str(suite)])
    assert "unknown algorithm 'dfb' (did you mean 'dfa'?)" in result.stderr


# --- --only: only the plugins the chosen entries need ------------------------------------------

PROVIDER = '''\
import torch

from bioplaus_bench.api import Algorithm, Capabilities, hookimpl


class Opaque(Algorithm):
    name = "opaque-rule"
    capabilities = Capabilities(mlp=True)
    record_graph = True

    def forward_updates(self, fwd):
        return list(torch.autograd.grad(fwd.loss, list(self.network.parameters())))


@hookimpl
def bioplaus_bench_algorithms():
    return [Opaque]
'''


@pytest.fixture()
def installed(monkeypatch, tmp_path):
    """Three installed-looking plugins besides the real ones: one that raises on import, one
    that leaves a mark when imported (a slow one), and one whose entry-point name and module
    tell nothing of the algorithm it provides."""
    folder = tmp_path / "site"
    folder.mkdir()
    broken, slow, opaque = unique("broken_plugin"), unique("slow_plugin"), unique("ep_module")
    mark = tmp_path / "slow-plugin-imported"
    (folder / f"{broken}.py").write_text("raise RuntimeError('half-written plugin')\n")
    (folder / f"{slow}.py").write_text(f"from pathlib import Path\nPath({str(mark)!r}).touch()\n")
    (folder / f"{opaque}.py").write_text(PROVIDER)
    monkeypatch.syspath_prepend(str(folder))
    added = [importlib.metadata.EntryPoint(name=name, value=value, group=plugins.ENTRY_POINT_GROUP)
             for name, value in (("half-written", broken), ("slow", slow), ("zzz", opaque))]
    real = plugins.entry_points
    monkeypatch.setattr(plugins, "entry_points", lambda **selection: [*real(**selection), *added])
    return mark


def test_only_loads_no_installed_plugin_the_chosen_entries_do_not_need(installed, tmp_path):
    mine = tmp_path / "mine.py"
    mine.write_text(PROVIDER.replace('"opaque-rule"', '"mine"'))
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE + "  mine: {optimizer: {lr: 1.0e-3}, params: {anything: 1}}\n"
                     "  other: {algorithm: opaque-rule, optimizer: {lr: 1.0e-3}}\n")
    out = tmp_path / "r"
    args = ["run", str(suite), "--plugin", str(mine), "--out", str(out), "--quiet"]
    result = runner.invoke(app, [*args, "--only", "bp"])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr and not installed.exists()
    assert json.loads((out / "teacher" / "bp" / "seed-0.json").read_text())["status"] == "ok"
    assert not (out / "teacher" / "mine").exists()
    # A --plugin file is always imported (it may stand in for a built-in the entries use): a
    # broken one stops the run before anything runs, with --only or without.
    mine.write_text("raise SystemExit('work in progress')\n")
    broken = [*args[:3], str(tmp_path / "broken.py"), *args[4:]]
    mine.rename(tmp_path / "broken.py")
    for only in (["--only", "bp"], []):
        result = runner.invoke(app, [*broken, *only])
        assert result.exit_code == 2 and "broken.py failed to import: SystemExit" in result.stderr


def test_only_still_finds_an_entry_point_whose_name_tells_nothing(installed, tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE + "  other: {algorithm: opaque-rule, optimizer: {lr: 1.0e-3}}\n")
    out = tmp_path / "r"
    result = runner.invoke(app, ["run", str(suite), "--out", str(out), "--quiet",
                                 "--only", "other"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "teacher" / "other" / "seed-0.json").read_text())["status"] == "ok"
    registry = load_registry(wanted=Wanted(algorithms=frozenset({"opaque-rule"})))
    assert "opaque-rule" in registry.algorithms and registry.complete
    assert load_registry(wanted=Wanted(algorithms=frozenset({"bp"}))).complete is False


def install(monkeypatch, site: Path, source: str, entry_name: str) -> str:
    """``source`` as an installed plugin: a module on the path with an entry point (its name)."""
    site.mkdir()
    module = unique("installed_plugin")
    (site / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(site))
    entry = importlib.metadata.EntryPoint(name=entry_name, value=module,
                                          group=plugins.ENTRY_POINT_GROUP)
    real = plugins.entry_points
    monkeypatch.setattr(plugins, "entry_points", lambda **selection: [*real(**selection), entry])
    return module


def test_only_never_lets_an_installed_plugin_stand_in_for_a_plugin_file(monkeypatch, tmp_path):
    """An installed entry point named after the algorithm would be tried first among entry
    points; the file the user named still wins (without --only too, with a warning)."""
    install(monkeypatch, tmp_path / "site", PROVIDER, "opaque-rule")
    mine = tmp_path / "mine.py"
    mine.write_text(PROVIDER)
    registry = load_registry([mine], Wanted(algorithms=frozenset({"opaque-rule"})))
    assert registry.get("opaque-rule").origin == "file" and not registry.complete
    everything = load_registry([mine])
    assert everything.get("opaque-rule").source == str(mine.resolve())
    assert any("two plugins claim the algorithm name 'opaque-rule'" in w for w in everything.warnings)


def test_a_worker_loads_only_what_its_cell_needs(installed, tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE)
    cell, = load_suite(suite, load_registry()).cells()
    assert installed.exists()  # the full load above imported every plugin
    installed.unlink()
    registry = _worker_registry([], cell)
    assert "bp" in registry and not registry.complete
    assert not registry.warnings and not installed.exists()


def test_a_suite_read_for_only_needs_its_datasets_and_the_chosen_entries(tmp_path):
    from bioplaus_bench.suite.load import wanted_plugins

    suite = tmp_path / "s.yaml"
    suite.write_text(textwrap.dedent("""\
        datasets:
          a: {source: teacher, architecture: {type: funnel}}
          b: {source: blobs}
        algorithms:
          x: {algorithm: learned-dfa, metrics: {extra: [update-norm]}}
          y: {datasets: {a: {metrics: {extra: [other-metric]}}}}
          z: {}
        """))
    wanted = wanted_plugins(suite, [], ["x", "y", "missing"], "local")
    assert wanted == Wanted(algorithms=frozenset({"learned-dfa", "y"}),
                            datasets=frozenset({"teacher", "blobs"}),
                            architectures=frozenset({"funnel", "mlp"}),
                            metrics=frozenset({"update-norm", "other-metric"}),
                            executors=frozenset({"local"}))
    suite.write_text("datasets: [1]\n")
    assert wanted_plugins(suite, [], ["x"]) is None


# --- a plugin named like a built-in added later (an upgrade) -------------------------------------

MY_DRTP = PROVIDER.replace('"opaque-rule"', '"drtp"')  # for every task, unlike the built-in
CLASH = "two plugins claim the algorithm name 'drtp': bioplaus_bench_plugins.drtp"


def test_a_plugin_file_named_like_a_built_in_is_used_and_the_warning_says_how_to_run_both(
        tmp_path):
    mine = tmp_path / "my_drtp.py"
    mine.write_text(MY_DRTP)
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE + "  drtp: {optimizer: {lr: 1.0e-3}}\n")
    out = tmp_path / "r"
    args = ["run", str(suite), "--plugin", str(mine), "--out", str(out), "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert CLASH in result.stderr and f"{mine.resolve()} [file]" in result.stderr
    assert "the --plugin file's is used; to run both, rename one" in result.stderr
    # The built-in DRTP is for classification only: it would have skipped the teacher task.
    record = json.loads((out / "teacher" / "drtp" / "seed-0.json").read_text())
    assert record["status"] == "ok"
    only = runner.invoke(app, [*args, "--only", "bp", "--force"])
    assert only.exit_code == 0, only.output


def test_an_installed_plugin_named_like_a_built_in_stops_only_what_uses_the_name(
        monkeypatch, tmp_path):
    site = tmp_path / "site"
    module = install(monkeypatch, site, MY_DRTP, "my-drtp")
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE + "  drtp: {optimizer: {lr: 1.0e-3}}\n")
    out = tmp_path / "r"
    args = ["run", str(suite), "--out", str(out), "--quiet"]

    used = runner.invoke(app, args)
    assert used.exit_code == 2
    message = used.stderr.strip().splitlines()[-1]
    assert message.startswith("error: ") and CLASH in message
    assert f"{module} (unknown distribution) [entry point]" in message
    for way in ("rename one (the `name` of its algorithm class)", "uninstall one",
                "load the one to use from a file with --plugin FILE"):
        assert way in message
    assert not out.exists()

    assert runner.invoke(app, [*args, "--only", "bp"]).exit_code == 0
    alone = tmp_path / "bp.yaml"
    alone.write_text(SUITE)
    other = runner.invoke(app, ["run", str(alone), "--out", str(tmp_path / "b"), "--quiet"])
    assert other.exit_code == 0, other.output  # every plugin loads: a warning, not an error
    assert CLASH in other.stderr and "'drtp' cannot run until then (other algorithms can)" \
        in other.stderr
    # The way the message gives: the plugin's file, named with --plugin, is used.
    chosen = runner.invoke(app, [*args, "--plugin", str(site / f"{module}.py")])
    assert chosen.exit_code == 0, chosen.output
    assert json.loads((out / "teacher" / "drtp" / "seed-0.json").read_text())["status"] == "ok"


# --- a --plugin file always wins, and a record of one implementation is kept from the other -----

MY_PC = PROVIDER.replace('"opaque-rule"', '"pc"')  # backprop, named like the built-in PC


def code_files(record_path: Path) -> list[str]:
    return json.loads(record_path.read_text())["config"]["inputs"]["code"]["files"]


def test_a_plugin_file_wins_over_a_built_in_with_only_too(tmp_path):
    mine = tmp_path / "my_pc.py"
    mine.write_text(MY_PC)
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE + "  pc: {optimizer: {lr: 1.0e-3}}\n")
    out = tmp_path / "r"
    result = runner.invoke(app, ["run", str(suite), "--plugin", str(mine), "--out", str(out),
                                 "--quiet", "--only", "pc"])
    assert result.exit_code == 0, result.output
    assert "two plugins claim the algorithm name 'pc'" in result.stderr
    assert "my_pc.py" in code_files(out / "teacher" / "pc" / "seed-0.json")
    # Whatever the command needs: the file is imported and its algorithm used.
    registry = load_registry([mine], Wanted(algorithms=frozenset({"pc"})))
    assert registry.get("pc").origin == "file" and registry.files == (str(mine.resolve()),)
    # A worker (-j, Ray) loads what its cell needs the same way: the file's algorithm.
    cell, = load_suite(suite, registry, only=["pc"]).cells(only=["pc"], registry=registry)
    assert _worker_registry([str(mine.resolve())], cell).get("pc").origin == "file"


@pytest.mark.parametrize("name, first, then", [
    ("pc", "file", "built-in"), ("pc", "built-in", "file"),
    # The built-in DRTP skips the teacher task (classification only): a skipped cell, which
    # has no code identity, must not replace the file's record either.
    ("drtp", "file", "built-in")])
def test_a_finished_record_is_not_replaced_by_another_implementation_of_its_name(
        tmp_path, name, first, then):
    mine = tmp_path / f"my_{name}.py"
    mine.write_text(PROVIDER.replace('"opaque-rule"', f'"{name}"'))
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE + f"  {name}: {{optimizer: {{lr: 1.0e-3}}}}\n")
    out = tmp_path / "r"
    uses = {"file": ["--plugin", str(mine)], "built-in": []}
    base = ["run", str(suite), "--out", str(out), "--quiet"]
    assert runner.invoke(app, [*base, *uses[first]]).exit_code == 0
    record = out / "teacher" / name / "seed-0.json"
    kept = record.read_text()
    made_by = {"file": f"the code in algorithm.py, my_{name}.py (no installed package",
               "built-in": "the installed package bioplaus-bench "}
    for only in ([], ["--only", name]):
        refused = runner.invoke(app, [*base, *uses[then], *only])
        assert refused.exit_code == 2, refused.output
        line = refused.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: {record} is a finished record of '{name}' made by "
                               f"{made_by[first]}")
        assert f"this run's '{name}' is {made_by[then]}" in line
        assert line.endswith("replace the record with --force, or write to another results "
                             "folder with --out")
        assert record.read_text() == kept
    # The user says so: the other implementation's record replaces it.
    forced = runner.invoke(app, [*base, *uses[then], "--force"])
    assert forced.exit_code == 0, forced.output
    assert record.read_text() != kept


def test_an_edited_plugin_file_re_runs_its_cells_as_before(tmp_path):
    """The same implementation, edited (or given a helper): re-run without --force."""
    helper = unique("drtp_helpers")
    mine = rule_file(tmp_path, "drtp", helper)
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE + "  drtp: {optimizer: {lr: 1.0e-3}}\n")
    args = ["run", str(suite), "--plugin", str(mine), "--out", str(tmp_path / "r"), "--quiet"]
    assert runner.invoke(app, args).exit_code == 0
    (tmp_path / f"{helper}.py").write_text("SCALE = 0.5\n")
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "1 from earlier runs" in again.stderr  # bp's; drtp ran again


def test_the_table_does_not_judge_a_plugin_files_cells_by_the_built_in_of_its_name(tmp_path):
    from bioplaus_bench.results.numbers import CODE_NOTE

    mine = tmp_path / "my_pc.py"
    mine.write_text(MY_PC)
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE + "  pc: {optimizer: {lr: 1.0e-3}}\n")
    out = tmp_path / "r"
    assert runner.invoke(app, ["run", str(suite), "--plugin", str(mine), "--out", str(out),
                               "--quiet"]).exit_code == 0
    table = runner.invoke(app, ["table", str(out)])
    assert table.exit_code == 0, table.output
    assert "†" not in table.stdout and CODE_NOTE not in table.stdout  # not "code changed since"


def test_a_study_is_not_resumed_by_another_implementation_of_its_algorithm(tmp_path):
    pytest.importorskip("optuna", reason="optuna is not installed (pip install 'bioplaus-bench[tune]')")
    mine = tmp_path / "my_pc.py"
    mine.write_text(MY_PC)
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.replace("datasets:", "tuning: {trials: 1}\ndatasets:")
                     + "  pc:\n    optimizer: {lr: 1.0e-3}\n"
                     "    search: {optimizer.lr: {low: 1.0e-4, high: 1.0e-1, log: true}}\n")
    study = tmp_path / "r" / "tuning" / "teacher" / "pc.db"
    args = ["tune", str(suite), "--only", "pc", "--out", str(tmp_path / "r")]
    first = runner.invoke(app, [*args, "--trials", "1", "--plugin", str(mine)])
    assert first.exit_code == 0, first.output
    resumed = runner.invoke(app, [*args, "--trials", "2"])
    assert resumed.exit_code == 2, resumed.output
    assert resumed.stderr.strip().splitlines()[-1] == (
        f"error: {study}: the trials of this study were run by the code in algorithm.py, "
        f"my_pc.py (no installed package: a --plugin file); this search's 'pc' is "
        f"{describe_code(code_identity(load_registry().get('pc').cls))}: move the study away "
        "to start another")
    again = runner.invoke(app, [*args, "--trials", "2", "--plugin", str(mine)])
    assert again.exit_code == 0, again.output
    assert "teacher/pc: 1 of 2 trials finished earlier" in again.stderr


@pytest.mark.slow
def test_worker_processes_run_the_plugin_files_algorithm_not_the_built_in_of_its_name(tmp_path):
    """Workers loaded what their cell needed and stopped at the built-in `pc` (with or without
    --only): its numbers were recorded under the file's code identity."""
    mine = tmp_path / "my_pc.py"
    mine.write_text(MY_PC)
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.replace("seeds: [0]", "seeds: [0, 1]")
                     + "  pc: {optimizer: {lr: 1.0e-3}}\n")
    finals = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"j{jobs}"
        result = runner.invoke(app, ["run", str(suite), "--plugin", str(mine), "--out", str(out),
                                     "--quiet", "-j", jobs])
        assert result.exit_code == 0, result.output
        finals[jobs] = [json.loads((out / "teacher" / "pc" / f"seed-{seed}.json").read_text())
                        ["final"] for seed in (0, 1)]
    assert finals["2"] == finals["1"]


def test_implementations_are_told_apart_by_package_or_files():
    from bioplaus_bench.execution.inputs import same_implementation

    built_in = {"files": ["algorithm.py", "predictive_coding.py"], "source_sha256": "a",
                "distribution": "bioplaus-bench 0.1.0"}
    mine = {"files": ["algorithm.py", "my_pc.py"], "source_sha256": "b"}
    assert same_implementation(built_in, {**built_in, "source_sha256": "c",
                                          "distribution": "bioplaus-bench 0.2.0"})  # upgraded
    assert same_implementation(mine, {**mine, "source_sha256": "c"})  # edited
    assert same_implementation(mine, {"files": [*mine["files"], "helpers.py"]})  # a helper added
    assert same_implementation(built_in, mine) is False
    assert same_implementation(mine, built_in) is False
    assert same_implementation(mine, {"files": ["algorithm.py", "other_pc.py"]}) is False
    assert same_implementation(built_in, {"files": built_in["files"],
                                          "distribution": "someone-else 1.0"}) is False
    assert same_implementation({}, mine) is None and same_implementation(mine, {}) is None


def test_the_hook_specs_name_the_types_of_what_the_registry_holds():
    import typing

    from bioplaus_bench import api, hookspecs

    def item_type(hook: str) -> typing.Any:  # the T of the hook spec's `-> list[T]`
        (item,) = typing.get_args(typing.get_type_hints(getattr(hookspecs, hook), vars(api))["return"])
        return item

    registry = load_registry()
    (algorithm_base,) = typing.get_args(item_type("bioplaus_bench_algorithms"))
    assert registry.algorithms
    assert all(issubclass(info.cls, algorithm_base) for info in registry.algorithms.values())
    for kind, (hook, _) in plugins.KINDS.items():
        provided = registry.provided(kind)
        assert provided and all(isinstance(p.value, item_type(hook)) for p in provided.values()), kind
