"""Training speed as a multiple of this machine's bound: the least time an epoch's arithmetic can take here.

    python bench/bound.py [--repeats 7] [--output bench/bound.md]
    python bench/bound.py --grid [--repeats 3]      # widths × depths × batches, into bench/grid.md

Workload: digits 64-128-10, tanh then softmax, cross-entropy averaged, on the training split of
``symbp.datasets`` (1,347 samples), full batch (200 epochs) and batches of 32 (10 epochs,
shuffled by the generated module's rule: one ``default_rng(0).permutation`` per epoch).

The bound is measured in the same run, one thread: the float64 GEMM peak (``np.dot`` of two
1024 × 1024 matrices, best of several), and NumPy's throughput for ``tanh`` and ``exp`` (10⁶
values, best of several). An epoch's bound is its matrix-product flops over the GEMM peak
plus its tanh count over the tanh rate plus its exp count over the exp rate; the elementwise
rest and the reductions are left out, so no implementation can reach 1.0. One more row, not a
trainer, times only the five products (``np.dot`` at the steps' shapes) and NumPy's tanh over
the hidden layer: what this BLAS and this tanh take at these shapes.

Implementations, from the same initial weights: the hand-written class (bench/handwritten.py,
its forward and backward, with a mini-batch loop around them for batch 32), the committed
generated NumPy module's ``train``, the generated numba module's ``train`` (``pip install
".[fast]"``), both also in float32 (parameters and data converted once, before timing), the
generated JAX module's ``train`` (its derived formulas in jax.numpy), and JAX jit with
``jax.grad`` (``pip install jax``), each skipped with a note when missing. float32 rows must end
within 1e-3 of the float64 loss. Time is process CPU time (all threads of the process), one
BLAS and one XLA thread, medians of ``--repeats`` runs taken round-robin; compiled rows run once
before timing. Every float64 row must end at the hand-written row's loss to 1e-9 relative, or
the script stops; the generated JAX module shuffles its batches on the device, in an order of
its own, so at batch 32 its loss is checked against the NumPy module's steps on that order.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import one_thread  # noqa: F401  (first: one thread for every library, before they load)

# isort: split

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from handwritten import SoftmaxNeuralNetwork

from symbp import generate
from symbp.datasets import load
from symbp.train import load_module, module_for

Params = dict[str, np.ndarray]
SIZES = (64, 128, 10)
RATE = 0.5
SETTINGS = {"full batch": (None, 200), "batch 32": (32, 10)}  # batch size, epochs
FLOOR = "(not a trainer) the five products and tanh alone"


def cpu_seconds(run: Callable[[], object]) -> float:
    start = time.process_time()
    run()
    return time.process_time() - start


def best_rate(work: float, run: Callable[[], object], repeats: int = 7) -> float:
    """``work`` units per second in the fastest of ``repeats`` runs."""
    return work / min(cpu_seconds(run) for _ in range(repeats))


def machine() -> dict[str, float]:
    """GEMM flops/s and tanh, exp values/s, one thread."""
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((1024, 1024)), rng.standard_normal((1024, 1024))
    x = rng.standard_normal(1_000_000)
    out = np.empty_like(x)
    return {"gemm": best_rate(2 * 1024**3, lambda: np.dot(A, B)),
            "tanh": best_rate(x.size, lambda: np.tanh(x, out=out)),
            "exp": best_rate(x.size, lambda: np.exp(x, out=out))}


def epoch_bound(rates: dict[str, float], samples: int) -> float:
    """Seconds: 5 matrix products (2 forward, 3 backward; δ⁽¹⁾ needs W⁽²⁾ᵀδ⁽²⁾), m·128 tanh, m·10 exp."""
    n0, n1, n2 = SIZES
    flops = 2 * samples * (n1 * n0 + n2 * n1) + 2 * samples * (n1 * n2 + n2 * n1 + n1 * n0)
    return flops / rates["gemm"] + samples * n1 / rates["tanh"] + samples * n2 / rates["exp"]


def products_and_tanh(X, init: Params, batch: int | None, epochs: int) -> Callable[[], None]:
    """Not a trainer: only an epoch's five matrix products (np.dot into arrays made once, at the
    shapes the steps use) and NumPy's tanh over the hidden layer, what any of the rows must do."""
    n0, n1, n2 = SIZES
    m = batch or X.shape[1]
    steps = -(-X.shape[1] // m)
    W1, W2, x = init["W1"], init["W2"], np.ascontiguousarray(X[:, :m])
    z1, a1, z2, d2, d1 = (np.ones((n1, m)), np.ones((n1, m)), np.ones((n2, m)), np.ones((n2, m)),
                          np.ones((n1, m)))
    dW2, dW1 = np.empty((n2, n1)), np.empty((n1, n0))

    def run() -> None:
        for _ in range(epochs * steps):
            np.dot(W1, x, out=z1)
            np.tanh(z1, out=a1)
            np.dot(W2, a1, out=z2)
            np.dot(W2.T, d2, out=d1)
            np.dot(d2, a1.T, out=dW2)
            np.dot(d1, x.T, out=dW1)

    return run


def product_rates(X, init: Params) -> dict[str, tuple[float, float]]:
    """Flops and flops/s of each of the full batch's five products alone (np.dot into an array
    made once, best of several), named by what they compute."""
    n0, n1, n2 = SIZES
    m = X.shape[1]
    W1, W2, x = init["W1"], init["W2"], np.ascontiguousarray(X)
    a1, d2, d1 = np.ones((n1, m)), np.ones((n2, m)), np.ones((n1, m))
    products = {"W⁽¹⁾X": (W1, x, np.empty((n1, m))), "W⁽²⁾a⁽¹⁾": (W2, a1, np.empty((n2, m))),
                "(W⁽²⁾)ᵀδ⁽²⁾": (W2.T, d2, np.empty((n1, m))), "δ⁽²⁾(a⁽¹⁾)ᵀ": (d2, a1.T, np.empty((n2, n1))),
                "δ⁽¹⁾Xᵀ": (d1, x.T, np.empty((n1, n0)))}
    flops = {name: 2 * left.shape[0] * left.shape[1] * right.shape[1] for name, (left, right, _) in products.items()}
    return {name: (flops[name], best_rate(flops[name], lambda left=left, right=right, out=out: np.dot(left, right, out=out),
                                          repeats=25))
            for name, (left, right, out) in products.items()}


def kernel_tanh_rate(module) -> float:
    """Values/s of the numba module's own tanh in a compiled loop, the way its kernel calls it,
    over the same 10⁶ values as NumPy's rate (best of several)."""
    import numba

    tanh = module._tanh
    flags = {name: value for name, value in module.COMPILE.items() if name != "cache"}  # as the kernel's

    @numba.njit(**flags)
    def loop(x, out):
        for i in range(x.size):
            out[i] = tanh(x[i])

    x = np.random.default_rng(0).standard_normal(1_000_000)
    out = np.empty_like(x)
    loop(x, out)
    return best_rate(x.size, lambda: loop(x, out))


def orders(samples: int, epochs: int) -> list[np.ndarray]:
    """The generated module's shuffles: one permutation per epoch from default_rng(0)."""
    generator = np.random.default_rng(0)
    return [generator.permutation(samples) for _ in range(epochs)]


def handwritten(X, Y, init: Params, batch: int | None, epochs: int) -> Callable[[], Params]:
    def run() -> Params:
        net = SoftmaxNeuralNetwork(*SIZES, params=init)
        for order in orders(X.shape[1], epochs) if batch else [None] * epochs:
            batches = [slice(None)] if order is None else [order[s:s + batch] for s in range(0, len(order), batch)]
            for index in batches:
                net.forward(X[:, index])
                net.backward(X[:, index], Y[:, index], RATE)
        return net.params

    return run


def generated(module, dtype: str = "float64") -> Callable:
    def make(X, Y, init: Params, batch: int | None, epochs: int) -> Callable[[], Params]:
        X, Y = X.astype(dtype), Y.astype(dtype)  # float32 rows train in float32 end to end

        def run() -> Params:
            params = {k: v.astype(dtype) for k, v in init.items()}
            module.train(params, X, Y, epochs, RATE, log_every=None, batch_size=batch, rng=0)  # as the others: no loss
            return {k: np.asarray(v) for k, v in params.items()}  # the JAX module's are JAX arrays

        return run

    return make


def jax_grad(X, Y, init: Params, batch: int | None, epochs: int) -> Callable[[], Params]:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)

    def loss(p, X, Y):
        z2 = p["W2"] @ jnp.tanh(p["W1"] @ X + p["b1"]) + p["b2"]
        return -jnp.sum(Y * jax.nn.log_softmax(z2, axis=0)) / X.shape[1]

    grad = jax.grad(loss)
    m = X.shape[1]
    size = batch or m
    steps = [(s, min(size, m - s)) for s in range(0, m, size)]

    @jax.jit
    def train(p, X, Y, order):
        def epoch(p, index):
            for start, length in steps:  # unrolled: a last, shorter batch has its own shape
                b = jax.lax.dynamic_slice_in_dim(index, start, length)
                g = grad(p, X[:, b], Y[:, b])
                p = {k: p[k] - RATE * g[k] for k in p}
            return p, None

        return jax.lax.scan(epoch, p, order)[0]

    order = jnp.asarray(np.stack(orders(m, epochs)) if batch else np.tile(np.arange(m), (epochs, 1)))
    Xd, Yd = jnp.asarray(X), jnp.asarray(Y)

    def run() -> Params:
        final = jax.block_until_ready(train({k: jnp.asarray(v) for k, v in init.items()}, Xd, Yd, order))
        return {k: np.asarray(v) for k, v in final.items()}

    return run


def replayed(jax_module: ModuleType, numpy_module: ModuleType, X, Y, init: Params, batch: int,
             epochs: int) -> Params:
    """Where the generated JAX row must end at ``batch``: the NumPy module's steps on the batches
    the JAX module draws on its device (from ``rng=0``, as the row trains)."""
    params = {k: v.copy() for k, v in init.items()}
    key = jax_module._key(0)
    for _ in range(epochs):
        key, order = jax_module._permutation(key, X.shape[1])
        order = np.asarray(order)
        for start in range(0, len(order), batch):
            numpy_module.train_step(params, X[:, order[start:start + batch]], Y[:, order[start:start + batch]], RATE)
    return params


def implementations(notes: list[str]) -> tuple[dict[str, Callable], ModuleType | None, ModuleType | None]:
    """The rows to time, the numba module if numba is installed (its tanh is measured too), and
    the JAX module if JAX is (its batches are checked against the NumPy module's on its order)."""
    numba_module = jax_module = None
    numpy_module = load_module(ROOT / "generated" / "digits_64_128_10.py", "bound_numpy")
    found = {"hand-written NumPy": handwritten, "generated NumPy": generated(numpy_module),
             "generated NumPy, float32": generated(numpy_module, "float32")}
    try:
        numba_module = module_for(generate("64-128-10", "tanh,softmax", "cross_entropy", "mean", backend="numba"))
        found["generated numba"] = generated(numba_module)
        found["generated numba, float32"] = generated(numba_module, "float32")
    except ImportError as error:
        notes.append(f"generated numba skipped: {error} (pip install '.[fast]')")
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
        jax_module = module_for(generate("64-128-10", "tanh,softmax", "cross_entropy", "mean", backend="jax"))
        found["generated JAX"] = generated(jax_module)
        found["JAX jit, jax.grad"] = jax_grad
    except ImportError:
        notes.append("JAX skipped: not installed (pip install jax)")
    return found, numba_module, jax_module


class DeepHandwritten:
    """The hand-written class's steps for any depth: tanh hidden layers, a softmax output."""

    def __init__(self, params: Params, depth: int):
        self.p = {k: v.copy() for k, v in params.items()}
        self.depth = depth

    def step(self, X, Y):
        a = [X]
        for layer in range(1, self.depth + 1):
            z = np.dot(self.p[f"W{layer}"], a[-1]) + self.p[f"b{layer}"]
            if layer < self.depth:
                a.append(np.tanh(z))
            else:
                e = np.exp(z - np.max(z, axis=0, keepdims=True))
                a.append(e / np.sum(e, axis=0, keepdims=True))
        delta = (a[-1] - Y) / X.shape[1]
        for layer in range(self.depth, 0, -1):
            below = np.dot(self.p[f"W{layer}"].T, delta) * (1 - a[layer - 1] ** 2) if layer > 1 else None
            self.p[f"W{layer}"] -= RATE * np.dot(delta, a[layer - 1].T)
            self.p[f"b{layer}"] -= RATE * np.sum(delta, axis=1, keepdims=True)
            delta = below


def grid_runs(modules: dict, X, Y, init: Params, depth: int, batch: int, epochs: int) -> dict[str, Callable]:
    """One grid cell's runs: each backend's ``train``, and the hand-written steps, on the same batches."""

    def backend(module, **options) -> Callable[[], None]:
        def run() -> None:
            params = {k: v.copy() for k, v in init.items()}
            module.train(params, X, Y, epochs, RATE, log_every=None, batch_size=batch, rng=0, **options)

        return run

    def handwritten() -> None:
        net = DeepHandwritten(init, depth)
        for order in orders(X.shape[1], epochs):
            shuffled_X, shuffled_Y = X[:, order], Y[:, order]
            for start in range(0, X.shape[1], batch):
                net.step(shuffled_X[:, start:start + batch], shuffled_Y[:, start:start + batch])

    return {"numpy": backend(modules["numpy"]), "numba": backend(modules["numba"]),
            "loops": backend(modules["numba"], loops=True), "hand": handwritten}


def grid(repeats: int) -> list[str]:
    """Width × depth × batch: one epoch over 2,048 random samples, each backend's time over the NumPy backend's."""
    rng = np.random.default_rng(0)
    samples, outputs = 2048, 10
    header = ("| width | depth | batch | hand-written ÷ NumPy backend | numba ÷ NumPy backend "
              "| numba's loops, forced, ÷ NumPy backend |")
    lines = [header, "|---:|---:|---:|---:|---:|---:|"]
    for depth in (2, 4):
        for width in (2, 16, 64, 256, 1024):
            layers = "-".join([str(width)] * depth + [str(outputs)])
            names = ",".join(["tanh"] * (depth - 1) + ["softmax"])
            modules = {backend: module_for(generate(layers, names, "cross_entropy", "mean", backend=backend))
                       for backend in ("numpy", "numba")}
            X = rng.standard_normal((width, samples))
            Y = np.eye(outputs)[rng.integers(0, outputs, samples)].T
            init = modules["numpy"].init_params(0, "fan_in")
            for batch in (4, 32, 256, 2048):
                epochs = max(3, min(20, 256 // width))  # long enough to time, and to amortize making the work arrays
                runs = grid_runs(modules, X, Y, init, depth, batch, epochs)
                runs["loops"]()  # compile
                times = {name: [] for name in runs}
                for _ in range(repeats):
                    for name, run in runs.items():
                        times[name].append(cpu_seconds(run))
                base = statistics.median(times["numpy"])
                lines.append(f"| {width} | {depth} | {batch} | {statistics.median(times['hand']) / base:.2f} | "
                             f"{statistics.median(times['numba']) / base:.2f} | "
                             f"{statistics.median(times['loops']) / base:.2f} |")
                print(lines[-1], flush=True)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "bound.md")
    parser.add_argument("--grid", action="store_true",
                        help="instead: the width × depth × batch grid, each backend against the NumPy backend")
    args = parser.parse_args()
    if args.grid:
        lines = grid(args.repeats)
        path = args.output.with_name("grid.md") if args.output.name == "bound.md" else args.output
        path.write_text(f"`python bench/bound.py --grid --repeats {args.repeats}`\n\n" + "\n".join(lines) + "\n",
                        encoding="utf-8")
        return 0
    data = load("digits")
    X, Y = data.X_train, data.Y_train
    np.random.seed(0)  # the hand-written class draws its weights as the tutorial does
    init = SoftmaxNeuralNetwork(*SIZES).params
    notes: list[str] = []
    rows, numba_module, jax_module = implementations(notes)
    reference_module = load_module(ROOT / "generated" / "digits_64_128_10.py", "bound_loss")
    loss = reference_module.loss
    rates = machine()
    lines = [(f"Machine, one thread: GEMM {rates['gemm'] / 1e9:.1f} GFLOP/s, tanh {rates['tanh'] / 1e6:.0f} M/s, "
             f"exp {rates['exp'] / 1e6:.0f} M/s."), "",
             "| setting | bound ms/epoch | implementation | median ms/epoch | × bound |", "|---|---:|---|---:|---:|"]
    for setting, (batch, epochs) in SETTINGS.items():
        runs = {name: make(X, Y, init, batch, epochs) for name, make in rows.items()}
        finals = {name: run() for name, run in runs.items()}  # compiles, and checks every row's result
        reference = loss(finals["hand-written NumPy"], X, Y)
        for name, final in finals.items():
            tolerance = 1e-3 if "float32" in name else 1e-9  # float32 rounds every step
            expected = reference
            if name == "generated JAX" and batch:  # its batches are shuffled on the device, in an order of its own
                expected = loss(replayed(jax_module, reference_module, X, Y, init, batch, epochs), X, Y)
            ended = loss({k: v.astype(np.float64) for k, v in final.items()}, X, Y)
            if abs(ended - expected) > tolerance * abs(expected):
                raise SystemExit(f"{name} ends at loss {ended!r}, not {expected!r} ({setting})")
        runs[FLOOR] = products_and_tanh(X, init, batch, epochs)
        times = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                times[name].append(cpu_seconds(run) / epochs)
        bound = epoch_bound(rates, X.shape[1])
        for name, seconds in times.items():
            median = statistics.median(seconds)
            lines.append(f"| {setting} | {bound * 1e3:.3f} | {name} | {median * 1e3:.3f} | {median / bound:.2f} |")
    if numba_module is not None:  # the kernel's tanh, against NumPy's
        rate = kernel_tanh_rate(numba_module)
        faster = epoch_bound({**rates, "tanh": max(rate, rates["tanh"])}, X.shape[1])
        notes.append(f"The numba kernel's own tanh runs at {rate / 1e6:.0f} M/s here (NumPy's: "
                     f"{rates['tanh'] / 1e6:.0f} M/s); with the faster of the two the bound would be "
                     f"{faster * 1e3:.3f} ms per epoch, {faster / epoch_bound(rates, X.shape[1]):.3f} of the one above.")
    each = product_rates(X, init)
    alone = sum(flops / rate for flops, rate in each.values())
    notes.append("Full batch, each product alone: " + ", ".join(f"{name} {rate / 1e9:.1f}" for name, (_, rate) in
                                                               each.items())
                 + f" GFLOP/s (peak {rates['gemm'] / 1e9:.1f}); the five take {alone * 1e3:.3f} ms, "
                 f"{alone / epoch_bound(rates, X.shape[1]):.2f} of the bound, before any tanh.")
    lines += ["", *notes]
    text = "\n".join(lines)
    print(text)
    args.output.write_text(f"`python bench/bound.py --repeats {args.repeats}`\n\n{text}\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
