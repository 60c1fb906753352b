"""An op defined here, outside the package, gets all that symbp's own ops get, with no change to symbp:
its derivation in LaTeX, the proof against sympy.diff, and NumPy and numba modules equal to PyTorch."""

import importlib.util
from dataclasses import dataclass

import numpy as np
import pytest
import sympy as sp
from conftest import installed, requires_torch

import symbp
from symbp import ops
from symbp.ops import Op, register
from symbp.train import module_for


@dataclass(frozen=True)
class ScaleShift(Op):
    """u = c ⊙ x + d: a scale and a shift per unit (an elementwise affine map)."""

    def entry(self, i: sp.Symbol) -> sp.Expr:
        (x,), (c, d) = self.inputs, self.params
        return self.at(c, i) * self.at(x, i) + self.at(d, i)


def scale_shift(x, layer):
    return ScaleShift(ops.value("u", layer, x.rows), (x,),
                      (ops.param("c", layer, x.rows, role="scale"), ops.param("d", layer, x.rows, role="shift")),
                      "scale and shift")


register("scale_shift", scale_shift, init={"scale": "ones", "shift": "zeros"})

NETWORK = {"layers": "3-4-2", "activation": "tanh,sigmoid", "loss": "half_se", "ops": ["scale_shift:1"]}


def test_the_derivation_shows_the_new_op_and_what_the_chain_rule_makes_of_it():
    d = symbp.derive(**NETWORK)
    text = d.latex()
    assert r"u^{(1)} &= c^{(1)} z^{(1)} + d^{(1)}" in text
    assert r"a^{(1)} &= \tanh(u^{(1)})" in text
    # ∂L/∂u⁽¹⁾ is read three times by the op, so it is named; δ⁽¹⁾ comes out of the op's backward map.
    assert (r"\frac{\partial L}{\partial u^{(1)}} &= (W^{(2)})^{T} \delta^{(2)} \odot "
            r"\tanh'(u^{(1)})") in text
    assert r"\delta^{(1)} &= \frac{\partial L}{\partial u^{(1)}} \odot c^{(1)}" in text
    assert (r"\frac{\partial L}{\partial c^{(1)}} &= \sum_{\text{samples}} \frac{\partial L}{\partial u^{(1)}} "
            r"\odot z^{(1)}") in text
    assert r"\frac{\partial L}{\partial d^{(1)}} &= \sum_{\text{samples}} \frac{\partial L}{\partial u^{(1)}}" in text
    assert "--op scale_shift:1" in d.spec.options()


def test_the_new_op_is_proved_against_sympy_diff_of_the_expanded_loss():
    report = symbp.derive("2-2-2", "tanh,sigmoid", "half_se", ops=["scale_shift:1"]).verify()
    assert report.ok, report.summary()
    assert {check.param for check in report.checks} == {"W1", "b1", "c1", "d1", "W2", "b2"}
    assert len(report.checks) == 4 + 2 + 2 + 2 + 4 + 2


def test_a_wrong_backward_map_for_the_new_op_is_caught_by_the_proof():
    d = symbp.derive("2-2-2", "tanh,sigmoid", "half_se", ops=["scale_shift:1"])
    index = next(k for k, e in enumerate(d.gradients) if e.lhs.name == "dc1")
    wrong = d.gradients[index]
    d.gradients = (*d.gradients[:index], type(wrong)(wrong.lhs, 2 * wrong.rhs), *d.gradients[index + 1:])
    report = d.verify()
    assert {check.param for check in report.checks if not check.ok} == {"c1"}


if installed("torch"):
    import torch


def torch_loss(params: dict, X: np.ndarray, Y: np.ndarray):
    """The same network written in PyTorch: z = W X + b, u = c z + d, tanh, W X + b, sigmoid, ½Σ(a − y)²."""
    t = {name: torch.tensor(value, dtype=torch.float64, requires_grad=True) for name, value in params.items()}
    x, y = torch.tensor(X), torch.tensor(Y)
    u = t["c1"] * (t["W1"] @ x + t["b1"]) + t["d1"]
    a2 = torch.sigmoid(t["W2"] @ torch.tanh(u) + t["b2"])
    loss = 0.5 * ((a2 - y) ** 2).sum()
    loss.backward()
    return float(loss.detach()), {name: tensor.grad.numpy() for name, tensor in t.items()}


def data(seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((3, 7)), rng.uniform(0, 1, (2, 7)), rng


@requires_torch
def test_generated_numpy_gradients_and_steps_equal_pytorch():
    module = module_for(symbp.generate(**NETWORK))
    X, Y, _ = data()
    params = module.init_params(1)
    assert set(params) == {"W1", "b1", "c1", "d1", "W2", "b2"}
    expected_loss, expected = torch_loss(params, X, Y)
    assert module.loss(params, X, Y) == pytest.approx(expected_loss, rel=1e-12)
    grads = module.gradients(params, X, Y)
    for name, value in expected.items():
        np.testing.assert_allclose(grads[name], value, rtol=1e-10, atol=1e-12, err_msg=name)
    # train (the in-place step) makes one gradient-descent step with PyTorch's gradients.
    start = {name: value.copy() for name, value in params.items()}
    module.train(params, X, Y, epochs=1, learning_rate=0.1)
    for name, value in expected.items():
        np.testing.assert_allclose(params[name], start[name] - 0.1 * value, rtol=1e-10, atol=1e-12, err_msg=name)


def test_fan_in_start_follows_the_ops_registration():
    module = module_for(symbp.generate(**NETWORK))
    params = module.init_params(0, init="fan_in")
    assert np.all(params["c1"] == 1.0) and np.all(params["d1"] == 0.0) and np.all(params["b1"] == 0.0)


@requires_torch
@pytest.mark.skipif(not installed("numba"), reason="the numba backend needs numba (symbp[fast])")
def test_generated_numba_steps_equal_pytorch(tmp_path):
    path = tmp_path / "scale_shift_numba.py"
    symbp.generate(**NETWORK, backend="numba", output=path)
    spec = importlib.util.spec_from_file_location("scale_shift_numba", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    X, Y, _ = data(3)
    params = module.init_params(2)
    _, expected = torch_loss(params, X, Y)
    start = {name: value.copy() for name, value in params.items()}
    module.train(params, X, Y, epochs=1, learning_rate=0.05)
    for name, value in expected.items():
        np.testing.assert_allclose(params[name], start[name] - 0.05 * value, rtol=1e-10, atol=1e-12, err_msg=name)
