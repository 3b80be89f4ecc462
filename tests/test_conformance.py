"""`bench check-plugin`: the conformance checks pass on good plugins and fail, with the right
reason, on deliberately broken ones; a plugin that fails to load is reported and isolated."""

import importlib.metadata
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bioplaus_bench import registry as plugins
from bioplaus_bench.cli import app
from bioplaus_bench.kit.conformance import check_algorithm
from bioplaus_bench.registry import load_registry

runner = CliRunner()

# Backprop through the public API; each broken variant replaces the marked line.
RULE = '''\
import time

import torch

from bioplaus_bench.api import Algorithm, Capabilities, hookimpl


class Rule(Algorithm):
    name = "rule-under-test"
    capabilities = Capabilities(mlp=True, cnn=True)
    record_graph = True

    def forward_updates(self, fwd):
        grads = torch.autograd.grad(fwd.loss, list(self.network.parameters()))
        return list(grads)  # BODY


@hookimpl
def bioplaus_bench_algorithms():
    return [Rule]
'''

BROKEN = {
    "wrong shape": ("return [g.t() if g.dim() == 2 else g for g in grads]",
                    "FAIL  step [mlp]: update 0 (layer 1 weight) should be a tensor of shape (7, 6) "
                    "and dtype torch.float32, got shape (6, 7)"),
    "empty list": ("return []", "FAIL  step [mlp]: forward_updates proposed 0 updates for 6 forward "
                                "parameters"),
    "returns None": ("return None", "FAIL  step [mlp]: forward_updates returned None"),
    "nondeterministic": (
        "gen = torch.Generator().manual_seed(time.time_ns())\n"
        "        return [g + 1e-3 * torch.randn(g.shape, generator=gen, dtype=g.dtype) for g in grads]",
        "FAIL  deterministic [mlp]: two runs from the same seed proposed different updates"),
    "crashes": ("raise ValueError('boom')",
                "FAIL  step [mlp]: raised ValueError: boom (at rule.py:15 in forward_updates)"),
    "writes the weights": (
        "[p.data.add_(1e-3) for p in self.network.parameters()]\n        return list(grads)",
        "FAIL  step [mlp]: forward_updates/feedback_step changed the forward weights themselves"),
    "float32 only": ("return [g.float() for g in grads]",
                     "FAIL  precision [mlp]: in float64: update 0 (layer 1 weight) should be a "
                     "tensor of shape (7, 6) and dtype torch.float64"),
    "zero update": ("return [torch.zeros_like(g) for g in grads]",
                    "FAIL  step [mlp]: update 0 (layer 1 weight) is all zeros"),
}


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def check(*args):
    return runner.invoke(app, ["check-plugin", *[str(a) for a in args]])


def test_a_correct_plugin_file_passes_every_check(tmp_path):
    result = check(write(tmp_path / "rule.py", RULE))
    assert result.exit_code == 0, result.output
    checks = [line for line in result.stdout.splitlines() if line[:4] in ("PASS", "FAIL", "SKIP")]
    assert len(checks) == 11  # loads + 5 checks × (MLP, CNN)
    assert all(line.startswith("PASS") for line in checks), result.stdout
    assert "[file]" in result.stdout and "11 passed, 0 failed in" in result.stdout


@pytest.mark.parametrize("kind", list(BROKEN))
def test_a_broken_plugin_fails_with_the_reason(tmp_path, kind):
    body, message = BROKEN[kind]
    plugin = write(tmp_path / "rule.py", RULE.replace("return list(grads)  # BODY", body))
    result = check(plugin)
    assert result.exit_code == 1, result.output
    assert message in result.stdout, result.stdout
    assert "PASS  loads:" in result.stdout
    fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    # One defect, one FAIL per architecture: the checks built on a failed one are skipped.
    assert 1 <= len(fails) <= 2, result.stdout
    assert " failed" in result.stdout.splitlines()[-1]


FEEDBACK_RULE = '''\
import torch
from torch import nn

from bioplaus_bench.api import Algorithm, Capabilities, hookimpl


class Trained(Algorithm):
    name = "trained-feedback"
    capabilities = Capabilities(mlp=True, trainable_feedback=True)
    record_graph = True

    def __init__(self, network, task, params):
        super().__init__(network, task, params)
        self.q = nn.Parameter(torch.ones(4, dtype=network.dtype))
        self.optimizer = torch.optim.SGD([self.q], lr=0.05)

    def forward_updates(self, fwd):
        return list(torch.autograd.grad(fwd.loss, list(self.network.parameters())))

    def feedback_step(self, fwd):
        loss = ((self.q - fwd.h[1].detach().mean()) ** 2).sum() + 0.01 * torch.randn(()).item()
        self.optimizer.zero_grad()
        loss.backward()  # SIGN
        self.optimizer.step()
        return loss.item()


@hookimpl
def bioplaus_bench_algorithms():
    return [Trained]
'''


def test_feedback_check_passes_when_the_loss_falls_and_fails_when_it_rises(tmp_path):
    good = check(write(tmp_path / "good.py", FEEDBACK_RULE))
    assert good.exit_code == 0, good.output
    assert "PASS  feedback [mlp]: feedback loss on a fixed batch" in good.stdout
    ascent = FEEDBACK_RULE.replace("loss.backward()  # SIGN", "(-loss).backward()")
    bad = check(write(tmp_path / "bad.py", ascent))
    assert bad.exit_code == 1
    assert "FAIL  feedback [mlp]: the feedback loss did not go down on a fixed batch" in bad.stdout


def test_state_outside_the_state_dict_fails_the_checkpoint_check(tmp_path):
    text = RULE.replace('''    record_graph = True
''', '''    record_graph = True

    def __init__(self, network, task, params):
        super().__init__(network, task, params)
        self.noise = [torch.randn(p.shape, dtype=p.dtype) for p in network.parameters()]
''').replace("return list(grads)  # BODY", "return [g + 1e-3 * n for g, n in zip(grads, self.noise)]")
    result = check(write(tmp_path / "rule.py", text))
    assert result.exit_code == 1
    assert "PASS  deterministic [mlp]" in result.stdout
    assert "FAIL  checkpoint [mlp]: an algorithm restored from its state_dict proposes a different " \
           "update" in result.stdout


def _counting(after: int) -> str:
    """RULE with a Python step counter (outside the state_dict) that halves the updates after
    ``after`` steps."""
    return RULE.replace('''    record_graph = True
''', '''    record_graph = True

    def __init__(self, network, task, params):
        super().__init__(network, task, params)
        self.steps = 0
''').replace("return list(grads)  # BODY", f"""self.steps += 1
        return [g * (0.5 if self.steps > {after} else 1.0) for g in grads]""")


def test_a_python_step_counter_fails_the_checkpoint_check(tmp_path):
    # It halves the updates from step 5 on; resumed after step 2 (at 0), it counts only to 3 by then.
    result = check(write(tmp_path / "rule.py", _counting(after=4)))
    assert result.exit_code == 1, result.output
    assert "PASS  deterministic [mlp]" in result.stdout
    line = next(line for line in result.stdout.splitlines() if line.startswith("FAIL  checkpoint [mlp]"))
    assert "proposes a different update (layer 1 weight) at step 5 than the uninterrupted run " \
           "(after a checkpoint at step 2)" in line
    assert "`steps` (8 vs 3) differ" in line and "self.register_buffer('steps'" in line
    # A counter that would change the updates only much later fails too, by its value.
    result = check(write(tmp_path / "later.py", _counting(after=1000)))
    assert result.exit_code == 1, result.output
    assert "FAIL  checkpoint [mlp]: after 8 steps the algorithm restored from its state_dict " \
           "(after a checkpoint at step 2) has other values in `steps` (8 vs 6) than the " \
           "uninterrupted run" in result.stdout


def test_the_header_says_which_networks_and_tasks_the_checks_run(tmp_path):
    result = check(write(tmp_path / "rule.py", RULE))
    lines = result.stdout.splitlines()
    assert lines[0].startswith("checking rule-under-test")
    assert lines[1] == (
        "on: mlp = tanh MLP 6 → 7 → 5 → 3; cnn = tanh CNN 2×6×6 → conv (3 channels, 3×3) + "
        "max-pool → 5 → 3; task: 3-class classification of random inputs, batches of 8, float32 "
        "and float64; frozen layers [mlp] also: one epoch of train_cell on the teacher regression "
        "task (48 training samples, float64)")


def test_frozen_layers_must_not_move_even_when_the_algorithm_is_asked_only_for_layer_1(tmp_path):
    # Writes the output layer's weights in feedback_step only when it is called without a
    # preceding forward_updates (a feedback-only epoch): step checks pass, the runner's do not.
    text = RULE.replace('''    record_graph = True
''', '''    record_graph = True
    capabilities = Capabilities(mlp=True, trainable_feedback=True)

    def __init__(self, network, task, params):
        super().__init__(network, task, params)
        self.q = torch.nn.Parameter(torch.zeros(1, dtype=network.dtype))
        self.optimizer = torch.optim.SGD([self.q], lr=0.1)
        self.pending = False

    def feedback_step(self, fwd):
        if not self.pending:
            with torch.no_grad():
                self.network.layer(self.network.depth).linear.weight.add_(1e-3)
        self.pending = False
        loss = ((self.q - 1.0) ** 2).sum()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item()
''').replace("return list(grads)  # BODY", "self.pending = True\n        return list(grads)")
    result = check(write(tmp_path / "rule.py", text))
    assert result.exit_code == 1
    assert "PASS  step [mlp]" in result.stdout
    assert "FAIL  frozen layers [mlp]: frozen layers moved: 3" in result.stdout


def test_params_without_defaults_or_not_frozen_fail_the_load_check(tmp_path):
    base = RULE.replace("class Rule(Algorithm):", '''from dataclasses import dataclass


@dataclass(frozen=True)
class RuleParams:
    scale: float


class Rule(Algorithm):
    Params = RuleParams''')
    result = check(write(tmp_path / "rule.py", base))
    assert result.exit_code == 1
    assert "FAIL  loads: Params (RuleParams) needs defaults for scale" in result.stdout
    result = check(write(tmp_path / "rule2.py", base.replace("scale: float", "scale: float = 1.0")
                         .replace("frozen=True", "frozen=False")))
    assert "FAIL  loads: Params (RuleParams) must be a frozen dataclass" in result.stdout


def test_unloadable_plugins_and_unknown_names_exit_2(tmp_path):
    result = check(write(tmp_path / "syntax.py", "def broken(:\n"))
    assert result.exit_code == 2
    assert "syntax.py failed to import: SyntaxError" in result.stderr
    result = check(write(tmp_path / "empty.py", "x = 1\n"))
    assert result.exit_code == 2 and "provides no algorithm" in result.stderr
    result = check("feedback-alignmnet")
    assert result.exit_code == 2
    assert "did you mean 'feedback-alignment'?" in result.stderr


def test_builtin_algorithms_pass_the_checks():
    registry = load_registry()
    for name in ("dfa", "ddtp-linear"):  # frozen feedback on MLP + CNN; trainable feedback
        results = check_algorithm(registry.get(name))
        assert results and all(r.passed for r in results), [r.line() for r in results]
        assert any(r.check == "feedback [cnn]" for r in results) == (name == "ddtp-linear")


def test_the_kit_builds_its_cells_without_the_yaml_layer():
    code = "import sys, bioplaus_bench.kit.conformance; print('bioplaus_bench.suite' in sys.modules)"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True).stdout.strip()
    assert imported == "False"


# --- Isolation: a broken entry point does not take the others down ------------------------------

@pytest.fixture()
def broken_entry_point(monkeypatch, tmp_path):
    """An installed-looking plugin whose module raises on import, added to the real entry points."""
    (tmp_path / "half_written_plugin_xyz.py").write_text(
        "raise RuntimeError('half-written plugin')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    broken = importlib.metadata.EntryPoint(name="half-written", value="half_written_plugin_xyz",
                                           group=plugins.ENTRY_POINT_GROUP)
    real = plugins.entry_points

    def entry_points(**selection):
        return [*real(**selection), broken]
    monkeypatch.setattr(plugins, "entry_points", entry_points)
    return broken


def test_a_failing_entry_point_is_reported_with_its_origin_and_the_rest_still_load(broken_entry_point):
    registry = load_registry()
    assert len(registry.warnings) == 1
    warning = registry.warnings[0]
    assert "plugin half-written [entry point] from half_written_plugin_xyz" in warning
    assert "RuntimeError: half-written plugin" in warning
    assert {"bp", "dfa", "feedback-alignment"} <= set(registry.algorithms)

    listing = runner.invoke(app, ["list"])
    assert listing.exit_code == 0
    assert "warning: plugin half-written [entry point]" in listing.stderr
    assert "RuntimeError: half-written plugin" in listing.stderr
    assert "bp" in listing.stdout and "feedback-alignment" in listing.stdout

    result = check("half-written")
    assert result.exit_code == 2
    assert "half-written cannot be loaded" in result.stderr


def test_a_suite_still_runs_when_an_entry_point_is_broken(broken_entry_point, tmp_path):
    suite = write(tmp_path / "s.yaml", """\
        name: iso
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
          fa: {algorithm: feedback-alignment, optimizer: {lr: 1.0e-3}}
        """)
    result = runner.invoke(app, ["run", str(suite), "--out", str(tmp_path / "r"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "warning: plugin half-written [entry point]" in result.stderr
    assert (tmp_path / "r" / "teacher" / "fa" / "seed-0.json").is_file()
    assert "2 cells (2 ok" in result.stderr
