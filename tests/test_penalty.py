"""The weight penalty --l2 λ: ½λ Σ‖W⁽ˡ⁾‖² added to the loss, differentiated by SymPy, proved, generated,
and equal to PyTorch (autograd of the penalised loss, and torch.optim.SGD on it)."""


import numpy as np
import pytest
from conftest import installed, requires_torch
from test_torch_oracle import targets, torch_loss

import symbp
from symbp.cli import main
from symbp.train import load_module, module_for

if installed("torch"):
    import torch

NETWORKS = [
    ("2-3-1", "tanh,sigmoid", "bce", "mean", "0.05"),
    ("3-4-3", "relu,softmax", "cross_entropy", "sum", "0.3"),
    ("2-2-2-2", "sigmoid,tanh,identity", "half_se", "sum", "1.5"),
]


def penalised(params, X, Y, activations, loss, reduction, l2):
    """PyTorch's loss plus ½λ Σ‖W‖² over the weights (no biases), as tensors with gradients."""
    tensors = {name: torch.tensor(value, dtype=torch.float64, requires_grad=True) for name, value in params.items()}
    total = torch_loss(tensors, X, Y, activations, loss, reduction)
    total = total + float(l2) / 2 * sum(torch.sum(t**2) for name, t in tensors.items() if name.startswith("W"))
    return tensors, total


def test_the_penalty_is_derived_and_proved():
    d = symbp.derive("2-2-1", "sigmoid", "half_se", l2="0.01")
    text = d.latex()
    assert r"\frac{\partial L}{\partial W^{(1)}} &= \lambda W^{(1)} + \delta^{(1)} X^{T}" in text
    assert r"\frac{\partial L}{\partial b^{(1)}} &= \sum_{\text{samples}} \delta^{(1)}" in text  # biases: no penalty
    assert r"(W^{(1)}_{rc})^{2}" in text
    report = d.verify(samples=2)
    assert report.ok and all(check.method == "symbolic" for check in report.checks), report.summary()


def test_the_proof_would_catch_a_missing_penalty_gradient():
    d = symbp.derive("2-2-1", "sigmoid", "half_se", l2="0.01")
    unpenalised = symbp.derive("2-2-1", "sigmoid", "half_se")
    d.gradients = unpenalised.gradients
    assert {check.param for check in d.verify().checks if not check.ok} == {"W1", "W2"}


@requires_torch
@pytest.mark.parametrize("network", NETWORKS, ids=[n[1] for n in NETWORKS])
def test_generated_gradients_and_steps_equal_pytorch(network, tmp_path):
    layers, activation, loss, reduction, l2 = network
    widths = [int(w) for w in layers.split("-")]
    rng = np.random.default_rng(len(layers))
    X = rng.standard_normal((widths[0], 6))
    Y = targets(rng, loss, widths[-1], 6)
    backends = ["numpy"] + (["numba"] if installed("numba") else [])
    for backend in backends:
        path = tmp_path / f"net_{backend}.py"
        symbp.generate(layers, activation, loss, reduction, output=path, backend=backend, l2=l2)
        module = load_module(path, f"penalised_{backend}")
        assert module.L2 == float(l2)
        params = module.init_params(3)
        tensors, total = penalised(params, X, Y, activation.split(","), loss, reduction, l2)
        total.backward()
        assert module.loss(params, X, Y) == pytest.approx(float(total.detach()), rel=1e-12)
        grads = module.gradients(params, X, Y)
        for name, tensor in tensors.items():
            np.testing.assert_allclose(grads[name], tensor.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
        # 20 steps of train (in place, or the numba kernel) against torch.optim.SGD on the penalised loss
        tensors = {name: torch.tensor(value, dtype=torch.float64, requires_grad=True)
                   for name, value in params.items()}
        optimizer = torch.optim.SGD(tensors.values(), lr=0.05)
        for _ in range(20):
            optimizer.zero_grad()
            total = torch_loss(tensors, X, Y, activation.split(","), loss, reduction)
            total = total + float(l2) / 2 * sum(torch.sum(t**2) for n, t in tensors.items() if n.startswith("W"))
            total.backward()
            optimizer.step()
        module.train(params, X, Y, 20, 0.05)
        for name, tensor in tensors.items():
            np.testing.assert_allclose(params[name], tensor.detach().numpy(), rtol=1e-10, atol=1e-12,
                                       err_msg=f"{backend} {name}")


def test_a_penalised_module_is_checkable_and_the_option_round_trips(tmp_path, capsys):
    path = tmp_path / "net.py"
    assert main(["generate", "--layers", "2-3-1", "--l2", "0.010", "-o", str(path)]) == 0
    assert "--l2 0.01" in path.read_text().splitlines()[2]
    assert main(["generate", "--check", str(path)]) == 0
    module = module_for(path.read_text())
    assert module.WEIGHTS == ("W1", "W2")


@pytest.mark.parametrize("value", ["-0.1", "1e-3", "abc", "0.0000000000001"])
def test_bad_penalties_are_refused(value, capsys):
    assert main(["derive", "--layers", "2-1", "--l2", value]) == 2
    assert capsys.readouterr().err.startswith("symbp: error: bad --l2")
