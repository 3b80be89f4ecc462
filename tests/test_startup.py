"""Start-up: the command line imports nothing heavy that a command may not need. torchvision
(about a second and a half) is imported only when image data is read; the times themselves are
measured by benchmarks/startup.py, not here."""

import json
import subprocess
import sys


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
