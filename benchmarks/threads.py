"""Torch threads on a quiet and on a busy machine: the step time of small networks at 1, 2, ...
threads, alone and beside a busy loop on every core (the default of ``bench``, docs in README).

    .venv/bin/python benchmarks/threads.py [--threads 1,2] [--models mnist,cnn] [--seconds 4]

Each (model, threads, machine) is timed in a fresh child process (its thread pool set before
the first operation, as ``bench`` does it) for about ``--seconds`` seconds of BP minibatch steps
(forward, backward, Adam; float32, batch 128); the figure is the median step time. "busy" runs
one pure-Python busy loop per core beside it, as another user's jobs would. Bounded: at most
models × thread counts × 2 children of ``--seconds`` each, plus start-up.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from bioplaus_bench.scripts import listing, positive, positives

# In the child: time BP steps of one network with a given thread count; print the median.
CHILD = """
import statistics, sys, time
import torch
threads, model, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
torch.set_num_threads(threads)
from bioplaus_bench.api import ArchitectureSpec, build_network
specs = {"mnist": (ArchitectureSpec(hidden=(256,) * 5), (1, 28, 28)),
         "cnn": (ArchitectureSpec(type="cnn", conv_channels=(32, 64), hidden=(512,)), (3, 32, 32))}
spec, shape = specs[model]
torch.manual_seed(0)
network = build_network(spec, shape, 10, dtype=torch.float32)
optimiser = torch.optim.Adam(network.parameters(), lr=1e-6)
x, y = torch.randn(128, *shape), torch.randint(0, 10, (128,))
def step():
    optimiser.zero_grad()
    torch.nn.functional.cross_entropy(network(x), y).backward()
    optimiser.step()
for _ in range(3):
    step()
times, end = [], time.perf_counter() + seconds
while time.perf_counter() < end or len(times) < 3:
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
print(statistics.median(times) * 1e3, len(times))
"""

BUSY = "while True: pass"


def time_steps(threads: int, model: str, seconds: float) -> tuple[float, int]:
    # OMP_NUM_THREADS unset: the child's own set_num_threads is the only setting.
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", CHILD, str(threads), model, str(seconds)],
                          capture_output=True, text=True, env=env, timeout=60 + 20 * seconds)
    if done.returncode != 0:
        raise SystemExit(f"the timing child failed: {done.stderr.strip().splitlines()[-1]}")
    median, steps = done.stdout.split()
    return float(median), int(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=positives, default="1,2",
                        help="thread counts to time (comma-separated)")
    parser.add_argument("--models", type=listing(("mnist", "cnn")), default="mnist",
                        help="mnist (the MNIST MLP) and/or cnn")
    parser.add_argument("--seconds", type=positive(float), default=4.0,
                        help="timing per measurement")
    args = parser.parse_args()
    counts = args.threads
    cores = os.cpu_count() or 1
    print(f"{cores} cores; median ms per BP step (batch 128, float32); busy: {cores} busy loops "
          "beside it\n")
    print("| model | threads | quiet ms | busy ms | busy / quiet |")
    print("|---|---|---|---|---|")
    results = {}
    for model in args.models:
        for threads in counts:
            quiet, _ = time_steps(threads, model, args.seconds)
            hogs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(cores)]
            try:
                time.sleep(0.5)  # the loops are running before the timing starts
                busy, _ = time_steps(threads, model, args.seconds)
            finally:
                for hog in hogs:
                    hog.kill()
                    hog.wait()
            results[model, threads] = (quiet, busy)
            print(f"| {model} | {threads} | {quiet:.2f} | {busy:.2f} | {busy / quiet:.1f} |",
                  flush=True)
    print()
    for model in args.models:
        base = results.get((model, 1))
        for threads in counts:
            if base and threads != 1:
                quiet, busy = results[model, threads]
                print(f"{model}: {threads} threads against 1: quiet {quiet / base[0]:.2f} ×, "
                      f"busy {busy / base[1]:.2f} × the time")


if __name__ == "__main__":
    main()
