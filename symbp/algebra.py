"""The SymPy objects the derivation is written in, beyond SymPy's own matrix expressions.

A :class:`Quantity` is a named array of the network (W⁽²⁾, δ⁽¹⁾, X) that knows its kind,
its layer and its shape; an :class:`Entry` is one entry of a quantity inside a scalar
formula read entry by entry (:class:`Elementwise`). Printers draw quantities from these
attributes; nothing recovers meaning from a name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import sympy as sp
from sympy.core.symbol import Str
from sympy.matrices.expressions.matexpr import MatrixExpr

# What a quantity is; printers and the lowering read these, never the name.
INPUT, TARGET, PARAM, VALUE, GRADIENT = "input", "target", "param", "value", "gradient"
# An optimizer's state, kept from step to step (v, m, the step count t), and what it works out
# within one step (m̂, v̂): shaped like the parameter, with no column per sample.
STATE, SCRATCH = "state", "scratch"
# A dropout mask: a 0/1 array per sample that the caller draws; an input the loss is not differentiated by.
MASK = "mask"


def _str(value: object) -> Str:
    return value if isinstance(value, Str) else Str(str(value))


class Quantity(sp.MatrixSymbol):
    """A named array: ``name`` is its identifier in code, ``base`` and ``layer`` its notation.

    ``kind`` is one of INPUT, TARGET, PARAM, VALUE, GRADIENT, STATE, SCRATCH; a gradient names
    the quantity it differentiates the loss by (``of``), optimizer state the parameter it is kept for. ``layer`` is a label: "2", or "l+1" in the
    recurrence for any depth, or "" for X and y. ``role`` tells a parameter's family
    ("weight", "bias", or what an op declares), which sets how it is initialized.
    """

    def __new__(cls, name: str, rows: int | sp.Expr, cols: int | sp.Expr, kind: str, base: str,
                layer: object = "", of: Quantity | None = None, role: str = "") -> Self:
        return sp.Basic.__new__(cls, _str(name), sp.sympify(rows), sp.sympify(cols), _str(kind), _str(base),
                                _str(layer), of if of is not None else Str(""), _str(role))

    @property
    def kind(self) -> str:
        return self.args[3].name

    @property
    def base(self) -> str:
        return self.args[4].name

    @property
    def layer(self) -> str:
        return self.args[5].name

    @property
    def of(self) -> Quantity | None:
        return self.args[6] if isinstance(self.args[6], Quantity) else None

    @property
    def role(self) -> str:
        return self.args[7].name

    @property
    def per_sample(self) -> bool:
        """Whether it has one column per sample (values, gradients of values, X, y)."""
        if self.kind == GRADIENT:
            return self.of.per_sample
        return self.kind not in (PARAM, STATE, SCRATCH)

    def _eval_subs(self, old: sp.Basic, new: sp.Basic) -> Self:
        rows, cols = (arg._subs(old, new) for arg in self.args[1:3])
        return self.func(self.args[0], rows, cols, *self.args[3:])


def gradient_of(quantity: Quantity, name: str) -> Quantity:
    """∂L/∂quantity, shaped like it."""
    return Quantity(name, quantity.rows, quantity.cols, GRADIENT, quantity.base, quantity.layer, quantity)


class Entry(sp.Symbol):
    """One entry of a quantity in a formula read entry by entry: a⁽²⁾ in a⁽²⁾(1 − a⁽²⁾)."""

    quantity: Quantity

    def __new__(cls, quantity: Quantity) -> Self:
        obj = sp.Symbol.__xnew__(cls, quantity.name, real=True)
        obj.quantity = quantity
        return obj

    # Equal only for the same quantity; SymPy's ordering (which reads _hashable_content) still
    # sees a plain symbol of this name.
    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, Entry) and self.name == other.name
                                 and self.quantity == other.quantity)

    def __hash__(self) -> int:
        return hash((super().__hash__(), self.quantity))

    def __getnewargs_ex__(self) -> tuple:
        return ((self.quantity,), {})


# SymPy orders the terms of sums and products by class name: an entry must sort (and so
# print, and factor) exactly as a plain symbol of its name would. Printers therefore meet
# entries in ``_print_Symbol`` and tell them apart with isinstance.
Entry.__name__ = "Symbol"


def entry(quantity: Quantity) -> Entry:
    """The entry symbol of a quantity."""
    return Entry(quantity)


class Elementwise(MatrixExpr):
    """A scalar formula read entry by entry.

    Its :class:`Entry` symbols stand for whole arrays: ``Elementwise(a2*(1 - a2), 1, 1)`` is
    a⁽²⁾ ⊙ (1 − a⁽²⁾). NumPy evaluates the scalar formula elementwise as written, so code
    printers print it as is.
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


def entries_of(expr: sp.Basic) -> list[Entry]:
    """The Entry symbols of a formula, in a fixed order."""
    return sorted((s for s in expr.free_symbols if isinstance(s, Entry)), key=sp.default_sort_key)


@dataclass(frozen=True)
class Equation:
    """lhs = rhs in the document's notation; ``value`` is rhs with every factor computed.

    ``relation`` is "=" for a definition, "-=" for an update lhs ← lhs − rhs, and "<-" for an
    update lhs ← rhs whose rhs reads the old lhs (an optimizer's state).
    """

    lhs: sp.Basic
    rhs: sp.Basic
    value: sp.Basic | None = None
    relation: str = "="
    steps: tuple[sp.Basic, ...] = ()  # forms shown between rhs and value (a product before SymPy cancels it)

    @property
    def computed(self) -> sp.Basic:
        return self.rhs if self.value is None else self.value
