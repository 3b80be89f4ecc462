"""How long ``bench`` takes to start: ``bench --help``, ``bench list`` and ``bench validate
suites/table1.yaml``, each run ``--repeat`` times in a fresh process; prints the median and the
fastest wall time, and the time of ``import torch`` alone, which ``list`` and ``validate`` pay
(every algorithm plugin imports the api, which imports torch; ``--help`` imports neither torch
nor pandas nor scipy), and what they take beyond it; also ``import torchvision``, which only
reading image data pays. The goal is under 1 s.

    .venv/bin/python benchmarks/startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bioplaus_bench.scripts import positive

ROOT = Path(__file__).resolve().parents[1]
BENCH = [sys.executable, "-m", "bioplaus_bench"]
COMMANDS = {"bench --help": [*BENCH, "--help"], "bench list": [*BENCH, "list"],
            "bench validate suites/table1.yaml": [*BENCH, "validate", "suites/table1.yaml"],
            "import torch": [sys.executable, "-c", "import torch"],
            # what data/images.py imports only when image data is read
            "import torchvision": [sys.executable, "-c", "import torchvision"]}
GOAL_S = 1.0


def wall_time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=positive(int), default=5)
    repeat = parser.parse_args().repeat
    medians = {}
    for label, command in reversed(COMMANDS.items()):  # torch first: the others are beyond it
        times = [wall_time(command) for _ in range(repeat)]
        medians[label] = median = statistics.median(times)
        verdict = "" if label.startswith("import") else ("  goal met" if median < GOAL_S
                                                          else f"  over the {GOAL_S:g} s goal")
        beyond = (f" ({median - medians['import torch']:+.2f} s beyond import torch)"
                  if label in ("bench list", "bench validate suites/table1.yaml") else "")
        print(f"{label:36s} median {median:5.2f} s, fastest {min(times):5.2f} s{beyond}{verdict}")


if __name__ == "__main__":
    main()
