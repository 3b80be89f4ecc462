"""Start-up: the command line imports nothing heavy that a command may not need. ``bench
--help`` (and every command's) imports neither torch nor pandas nor scipy; the commands import
them when they run, ``list`` and ``validate`` only torch (for the registry's algorithm classes);
torchvision only when image data is read. The times themselves are measured by
benchmarks/startup.py, not here."""

import json
import subprocess
import sys

from .helpers import TINY_SUITE

HEAVY = ("torch", "pandas", "scipy")


def modules_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=300)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_the_command_line_imports_without_torchvision():
    loaded = modules_after("import bioplaus_bench.cli")
    assert "bioplaus_bench.cli.running" in loaded  # the check sees the commands' modules
    assert "torchvision" not in loaded


def test_the_built_in_datasets_register_without_torchvision():
    loaded = modules_after("from bioplaus_bench.registry import load_registry\nload_registry()")
    assert "bioplaus_bench.data.images" in loaded
    assert "torchvision" not in loaded


def test_help_imports_neither_torch_nor_pandas_nor_scipy():
    loaded = modules_after(
        "from typer.testing import CliRunner\n"
        "from bioplaus_bench.cli import app\n"
        "from bioplaus_bench.cli.common import app as typer_app\n"
        "import typer.main\n"
        "commands = typer.main.get_command(typer_app).commands\n"
        "assert len(commands) >= 10, sorted(commands)\n"
        "for args in [['--help'], *([name, '--help'] for name in commands)]:\n"
        "    result = CliRunner().invoke(app, args)\n"
        "    assert result.exit_code == 0 and 'Usage' in result.output, (args, result.output)")
    assert "bioplaus_bench.cli.tools" in loaded  # every command was defined
    assert not [name for name in HEAVY if name in loaded]


def test_validate_and_list_import_no_pandas_nor_scipy(tmp_path):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY_SUITE)
    loaded = modules_after(
        "from typer.testing import CliRunner\n"
        "from bioplaus_bench.cli import app\n"
        f"for args in [['validate', {str(suite)!r}], ['list']]:\n"
        "    result = CliRunner().invoke(app, args)\n"
        "    assert result.exit_code == 0, (args, result.output)")
    assert "torch" in loaded  # the registry's algorithm classes need it
    assert "pandas" not in loaded and "scipy" not in loaded


def test_the_help_s_data_variable_is_the_data_layer_s():
    from bioplaus_bench import data
    from bioplaus_bench.cli.common import DataDirOption

    assert f"${data.DATA_ENV} or ./data" in DataDirOption.__metadata__[0].help


def test_the_damping_help_s_default_grid_is_the_search_s():
    from bioplaus_bench.execution.damping import DAMPING_GRID

    described = (0.0, *(10.0 ** k for k in range(-5, 2)))  # "0 and the powers of ten ..."
    assert described == DAMPING_GRID
