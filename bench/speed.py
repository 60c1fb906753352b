"""Training speed: the generated NumPy trainer against the hand-written class and other frameworks.

    python bench/speed.py [--repeats 5] [--output bench/results.md]

Two workloads, full-batch gradient descent from the same initial weights (the hand-written
class's, drawn after ``np.random.seed(0)``):

- XOR: 2-2-1 sigmoid, half_se summed, 10,000 epochs, learning rate 0.1;
- digits: scikit-learn's load_digits (1,797 samples, pixels / 16, one-hot labels), 64-128-10,
  tanh then softmax, cross-entropy averaged, 200 epochs, learning rate 0.5 (skipped when
  scikit-learn is missing: ``pip install scikit-learn``).

Rows: the hand-written class (tests/reference.py for XOR, bench/handwritten.py for digits),
the committed generated module's ``train``, a generated numba backend (when symbp has one),
PyTorch eager autograd and JAX (jit, lax.fori_loop); each is skipped with a note when its
package is missing. Every library runs on one thread, unless OMP_NUM_THREADS, OPENBLAS_NUM_THREADS,
MKL_NUM_THREADS or XLA_FLAGS are already set. The repeats go round the implementations in
turn, and the table gives each one's median and its ratio to the hand-written class's
median: the machines are shared and noisy, so read the ratios, not the milliseconds. Compiled
rows (numba, JAX) time their first call apart, as "first call", and it is not in the median.
The notes give each row's final loss (the generated module's ``loss`` of its final weights)
and its largest weight difference from the hand-written class.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import one_thread  # noqa: F401  (first: one thread for every library, before they load)

# isort: split

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from handwritten import SoftmaxNeuralNetwork

from symbp import generate
from symbp.train import load_module, module_for

Params = dict[str, np.ndarray]
NAMES = ("W1", "b1", "W2", "b2")
AGREE = 1e-12  # the generated module must reproduce the hand-written XOR weights this closely


class Skip(Exception):
    """An implementation that cannot run here; the message says why."""


@dataclass
class Workload:
    name: str
    sizes: tuple[int, int, int]
    activation: str
    loss: str
    reduction: str
    module: str  # the committed generated module, in generated/
    handwritten: type
    X: np.ndarray
    Y: np.ndarray
    epochs: int
    learning_rate: float


@dataclass
class Row:
    run: Callable[[Params], Params] | None = None  # initial weights -> final weights
    note: str = ""
    name: str = ""
    compiled: bool = False  # time the first call apart
    times: list[float] = field(default_factory=list)
    final: Params | None = None


def workloads(notes: list[str]) -> list[Workload]:
    reference = load_module(ROOT / "tests" / "reference.py", "bench_reference")
    xor_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float).T
    xor_Y = np.array([[0, 1, 1, 0]], dtype=float)
    found = [Workload("XOR", (2, 2, 1), "sigmoid", "half_se", "sum", "xor_2_2_1.py",
                      reference.SimpleNeuralNetwork, xor_X, xor_Y, 10_000, 0.1)]
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        notes.append("Note: scikit-learn is not installed, so the digits workload is skipped (pip install scikit-learn).")
        return found
    digits = load_digits()
    X = digits.data.T / 16.0
    Y = np.eye(10)[digits.target].T
    found.append(Workload("digits", (64, 128, 10), "tanh,softmax", "cross_entropy", "mean",
                          "digits_64_128_10.py", SoftmaxNeuralNetwork, X, Y, 200, 0.5))
    return found


def initial_params(w: Workload) -> Params:
    np.random.seed(0)
    return {k: v.copy() for k, v in w.handwritten(*w.sizes).params.items()}


def handwritten(w: Workload) -> Row:
    def run(init: Params) -> Params:
        np.random.seed(0)  # draws init again, as the tutorial does
        net = w.handwritten(*w.sizes)
        with contextlib.redirect_stdout(io.StringIO()):
            net.train(w.X, w.Y, w.epochs, w.learning_rate)
        return net.params

    notes = {"XOR": "tests/reference.py's train(), which also computes ½Σ(a−y)² every epoch",
             "digits": "bench/handwritten.py"}
    return Row(run, notes[w.name])


def tutorial_loop(w: Workload) -> Row:
    """The tutorial's own loop over the same class: the loss only every 1000th epoch."""

    def run(init: Params) -> Params:
        net = w.handwritten(*w.sizes, params=init)
        with contextlib.redirect_stdout(io.StringIO()):
            for epoch in range(w.epochs):
                output = net.forward(w.X)
                net.backward(w.X, w.Y, w.learning_rate)
                if epoch % 1000 == 0:
                    print(f"Epoch {epoch}, Loss: {np.mean((w.Y - output) ** 2)}")
        return net.params

    return Row(run, "same class, forward+backward, loss every 1000th epoch")


def trainer(module, w: Workload) -> Callable[[Params], Params]:
    """A generated module's train(), logging the loss once (before the first step)."""

    def run(init: Params) -> Params:
        params = {k: v.copy() for k, v in init.items()}
        module.train(params, w.X, w.Y, w.epochs, w.learning_rate, log_every=w.epochs)
        return params

    return run


def generated_numpy(w: Workload) -> Row:
    module = load_module(ROOT / "generated" / w.module, f"bench_{w.name}")
    return Row(trainer(module, w), f"generated/{w.module}, train(log_every=epochs)")


def generated_numba(w: Workload) -> Row:
    try:
        source = generate("-".join(map(str, w.sizes)), w.activation, w.loss, w.reduction, backend="numba")
    except (TypeError, ValueError):
        raise Skip("numba backend not available") from None
    try:
        module = module_for(source)
    except ImportError as error:
        raise Skip(f"numba not importable ({error})") from None
    return Row(trainer(module, w), "symbp.generate(..., backend='numba')", compiled=True)


def pytorch(w: Workload) -> Row:
    try:
        import torch
    except ImportError:
        raise Skip("torch not installed") from None
    X, Y = torch.from_numpy(w.X), torch.from_numpy(w.Y)

    def loss(p):
        if w.name == "XOR":
            a2 = torch.sigmoid(p["W2"] @ torch.sigmoid(p["W1"] @ X + p["b1"]) + p["b2"])
            return 0.5 * ((a2 - Y) ** 2).sum()
        z2 = p["W2"] @ torch.tanh(p["W1"] @ X + p["b1"]) + p["b2"]
        return -(Y * torch.log_softmax(z2, dim=0)).sum() / X.shape[1]

    def run(init: Params) -> Params:
        p = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}  # float64, like v
        for _ in range(w.epochs):
            loss(p).backward()
            with torch.no_grad():
                for t in p.values():
                    t -= w.learning_rate * t.grad
                    t.grad = None
        return {k: t.detach().numpy() for k, t in p.items()}

    return Row(run, f"torch {torch.__version__}, float64, CPU, torch.get_num_threads() = {torch.get_num_threads()}")


def jax_jit(w: Workload) -> Row:
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        raise Skip("jax not installed (pip install jax)") from None
    jax.config.update("jax_enable_x64", True)

    def loss(p, X, Y):
        if w.name == "XOR":
            a2 = jax.nn.sigmoid(p["W2"] @ jax.nn.sigmoid(p["W1"] @ X + p["b1"]) + p["b2"])
            return 0.5 * jnp.sum((a2 - Y) ** 2)
        z2 = p["W2"] @ jnp.tanh(p["W1"] @ X + p["b1"]) + p["b2"]
        return -jnp.sum(Y * jax.nn.log_softmax(z2, axis=0)) / X.shape[1]

    grad = jax.grad(loss)

    @jax.jit
    def train(p, X, Y):
        def step(_, p):
            g = grad(p, X, Y)
            return {k: p[k] - w.learning_rate * g[k] for k in p}

        return jax.lax.fori_loop(0, w.epochs, step, p)

    X, Y = jnp.asarray(w.X), jnp.asarray(w.Y)

    def run(init: Params) -> Params:
        final = jax.block_until_ready(train({k: jnp.asarray(v) for k, v in init.items()}, X, Y))
        return {k: np.asarray(v) for k, v in final.items()}

    return Row(run, f"jax {jax.__version__}, float64", compiled=True)


IMPLEMENTATIONS = {
    "hand-written": handwritten,
    "hand-written, tutorial's loop": tutorial_loop,
    "generated NumPy": generated_numpy,
    "generated numba": generated_numba,
    "PyTorch eager autograd": pytorch,
    "JAX jit + lax.fori_loop": jax_jit,
}


def rows_for(w: Workload) -> list[Row]:
    rows = []
    for name, make in IMPLEMENTATIONS.items():
        if make is tutorial_loop and w.name != "XOR":
            continue  # bench/handwritten.py's train() is already the tutorial's loop
        try:
            row = make(w)
        except Skip as why:
            row = Row(note=f"skipped: {why}")
        row.name = name
        rows.append(row)
    return rows


def timed(run: Callable[[Params], Params], init: Params) -> tuple[float, Params]:
    """Process CPU time (all of the process's threads) of one run, and its final weights: a
    library that spreads work over threads it was not asked for is not timed as faster."""
    start = time.process_time()
    final = run(init)
    return time.process_time() - start, final


def bench(w: Workload, repeats: int) -> list[Row]:
    init = initial_params(w)
    rows = rows_for(w)
    live = [row for row in rows if row.run is not None]
    for row in live:
        if row.compiled:
            seconds, _ = timed(row.run, init)
            row.note += f"; first call (compile + run) {seconds * 1000:.0f} ms"
    for _ in range(repeats):  # round-robin, so drift in the machine's load hits every row alike
        for row in live:
            seconds, row.final = timed(row.run, init)
            row.times.append(seconds)
    loss = load_module(ROOT / "generated" / w.module, f"bench_{w.name}_loss").loss
    reference = live[0].final
    for row in live:
        diff = max(float(np.max(np.abs(row.final[k] - reference[k]))) for k in NAMES)
        row.note += f"; final loss {loss(row.final, w.X, w.Y):.6g}; max abs Δθ vs hand-written {diff:.1e}"
    return rows


def table(results: list[tuple[Workload, list[Row]]]) -> list[str]:
    lines = ["| workload | implementation | median ms | × hand-written | notes |", "|---|---|---:|---:|---|"]
    for w, rows in results:
        base = statistics.median(rows[0].times)
        label = f"{w.name} ({'-'.join(map(str, w.sizes))}, {w.epochs:,} epochs, m={w.X.shape[1]})"
        for row in rows:
            if row.times:
                ms, ratio = statistics.median(row.times) * 1000, statistics.median(row.times) / base
                cells = f"{ms:.1f} | {ratio:.2f}" if ratio >= 0.1 else f"{ms:.2f} | {ratio:.2g}"
            else:
                cells = "— | —"
            lines.append(f"| {label} | {row.name} | {cells} | {row.note} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per implementation (default 5)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.md",
                        help="Markdown file for the table (default bench/results.md)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    command = " ".join(["python bench/speed.py", *sys.argv[1:]])
    start = time.perf_counter()
    notes: list[str] = []
    results = [(w, bench(w, args.repeats)) for w in workloads(notes)]

    xor_rows = {row.name: row for row in results[0][1]}
    diff = max(float(np.max(np.abs(xor_rows["generated NumPy"].final[k] - xor_rows["hand-written"].final[k])))
               for k in NAMES)
    agree = diff <= AGREE
    lines = [
        f"Machine: os.cpu_count() = {os.cpu_count()}; NumPy {np.__version__}; Python {sys.version.split()[0]}; "
        + f"threads: OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}, "
        + f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; "
        + f"command: `{command}`; medians of {args.repeats} runs.",
        "",
        *table(results),
        "",
        *notes,
        f"Check: generated NumPy final XOR weights equal the hand-written class's within {AGREE:g}: "
        + f"{'yes' if agree else 'NO'} (max abs difference {diff:.1e}).",
        f"Whole run: {time.perf_counter() - start:.1f} s.",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    args.output.write_text(text, encoding="utf-8")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
