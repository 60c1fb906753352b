"""The JAX backend: the derived formulas in jax.numpy, checked against jax.grad, PyTorch and the NumPy backend.

Everything here is float64 (JAX's x64 switch, turned on for this module's tests and restored after), but
for the float32 test. Few and small networks: every jit compile costs a fraction of a second.
"""

import ast
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import ROOT, needs
from networks import ELEMENTWISE, random_network, targets
from test_optimizers import SETTINGS

import symbp
from symbp.train import XOR_X, XOR_Y, module_for

jax = needs("jax", "the jax backend needs the jax extra: pip install .[jax]")

# Random networks (tests/networks.py) that together cover every activation, softmax, every loss and both
# reductions; the last also has the --l2 penalty.
SEEDS = (0, 171, 122, 133)
# symbp runs SymPy on formulas in z in a forked child with a time limit (symbp/budget.py); the child runs
# SymPy only, never JAX, so JAX's warning that forking a multithreaded process may deadlock does not apply.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
NETWORKS = [(*random_network(seed), "0.1" if seed == 133 else "") for seed in SEEDS]
_MODULES: dict = {}


@pytest.fixture(autouse=True)
def x64():
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


def module(layers, activation, loss, reduction, l2="", backend="jax", **options):
    """A generated module, made once per test process."""
    key = (layers, activation, loss, reduction, l2, backend, tuple(sorted(options.items())))
    if key not in _MODULES:
        _MODULES[key] = module_for(symbp.generate(layers, activation, loss, reduction, l2=l2, backend=backend,
                                                  **options))
    return _MODULES[key]


def data(seed, layers, loss, samples=6):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((layers[0], samples)), targets(rng, loss, layers[-1], samples)


def test_the_networks_cover_every_activation_loss_and_reduction():
    assert {a for _, activation, *_ in NETWORKS for a in activation.split(",")} == {*ELEMENTWISE, "softmax"}
    assert {n[2] for n in NETWORKS} == {"half_se", "bce", "cross_entropy"}
    assert {n[3] for n in NETWORKS} == {"sum", "mean"}


def test_tanh_derivative_and_the_softmax_shift_are_printed_in_the_forms_xla_vectorizes():
    """1 − a² as (1 − a)(1 + a), e^(z − max) as e^(−(max − z)): the same functions (SymPy), printed
    as such in the module (bench/jax_step.py measures why); other expressions are left as they are."""
    import sympy as sp

    from symbp.jaxcode import factored_squares

    a, b, d = sp.symbols("a b d", real=True)
    for expr in (d * (1 - a**2), (1 - a**2) ** 2 + b, 1 - (a + b) ** 2):
        factored = factored_squares(expr)
        assert factored != expr and sp.expand(factored - expr) == 0
    for expr in (1 - 2 * a**2, 2 - a**2, 1 - a**3, 1 + a**2, d * (1 - a)):
        assert factored_squares(expr) == expr
    source = symbp.generate("3-4-2", "tanh,softmax", "cross_entropy", "mean", backend="jax")
    assert "    delta1 = delta1 * (a1 + 1) * (1 - a1)\n" in source
    assert "    a2 = jnp.exp(-(z2.max(axis=0, keepdims=True) - z2))\n" in source


@pytest.mark.parametrize(("seed", "network"), zip(SEEDS, NETWORKS), ids=[n[1] for n in NETWORKS])
def test_gradients_equal_jax_grad_of_the_modules_own_loss(seed, network):
    jm = module(*network)
    X, Y = data(seed, jm.LAYERS, network[2])
    params = jm.init_params(seed)
    derived = jm.gradients(params, X, Y)
    weights, X_, Y_ = jm._checked(params, X, Y)
    autodiff = dict(zip(jm.PARAM_NAMES, jax.grad(jm._loss)(weights, X_, Y_)))
    for name in jm.PARAM_NAMES:
        assert derived[name].dtype == np.float64
        np.testing.assert_allclose(derived[name], autodiff[name], rtol=1e-10, atol=1e-12, err_msg=name)
    # The module's formulas are printed in jax.numpy: nothing in it asks JAX to differentiate.
    tree = ast.parse(symbp.generate(*network[:4], l2=network[4], backend="jax"))
    names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    names |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert "dot" in names and not names & {"grad", "vjp", "jvp", "value_and_grad", "jacrev", "jacfwd", "linearize"}


@pytest.mark.parametrize(("seed", "network"), zip(SEEDS, NETWORKS), ids=[n[1] for n in NETWORKS])
def test_gradients_and_loss_equal_torch_autograd(seed, network):
    torch = needs("torch", "PyTorch is the test-only oracle; CI installs torch==2.13.0")
    from test_torch_oracle import torch_loss

    _, activation, loss, reduction, l2 = network
    jm = module(*network)
    X, Y = data(seed, jm.LAYERS, loss)
    params = jm.init_params(seed)
    tensors = {n: torch.tensor(np.asarray(v), dtype=torch.float64, requires_grad=True) for n, v in params.items()}
    total = torch_loss(tensors, X, Y, activation.split(","), loss, reduction)
    if l2:
        total = total + float(l2) / 2 * sum(torch.sum(t**2) for n, t in tensors.items() if n.startswith("W"))
    total.backward()
    assert jm.loss(params, X, Y) == pytest.approx(total.item(), rel=1e-10)
    derived = jm.gradients(params, X, Y)
    for name, tensor in tensors.items():
        np.testing.assert_allclose(derived[name], tensor.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_optimizers_equal_torch_optim_and_the_numpy_backend(name):
    needs("torch", "PyTorch is the test-only oracle; CI installs torch==2.13.0")
    from test_optimizer_oracle import RATE, STEPS, torch_steps

    seed = SEEDS[list(SETTINGS).index(name) % len(SEEDS)]
    layers, activation, loss, reduction, l2 = NETWORKS[SEEDS.index(seed)]
    jm = module(layers, activation, loss, reduction, l2, optimizer=name, **SETTINGS[name])
    X, Y = data(seed, jm.LAYERS, loss, samples=5)
    initial = {n: np.asarray(v) for n, v in jm.init_params(seed).items()}
    expected = torch_steps(initial, X, Y, activation.split(","), loss, reduction, l2, name, SETTINGS[name])
    params = dict(initial)
    state = jm.init_state(params)
    jm.train(params, X, Y, STEPS, RATE, log_every=30, state=state)
    nm = module(layers, activation, loss, reduction, l2, backend="numpy", optimizer=name, **SETTINGS[name])
    stepped = {n: v.copy() for n, v in initial.items()}
    nm.train(stepped, X, Y, STEPS, RATE, state=nm.init_state(stepped))
    for n, value in expected.items():
        np.testing.assert_allclose(params[n], value, rtol=1e-10, atol=1e-12, err_msg=f"{name} {n}")
        np.testing.assert_allclose(params[n], stepped[n], rtol=1e-10, atol=1e-12, err_msg=f"{name} {n}")
    if name == "adam":  # train_step too (one more compile, so for one optimizer)
        one = dict(initial)
        kept = jm.init_state(one)
        jm.train_step(one, X, Y, RATE, kept)  # replaces the entries, as JAX arrays cannot change
        assert isinstance(one["W1"], jax.Array) and not np.array_equal(one["W1"], initial["W1"])
        assert float(state["t"][0, 0]) == STEPS and float(kept["t"][0, 0]) == 1


def test_xor_trains_as_the_numpy_backend_over_10000_epochs():
    jm, nm = (module("2-2-1", "sigmoid", "half_se", "sum", backend=b) for b in ("jax", "numpy"))
    params = {"jax": jm.init_params(0), "numpy": nm.init_params(0)}
    logged = {b: m.train(params[b], XOR_X, XOR_Y, 10_000, 0.1) for b, m in (("jax", jm), ("numpy", nm))}
    assert len(logged["jax"]) == 10
    assert logged["jax"] == pytest.approx(logged["numpy"], rel=1e-10)
    for name in nm.PARAM_NAMES:
        np.testing.assert_allclose(params["jax"][name], params["numpy"][name], rtol=1e-10, atol=1e-12)


def test_digits_mini_batches_train_as_the_numpy_backend():
    needs("sklearn", "digits ships with scikit-learn: pip install .[datasets]")
    from symbp.datasets import load

    digits = load("digits", 0)
    network = ("64-64-10", "tanh,softmax", "cross_entropy", "mean")
    jm, nm = module(*network), module(*network, backend="numpy")
    X, Y, samples = digits.X_train, digits.Y_train, digits.X_train.shape[1]
    params = jm.init_params(0, "fan_in")
    logged = jm.train(params, X, Y, 3, 0.1, log_every=1, batch_size=32, rng=5)
    # The NumPy backend, stepping through the batches in the order the JAX module drew on its device.
    replayed, key, losses = nm.init_params(0, "fan_in"), jm._key(5), []
    for _ in range(3):
        losses.append(nm.loss(replayed, X, Y))
        key, order = jm._permutation(key, samples)
        order = np.asarray(order)
        assert sorted(order) == list(range(samples))
        for start in range(0, samples, 32):
            batch = order[start : start + 32]
            nm.train_step(replayed, X[:, batch], Y[:, batch], 0.1)
    assert logged == pytest.approx(losses, rel=1e-10)
    for name in nm.PARAM_NAMES:
        np.testing.assert_allclose(params[name], replayed[name], rtol=1e-10, atol=1e-12, err_msg=name)


def test_the_on_device_shuffle_is_a_uniform_permutation():
    """_permutation sorts packed integers (random bits above each position) instead of calling
    jax.random.permutation: each draw must be a permutation, every order of 4 samples must come
    up about equally often (chi-square over 24,000 draws), and with 3,000 samples (two rounds
    of sorting) each position must be as likely to land first as any other."""
    import jax

    jm = module("2-2-1", "sigmoid", "half_se", "sum")
    keys = jax.random.split(jax.random.key(0), 24_000)
    orders = np.asarray(jax.jit(jax.vmap(lambda key: jm._permutation(key, 4)[1]))(keys))
    assert all(sorted(order) == [0, 1, 2, 3] for order in orders[:100])
    _, counts = np.unique(orders @ np.array([64, 16, 4, 1]), return_counts=True)
    assert len(counts) == 24
    chi2 = float(np.sum((counts - 1000) ** 2 / 1000))
    assert chi2 < 49.7, chi2  # the 0.999 quantile of chi-square with 23 degrees of freedom
    keys = jax.random.split(jax.random.key(1), 300)
    orders = np.asarray(jax.jit(jax.vmap(lambda key: jm._permutation(key, 3000)[1]))(keys))
    assert np.array_equal(np.sort(orders, axis=1), np.tile(np.arange(3000), (300, 1)))
    # the first place's sample: uniform on 0…2999, mean 1499.5, standard error 866/√300 = 50
    assert abs(np.mean(orders[:, 0]) - 1499.5) < 200, np.mean(orders[:, 0])


MULTI_DEVICE = textwrap.dedent("""
    import json, sys
    import jax
    import numpy as np
    jax.config.update("jax_enable_x64", True)
    import symbp
    from symbp.train import module_for

    jm = module_for(symbp.generate("5-6-3", "tanh,softmax", "cross_entropy", "mean", backend="jax",
                                   optimizer="momentum"))
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((5, 64)), np.eye(3)[:, rng.integers(0, 3, 64)]
    result = {"devices": len(jax.devices())}
    for batch_size in (None, 16):
        runs = {}
        for devices in (None, 8):
            params = jm.init_params(1)
            state = jm.init_state(params)
            logged = jm.train(params, X, Y, 40, 0.01, log_every=10, batch_size=batch_size, rng=3, state=state,
                              devices=devices)
            runs[devices] = (logged, params)
        (one, p1), (eight, p8) = runs[None], runs[8]
        result[str(batch_size)] = {
            "loss": max(abs(a - b) / abs(b) for a, b in zip(eight, one)),
            "params": max(float(np.max(np.abs(p8[n] - p1[n]) / (1e-12 + np.abs(p1[n])))) for n in jm.PARAM_NAMES),
            "placed": len(p8["W1"].sharding.device_set),
        }
    sharding = jm._sharding(8, None)
    weights, X8, Y8 = jm._checked(params, X, Y)
    X8, Y8 = jax.device_put((X8, Y8), sharding)
    kept = jm._kept(jm.init_state(params), X8.dtype)
    result["hlo"] = jm._step.lower(weights, X8, Y8, 0.01, kept).compile().as_text()
    try:
        jm.train(jm.init_params(1), X[:, :60], Y[:, :60], 1, 0.01, devices=8)
    except ValueError as error:
        result["uneven"] = str(error)
    # 60 samples in batches of 16: three split over the devices, the last 12 whole on each
    runs = []
    for devices in (None, 8):
        params = jm.init_params(1)
        jm.train(params, X[:, :60], Y[:, :60], 5, 0.01, log_every=None, batch_size=16, rng=3, devices=devices)
        runs.append(params)
    result["short"] = max(float(np.max(np.abs(runs[1][n] - runs[0][n]))) for n in jm.PARAM_NAMES)
    # the command line: symbp train --devices 4 (XOR has 4 samples) reports what one device does
    import contextlib, io
    from symbp.cli import main
    reports = []
    for devices in ([], ["--devices", "4"]):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["train", "--backend", "jax", "--dataset", "xor", "--epochs", "300", "--json", *devices])
        reports.append((code, json.loads(out.getvalue())))
    result["cli"] = reports
    print(json.dumps(result))
""")


def on_eight_cpu_devices(script: str) -> dict:
    """Run script in a child process whose JAX sees 8 CPU devices; its printed JSON."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["devices"] == 8
    return result


def test_eight_devices_train_as_one_and_sum_gradients_with_an_all_reduce():
    result = on_eight_cpu_devices(MULTI_DEVICE)
    for batch_size in ("None", "16"):  # the whole batch of 64, and shuffled batches of 16: 8 and 2 per device
        assert result[batch_size]["loss"] < 1e-10 and result[batch_size]["params"] < 1e-10, result[batch_size]
        assert result[batch_size]["placed"] == 8
    assert "all-reduce" in result["hlo"]
    assert "do not split evenly over 8 devices" in result["uneven"]
    assert result["short"] < 1e-12
    (one_code, one), (eight_code, eight) = result["cli"]
    assert one_code == eight_code == 0 and eight["devices"] == 4 and "devices" not in one
    assert eight["final_loss"] == pytest.approx(one["final_loss"], rel=1e-10)
    assert eight["predictions"] == pytest.approx(one["predictions"], rel=1e-10)


def test_float32_by_default_and_float64_only_with_x64():
    jm = module("2-2-1", "sigmoid", "half_se", "sum")
    wide = jm.init_params(0)
    trained64 = dict(wide)
    jm.train(trained64, XOR_X, XOR_Y, 300, 1.0, log_every=100)
    jax.config.update("jax_enable_x64", False)
    narrow = jm.init_params(0)
    assert narrow["W1"].dtype == np.float32
    with pytest.raises(ValueError, match="x64"):
        jm.init_params(0, dtype="float64")
    jm.train(narrow, XOR_X, XOR_Y, 300, 1.0, log_every=100)
    assert narrow["W1"].dtype == np.float32
    for name in jm.PARAM_NAMES:
        np.testing.assert_allclose(narrow[name], trained64[name], rtol=1e-4, atol=1e-5)
    jax.config.update("jax_enable_x64", True)
    assert jm.init_params(0, dtype="float32")["W1"].dtype == np.float32
    assert wide["W1"].dtype == np.float64


def test_inputs_are_checked_like_the_numpy_backends(tmp_path):
    jm = module("2-2-1", "sigmoid", "half_se", "sum")
    params = jm.init_params(0)
    with pytest.raises(ValueError, match=r"Y must have shape \(1, 4\)"):
        jm.loss(params, XOR_X, XOR_Y.ravel())
    with pytest.raises(ValueError, match="NaN"):
        jm.forward(params, np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="devices must be 1 to"):
        jm.train(params, XOR_X, XOR_Y, 1, 0.1, devices=len(jax.devices()) + 1)
    with pytest.raises(ValueError, match="learning rate"):
        jm.train(params, XOR_X, XOR_Y, 1, float("nan"))
    jm.save_params(params, tmp_path / "w.npz")
    loaded = jm.load_params(tmp_path / "w.npz")
    for name in jm.PARAM_NAMES:
        np.testing.assert_array_equal(loaded[name], params[name])


def test_jax_modules_are_lint_clean_deterministic_and_checkable(tmp_path):
    from test_cli import run

    paths = []
    for index, network in enumerate(NETWORKS):
        paths.append(tmp_path / f"n{index}.py")
        symbp.generate(*network[:4], l2=network[4], output=paths[-1], backend="jax", optimizer="adam")
    paths.append(tmp_path / "xor.py")
    symbp.generate("2-2-1", output=paths[-1], backend="jax")
    for command in (["check", "--no-cache", "--isolated"], ["format", "--check", "--no-cache", "--isolated"]):
        result = subprocess.run([sys.executable, "-m", "ruff", *command, *map(str, paths)], capture_output=True,
                                text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    assert run("generate", "--check", str(paths[0]), str(paths[-1])).returncode == 0
    text = paths[-1].read_text()
    assert "--backend jax" in text.splitlines()[2]
    imports = {line.split()[1] for line in text.splitlines() if line.startswith(("import ", "from "))}
    assert imports == {"functools", "jax", "jax.numpy", "numpy", "jax.sharding"}
    # The NumPy backend's module never imports jax.
    assert "jax" not in symbp.generate("2-2-1")


def test_symbp_train_with_the_jax_backend(capsys):
    from symbp.cli import main

    # In this process (the command's own, but for the interpreter), so that JAX and SymPy load once.
    assert main(["train", "--backend", "jax", "--epochs", "2000", "--layers", "2-4-1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["solved"] and report["final_loss"] < 0.05
    assert main(["train", "--module", str(ROOT / "generated" / "xor_2_2_1.py"), "--backend", "jax"]) == 2
    assert capsys.readouterr().err.startswith("symbp: error: --module")


@pytest.mark.parametrize("dataset", ["digits", "breast_cancer"])
def test_symbp_train_with_the_jax_backend_on_each_data_set(dataset, capsys):
    """Each data set's default network, 3 epochs, with the JAX backend and with the NumPy one: the
    two draw their batches in different orders, so their accuracies agree only closely."""
    needs("sklearn", "the data sets need the datasets extra: pip install .[datasets]")
    from symbp.cli import main

    reports = {}
    for backend in ("jax", "numpy"):
        assert main(["train", "--backend", backend, "--dataset", dataset, "--epochs", "3", "--json"]) == 0
        reports[backend] = json.loads(capsys.readouterr().out)
    jax_report, numpy_report = reports["jax"], reports["numpy"]
    assert jax_report["dataset"] == dataset and jax_report["dtype"] == "float64"
    assert jax_report["test_accuracy"] > 0.9
    assert jax_report["test_accuracy"] == pytest.approx(numpy_report["test_accuracy"], abs=0.03)
    assert jax_report["final_loss"] == pytest.approx(numpy_report["final_loss"], rel=0.2)


def test_a_backend_without_its_package_is_one_line_naming_the_extra(monkeypatch, capsys):
    from symbp import cli

    def missing(source):
        raise ModuleNotFoundError("No module named 'jax'", name="jax")

    monkeypatch.setattr(cli, "module_for", missing)
    assert cli.main(["train", "--backend", "jax", "--epochs", "1"]) == 2
    assert capsys.readouterr().err == "symbp: error: this module's backend needs jax: pip install 'symbp[jax]'\n"
