"""The measurements behind the defaults of the rules' own parameters (docs/plugins.md, "Defaults
and why"): how far each rule's proposed update is from backprop's gradient of the same minibatch
and weights, against what it costs.

On the MNIST-sized MLPs 784-256-10 and the paper's 784-5×256-10 (tanh, Glorot, float64; ``--depths``
and ``--width`` change them) and a generated task (Gaussian 28×28 inputs, labels the argmax of a
fixed random linear map of them: no dataset needed), for a grid of each rule's parameters:

- ``pc``: T, the inference rate, its momentum and the output weight β (clamped and center
  nudging), at the initial weights and after ``--trained-steps`` BP steps;
- ``ep``: the free and nudged relaxation lengths and β, at the same two points, against BP's
  gradient and against the gradient of the loss at the free fixed point (EP's own objective,
  computed as EP's limit β = 1e-3 with both phases relaxed ``--converged`` sweeps, the estimate
  tests/test_equilibrium_propagation.py checks against implicit differentiation); then the
  symmetric estimate's error against β at converged phases (it falls like β²);
- ``fa``: the feedback-alignment family (FA, uSF, brSF, frSF, Kolen-Pollack, DRTP) trained
  ``--family-steps`` steps by its own rule with BP's MNIST Adam (suites/fa_family.yaml): random
  feedback only aligns through training; FA's and DRTP's feedback scale, KP's weight decay.

Every row: the angle (degrees) between the update and BP's gradient over all parameters and for
each layer's weight, the relative error ``‖u − g‖ / ‖g‖``, and the cost: the rule's step time
(forward pass and proposed updates) over BP's, each the quickest of ``--rounds`` rounds in which
they take turns. Then, for each rule, the setting the criterion picks: the cheapest whose angle
is below ``--goal`` degrees on every network and at both points (the smallest angle where none
is). The defaults' run, on one thread of a shared two-core machine, takes about 15 minutes.

    .venv/bin/python benchmarks/energy_defaults.py [--only pc,ep,fa] [--depths 1,5]
        [--width 256] [--batch 64] [--trained-steps 200] [--family-steps 1000]
        [--converged 3000] [--goal 5] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from bioplaus_bench.api import ArchitectureSpec, Classification, InferenceRule
from bioplaus_bench.execution.build import build_network
from bioplaus_bench.execution.runner import ForwardOptimisers, Runner
from bioplaus_bench.metrics.alignment import angle, bp_gradients
from bioplaus_bench.model.networks import Network, forward_pass
from bioplaus_bench.registry import load_registry
from bioplaus_bench.scripts import listing, one_line_errors, positive, positives
from bioplaus_bench.spec.cell import OptimizerConfig
from bioplaus_bench.timed_networks import seconds, take_turns

INPUT_SHAPE = (1, 28, 28)
TASK = Classification(10)
# BP's tuned MNIST Adam, which energy.yaml and fa_family.yaml give every rule measured here
BP_MNIST_ADAM = OptimizerConfig(lr=0.0002970474733093798, betas=(0.99, 0.999),
                                eps=6.927830087224072e-08)
TIMED_SECONDS = 0.02  # each timed call is repeated until BP's calls last at least this long
Setting = tuple[str, dict]  # (rule, params other than its defaults)

# PC: the former default (T = 20, rate 0.1, β = 1) and β = 1 relaxed to its equilibrium; then
# β = 0.1 and 0.01 at three lengths, plain and with heavy-ball momentum; center nudging; a rate
# too large.
PC_GRID: list[Setting] = [
    ("pc", {"T": 20, "inference_lr": 0.1, "inference_momentum": 0.0, "output_weight": 1.0}),
    ("pc", {"T": 200, "inference_lr": 0.2, "inference_momentum": 0.0, "output_weight": 1.0}),
    ("pc", {"T": 50, "inference_lr": 0.2, "inference_momentum": 0.8, "output_weight": 1.0}),
    *(("pc", {"T": t, "inference_lr": lr, "inference_momentum": momentum, "output_weight": beta})
      for beta in (0.1, 0.01) for lr, momentum in ((0.1, 0.0), (0.2, 0.0), (0.2, 0.8), (0.2, 0.9))
      for t in (20, 50, 100)),
    ("pc", {"T": 50, "inference_lr": 0.2, "inference_momentum": 0.8, "output_weight": 0.1,
            "nudge": "center"}),
    ("pc", {"T": 50, "inference_lr": 0.5, "inference_momentum": 0.0, "output_weight": 0.01})]
# EP: the former default (20/10 sweeps, β = 0.5), then the relaxation lengths at β = 0.1 (β
# barely moves the deep network's figures: its bias is small next to the unconverged phases')
EP_GRID: list[Setting] = [("ep", {"T_free": 20, "T_nudged": 10, "beta": 0.5}),
                          *(("ep", {"T_free": free, "T_nudged": nudged, "beta": 0.1})
                            for free in (1, 2, 5, 20, 60) for nudged in (5, 10, 20))]
EP_BETAS = (0.5, 0.2, 0.1, 0.05, 0.02)
FA_GRID: list[Setting] = [("bp", {}), *(("feedback-alignment", {"feedback_scale": s})
                                        for s in (0.1, 1.0, 10.0)),
                          ("usf", {}), ("brsf", {}), ("frsf", {}),
                          *(("kolen-pollack", {"weight_decay": d}) for d in (0.0, 1e-3, 1e-2, 1e-1)),
                          *(("drtp", {"feedback_scale": s}) for s in (0.1, 1.0, 10.0))]
QUICK_GRIDS = {"pc": PC_GRID[:1] + PC_GRID[-2:-1], "ep": EP_GRID[:2],
               "fa": FA_GRID[:2] + FA_GRID[8:9]}


@dataclass(frozen=True)
class Problem:
    """One network (its weights at one point) and a minibatch of the generated task."""

    name: str
    network: Network
    x: Tensor
    y: Tensor


@dataclass(frozen=True)
class Error:
    """An update against a reference gradient: over all parameters and per layer's weight."""

    angle: float
    relative: float
    layers: list[float]

    @property
    def worst(self) -> float:
        """The largest angle, over all parameters or of one layer's weight."""
        return max(self.angle, *self.layers)

    @classmethod
    def between(cls, update: Sequence[Tensor], reference: Sequence[Tensor], network: Network
                ) -> Error:
        flat_u, flat_g = (torch.cat([t.detach().flatten() for t in ts]) for ts in (update, reference))
        first = [0]
        for i in range(1, network.depth):  # index of each layer's weight among the parameters
            first.append(first[-1] + len(network.layer_parameters(i)))
        return cls(angle(flat_u, flat_g), float((flat_u - flat_g).norm() / flat_g.norm()),
                   [angle(update[k], reference[k]) for k in first])


@dataclass
class Row:
    setting: Setting
    problem: str
    cost: float  # × BP
    to_bp: Error
    extra: dict[str, str] = dataclasses.field(default_factory=dict)


class Generated:
    """The generated task: Gaussian images, labels the argmax of a fixed random linear map."""

    def __init__(self, batch: int, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.batch, self.generator = batch, generator
        self.teacher = torch.randn(math.prod(INPUT_SHAPE), 10, generator=generator,
                                   dtype=torch.float64)

    def minibatch(self) -> tuple[Tensor, Tensor]:
        x = torch.randn(self.batch, *INPUT_SHAPE, generator=self.generator, dtype=torch.float64)
        return x, (x.flatten(1) @ self.teacher).argmax(1)


def network(depth: int, width: int) -> Network:
    torch.manual_seed(0)
    return build_network(ArchitectureSpec(hidden=(width,) * depth), INPUT_SHAPE, 10,
                         dtype=torch.float64)


def runner(setting: Setting, net: Network) -> Runner:
    name, params = setting
    cls = load_registry().get(name).cls
    algorithm = cls(net, TASK, cls.Params(**params))
    return Runner(net, algorithm, ForwardOptimisers(net, algorithm, BP_MNIST_ADAM, ()))


def train(setting: Setting, net: Network, task: Generated, steps: int) -> Runner:
    """``steps`` runner steps of ``setting``'s rule on fresh minibatches of ``task``."""
    stepped = runner(setting, net)
    for _ in range(steps):
        stepped.step(*task.minibatch())
    return stepped


def label(depth: int, width: int) -> str:
    return f"784-{depth}×{width}-10" if depth > 1 else f"784-{width}-10"


def problems(depths: Sequence[int], width: int, batch: int, trained_steps: int
             ) -> list[Problem]:
    """Every network at its initial weights and after ``trained_steps`` BP steps, each with one
    held-out minibatch."""
    found = []
    for depth in depths:
        for steps in (0, trained_steps):
            task = Generated(batch)
            net = network(depth, width)
            train(("bp", {}), net, task, steps)
            point = "initial weights" if steps == 0 else f"after {steps} BP steps"
            found.append(Problem(f"{label(depth, width)}, {point}", net, *task.minibatch()))
    return found


def cost(stepped: Runner, bp: Runner, problem: Problem, rounds: int) -> float:
    """The rule's forward pass and proposed updates over BP's, timed in turns, each call
    repeated for at least ``TIMED_SECONDS`` of BP; the quickest round of each, the one the
    other users of a shared machine disturbed least."""
    x, y = problem.x, problem.y
    repeats = max(1, round(TIMED_SECONDS / seconds(lambda: bp.propose(x, y), 3)))
    times = take_turns({"rule": lambda: stepped.propose(x, y), "bp": lambda: bp.propose(x, y)},
                       repeats=repeats, rounds=rounds)
    return min(times["rule"]) / min(times["bp"])


def measure(setting: Setting, problem: Problem, rounds: int) -> Row:
    stepped = runner(setting, problem.network)
    update = stepped.propose(problem.x, problem.y).updates
    reference = bp_gradients(problem.network, TASK, problem.x, problem.y)
    return Row(setting, problem.name, cost(stepped, runner(("bp", {}), problem.network), problem,
                                           rounds),
               Error.between(update, reference, problem.network))


# --- EP's own objective -------------------------------------------------------------------------

def fixed_point_gradient(problem: Problem, sweeps: int) -> tuple[list[Tensor], float]:
    """The gradient of the loss at the free fixed point (EP at β = 1e-3, symmetric, both phases
    ``sweeps`` long) and the free phase's last sweep's largest state change (how converged)."""
    return ep_update(problem, {"T_free": sweeps, "T_nudged": sweeps, "beta": 1e-3}), \
        free_residual(problem, sweeps)


def ep_update(problem: Problem, params: dict) -> list[Tensor]:
    return runner(("ep", params), problem.network).propose(problem.x, problem.y).updates


def free_residual(problem: Problem, sweeps: int) -> float:
    """The largest change of a state in the free phase's last sweep."""
    rule = runner(("ep", {}), problem.network).algorithm
    assert isinstance(rule, InferenceRule)
    fwd = forward_pass(problem.network, TASK, problem.x, problem.y)
    with torch.no_grad():
        before = rule.relax(fwd, rule.initial_state(fwd), 0.0, sweeps - 1)
        after = rule.relax_step(fwd, before, 0.0)
    return max(float((a - b).abs().max()) for a, b in zip(after, before, strict=True))


def ep_rows(grid: list[Setting], problem: Problem, rounds: int, converged: int) -> list[Row]:
    exact, residual = fixed_point_gradient(problem, converged)
    print(f"free fixed point of {problem.name}: last of {converged} sweeps moved a state by "
          f"{residual:.1e}\n")
    rows = []
    for setting in grid:
        row = measure(setting, problem, rounds)
        own = Error.between(ep_update(problem, setting[1]), exact, problem.network)
        row.extra = {"angle to ∇ℓ(s*) °": f"{own.angle:.2f}", "rel. error to ∇ℓ(s*)":
                     f"{own.relative:.3f}",
                     "free residual": f"{free_residual(problem, setting[1]['T_free']):.1e}"}
        rows.append(row)
    return rows


def beta_scaling(problem: Problem, converged: int, betas: Sequence[float]) -> None:
    """The symmetric and one-sided estimates' error against the fixed-point gradient at phases
    ``converged`` sweeps long: the symmetric one falls like β², the one-sided like β."""
    exact, residual = fixed_point_gradient(problem, converged)
    print(f"### EP: error against β, both phases {converged} sweeps, {problem.name} (last free "
          f"sweep moved a state by {residual:.1e})\n")
    print("| β | symmetric: angle ° | rel. error | rel. error / β² | one-sided: rel. error | "
          "rel. error / β |\n|---|---|---|---|---|---|")
    for beta in betas:
        errors = [Error.between(ep_update(problem, {"T_free": converged, "T_nudged": converged,
                                                    "beta": beta, "symmetric": symmetric}),
                                exact, problem.network) for symmetric in (True, False)]
        print(f"| {beta:g} | {errors[0].angle:.3f} | {errors[0].relative:.2e} | "
              f"{errors[0].relative / beta ** 2:.3f} | {errors[1].relative:.2e} | "
              f"{errors[1].relative / beta:.3f} |")
    print()


# --- the feedback-alignment family --------------------------------------------------------------

def fa_rows(grid: list[Setting], depths: Sequence[int], width: int, batch: int, steps: int,
            rounds: int) -> list[Row]:
    """Every setting trained ``steps`` steps by its own rule from the same initial weights on
    the same minibatches, then measured on one held-out minibatch."""
    rows = []
    for depth in depths:
        for setting in grid:
            task = Generated(batch)
            net = network(depth, width)
            stepped = train(setting, net, task, steps)
            x, y = task.minibatch()
            problem = Problem(f"{label(depth, width)}, after {steps} steps of its rule", net, x, y)
            update = stepped.propose(x, y).updates
            rows.append(Row(setting, problem.name,
                            cost(stepped, runner(("bp", {}), net), problem, rounds),
                            Error.between(update, bp_gradients(net, TASK, x, y), net)))
    return rows


# --- tables and the choice ----------------------------------------------------------------------

def described(setting: Setting) -> str:
    name, params = setting
    return name + (" " + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in params.items()) if params else "")


def print_rows(title: str, rows: list[Row]) -> None:
    extra = list(rows[0].extra) if rows else []
    for problem in dict.fromkeys(row.problem for row in rows):
        chosen = [row for row in rows if row.problem == problem]
        layers = len(chosen[0].to_bp.layers)
        print(f"### {title}: {problem}\n")
        print("| setting | × BP | angle to BP ° | rel. error | " + " | ".join(extra)
              + (" | " if extra else "") + " | ".join(f"W{i} °" for i in range(1, layers + 1))
              + " |")
        print("|---" * (4 + len(extra) + layers) + "|")
        for row in chosen:
            cells = [described(row.setting), f"{row.cost:.1f}", f"{row.to_bp.angle:.2f}",
                     f"{row.to_bp.relative:.3f}", *row.extra.values(),
                     *(f"{a:.1f}" for a in row.to_bp.layers)]
            print("| " + " | ".join(cells) + " |")
        print()


def choose(rows: list[Row], goal: float) -> dict[str, str]:
    """For each rule, the cheapest setting whose angles to BP (over all parameters and of each
    layer's weight: a feedback scale moves the first, not the others) are below ``goal`` on
    every network and weights measured (its cost: the largest × BP); if none is, the one whose
    worst angle is the smallest."""
    by_setting: dict[str, list[Row]] = {}
    for row in rows:
        by_setting.setdefault(described(row.setting), []).append(row)
    choices: dict[str, str] = {}
    for rule in dict.fromkeys(row.setting[0] for row in rows):
        candidates = {name: (max(r.to_bp.worst for r in group), max(r.cost for r in group))
                      for name, group in by_setting.items() if group[0].setting[0] == rule}
        meeting = {name: v for name, v in candidates.items() if v[0] < goal}
        if meeting:
            name = min(meeting, key=lambda n: (meeting[n][1], meeting[n][0]))
            choices[rule] = f"{name}: worst angle {meeting[name][0]:.2f}°, " \
                            f"cost ≤ {meeting[name][1]:.1f} × BP (the cheapest under {goal:g}°)"
        else:
            name = min(candidates, key=lambda n: candidates[n])
            choices[rule] = f"none under {goal:g}°; the closest, {name}: worst angle " \
                            f"{candidates[name][0]:.2f}°, cost ≤ {candidates[name][1]:.1f} × BP"
    return choices


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    grids = QUICK_GRIDS if args.quick else {"pc": PC_GRID, "ep": EP_GRID, "fa": FA_GRID}
    print(f"torch {torch.__version__}, {args.threads} thread(s), float64, batch {args.batch}, "
          f"cost: quickest of {args.rounds} rounds\n")
    points = problems(args.depths, args.width, args.batch, args.trained_steps) \
        if {"pc", "ep"} & set(args.only) else []
    sections: dict[str, Callable[[], list[Row]]] = {
        "pc": lambda: [measure(setting, problem, args.rounds) for problem in points
                       for setting in grids["pc"]],
        "ep": lambda: [row for problem in points
                       for row in ep_rows(grids["ep"], problem, args.rounds, args.converged)],
        "fa": lambda: fa_rows(grids["fa"], args.depths, args.width, args.batch,
                              args.family_steps, args.rounds)}
    titles = {"pc": "PC", "ep": "EP", "fa": "The feedback-alignment family"}
    choices: dict[str, str] = {}
    for section in args.only:
        rows = sections[section]()
        print_rows(titles[section], rows)
        if section == "ep":
            beta_scaling(points[0], args.converged, EP_BETAS[:2] if args.quick else EP_BETAS)
        choices.update(choose([row for row in rows if row.setting[0] != "bp"], args.goal))
    print(f"### Chosen (every angle to BP below {args.goal:g}° on every network and weights, "
          f"then the cheapest)\n")
    for rule, choice in choices.items():
        print(f"- {rule}: {choice}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=listing(("pc", "ep", "fa")), default="pc,ep,fa")
    parser.add_argument("--depths", type=positives, default="1,5",
                        help="hidden layers of each network measured")
    parser.add_argument("--width", type=positive(int), default=256)
    parser.add_argument("--batch", type=positive(int), default=64)
    parser.add_argument("--trained-steps", type=positive(int), default=200,
                        help="BP steps before the second measurement of PC and EP")
    parser.add_argument("--family-steps", type=positive(int), default=1000,
                        help="steps of its own rule before the FA family is measured")
    parser.add_argument("--converged", type=positive(int), default=3000,
                        help="sweeps of each phase of EP's fixed-point reference")
    parser.add_argument("--goal", type=positive(float), default=5.0,
                        help="the angle to BP (degrees) a default must stay below")
    parser.add_argument("--rounds", type=positive(int), default=3)
    parser.add_argument("--threads", type=positive(int), default=1)
    parser.add_argument("--quick", action="store_true", help="a few settings of each grid")
    args = parser.parse_args()
    return one_line_errors(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
