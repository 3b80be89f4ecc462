"""docs/plugins.md and `bench new-plugin`: the guide's examples run and pass the conformance checks,
the guide documents the whole public API, and a generated package installs, passes its own tests
and `bench check-plugin`."""

import dataclasses
import importlib
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
from bioplaus_bench.kit.scaffold import TEMPLATES, PluginNames
from bioplaus_bench.model.algorithm import Capabilities

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "plugins.md"
runner = CliRunner()


def examples() -> dict[str, str]:
    """The guide's code blocks marked `<!-- example: FILE -->`, by file name."""
    pattern = re.compile(r"<!-- example: (\S+) -->\n```\w+\n(.*?)\n```", re.S)
    return {name: body + "\n" for name, body in pattern.findall(GUIDE.read_text())}


def test_the_guide_has_its_examples_and_the_readme_links_it():
    assert set(examples()) == {"learned_dfa.py", "learned_dfa.yaml", "ddtp_tanh.py", "pyproject.toml",
                               "test_learned_dfa.py", "energy_pc.py"}
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


def test_the_guide_s_tests_build_networks_and_both_tasks_from_the_public_api(tmp_path, monkeypatch):
    """The guide's example tests of its example rule, written with the documented constructors
    (build_network, Classification, Regression, LayerGraph's fields) from bioplaus_bench.api."""
    code = examples()
    tests = code["test_learned_dfa.py"]
    assert re.findall(r"from (bioplaus_bench\S*) import", tests) == ["bioplaus_bench.api"]
    for name in ("learned_dfa.py", "test_learned_dfa.py"):
        (tmp_path / name).write_text(code[name])
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("learned_dfa", "test_learned_dfa"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    module = importlib.import_module("test_learned_dfa")
    functions = [getattr(module, name) for name in dir(module) if name.startswith("test_")]
    assert len(functions) == 3
    for function in functions:
        function()
    for name in ("learned_dfa", "test_learned_dfa"):
        sys.modules.pop(name, None)


def test_the_target_propagation_variant_passes_the_checks_on_mlp_and_cnn(tmp_path):
    plugin = tmp_path / "ddtp_tanh.py"
    plugin.write_text(examples()["ddtp_tanh.py"])
    result = runner.invoke(app, ["check-plugin", str(plugin)])
    assert result.exit_code == 0, result.output
    assert "PASS  feedback [cnn]" in result.stdout and "PASS  checkpoint [mlp]" in result.stdout


def test_the_inference_rule_example_passes_the_checks_with_its_relaxation(tmp_path):
    plugin = tmp_path / "energy_pc.py"
    plugin.write_text(examples()["energy_pc.py"])
    result = runner.invoke(app, ["check-plugin", str(plugin)])
    assert result.exit_code == 0, result.output
    assert "PASS  relaxation [mlp]" in result.stdout
    assert "PASS  vectorised seeds [mlp]" in result.stdout


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
                      "feedback_step", "state_dict", "predict"],
        "InferenceRule": ["initial_state", "energy", "relax_step", "relax(",
                          "relaxation_phases"],
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
                  "feedback [arch]", "frozen layers [arch]", "checkpoint [arch]",
                  "relaxation [arch]"):
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


SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PIP_NO_INDEX": "1",
                  "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _rule_name(template: str) -> str:
    return f"scaffolded-{template}"


@pytest.fixture(scope="module")
def installed_templates(tmp_path_factory):
    """A package of every template, generated and installed (one pip call) into a venv layered
    over this one: (python, {template: package folder})."""
    root = tmp_path_factory.mktemp("templates")
    packages = {}
    for template in TEMPLATES:
        packages[template] = root / template
        created = runner.invoke(app, ["new-plugin", _rule_name(template), "--template", template,
                                      "--dir", str(packages[template])])
        assert created.exit_code == 0, created.output
    python = _python_over_this_venv(root / "venv")
    editable = [arg for folder in packages.values() for arg in ("-e", str(folder))]
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps",
                              "--no-build-isolation", *editable],
                             capture_output=True, text=True, env=SUBPROCESS_ENV, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    return python, packages


@pytest.mark.slow
@pytest.mark.parametrize("template", list(TEMPLATES))
def test_a_generated_plugin_installs_and_passes_its_own_tests_and_check_plugin(installed_templates,
                                                                              template):
    python, packages = installed_templates
    package, name = packages[template], _rule_name(template)
    names = PluginNames.from_name(name)
    for relative in ("pyproject.toml", "README.md", f"{names.package}/__init__.py",
                     f"{names.package}/algorithm.py", "tests/test_conformance.py",
                     f"suites/{name}.yaml"):
        assert (package / relative).is_file(), relative
    pyproject = (package / "pyproject.toml").read_text()
    assert 'dependencies = ["bioplaus-bench"]' in pyproject
    group = pyproject.split('[project.entry-points."bioplaus_bench.plugins"]\n')[1].split("\n\n")[0]
    assert group.strip() == f'{names.entry_point} = "{names.package}.algorithm"'
    assert 'build-backend = "setuptools.build_meta"' in pyproject
    assert f"--template {template}" in (package / "README.md").read_text()
    # The rule and its tests use nothing of bioplaus-bench but the public API.
    for code in (package / names.package / "algorithm.py", package / "tests" / "test_conformance.py"):
        assert set(re.findall(r"from (bioplaus_bench\S*) import", code.read_text())) \
            == {"bioplaus_bench.api"}, code
        assert not re.search(r"^import bioplaus_bench", code.read_text(), re.M)
    # A single file of the package already passes the checks without installing anything.
    checked = runner.invoke(app, ["check-plugin", str(package / names.package / "algorithm.py")])
    assert checked.exit_code == 0, checked.output

    own_tests = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                               cwd=package, capture_output=True, text=True, env=SUBPROCESS_ENV,
                               timeout=600)
    assert own_tests.returncode == 0, own_tests.stdout + own_tests.stderr
    assert "3 passed" in own_tests.stdout

    checked = subprocess.run([str(python), "-m", "bioplaus_bench", "check-plugin", name],
                             capture_output=True, text=True, env=SUBPROCESS_ENV, timeout=600)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "[entry point]" in checked.stdout and "FAIL" not in checked.stdout
    assert re.search(r"\d+ passed, 0 failed in", checked.stdout)
    # The shared environment never saw it.
    assert name not in runner.invoke(app, ["list"]).stdout


def test_the_templates_are_the_rules_they_say(tmp_path):
    """direct: an Algorithm with its own forward_updates; target-propagation: a
    TargetPropagation with a path and a loss; backward-rule: a BackwardRule overriding only
    backward_weight; inference: an InferenceRule declared by its energy. The command's summary
    says which."""
    from bioplaus_bench.kit.scaffold import files

    expected = {"direct": ("(Algorithm)", "def forward_updates(", "MLP"),
                "target-propagation": ("(TargetPropagation)", "def build_path(",
                                       "feedback path and a feedback loss"),
                "backward-rule": ("(BackwardRule)", "def backward_weight(self, i: int, weight: "
                                  "Tensor) -> Tensor:", "backward_weight(i, weight)"),
                "inference": ("(InferenceRule)", "def energy(", "written as its energy")}
    for template, (base, method, summary) in expected.items():
        code = files(PluginNames.from_name("rule"), template)["bioplaus_rule/algorithm.py"]
        assert f"class Rule{base}:" in code and method in code, template
        if template == "backward-rule":
            assert re.findall(r"    def (\w+)\(", code) == ["__init__", "backward_weight"]
            assert "self.register_buffer(" in code
        result = runner.invoke(app, ["new-plugin", "rule", "--template", template,
                                     "--dir", str(tmp_path / template)])
        assert result.exit_code == 0, result.output
        assert f"template {template}: " in result.stdout and summary in result.stdout
    result = runner.invoke(app, ["new-plugin", "rule", "--template", "other",
                                 "--dir", str(tmp_path / "other")])
    assert result.exit_code == 2 and not (tmp_path / "other").exists()


@pytest.mark.slow
def test_a_single_file_plugin_of_every_template_passes_its_own_tests_and_check_plugin(tmp_path):
    folders = []
    for template in TEMPLATES:
        name = f"single-{template}"
        folder = tmp_path / template
        created = runner.invoke(app, ["new-plugin", name, "--template", template, "--single-file",
                                      "--dir", str(folder)])
        assert created.exit_code == 0, created.output
        module = name.replace("-", "_")
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            [f"{module}.py", f"test_{module}.py", f"{name}.yaml"])
        assert "a single-file plugin" in created.stdout and f"--plugin {folder / module}.py" \
            in created.stdout
        for code in (folder / f"{module}.py", folder / f"test_{module}.py"):
            assert set(re.findall(r"from (bioplaus_bench\S*) import", code.read_text())) \
                == {"bioplaus_bench.api"}, code
        checked = runner.invoke(app, ["check-plugin", str(folder / f"{module}.py")])
        assert checked.exit_code == 0, checked.output
        assert "[file]" in checked.stdout and "FAIL" not in checked.stdout
        folders.append(str(folder))
    # Each folder's own tests (as `cd FOLDER && python -m pytest` runs them), in one process.
    own_tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                *folders], cwd=tmp_path, capture_output=True, text=True,
                               env=SUBPROCESS_ENV, timeout=600)
    assert own_tests.returncode == 0, own_tests.stdout + own_tests.stderr
    assert f"{3 * len(TEMPLATES)} passed" in own_tests.stdout
