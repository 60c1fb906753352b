"""The few SymPy nodes the derivation needs beyond SymPy's own matrix expressions.

Each vector quantity has a code name such as ``W2``, ``delta1`` or ``X``; printers read
the name with :func:`split_name` and draw it in their own notation (W⁽²⁾, δ⁽¹⁾, X).
"""

from __future__ import annotations

import re
from typing import Self

import sympy as sp
from sympy.matrices.expressions.matexpr import MatrixExpr

_NAME = re.compile(r"(W|b|z|a|delta|dW|db|da|s)(\d+|l|l\+1|l-1|L)")


def split_name(name: str) -> tuple[str, int | str | None]:
    """'delta2' -> ('delta', 2); 'Wl+1' -> ('W', 'l+1') in the general recurrence; 'X' -> ('X', None)."""
    match = _NAME.fullmatch(name)
    if not match:
        return name, None
    layer = match.group(2)
    return match.group(1), int(layer) if layer.isdigit() else layer


class Elementwise(MatrixExpr):
    """A scalar formula read entry by entry.

    Its symbols name whole vectors: ``Elementwise(a2*(1 - a2), 1, 1)`` is a⁽²⁾ ⊙ (1 − a⁽²⁾).
    NumPy evaluates the scalar formula elementwise as written, so code printers print it as is.
    """

    def __new__(cls, expr: sp.Expr, rows: int | sp.Expr, cols: int = 1) -> Self:
        return super().__new__(cls, sp.sympify(expr), sp.sympify(rows), sp.sympify(cols))

    @property
    def expr(self) -> sp.Expr:
        return self.args[0]

    @property
    def shape(self) -> tuple[sp.Integer, sp.Integer]:
        return self.args[1], self.args[2]


def is_sum(arg: sp.Basic) -> bool:
    """Whether an operand of ⊙ is a sum (and so needs parentheses), looking inside Elementwise."""
    inner = arg.expr if isinstance(arg, Elementwise) else arg
    return isinstance(inner, (sp.Add, sp.MatAdd))


class _VectorOperation(MatrixExpr):
    """An operation on one vector quantity; by default the result has the argument's shape."""

    def __new__(cls, arg: MatrixExpr) -> Self:
        return super().__new__(cls, arg)

    @property
    def arg(self) -> MatrixExpr:
        return self.args[0]

    @property
    def shape(self) -> tuple[sp.Expr, sp.Expr]:
        return self.arg.shape


class SampleSum(_VectorOperation):
    """Σ over the samples: the document's ``np.sum(delta, axis=1, keepdims=True)``."""


class Partial(sp.Basic):
    """The notation ∂num/∂den for a chain-rule factor; it is a label, not a computation."""

    def __new__(cls, num: sp.Basic, den: sp.Basic) -> Self:
        return super().__new__(cls, num, den)

    @property
    def num(self) -> sp.Basic:
        return self.args[0]

    @property
    def den(self) -> sp.Basic:
        return self.args[1]


class UnitSum(_VectorOperation):
    """Σ over the units of a layer, for each sample: ``np.sum(x, axis=0, keepdims=True)``.

    Softmax couples a layer's units, so its backward pass needs this one sum per sample.
    """

    @property
    def shape(self) -> tuple[sp.Expr, sp.Expr]:
        return sp.Integer(1), self.arg.shape[1]


class Softmax(_VectorOperation):
    """softmax of a layer's pre-activations, column by column (not elementwise)."""
