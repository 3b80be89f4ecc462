"""Time per training minibatch of every algorithm, as ratios to BP measured in the same run.

    .venv/bin/python benchmarks/epoch_time.py [--steps 20] [--models mnist,cifar,cnn]
        [--dtypes float32,float64] [--algorithms bp,dfa,...] [--threads N]

A step is what the runner does per minibatch: the forward pass, the algorithm's proposed updates,
its feedback step, and the forward Adam step, on random tensors of the right shapes (batch 128).
The printed epoch time is the step time × minibatches per epoch (MNIST 430, CIFAR-10 352),
without evaluation. BP's achieved GFLOP/s counts the useful matmul FLOPs of its forward and
backward passes (MLPs only), against a matrix-multiply peak measured in the same run. The logging
overhead is the time of one alignment log (angles to BP and to the GNT update, every layer)
divided by ``--log-interval`` (80) minibatches.
"""

from __future__ import annotations

import argparse
import time

import torch

from bioplaus_bench.api import ArchitectureSpec, Classification, forward_pass
from bioplaus_bench.metrics import MetricsConfig, alignment
from bioplaus_bench.networks import build_network
from bioplaus_bench.plugins import load_registry

MODELS = {
    "mnist": (ArchitectureSpec(hidden=(256,) * 5), (1, 28, 28), 430),
    "cifar": (ArchitectureSpec(hidden=(1024,) * 3), (3, 32, 32), 352),
    "cnn": (ArchitectureSpec(type="cnn", conv_channels=(32, 64), hidden=(512,)), (3, 32, 32), 352),
}
BATCH = 128
RANDOM_WIDTH = {"mnist": 1024, "cifar": 2048}


def matmul_peak(dtype: torch.dtype, n: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def bp_flops(spec: ArchitectureSpec, input_shape) -> float | None:
    """Forward + backward matmul FLOPs of one MLP minibatch (backward: 2× forward)."""
    if spec.type != "mlp":
        return None
    widths = [int(torch.Size(input_shape).numel()), *spec.hidden, 10]
    forward = sum(2 * BATCH * a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    return 3 * forward


def time_steps(name: str, model: str, dtype: torch.dtype, steps: int
               ) -> tuple[float, float] | None:
    """(seconds per minibatch, seconds per alignment log)."""
    registry = load_registry()
    cls = registry.get(name).cls
    spec, input_shape, _ = MODELS[model]
    if not getattr(cls.capabilities, spec.type):
        return None
    fields = {f.name for f in cls.Params.__dataclass_fields__.values()}
    params = cls.Params(**({"random_width": RANDOM_WIDTH.get(model, 1024)}
                           if "random_width" in fields else {}))
    torch.manual_seed(0)
    network = build_network(cls.adapt_architecture(spec, params), input_shape, 10, dtype=dtype)
    algorithm = cls(network, Classification(10), params)
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-6)
    parameters = list(network.parameters())
    x = torch.randn(BATCH, *input_shape, dtype=dtype)
    y = torch.randint(0, 10, (BATCH,))

    def step(log: bool = False):
        fwd = forward_pass(network, algorithm.task, x, y, record_graph=cls.record_graph)
        updates = algorithm.forward_updates(fwd)
        algorithm.feedback_step(fwd)
        if log:
            alignment(network, algorithm.task, fwd, updates, MetricsConfig(gnt_damping=1.0))
        for parameter, update in zip(parameters, updates, strict=True):
            parameter.grad = update
        optimiser.step()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    per_step = (time.perf_counter() - start) / steps
    logs = max(1, steps // 10)
    start = time.perf_counter()
    for _ in range(logs):
        step(log=True)
    per_log = (time.perf_counter() - start) / logs - per_step
    return per_step, per_log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--models", default="mnist,cifar,cnn")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--algorithms", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--log-interval", type=int, default=80)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.algorithms.split(",") if args.algorithms else \
        ["bp", "dfa", "ddtp-linear", "ddtp-control", "dtp", "dtp-pretrained", "ddtp-rhl", "dtp-drl"]
    if names[0] != "bp":
        names = ["bp", *[n for n in names if n != "bp"]]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}, "
          f"{args.steps} timed minibatches per cell\n")
    for model in args.models.split(","):
        spec, input_shape, batches = MODELS[model]
        for dtype_name in args.dtypes.split(","):
            dtype = getattr(torch, dtype_name)
            peak = matmul_peak(dtype)
            print(f"### {model} ({spec.type}), {dtype_name}: matmul peak {peak:.1f} GFLOP/s\n")
            print("| algorithm | ms / minibatch | epoch (s) | × BP | GFLOP/s | "
                  f"logging @{args.log_interval} |")
            print("|---|---|---|---|---|---|")
            bp = None
            for name in names:
                timed = time_steps(name, model, dtype, args.steps)
                if timed is None:
                    print(f"| {name} | n/a | | | | |")
                    continue
                seconds, per_log = timed
                overhead = per_log / (args.log_interval * seconds)
                bp = bp or seconds
                flops = bp_flops(spec, input_shape) if name == "bp" else None
                rate = f"{flops / seconds / 1e9:.1f} ({flops / seconds / 1e9 / peak:.0%} of peak)" \
                    if flops else ""
                print(f"| {name} | {1000 * seconds:.2f} | {seconds * batches:.1f} | "
                      f"{seconds / bp:.2f} | {rate} | {overhead:+.1%} |")
            print()


if __name__ == "__main__":
    main()
