"""The numba backend: the same API, training loops numba compiles, results equal to the NumPy backend's."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import needs

import symbp
from symbp.train import XOR_X, XOR_Y, load_module

numba = needs("numba", "the numba backend needs the fast extra: pip install .[fast]")

NETWORKS = [
    ("2-2-1", "sigmoid", "half_se", "sum"),
    ("4-5-5-3", "tanh,tanh,softmax", "cross_entropy", "mean"),  # _tanh called twice in one kernel
    ("3-4-3", "relu,softmax", "half_se", "sum"),
    ("3-4-2", "leaky_relu(0.1),softmax", "half_se", "mean"),
    ("3-4-4-2", "z/(1+exp(-z)),softplus,sigmoid", "bce", "sum"),
    ("2-3-2", "sqrt(z**2+1)-1+sin(z)/(1+z**2),identity", "half_se", "mean"),
    # W1 and W2 have 256 or more entries, so their products go to BLAS; W3's stay loops
    ("16-24-16-3", "tanh,relu,softmax", "cross_entropy", "mean"),
    # the same, with z⁽²⁾ read again by swish' (its bias stays a pass of its own)
    ("16-24-16-3", "sigmoid,z/(1+exp(-z)),softmax", "cross_entropy", "sum"),
]


def test_after_a_blas_product_the_next_formula_adds_the_bias_where_nothing_else_reads_z():
    """tanh(z⁽¹⁾) and relu(z⁽²⁾) read z and nothing reads it after (their derivatives are
    written in a): b is added in their loops. swish'(z⁽²⁾) reads z⁽²⁾ again, so z⁽²⁾ gets b first."""
    source = symbp.generate("16-24-16-3", "tanh,relu,softmax", "cross_entropy", backend="numba")
    assert "a1[i, k] = _tanh(shift + z1[i, k])" in source and "z1[i, k] += shift" not in source
    assert "a2[i, k] = _relu_jit(shift + z2[i, k], real)" in source
    assert "# b1 is added in the next step's loop, as it reads z1" in source
    swish = symbp.generate("16-24-16-3", "sigmoid,z/(1+exp(-z)),softmax", "cross_entropy", backend="numba")
    assert "_sigmoid_jit(shift + z1[i, k], real)" in swish and "z2[i, k] += shift" in swish


def both_backends(network, tmp_path):
    name = "net_" + str(abs(hash(network)))
    paths = {}
    for backend in ("numpy", "numba"):
        paths[backend] = tmp_path / f"{name}_{backend}.py"
        symbp.generate(*network, output=paths[backend], backend=backend)
    return {backend: load_module(path, f"{path.stem}") for backend, path in paths.items()}


# numba's check of its own IR warned when _exp/_tanh were inlined at more than one call site
@pytest.mark.filterwarnings("error::numba.core.errors.NumbaIRAssumptionWarning")
@pytest.mark.parametrize("network", NETWORKS, ids=lambda n: f"{n[0]}-{n[1]}-{n[2]}-{n[3]}")
def test_numba_training_equals_numpy_training(network, tmp_path):
    modules = both_backends(network, tmp_path)
    rng = np.random.default_rng(5)
    layers = modules["numpy"].LAYERS
    X = rng.standard_normal((layers[0], 7))
    if network[2] == "half_se":
        Y = rng.standard_normal((layers[-1], 7))
    else:
        Y = rng.uniform(0.05, 1.0, (layers[-1], 7))
        Y /= Y.sum(axis=0, keepdims=True) if network[2] == "cross_entropy" else 1
    params = {backend: module.init_params(3) for backend, module in modules.items()}
    # A small rate: at larger ones some of these networks are chaotic, and 1e-16 apart becomes 1e-2 apart.
    logged = {b: modules[b].train(params[b], X, Y, epochs=300, learning_rate=0.01, log_every=100) for b in params}
    assert logged["numba"] == pytest.approx(logged["numpy"], rel=1e-12)
    for name in params["numpy"]:
        np.testing.assert_allclose(params["numba"][name], params["numpy"][name], rtol=1e-12, atol=1e-13)
    # The rest of the API is the NumPy backend's.
    np.testing.assert_allclose(modules["numba"].forward(params["numba"], X), modules["numpy"].forward(params["numpy"], X),
                               rtol=1e-12)


def test_wide_products_use_blas_and_narrow_ones_loops():
    source = symbp.generate("16-24-16-3", "tanh,relu,softmax", "cross_entropy", "mean", backend="numba")
    kernel = source[source.index("def _steps("):source.index("def init_params(")]
    assert "np.dot(W1, X, z1)" in kernel and "np.dot(W2.T, delta2, delta1)" in kernel
    assert "np.dot(delta1, X.T, dW1)" in kernel
    assert "np.dot(W3" not in kernel and "W3[i, j] -= learning_rate * total" in kernel


def test_numba_xor_matches_numpy_over_10000_epochs(tmp_path):
    modules = both_backends(("2-2-1", "sigmoid", "half_se", "sum"), tmp_path)
    params = {b: m.init_params(0) for b, m in modules.items()}
    for b, module in modules.items():
        module.train(params[b], XOR_X, XOR_Y, epochs=10_000, learning_rate=0.1)
    for name in params["numpy"]:
        np.testing.assert_allclose(params["numba"][name], params["numpy"][name], rtol=1e-12, atol=1e-12)


def test_numba_modules_are_lint_clean_and_checkable(tmp_path):
    paths = []
    for index, network in enumerate(NETWORKS):
        paths.append(tmp_path / f"n{index}.py")
        symbp.generate(*network, output=paths[-1], backend="numba")
    for command in (["check", "--no-cache", "--isolated"], ["format", "--check", "--no-cache", "--isolated"]):
        result = subprocess.run([sys.executable, "-m", "ruff", *command, *map(str, paths)], capture_output=True,
                                text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    from test_cli import run

    assert run("generate", "--check", *map(str, paths)).returncode == 0
    assert "--backend numba" in paths[0].read_text().splitlines()[2]


def test_numba_mini_batches_equal_numpy_mini_batches(tmp_path):
    modules = both_backends(("4-5-3", "tanh,softmax", "cross_entropy", "mean"), tmp_path)
    rng = np.random.default_rng(2)
    X = rng.standard_normal((4, 11))
    Y = np.eye(3)[:, rng.integers(0, 3, 11)]
    params = {backend: module.init_params(1, "fan_in") for backend, module in modules.items()}
    logged = {b: modules[b].train(params[b], X, Y, 20, 0.2, log_every=5, batch_size=4, rng=3) for b in params}
    assert logged["numba"] == pytest.approx(logged["numpy"], rel=1e-12)
    for name in params["numpy"]:
        np.testing.assert_allclose(params["numba"][name], params["numpy"][name], rtol=1e-12, atol=1e-13)


def test_above_the_loop_batch_the_numba_module_runs_the_numpy_step(tmp_path):
    """Wide batches go to the in-place NumPy step (the same code as the NumPy module's, so the
    same numbers); the compiled loops, forced, agree to 1e-12."""
    modules = both_backends(("5-30-3", "tanh,softmax", "cross_entropy", "mean"), tmp_path)
    numpy_module, numba_module = modules["numpy"], modules["numba"]
    rng = np.random.default_rng(4)
    X, Y = rng.standard_normal((5, 300)), np.eye(3)[rng.integers(0, 3, 300)].T
    assert 150 > numba_module.LOOP_BATCH and 30 < numba_module.LOOP_WIDTH  # batches of 150 take the NumPy step
    expected, chosen, looped = (module.init_params(2) for module in (numpy_module, numba_module, numba_module))
    numpy_module.train(expected, X, Y, 4, 0.3, batch_size=150, rng=1)
    numba_module.train(chosen, X, Y, 4, 0.3, batch_size=150, rng=1)
    numba_module.train(looped, X, Y, 4, 0.3, batch_size=150, rng=1, loops=True)
    for name in expected:
        np.testing.assert_array_equal(chosen[name], expected[name])
        np.testing.assert_allclose(looped[name], expected[name], rtol=1e-12, atol=1e-14)


def ulps(got: np.ndarray, expected: np.ndarray) -> float:
    """The largest distance from got to expected, in units in the last place of expected."""
    return float(np.max(np.abs(got.astype(np.float64) - expected) / np.spacing(np.abs(expected))))


@pytest.mark.parametrize(("dtype", "low", "high", "tiny", "overflow", "zero"),
                         [(np.float64, -708.3, 709.7, -320, 709.8, -708.4),
                          (np.float32, -103.9, 88.7, -45, 88.73, -104.1)])
def test_the_kernels_own_exp_and_tanh_are_within_4_ulp_of_numpys(tmp_path, dtype, low, high, tiny, overflow, zero):
    """The kernel's exp and tanh are arithmetic (libm's are calls, which stop LLVM from
    vectorizing a loop), in float64 and in float32: they must agree with NumPy's in the same
    dtype to a few ulp over the whole range (float32's subnormal results included) and keep
    NaN, ±inf and ±0. (That they vectorize is checked at level 3 below.)"""
    path = tmp_path / "fast.py"
    symbp.generate("3-4-2", "tanh,softmax", "cross_entropy", output=path, backend="numba")
    module = load_module(path, "fast_functions")

    @numba.njit(**{name: value for name, value in module.COMPILE.items() if name != "cache"})  # as the kernel
    def both(x, e, t):
        for i in range(x.size):
            e[i] = module._exp(x[i])
            t[i] = module._tanh(x[i])

    x = np.concatenate([np.linspace(low, high, 1_000_001), np.logspace(tiny, np.log10(high), 100_000),
                        -np.logspace(tiny, np.log10(-low), 100_000)]).astype(dtype)
    e, t = np.empty_like(x), np.empty_like(x)
    both(x, e, t)
    assert np.all(np.isfinite(np.exp(x)))
    assert max(ulps(e, np.exp(x)), ulps(t, np.tanh(x))) <= 4
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, overflow, zero, 800.0, -800.0], dtype)
    e, t = np.empty_like(specials), np.empty_like(specials)
    both(specials, e, t)
    np.testing.assert_array_equal(e, [np.nan, np.inf, 0.0, 1.0, 1.0, np.inf, 0.0, np.inf, 0.0])
    np.testing.assert_array_equal(t, [np.nan, 1.0, -1.0, 0.0, -0.0, 1.0, -1.0, 1.0, -1.0])
    assert np.signbit(t[4]) and not np.signbit(t[3])


OPTIMIZED = textwrap.dedent("""
    import json, re, sys
    import numba
    import numpy as np
    import symbp
    from symbp.train import load_module

    assert numba.config.OPT == 3
    result = {}
    paths = {}
    for backend in ("numpy", "numba"):
        paths[backend] = sys.argv[1] + f"/digits_{backend}.py"
        symbp.generate("64-32-10", "tanh,softmax", "cross_entropy", "mean", output=paths[backend],
                       backend=backend)
    numpy_module, numba_module = (load_module(paths[b], "optimized_" + b) for b in ("numpy", "numba"))
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((64, 300)), np.eye(10)[:, rng.integers(0, 10, 300)]
    expected, got = numpy_module.init_params(1, "fan_in"), numba_module.init_params(1, "fan_in")
    numpy_module.train(expected, X, Y, 3, 0.1, batch_size=32, rng=2)
    numba_module.train(got, X, Y, 3, 0.1, batch_size=32, rng=2, loops=True)
    result["difference"] = max(float(np.max(np.abs(got[n] - expected[n]) / (1e-12 + np.abs(expected[n]))))
                               for n in expected)

    @numba.njit(**{name: value for name, value in numba_module.COMPILE.items() if name != "cache"})
    def both(x, e, t):
        for i in range(x.size):
            e[i] = numba_module._exp(x[i])
            t[i] = numba_module._tanh(x[i])

    # at this level LLVM fuses multiply-adds, as in the kernel: within 4 ulp of NumPy still
    for dtype, low, high in ((np.float64, -708.3, 709.7), (np.float32, -103.9, 88.7)):
        x = np.concatenate([np.linspace(low, high, 1_000_001), np.linspace(-5, 5, 100_001)]).astype(dtype)
        e, t = np.empty_like(x), np.empty_like(x)
        both(x, e, t)
        for name, got, expected in (("exp", e, np.exp(x)), ("tanh", t, np.tanh(x))):
            spacing = np.spacing(np.abs(expected))
            result[f"{name} ulps, {dtype.__name__}"] = float(np.max(np.abs(got.astype(np.float64) - expected) / spacing))
    # packed multiplies (mulpd, vmulpd for float64, mulps, vmulps for float32; scalar code has
    # mulsd, mulss): the loop was vectorized, in float32 without widening to float64
    packed = re.compile(r"\\bv?mulpd\\b")
    compiled = both.inspect_asm()
    result["vectorized"] = bool(packed.search(compiled[both.signatures[0]]))
    result["vectorized in float32"] = bool(re.search(r"\\bv?mulps\\b", compiled[both.signatures[1]]))
    result["float32 widened"] = bool(re.search(r"\\bv?cvtps2pd\\b", compiled[both.signatures[1]]))
    result["kernel vectorized"] = bool(packed.search("\\n".join(numba_module._steps.inspect_asm().values())))
    # a float32 kernel: its vectorized loops stay in float32 (no packed conversions to and from float64)
    single = numba_module.init_params(1, "fan_in", "float32")
    numba_module.train(single, X.astype(np.float32), Y.astype(np.float32), 1, 0.1, batch_size=32, rng=2, loops=True)
    float32_kernel = [asm for signature, asm in numba_module._steps.inspect_asm().items()
                      if str(signature[0].dtype) == "float32"]
    result["float32 kernel widened"] = [bool(re.search(r"\\bv?cvt(ps2pd|pd2ps)\\b", asm)) for asm in float32_kernel]
    print(json.dumps(result))
""")


def test_at_numbas_default_optimization_the_loops_vectorize_and_train_as_numpy(tmp_path):
    """The suite compiles at level 0 (conftest.py); here, in a child process at level 3, the loop
    over _exp and _tanh compiles to packed instructions, float64's and float32's (float32 not
    widened to float64), and a digits-sized kernel trains mini-batches to the NumPy module's
    weights."""
    env = {**os.environ, "NUMBA_OPT": "3", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-c", OPTIMIZED, str(tmp_path)], capture_output=True, text=True,
                          env=env, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["vectorized"] and result["kernel vectorized"], result
    assert result["vectorized in float32"] and not result["float32 widened"], result
    assert result["float32 kernel widened"] == [False], result
    assert result["difference"] < 1e-12, result
    assert max(value for name, value in result.items() if "ulps" in name) <= 4, result


def test_a_module_imported_by_name_then_trained_from_the_command_line_reuses_its_cache(tmp_path):
    """numba's on-disk cache names the module it compiled: the file imported as ``net``, then
    given to ``symbp train --module`` from another folder, must load that cache, not fail on it."""
    from conftest import run_main

    path = tmp_path / "net.py"
    symbp.generate("2-2-1", "sigmoid", "half_se", output=path, backend="numba")
    script = "import net, numpy as np; net.train(net.init_params(0), np.eye(2), np.ones((1, 2)), 2, 0.1)"
    level_3 = {k: v for k, v in os.environ.items() if k != "NUMBA_OPT"}  # level 0 does not cache
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=level_3, check=True, timeout=120)
    cached = sorted(p.name.split("-")[0] for p in (tmp_path / "__pycache__").glob("*.nbi"))
    assert cached == ["net._sigmoid_jit", "net._steps"]
    result = run_main("train", "--module", str(path), "--epochs", "200", cwd=tmp_path.parent)
    assert result.returncode == 0, result.stderr
    assert "XOR" in result.stdout


def test_the_kernels_constants_are_in_the_datas_dtype():
    """numba types a Python number as float64, which would widen a float32 kernel's arithmetic:
    constants are written real(c), real being the data's scalar type; whole powers and
    comparisons stay plain (a ** 2 keeps a's type; a comparison gives a bool)."""
    import sympy as sp

    from symbp.derive import m
    from symbp.loops import ScalarPrinter

    z = sp.Symbol("z")
    printer = ScalarPrinter()
    assert printer.doprint(1 - z**2) == "real(1) - z**2"
    assert printer.doprint(z / m) == "z / real(m)"
    assert printer.doprint(sp.Piecewise((1, z > 0), (sp.Rational(1, 10), True))) == "real(1) if z > 0 else real(1 / 10)"
    assert printer.doprint(1 / sp.sqrt(z)) == "real(1) / np.sqrt(z)"
    source = symbp.generate("4-5-3", "sigmoid,softmax", "cross_entropy", "mean", backend="numba")
    assert "    real = X_data.dtype.type\n" in source and "_sigmoid_jit(z1[i, k], real)" in source
    assert "def _sigmoid_jit(z: float, real: type) -> float:" in source
    assert "/ real(m)" in source


def test_gradients_blas_computes_share_arrays_in_the_kernel_and_train_as_numpy(tmp_path):
    """400 × 400 weights: their gradients go to BLAS, and with each update right after its
    gradient (passes.descend_early) the three share one array, as do the three ∂L/∂b; the last
    layer's small bias stays updated as its gradient is summed. Mini-batches of 16 with a last
    one of 8 (the kernel's per-sample arrays made again) train to the NumPy module's weights."""
    network = ("400-400-400-400-3", "tanh,relu,sigmoid,softmax", "cross_entropy", "mean")
    modules = both_backends(network, tmp_path)
    source = (tmp_path / next(p.name for p in tmp_path.glob("*_numba.py"))).read_text(encoding="utf-8")
    kernel = source[source.index("def _steps("):source.index("def init_params(")]
    assert "    dW2 = dW3\n    dW1 = dW3\n" in kernel and "    db2 = db3\n    db1 = db3\n" in kernel
    assert "# dW3, dW2 and dW1 share one array" in kernel
    assert "b4[i, 0] -= learning_rate * total" in kernel  # summed and applied at once, as before
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((400, 40)), np.eye(3)[:, rng.integers(0, 3, 40)]
    params = {backend: module.init_params(1, "fan_in") for backend, module in modules.items()}
    for backend, module in modules.items():
        module.train(params[backend], X, Y, 3, 0.05, log_every=None, batch_size=16, rng=3)
    for name in params["numpy"]:
        np.testing.assert_allclose(params["numba"][name], params["numpy"][name], rtol=1e-12, atol=1e-13)
