"""The generated module against the document's hand-written network, from the same weights."""

import numpy as np
import pytest
from reference import SimpleNeuralNetwork

from symbp.train import XOR_X, XOR_Y

TOL = 1e-12


def start(seed):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape) for name, shape in
            (("W1", (2, 2)), ("b1", (2, 1)), ("W2", (1, 2)), ("b2", (1, 1)))}


def copy(params):
    return {k: v.copy() for k, v in params.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_step_gradients_match_the_document(xor_module, seed):
    params = start(seed)
    hand = SimpleNeuralNetwork(2, 2, 1, params=params)
    hand.forward(XOR_X)
    expected = hand.gradients(XOR_X, XOR_Y)
    got = xor_module.gradients(copy(params), XOR_X, XOR_Y)
    assert set(got) == {"W1", "b1", "W2", "b2"}
    for name in expected:
        assert got[name].shape == expected[name].shape
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=TOL)


def test_gradients_are_not_trivially_zero(xor_module):
    got = xor_module.gradients(start(0), XOR_X, XOR_Y)
    assert all(np.abs(g).max() > 1e-4 for g in got.values())


def test_functions_match_the_document_after_10000_epochs(xor_module):
    params = start(7)
    hand = SimpleNeuralNetwork(2, 2, 1, params=params)
    hand_log = hand.train(XOR_X, XOR_Y, 10_000, 0.1)
    mine = copy(params)
    logged = xor_module.train(mine, XOR_X, XOR_Y, 10_000, 0.1, log_every=1000)
    # train() logs L = ½Σ(a − y)², the loss the gradients belong to, before each logged step.
    np.testing.assert_allclose(logged, [entry[2] for entry in hand_log], rtol=0, atol=TOL)
    for name, value in hand.params.items():
        np.testing.assert_allclose(mine[name], value, rtol=0, atol=TOL)
    assert abs(mine["W1"] - params["W1"]).max() > 0.1  # it did train


def test_network_class_is_a_drop_in(xor_module, capsys):
    np.random.seed(3)
    hand = SimpleNeuralNetwork(2, 2, 1)
    np.random.seed(3)
    net = xor_module.Network(2, 2, 1)
    for name in ("W1", "b1", "W2", "b2"):
        np.testing.assert_array_equal(getattr(net, name), getattr(hand, name))
    hand_log = hand.train(XOR_X, XOR_Y, 10_000, 0.1)
    logged = net.train(XOR_X, XOR_Y, 10_000, 0.1)
    np.testing.assert_allclose(logged, [entry[1] for entry in hand_log], rtol=0, atol=TOL)
    for name in ("W1", "b1", "W2", "b2"):
        np.testing.assert_allclose(getattr(net, name), getattr(hand, name), rtol=0, atol=TOL)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 10
    assert printed[0].startswith("Epoch 0, Loss: ")
    assert printed[-1].startswith("Epoch 9000, Loss: ")
    assert float(printed[-1].split(": ")[1]) == pytest.approx(hand_log[-1][1], abs=TOL)
    np.testing.assert_allclose(net.forward(XOR_X), hand.forward(XOR_X), rtol=0, atol=TOL)


def test_network_refuses_other_sizes(xor_module):
    with pytest.raises(ValueError, match="layer sizes"):
        xor_module.Network(2, 3, 1)


def test_shapes_are_checked_not_broadcast(xor_module):
    params = start(0)
    with pytest.raises(ValueError, match=r"Y must have shape \(1, 4\)"):
        xor_module.gradients(params, XOR_X, XOR_Y.ravel())
    with pytest.raises(ValueError, match="X must have shape"):
        xor_module.forward(params, XOR_X.T)
