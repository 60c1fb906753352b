"""Bad input, numerical faults and code injection: a clear error, nothing written, nothing executed."""

import warnings

import numpy as np
import pytest
from conftest import run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli import run

import symbp
from symbp.train import module_for

PAYLOADS = [
    "__import__('os').system('touch {marker}')",
    "open('{marker}', 'w').write('x')",
    "z.__class__.__bases__",
    "().__class__.__base__.__subclasses__()",
    "(lambda q: q)(z)",
    "exec('open(\"{marker}\", \"w\")')",
    "eval('z')",
    "[z for z in (1,)]",
    "z if z > 0 else 0",
    "exp(z)[0]",
    "exp(z=1)",
    "globals()",
    "z; import os",
    "'{marker}'",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_formulas_that_are_code_are_refused_and_never_run(payload, tmp_path):
    """The first payload goes through the installed command in a process of its own; the rest
    through ``main`` in this one (the API call below runs them here anyway)."""
    marker = tmp_path / "pwned"
    text = payload.format(marker=marker)
    out = tmp_path / "net.py"
    command = run if payload == PAYLOADS[0] else run_main
    for args in (["derive", "--layers", "2-2-1", "--activation", f"{text},sigmoid"],
                 ["generate", "--layers", "2-2-1", "--activation", f"{text},sigmoid", "-o", str(out)]):
        result = command(*args, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("symbp: error: ") and len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr
    with pytest.raises(ValueError):
        symbp.derive("2-2-1", f"{text},sigmoid")
    assert not marker.exists() and not out.exists()


def test_a_long_formula_is_refused_before_parsing():
    with pytest.raises(ValueError, match="longer than 200"):
        symbp.derive("2-2-1", "z" + "+z" * 150)


def test_huge_numbers_are_refused():
    with pytest.raises(ValueError, match="a power above 16|larger than 1000000"):
        symbp.derive("2-2-1", "z*9**9**9")


@pytest.fixture
def strict_numpy():
    # Overflow, division by zero and invalid values raise; underflow to 0 is exact enough and silent.
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
        warnings.simplefilter("error")
        yield


def test_stable_forms_at_huge_pre_activations(strict_numpy):
    z = np.array([[1e6, -1e6, 0.0]])
    sig = module_for(symbp.generate("1-1", "sigmoid", "bce"))
    np.testing.assert_array_equal(sig.sigmoid(z), [[1.0, 0.0, 0.5]])
    plus = module_for(symbp.generate("1-1-1", "softplus,sigmoid", "half_se"))
    np.testing.assert_allclose(plus.softplus(z), [[1e6, 0.0, np.log(2)]])
    soft = module_for(symbp.generate("1-3", "softmax", "cross_entropy"))
    column = np.array([[1e6], [-1e6], [0.0]])
    assert np.all(np.isfinite(soft.softmax(column))) and np.all(np.isfinite(soft.log_softmax(column)))
    np.testing.assert_allclose(soft.log_softmax(column).ravel(), [0.0, -2e6, -1e6])


def test_confidently_wrong_outputs_give_finite_losses_and_gradients(strict_numpy):
    X = np.array([[1.0, -1.0]])
    bce = module_for(symbp.generate("1-1", "sigmoid", "bce"))
    params = {"W1": np.array([[1e6]]), "b1": np.zeros((1, 1))}
    Y = np.array([[0.0, 1.0]])  # both samples wrong by a margin of 10⁶
    assert bce.loss(params, X, Y) == pytest.approx(2e6)
    assert all(np.all(np.isfinite(g)) for g in bce.gradients(params, X, Y).values())
    ce = module_for(symbp.generate("1-2", "softmax", "cross_entropy"))
    params = {"W1": np.array([[1e6], [-1e6]]), "b1": np.zeros((2, 1))}
    Y = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert ce.loss(params, X, Y) == pytest.approx(4e6)
    assert all(np.all(np.isfinite(g)) for g in ce.gradients(params, X, Y).values())


def test_inputs_are_checked_before_computing(xor_module):
    params = xor_module.init_params(0)
    X = np.zeros((2, 4))
    cases = [
        (X, np.zeros(4), r"Y must have shape \(1, 4\)"),
        (X, np.zeros((1, 3)), r"Y must have shape \(1, 4\)"),
        (np.zeros((3, 4)), np.zeros((1, 4)), r"X must have shape \(2, m\)"),
        (np.array([[np.nan, 0, 0, 0], [0, 0, 0, 0]]), np.zeros((1, 4)), "NaN or infinite"),
        (np.array([["a", "b"], ["c", "d"]]), np.zeros((1, 2)), "real numbers"),
    ]
    for X_bad, Y_bad, message in cases:
        with pytest.raises(ValueError, match=message):
            xor_module.gradients(params, X_bad, Y_bad)
    with pytest.raises(ValueError, match="params lacks b1"):
        xor_module.loss({"W1": params["W1"]}, X, np.zeros((1, 4)))


def test_a_diverging_loss_stops_with_the_epoch():
    module = module_for(symbp.generate("1-1", "identity", "half_se"))
    params = {"W1": np.array([[1.0]]), "b1": np.zeros((1, 1))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the overflow is the point of this test
        with pytest.raises(FloatingPointError, match=r"at epoch \d+"):
            module.train(params, np.array([[10.0]]), np.array([[0.0]]), epochs=2000, learning_rate=1.0,
                         log_every=1)


ELEMENTWISE = ["sigmoid", "tanh", "relu", "leaky_relu(0.1)", "softplus", "identity", "z/(1 + exp(-z))"]


@st.composite
def networks(draw):
    depth = draw(st.integers(1, 3))
    widths = draw(st.lists(st.integers(1, 4), min_size=depth + 1, max_size=depth + 1))
    hidden = draw(st.lists(st.sampled_from(ELEMENTWISE), min_size=depth - 1, max_size=depth - 1))
    output = draw(st.sampled_from([*ELEMENTWISE, "softmax"]))
    if output == "softmax":
        widths[-1] = max(widths[-1], 2)
        loss = draw(st.sampled_from(["half_se", "cross_entropy"]))
    else:
        loss = draw(st.sampled_from(["half_se", "bce"])) if output == "sigmoid" else "half_se"
    reduction = draw(st.sampled_from(["sum", "mean"]))
    return "-".join(map(str, widths)), ",".join([*hidden, output]), loss, reduction


_MODULES = {}


def _module(network):
    if network not in _MODULES:
        _MODULES[network] = module_for(symbp.generate(*network))
    return _MODULES[network]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(network=networks(), seed=st.integers(0, 2**32 - 1), samples=st.integers(1, 6))
def test_random_networks_give_finite_gradients_of_the_right_shape_and_descend(network, seed, samples):
    module = _module(network)
    rng = np.random.default_rng(seed)
    params = module.init_params(seed)
    X = rng.standard_normal((module.LAYERS[0], samples))
    _, _, loss, _ = network
    if loss == "half_se":
        Y = rng.standard_normal((module.LAYERS[-1], samples))
    else:
        Y = rng.uniform(0.05, 1.0, (module.LAYERS[-1], samples))
        if loss == "cross_entropy":
            Y /= Y.sum(axis=0, keepdims=True)
    grads = module.gradients(params, X, Y)
    assert set(grads) == set(params)
    for name, value in grads.items():
        assert value.shape == params[name].shape
        assert np.all(np.isfinite(value))
    norm = sum(float(np.sum(g * g)) for g in grads.values())
    if norm < 1e-12:
        return  # a flat point (every relu off): no direction to descend
    before = module.loss(params, X, Y)
    rate = 1.0 / (1.0 + norm)
    for _ in range(40):  # a small enough step lowers the loss; halve until it does
        trial = {k: v.copy() for k, v in params.items()}
        module.train_step(trial, X, Y, rate)
        if module.loss(trial, X, Y) < before:
            break
        rate /= 2
    else:
        pytest.fail(f"no step size down to {rate:g} lowered the loss of {network}")


@pytest.fixture(scope="module")
def generated_2_3_2(tmp_path_factory):
    out = tmp_path_factory.mktemp("generated") / "net.py"
    assert run("generate", "--layers", "2-3-2", "-o", str(out)).returncode == 0
    return out.read_bytes()


@pytest.mark.parametrize("options", [
    {"layers": "2--1"},
    {"layers": "2-3-2", "activation": "tanh,softmax", "loss": "cross_entropy", "reduction": "median"},
    {"layers": "2-3-2", "activation": "softmax,tanh"},
    {"layers": "2-3-2", "activation": "tanh", "loss": "cross_entropy"},
    {"layers": "2-3-2", "activation": "tanh,tanh,tanh"},
])
def test_a_failed_generate_leaves_the_file_alone_and_the_api_says_the_same(options, tmp_path, generated_2_3_2):
    out = tmp_path / "net.py"
    out.write_bytes(generated_2_3_2)  # what `symbp generate --layers 2-3-2 -o net.py` wrote
    before = out.read_bytes()
    args = [item for key, value in options.items() for item in (f"--{key}", value)]
    result = run_main("generate", *args, "-o", str(out), "--force")
    assert result.returncode == 2 and out.read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["net.py"]
    with pytest.raises(ValueError) as raised:
        symbp.generate(**options)
    assert result.stderr.strip() == f"symbp: error: {raised.value}"
