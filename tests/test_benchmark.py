"""The speed benchmarks (epoch_time.py, seed_batching.py, design_choices.py) run end to end (a
quick pass; their figures are not checked here)."""

import runpy
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "epoch_time.py"


@pytest.mark.slow
def run_to_the_end(script):
    """Run ``script`` as `python SCRIPT` would (its argv already set): it must end with exit
    code 0, whether it returns or calls sys.exit."""
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exit:
        assert exit.code in (0, None), f"{script.name} exited {exit.code}"


def test_the_speed_benchmark_prints_its_tables_and_the_goals(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [
        str(BENCHMARK), "--quick", "--models", "mnist", "--dtypes", "float32,float64",
        "--algorithms", "bp,dfa,ddtp-linear", "--data-dir", str(tmp_path), "--no-inference"])
    run_to_the_end(BENCHMARK)
    out = capsys.readouterr().out
    assert "### mnist (mlp), float32" in out and "### float64 time / float32 time" in out
    assert "| ddtp-linear |" in out and "% of peak)" in out
    assert "skipped: " in out and str(tmp_path) in out  # no MNIST there: said in one line
    goals = out.split("### Goals (MNIST MLP)")[1]
    assert "ddtp-linear ≤ 2 × BP" in goals and "dfa: float64 ≤ 2 × float32" in goals
    rows = [line for line in goals.splitlines() if line.startswith("| ") and "| goal |" not in line]
    assert len(rows) == 1 + 2 + 3 + 3  # peak, two ratios, three f64/f32, three logging
    assert all("| met |" in row or "| missed by " in row for row in rows)


@pytest.mark.slow
def test_the_backward_rules_goal_is_checked_on_every_network_timed(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [
        str(BENCHMARK), "--quick", "--models", "mnist,cnn", "--dtypes", "float32",
        "--algorithms", "bp,usf,dfa", "--no-epoch", "--no-inference"])
    run_to_the_end(BENCHMARK)
    out = capsys.readouterr().out
    goal = out.split("### Goal: every backward-pass rule ≤ 1.3 × BP")[1]
    rows = [line for line in goal.splitlines() if line.startswith(("| mnist |", "| cnn |"))]
    assert len(rows) == 2 and all("| usf |" in row for row in rows)  # not BP, not DFA
    assert all("| met |" in row or "| missed by " in row for row in rows)


def test_the_inference_rules_are_timed_against_bp_with_the_goal(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [
        str(BENCHMARK), "--quick", "--models", "mnist", "--dtypes", "float32",
        "--algorithms", "bp", "--no-epoch", "--inference", "pc:T=20;ep:T_free=3,T_nudged=2"])
    run_to_the_end(BENCHMARK)
    out = capsys.readouterr().out
    section = out.split("### Rules with an inference phase: mnist, float32")[1]
    assert "| pc | T=20 |" in section and "| ep | T_free=3, T_nudged=2 |" in section
    goal = section.split("Goal: pc at T = 20 ≤ 15 × BP: ")[1].splitlines()[0]
    assert goal.endswith(", met") or ", missed by " in goal


def test_the_whole_epoch_section_trains_every_listed_algorithm(tmp_path, monkeypatch, capsys):
    """Section 4 end to end for every algorithm of the benchmark's list, on a tiny MNIST (table
    1's validation split of 5000 leaves 64 training samples); the timing sections are skipped
    by running the section alone."""
    from .helpers import write_idx_dataset

    write_idx_dataset(tmp_path, n_train=5064, n_test=12)
    benchmark = runpy.run_path(str(BENCHMARK))
    names = [name for name in benchmark["ALGORITHMS"] if name != "bp"]
    benchmark["whole_epochs"](names, tmp_path, "cpu", verify_checksums=False)
    out = capsys.readouterr().out
    assert f"MNIST from {tmp_path}: 64 training, 5000 validation, 12 test samples" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "| epoch" not in line]
    assert [row.split(" | ")[0][2:] for row in rows] == names
    assert not any("n/a" in row for row in rows)
    # a rule no shipped suite has on MNIST gets its row, not a crash
    registry = benchmark["load_registry"]()
    assert benchmark["mnist_cells"](["dfa", "elsewhere"], registry)["elsewhere"] is None


def test_bad_arguments_of_the_speed_benchmark_are_one_line_and_exit_2(monkeypatch, capsys):
    for arguments in (["--models", "mnistx"], ["--dtypes", "float33"], ["--threads", "-1"],
                      ["--device", "nowhere"], ["--algorithms", "bp,nope"],
                      ["--inference", "pc:X=3"], ["--inference", "pc:T"]):
        monkeypatch.setattr(sys, "argv", [str(BENCHMARK), "--quick", *arguments])
        with pytest.raises(SystemExit) as exit:
            runpy.run_path(str(BENCHMARK), run_name="__main__")
        assert exit.value.code == 2, arguments
        err = capsys.readouterr().err.splitlines()
        assert "error: " in err[-1] and "Traceback" not in "\n".join(err), arguments


SEEDS_BENCHMARK = BENCHMARK.parent / "seed_batching.py"


def test_the_seed_benchmark_prints_serial_against_vectorised_and_the_goal(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [
        str(SEEDS_BENCHMARK), "--quick", "--models", "mnist", "--dtypes", "float64",
        "--algorithms", "bp,ddtp-linear", "--seeds", "1,10"])
    run_to_the_end(SEEDS_BENCHMARK)
    out = capsys.readouterr().out
    assert "### mnist (mlp), float64" in out and "| S=10 ms | ratio |" in out
    goal = out.split("### Goal: 10 vectorised seeds of every target-propagation method")[1]
    rows = [line for line in goal.splitlines() if line.startswith("| mnist |")]
    assert len(rows) == 1 and "| ddtp-linear |" in rows[0]  # TP methods only
    assert "| met |" in rows[0] or "| missed by " in rows[0]


CHOICES_BENCHMARK = BENCHMARK.parent / "design_choices.py"


def run_design_choices(monkeypatch, capsys, sections: str) -> str:
    monkeypatch.setattr(sys, "argv", [str(CHOICES_BENCHMARK), "--rounds", "1", "--only", sections])
    run_to_the_end(CHOICES_BENCHMARK)
    return capsys.readouterr().out


def test_the_design_choices_benchmark_prints_adam_graphs_and_magnitudes(monkeypatch, capsys):
    out = run_design_choices(monkeypatch, capsys, "adam,graphs,magnitudes")
    assert "(model/optim.py)" in out and "| per-parameter loop |" in out
    assert "(model/networks.py, forward_pass)" in out and "kept / none" in out
    assert "(backward/rule.py)" in out and "| torch.rand |" in out and "(model/arch" not in out


@pytest.mark.slow
def test_the_design_choices_benchmark_prints_both_cnn_layouts(monkeypatch, capsys):
    out = run_design_choices(monkeypatch, capsys, "layout")
    rows = [line for line in out.splitlines() if line.startswith(("| float32 |", "| float64 |"))]
    assert len(rows) == 6 and "(model/architectures.py)" in out


DEFAULTS_BENCHMARK = BENCHMARK.parent / "energy_defaults.py"


def test_the_defaults_benchmark_prints_every_rule_s_errors_costs_and_choice(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [
        str(DEFAULTS_BENCHMARK), "--quick", "--depths", "1,2", "--width", "8", "--batch", "8",
        "--trained-steps", "2", "--family-steps", "2", "--converged", "30", "--rounds", "1"])
    run_to_the_end(DEFAULTS_BENCHMARK)
    out = capsys.readouterr().out
    for title in ("PC: 784-8-10, initial weights", "PC: 784-2×8-10, after 2 BP steps",
                  "EP: 784-2×8-10, initial weights", "EP: error against β, both phases 30",
                  "The feedback-alignment family: 784-2×8-10, after 2 steps of its rule"):
        assert f"### {title}" in out, title
    assert "| pc T=20, inference_lr=0.1, inference_momentum=0, output_weight=1 |" in out
    assert "| angle to ∇ℓ(s*) ° |" in out and "| W3 ° |" in out
    chosen = out.split("### Chosen")[1].splitlines()
    assert {line.split(":")[0] for line in chosen if line.startswith("- ")} == {
        "- pc", "- ep", "- feedback-alignment", "- kolen-pollack"}


@pytest.mark.parametrize(("script", "arguments", "expected"), [
    ("seed_batching.py", ["--seeds", "0,10"], "--seeds: expected a positive number, got '0'"),
    ("seed_batching.py", ["--models", "mnist,vgg"], "'vgg' is none of them"),
    ("seed_batching.py", ["--algorithms", "bp,nope"], "unknown algorithm 'nope'"),
    ("design_choices.py", ["--only", "adam,speed"], "'speed' is none of them"),
    ("design_choices.py", ["--rounds", "0"], "--rounds: expected a positive number"),
    ("energy_defaults.py", ["--only", "pc,xy"], "'xy' is none of them"),
    ("energy_defaults.py", ["--goal", "0"], "--goal: expected a positive number, got '0'"),
    ("threads.py", ["--threads", "1,x"], "--threads: expected a positive number, got 'x'"),
    ("threads.py", ["--models", "cifar"], "'cifar' is none of them"),
    ("threads.py", ["--seconds", "inf"], "--seconds: expected a positive number, got 'inf'"),
    ("startup.py", ["--repeat", "-2"], "--repeat: expected a positive number, got '-2'"),
    ("readme_table.py", ["--root", "{tmp}/nowhere"], "no file README.md there"),
    ("readme_table.py", ["--root", "{tmp}/a-file"], "no file README.md there"),
])
def test_bad_arguments_of_the_scripts_are_one_line_and_exit_2(script, arguments, expected, tmp_path,
                                                               monkeypatch, capsys):
    (tmp_path / "a-file").write_text("")
    path = BENCHMARK.parent / script
    monkeypatch.setattr(sys, "argv", [str(path), *(a.format(tmp=tmp_path) for a in arguments)])
    with pytest.raises(SystemExit) as exit:
        runpy.run_path(str(path), run_name="__main__")
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert expected in err.splitlines()[-1] and "Traceback" not in err
