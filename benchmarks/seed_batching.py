"""Seeds vectorised against seeds run one after the other, with the goals checked (on a CPU, 10
stacked seeds of a target-propagation method within 0.6 × 10 serial ones; on CUDA within 2 × one).

    .venv/bin/python benchmarks/seed_batching.py [--quick] [--models mnist,cifar,cnn]
        [--dtypes float32,float64] [--algorithms bp,dfa,...] [--seeds 1,2,5,10]
        [--threads N] [--device cpu|cuda]

Per model (the MNIST MLP, the CIFAR-10 MLP and the CIFAR-10 CNN shapes), dtype and algorithm:
the time of one training minibatch (batch 128, random tensors of the right shapes) of one seed
through the suite's runner (``Runner.step``), and of S seeds stacked through the vectorised
runner (``StackedRunner.step_seeds``: the same forward pass, proposed updates, feedback step,
fault check and forward Adam, for all seeds at once, each seed drawing its noise from its own
generator). S serial seeds cost S times one seed; the ratio is the vectorised time over that.
Serial and vectorised take turns in every round, so a slower spell of the machine hits both;
each time is the median over rounds.

Goals: on a CPU, in float64 (as the paper's configurations), 10 vectorised seeds of every
target-propagation method cost at most 0.6 × ten serial seeds; on CUDA, 10 vectorised seeds
cost at most 2 × one seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import statistics
import sys
import time

import torch

from bioplaus_bench.api import Classification
from bioplaus_bench.execution.build import build_network
from bioplaus_bench.execution.runner import ForwardOptimisers, Runner
from bioplaus_bench.execution.stacked import StackedRunner, stack_runners
from bioplaus_bench.model.seeds import seed_streams
from bioplaus_bench.registry import load_registry
from bioplaus_bench.scripts import DTYPES, device, listing, one_line_errors, positive, positives
from bioplaus_bench.timed_networks import BATCH, MODELS, OPTIMIZER, RANDOM_WIDTH, synchronize

ALGORITHMS = ["bp", "dfa", "ddtp-linear", "ddtp-control", "dtp", "dtp-pretrained", "ddtp-rhl",
              "dtp-drl", "feedback-alignment", "usf", "brsf", "frsf", "kolen-pollack", "drtp"]
TARGET_PROPAGATION = ["ddtp-linear", "ddtp-control", "dtp", "dtp-pretrained", "ddtp-rhl",
                      "dtp-drl"]
SEEDS = (1, 2, 5, 10)
CPU_GOAL = 0.6  # 10 vectorised seeds of a TP method / 10 serial seeds, float64
CUDA_GOAL = 2.0  # 10 vectorised seeds / one seed
# (timed minibatches per round, rounds) for --quick and for a full run
SAMPLING = {"mnist": ((2, 1), (5, 3)), "cifar": ((1, 1), (2, 2)), "cnn": ((1, 1), (1, 2))}


def runner_for(name: str, model: str, dtype: torch.dtype, device: str, seed: int) -> Runner:
    cls = load_registry().get(name).cls
    spec, input_shape, _ = MODELS[model]
    fields = {f.name for f in dataclasses.fields(cls.Params)}
    params = cls.Params(**({"random_width": RANDOM_WIDTH.get(model, 1024)}
                           if "random_width" in fields else {}))
    torch.manual_seed(seed)
    network = build_network(cls.adapt_architecture(spec, params), input_shape, 10, dtype=dtype,
                            device=device)
    algorithm = cls(network, Classification(10), params)
    return Runner(network, algorithm, ForwardOptimisers(network, algorithm, OPTIMIZER, ()))


class Seeds:
    """S seeds of one algorithm, stepped together (or, for ``serial``, one seed alone)."""

    def __init__(self, name: str, model: str, dtype: torch.dtype, device: str, seeds: int | None):
        count = seeds or 1
        runners = [runner_for(name, model, dtype, device, seed) for seed in range(count)]
        input_shape = MODELS[model][1]
        lead = () if seeds is None else (count,)
        self.x = torch.randn(*lead, BATCH, *input_shape, dtype=dtype, device=device)
        self.y = torch.randint(0, 10, (*lead, BATCH), device=device)
        self.device = device
        self.runner = runners[0] if seeds is None else stack_runners(runners, OPTIMIZER)
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in range(count)]

    def step(self) -> None:
        if not isinstance(self.runner, StackedRunner):
            self.runner.step(self.x, self.y)
            return
        with seed_streams(self.generators):
            self.runner.step_seeds(self.x, self.y, [True] * len(self.generators))

    def seconds_per_step(self, steps: int) -> float:
        synchronize(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        synchronize(self.device)
        return (time.perf_counter() - start) / steps


def time_algorithm(name: str, model: str, dtype: torch.dtype, device: str, seeds: tuple[int, ...],
                   quick: bool) -> tuple[float, dict[int, float]]:
    """One seed's serial seconds per minibatch, and S stacked seeds' for each S."""
    steps, rounds = SAMPLING[model][0 if quick else 1]
    serial = Seeds(name, model, dtype, device, None)
    stacks = {s: Seeds(name, model, dtype, device, s) for s in seeds}
    for trainer in (serial, *stacks.values()):
        trainer.step()  # warm-up: first-call allocations and kernel selection
    serial_times: list[float] = []
    stacked_times: dict[int, list[float]] = {s: [] for s in seeds}
    for _ in range(rounds):
        serial_times.append(serial.seconds_per_step(steps))
        for s, trainer in stacks.items():
            stacked_times[s].append(trainer.seconds_per_step(steps))
    del serial, stacks
    gc.collect()  # the next algorithm's seeds need the memory now
    return statistics.median(serial_times), {s: statistics.median(t)
                                             for s, t in stacked_times.items()}


def main() -> int | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", type=listing(MODELS), default="mnist,cifar,cnn")
    parser.add_argument("--dtypes", type=listing(DTYPES), default="float32,float64")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    parser.add_argument("--seeds", type=positives, default=",".join(map(str, SEEDS)),
                        help="numbers of seeds stacked, e.g. 1,2,5,10")
    parser.add_argument("--threads", type=positive(int), default=None)
    parser.add_argument("--device", type=device, default="cpu")
    args = parser.parse_args()
    return one_line_errors(lambda: run(args))


def run(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = tuple(args.seeds)
    names = args.algorithms.split(",")
    registry = load_registry()
    for name in names:  # an unknown name now, not after minutes of timing
        registry.get(name)
    print(f"device {args.device}, {torch.get_num_threads()} threads, batch {BATCH}; ms per "
          f"minibatch; ratio = S stacked seeds / (S × one serial seed)\n")
    ratios: dict[tuple[str, str, str], dict[int, float]] = {}
    per_seed: dict[tuple[str, str, str], tuple[float, dict[int, float]]] = {}
    for model in args.models:
        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            print(f"### {model} ({MODELS[model][0].type}), {dtype_name}\n")
            header = " | ".join(f"S={s} ms | ratio" for s in seeds)
            print(f"| algorithm | serial ms (1 seed) | {header} |")
            print("|---|---|" + "---|---|" * len(seeds))
            for name in names:
                cls = registry.get(name).cls
                if not cls.capabilities.supports(frozenset(_layer_kinds(model))):
                    continue
                serial, stacked = time_algorithm(name, model, dtype, args.device, seeds,
                                                 args.quick)
                ratio = {s: stacked[s] / (s * serial) for s in seeds}
                ratios[(model, dtype_name, name)] = ratio
                per_seed[(model, dtype_name, name)] = (serial, stacked)
                cells = " | ".join(f"{1e3 * stacked[s]:.1f} | {ratio[s]:.2f}" for s in seeds)
                print(f"| {name} | {1e3 * serial:.1f} | {cells} |", flush=True)
            print()
    print_goals(ratios, per_seed, args.device, seeds)


def _layer_kinds(model: str) -> set[str]:
    return {"dense", "conv"} if MODELS[model][0].type == "cnn" else {"dense"}


def print_goals(ratios: dict[tuple[str, str, str], dict[int, float]],
                per_seed: dict[tuple[str, str, str], tuple[float, dict[int, float]]], device: str,
                seeds: tuple[int, ...]) -> None:
    if 10 not in seeds:
        return
    if device.startswith("cuda"):
        print(f"### Goal: 10 vectorised seeds ≤ {CUDA_GOAL:g} × one seed (CUDA)\n")
        print("| model | dtype | algorithm | 10 seeds / 1 seed | goal |")
        print("|---|---|---|---|---|")
        for (model, dtype, name), (serial, stacked) in per_seed.items():
            value = stacked[10] / serial
            print(f"| {model} | {dtype} | {name} | {value:.2f} | {_verdict(value, CUDA_GOAL)} |")
        return
    print(f"### Goal: 10 vectorised seeds of every target-propagation method ≤ {CPU_GOAL:g} × "
          "ten serial seeds (CPU, float64)\n")
    print("| model | algorithm | ratio | goal |")
    print("|---|---|---|---|")
    for (model, dtype, name), ratio in ratios.items():
        if dtype == "float64" and name in TARGET_PROPAGATION:
            print(f"| {model} | {name} | {ratio[10]:.2f} | {_verdict(ratio[10], CPU_GOAL)} |")


def _verdict(value: float, limit: float) -> str:
    return "met" if value <= limit else f"missed by {100 * (value / limit - 1):.0f}%"


if __name__ == "__main__":
    sys.exit(main())
