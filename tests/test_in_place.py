"""The in-place training step: what it computes, and that it allocates nothing large."""

import tracemalloc

import numpy as np
import pytest
import sympy as sp
from conftest import ROOT
from networks import random_network
from sympy.codegen.numpy_nodes import logaddexp

import symbp
from symbp.algebra import Elementwise
from symbp.derive import derive_spec
from symbp.inplace import StepWriter
from symbp.network import make_spec
from symbp.train import load_module, module_for

a1, z1, y = sp.symbols("a1 z1 y", real=True)
ROWS = 3
_SMALL = derive_spec(make_spec("2-3-1", "sigmoid", "half_se"))


def random_formula(rng: np.random.Generator, depth: int) -> sp.Expr:
    """A random elementwise formula in a1, z1 and y that stays finite for inputs in (0.1, 0.9)."""
    if depth == 0:
        return [a1, z1, y, sp.Integer(int(rng.integers(1, 4))), sp.Rational(1, 2)][int(rng.integers(0, 5))]
    left, right = random_formula(rng, depth - 1), random_formula(rng, depth - 1)
    choices = [
        lambda: left + right, lambda: left - right, lambda: left * right, lambda: -left * right,
        lambda: left / (1 + right**2), lambda: left**2, lambda: 1 / (2 + sp.tanh(left)),
        lambda: sp.exp(-left**2), lambda: logaddexp(0, left), lambda: sp.Max(left, right),
        lambda: sp.sqrt(1 + left**2), lambda: left**3 - 2 * right, lambda: (left + right) / 3,
        lambda: sp.Heaviside(left - sp.Rational(1, 2), 0), lambda: sp.log(2 + sp.tanh(left)),
    ]
    return choices[int(rng.integers(0, len(choices)))]()


@pytest.mark.parametrize("seed", range(60))
def test_lowered_formulas_compute_what_numpy_computes_from_the_formula(seed):
    """Each random formula, lowered to ufunc calls with out=, equals SymPy's lambdify of it."""
    rng = np.random.default_rng(seed)
    formula = random_formula(rng, depth=int(rng.integers(1, 4)))
    writer = StepWriter(_SMALL)
    writer.rows.update({"a1": ROWS, "z1": ROWS, "y": ROWS})
    writer._owner = "out"
    lines = writer.into(Elementwise(formula, ROWS, 1), "out")
    values = {"a1": rng.uniform(0.1, 0.9, (ROWS, 5)), "z1": rng.uniform(0.1, 0.9, (ROWS, 5)),
              "Y": rng.uniform(0.1, 0.9, (ROWS, 5))}
    namespace = {"np": np, **values, "out": np.empty((ROWS, 5))}
    for array in writer.work:
        namespace[array.name] = np.empty((ROWS, 5))
    exec("\n".join(lines), namespace)  # noqa: S102 -- test-only: code symbp wrote from a SymPy formula
    expected = sp.lambdify((a1, z1, y), formula, modules="numpy")(values["a1"], values["z1"], values["Y"])
    np.testing.assert_allclose(namespace["out"], np.broadcast_to(expected, (ROWS, 5)), rtol=1e-12, atol=1e-14,
                               err_msg=f"{formula}\n" + "\n".join(lines))


def test_lowering_uses_one_call_per_operation():
    d = derive_spec(make_spec("2-3-1", "tanh,sigmoid", "half_se"))
    writer = StepWriter(d)
    writer._owner = "delta1"
    lines = writer.into(Elementwise(1 - a1**2, 3, 1), "delta1")
    assert lines == ["np.square(a1, out=delta1)", "np.subtract(1.0, delta1, out=delta1)"]


def test_a_training_step_allocates_no_array_the_size_of_a_layer():
    """On digits-sized data, one (128 × m) array is 2 MB; a step must allocate far less."""
    module = load_module(ROOT / "generated" / "digits_64_128_10.py", "digits_64_128_10")
    rng = np.random.default_rng(0)
    samples = 2000
    X = rng.standard_normal((64, samples))
    Y = np.eye(10)[:, rng.integers(0, 10, samples)]
    params = module.init_params(0)
    weights = tuple(params[name] for name in module.PARAM_NAMES)
    work = module._work(samples)
    module._step(weights, X, Y, 0.1, work)  # warm up
    tracemalloc.start()
    try:
        module._step(weights, X, Y, 0.1, work)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    layer_bytes = 128 * samples * 8
    assert peak < layer_bytes / 8, f"a step allocated up to {peak} bytes"
    # The allocating step, for comparison, does allocate layer-sized arrays.
    tracemalloc.start()
    try:
        module.train_step(params, X, Y, 0.1)
        _, peak_allocating = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_allocating > layer_bytes


def test_every_random_network_lowers_without_falling_back_except_piecewise():
    """Only Piecewise (leaky_relu) is assigned whole; everything else is lowered to ufunc calls."""
    for seed in range(30):
        layers, activation, loss, reduction = random_network(seed)
        source = symbp.generate(layers, activation, loss, reduction)
        step = source[source.index("def _step("):source.index("def train(")]
        whole = [line for line in step.splitlines() if "[...] =" in line]
        assert all("np.where" in line for line in whole), (layers, activation, whole)
        module_for(source)  # and it imports
