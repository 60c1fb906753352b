"""One JAX training step on its own: the derived gradients against ``jax.grad``, per step.

    python bench/jax_step.py [--hidden 16] [--batch 32] [--steps 860] [--repeats 21] [--kernels]

``bench/jax_speed.py`` times whole ``train`` calls; this isolates the step. Each trainer is one
jitted ``lax.scan`` over ``--steps`` batches of random data (64 inputs, a hidden tanh layer,
softmax over 10, cross-entropy averaged), each step the gradients, from the generated JAX
module's ``_gradients`` or from ``jax.grad`` of its ``_loss``, and an SGD update. Process CPU
time per step, medians of runs alternating between the two, XLA on one thread. It then lists
each compiled loop body's operations (fusions, products), for comparing the two programs, and
with ``--kernels`` the time per step of each compiled kernel, from JAX's profiler (which adds
its own overhead to every kernel: compare the two columns, not their sums with the medians).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import one_thread  # noqa: F401  (first: one thread for every library, before they load)

# isort: split
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from symbp import generate
from symbp.train import module_for


def scanned(gradients):
    """A jitted loop of steps: the gradients, then θ ← θ − 0.1 ∂L/∂θ."""

    @jax.jit
    def run(weights, Xs, Ys):
        def body(weights, batch):
            grads = gradients(weights, *batch)
            return tuple(w - 0.1 * g for w, g in zip(weights, grads, strict=True)), None

        return jax.lax.scan(body, weights, (Xs, Ys))[0]

    return run


def body_operations(compiled_text: str) -> Counter:
    """The fusions, products and copies in the compiled loop's body (the while's body= computation)."""
    names = re.findall(r" while\(.*?body=%([\w.-]+)", compiled_text)
    kinds: Counter = Counter()
    for computation in re.split(r"\n(?=\S)", compiled_text):
        if names and computation.startswith(f"%{names[0]} "):
            for line in computation.split("\n")[1:]:
                found = re.match(r"\s*(?:ROOT )?%\S+ = \S+ ([a-z-]+)\(", line)
                if found and found.group(1) in ("fusion", "dot", "copy"):
                    kinds[found.group(1)] += 1
    return kinds


def kernel_times(runs: dict, arguments: tuple, steps: int) -> dict[str, dict[str, float]]:
    """µs per step of each kernel the compiled loop runs, per trainer: three runs of each under
    JAX's profiler, the kernels' events assigned to the trainer whose loop encloses them."""
    folder = tempfile.mkdtemp()
    spans: dict[str, list[tuple[int, int]]] = {}
    with jax.profiler.trace(folder):
        for name, run in runs.items():
            with jax.profiler.TraceAnnotation(f"trainer {name}"):
                for _ in range(3):
                    jax.block_until_ready(run(*arguments))
    (path,) = Path(folder).rglob("*.xplane.pb")
    events = [event for plane in jax.profiler.ProfileData.from_file(str(path)).planes
              for line in plane.lines for event in line.events]
    for event in events:
        if event.name.startswith("trainer "):
            spans.setdefault(event.name[len("trainer "):], []).append(
                (event.start_ns, event.start_ns + event.duration_ns))
    times: dict[str, dict[str, float]] = {}
    for name, ranges in spans.items():
        per_kernel: Counter = Counter()
        for event in events:  # a kernel's event is named after its instruction: a fusion, dot or copy
            kernel = re.fullmatch(r"[\w.-]*fusion[\w.-]*|(dot|copy)[\w.-]*", event.name)
            if kernel and any(start <= event.start_ns < stop for start, stop in ranges):
                per_kernel[event.name] += event.duration_ns
        # the loop's own kernels: those run once per call (copies in and out of the loop) round to 0
        times[name] = {kernel: ns / 1e3 / (3 * steps) for kernel, ns in per_kernel.items() if ns >= 3 * steps * 5}
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=860)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--kernels", action="store_true", help="also each compiled kernel's time per step")
    args = parser.parse_args()
    source = generate(f"64-{args.hidden}-10", "tanh,softmax", "cross_entropy", "mean", backend="jax")
    module = module_for(source)
    params = module.init_params(0, "fan_in")
    weights = tuple(jnp.asarray(params[name]) for name in module.PARAM_NAMES)
    rng = np.random.default_rng(0)
    Xs = jnp.asarray(rng.standard_normal((args.steps, 64, args.batch)))
    Ys = jnp.asarray(np.eye(10)[rng.integers(0, 10, (args.steps, args.batch))].transpose(0, 2, 1))
    runs = {"derived formulas": scanned(module._gradients),
            "jax.grad": scanned(lambda w, X, Y: jax.grad(module._loss)(w, X, Y))}
    finals = {name: jax.block_until_ready(run(weights, Xs, Ys)) for name, run in runs.items()}  # compiles
    gap = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(*finals.values(), strict=True))
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            began = time.process_time()
            jax.block_until_ready(run(weights, Xs, Ys))
            times[name].append(time.process_time() - began)
    per_step = {name: statistics.median(values) / args.steps * 1e6 for name, values in times.items()}
    print(f"64-{args.hidden}-10, batches of {args.batch}, {args.steps} steps, medians of {args.repeats}; "
          f"weights {gap:.1e} apart at the end")
    for name, run in runs.items():
        kinds = body_operations(run.lower(weights, Xs, Ys).compile().as_text())
        print(f"{name}: {per_step[name]:.2f} µs per step; loop body: "
              + ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())))
    print(f"derived / jax.grad: {per_step['derived formulas'] / per_step['jax.grad']:.3f}")
    if args.kernels:
        times = kernel_times(runs, (weights, Xs, Ys), args.steps)
        print("µs per step of each kernel, under the profiler:")
        for name, kernels in times.items():
            print(f"{name}: " + ", ".join(f"{kernel} {us:.2f}" for kernel, us in
                                          sorted(kernels.items(), key=lambda item: -item[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
