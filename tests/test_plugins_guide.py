"""docs/plugins.md and `bench new-plugin`: the guide's examples run and pass the conformance checks,
the guide documents the whole public API, and a generated package installs, passes its own tests
and `bench check-plugin`."""

import dataclasses
import json
import os
import re
import site
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bioplaus_bench import api
from bioplaus_bench.cli import app
from bioplaus_bench.kit.scaffold import PluginNames
from bioplaus_bench.model.algorithm import Capabilities

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "plugins.md"
runner = CliRunner()


def examples() -> dict[str, str]:
    """The guide's code blocks marked `<!-- example: FILE -->`, by file name."""
    pattern = re.compile(r"<!-- example: (\S+) -->\n```\w+\n(.*?)\n```", re.S)
    return {name: body + "\n" for name, body in pattern.findall(GUIDE.read_text())}


def test_the_guide_has_its_examples_and_the_readme_links_it():
    assert set(examples()) == {"learned_dfa.py", "learned_dfa.yaml", "ddtp_tanh.py", "pyproject.toml"}
    assert "(docs/plugins.md)" in (ROOT / "README.md").read_text()


def test_the_complete_example_passes_the_checks_and_runs_its_suite(tmp_path):
    code = examples()
    plugin = tmp_path / "learned_dfa.py"
    plugin.write_text(code["learned_dfa.py"])
    checked = runner.invoke(app, ["check-plugin", str(plugin)])
    assert checked.exit_code == 0, checked.output
    assert "PASS  feedback [mlp]" in checked.stdout and "FAIL" not in checked.stdout
    suite = tmp_path / "learned_dfa.yaml"
    suite.write_text(code["learned_dfa.yaml"])
    out = tmp_path / "results"
    result = runner.invoke(app, ["run", str(suite), "--plugin", str(plugin), "--out", str(out),
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "teacher" / "learned-dfa" / "seed-0.json").read_text())
    assert record["status"] == "ok" and record["label"] == "Learned DFA"
    assert len(record["pretraining_feedback_loss"]) == 1
    assert record["history"][0]["feedback_loss"] is not None


def test_the_target_propagation_variant_passes_the_checks_on_mlp_and_cnn(tmp_path):
    plugin = tmp_path / "ddtp_tanh.py"
    plugin.write_text(examples()["ddtp_tanh.py"])
    result = runner.invoke(app, ["check-plugin", str(plugin)])
    assert result.exit_code == 0, result.output
    assert "PASS  feedback [cnn]" in result.stdout and "PASS  checkpoint [mlp]" in result.stdout


def test_the_publishing_example_declares_the_entry_point_group():
    pyproject = examples()["pyproject.toml"]
    group = pyproject.split('[project.entry-points."bioplaus_bench.plugins"]\n')[1].split("\n\n")[0]
    assert group.strip() == 'learned_dfa = "bioplaus_learned_dfa.algorithm"'
    assert 'dependencies = ["bioplaus-bench"]' in pyproject


def test_the_guide_documents_every_hook_and_public_name():
    text = GUIDE.read_text() + (ROOT / "docs" / "extending.md").read_text()
    for name in api.__all__:
        assert f"`{name}" in text, name
    assert "`bioplaus_bench_algorithms()" in text and "`bioplaus_bench.plugins`" in text
    members = {
        "Algorithm": ["name", "label", "summary", "Params", "capabilities", "record_graph",
                      "default_schedule", "adapt_architecture", "lr_normalizer", "forward_updates",
                      "feedback_step", "state_dict"],
        "ForwardPass": [f.name for f in dataclasses.fields(api.ForwardPass)] + ["output", "batch_size"],
        "Network": ["layer(i)", "layer_parameters(i)", "propagate", "activation_shape", "depth",
                    "n_outputs", "activation_derivative"],
        "Task": ["loss", "output_error", "correct", "kind"],
        "TPParams": [f.name for f in dataclasses.fields(api.TPParams)],
        "Capabilities": [f.name for f in dataclasses.fields(Capabilities)],
    }
    for owner, names in members.items():
        for name in names:
            assert f"`{name}" in text, f"{owner}.{name}"
    assert "**includes the 1/B**" in text  # of output_error
    for check in ("loads", "step [arch]", "precision [arch]", "deterministic [arch]",
                  "feedback [arch]", "frozen layers [arch]", "checkpoint [arch]"):
        assert f"`{check}`" in text, check


# --- bench new-plugin ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["My Rule", "rule!", "1rule", "rule--x", "Rule", "rule-", "_rule", "x" * 41])
def test_new_plugin_rejects_bad_names(tmp_path, name):
    result = runner.invoke(app, ["new-plugin", name, "--dir", str(tmp_path / "p")])
    assert result.exit_code == 2
    assert f"invalid plugin name {name!r}" in result.stderr
    assert not (tmp_path / "p").exists()


def test_new_plugin_refuses_a_non_empty_folder_and_a_taken_name(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["new-plugin", "my-rule", "--dir", str(tmp_path / "full")])
    assert result.exit_code == 2 and "exists and is not empty" in result.stderr
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["keep.txt"]
    result = runner.invoke(app, ["new-plugin", "dfa", "--dir", str(tmp_path / "d")])
    assert result.exit_code == 2 and "'dfa' is already taken" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    assert runner.invoke(app, ["new-plugin", "my-rule", "--dir", str(empty)]).exit_code == 0


def test_names_derived_from_the_plugin_name():
    names = PluginNames.from_name("sign_sgd-2")
    assert (names.algorithm, names.distribution, names.package, names.entry_point, names.cls) == \
        ("sign_sgd-2", "bioplaus-sign-sgd-2", "bioplaus_sign_sgd_2", "sign_sgd_2", "SignSgd2")


def _python_over_this_venv(folder: Path) -> Path:
    """A fresh venv layered over this interpreter's site-packages: packages installed into it
    see torch and bioplaus-bench, and nothing is installed into the shared environment."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    parents = [p for p in site.getsitepackages() if Path(p).is_dir()]
    Path(purelib, "_parent_environment.pth").write_text(
        "import site; " + "; ".join(f"site.addsitedir({p!r})" for p in parents) + "\n")
    return python


def test_a_generated_plugin_installs_and_passes_its_own_tests_and_check_plugin(tmp_path):
    package = tmp_path / "sign-rule"
    created = runner.invoke(app, ["new-plugin", "scaffolded-rule", "--dir", str(package)])
    assert created.exit_code == 0, created.output
    assert "created bioplaus-scaffolded-rule" in created.stdout
    for relative in ("pyproject.toml", "README.md", "bioplaus_scaffolded_rule/__init__.py",
                     "bioplaus_scaffolded_rule/algorithm.py", "tests/test_conformance.py",
                     "suites/scaffolded-rule.yaml"):
        assert (package / relative).is_file(), relative
    pyproject = (package / "pyproject.toml").read_text()
    assert 'dependencies = ["bioplaus-bench"]' in pyproject
    group = pyproject.split('[project.entry-points."bioplaus_bench.plugins"]\n')[1].split("\n\n")[0]
    assert group.strip() == 'scaffolded_rule = "bioplaus_scaffolded_rule.algorithm"'
    assert 'build-backend = "setuptools.build_meta"' in pyproject
    module = (package / "bioplaus_scaffolded_rule" / "algorithm.py").read_text()
    assert re.findall(r"from (bioplaus_bench\S*) import", module) == ["bioplaus_bench.api"]
    assert "scaffolded-rule" in (package / "suites" / "scaffolded-rule.yaml").read_text()
    # A single file of the package already passes the checks without installing anything.
    assert runner.invoke(app, ["check-plugin", str(package / "bioplaus_scaffolded_rule" /
                                                     "algorithm.py")]).exit_code == 0

    python = _python_over_this_venv(tmp_path / "venv")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps",
                              "--no-build-isolation", "-e", str(package)],
                             capture_output=True, text=True, env=env, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr

    own_tests = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                               cwd=package, capture_output=True, text=True, env=env, timeout=300)
    assert own_tests.returncode == 0, own_tests.stdout + own_tests.stderr
    assert "3 passed" in own_tests.stdout

    checked = subprocess.run([str(python), "-m", "bioplaus_bench", "check-plugin", "scaffolded-rule"],
                             capture_output=True, text=True, env=env, timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "[entry point]" in checked.stdout and "FAIL" not in checked.stdout
    assert re.search(r"\d+ passed, 0 failed in", checked.stdout)
    # The shared environment never saw it.
    assert "scaffolded-rule" not in runner.invoke(app, ["list"]).stdout
