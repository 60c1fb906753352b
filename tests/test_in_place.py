"""The in-place training step: what it computes, and that it allocates nothing large."""

import tracemalloc
from dataclasses import replace

import numpy as np
import pytest
import sympy as sp
from conftest import ROOT
from networks import random_network
from sympy.codegen.numpy_nodes import logaddexp

import symbp
from symbp.algebra import TARGET, VALUE, Quantity, entry
from symbp.codegen import UnsupportedOperation
from symbp.derive import derive_spec
from symbp.inplace import InPlacePrinter, shared_arrays
from symbp.network import make_spec
from symbp.passes import descend_early, fold_rate, gradients_early, shared_gradients, stack_biases
from symbp.program import Apply, Buffer, Program, RowBelow, _quantity, lower, reads, writes
from symbp.train import load_module, module_for

ROWS = 3
a1, z1 = (entry(Quantity(name, ROWS, 1, VALUE, name[0], 1)) for name in ("a1", "z1"))
y = entry(Quantity("y", ROWS, 1, TARGET, "y"))
_SMALL = derive_spec(make_spec("2-3-1", "sigmoid", "half_se"))


def printer_for(rows: int) -> InPlacePrinter:
    """An in-place printer over a program holding a1, z1, y and out, each rows × m."""
    program = Program(_SMALL)
    for name, role in (("a1", "value"), ("z1", "value"), ("y", "target"), ("out", "value")):
        program.buffers[name] = Buffer(name, role, rows)
    printer = InPlacePrinter(program)
    printer._owner = "out"
    return printer


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
    printer = printer_for(ROWS)
    lines = printer.into(formula, "out")
    values = {"a1": rng.uniform(0.1, 0.9, (ROWS, 5)), "z1": rng.uniform(0.1, 0.9, (ROWS, 5)),
              "Y": rng.uniform(0.1, 0.9, (ROWS, 5))}
    namespace = {"np": np, **values, "out": np.empty((ROWS, 5))}
    for array in printer.program.buffers.values():
        namespace.setdefault(array.name, np.empty((ROWS, 5)))
    exec("\n".join(lines), namespace)  # noqa: S102 -- test-only: code symbp wrote from a SymPy formula
    expected = sp.lambdify((a1, z1, y), formula, modules="numpy")(values["a1"], values["z1"], values["Y"])
    np.testing.assert_allclose(namespace["out"], np.broadcast_to(expected, (ROWS, 5)), rtol=1e-12, atol=1e-14,
                               err_msg=f"{formula}\n" + "\n".join(lines))


def test_lowering_uses_one_call_per_operation():
    lines = printer_for(3).into(1 - a1**2, "out")
    assert lines == ["np.square(a1, out=out)", "np.subtract(1.0, out, out=out)"]


def test_a_node_with_no_ufunc_is_an_error_naming_it_and_the_backend():
    with pytest.raises(UnsupportedOperation, match=r"numpy \(in place\).*LambertW"):
        printer_for(3).into(sp.LambertW(a1), "out")


def test_a_training_step_allocates_no_array_the_size_of_a_layer():
    """On digits-sized data, one (128 × m) array is 2 MB; a step must allocate far less."""
    module = load_module(ROOT / "generated" / "digits_64_128_10.py", "digits_64_128_10")
    rng = np.random.default_rng(0)
    samples = 2000
    X = rng.standard_normal((64, samples))
    Y = np.eye(10)[:, rng.integers(0, 10, samples)]
    params = module.init_params(0)
    weights = module._stacked(params)  # each [W b], as train hands them to _step
    X = np.vstack((X, np.ones((1, samples))))
    work = module._work(samples, X.dtype)
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
        module.train_step(params, X[:-1], Y, 0.1)
        _, peak_allocating = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_allocating > layer_bytes


def test_every_random_network_lowers_to_calls_with_out_and_no_whole_array_assignment():
    """Every formula of 30 random networks (leaky_relu's Piecewise included) becomes ufunc calls."""
    for seed in range(30):
        layers, activation, loss, reduction = random_network(seed)
        source = symbp.generate(layers, activation, loss, reduction)
        step = source[source.index("def _step("):source.index("def train(")]
        assert "[...] =" not in step and "np.where" not in step, (layers, activation)
        module_for(source)  # and it imports


def test_a_long_formula_split_into_lines_computes_the_formula():
    """Two long factors of one product each get a line of their own, under different names
    (both were once named t_factor, and the second overwrote the first)."""
    import math

    import sympy as sp

    from symbp.codegen import NumpyCodePrinter, short_assignments

    names = ["gamma1_ik", "du1_ik", "s1_1_ik", "s1_2_ik", "xhat1_ik", "var1_ik", "NORM_EPS", "m"]
    g, du, s1, s2, xhat, var, eps, m = symbols = sp.symbols(names, real=True)
    expr = g * (du * m - s1 - s2 * xhat) / (m * sp.sqrt(var + eps))
    lines = short_assignments("t", expr, 44, NumpyCodePrinter())
    assert len(lines) >= 3 and len({name for name, _ in lines[:-1]}) == len(lines) - 1
    values = dict(zip(names, (0.7, -1.3, 0.4, 2.1, -0.6, 1.9, 1e-5, 5.0), strict=True))
    scope = {"np": np, **values}
    for name, code in lines:
        exec(f"{name} = {code}", scope)  # noqa: S102 -- lines printed by the test from its own formula
    expected = float(expr.subs({s: values[str(s)] for s in symbols}))
    assert math.isclose(scope["t"], expected, rel_tol=1e-14)


@pytest.mark.parametrize(("options", "folded"), [
    ({}, True), ({"batch_norm": True}, True), ({"dropout": 0.2}, True),
    ({"l2": "0.01"}, False), ({"optimizer": "momentum", "momentum": 0.9}, False),
    ({"optimizer": "sgd", "weight_decay": 0.1}, False),
])
@pytest.mark.parametrize("loss", ["cross_entropy", "half_se"])
def test_alpha_is_multiplied_into_the_output_error_once_for_plain_gradient_descent(options, folded, loss):
    """With plain gradient descent the in-place step scales δ⁽ᴺ⁾ by α right after computing it
    (after s⁽ᴺ⁾, which softmax with half_se computes first) and subtracts the gradients as they
    are; a penalty or an optimizer keeps one α per update. (That the folded step trains as
    train_step does is tests/test_torch_oracle.py's.)"""
    program = lower(derive_spec(make_spec("3-4-2", "tanh,softmax", loss, **options)))
    result = fold_rate(program)
    assert (result is not program) == folded
    if not folded:
        return
    # α joins δ⁽²⁾'s last formula (a step of its own only where that formula is not δ⁽²⁾'s)
    assert all(op.rate == 1 for s in result.updates for op in s.operations)
    lines = [line for s in result.steps for line in InPlacePrinter(result).step(s)]
    formulas = [line.formula for line in lines if line.formula]
    assert formulas.count("δ⁽²⁾ ← α δ⁽²⁾") == 1
    assert formulas.index("δ⁽²⁾ ← α δ⁽²⁾") == next(i for i, f in enumerate(formulas) if f.startswith("δ⁽²⁾ =")) + 1
    scaling = [line.line for line in lines if "learning_rate" in line.line]
    assert scaling in (["delta2 *= learning_rate"], ["delta2 *= learning_rate / m"]), scaling
    scaled = lines.index(next(line for line in lines if "learning_rate" in line.line))
    assert all("delta1" not in line.line for line in lines[:scaled]), "α must reach δ⁽²⁾ before δ⁽¹⁾ reads it"
    source = symbp.generate("3-4-2", "tanh,softmax", loss, **options)
    assert "    δ⁽²⁾ is multiplied by α once: every error and gradient after it is linear in\n" in source


def test_alpha_is_not_folded_where_a_later_step_reads_what_came_before_the_output_error():
    """s⁽²⁾ is computed before δ⁽²⁾ and stays unscaled: a gradient that read it would be wrong."""
    program = lower(derive_spec(make_spec("3-4-2", "tanh,softmax", "half_se")))
    before = program.backward[0].target
    assert before.name != "delta2"
    last = program.gradients[-1]
    reading = replace(last, operations=(Apply(last.target, entry(_quantity(before)), entry(_quantity(before))),))
    changed = replace(program, gradients=(*program.gradients[:-1], reading))
    assert fold_rate(changed) is changed
    assert fold_rate(program) is not program


@pytest.mark.parametrize(("layers", "activation", "expected"), [
    ("64-128-10", "tanh,softmax", {"a1": "z1"}),  # tanh' is written in a, so z⁽¹⁾ is read once
    ("4-5-5-3", "tanh,tanh,softmax", {"a1": "z1", "a2": "z2"}),
    ("4-5-3", "relu,softmax", {}),  # relu' reads z⁽¹⁾ in the backward pass
    ("4-5-3", "sigmoid,softmax", {}),  # σ is several calls: it could read z after overwriting it
])
def test_an_activation_of_one_ufunc_writes_over_an_input_read_only_by_it(layers, activation, expected):
    program = fold_rate(lower(derive_spec(make_spec(layers, activation, "cross_entropy"))))
    assert shared_arrays(program) == expected
    source = symbp.generate(layers, activation, "cross_entropy")
    for value, earlier in expected.items():
        assert f"    {value} = {earlier}  # {earlier} is not read after {value} is computed from it\n" in source
        assert f"np.empty(({layers.split('-')[1]}, m), dtype),  # {value}\n" not in source


@pytest.mark.parametrize(("options", "stacked"), [
    ({}, True), ({"dropout": 0.2}, True),
    ({"l2": "0.01"}, False), ({"optimizer": "momentum", "momentum": 0.9}, False),
])
def test_each_layers_bias_is_stacked_beside_its_weights_where_the_step_allows(options, stacked):
    """[W b] [a; 1] = W a + b in one product, δ [a; 1]ᵀ = [∂L/∂W ∂L/∂b] in another; a penalty
    (λW joins ∂L/∂W only) or an optimizer (state per parameter) keeps them apart."""
    program = fold_rate(lower(derive_spec(make_spec("3-4-2", "tanh,softmax", "cross_entropy", **options))))
    result = stack_biases(program)
    assert (result is not program) == stacked
    source = symbp.generate("3-4-2", "tanh,softmax", "cross_entropy", **options)
    step = source[source.index("def _step("):source.index("def _in_place_epochs(")]
    if not stacked:
        assert "_ones" not in step and "np.dot(W1, X, out=z1)" in step
        return
    hidden = "d1" if "dropout" in options else "a1"  # the second layer's input: a⁽¹⁾, or it after dropout
    assert [(s.whole.name, [p.name for p in s.parts]) for s in result.stacks] == [
        ("W1_b1", ["W1", "b1"]), ("dW1_db1", ["dW1", "db1"]), ("X_ones", ["X"]),
        ("W2_b2", ["W2", "b2"]), ("dW2_db2", ["dW2", "db2"]), (f"{hidden}_ones", [hidden]),
        ("delta1_extra", ["delta1"])]
    assert [s.ones for s in result.stacks if isinstance(s, RowBelow)] == [True, True, False]
    for line in ("np.dot(W1_b1, X_ones, out=z1)", f"np.dot(W2_b2, {hidden}_ones, out=z2)",
                 "np.dot(W2_b2.T, delta2, out=delta1_extra)",
                 "    # ∂L/∂W⁽¹⁾ = δ⁽¹⁾ Xᵀ\n    # ∂L/∂b⁽¹⁾ = Σ δ⁽¹⁾\n    np.dot(delta1, X_ones.T, out=dW1_db1)\n",
                 "    # W⁽²⁾ ← W⁽²⁾ − α ∂L/∂W⁽²⁾\n    # b⁽²⁾ ← b⁽²⁾ − α ∂L/∂b⁽²⁾\n    W2_b2 -= dW2_db2\n"):
        assert line in step
    assert "+= b" not in step and ", ones, out=" not in step and "[:, :" not in step  # no views of W


def test_batch_norm_keeps_biases_apart_as_its_running_estimates_read_params_between_steps():
    source = symbp.generate("3-4-2", "tanh,softmax", "cross_entropy", batch_norm=True)
    assert "_stacked" not in source and "_ones" not in source


class _StopAfter(np.random.Generator):
    """A generator that raises KeyboardInterrupt when asked for its third epoch's order."""

    calls = 0

    def permutation(self, x):
        type(self).calls += 1
        if type(self).calls == 3:
            raise KeyboardInterrupt
        return super().permutation(x)


def test_stacked_parameters_reach_the_callers_arrays_when_logging_and_when_stopped():
    """train copies [W b] back before each logged loss and at the end, even when interrupted:
    the caller's arrays then hold the last completed step's values."""
    module = load_module(ROOT / "generated" / "digits_64_128_10.py", "digits_64_128_10")
    rng = np.random.default_rng(1)
    X = rng.standard_normal((64, 40))
    Y = np.eye(10)[:, rng.integers(0, 10, 40)]
    reference = module.init_params(0)
    losses = [module.loss(reference, X, Y)]
    for _ in range(2):
        module.train(reference, X, Y, 1, 0.1, log_every=None)
        losses.append(module.loss(reference, X, Y))
    params = module.init_params(0)
    assert module.train(params, X, Y, 3, 0.1, log_every=1) == pytest.approx(losses, rel=1e-13)
    # two epochs of batches of 8, then an interrupt in the third: params hold the second's end
    expected, stopped = module.init_params(0), module.init_params(0)
    module.train(expected, X, Y, 2, 0.1, log_every=None, batch_size=8, rng=np.random.default_rng(5))
    originals = {name: value for name, value in stopped.items()}
    _StopAfter.calls = 0
    with pytest.raises(KeyboardInterrupt):
        module.train(stopped, X, Y, 5, 0.1, log_every=None, batch_size=8,
                     rng=_StopAfter(np.random.PCG64(5)))
    for name, value in expected.items():
        assert stopped[name] is originals[name]
        np.testing.assert_array_equal(stopped[name], value)


def test_wide_layers_keep_w_and_b_apart():
    """A 1024 × 1024 W stays apart from its b (rows of 1025 numbers slowed the product that
    streams it from memory); the 10 × 1024 output layer beside it is stacked."""
    program = fold_rate(lower(derive_spec(make_spec("1024-1024-10", "tanh,softmax", "cross_entropy"))))
    stacks = {s.whole.name for s in stack_biases(program).stacks}
    assert stacks == {"W2_b2", "dW2_db2", "a1_ones", "delta1_extra"}


def single_value_formula(rng: np.random.Generator, depth: int) -> sp.Expr:
    """A random formula in a1 and numbers (a1 may occur more than once, then nothing is reused)."""
    if depth == 0:
        return [a1, a1, sp.Integer(int(rng.integers(1, 4))), sp.Rational(1, 3)][int(rng.integers(0, 4))]
    inner = single_value_formula(rng, depth - 1)
    choices = [lambda: 1 - inner**2, lambda: 2 * inner + 1, lambda: sp.tanh(inner), lambda: sp.exp(-inner),
               lambda: 1 / (2 + inner**2), lambda: sp.Heaviside(inner, 0), lambda: inner * sp.Rational(3, 2) - 1,
               lambda: sp.Max(inner, sp.Rational(1, 2)), lambda: inner + single_value_formula(rng, depth - 1)]
    return choices[int(rng.integers(0, len(choices)))]()


@pytest.mark.parametrize("seed", range(40))
def test_a_value_read_for_the_last_time_holds_the_temporary_only_where_that_is_safe(seed):
    """out ← out ⊙ F(a1), with this the last read of a1: F goes into a1's own array where a1
    is read once, and the result equals NumPy's evaluation of the formula either way."""
    rng = np.random.default_rng(seed)
    formula = single_value_formula(rng, depth=int(rng.integers(1, 4)))
    printer = printer_for(ROWS)
    own = entry(Quantity("out", ROWS, 1, VALUE, "out"))
    op = Apply(printer.program.buffers["out"], own * formula, own * formula)
    printer.last_reader = {"a1": id(op), "out": id(op)}
    lines = printer._print_Apply(op)
    values = rng.uniform(0.1, 0.9, (ROWS, 5))
    namespace = {"np": np, "a1": values.copy(), "out": np.full((ROWS, 5), 1.5)}
    for array in printer.program.buffers.values():
        namespace.setdefault(array.name, np.empty((ROWS, 5)))
    exec("\n".join(lines), namespace)  # noqa: S102 -- test-only: code symbp wrote from a SymPy formula
    expected = 1.5 * np.broadcast_to(sp.lambdify(a1, formula, modules="numpy")(values), (ROWS, 5))
    np.testing.assert_allclose(namespace["out"], expected, rtol=1e-12, err_msg=f"{formula}\n" + "\n".join(lines))
    reused = any("out=a1)" in line or line.startswith("a1 ") for line in lines)
    assert reused == (formula.count(a1) == 1 and not formula.is_Atom), (formula, lines)


def test_each_gradient_comes_right_after_the_error_it_reads_and_frees_the_layers_values():
    """∂L/∂W⁽²⁾ = δ⁽²⁾ (a⁽¹⁾)ᵀ before δ⁽¹⁾'s elementwise work: tanh'(z⁽¹⁾) = 1 − a⁽¹⁾² then goes into
    a⁽¹⁾'s array. σ' = a(1 − a) reads a twice and keeps a temporary of its own."""
    step = (lambda source: source[source.index("def _step("):source.index("def _in_place_epochs(")])
    digits = step((ROOT / "generated" / "digits_64_128_10.py").read_text(encoding="utf-8"))
    assert (digits.index("_dot(delta2, a1_ones.T, dW2_db2, ") < digits.index("_dot(W2_b2.T, delta2, delta1_extra, ")
            < digits.index("out=dW1_db1)"))
    assert "    np.square(a1, out=a1)  # a1 is read no more: its array takes this\n" in digits
    assert "delta1_t1" not in digits
    xor = step((ROOT / "generated" / "xor_2_2_1.py").read_text(encoding="utf-8"))
    assert "np.subtract(1.0, a1, out=delta1_t1)" in xor


def test_a_wide_layers_gradient_keeps_its_place_after_the_backward_pass():
    """∂L/∂W of a 1024 × 1024 layer, written early between the backward products, evicted what
    those read next; it stays after them, while the output layer's and ∂L/∂b⁽¹⁾ move up."""
    program = gradients_early(stack_biases(fold_rate(lower(derive_spec(
        make_spec("1024-1024-10", "tanh,softmax", "cross_entropy"))))))
    assert [s.target.name for s in program.backward] == ["delta2", "dW2_db2", "delta1", "db1"]
    assert [s.target.name for s in program.gradients] == ["dW1"]


@pytest.mark.parametrize(("layers", "says"), [
    ("1024-1024-10", "For W⁽²⁾, b is the last column of [W b]"),
    ("64-128-10", "Each layer's b is the last column of [W b]"),
])
def test_the_step_says_which_layers_are_stacked(layers, says):
    source = symbp.generate(layers, "tanh,softmax", "cross_entropy")
    start = source.index("def _step(")
    docstring = source[start:source.index('    """\n', start)]  # to the docstring's closing quotes
    assert says in docstring and "(``_extra``)" in docstring
    single = symbp.generate("3-2", "sigmoid", "half_se")  # one layer: no backward product
    assert "_extra" not in single and "Each layer's b is the last column" in single


@pytest.mark.parametrize(("layers", "activation", "loss", "options", "groups"), [
    # 400 × 400 weights are over 2¹⁷ entries, so W and b stay apart: ∂L/∂W⁽¹⁾, ∂L/∂W⁽²⁾ share
    ("400-400-400-3", "tanh,tanh,softmax", "cross_entropy", {}, [["db2", "db1"], ["dW2", "dW1"]]),
    ("3-4-4-4-2", "tanh", "half_se", {"l2": "0.1"}, [["delta3", "delta1"], ["dW3", "dW2"], ["db3", "db2", "db1"]]),
    ("2-3-3-3-1", "tanh,tanh,tanh,sigmoid", "bce", {"batch_norm": True}, None),
    # an optimizer's updates stay after the backward pass; the errors still share
    ("3-4-4-4-2", "tanh", "half_se", {"optimizer": "adam"}, [["delta3", "delta1"]]),
])
def test_gradients_of_one_shape_share_one_array_and_train_as_train_step(layers, activation, loss, options, groups):
    """Each update right after its gradient (passes.descend_early) frees the gradient's array for
    the next of its shape; the in-place step must still be train_step, whatever shares."""
    folded = fold_rate(lower(derive_spec(make_spec(layers, activation, loss, **options))))
    program = gradients_early(folded if "batch_norm" in options else stack_biases(folded))
    found = shared_gradients(descend_early(program))
    assert found and (groups is None or found == groups), found
    source = symbp.generate(layers, activation, loss, **options)
    for group in found:
        assert all(f"    {name} = {group[0]}\n" in source for name in group[1:])
        above = source[:source.index(f"    {group[1]} = {group[0]}\n")].splitlines()[-1]
        assert above.startswith("    # ") and "share" in above and "read no more when the next is written" in above
    module = module_for(source)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((module.LAYERS[0], 6))
    Y = np.eye(module.LAYERS[-1])[:, rng.integers(0, module.LAYERS[-1], 6)] if loss == "cross_entropy" \
        else rng.uniform(0.1, 0.9, (module.LAYERS[-1], 6))
    looped, stepped = module.init_params(3, "fan_in"), module.init_params(3, "fan_in")
    state = {"state": module.init_state(looped)} if "optimizer" in options else {}
    kept = (module.init_state(stepped),) if "optimizer" in options else ()
    module.train(looped, X, Y, epochs=4, learning_rate=0.05, log_every=None, **state)
    for _ in range(4):
        module.train_step(stepped, X, Y, 0.05, *kept)
    assert ("Each update comes as soon as its gradient" in source) == ("optimizer" not in options)
    for name in stepped:
        np.testing.assert_allclose(looped[name], stepped[name], rtol=1e-12, atol=1e-14, err_msg=name)


def touched(program, step, which) -> set[str]:
    """The arrays a step's operations read (or write), a stacked array standing for its parts too."""
    return set().union(set(), *(program.within(n) for op in step.operations for n in which(op)))


def test_updates_come_after_every_step_they_depend_on_in_random_networks():
    """descend_early moves steps: each pair that reads and writes a common array keeps its order
    (checked here from each operation's reads and writes, stacked arrays standing for their parts)."""
    moved = 0
    for seed in range(40):
        layers, activation, loss, reduction = random_network(seed)
        program = gradients_early(stack_biases(fold_rate(lower(derive_spec(
            make_spec(layers, activation, loss, reduction, l2="0.1" if seed % 2 else ""))))))
        early = descend_early(program)
        before, after = program.steps, early.steps
        assert sorted(map(id, before)) == sorted(map(id, after))
        position = {id(s): i for i, s in enumerate(after)}
        for i, first in enumerate(before):
            for second in before[i + 1:]:
                written = touched(program, second, writes)
                if touched(program, second, reads) & touched(program, first, writes) or written & (
                        touched(program, first, reads) | touched(program, first, writes)):
                    assert position[id(first)] < position[id(second)], (seed, first.target, second.target)
        moved += [id(s) for s in before] != [id(s) for s in after]
    assert moved > 20  # most programs have an update that can move


def test_products_with_a_side_of_at_most_16_are_multiplied_in_pieces_the_others_whole():
    """W⁽²⁾a⁽¹⁾, (W⁽²⁾)ᵀδ⁽²⁾ and δ⁽²⁾(a⁽¹⁾)ᵀ have a side of 10: each goes through ``_dot`` with its
    pieces; the two products with the 64 inputs and 128 units stay one np.dot each."""
    digits = (ROOT / "generated" / "digits_64_128_10.py").read_text(encoding="utf-8")
    step = digits[digits.index("def _step("):digits.index("def _in_place_epochs(")]
    for line in ("_dot(W2_b2, a1_ones, z2, z2_pieces)", "_dot(delta2, a1_ones.T, dW2_db2, dW2_db2_pieces)",
                 "_dot(W2_b2.T, delta2, delta1_extra, delta1_extra_pieces)",
                 "np.dot(W1_b1, X_ones, out=z1)", "np.dot(delta1, X_ones.T, out=dW1_db1)"):
        assert line in step
    assert step.count("_dot(") == 3
    xor = (ROOT / "generated" / "xor_2_2_1.py").read_text(encoding="utf-8")
    assert "_pieces" not in xor  # 2 × 3 entries: it would take 166,000 samples to cut one
    # 9 inputs (with the ones) into 300 units: W⁽¹⁾X is cut along the samples, but ∂L/∂W⁽¹⁾, cut
    # along its 9 columns, would be pieces of one or two columns, which were slower
    wide = symbp.generate("8-300-4", "tanh,softmax", "cross_entropy")
    assert "_dot(W1_b1, X_ones, z1, z1_pieces)" in wide and "np.dot(delta1, X_ones.T, out=dW1_db1)" in wide
    assert "_dot(delta2, a1_ones.T, dW2_db2, dW2_db2_pieces)" in wide  # 4 rows: cut along its 301 columns


def test_pieces_cover_each_product_once_and_only_where_it_is_large():
    module = load_module(ROOT / "generated" / "digits_64_128_10.py", "pieces_digits")
    names = module._step.__code__.co_varnames
    for m, z2, gradient in ((32, 0, 0), (256, 0, 2), (1347, 2, 2), (8000, 11, 11)):
        work = dict(zip(names[names.index("a1_ones"):], module._work(m, "float64"), strict=False))
        assert len(work["z2_pieces"]) == z2 and len(work["delta1_extra_pieces"]) == z2, m
        assert len(work["dW2_db2_pieces"]) == gradient, m
        for pieces, length in ((work["z2_pieces"], m), (work["dW2_db2_pieces"], 129)):
            covered = np.concatenate([np.arange(length)[piece] for piece in pieces]) if pieces else np.arange(length)
            np.testing.assert_array_equal(covered, np.arange(length))
            assert all(10 * (p.stop - p.start) * (m if length == 129 else 129) <= 1_000_000 for p in pieces)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch", [None, 256])
def test_a_step_in_pieces_computes_what_train_step_does(dtype, batch):
    """At 1,347 samples every side-10 product is cut (and at 256 the gradient's): the trained
    weights are train_step's, to rounding."""
    module = load_module(ROOT / "generated" / "digits_64_128_10.py", "pieces_step")
    rng = np.random.default_rng(5)
    X = rng.standard_normal((64, 1347)).astype(dtype)
    Y = np.eye(10, dtype=dtype)[:, rng.integers(0, 10, 1347)]
    params = module.init_params(3, "fan_in", dtype)
    expected = {k: v.copy() for k, v in params.items()}
    order = np.random.default_rng(7).permutation(1347) if batch else None
    if batch:
        for start in range(0, 1347, batch):
            index = order[start:start + batch]
            module.train_step(expected, X[:, index], Y[:, index], 0.5)
    else:
        module.train_step(expected, X, Y, 0.5)
    module.train(params, X, Y, 1, 0.5, log_every=None, batch_size=batch, rng=np.random.default_rng(7))
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    for name, value in expected.items():
        assert params[name].dtype == np.dtype(dtype)
        np.testing.assert_allclose(params[name], value, rtol=tolerance, atol=tolerance, err_msg=name)
        assert not np.array_equal(value, module.init_params(3, "fan_in", dtype)[name])


@pytest.mark.parametrize("options", [{"optimizer": "adam"}, {"batch_norm": True}, {"l2": 0.01},
                                     {"optimizer": "momentum", "batch_norm": True}])
def test_products_in_pieces_train_as_train_step_with_optimizers_normalization_and_a_penalty(options):
    """64-128-10 at 2,000 samples: the three products through the 10 outputs are cut; 2 epochs of
    train equal 2 train_steps (the optimizer's state and the running estimates too)."""
    source = symbp.generate("64-128-10", "tanh,softmax", "cross_entropy", **options)
    step = source[source.index("def _step("):source.index("def _in_place_epochs(")]
    assert step.count("_dot(") == 3, step
    module = module_for(source)
    rng = np.random.default_rng(2)
    X = rng.standard_normal((64, 2000))
    Y = np.eye(10)[:, rng.integers(0, 10, 2000)]
    pieces = [work for work in module._work(2000, "float64") if isinstance(work, tuple)]
    assert len(pieces) == 3 and all(pieces)  # each of the three is cut at this size
    looped, stepped = module.init_params(4, "fan_in"), module.init_params(4, "fan_in")
    state = module.init_state(stepped) if "optimizer" in options else None
    kept = module.init_state(looped) if state is not None else None
    module.train(looped, X, Y, 2, 0.05, log_every=None, **({"state": kept} if kept is not None else {}))
    for _ in range(2):
        module.train_step(stepped, X, Y, 0.05, *([state] if state is not None else []))
    for name, value in stepped.items():
        np.testing.assert_allclose(looped[name], value, rtol=1e-11, atol=1e-13, err_msg=name)
    for name in state or {}:
        np.testing.assert_allclose(kept[name], state[name], rtol=1e-11, atol=1e-13, err_msg=name)
