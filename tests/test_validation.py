"""Validation before anything runs: every bad input is one line `file:line: key: message`,
exit code 2, and nothing is written. Plain names, ranges, hostile YAML, --set paths, --subset,
the `baseline` key and broken plugins."""

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bioplaus_bench import registry as plugins
from bioplaus_bench.cli import app
from bioplaus_bench.errors import PluginError, SuiteError
from bioplaus_bench.registry import load_registry
from bioplaus_bench.suite import load_suite

runner = CliRunner()

SUITE = """\
name: tiny
seeds: [0, 1]
precision: float64
datasets:
  teacher:
    source: teacher
    options: {n_train: 50, n_test: 20, hidden: [8]}
    architecture: {type: mlp, hidden: [8]}
    protocol: {epochs: 1, batch_size: 16, validation: 10}
algorithms:
  bp:
    optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}
  dfa:
    optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}
"""

HOOK = """\
from bioplaus_bench.api import hookimpl


@hookimpl
def bioplaus_bench_algorithms():
    return []
"""


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def edited(old: str, new: str) -> str:
    assert old in SUITE, old
    return SUITE.replace(old, new, 1)


@pytest.fixture()
def registry():
    return load_registry()


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


def assert_rejected(suite: Path, message: str, *options: str, out: Path | None = None) -> None:
    """`bench validate` and `bench run` both exit 2 with the one-line message, and `run` writes
    nothing into ``out`` (default: results/<suite name> under the working folder)."""
    run_out = ["--out", out] if out else []
    for command in (["validate", suite, *options], ["run", suite, "--quiet", *options, *run_out]):
        result = invoke(*command)
        assert result.exit_code == 2, result.output
        assert message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.output
    assert out is None or not out.exists()


# --- Plain names ---------------------------------------------------------------------------------

PLAIN = "expected a plain name: 1 to 100 letters, digits, '-', '_' or '.' (not '.' or '..')"


@pytest.mark.parametrize("bad", ["../../x", "a/b", "a\\b", "/abs", "..", "a b", "x" * 101])
@pytest.mark.parametrize("where, old, new, line, key", [
    ("dataset", "  teacher:\n    source", "  {bad}:\n    source", 5, "datasets.{bad}"),
    ("algorithm", "  bp:\n", "  {bad}:\n", 11, "algorithms.{bad}"),
    ("suite name", "name: tiny", "name: {bad}", 1, "name"),
])
def test_ids_and_the_suite_name_must_be_plain_names(tmp_path, monkeypatch, bad, where, old, new,
                                                     line, key):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # `bench run` writes to results/<suite name> under the cwd
    quoted = "'" + bad.replace("'", "''") + "'"
    suite = write(work / "bad.yaml", edited(old, new.format(bad=quoted)))
    before = files_under(tmp_path)
    assert_rejected(suite, f"bad.yaml:{line}: {key.format(bad=bad)}: {PLAIN}, got '{bad}'")
    assert files_under(tmp_path) == before  # nothing in the folder, its parent or results/


def test_without_a_name_the_file_name_must_be_plain(tmp_path, monkeypatch, registry):
    monkeypatch.chdir(tmp_path)
    suite = write(tmp_path / "my suite.yaml", SUITE.replace("name: tiny\n", ""))
    assert_rejected(suite, "my suite.yaml:1: the suite is named 'my suite' after its file, "
                           "which is not a plain name")
    assert not (tmp_path / "results").exists()
    plain = write(tmp_path / "my-suite.v2.yaml", SUITE.replace("name: tiny\n", ""))
    assert load_suite(plain, registry).name == "my-suite.v2"


# --- Ranges (item 7) -----------------------------------------------------------------------------

RANGES = [
    ("negative lr", "lr: 1.0e-3, betas", "lr: -1.0e-3, betas",
     ":12: algorithms.bp.optimizer.lr: expected a positive finite number, got -0.001"),
    ("zero lr", "lr: 1.0e-3, betas", "lr: 0, betas",
     ":12: algorithms.bp.optimizer.lr: expected a positive finite number, got 0.0"),
    ("nan lr", "lr: 1.0e-3, betas", "lr: .nan, betas",
     ":12: algorithms.bp.optimizer.lr: expected a number, not NaN"),
    ("per-layer lr", "lr: 1.0e-3, betas", "lr: [1.0e-3, -1.0], betas",
     ":12: algorithms.bp.optimizer.lr[1]: expected a positive finite number, got -1.0"),
    ("beta of 1", "betas: [0.9, 0.999]", "betas: [0.9, 1.0]",
     ":12: algorithms.bp.optimizer.betas[1]: expected a number in [0, 1), got 1.0"),
    ("negative beta", "betas: [0.9, 0.999]", "betas: [-0.1, 0.999]",
     ":12: algorithms.bp.optimizer.betas[0]: expected a number in [0, 1), got -0.1"),
    ("zero eps", "eps: 1.0e-8}", "eps: 0}",
     ":12: algorithms.bp.optimizer.eps: expected a positive finite number, got 0.0"),
    ("nan eps", "eps: 1.0e-8}", "eps: .nan}",
     ":12: algorithms.bp.optimizer.eps: expected a number, not NaN"),
    ("zero width", "mlp, hidden: [8]}", "mlp, hidden: [8, 0]}",
     ":8: datasets.teacher.architecture.hidden[1]: expected a positive integer, got 0"),
    ("negative channels", "mlp, hidden: [8]}", "cnn, hidden: [8], conv_channels: [-4]}",
     ":8: datasets.teacher.architecture.conv_channels[0]: expected a positive integer, got -4"),
    ("zero n_train", "n_train: 50", "n_train: 0",
     ":7: datasets.teacher.options.n_train: expected a positive integer, got 0"),
    ("negative n_test", "n_test: 20", "n_test: -20",
     ":7: datasets.teacher.options.n_test: expected a positive integer, got -20"),
    ("zero input_dim", "n_test: 20", "n_test: 20, input_dim: 0",
     ":7: datasets.teacher.options.input_dim: expected a positive integer, got 0"),
    ("zero output_dim", "n_test: 20", "n_test: 20, output_dim: 0",
     ":7: datasets.teacher.options.output_dim: expected a positive integer, got 0"),
    ("teacher width", "hidden: [8]}\n    arch", "hidden: [0]}\n    arch",
     ":7: datasets.teacher.options.hidden[0]: expected a positive integer, got 0"),
    ("zero validation", "validation: 10", "validation: 0",
     ":9: datasets.teacher.protocol.validation: expected a positive integer, got 0"),
    ("zero epochs", "epochs: 1,", "epochs: 0,",
     ":9: datasets.teacher.protocol.epochs: expected a positive integer, got 0"),
    ("seed too large", "seeds: [0, 1]", "seeds: [0, 4294967296]",
     ":2: seeds[1]: expected a seed in [0, 2^32), got 4294967296"),
    ("negative seed", "seeds: [0, 1]", "seeds: [-1]",
     ":2: seeds[0]: expected a seed in [0, 2^32), got -1"),
    ("duplicate seeds", "seeds: [0, 1]", "seeds: [1, 1]",
     ":2: seeds: expected a non-empty list of distinct seeds, got [1, 1]"),
    ("no seeds", "seeds: [0, 1]", "seeds: 0",
     ":2: seeds: expected a number of seeds from 1 to 10000, got 0"),
    ("negative schedule", "  dfa:\n", "  dfa:\n    schedule: {extra_feedback_epochs: -1}\n",
     ":14: algorithms.dfa.schedule.extra_feedback_epochs: expected a non-negative integer, got -1"),
]


@pytest.mark.parametrize("kind, old, new, message", RANGES, ids=[case[0] for case in RANGES])
def test_out_of_range_values_name_the_line_and_key(tmp_path, kind, old, new, message):
    suite = write(tmp_path / "bad.yaml", edited(old, new))
    assert_rejected(suite, f"bad.yaml{message}", out=tmp_path / "r")


def test_range_errors_of_set_values_name_the_option(tmp_path):
    suite = write(tmp_path / "s.yaml", SUITE)
    result = invoke("validate", suite, "--set", "algorithms.bp.optimizer.lr=-1")
    assert result.exit_code == 2
    assert "--set: algorithms.bp.optimizer.lr: expected a positive finite number, got -1.0" \
        in result.stderr


def test_valid_edge_values_still_load(tmp_path, registry):
    suite = write(tmp_path / "s.yaml", edited("seeds: [0, 1]", "seeds: [0, 4294967295]")
                  .replace("betas: [0.9, 0.999]", "betas: [0, 0.999]", 1)
                  .replace("validation: 10", "validation: null"))
    loaded = load_suite(suite, registry)
    assert loaded.seeds == (0, 4294967295)
    assert loaded.resolved[("bp", "teacher")][0].optimizer.betas == (0.0, 0.999)


# --- Hostile files -------------------------------------------------------------------------------

def test_a_file_that_is_not_utf8_names_the_byte_offset(tmp_path):
    suite = tmp_path / "latin1.yaml"
    suite.write_bytes(SUITE.replace("name: tiny", "name: tiny\ndescription: caf\xe9")
                      .encode("latin-1"))
    offset = SUITE.encode().index(b"\nseeds") + len("\ndescription: caf")
    assert_rejected(suite, f"latin1.yaml:2: not UTF-8 text: byte 0xe9 at offset {offset} cannot "
                           "be decoded")


def test_a_control_character_is_an_error_with_its_line(tmp_path):
    suite = write(tmp_path / "ctl.yaml", edited("precision: float64", "precision: float64\x01"))
    assert_rejected(suite, "ctl.yaml:3: invalid YAML: character #x0001 at offset")


def test_absurdly_deep_nesting_is_refused(tmp_path):
    suite = write(tmp_path / "deep.yaml", SUITE + "description: " + "[" * 10_000 + "]" * 10_000)
    assert_rejected(suite, "deep.yaml:15: invalid YAML: nested deeper than 64 levels")
    ok = write(tmp_path / "ok.yaml", SUITE + "description: " + "[" * 50 + "]" * 50)
    assert "expected a string" in invoke("validate", ok).stderr  # read, then type-checked


BOMB = """\
a: &a [x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_an_alias_bomb_is_refused_in_bounded_time(tmp_path):
    suite = write(tmp_path / "bomb.yaml", BOMB)
    assert len(BOMB) < 500
    # In a child process with a timeout: the unbounded version takes minutes and gigabytes. The
    # message proves the bound; the timeout only ends a regression (not a race with start-up).
    code = ("import sys; from bioplaus_bench.errors import SuiteError\n"
            "from bioplaus_bench.spec.schema import load_yaml\n"
            "try:\n    load_yaml(open(sys.argv[1]).read(), sys.argv[1])\n"
            "except SuiteError as error:\n    print(error)\n")
    result = subprocess.run([sys.executable, "-c", code, str(suite)], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert "bomb.yaml:6: the document expands to more than 100000 values through its aliases" \
        in result.stdout
    result = invoke("validate", suite)
    assert result.exit_code == 2 and "expands to more than 100000 values" in result.stderr


def test_a_recursive_alias_is_refused(tmp_path):
    suite = write(tmp_path / "loop.yaml", SUITE + "description: &loop [*loop]\n")
    assert_rejected(suite, "loop.yaml:15: nested deeper than 64 levels (aliases included)")


def test_anchors_for_shared_settings_still_work(tmp_path, registry):
    text = SUITE.replace("  bp:\n    optimizer: {lr", "  bp:\n    optimizer: &adam {lr") \
        .replace("  dfa:\n    optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}",
                 "  dfa:\n    optimizer: *adam")
    loaded = load_suite(write(tmp_path / "s.yaml", text), registry)
    assert loaded.resolved[("dfa", "teacher")][0].optimizer.lr == 1e-3


# --- --set paths and --subset ----------------------------------------------------------------------

@pytest.mark.parametrize("item, message", [
    ("algorithms.bpp.optimizer.lr=1",
     "--set: algorithms.bpp.optimizer.lr: no algorithm 'bpp' in the suite (did you mean 'bp'?)"),
    ("datasets.teachr.protocol.epochs=1",
     "--set: datasets.teachr.protocol.epochs: no dataset 'teachr' in the suite (did you mean "
     "'teacher'?)"),
    ("algorithms.bp.optimizr.lr=1",
     "--set: algorithms.bp.optimizr: unknown key (did you mean 'optimizer'?)"),
    ("algorithms.bp.datasets.teachr.optimizer.lr=1",
     "--set: algorithms.bp.datasets.teachr: unknown dataset 'teachr' (did you mean 'teacher'?)"),
    ("datasets.teacher.protocol.epochz=1",
     "--set: datasets.teacher.protocol.epochz: unknown key (did you mean 'epochs'?)"),
    ("name=../x", f"--set: name: {PLAIN}, got '../x'"),
])
def test_set_paths_must_name_something_in_the_suite(tmp_path, item, message):
    suite = write(tmp_path / "s.yaml", SUITE)
    assert_rejected(suite, message, "--set", item, out=tmp_path / "r")


def test_set_may_add_keys_that_the_schema_allows(tmp_path, registry):
    suite = write(tmp_path / "s.yaml", SUITE)
    loaded = load_suite(suite, registry, ["algorithms.bp.datasets.teacher.optimizer.lr=2e-3",
                                          "algorithms.dfa.params.target_stepsize=0.5",
                                          "baseline=dfa"])
    assert loaded.resolved[("bp", "teacher")][0].optimizer.lr == 2e-3
    assert loaded.resolved[("dfa", "teacher")][1].target_stepsize == 0.5
    assert loaded.baseline == "dfa"


def test_subset_applies_to_every_dataset_the_teacher_task_included(tmp_path):
    # Recorded as a deviation only because it happens: the generated training set is cut too.
    from bioplaus_bench.data import DataSettings, TeacherOptions, load_data

    data = load_data("teacher", TeacherOptions(n_train=50, hidden=(8,)), DataSettings(), seed=0,
                     validation=10, subset=7)
    assert len(data.train) == 7 and len(data.val) == 10
    suite = write(tmp_path / "s.yaml", SUITE)
    result = invoke("run", suite, "--quiet", "--subset", "7", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert "trained on 7 samples" in result.stdout


# --- baseline --------------------------------------------------------------------------------------

def test_baseline_defaults_to_bp_and_reaches_every_cell_outside_the_hash(tmp_path, registry):
    default = load_suite(write(tmp_path / "s.yaml", SUITE), registry)
    assert default.baseline == "bp"
    assert {c.baseline for c in default.cells()} == {"bp"}
    chosen = load_suite(write(tmp_path / "t.yaml", edited("name: tiny", "name: tiny\nbaseline: dfa")),
                        registry)
    assert {c.baseline for c in chosen.cells()} == {"dfa"}
    assert [c.config_hash() for c in chosen.cells()] == [c.config_hash() for c in default.cells()]
    without_bp = load_suite(write(tmp_path / "u.yaml", SUITE.replace(
        "  bp:\n    optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}\n", "")), registry)
    assert without_bp.baseline is None


def test_an_unknown_baseline_names_the_line_and_suggests(tmp_path):
    suite = write(tmp_path / "s.yaml", edited("name: tiny", "name: tiny\nbaseline: bpp"))
    assert_rejected(suite, "s.yaml:2: baseline: no algorithm entry 'bpp' in the suite (did you "
                           "mean 'bp'?); entries: bp, dfa")


# --- Plugins ---------------------------------------------------------------------------------------

def test_a_plugin_file_without_a_hook_is_an_error(tmp_path):
    plugin = write(tmp_path / "nohook.py", HOOK.replace("@hookimpl\n", ""))
    result = invoke("list", "--plugin", plugin)
    assert result.exit_code == 2
    assert f"plugin file {plugin} defines no bioplaus_bench hook" in result.stderr
    assert "expected a function decorated with @hookimpl, e.g. bioplaus_bench_algorithms" \
        in result.stderr


def test_a_misspelt_hook_is_an_error_with_a_suggestion(tmp_path):
    plugin = write(tmp_path / "typo.py", HOOK.replace("def bioplaus_bench_algorithms",
                                                      "def bioplaus_bench_algoritms"))
    with pytest.raises(PluginError, match="unknown hook 'bioplaus_bench_algoritms' \\(did you "
                                          "mean 'bioplaus_bench_algorithms'\\?\\)"):
        load_registry([plugin])


def test_a_hook_that_raises_is_reported_without_a_traceback(tmp_path):
    plugin = write(tmp_path / "raises.py", HOOK.replace(
        "    return []", "    raise KeyError('oops')"))
    result = invoke("list", "--plugin", plugin)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert f"plugin {plugin} [file]: its hook bioplaus_bench_algorithms raised KeyError: 'oops'" \
        in result.stderr


def test_an_entry_point_whose_hook_raises_is_a_warning(tmp_path, monkeypatch):
    (tmp_path / "raising_hook_plugin_xyz.py").write_text(HOOK.replace(
        "    return []", "    raise RuntimeError('no luck')"))
    monkeypatch.syspath_prepend(str(tmp_path))
    raising = importlib.metadata.EntryPoint(name="raising", value="raising_hook_plugin_xyz",
                                            group=plugins.ENTRY_POINT_GROUP)
    real = plugins.entry_points
    monkeypatch.setattr(plugins, "entry_points", lambda **sel: [*real(**sel), raising])
    registry = load_registry()
    assert len(registry.warnings) == 1
    assert "raising_hook_plugin_xyz" in registry.warnings[0]
    assert "raised RuntimeError: no luck" in registry.warnings[0]
    assert {"bp", "dfa"} <= set(registry.algorithms)


def test_suite_errors_are_suite_errors(tmp_path, registry):
    """load_suite raises SuiteError (never a RecursionError, UnicodeDecodeError, ...)."""
    suite = tmp_path / "bad.yaml"
    suite.write_bytes(b"\xff\xfe")
    with pytest.raises(SuiteError, match="offset 0"):
        load_suite(suite, registry)


@pytest.mark.parametrize("override, key", [
    ("algorithms.bp.optimizer.betas=[0.9,1.5]", "algorithms.bp.optimizer.betas[1]"),
    ("seeds=[0,-1]", "seeds[1]"),
    ("datasets.teacher.architecture.hidden=[0]", "datasets.teacher.architecture.hidden[0]"),
])
def test_an_error_inside_a_list_given_by_set_names_the_option_not_the_file(tmp_path, override,
                                                                           key):
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE)
    result = runner.invoke(app, ["validate", str(path), "--set", override])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: --set: {key}: "), result.output


@pytest.mark.parametrize("where", ["import", "hook"])
def test_a_plugin_that_exits_is_one_line_not_a_silent_exit(tmp_path, where):
    body = "raise SystemExit(4)\n" if where == "import" else ""
    plugin = tmp_path / "exits.py"
    plugin.write_text("from bioplaus_bench.api import hookimpl\n" + body + textwrap.dedent("""
        @hookimpl
        def bioplaus_bench_algorithms():
            raise SystemExit(5)
        """))
    result = runner.invoke(app, ["list", "--plugin", str(plugin)])
    assert result.exit_code == 2
    assert result.output.startswith("error: plugin ") and "SystemExit" in result.output
