"""Losses, each written for one output unit and one sample as ℓ(a, y).

The network's loss sums ℓ over output units and samples (the document's convention);
``--reduction mean`` divides by the number of samples m.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import sympy as sp

from .spec import LOSSES, SpecError

a = sp.Symbol("a", real=True)
y = sp.Symbol("y", real=True)
t = sp.Symbol("t", real=True)  # the hinge loss's score of the true class, Σₖ yₖaₖ for one-hot y


@dataclass(frozen=True)
class Loss:
    """ℓ(a, y) and its derivative ∂ℓ/∂a, found by SymPy."""

    name: str
    per_unit: sp.Expr
    derivative: sp.Expr
    title: str


_DEFINITIONS = {
    "half_se": (sp.Rational(1, 2) * (a - y) ** 2, "half the squared error"),
    "bce": (-(y * sp.log(a) + (1 - y) * sp.log(1 - a)), "binary cross-entropy"),
    "cross_entropy": (-y * sp.log(a), "cross-entropy"),
    # multiclass SVM: Σ_{j ≠ true class} max(0, aⱼ − a_true + 1); with one-hot y, (1 − yⱼ) picks j ≠ true
    "hinge": ((1 - y) * sp.Max(0, a - t + 1), "multiclass hinge"),
}


@cache
def get_loss(name: str) -> Loss:
    """The loss called ``name``."""
    if name not in _DEFINITIONS:
        raise SpecError(f"unknown loss {name!r}: choose one of {', '.join(LOSSES)}")
    per_unit, title = _DEFINITIONS[name]
    return Loss(name, per_unit, sp.factor(sp.diff(per_unit, a)), title)
