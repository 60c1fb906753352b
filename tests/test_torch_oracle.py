"""Generated gradients against an independent autograd: PyTorch, float64, CPU (test-only)."""

import numpy as np
import pytest
from conftest import installed, requires_torch
from networks import ELEMENTWISE, random_network, targets

import symbp
from symbp.train import module_for

if installed("torch"):
    import torch

TORCH_ACTIVATIONS = {
    "sigmoid": lambda z: torch.sigmoid(z),
    "tanh": lambda z: torch.tanh(z),
    "relu": lambda z: torch.relu(z),
    "softplus": lambda z: torch.logaddexp(torch.zeros_like(z), z),
    "identity": lambda z: z,
    "softmax": lambda z: torch.softmax(z, dim=0),
    # formulas in z, as symbp prints them, with independent torch twins
    "z/(1 + exp(-z))": lambda z: z * torch.sigmoid(z),
    "z*tanh(log(exp(z) + 1))": lambda z: z * torch.tanh(torch.nn.functional.softplus(z)),
    "atan(z)": lambda z: torch.atan(z),
}
CASES = [
    ("4-6-3", "tanh,softmax", "cross_entropy", "mean"),
    ("3-4-3", "z/(1 + exp(-z)),softmax", "half_se", "sum"),
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
    return output_loss(a, Y, loss, reduction)


def output_loss(a, Y, loss, reduction):
    """The loss of outputs ``a`` (a torch tensor) for targets Y, summed or averaged over the samples."""
    y = torch.tensor(Y)
    if loss == "half_se":
        total = 0.5 * torch.sum((a - y) ** 2)
    elif loss == "bce":
        total = -torch.sum(y * torch.log(a) + (1 - y) * torch.log(1 - a))
    else:
        total = -torch.sum(y * torch.log(a))
    return total / Y.shape[1] if reduction == "mean" else total


def check_against_torch(layers, activation, loss, reduction, seed):
    module = module_for(symbp.generate(layers, activation, loss, reduction))
    rng = np.random.default_rng(seed)
    samples = 5
    params = {k: 0.8 * v for k, v in module.init_params(seed).items()}
    X = rng.standard_normal((module.LAYERS[0], samples))
    Y = targets(rng, loss, module.LAYERS[-1], samples)
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    expected = torch_loss(tparams, X, Y, module.ACTIVATIONS, loss, reduction)
    expected.backward()
    assert module.loss(params, X, Y) == pytest.approx(expected.item(), rel=1e-10)
    grads = module.gradients(params, X, Y)
    for name, tensor in tparams.items():
        reference = tensor.grad.numpy()
        scale = np.abs(reference).max()
        np.testing.assert_allclose(grads[name], reference, rtol=1e-10, atol=1e-12 * max(scale, 1e-300))
    return max(np.abs(t.grad.numpy()).max() for t in tparams.values())


@requires_torch
@pytest.mark.parametrize("layers, activation, loss, reduction", CASES)
def test_gradients_equal_torch_autograd(layers, activation, loss, reduction):
    assert check_against_torch(layers, activation, loss, reduction, seed=len(layers) + len(activation)) > 0


@requires_torch
@pytest.mark.parametrize("seed", range(30))
def test_random_networks_equal_torch_autograd(seed):
    layers, activation, loss, reduction = random_network(seed)
    largest = check_against_torch(layers, activation, loss, reduction, seed)
    # All-zero gradients happen only when a relu output layer is dead for every sample.
    assert largest > 0 or activation.endswith(",relu") or activation == "relu", (layers, activation, loss)


def test_random_networks_cover_every_activation_and_loss():
    networks = [random_network(seed) for seed in range(30)]
    used = {name for _, activation, _, _ in networks for name in activation.split(",")}
    assert used >= {*ELEMENTWISE, "softmax"}
    assert {loss for *_, loss, _ in networks} == {"half_se", "bce", "cross_entropy"}
    assert {reduction for *_, reduction in networks} == {"sum", "mean"}


IN_PLACE_NETWORKS = [*CASES, *(random_network(seed) for seed in range(30))]


@pytest.mark.parametrize("network", IN_PLACE_NETWORKS, ids=lambda n: " ".join(n))
def test_the_in_place_training_step_equals_train_step(network):
    """train() runs _step, the derivation lowered to NumPy calls with out=; it must be train_step()."""
    layers, activation, loss, reduction = network
    module = module_for(symbp.generate(layers, activation, loss, reduction))
    seed = len(layers) + len(activation)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((module.LAYERS[0], 6))
    Y = targets(rng, loss, module.LAYERS[-1], 6)
    looped, stepped = module.init_params(seed), module.init_params(seed)
    logged = module.train(looped, X, Y, epochs=5, learning_rate=0.05, log_every=2)
    losses = []
    for epoch in range(5):
        if epoch % 2 == 0:
            losses.append(module.loss(stepped, X, Y))
        module.train_step(stepped, X, Y, 0.05)
    assert logged == pytest.approx(losses, rel=1e-12)
    for name in module.PARAM_NAMES:
        np.testing.assert_allclose(looped[name], stepped[name], rtol=1e-12, atol=1e-14)
    initial = module.init_params(seed)
    moved = any(not np.array_equal(looped[name], initial[name]) for name in module.PARAM_NAMES)
    assert moved or activation.split(",")[-1] == "relu"  # a dead relu output passes no gradient
