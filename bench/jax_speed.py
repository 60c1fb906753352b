"""The generated JAX module against a jax.grad trainer of the same network, side by side.

    python bench/jax_speed.py [--repeats 5] [--output bench/jax_results.md]

Both trainers are the same generated module's ``train`` (the same compiled epoch loop, batches
drawn on the device, the same update); in the second, the step's gradients come from
``jax.grad`` of the module's own loss instead of its derived formulas. So the two do the same
work but for how the gradients are found, and they end at the same weights (the notes give the
largest difference).

Workloads, float64 (JAX's x64 mode), SGD: scikit-learn's digits with the default network of
``symbp train --dataset digits`` (64-64-10, tanh then softmax, cross-entropy averaged, batches
of 32), and a grid of hidden widths × batch sizes on the same data. Each measurement is the
process CPU time (all threads) of one ``train`` call after a first call that compiled it; the
repeats alternate between the two trainers, and the table gives medians. XLA runs on one
thread: ``NPROC=1`` and ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false``, and one host device,
set before JAX loads unless already set.

On a GPU (``JAX_PLATFORMS=cuda``, or ``bash bench/gpu.sh``) the time is wall-clock time instead,
each call waited for with ``block_until_ready``: the device's work is not the process's CPU time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import one_thread  # noqa: F401  (first: one thread for every library, before they load)

# isort: split
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from symbp import generate
from symbp.datasets import load
from symbp.train import module_for


def trainers(hidden: int):
    """The generated module, and a second copy of it whose step takes jax.grad of its loss."""
    source = generate(f"64-{hidden}-10", "tanh,softmax", "cross_entropy", "mean", backend="jax")
    derived, autodiff = module_for(source), module_for(source)

    def autodiff_step(weights, X, Y, learning_rate, state):
        return autodiff._update(weights, jax.grad(autodiff._loss)(weights, X, Y), learning_rate, state)

    autodiff._step = jax.jit(autodiff_step)  # _epochs finds _step among the module's globals when it compiles
    return {"derived formulas": derived, "jax.grad": autodiff}


# On a CPU, process CPU time (XLA's threads included); on an accelerator the work is the
# device's, not the process's CPU time, so wall-clock time, each call waited for.
ON_CPU = jax.default_backend() == "cpu"
CLOCK = time.process_time if ON_CPU else time.perf_counter
CLOCK_NAME = "process CPU time" if ON_CPU else "wall-clock time (block_until_ready)"


def seconds(module, X, Y, epochs: int, batch_size: int | None) -> tuple[float, dict]:
    params = module.init_params(0, "fan_in")
    began = CLOCK()
    module.train(params, X, Y, epochs, 0.1, log_every=epochs, batch_size=batch_size, rng=0)
    jax.block_until_ready(params)
    return CLOCK() - began, params


def measure(hidden: int, batch_size: int | None, epochs: int, repeats: int, X, Y) -> dict:
    pair = trainers(hidden)
    for module in pair.values():  # compile (size is static; the epoch count is not)
        seconds(module, X, Y, 1, batch_size)
    times: dict[str, list[float]] = {name: [] for name in pair}
    finals = {}
    for _ in range(repeats):
        for name, module in pair.items():
            spent, finals[name] = seconds(module, X, Y, epochs, batch_size)
            times[name].append(spent)
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    gap = max(float(np.max(np.abs(finals["derived formulas"][n] - finals["jax.grad"][n])))
              for n in finals["jax.grad"])
    return {"medians": medians, "gap": gap}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default=str(ROOT / "bench" / "jax_results.md"))
    args = parser.parse_args()
    data = load("digits", 0)
    X, Y = data.X_train, data.Y_train
    samples = X.shape[1]
    cases = [("digits default", 64, 32, 20)]
    cases += [(f"width {w}, batch {b or samples}", w, b, e) for w, b, e in (
        (16, 32, 20), (16, 256, 100), (16, None, 500),
        (64, 256, 100), (64, None, 500),
        (256, 32, 10), (256, 256, 50), (256, None, 200),
    )]
    device = f"{jax.devices()[0].device_kind} ({jax.default_backend()})"
    lines = [
        (f"Machine: {platform.machine()}, os.cpu_count() = {os.cpu_count()}; device: {device}; "
         f"jax {jax.__version__}; NPROC={os.environ.get('NPROC')}, XLA_FLAGS={os.environ['XLA_FLAGS']}; "
         f"command: `python bench/jax_speed.py --repeats {args.repeats}`; "
         f"{CLOCK_NAME} of one train call after compiling, medians of {args.repeats}, alternating."),
        "",
        ("| workload (digits, 64-H-10 tanh/softmax, SGD, float64) | epochs | derived formulas ms | jax.grad ms "
        "| derived / jax.grad | max abs Δθ |"),
        "|---|---:|---:|---:|---:|---:|",
    ]
    began = time.perf_counter()
    for label, hidden, batch_size, epochs in cases:
        result = measure(hidden, batch_size, epochs, args.repeats, X, Y)
        ms = result["medians"]
        row = (f"| {label} (H = {hidden}) | {epochs} | {ms['derived formulas']:.1f} | {ms['jax.grad']:.1f} "
               f"| {ms['derived formulas'] / ms['jax.grad']:.2f} | {result['gap']:.1e} |")
        print(row, flush=True)
        lines.append(row)
    lines += ["", f"Whole run: {time.perf_counter() - began:.1f} s."]
    Path(args.output).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
