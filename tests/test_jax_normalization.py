"""The JAX backend with batch norm, layer norm, dropout and the hinge loss: its derived gradients against
jax.grad of its own loss and against the NumPy backend, its steps and training against the NumPy backend's
(running estimates and optimizer state included), the masks it draws on the device, and 8 devices against one.

float64 (JAX's x64 switch, on for this module and restored after), but for the float32 test. Tiny networks,
each generated and compiled once (module-scoped cache): every jit compile costs a fraction of a second.
"""

import ast
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import needs
from networks import targets

import symbp
from symbp.train import module_for

jax = needs("jax", "the jax backend needs the jax extra: pip install .[jax]")

# symbp runs SymPy on formulas in a forked child (symbp/budget.py); the child never runs JAX.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")

BN_OPS = ["batch_norm:1", "dropout:1", "dropout:2"]
CASES = {
    "batch_norm": ("3-4-2", "tanh,sigmoid", "half_se", "sum", {"batch_norm": True}),
    "layer_norm": ("3-4-3", "relu,softmax", "cross_entropy", "mean", {"layer_norm": True}),
    "dropout": ("3-4-2", "tanh,sigmoid", "bce", "mean", {"dropout": "0.25"}),
    "hinge": ("3-4-3", "tanh,identity", "hinge", "sum", {}),
    "batch_norm_adam": ("3-4-2", "tanh,sigmoid", "half_se", "sum", {"batch_norm": True, "optimizer": "adam"}),
    # batch norm and dropout on layer 1, dropout alone on layer 2, with the L2 penalty and momentum
    "dropout_batch_norm": ("3-4-3-2", "tanh,relu,sigmoid", "half_se", "mean",
                           {"ops": BN_OPS, "dropout": "0.25", "l2": "0.05", "optimizer": "momentum"}),
}
_MODULES: dict = {}


@pytest.fixture(autouse=True, scope="module")
def x64():
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


def module(case, backend="jax", **changes):
    """The case's generated module for a backend, made once per test process."""
    key = (case, backend, tuple(sorted(changes.items())))
    if key not in _MODULES:
        layers, activation, loss, reduction, options = CASES[case]
        options = {**options, **changes}
        _MODULES[key] = module_for(symbp.generate(layers, activation, loss, reduction, backend=backend, **options))
    return _MODULES[key]


def data(case, samples=6, seed=0):
    layers, _, loss, _, _ = CASES[case]
    inputs, *_, outputs = map(int, layers.split("-"))
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((inputs, samples))
    if loss == "hinge":  # one-hot targets
        return rng, X, np.eye(outputs)[:, rng.integers(0, outputs, samples)]
    return rng, X, targets(rng, loss, outputs, samples)


def copied(params):
    """The parameters as writable NumPy arrays, for the NumPy backend."""
    return {name: np.array(value) for name, value in params.items()}


def noise(case, name):
    """A bias before batch norm has gradient 0 exactly, so both backends hold rounding noise there,
    which Adam divides by its own size: that bias (and the running mean, which holds it) drift by noise."""
    return 1e-8 if case == "batch_norm_adam" and name in ("b1", "running_mean1", "m_b1", "v_b1") else 1e-12


def assert_equal_arrays(got, expected, case, rtol=1e-10):
    assert set(got) == set(expected)
    for name in expected:
        np.testing.assert_allclose(np.asarray(got[name]), expected[name], rtol=rtol, atol=noise(case, name),
                                   err_msg=f"{case} {name}")


@pytest.mark.parametrize("case", list(CASES))
def test_gradients_equal_jax_grad_of_the_modules_own_loss_and_the_numpy_backends(case):
    jm, nm = module(case), module(case, "numpy")
    rng, X, Y = data(case)
    params = jm.init_params(3)
    masks = nm.draw_masks(rng, 6) if hasattr(nm, "draw_masks") else None
    given = {} if masks is None else {"masks": masks}
    derived = jm.gradients(params, X, Y, **given)
    weights, X_, Y_ = jm._checked(params, X, Y)
    dropped = () if masks is None else (jm._masks(masks, 6, X_.dtype),)
    autodiff = dict(zip(jm.PARAM_NAMES, jax.grad(jm._loss)(weights, X_, Y_, *dropped)))
    reference = copied(params)
    expected = nm.gradients(reference, X, Y, **given)
    assert set(derived) == set(expected) == set(jm.PARAM_NAMES)
    # a bias before batch norm has gradient 0 exactly: there every side is rounding noise, so the
    # absolute tolerance is relative to the network's largest gradient
    scale = max(np.abs(value).max() for value in expected.values())
    assert scale > 0.01
    for name in jm.PARAM_NAMES:
        assert derived[name].dtype == np.float64
        np.testing.assert_allclose(derived[name], autodiff[name], rtol=1e-10, atol=1e-13 * scale, err_msg=name)
        np.testing.assert_allclose(derived[name], expected[name], rtol=1e-10, atol=1e-13 * scale, err_msg=name)
    assert jm.loss(params, X, Y, **given) == pytest.approx(nm.loss(reference, X, Y, **given), rel=1e-12)
    if masks is not None:  # the masks are used: without them the gradients differ
        assert not np.allclose(derived["W1"], jm.gradients(params, X, Y)["W1"])


@pytest.mark.parametrize("case", list(CASES))
def test_train_steps_equal_the_numpy_backends_with_running_estimates_and_state(case):
    jm, nm = module(case), module(case, "numpy")
    rng, X, Y = data(case, samples=7, seed=1)
    params, reference = jm.init_params(4), nm.init_params(4)
    state = {"state": jm.init_state(params)} if hasattr(jm, "init_state") else {}
    kept = {"state": nm.init_state(reference)} if state else {}
    for _ in range(3):
        given = {"masks": nm.draw_masks(rng, 7)} if hasattr(nm, "draw_masks") else {}
        jm.train_step(params, X, Y, 0.05, **state, **given)
        nm.train_step(reference, X, Y, 0.05, **kept, **given)
    assert all(isinstance(value, jax.Array) for value in params.values())
    assert_equal_arrays(params, reference, case)
    if state:
        assert float(state["state"]["t"][0, 0]) == 3
        assert_equal_arrays(state["state"], kept["state"], case)
    if hasattr(jm, "BATCH_NORMS"):
        assert jm.BATCH_NORMS == nm.BATCH_NORMS and jm.RUNNING_SHAPES == nm.RUNNING_SHAPES
        assert not np.all(np.asarray(params["running_mean1"]) == 0)  # the steps moved them
        # inference normalizes with the running estimates; training=True with the batch's (at inference the
        # noise Adam gave b1 and the running mean, 1e-8, no longer cancels)
        rtol = 1e-7 if case == "batch_norm_adam" else 1e-10
        np.testing.assert_allclose(jm.forward(params, X), nm.forward(reference, X), rtol=rtol)
        np.testing.assert_allclose(jm.forward(params, X, training=True), nm.forward(reference, X, training=True),
                                   rtol=1e-10)
        assert not np.allclose(jm.forward(params, X), jm.forward(params, X, training=True))
    else:
        np.testing.assert_allclose(jm.forward(params, X), nm.forward(reference, X), rtol=1e-10)


def test_batch_norm_train_equals_the_numpy_backend_whole_batch_and_replayed_mini_batches():
    jm, nm = module("batch_norm"), module("batch_norm", "numpy")
    _, X, Y = data("batch_norm", samples=10, seed=2)
    params, reference = jm.init_params(2), nm.init_params(2)
    logged = jm.train(params, X, Y, 6, 0.1, log_every=2)
    assert len(logged) == 3
    assert logged == pytest.approx(nm.train(reference, X, Y, 6, 0.1, log_every=2), rel=1e-10)
    assert_equal_arrays(params, reference, "batch_norm")
    # Mini-batches of 4, 4 and 2: the NumPy backend steps through them in the order JAX drew on its device.
    params, replayed, key, losses = jm.init_params(2), nm.init_params(2), jm._key(5), []
    logged = jm.train(params, X, Y, 3, 0.1, log_every=1, batch_size=4, rng=5)
    for _ in range(3):
        losses.append(nm.loss(replayed, X, Y))
        key, order = jm._permutation(key, 10)
        order = np.asarray(order)
        for start in range(0, 10, 4):
            batch = order[start : start + 4]
            nm.train_step(replayed, X[:, batch], Y[:, batch], 0.1)
    assert logged == pytest.approx(losses, rel=1e-10)
    assert_equal_arrays(params, replayed, "batch_norm")


@pytest.mark.parametrize("batch_size", [None, 4])
def test_dropout_train_draws_each_steps_masks_on_the_device(batch_size):
    """Replayed on the NumPy backend: each epoch's order (with batches), then each step's masks, from
    the key train starts from; the masks train used are those, so the weights, running estimates and
    momentum agree."""
    case = "dropout_batch_norm"
    jm, nm = module(case), module(case, "numpy")
    _, X, Y = data(case, samples=10, seed=3)
    params, replayed = jm.init_params(1), nm.init_params(1)
    state, kept = jm.init_state(params), nm.init_state(replayed)
    logged = jm.train(params, X, Y, 3, 0.05, log_every=1, batch_size=batch_size, rng=9, state=state)
    size = batch_size or 10
    key, losses, drawn = jm._key(9), [], []
    for _ in range(3):
        losses.append(nm.loss(replayed, X, Y))
        order = np.arange(10)
        if batch_size:
            key, order = jm._permutation(key, 10)
            order = np.asarray(order)
        for start in range(0, 10, size):
            batch = order[start : start + size]
            key, masks = jm._masks_on_device(key, len(batch), np.float64)
            masks = {layer: np.asarray(mask) for layer, mask in zip(jm.MASK_UNITS, masks)}
            drawn.append(masks)
            nm.train_step(replayed, X[:, batch], Y[:, batch], 0.05, kept, masks=masks)
    assert logged == pytest.approx(losses, rel=1e-10)
    assert_equal_arrays(params, replayed, case)
    assert_equal_arrays(state, kept, case)
    assert len(drawn) == (3 if batch_size is None else 9)
    assert not np.array_equal(drawn[0][1], drawn[1][1][:, : drawn[0][1].shape[1]])  # fresh masks each step
    # The same network with other draws trains to other weights: the masks matter.
    other = jm.init_params(1)
    jm.train(other, X, Y, 3, 0.05, log_every=None, batch_size=batch_size, rng=10, state=jm.init_state(other))
    assert not np.allclose(other["W1"], params["W1"])


def test_masks_drawn_on_the_device_keep_a_unit_with_probability_one_minus_p():
    jm = module("dropout_batch_norm")  # p = 0.25, masks of 4 and 3 units
    key, masks = jm._masks_on_device(jm._key(0), 2000, np.float64)
    assert [mask.shape for mask in masks] == [(4, 2000), (3, 2000)]
    values = np.concatenate([np.asarray(mask).ravel() for mask in masks])
    assert set(np.unique(values)) == {0.0, 1.0}
    # 14,000 draws: the keep rate's standard deviation is 0.0037, so 0.015 is four of them; keeping with
    # probability p (0.25) or keeping all (1) fails by far.
    assert abs(values.mean() - 0.75) < 0.015
    for mask in masks:
        assert abs(float(np.mean(mask)) - 0.75) < 0.025
    _, again = jm._masks_on_device(key, 2000, np.float64)
    assert not np.array_equal(again[0], masks[0])  # the key moves on
    # float32 draws the very same masks: the numbers are drawn in float32 whatever the dtype.
    _, narrow = jm._masks_on_device(jm._key(0), 2000, np.float32)
    assert narrow[0].dtype == np.float32 and np.array_equal(np.asarray(narrow[0]), np.asarray(masks[0]))


def test_dropout_train_lowers_the_loss_and_without_masks_there_is_no_dropout():
    jm, plain = module("dropout"), module("dropout", dropout="")
    assert not hasattr(plain, "DROPOUT")
    _, X, Y = data("dropout", samples=12, seed=4)
    params = jm.init_params(0)
    logged = jm.train(params, X, Y, 60, 0.5, log_every=20, rng=1)
    assert len(logged) == 3 and logged[2] < logged[0]
    # No masks: each mask is its expectation 1 − p, which is the network without dropout.
    start = jm.init_params(2)
    assert jm.loss(start, X, Y) == pytest.approx(plain.loss(start, X, Y), rel=1e-12)
    np.testing.assert_allclose(jm.forward(start, X), plain.forward(start, X), rtol=1e-12)
    expected = plain.gradients(start, X, Y)
    for name, value in jm.gradients(start, X, Y).items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-12, atol=1e-15, err_msg=name)
    # Masks of ones keep every unit and scale it by 1/(1 − p): the plain network with W2/(1 − p).
    ones = {layer: np.ones((units, 12)) for layer, units in jm.MASK_UNITS.items()}
    keep = 1 - jm.DROPOUT
    scaled = {**start, "W2": start["W2"] / keep}
    assert jm.loss(start, X, Y, masks=ones) == pytest.approx(plain.loss(scaled, X, Y), rel=1e-12)
    expected = plain.gradients(scaled, X, Y)
    expected["W2"] = expected["W2"] / keep
    for name, value in jm.gradients(start, X, Y, masks=ones).items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-12, atol=1e-15, err_msg=name)


def test_float32_trains_as_float64_with_batch_norm_and_dropout():
    jm = module("dropout_batch_norm")
    _, X, Y = data("dropout_batch_norm", samples=10, seed=5)
    masks = jm.draw_masks(np.random.default_rng(0), 10)
    wide = jm.init_params(1)
    kept = jm.init_state(wide)
    jm.train(wide, X, Y, 5, 0.05, log_every=None, rng=2, state=kept)
    jm.train_step(wide, X, Y, 0.05, kept, masks=masks)
    jax.config.update("jax_enable_x64", False)
    try:
        narrow = jm.init_params(1)
        state = jm.init_state(narrow)
        jm.train(narrow, X, Y, 5, 0.05, log_every=None, rng=2, state=state)
        jm.train_step(narrow, X, Y, 0.05, state, masks=masks)
    finally:
        jax.config.update("jax_enable_x64", True)
    assert set(narrow) == set(wide) and "running_var1" in narrow
    assert all(value.dtype == np.float32 for value in (*narrow.values(), *state.values()))
    for name in wide:  # the same masks (drawn in float32 either way) and steps, to float32's precision
        np.testing.assert_allclose(narrow[name], wide[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_bad_input_is_a_one_line_error_and_checkpoints_keep_the_running_estimates(tmp_path):
    jm = module("dropout_batch_norm")
    _, X, Y = data("dropout_batch_norm", samples=10)
    params = jm.init_params(0)
    state = jm.init_state(params)
    with pytest.raises(ValueError, match=r"masks\[1\] must be 0/1 and of shape \(4, 10\)"):
        jm.train_step(params, X, Y, 0.1, state, masks={1: np.ones((4, 9)), 2: np.ones((3, 10))})
    with pytest.raises(ValueError, match="masks must map each dropout layer"):
        jm.gradients(params, X, Y, masks={1: np.ones((4, 10))})
    with pytest.raises(ValueError, match="2 or more samples per batch"):
        jm.train_step(params, X[:, :1], Y[:, :1], 0.1, state)
    start = {name: np.array(value) for name, value in params.items()}
    with pytest.raises(ValueError, match="2 or more samples per batch"):  # 10 = 3 + 3 + 3 + 1: before any step
        jm.train(params, X, Y, 2, 0.1, batch_size=3, state=state)
    assert all(np.array_equal(params[name], start[name]) for name in start)
    with pytest.raises(ValueError, match="params lacks running_var1"):
        jm.forward({name: value for name, value in params.items() if name != "running_var1"}, X)
    jm.train(params, X, Y, 2, 0.1, log_every=None, state=state)
    jm.save_params(params, tmp_path / "bn.npz", state=state)
    loaded = jm.load_params(tmp_path / "bn.npz")
    assert set(loaded) == set(jm.SAVED_NAMES) == set(params)
    assert all(np.array_equal(loaded[name], params[name]) for name in params)
    np.testing.assert_array_equal(jm.forward(loaded, X), jm.forward(params, X))
    with pytest.raises(ValueError, match="may not be named like parameters"):
        jm.save_params(params, tmp_path / "x.npz", running_mean1=np.zeros(4))
    np.savez(tmp_path / "old.npz", **{name: np.asarray(params[name]) for name in jm.PARAM_NAMES})
    with pytest.raises(ValueError, match="lacks running_mean1"):
        jm.load_params(tmp_path / "old.npz")


def test_modules_are_lint_clean_checkable_and_call_no_jax_differentiation(tmp_path, capsys):
    from symbp.cli import main

    paths = []
    for case, (layers, activation, loss, reduction, options) in CASES.items():
        paths.append(tmp_path / f"{case}.py")
        symbp.generate(layers, activation, loss, reduction, backend="jax", output=paths[-1], **options)
    # and a deep plain network, whose forward pass returns (and gradients) are too long for one line
    paths.append(tmp_path / "deep.py")
    symbp.generate("3-4-4-4-4-4-4-4-2", "tanh", backend="jax", output=paths[-1], optimizer="adam")
    for command in (["check", "--no-cache", "--isolated"], ["format", "--check", "--no-cache", "--isolated"]):
        result = subprocess.run([sys.executable, "-m", "ruff", *command, *map(str, paths)], capture_output=True,
                                text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    assert main(["generate", "--check", str(paths[-2])]) == 0, capsys.readouterr().err  # in this process: cheaper
    header = paths[-2].read_text().splitlines()[2]
    assert "--op batch_norm:1 --dropout 0.25" in header and "--backend jax" in header
    for path in paths:
        tree = ast.parse(path.read_text())
        names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        names |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        assert not names & {"grad", "vjp", "jvp", "value_and_grad", "jacrev", "jacfwd", "linearize"}, path.name


def test_symbp_train_with_the_jax_backend_batch_norm_and_dropout(capsys):
    from symbp.cli import main

    assert main(["train", "--backend", "jax", "--batch-norm", "--dropout", "0.2", "--epochs", "300",
                 "--layers", "2-4-1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["final_loss"] < 0.5 and len(report["predictions"]) == 4
    assert main(["train", "--backend", "jax", "--loss", "hinge", "--layers", "2-3-2", "--activation", "tanh,identity",
                 "--epochs", "10"]) == 2
    assert capsys.readouterr().err.count("\n") == 1  # XOR has one output: a one-line refusal


MULTI_DEVICE = textwrap.dedent("""
    import json
    import jax
    import numpy as np
    jax.config.update("jax_enable_x64", True)
    import symbp
    from symbp.train import module_for

    jm = module_for(symbp.generate("3-8-2", "tanh,sigmoid", "half_se", "mean", backend="jax", optimizer="momentum",
                                   ops=["batch_norm:1", "dropout:1"], dropout="0.25"))
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((3, 32)), rng.uniform(0, 1, (2, 32))
    result = {"devices": len(jax.devices())}
    for batch_size in (16,):  # 2 samples per device; the whole batch split is the forward pass below
        runs = {}
        for devices in (None, 8):
            params = jm.init_params(1)
            logged = jm.train(params, X, Y, 6, 0.1, log_every=3, batch_size=batch_size, rng=3,
                              state=jm.init_state(params), devices=devices)
            runs[devices] = (logged, params)
        (one, p1), (eight, p8) = runs[None], runs[8]
        result[str(batch_size)] = {
            "loss": max(abs(a - b) / abs(b) for a, b in zip(eight, one)),
            "params": max(float(np.max(np.abs(p8[n] - p1[n]) / (1e-12 + np.abs(p1[n])))) for n in p1),
            "names": sorted(p8),
            "placed": len(p8["running_var1"].sharding.device_set),
        }
    # The forward pass on a batch split over 8 devices: batch norm's mean and variance are the whole
    # batch's, which takes a reduction across the devices.
    weights, X8, _ = jm._checked(params, X, Y)
    masks = jm._masks(None, 32, X8.dtype)
    X8 = jax.device_put(X8, jm._sharding(8, None))
    result["hlo"] = jm._forward_pass.lower(weights, X8, masks).compile().as_text()
    whole, split = jm._forward_pass(weights, X, masks), jm._forward_pass(weights, X8, masks)
    result["mean"] = float(np.max(np.abs(split["mu1"] - whole["mu1"])))
    print(json.dumps(result))
""")


def test_eight_devices_train_batch_norm_and_dropout_as_one():
    from test_jax_backend import on_eight_cpu_devices

    result = on_eight_cpu_devices(MULTI_DEVICE)
    for batch_size in ("16",):  # shuffled batches of 16: 2 samples per device
        assert result[batch_size]["loss"] < 1e-10 and result[batch_size]["params"] < 1e-10, result[batch_size]
        assert "running_mean1" in result[batch_size]["names"] and result[batch_size]["placed"] == 8
    assert "all-reduce" in result["hlo"] and result["mean"] < 1e-14
