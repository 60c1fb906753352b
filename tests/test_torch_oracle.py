"""Generated gradients against an independent autograd: PyTorch, float64, CPU (test-only)."""

import numpy as np
import pytest

import symbp
from symbp.train import module_for

torch = pytest.importorskip("torch", reason="PyTorch is the test-only oracle; CI installs torch==2.13.0")

TORCH_ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "softplus": lambda z: torch.logaddexp(torch.zeros_like(z), z),
    "identity": lambda z: z,
}

CASES = [
    ("2-2-1", "sigmoid", "half_se", "sum"),
    ("3-4-2", "tanh", "half_se", "mean"),
    ("2-3-1", "relu,sigmoid", "bce", "sum"),
    ("4-5-3-2", "leaky_relu(0.1),softplus,sigmoid", "bce", "mean"),
    ("4-1", "identity", "half_se", "sum"),
    ("3-3-3-3", "softplus,tanh,identity", "half_se", "sum"),
]


def torch_activation(name):
    if name.startswith("leaky_relu"):
        slope = float(name[len("leaky_relu("):-1]) if "(" in name else 0.01
        return lambda z: torch.nn.functional.leaky_relu(z, slope)
    return TORCH_ACTIVATIONS[name]


def torch_loss(params, X, Y, activations, loss, reduction):
    a = torch.tensor(X)
    depth = len(activations)
    for index in range(1, depth + 1):
        a = torch_activation(activations[index - 1])(params[f"W{index}"] @ a + params[f"b{index}"])
    y = torch.tensor(Y)
    if loss == "half_se":
        total = 0.5 * torch.sum((a - y) ** 2)
    else:
        total = -torch.sum(y * torch.log(a) + (1 - y) * torch.log(1 - a))
    return total / X.shape[1] if reduction == "mean" else total


@pytest.mark.parametrize("layers, activation, loss, reduction", CASES)
def test_gradients_equal_torch_autograd(layers, activation, loss, reduction):
    module = module_for(symbp.generate(layers, activation, loss, reduction))
    rng = np.random.default_rng(len(layers) + len(activation))
    samples = 5
    params = module.init_params(11)
    X = rng.standard_normal((module.LAYERS[0], samples))
    Y = rng.uniform(0.05, 0.95, (module.LAYERS[-1], samples)) if loss == "bce" else \
        rng.standard_normal((module.LAYERS[-1], samples))
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    expected = torch_loss(tparams, X, Y, module.ACTIVATIONS, loss, reduction)
    expected.backward()
    assert module.loss(params, X, Y) == pytest.approx(expected.item(), rel=1e-10)
    grads = module.gradients(params, X, Y)
    for name, tensor in tparams.items():
        reference = tensor.grad.numpy()
        assert np.abs(reference).max() > 0
        np.testing.assert_allclose(grads[name], reference, rtol=1e-10, atol=1e-12 * np.abs(reference).max())
