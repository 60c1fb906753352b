"""Generated optimizers against torch.optim (float64, same weights and data): 100 steps to 1e-10."""


import numpy as np
import pytest
from conftest import installed, requires_torch
from networks import random_network
from test_optimizers import SETTINGS, torch_optimizer
from test_torch_oracle import targets, torch_loss

import symbp
from symbp.train import load_module

# CI installs numba (the fast extra): there a missing numba must fail, not skip its half of the check.
NUMBA = installed("numba")
if installed("torch"):
    import torch

STEPS, RATE = 100, 0.002
# Per optimizer, three random networks (depth 1–3, mixed activations, every loss, both
# reductions; symbp refuses bce on a softmax output), every other one with the --l2 penalty too.
NETWORKS = {seed: random_network(seed) for seed in range(40)}
SEEDS = [seed for seed, (_, activation, loss, _) in NETWORKS.items() if not (activation.endswith("softmax") and loss == "bce")]
CASES = [(name, SEEDS[3 * index + k], "0.1" if k % 2 else "") for index, name in enumerate(SETTINGS) for k in range(3)]


def torch_steps(params, X, Y, activations, loss, reduction, l2, name, settings):
    tensors = {n: torch.tensor(v, dtype=torch.float64, requires_grad=True) for n, v in params.items()}
    optimizer = torch_optimizer(torch, name, tensors, RATE, settings)
    for _ in range(STEPS):
        optimizer.zero_grad()
        total = torch_loss(tensors, X, Y, activations, loss, reduction)
        if l2:
            total = total + float(l2) / 2 * sum(torch.sum(t**2) for n, t in tensors.items() if n.startswith("W"))
        total.backward()
        optimizer.step()
    return {n: t.detach().numpy() for n, t in tensors.items()}


def test_the_cases_cover_every_loss_reduction_and_depth():
    networks = [random_network(seed) for _, seed, _ in CASES]
    assert {loss for _, _, loss, _ in networks} == {"half_se", "bce", "cross_entropy"}
    assert {reduction for *_, reduction in networks} == {"sum", "mean"}
    assert {layers.count("-") for layers, *_ in networks} == {1, 2, 3}


@requires_torch
@pytest.mark.parametrize(("name", "seed", "l2"), CASES, ids=[f"{n}-{s}{'-l2' if l2 else ''}" for n, s, l2 in CASES])
def test_100_steps_equal_torch_optim(name, seed, l2, tmp_path):
    layers, activation, loss, reduction = random_network(seed)
    settings = SETTINGS[name]
    path = tmp_path / "net.py"
    symbp.generate(layers, activation, loss, reduction, output=path, l2=l2, optimizer=name, **settings)
    module = load_module(path, f"optimized_{name}_{seed}")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((module.LAYERS[0], 5))
    Y = targets(rng, loss, module.LAYERS[-1], 5)
    initial = module.init_params(seed)
    expected = torch_steps(initial, X, Y, activation.split(","), loss, reduction, l2, name, settings)
    trained = {n: v.copy() for n, v in initial.items()}
    state = module.init_state(trained)
    module.train(trained, X, Y, STEPS, RATE, state=state)  # the in-place step
    stepped = {n: v.copy() for n, v in initial.items()}
    kept = module.init_state(stepped)
    for _ in range(STEPS):
        module.train_step(stepped, X, Y, RATE, kept)  # the allocating step, one formula per line
    for n, value in expected.items():
        np.testing.assert_allclose(trained[n], value, rtol=1e-10, atol=1e-12, err_msg=f"{name} {n}")
        np.testing.assert_allclose(stepped[n], trained[n], rtol=1e-12, atol=1e-14, err_msg=f"{name} {n}")
    for n in module.STATE_NAMES:
        np.testing.assert_allclose(kept[n], state[n], rtol=1e-12, atol=1e-14, err_msg=f"{name} {n}")
    if name != "sgd":
        assert state["t"][0, 0] == STEPS
    moved = any(not np.array_equal(trained[n], initial[n]) for n in module.PARAM_NAMES)
    assert moved
    if NUMBA and seed == SEEDS[3 * list(SETTINGS).index(name)]:  # one network each, as compiling costs seconds
        compiled_path = tmp_path / "net_numba.py"
        symbp.generate(layers, activation, loss, reduction, output=compiled_path, backend="numba", l2=l2,
                       optimizer=name, **settings)
        compiled = load_module(compiled_path, f"optimized_numba_{name}_{seed}")
        looped = {n: v.copy() for n, v in initial.items()}
        looped_state = compiled.init_state(looped)
        compiled.train(looped, X, Y, STEPS, RATE, state=looped_state, log_every=30)
        for n, value in expected.items():
            np.testing.assert_allclose(looped[n], value, rtol=1e-10, atol=1e-12, err_msg=f"numba {name} {n}")
            np.testing.assert_allclose(looped[n], trained[n], rtol=1e-12, atol=1e-14, err_msg=f"numba {name} {n}")
        for n in module.STATE_NAMES:
            np.testing.assert_allclose(looped_state[n], state[n], rtol=1e-12, atol=1e-14, err_msg=f"numba {n}")
