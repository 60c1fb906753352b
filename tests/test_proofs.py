"""Every allowed activation × loss pair, proved on small networks against sympy.diff.

Each case states how its entries were decided: "symbolic" (the difference simplified to
0) or "numeric" (50-digit evaluation at random points, used at kinks — where sympy.diff's
step is ½ at 0 and the code's is 0 — and where SymPy cannot cancel within its budget).
"""

from itertools import pairwise

import pytest

from symbp import derive

SWISH = "z/(1 + exp(-z))"
SYMBOLIC, NUMERIC, BOTH = {"symbolic"}, {"numeric"}, {"symbolic", "numeric"}

CASES = [
    # half_se with every activation, on the output and hidden layers alike
    ("2-2-2", "sigmoid", "half_se", "sum", SYMBOLIC),
    ("2-2-2", "tanh", "half_se", "sum", SYMBOLIC),
    ("2-2-2", "relu", "half_se", "sum", NUMERIC),
    ("2-2-2", "leaky_relu(0.1)", "half_se", "mean", NUMERIC),
    ("2-2-2", "softplus", "half_se", "sum", BOTH),
    ("2-2-2", "identity", "half_se", "sum", SYMBOLIC),
    ("2-2-1", f"{SWISH},identity", "half_se", "sum", SYMBOLIC),
    ("2-2-2", "sigmoid,softmax", "half_se", "mean", SYMBOLIC),
    ("2-2-2", "tanh,softmax", "half_se", "sum", SYMBOLIC),
    ("3-2-2-1", "tanh,relu,sigmoid", "half_se", "sum", NUMERIC),
    # bce: every hidden activation under a sigmoid output
    ("2-2-1", "sigmoid", "bce", "sum", SYMBOLIC),
    ("2-2-1", "tanh,sigmoid", "bce", "mean", SYMBOLIC),
    ("2-2-1", "relu,sigmoid", "bce", "sum", NUMERIC),
    ("2-2-1", "leaky_relu(0.1),sigmoid", "bce", "sum", NUMERIC),
    ("2-2-1", "softplus,sigmoid", "bce", "sum", SYMBOLIC),
    ("2-2-1", "identity,sigmoid", "bce", "sum", SYMBOLIC),
    ("2-2-1", f"{SWISH},sigmoid", "bce", "mean", SYMBOLIC),
    # cross_entropy: softmax output under every hidden activation
    ("2-2-3", "sigmoid,softmax", "cross_entropy", "sum", SYMBOLIC),
    ("2-2-3", "tanh,softmax", "cross_entropy", "mean", SYMBOLIC),
    ("2-2-3", "relu,softmax", "cross_entropy", "sum", NUMERIC),
    ("2-2-3", "leaky_relu(0.1),softmax", "cross_entropy", "sum", NUMERIC),
    ("2-2-3", "softplus,softmax", "cross_entropy", "sum", SYMBOLIC),
    ("2-2-3", "identity,softmax", "cross_entropy", "sum", SYMBOLIC),
    ("2-2-3", f"{SWISH},softmax", "cross_entropy", "sum", SYMBOLIC),
    ("2-2-2-2", "softplus,tanh,softmax", "cross_entropy", "mean", SYMBOLIC),
]


@pytest.mark.parametrize("layers, activation, loss, reduction, methods", CASES)
def test_matrix_gradients_equal_direct_differentiation(layers, activation, loss, reduction, methods):
    report = derive(layers, activation, loss, reduction).verify()
    print(report.summary())
    assert report.ok, report.summary()
    assert {check.method for check in report.checks} == methods, report.summary()
    widths = [int(w) for w in layers.split("-")]
    assert len(report.checks) == sum(n * (m + 1) for m, n in pairwise(widths))


def test_two_samples_are_summed_in_the_proof():
    report = derive("2-1-3", "tanh,softmax", "cross_entropy", "mean").verify(samples=2)
    assert report.ok and "Σᵢ yᵢ = 1" in report.summary()


def test_cross_entropy_proof_needs_the_targets_to_sum_to_one():
    """Without Σy = 1 the simplified δ = a − y is not the gradient: the proof must notice."""
    d = derive("2-1-3", "tanh,softmax", "cross_entropy")
    d.output_delta = type(d.output_delta)(*d.output_delta.__dict__.values())
    object.__setattr__(d.output_delta, "assumption", None)
    assert not d.verify().ok


def test_the_report_is_the_same_every_time():
    """Which entries are decided symbolically is a fixed rule, not a race against the clock."""
    d = derive("2-1-2", "softplus", "half_se")  # the smallest network whose report mixes both methods
    first, second = d.verify(), d.verify()
    assert [c.method for c in first.checks] == [c.method for c in second.checks]
    assert {c.param for c in first.checks if c.method == "numeric"} == {"W1", "b1"}  # over 150 operations
