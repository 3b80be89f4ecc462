"""The figures of `bench plot` and `bench report` as a reader sees them: Figure 4 with every
layer, a legend naming each method and no empty panel; learning curves of chosen datasets; the
README's figure of the reference, made by the command it shows."""

import json
import re
from pathlib import Path

import pytest

from .helpers import invoke

ROOT = Path(__file__).resolve().parent.parent
METHODS = (("dtp", "DTP"), ("ddtp-linear", "DDTP-linear"))


def write_records(folder: Path, datasets=("mnist",), gnt=METHODS, seeds=(0, 1), depth=4):
    """Records of two methods × ``seeds`` per dataset, 3 epochs, angles logged every 10
    minibatches: BP angles of all ``depth`` layers (the output layer's ~1e-7°, as a TP rule's
    output layer follows the gradient), GNT angles of the hidden ones for the methods ``gnt``."""
    for d, dataset in enumerate(datasets):
        for m, (name, label) in enumerate(METHODS):
            for seed in seeds:
                metrics = [{"epoch": 1 + k // 4, "batch": 10 * (k % 4),
                            "bp_angle": [30.0 + m + k % 3 + i for i in range(depth - 1)]
                            + [1.5e-7],
                            **({"gnt_angle": [20.0 + m + k % 5 + i for i in range(depth - 1)]}
                               if (name, label) in gnt else {})}
                           for k in range(12)]
                history = [{"epoch": e, "train_loss": 1.0 / e, "test_loss": 1.0 / e,
                            "test_accuracy": 0.9 + 0.01 * e - 0.005 * m + 0.001 * seed}
                           for e in (1, 2, 3)]
                record = {"dataset": dataset, "dataset_label": dataset.upper(),
                          "algorithm": name, "algorithm_name": name, "label": label,
                          "seed": seed, "status": "ok", "task": "classification",
                          "order": [d, m], "metric": "test_error",
                          "config": {"metrics": {"log_interval": 10},
                                     "dataset": {"protocol": {"epochs": 3}}},
                          "history": history, "final": history[-1], "metrics": metrics}
                path = folder / dataset / name / f"seed-{seed}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(record))
    return folder


@pytest.fixture
def drawn(monkeypatch):
    """The figures `bench plot` saves, as matplotlib objects."""
    from matplotlib.figure import Figure

    figures = []
    save = Figure.savefig

    def keep(self, *args, **kwargs):
        figures.append(self)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def legend_texts(fig) -> list[str]:
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes)]
    return [t.get_text() for legend in legends if legend for t in legend.get_texts()]


def titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def plot(folder, drawn, *options):
    result = invoke("plot", folder, "--out", folder / "f.png", *options)
    assert result.exit_code == 0, result.output
    assert len(drawn) == 1
    return drawn[0], result


def test_angles_show_every_layer_with_a_legend_naming_each_method(tmp_path, drawn):
    fig, _ = plot(write_records(tmp_path / "r"), drawn, "--figure", "angles")
    assert legend_texts(fig) == ["DTP (n=2)", "DDTP-linear (n=2)"]  # mean over both seeds
    bp = [f"Layer {i}: angle with the BP gradient" for i in (1, 2, 3)]
    gnt = [f"Layer {i}: angle with the GNT update" for i in (1, 2, 3)]
    expected = [t for pair in zip(bp, gnt, strict=True) for t in pair]
    assert titles(fig) == [*expected, "Layer 4 (output): angle with the BP gradient"]
    assert all(len(ax.lines) == 2 for ax in fig.axes)  # no empty panel: both methods in each
    assert "SD" in fig.legends[0].get_title().get_text()


def test_layer_picks_one_row_and_an_unlogged_layer_is_refused(tmp_path, drawn):
    folder = write_records(tmp_path / "r")
    fig, _ = plot(folder, drawn, "--layer", "2")
    assert titles(fig) == ["Layer 2: angle with the BP gradient",
                           "Layer 2: angle with the GNT update"]
    result = invoke("plot", folder, "--layer", "5", "--out", tmp_path / "g.png")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --layer 5: angles are logged for layers 1 to 4"


def test_a_metric_not_logged_is_left_out_with_a_sentence(tmp_path, drawn):
    fig, result = plot(write_records(tmp_path / "r", gnt=()), drawn)
    assert titles(fig) == [f"Layer {i}: angle with the BP gradient" for i in (1, 2, 3)] + [
        "Layer 4 (output): angle with the BP gradient"]
    assert all(ax.lines for ax in fig.axes)
    assert "note: Angles with the GNT update were not logged (metrics.gnt_angles): left out." \
        in result.stderr


def test_a_metric_logged_by_some_methods_names_the_others(tmp_path, drawn):
    fig, result = plot(write_records(tmp_path / "r", gnt=METHODS[:1]), drawn)
    gnt = [ax for ax in fig.axes if "GNT" in ax.get_title()]
    assert len(gnt) == 3 and all(len(ax.lines) == 1 for ax in gnt)
    assert "note: Angles with the GNT update were not logged for DDTP-linear." in result.stderr


def test_angles_of_several_datasets_ask_for_one(tmp_path, drawn):
    folder = write_records(tmp_path / "r", datasets=("mnist", "fashion_mnist"))
    result = invoke("plot", folder, "--out", tmp_path / "f.png")
    assert result.exit_code == 2 and "pick one with --dataset" in result.stderr
    fig, _ = plot(folder, drawn, "--dataset", "fashion_mnist", "--layer", "1")
    assert fig.legends[0].get_title().get_text().startswith("FASHION_MNIST:")


def test_curves_of_the_chosen_datasets_only(tmp_path, drawn):
    folder = write_records(tmp_path / "r", datasets=("mnist", "fashion_mnist", "cifar10"))
    fig, _ = plot(folder, drawn, "--figure", "curves", "--dataset", "mnist",
                  "--dataset", "cifar10")
    assert titles(fig) == ["MNIST (mean ± SD over seeds)", "CIFAR10 (mean ± SD over seeds)"]
    assert legend_texts(fig) == ["DTP (n=2)", "DDTP-linear (n=2)"] * 2
    assert all(ax.collections for ax in fig.axes)  # the ± SD bands
    wrong = invoke("plot", folder, "--figure", "curves", "--dataset", "mnits",
                   "--out", tmp_path / "g.png")
    assert wrong.exit_code == 2 and len(wrong.stderr.strip().splitlines()) == 1
    assert "no records of 'mnits' (did you mean 'mnist'?)" in wrong.stderr


def alignment_section(folder: Path) -> str:
    result = invoke("report", folder)
    assert result.exit_code == 0, result.output
    page = (folder / "report.html").read_text()
    return page[page.index('<section id="alignment">'):page.index('<section id="status">')]


def test_the_pages_figure_4_has_every_layer_a_legend_and_no_empty_panel(tmp_path):
    section = alignment_section(write_records(tmp_path / "r", gnt=METHODS[:1]))
    figures = re.findall(r"<figure>.*?</figure>", section, flags=re.S)
    assert len(figures) == 1
    assert len(re.findall(r'<g id="axes_\d+"', figures[0])) == 7  # 4 BP + 3 GNT panels
    assert '<g id="legend_1"' in figures[0]
    assert "Angles with the GNT update were not logged for DDTP-linear." in section


def test_the_pages_table_names_the_output_layer_and_formats_its_angle_like_the_others(tmp_path):
    section = alignment_section(write_records(tmp_path / "r"))
    rows = re.findall(r"<tr><td>MNIST</td><td>DTP</td><td>([^<]*)</td><td>([^<]*)</td>"
                      r"<td>([^<]*)</td>", section)
    assert rows == [("1", "31.0", "21.8"), ("2", "32.0", "22.8"), ("3", "33.0", "23.8"),
                    ("4 (output)", "0.0", "–")]


# --- the README's figure of the reference ----------------------------------------------------

def readme_figure_command() -> list[str]:
    """The command of `make readme-figure`, as the README shows it."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^readme-figure:.*\n\t\$\(BIN\)/(bench plot .*)$", makefile, flags=re.M)
    assert recipe, "Makefile: no readme-figure target running bench plot"
    return recipe.group(1).split()


def test_the_readme_shows_the_reference_figure_with_the_command_that_made_it():
    command = readme_figure_command()
    readme = (ROOT / "README.md").read_text()
    assert f"`{' '.join(command)}`" in readme
    image = Path(command[command.index("--out") + 1])
    assert f"]({image})" in readme
    assert command[2] == "results/reference/table1"
    assert (ROOT / image).stat().st_size < 200_000


def test_the_readme_figure_command_runs_on_a_tiny_results_folder(tmp_path, drawn):
    command = readme_figure_command()
    folder = write_records(tmp_path / "r", datasets=("mnist", "fashion_mnist"))
    out = tmp_path / "figure.png"
    arguments = [str(folder) if a == command[2] else str(out) if a.endswith(".png") else a
                 for a in command[2:]]
    result = invoke("plot", *arguments)
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"\x89PNG")
    assert titles(drawn[0]) == ["MNIST (mean ± SD over seeds)"]
