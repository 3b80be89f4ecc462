"""The measurements behind choices the code makes for speed, each section named after the place
whose comment it backs:

1. ``adam`` (model/optim.py): one Adam step of the MNIST MLP's parameters, float32, on torch's
   fused kernel (what the suite uses) against torch's per-parameter loop and its multi-tensor
   (foreach) implementation.
2. ``layout`` (model/architectures.py): one runner step of BP, DFA and DDTP-linear on the
   CIFAR-10 CNN with channels-last weights against the standard layout, in float32 (where the
   suite uses channels-last) and float64 (where it does not).
3. ``graphs`` (model/networks.py, ``forward_pass``): a forward pass of the CNN that keeps the
   conv layers' graphs (for local updates) against one that keeps none (a feedback step alone).
4. ``magnitudes`` (backward/rule.py, ``glorot_uniform_magnitude``): brSF's per-step draw of the
   MNIST MLP's weight magnitudes, 16 random bits a value, against ``torch.rand``'s one value per
   draw, each also as a share of a BP step of the same network.

Every figure is the median over ``--rounds`` rounds in which the variants take turns, so that a
slower spell of a shared machine falls on all of them; torch uses ``--threads`` threads (the
suite's default, one, unless given).

    .venv/bin/python benchmarks/design_choices.py [--rounds 7] [--threads 1]
        [--only adam,layout,graphs,magnitudes]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from bioplaus_bench.api import ArchitectureSpec, Classification
from bioplaus_bench.backward.rule import glorot_uniform_magnitude
from bioplaus_bench.execution.build import build_network
from bioplaus_bench.execution.runner import ForwardOptimisers, Runner
from bioplaus_bench.model.networks import Dense, Network, forward_pass
from bioplaus_bench.model.optim import adam
from bioplaus_bench.registry import load_registry
from bioplaus_bench.scripts import listing, positive
from bioplaus_bench.spec.cell import OptimizerConfig
from bioplaus_bench.timed_networks import take_turns

BATCH = 128
MNIST = (ArchitectureSpec(hidden=(256,) * 5), (1, 28, 28))
CNN = (ArchitectureSpec(type="cnn", conv_channels=(32, 64), hidden=(512,)), (3, 32, 32))
OPTIMIZER = OptimizerConfig(lr=1e-6, betas=(0.9, 0.999), eps=1e-8)
LAYOUT_ALGORITHMS = ("bp", "dfa", "ddtp-linear")
FUSED = "fused (the suite's)"
PACKED = "16 bits a value (the suite's)"


def ratio(times: dict[str, list[float]], name: str, reference: str) -> float:
    """The median over the rounds of ``name``'s time over ``reference``'s in the same round."""
    return statistics.median(a / b for a, b in zip(times[name], times[reference], strict=True))


def network(model: tuple[ArchitectureSpec, tuple[int, ...]], dtype: torch.dtype,
            layout: torch.memory_format | None = None) -> Network:
    torch.manual_seed(0)
    built = build_network(model[0], model[1], 10, dtype=dtype)
    return built if layout is None else built.to(memory_format=layout)


def runner(name: str, net: Network) -> Runner:
    cls = load_registry().get(name).cls
    algorithm = cls(net, Classification(10), cls.Params())
    return Runner(net, algorithm, ForwardOptimisers(net, algorithm, OPTIMIZER, ()))


def batch(model: tuple[ArchitectureSpec, tuple[int, ...]], dtype: torch.dtype
          ) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(BATCH, *model[1], dtype=dtype), torch.randint(0, 10, (BATCH,))


def fused_adam(rounds: int) -> None:
    print("## 1. Adam step, MNIST MLP parameters, float32 (model/optim.py)\n")
    variants = {}
    for name, make in ((FUSED, lambda p: adam(p, lr=1e-6)),
                       ("per-parameter loop", lambda p: torch.optim.Adam(p, lr=1e-6,
                                                                         foreach=False)),
                       ("multi-tensor (foreach)", lambda p: torch.optim.Adam(p, lr=1e-6,
                                                                             foreach=True))):
        parameters = list(network(MNIST, torch.float32).parameters())
        for p in parameters:
            p.grad = torch.randn_like(p)
        variants[name] = make(parameters).step
    times = take_turns(variants, repeats=50, rounds=rounds)
    print("| Adam | ms a step | × fused |\n|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values) * 1e3:.3f} | "
              f"{ratio(times, name, FUSED):.2f} |")
    print()


def channels_last(rounds: int) -> None:
    print("## 2. CIFAR-10 CNN runner step: channels-last weights against the standard layout "
          "(model/architectures.py)\n")
    print("| dtype | algorithm | standard, ms | channels-last, ms | channels-last / standard |")
    print("|---|---|---|---|---|")
    for dtype in (torch.float32, torch.float64):
        x, y = batch(CNN, dtype)
        variants = {}
        for name in LAYOUT_ALGORITHMS:
            for layout in (torch.contiguous_format, torch.channels_last):
                stepped = runner(name, network(CNN, dtype, layout))
                variants[f"{name} {layout}"] = lambda r=stepped, x=x, y=y: r.step(x, y)
        times = take_turns(variants, repeats=1, rounds=rounds)
        for name in LAYOUT_ALGORITHMS:
            standard, last = f"{name} {torch.contiguous_format}", f"{name} {torch.channels_last}"
            print(f"| {str(dtype).removeprefix('torch.')} | {name} | "
                  f"{statistics.median(times[standard]) * 1e3:.1f} | "
                  f"{statistics.median(times[last]) * 1e3:.1f} | "
                  f"{ratio(times, last, standard):.3f} |")
    print()


def layer_graphs(rounds: int) -> None:
    print("## 3. CIFAR-10 CNN forward pass, float32: the conv layers' graphs kept or not "
          "(model/networks.py, forward_pass)\n")
    net, task = network(CNN, torch.float32), Classification(10)
    x, y = batch(CNN, torch.float32)
    times = take_turns({
        "graphs kept": lambda: forward_pass(net, task, x, y, layer_graphs=True),
        "no graphs": lambda: forward_pass(net, task, x, y, layer_graphs=False)},
        repeats=2, rounds=rounds)
    print(f"kept: {statistics.median(times['graphs kept']) * 1e3:.1f} ms, none: "
          f"{statistics.median(times['no graphs']) * 1e3:.1f} ms; kept / none "
          f"{ratio(times, 'graphs kept', 'no graphs'):.2f}\n")


def magnitudes(rounds: int) -> None:
    print("## 4. brSF's magnitudes of the MNIST MLP's weights, float32 (backward/rule.py)\n")
    net = network(MNIST, torch.float32)
    weights = [layer.linear.weight for layer in net.layers if isinstance(layer, Dense)]
    values = sum(w.numel() for w in weights)
    x, y = batch(MNIST, torch.float32)
    bp = runner("bp", net)
    times = take_turns({
        PACKED: lambda: [glorot_uniform_magnitude(w) for w in weights],
        "torch.rand": lambda: [torch.rand(w.shape) for w in weights],
        "BP step": lambda: bp.step(x, y)}, repeats=5, rounds=rounds)
    print("| draw | ns a value | × torch.rand | share of a BP step |\n|---|---|---|---|")
    for name in (PACKED, "torch.rand"):
        print(f"| {name} | {statistics.median(times[name]) / values * 1e9:.2f} | "
              f"{ratio(times, name, 'torch.rand'):.2f} | {ratio(times, name, 'BP step'):.2f} |")
    print()


SECTIONS = {"adam": fused_adam, "layout": channels_last, "graphs": layer_graphs,
            "magnitudes": magnitudes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=positive(int), default=7)
    parser.add_argument("--threads", type=positive(int), default=1)
    parser.add_argument("--only", type=listing(SECTIONS), default=",".join(SECTIONS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.rounds} rounds\n")
    for name in args.only:
        SECTIONS[name](args.rounds)


if __name__ == "__main__":
    main()
