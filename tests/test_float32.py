"""float32 end to end: every backend computes in the parameters' dtype and updates the caller's arrays."""


import numpy as np
import pytest
from conftest import installed, needs

import symbp
from symbp.datasets import load
from symbp.train import fit, module_for

NETWORK = ("4-6-3", "tanh,softmax", "cross_entropy", "mean")


def _data(samples=40):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((4, samples))
    Y = np.eye(3)[rng.integers(0, 3, samples)].T
    return X, Y


def _backends():
    return ["numpy", "numba"] if installed("numba") else ["numpy"]


@pytest.mark.parametrize(("backend", "optimizer"), [(b, o) for b, o in (("numpy", "adam"), ("numpy", "sgd"),
                                                                        ("numba", "adam")) if b in _backends()])
def test_float32_training_stays_float32_in_the_callers_arrays(backend, optimizer):
    module = module_for(symbp.generate(*NETWORK, backend=backend, optimizer=optimizer))
    X, Y = _data()
    params = module.init_params(0, "fan_in", "float32")
    single = {name: value for name, value in params.items()}
    double = module.init_params(0, "fan_in")
    assert all(value.dtype == np.float32 for value in params.values())
    np.testing.assert_allclose(params["W1"], double["W1"], rtol=1e-7)  # the same start, rounded
    kept = {"state": module.init_state(params)} if optimizer != "sgd" else {}
    before = {name: value.copy() for name, value in params.items()}
    module.train(params, X, Y, 30, 0.01, batch_size=8, rng=0, **kept)
    for name, value in params.items():
        assert value is single[name] and value.dtype == np.float32, name  # updated in place, not replaced
        assert not np.array_equal(value, before[name]), name
    if kept:
        assert all(value.dtype == np.float32 for value in kept["state"].values())
    assert module.forward(params, X).dtype == np.float32
    if backend == "numba":  # the kernel took the learning rate in float32 too (a float64 one widens every update)
        assert [str(signature[-1]) for signature in module._steps.signatures] == ["float32"]
    grads32 = module.gradients(params, X, Y)
    grads64 = module.gradients({k: v.astype(np.float64) for k, v in params.items()}, X, Y)
    for name in grads32:
        assert grads32[name].dtype == np.float32
        np.testing.assert_allclose(grads32[name], grads64[name], rtol=2e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("backend", _backends())
def test_float32_and_float64_training_reach_the_same_accuracy_on_digits(backend):
    """numba's batches of 32 run its loops, whose exp and tanh have float32 forms of their own."""
    needs("sklearn", "digits needs the datasets extra")
    module = module_for(symbp.generate("64-32-10", "tanh,softmax", "cross_entropy", "mean", backend=backend))
    data = load("digits")
    runs = {dtype: fit(module, data, 10, 0.1, 32, seed=0, init="fan_in", dtype=dtype) for dtype in ("float64", "float32")}
    assert runs["float32"].params["W1"].dtype == np.float32
    assert abs(runs["float32"].test_accuracy - runs["float64"].test_accuracy) <= 0.01
    assert runs["float32"].test_accuracy > 0.9


def test_a_state_of_another_dtype_is_refused():
    module = module_for(symbp.generate(*NETWORK, optimizer="adam"))
    X, Y = _data()
    params = module.init_params(0, dtype="float32")
    with pytest.raises(ValueError, match="float32 array like the parameters"):
        module.train_step(params, X, Y, 0.01, module.init_state(module.init_params(0)))


def test_train_takes_dtype_on_the_command_line():
    import json

    from conftest import run_main as run
    result = run("train", "--dataset", "xor", "--dtype", "float32", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["dtype"] == "float32" and report["train_accuracy"] == 1.0
