"""End to end through the real `bench` command: runs, caching, tables, invalid suites, plugins."""

from pathlib import Path

import pytest

from .helpers import PLUGIN, TINY_SUITE, invoke, records, write

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_smoke_suite_runs_then_is_fully_cached_and_tables_render(tmp_path):
    out = tmp_path / "results"
    quick = ("--seeds", "2", "--epochs", "2")  # the demo's own size is checked by `make demo`
    first = invoke("run", ROOT / "suites" / "smoke.yaml", "--out", out, "--quiet", *quick)
    assert first.exit_code == 0, first.output
    for label in ("BP", "DDTP-linear", "DDTP-RHL", "DTP-DRL", "DDTP-control", "DTP",
                  "DTP (pre-trained)", "DFA", "FA"):
        assert f"| {label} |" in first.stdout
    saved = records(out)
    # 9 algorithms × 2 seeds: the 8 built-ins and feedback alignment, an outside plugin.
    assert len(saved) == 18 and all(r["status"] == "ok" for r in saved.values())
    assert saved["teacher/fa/seed-0.json"]["algorithm_name"] == "feedback-alignment"
    record = saved["teacher/bp/seed-0.json"]
    assert record["provenance"]["torch"] and record["provenance"]["dtype"] == "float64"
    assert len(record["history"]) == record["config"]["dataset"]["protocol"]["epochs"]

    second = invoke("run", ROOT / "suites" / "smoke.yaml", "--out", out, "--quiet", *quick)
    assert second.exit_code == 0
    assert "18 from earlier runs" in second.stderr
    assert records(out) == saved

    markdown = invoke("table", out)
    assert markdown.exit_code == 0 and "| BP |" in markdown.stdout
    latex = invoke("table", out, "--format", "latex")
    assert "\\begin{tabular}" in latex.stdout and "\\pm" in latex.stdout
    assert "\\toprule" in latex.stdout and "\\mathbf" in latex.stdout
    csv = invoke("table", out, "--format", "csv")
    lines = csv.stdout.strip().splitlines()
    assert lines[0].startswith("dataset,dataset_label,algorithm,label,task,metric,mean,sd,n")
    assert len(lines) == 1 + 9
    assert invoke("table", out, "--format", "html").exit_code == 2


def test_force_reruns_and_the_same_seed_gives_identical_records(tiny, tmp_path):
    out = tmp_path / "r"
    assert invoke("run", tiny, "--out", out, "--quiet").exit_code == 0
    before = records(out)
    again = invoke("run", tiny, "--out", out, "--quiet", "--force")
    assert again.exit_code == 0 and "0 from earlier runs" in again.stderr
    after = records(out)
    for key in before:
        assert before[key]["history"] == [
            {**row, "seconds": before[key]["history"][i]["seconds"]}
            for i, row in enumerate(after[key]["history"])]
        assert before[key]["final"] == after[key]["final"]
    # Different seeds give different results.
    assert before["teacher/bp/seed-0.json"]["final"] != before["teacher/bp/seed-1.json"]["final"]


def test_only_seeds_runs_those_seeds_at_the_suite_protocol_and_refuses_others(tiny, tmp_path):
    out = tmp_path / "r"
    result = invoke("run", tiny, "--out", out, "--quiet", "--only-seeds", "1", "--only", "bp")
    assert result.exit_code == 0, result.output
    saved = records(out)
    assert list(saved) == ["teacher/bp/seed-1.json"]
    # Choosing seeds, like choosing algorithms, keeps each cell's protocol.
    assert saved["teacher/bp/seed-1.json"]["paper_protocol"] is True
    assert saved["teacher/bp/seed-1.json"]["deviations"] == []
    for bad, message in (("3", "not among the suite's seeds (3); it has 0, 1"),
                         ("a,1", "expected seeds separated by commas, got 'a,1'"),
                         (",", "not among the suite's seeds (none given)")):
        refused = invoke("run", tiny, "--out", out, "--quiet", "--only-seeds", bad)
        assert refused.exit_code == 2 and message in refused.output, refused.output


def test_changed_config_is_rerun_and_overrides_apply(tiny, tmp_path):
    out = tmp_path / "r"
    assert invoke("run", tiny, "--out", out, "--quiet", "--only", "bp", "--seeds", "1").exit_code == 0
    assert list(records(out)) == ["teacher/bp/seed-0.json"]
    result = invoke("run", tiny, "--out", out, "--quiet", "--only", "bp", "--seeds", "1",
                    "--epochs", "3", "--set", "algorithms.bp.optimizer.lr=2e-3")
    assert result.exit_code == 0 and "0 from earlier runs" in result.stderr
    record = records(out)["teacher/bp/seed-0.json"]
    assert len(record["history"]) == 3
    assert record["config"]["optimizer"]["lr"] == 2e-3


INVALID = [
    ("unknown key", "    protocl: {epochs: 1}", "protocol: {epochs: 2, batch_size: 16, validation: 32}",
     ":9: datasets.teacher.protocl: unknown key (did you mean 'protocol'?)"),
    ("wrong type", "epochs: two", "epochs: 2",
     ":9: datasets.teacher.protocol.epochs: expected an integer, got 'two'"),
    ("missing field", "optimizer: {betas: [0.9, 0.999], eps: 1.0e-8}\n  dfa:",
     "optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}\n  dfa:",
     ":12: algorithms.bp.optimizer: missing required key 'lr'"),
    ("unknown entry key", "optimizr: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}\n  dfa:",
     "optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}\n  dfa:",
     ":12: algorithms.bp.optimizr: unknown key (did you mean 'optimizer'?); expected one of: "
     "algorithm, datasets, label, metrics"),
    ("unknown algorithm", "  dfb:", "  dfa:",
     ":13: algorithms.dfb: unknown algorithm 'dfb' (did you mean 'dfa'?)"),
    ("unknown dataset", "source: fashion", "source: teacher",
     ":6: datasets.teacher.source: unknown dataset source 'fashion' (did you mean 'fashion_mnist'?)"),
    ("bad value", "precision: float16", "precision: float64",
     ":3: precision: expected one of 'float32', 'float64', got 'float16'"),
    ("duplicate key", "seeds: [0, 1]\nseeds: [2]", "seeds: [0, 1]", ":3: duplicate key 'seeds'"),
    ("invalid yaml", "seeds: [0, 1", "seeds: [0, 1]", "invalid YAML"),
]


@pytest.mark.parametrize("kind, bad, good, message", INVALID, ids=[case[0] for case in INVALID])
def test_each_kind_of_invalid_suite_exits_2_with_file_line_and_key(tmp_path, kind, bad, good, message):
    text = TINY_SUITE
    if kind == "unknown key":
        text = text.replace("    protocol: " + good.split("protocol: ")[1], bad)
    else:
        assert good in text
        text = text.replace(good, bad, 1)
    suite = write(tmp_path / "bad.yaml", text)
    for command in (["validate", suite], ["run", suite, "--out", tmp_path / "r"]):
        result = invoke(*command)
        assert result.exit_code == 2, result.output
        assert message in result.stderr, result.stderr
        assert str(suite) in result.stderr
    assert not (tmp_path / "r").exists()


def test_unknown_algorithm_params_key_is_reported_with_its_line(tiny, tmp_path):
    text = TINY_SUITE.replace("  dfa:\n", "  dfa:\n    params: {target_stepsise: 0.5}\n")
    result = invoke("validate", write(tmp_path / "s.yaml", text))
    assert result.exit_code == 2
    assert ":14: algorithms.dfa.params.target_stepsise: unknown key (did you mean " \
           "'target_stepsize'?)" in result.stderr


def test_per_dataset_override_errors_point_at_the_override(tmp_path):
    text = TINY_SUITE.replace("  dfa:\n", "  dfa:\n    datasets:\n      teacher:\n"
                                          "        optimizer: {lr: fast}\n")
    result = invoke("validate", write(tmp_path / "s.yaml", text))
    assert result.exit_code == 2
    assert ":16: algorithms.dfa.datasets.teacher.optimizer.lr: expected a number" in result.stderr


def test_validate_accepts_the_shipped_suites():
    for name in ("smoke", "table1"):
        result = invoke("validate", ROOT / "suites" / f"{name}.yaml")
        assert result.exit_code == 0, result.output
        assert "ok" in result.stdout


def test_plugin_file_adds_an_algorithm_with_only_the_public_api(tiny, tmp_path):
    plugin = write(tmp_path / "my_rule.py", PLUGIN)
    listing = invoke("list", "--plugin", plugin)
    assert listing.exit_code == 0
    assert "sign-bp" in listing.stdout and "file" in listing.stdout
    assert "built-in" in listing.stdout
    text = TINY_SUITE + "  sign-bp:\n    params: {scale: 0.5}\n" \
                        "    optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}\n"
    suite = write(tmp_path / "with_plugin.yaml", text)
    assert invoke("validate", suite).exit_code == 2  # unknown without --plugin
    out = tmp_path / "r"
    result = invoke("run", suite, "--plugin", plugin, "--out", out, "--quiet", "--only", "sign-bp")
    assert result.exit_code == 0, result.output
    assert "| Sign BP |" in result.stdout
    record = records(out)["teacher/sign-bp/seed-0.json"]
    assert record["status"] == "ok" and record["config"]["params"] == {"scale": 0.5}


def test_two_plugin_files_claiming_one_name_is_an_error_naming_both(tmp_path):
    first = write(tmp_path / "one.py", PLUGIN)
    second = write(tmp_path / "two.py", PLUGIN.replace("Sign BP", "Other"))
    result = invoke("list", "--plugin", first, "--plugin", second)
    assert result.exit_code == 2
    assert "sign-bp" in result.stderr and "one.py" in result.stderr and "two.py" in result.stderr
    # A file named like a built-in is used, with a warning (test_plugin_loading: after upgrades).
    clash = write(tmp_path / "bp_again.py", PLUGIN.replace('"sign-bp"', '"bp"'))
    result = invoke("list", "--plugin", clash)
    assert result.exit_code == 0 and "warning: two plugins claim the algorithm name 'bp': " \
        "bioplaus_bench_plugins.bp" in result.stderr


def test_failing_cell_is_recorded_and_the_others_still_run(tiny, tmp_path):
    broken = write(tmp_path / "broken.py", PLUGIN.replace(
        "grads = torch.autograd.grad", "raise ValueError('boom')\n        grads = torch.autograd.grad"))
    text = TINY_SUITE + "  sign-bp:\n    optimizer: {lr: 1.0e-3}\n"
    suite = write(tmp_path / "s.yaml", text)
    out = tmp_path / "r"
    result = invoke("run", suite, "--plugin", broken, "--out", out, "--quiet")
    assert result.exit_code == 1
    saved = records(out)
    assert saved["teacher/sign-bp/seed-0.json"]["status"] == "error"
    assert "ValueError: boom" in saved["teacher/sign-bp/seed-0.json"]["traceback"]
    assert saved["teacher/bp/seed-1.json"]["status"] == "ok"
    assert saved["teacher/dfa/seed-1.json"]["status"] == "ok"


def test_diverging_cell_is_marked_with_its_reason_and_the_run_succeeds(tmp_path):
    # A huge step size blows the weights up until the training loss overflows. (A rule that
    # proposes NaN updates is a fault of the rule, not divergence: see test_run_trust.)
    sign_rule = write(tmp_path / "sign.py", PLUGIN)
    text = TINY_SUITE + "  sign-bp:\n    optimizer: {lr: 1.0e+200}\n"
    suite = write(tmp_path / "s.yaml", text.replace("epochs: 2", "epochs: 4"))
    out = tmp_path / "r"
    result = invoke("run", suite, "--plugin", sign_rule, "--out", out, "--quiet", "--only",
                    "sign-bp")
    assert result.exit_code == 0, result.output
    record = records(out)["teacher/sign-bp/seed-0.json"]
    assert record["status"] == "diverged"
    assert record["reason"].startswith("training loss non-finite at epoch ")
    assert len(record["history"]) < 4
    assert "2 diverged" in result.stdout


def test_missing_dataset_exits_2_naming_folder_and_files(tmp_path):
    suite = write(tmp_path / "m.yaml", TINY_SUITE.replace("source: teacher", "source: mnist")
                  .replace("    options: {n_train: 64, n_test: 32, hidden: [16, 16]}\n", ""))
    result = invoke("run", suite, "--data-dir", tmp_path / "nowhere", "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in result.stderr
    assert "train-images-idx3-ubyte" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
