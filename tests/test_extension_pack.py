"""Five kinds of plugin: a package written against the public API alone adds a dataset, an
architecture, a metric and an executor through the hooks, and a suite uses all four; no core
file knows them. The guide's examples are this package's code."""

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from bioplaus_bench.cli import app

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / "tests" / "extension_pack" / "bioplaus_extension_pack.py"
runner = CliRunner()

SUITE = """\
name: extended
seeds: [0, 1]
precision: float64
datasets:
  blobs:
    source: blobs
    options: {classes: 4, n_train: 80}
    architecture: {type: funnel, hidden: [16, 16, 16], options: {narrowest: 3}}
    protocol: {epochs: 2, batch_size: 16, validation: 16}
algorithms:
  bp:
    optimizer: {lr: 1.0e-2, betas: [0.9, 0.999], eps: 1.0e-8}
    metrics: {log_interval: 2, extra: [update-norm]}
  dfa:
    optimizer: {lr: 1.0e-2, betas: [0.9, 0.999], eps: 1.0e-8}
  dtp:
    optimizer: {lr: 1.0e-2, betas: [0.9, 0.999], eps: 1.0e-8}
"""


def test_a_suite_uses_a_plugin_dataset_architecture_metric_and_executor(tmp_path):
    suite = tmp_path / "extended.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(suite), "--plugin", str(PACK), "--out", str(out),
                                 "--executor", "reversed", "--quiet"])
    assert result.exit_code == 0, result.output
    records = {p.relative_to(out).as_posix(): json.loads(p.read_text())
               for p in sorted(out.glob("*/*/seed-*.json"))}
    assert len(records) == 6 and all(r["status"] == "ok" for r in records.values())
    bp = records["blobs/bp/seed-0.json"]
    assert bp["task"] == "classification" and bp["dataset_label"] == "Gaussian blobs"
    # The funnel's widths halve (16, 8, 4 → at least 3) and end in the 4 classes: one norm per
    # weight and bias of its 4 layers, logged by the plugin metric beside the built-in angles.
    row = bp["metrics"][0]
    assert len(row["update-norm"]["norms"]) == 8 and all(n > 0 for n in row["update-norm"]["norms"])
    assert len(row["bp_angle"]) == 4
    # The outside plugins' code is part of the cells' identity: editing them re-runs the cells.
    assert set(bp["config"]["inputs"]["plugins"]) == {"dataset", "architecture",
                                                      "metric update-norm"}
    assert "update-norm" not in records["blobs/dfa/seed-0.json"].get("metrics", [{}])[0]
    # The executor ran the cells last first.
    finished = [r["provenance"]["finished_at"] for _, r in sorted(
        records.items(), key=lambda item: item[1]["order"][1] * 10 + item[1]["seed"])]
    assert finished == sorted(finished, reverse=True)
    listed = runner.invoke(app, ["list", "--plugin", str(PACK)])
    for name in ("blobs", "funnel", "update-norm", "reversed"):
        assert name in listed.output


def test_unknown_plugin_names_are_suite_errors_with_a_suggestion(tmp_path):
    suite = tmp_path / "typo.yaml"
    for wrong, message in (("source: blobs", "source: blob"),
                           ("type: funnel", "type: funel"),
                           ("extra: [update-norm]", "extra: [update-norms]")):
        suite.write_text(SUITE.replace(wrong, message))
        result = runner.invoke(app, ["validate", str(suite), "--plugin", str(PACK)])
        assert result.exit_code == 2, result.output
        assert "did you mean" in result.output and str(suite) in result.output


def test_the_guide_shows_the_package_code():
    guide = (ROOT / "docs" / "extending.md").read_text()
    code = PACK.read_text()
    blocks = re.findall(r"```python\n(.*?)\n```", guide, re.S)
    assert len(blocks) == 4
    for block in blocks:
        for line in block.splitlines():
            if line.strip() and not line.lstrip().startswith("@hookimpl") and "#" not in line:
                assert line in code, line
