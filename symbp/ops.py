"""Ops: the pieces a network is a chain of, each stating its forward map once, in index form.

An op names the quantities it reads (inputs, parameters) and the one it writes, and gives
its output's entry ``i`` for one sample as a SymPy expression over indexed entries, such as
zᵢ = Σₖ Wᵢₖ xₖ + bᵢ. Everything else is derived from that:

* the backward map (vector–Jacobian product): ∂L/∂xⱼ = Σᵢ gᵢ ∂yᵢ/∂xⱼ, with ∂yᵢ/∂xⱼ found
  by ``sympy.diff`` and the sum over i done by SymPy (Kronecker deltas collapse it);
* the matrix formula, recognised from the index form by :func:`lift`: Σᵢ Wᵢⱼ gᵢ is (W)ᵀg,
  gₚxq is g xᵀ, an expression in entries at one index is elementwise (⊙), and a parameter
  shared by all samples gets its gradient summed over them;
* the chain-rule factor ∂y/∂x the document prints, with the index form SymPy found.

To add an op: subclass :class:`Op`, write ``entry(i)`` with ``self.at(quantity, index)``,
and register a factory that makes it for a layer (see :func:`register` and the README).
Derivations of one op kind are cached on a copy with placeholder quantities, so a deep
network costs no more to derive than a shallow one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache

import sympy as sp

from .activations import Activation, ActivationBase
from .activations import a as act_a
from .activations import z as act_z
from .algebra import (
    GRADIENT,
    MASK,
    PARAM,
    SCRATCH,
    TARGET,
    VALUE,
    Elementwise,
    Entry,
    Equation,
    Partial,
    Quantity,
    SampleSum,
    Softmax,
    UnitSum,
    entries_of,
    entry,
)
from .losses import Loss
from .losses import a as loss_a
from .losses import t as loss_t
from .losses import y as loss_y

# Indices: i runs over an op's outputs, j over an input's entries, p and q over a parameter's.
i, j, k, p, q = sp.symbols("i j k p q", integer=True, positive=True)
m = sp.Symbol("m", positive=True, integer=True)


def _first_piece(*pieces: tuple) -> sp.Expr:
    return pieces[0][0]


def drop_range_guards(expr: sp.Expr) -> sp.Expr:
    """Indices run over 1 … n by construction, so SymPy's guard ``j ≤ n`` is always true."""
    return expr.replace(sp.Piecewise, _first_piece)


@dataclass(frozen=True)
class Backward:
    """∂L/∂x as the document writes it (``notation``: f'(z) as a derivative) and as computed.

    ``before`` lists equations the value needs first (a per-sample sum over the units);
    ``steps`` how SymPy reached the value in index form, and ``assumption`` a fact it used.
    """

    notation: sp.Basic
    value: sp.Basic
    before: tuple[Equation, ...] = ()
    steps: tuple[sp.Expr, ...] = ()
    assumption: sp.Eq | None = None


@dataclass(frozen=True)
class Factor:
    """One factor of a chain rule: its notation, its value, and the index form SymPy found."""

    partial: Partial
    value: sp.Basic
    index_form: Equation | None = None  # ∂yᵢ/∂xⱼ = what SymPy found
    notation: sp.Basic | None = None  # e.g. σ'(z⁽²⁾), shown between partial and value


# -- quantities an op makes ------------------------------------------------------------------

def value(base: str, layer: int | str, rows: int | sp.Expr, name: str | None = None) -> Quantity:
    """A per-sample value such as z⁽ˡ⁾ or a⁽ˡ⁾: ``rows`` entries for each sample."""
    return Quantity(name or f"{base}{layer}", rows, 1, VALUE, base, layer)


def param(base: str, layer: int | str, rows: int | sp.Expr, cols: int | sp.Expr = 1, role: str = "") -> Quantity:
    """A parameter such as W⁽ˡ⁾ (role "weight") or b⁽ˡ⁾ ("bias"), shared by all samples."""
    return Quantity(f"{base}{layer}", rows, cols, PARAM, base, layer, role=role or base)


def gradient_name(quantity: Quantity) -> str:
    """δ⁽ˡ⁾ is ``delta{l}`` for a pre-activation z⁽ˡ⁾; any other ∂L/∂x is ``d{x}``."""
    return f"delta{quantity.layer}" if quantity.base == "z" else f"d{quantity.name}"


def gradient(quantity: Quantity) -> Quantity:
    """The quantity ∂L/∂quantity, shaped like it."""
    return Quantity(gradient_name(quantity), quantity.rows, quantity.cols, GRADIENT, quantity.base,
                    quantity.layer, quantity)


# -- recognising matrix formulas in index forms ---------------------------------------------

def _indexed_at(expr: sp.Basic, index: sp.Symbol) -> dict[sp.Indexed, Entry]:
    """Indexed vector entries x[index] (or a parameter vector's c[index]) → the entry symbol."""
    out = {}
    for item in expr.atoms(sp.Indexed):
        if item.indices == (index,):
            out[item] = entry(item.base.label)
    return out


def lift(expr: sp.Expr, index: sp.Symbol, rows: int | sp.Expr) -> sp.Basic:
    """The matrix expression whose entry ``index`` (for each sample) is ``expr``.

    Terms Σₖ Mₖⱼ hₖ become (M)ᵀh and Σₖ Mⱼₖ hₖ become M h; what is left is read entry by
    entry (:class:`Elementwise`), with gradients kept as matrix operands of ⊙ so that a
    matrix expression can later stand in for them.
    """
    matrix_terms, scalar_terms = [], []
    for term in sp.Add.make_args(expr):
        sums = [f for f in sp.Mul.make_args(term) if isinstance(f, sp.Sum)]
        if not sums:
            scalar_terms.append(term)
            continue
        (total,) = sums
        rest = term / total
        matrix_terms.append(_hadamard(_lift_sum(total, index), _elementwise(rest, index, rows)))
    result = [*matrix_terms]
    if scalar_terms:
        result.append(_elementwise(sp.Add(*scalar_terms), index, rows))
    return result[0] if len(result) == 1 else sp.MatAdd(*result)


def _lift_sum(total: sp.Sum, index: sp.Symbol) -> sp.Basic:
    """Σₖ M[k, index] hₖ → (M)ᵀ h; Σₖ M[index, k] hₖ → M h."""
    (summed, _low, high), = total.limits
    matrices = [f for f in sp.Mul.make_args(total.function) if isinstance(f, sp.Indexed) and len(f.indices) == 2]
    if len(matrices) != 1:
        raise NotImplementedError(f"no matrix form for {total}")
    (M,) = matrices
    h = total.function / M
    operand = lift(h, summed, high)
    if M.indices == (summed, index):
        return sp.MatMul(M.base.label.T, operand)
    if M.indices == (index, summed):
        return sp.MatMul(M.base.label, operand)
    raise NotImplementedError(f"no matrix form for {total}")


def _elementwise(expr: sp.Expr, index: sp.Symbol, rows: int | sp.Expr) -> sp.Basic:
    """Entries at ``index`` read elementwise; a gradient factor stays a matrix operand of ⊙."""
    scalar = expr.xreplace(_indexed_at(expr, index))
    if scalar.has(sp.Indexed):
        raise NotImplementedError(f"no elementwise form for {expr}")
    if scalar == 1:
        return sp.Integer(1)
    factors = sp.Mul.make_args(scalar)
    operands = [f.quantity for f in factors if isinstance(f, Entry) and f.quantity.kind == GRADIENT]
    rest = sp.Mul(*(f for f in factors if not (isinstance(f, Entry) and f.quantity.kind == GRADIENT)))
    if isinstance(rest, Entry) and rest.quantity.rows == rows:
        operands.append(rest.quantity)  # one quantity alone is itself, not a formula in it
        rest = sp.Integer(1)
    return _hadamard(*operands, Elementwise(rest, rows) if rest != 1 else sp.Integer(1))


def _hadamard(*operands: sp.Basic) -> sp.Basic:
    kept = [o for o in operands if o != 1]
    if not kept:
        return sp.Integer(1)
    return kept[0] if len(kept) == 1 else sp.HadamardProduct(*kept)


def lift_outer(expr: sp.Expr, rows: int | sp.Expr, cols: int | sp.Expr) -> sp.Basic:
    """A matrix parameter's gradient entry uₚ·v_q as u vᵀ (the product sums over the samples)."""
    left, right = [], []
    for factor in sp.Mul.make_args(expr):
        indices = {item.indices for item in factor.atoms(sp.Indexed)}
        if indices == {(p,)}:
            left.append(factor)
        elif indices == {(q,)}:
            right.append(factor)
        else:
            raise NotImplementedError(f"no outer-product form for {expr}")
    return sp.MatMul(lift(sp.Mul(*left), p, rows), lift(sp.Mul(*right), q, cols).T)


def lift_jacobian(expr: sp.Expr, output: Quantity) -> sp.Basic:
    """∂yᵢ/∂xⱼ as the matrix the document shows: W for Wᵢⱼ, diag(a) − a aᵀ for aᵢ([i = j] − aⱼ)."""
    terms = []
    for term in sp.Add.make_args(sp.expand(expr)):
        if term.has(sp.KroneckerDelta):
            terms.append(sp.DiagMatrix(output))
        else:
            coeff, _ = term.as_coeff_Mul()
            terms.append(coeff * output * output.T)
    return sp.MatAdd(*terms)


# -- ops -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Op:
    """One piece of the network: ``output = op(inputs; params)``, stated by :meth:`entry`.

    Subclasses give ``entry(i)``, the output's entry i for one sample, written with
    :meth:`at`. The rest is derived.
    """

    output: Quantity
    inputs: tuple[Quantity, ...]
    params: tuple[Quantity, ...] = ()
    title: str = ""  # what the document calls this step

    def entry(self, index: sp.Symbol) -> sp.Expr:
        raise NotImplementedError

    @staticmethod
    def at(quantity: Quantity, *indices: sp.Expr) -> sp.Indexed:
        """The entry of a quantity at the given indices (one for a vector, two for a matrix)."""
        return sp.IndexedBase(quantity)[indices]

    # -- forward --------------------------------------------------------------------------
    def forward(self) -> sp.Basic:
        """The output as a matrix formula, recognised from the index form."""
        return lift(self.entry(i), i, self.output.rows)

    def forward_equations(self) -> tuple[Equation, ...]:
        """The forward pass's equations for this op: its output alone, unless it names steps on the way."""
        return (Equation(self.output, self.forward()),)

    # -- backward -------------------------------------------------------------------------
    def indices(self, wrt: Quantity) -> tuple[sp.Symbol, ...]:
        """How ``entry`` indexes x: (j) for an input, (p) for a parameter vector, (p, q) for a matrix."""
        arity = {len(x.indices) for x in self.entry(i).atoms(sp.Indexed) if x.base.label == wrt}
        if arity == {2}:
            return (p, q)
        return (p,) if wrt.kind == PARAM else (j,)

    def partial(self, wrt: Quantity) -> tuple[sp.Expr, tuple[sp.Symbol, ...]]:
        """∂yᵢ/∂x at x's entry (j, or p and q), by ``sympy.diff`` of the index form."""
        indices = self.indices(wrt)
        derivative = sp.diff(self.entry(i), self.at(wrt, *indices))
        return drop_range_guards(derivative.doit()), indices

    def backward(self, upstream: sp.Basic) -> dict[Quantity, Backward]:
        """∂L/∂x for each input and parameter x, given ∂L/∂y (a matrix expression)."""
        generic, names = self.generic()
        gradients = _backward_template(generic)
        names = {**names, gradient(generic.output): upstream}
        out = {}
        for placeholder, actual in zip((*generic.inputs, *generic.params), (*self.inputs, *self.params)):
            notation, computed = gradients[placeholder]
            out[actual] = Backward(notation.xreplace(names), computed.xreplace(names))
        return out

    def computed(self, expr: sp.Basic) -> sp.Basic:
        """The value of a backward formula: derivatives written as the code evaluates them."""
        return expr

    def generic(self) -> tuple[Op, dict]:
        """This op with placeholder quantities of symbolic size, and the map back."""
        return _generic(self)

    def factor(self, wrt: Quantity) -> Factor:
        """∂y/∂x as one factor of a chain rule, with the index form it came from."""
        derivative, indices = self.partial(wrt)
        index_form = Equation(Partial(self.at(self.output, i), self.at(wrt, *indices)), derivative)
        diagonal = derivative.coeff(sp.KroneckerDelta(i, j)) if indices == (j,) else 0
        if diagonal != 0 and not diagonal.has(j):  # ∂yᵢ/∂xⱼ = [i = j] eᵢ: the elementwise factor e
            return Factor(Partial(self.output, wrt), lift(diagonal, i, self.output.rows), index_form)
        return Factor(Partial(self.output, wrt), lift_jacobian(derivative, self.output), index_form)


def _generic(op: Op) -> tuple[Op, dict]:
    """Placeholders share a size symbol exactly where the sizes are equal, so shapes still match;
    sizes stay symbolic (a sum over 1 … n with n = 1 would otherwise be done by SymPy)."""
    quantities = (op.output, *op.inputs, *op.params)
    sizes: dict = {}

    def size(value: sp.Expr) -> sp.Symbol:
        return sizes.setdefault(value, sp.Symbol(f"n{len(sizes)}", integer=True, positive=True))

    matrices = {x.base.label for x in op.entry(i).atoms(sp.Indexed) if len(x.indices) == 2}
    placeholders = [Quantity(f"_{n}", size(qty.rows), size(qty.cols) if qty in matrices else qty.cols,
                             qty.kind, qty.base, "", None, qty.role) for n, qty in enumerate(quantities)]
    names: dict = {symbol: value for value, symbol in sizes.items()}
    for placeholder, actual in zip(placeholders, quantities):
        names[placeholder] = actual
        names[entry(placeholder)] = entry(actual)
        names[sp.IndexedBase(placeholder)] = sp.IndexedBase(actual)
    names[gradient(placeholders[0])] = gradient(op.output)
    generic = replace(op, output=placeholders[0], inputs=tuple(placeholders[1:1 + len(op.inputs)]),
                      params=tuple(placeholders[1 + len(op.inputs):]))
    return generic, names


@cache
def _backward_template(op: Op) -> dict[Quantity, tuple[sp.Basic, sp.Basic]]:
    """∂L/∂x for every input and parameter of a placeholder op, ∂L/∂y being the placeholder G."""
    upstream = gradient(op.output)
    g_i = sp.IndexedBase(upstream)[i]
    out = {}
    for wrt in (*op.inputs, *op.params):
        derivative, indices = op.partial(wrt)
        total = drop_range_guards(sp.Sum(g_i * derivative, (i, 1, op.output.rows)).doit())
        if len(indices) == 2:
            notation = lift_outer(total, wrt.rows, wrt.cols)
        elif wrt.kind == PARAM:
            notation = SampleSum(lift(total, p, wrt.rows))
        else:
            notation = lift(total, j, wrt.rows)
        out[wrt] = (notation, op.computed(notation))
    return out


@dataclass(frozen=True)
class Affine(Op):
    """z = W x + b: zᵢ = Σₖ Wᵢₖ xₖ + bᵢ."""

    def entry(self, index: sp.Symbol) -> sp.Expr:
        (x,), (W, b) = self.inputs, self.params
        return sp.Sum(self.at(W, index, k) * self.at(x, k), (k, 1, x.rows)) + self.at(b, index)

    def forward(self) -> sp.Basic:
        (x,), (W, b) = self.inputs, self.params
        return sp.MatAdd(sp.MatMul(W, x), b)  # the order the document writes, W x + b

    def factor(self, wrt: Quantity) -> Factor:
        """∂z/∂W read as xᵀ (row p of the gradient is unit p's error times xᵀ), ∂z/∂x as W."""
        (x,), (W, _b) = self.inputs, self.params
        derivative, indices = self.partial(wrt)
        if wrt == W:
            derivative = sp.simplify(derivative)
        index_form = Equation(Partial(self.at(self.output, i), self.at(wrt, *indices)), derivative)
        return Factor(Partial(self.output, wrt), x.T if wrt == W else W, index_form)


@dataclass(frozen=True)
class Activate(Op):
    """a = f(z), one unit at a time: aᵢ = f(zᵢ). Without an activation, f is any function."""

    activation: Activation | None = None

    @property
    def function(self) -> type[ActivationBase]:
        return ActivationBase if self.activation is None else self.activation.function

    def entry(self, index: sp.Symbol) -> sp.Expr:
        return self.function(self.at(self.inputs[0], index))

    def computed(self, expr: sp.Basic) -> sp.Basic:
        """f'(z) as the code evaluates it: in the output a where SymPy found that form."""
        f = self.activation
        if f is None:
            return expr
        out = entry(self.output)

        def evaluate(derivative: sp.Derivative) -> sp.Expr:
            return f.derivative_form.subs({act_a: out, act_z: derivative.variables[0]})

        return expr.replace(lambda e: isinstance(e, sp.Derivative) and isinstance(e.expr, f.function), evaluate)

    def factor(self, wrt: Quantity) -> Factor:
        notation = Elementwise(sp.Derivative(self.function(entry(wrt)), entry(wrt)), self.output.rows)
        return Factor(Partial(self.output, wrt), self.computed(notation), None, notation)


@dataclass(frozen=True)
class SoftmaxOp(Op):
    """a = softmax(z), per sample: aⱼ = exp(zⱼ)/Σₖ exp(zₖ). Every output depends on every input.

    Its Jacobian ∂aⱼ/∂zᵢ = aⱼ([i = j] − aᵢ) is SymPy's (see :mod:`symbp.activations`). The
    backward map sums over the units, so ∂L/∂a is put in, entry by entry, before SymPy sums:
    with cross-entropy that is what lets the sum cancel to a − y.
    """

    activation: Activation | None = None

    def entry(self, index: sp.Symbol) -> sp.Expr:
        z = self.inputs[0]
        return sp.exp(self.at(z, index)) / sp.Sum(sp.exp(self.at(z, k)), (k, 1, z.rows))

    def forward(self) -> sp.Basic:
        return Softmax(self.inputs[0])  # computed shifted by the column's maximum

    def jacobian(self) -> sp.Expr:
        """∂aⱼ/∂zᵢ in the output a, with this op's quantities."""
        if self.activation is None:
            raise ValueError("a softmax op needs the softmax activation")
        return self.activation.derivative_in_output.xreplace({sp.IndexedBase("a"): sp.IndexedBase(self.output)})

    def factor(self, wrt: Quantity) -> Factor:
        a_j, z_i = self.at(self.output, j), self.at(wrt, i)
        return Factor(Partial(self.output, wrt), lift_jacobian(self.jacobian(), self.output),
                      Equation(Partial(a_j, z_i), self.jacobian()))

    def backward(self, upstream: sp.Basic) -> dict[Quantity, Backward]:
        """δᵢ = Σⱼ (∂aⱼ/∂zᵢ) ∂L/∂aⱼ, summed by SymPy; a sum left over becomes one number per sample.

        When that sum is Σⱼ yⱼ, targets that are one-hot (or probabilities) make it 1.
        """
        z, out = self.inputs[0], self.output
        notation = sp.MatMul(lift_jacobian(self.jacobian(), out), upstream)
        if not isinstance(upstream, Elementwise):  # only an entry-wise ∂L/∂a can be summed in index form
            return {z: Backward(notation, notation)}
        n = sp.Symbol("n", integer=True, positive=True)
        g_j = upstream.expr.xreplace({e: sp.IndexedBase(e.quantity)[j] for e in entries_of(upstream.expr)})
        jacobian = self.jacobian()
        summed = sp.Sum(jacobian * g_j, (j, 1, n))
        collected = sp.Integer(0)
        for term in sp.Add.make_args(sp.expand(jacobian)):
            outside, inside = term.as_independent(j, as_Add=False)
            body = sp.factor(sp.cancel(inside * g_j))
            total = drop_range_guards(sp.Sum(body, (j, 1, n)).doit())
            collected += outside * total.replace(sp.Sum, _pull_out)
        targets = [e.quantity for e in entries_of(upstream.expr) if e.quantity.kind == TARGET]
        assumption = sp.Eq(sp.Sum(sp.IndexedBase(targets[0])[j], (j, 1, n)), 1) if targets else None
        one_hot = collected.subs(assumption.lhs, assumption.rhs) if assumption is not None else collected
        sums = sorted(one_hot.atoms(sp.Sum), key=sp.default_sort_key)
        names = {total: value("s", out.layer, 1, f"s{out.layer}" if len(sums) == 1 else f"s{out.layer}_{n_}")
                 for n_, total in enumerate(sums, start=1)}
        delta_i = sp.factor_terms(one_hot.xreplace({total: entry(name) for total, name in names.items()}))
        shown = delta_i.xreplace({entry(name): total for total, name in names.items()})
        steps = (summed, collected) + ((shown,) if one_hot != collected else ())

        def entries(expr: sp.Expr) -> sp.Expr:
            return expr.xreplace({x: entry(x.base.label) for x in expr.atoms(sp.Indexed)})

        before = tuple(Equation(name, UnitSum(Elementwise(entries(total.function), out.rows)))
                       for total, name in names.items())
        value_ = Elementwise(entries(delta_i), out.rows)
        return {z: Backward(notation, value_, before, steps, assumption if one_hot != collected else None)}


def _pull_out(body: sp.Expr, limits: sp.Tuple) -> sp.Expr:
    """Σⱼ c·bⱼ = c·Σⱼ bⱼ for c free of j."""
    outside, inside = body.as_independent(limits[0], as_Add=False)
    return outside * sp.Sum(inside, limits)


@dataclass(frozen=True)
class LossOp(Op):
    """L = Σᵢ ℓ(aᵢ, yᵢ), divided by m for ``mean``; inputs are (a, y)."""

    loss: Loss | None = None
    reduction: str = "sum"

    def entry(self, index: sp.Symbol, units: sp.Expr | None = None) -> sp.Expr:
        a, y = self.inputs
        term = self.loss.per_unit.subs({loss_a: self.at(a, k), loss_y: self.at(y, k)})
        total = sp.Sum(term, (k, 1, a.rows if units is None else units))
        return total / m if self.reduction == "mean" else total

    def definition(self) -> sp.Expr:
        """L as the document writes it: without the index when there is one output unit."""
        a, y = self.inputs
        if a.rows == 1:
            total = self.loss.per_unit.subs({loss_a: entry(a), loss_y: entry(y)})
        else:
            term = self.loss.per_unit.subs({loss_a: self.at(a, i), loss_y: self.at(y, i)})
            total = sp.Sum(term, (i, 1, a.rows))
        return total / m if self.reduction == "mean" else total

    def gradient(self) -> sp.Basic:
        """∂L/∂a: ``sympy.diff`` of the index form, summed by SymPy, factored (then divided by m for mean)."""
        a = self.inputs[0]
        units = sp.Symbol("n", integer=True, positive=True)  # symbolic, so SymPy keeps the sum's index
        total = replace(self, reduction="sum").entry(i, units)
        derivative = drop_range_guards(sp.diff(total, self.at(a, j)).doit())
        scalar = sp.factor(derivative.xreplace(_indexed_at(derivative, j)))
        return Elementwise(scalar / m if self.reduction == "mean" else scalar, a.rows)

    def factor(self, wrt: Quantity) -> Factor:
        return Factor(Partial(sp.Symbol("L"), wrt), self.gradient())


@dataclass(frozen=True)
class HingeLossOp(LossOp):
    """L = Σⱼ (1 − yⱼ) max(0, aⱼ − t + 1) with t = Σₖ yₖaₖ, the true class's score (one-hot y):
    the multiclass SVM loss Σ_{j ≠ true} max(0, aⱼ − a_true + 1). Every unit's term reads t, so
    ∂L/∂a has a sum over the units per sample; SymPy finds it, and it is named by its definition.
    """

    def true_score(self, units: sp.Expr) -> sp.Expr:
        a, y = self.inputs
        return sp.Sum(self.at(y, r) * self.at(a, r), (r, 1, units))

    def entry(self, index: sp.Symbol, units: sp.Expr | None = None) -> sp.Expr:
        units = self.inputs[0].rows if units is None else units
        return super().entry(index, units).subs(loss_t, self.true_score(units))

    def definition(self) -> sp.Expr:
        return super().definition().subs(loss_t, self.true_score(self.inputs[0].rows))

    def named(self) -> tuple[Quantity, Quantity]:
        """t (the true class's score) and c (how many classes violate the margin), per sample."""
        layer = self.inputs[0].layer
        return value("t", layer, 1, f"t{layer}"), value("c", layer, 1, f"c{layer}")

    def before(self) -> tuple[Equation, ...]:
        """t = Σ_units y ⊙ a and c = Σ_units (1 − y) ⊙ [a − t + 1 > 0], which ∂L/∂a reads."""
        a, y = self.inputs
        score, count = self.named()
        kink = sp.Heaviside(entry(a) - entry(score) + 1, 0)
        return (Equation(score, UnitSum(sp.HadamardProduct(y, a))),
                Equation(count, UnitSum(Elementwise((1 - entry(y)) * kink, a.rows))))

    def gradient(self) -> sp.Basic:
        """∂L/∂aⱼ by ``sympy.diff`` of the index form, its sums named t and c; the step is 0 at the
        kink, as relu's (and torch's) is."""
        a, y = self.inputs
        units = sp.Symbol("n", integer=True, positive=True)
        derivative = drop_range_guards(sp.diff(replace(self, reduction="sum").entry(i, units), self.at(a, j)).doit())
        score, count = (entry(q) for q in self.named())
        derivative = derivative.replace(lambda e: e == self.true_score(units), lambda e: score)
        derivative = derivative.replace(sp.Sum, _pull_out)
        counted = sp.Sum((1 - self.at(y, k)) * sp.Heaviside(self.at(a, k) - score + 1), (k, 1, units))
        derivative = derivative.xreplace({counted: count})
        if derivative.has(sp.Sum):
            raise NotImplementedError(f"no matrix form for {derivative}")
        scalar = derivative.xreplace(_indexed_at(derivative, j)).replace(sp.Heaviside, lambda x, *h: sp.Heaviside(x, 0))
        return Elementwise(scalar / m if self.reduction == "mean" else scalar, a.rows)


LAMBDA = sp.Symbol("lambda", nonnegative=True)  # λ of the weight penalty


@dataclass(frozen=True)
class PenaltyOp(Op):
    """P = ½λ Σₗ Σᵢⱼ (W⁽ˡ⁾ᵢⱼ)², added to the loss: its parameters are the weights (not the biases).

    Its derivative by each weight entry is SymPy's (λ W⁽ˡ⁾ᵢⱼ), read as the matrix λ W⁽ˡ⁾.
    """

    strength: sp.Expr = LAMBDA

    def entry(self, index: sp.Symbol, sizes: bool = True) -> sp.Expr:
        r, c = sp.symbols("r c", integer=True, positive=True)
        total = sp.Integer(0)
        for n, W in enumerate(self.params):
            rows, cols = (W.rows, W.cols) if sizes else sp.symbols(f"u{n} v{n}", integer=True, positive=True)
            total += sp.Sum(self.at(W, r, c) ** 2, (r, 1, rows), (c, 1, cols))
        return self.strength / 2 * total

    def gradients(self) -> dict[Quantity, sp.Basic]:
        """∂P/∂W for each weight: sympy.diff of the index form at W[p, q], read as a multiple of W."""
        out = {}
        for W in self.params:
            derivative = drop_range_guards(sp.diff(self.entry(i, sizes=False), self.at(W, p, q)).doit())
            coefficient = sp.simplify(derivative / self.at(W, p, q))
            if coefficient.has(sp.Indexed):
                raise NotImplementedError(f"no matrix form for {derivative}")
            out[W] = sp.MatMul(coefficient, W)
        return out


EPSILON = sp.Symbol("varepsilon", positive=True)  # ε of batch normalization, 1e-5 as torch's
EPSILON_VALUE = "1e-05"
s, t, r = sp.symbols("s t r", integer=True, positive=True)  # samples of the batch


def statistic(base: str, layer: int | str, rows: int | sp.Expr, name: str) -> Quantity:
    """One number per unit worked out over the batch (μ⁽ˡ⁾, σ²⁽ˡ⁾, a sum over the samples): no column per sample."""
    return Quantity(name, rows, 1, SCRATCH, base, layer)


def _entries(expr: sp.Expr) -> sp.Expr:
    """Indexed entries read elementwise: zⱼₜ is the array z, γⱼ the column γ."""
    return expr.xreplace({x: entry(x.base.label) for x in expr.atoms(sp.Indexed)})


def _named_sum(f: sp.Expr, limits: tuple, known: dict) -> sp.Expr:
    """Σ f over ``limits``, term by term: a term whose sum has a name (Σzₖ = mμ, Σgₖ = s₁, …) is
    replaced by it, a Kronecker bracket is summed away, and anything else is an error."""
    index = limits[0]
    out = sp.Integer(0)
    for term in sp.Add.make_args(sp.expand(f)):
        coefficient, part = term.as_independent(index, as_Add=False)
        if part in known:
            out += coefficient * known[part]
        elif part.has(sp.KroneckerDelta):
            out += coefficient * drop_range_guards(sp.Sum(part, limits).doit())
        else:
            raise NotImplementedError(f"no named sum for {part}")
    return out


@dataclass(frozen=True)
class BatchNorm(Op):
    """Batch normalization: uᵢₛ = γᵢ (zᵢₛ − μᵢ)/√(σ²ᵢ + ε) + βᵢ, with μᵢ = Σᵣ zᵢᵣ/m and
    σ²ᵢ = Σᵣ (zᵢᵣ − μᵢ)²/m over the m samples of the batch.

    Its index form is over the batch, unit i of sample s, because every sample's output reads
    every sample's input. The backward map is SymPy's ∂L/∂zⱼₜ = Σᵢ Σₛ gᵢₛ ∂uᵢₛ/∂zⱼₜ; the sums
    over samples it leaves are named as the definitions say (Σᵣ zⱼᵣ = m μⱼ, Σᵣ (zⱼᵣ − μⱼ)² =
    m σ²ⱼ, zⱼₛ − μⱼ = x̂ⱼₛ √(σ²ⱼ + ε)), and what remains is read as the matrix form.
    """

    epsilon: sp.Expr = EPSILON

    @property
    def mean(self) -> Quantity:
        return statistic("mu", self.output.layer, self.output.rows, f"mu{self.output.layer}")

    @property
    def variance(self) -> Quantity:
        return statistic("sigma^2", self.output.layer, self.output.rows, f"var{self.output.layer}")

    @property
    def normalized(self) -> Quantity:
        return value("xhat", self.output.layer, self.output.rows)

    def sums(self) -> tuple[Quantity, Quantity]:
        """Σₛ gₛ and Σₛ gₛ x̂ₛ per unit, which the backward map reads."""
        layer, rows = self.output.layer, self.output.rows
        return (statistic("s", f"{layer},1", rows, f"s{layer}_1"), statistic("s", f"{layer},2", rows, f"s{layer}_2"))

    def batch_mean(self, unit: sp.Expr) -> sp.Expr:
        return sp.Sum(self.at(self.inputs[0], unit, r), (r, 1, m)) / m

    def batch_variance(self, unit: sp.Expr) -> sp.Expr:
        return sp.Sum((self.at(self.inputs[0], unit, r) - self.batch_mean(unit)) ** 2, (r, 1, m)) / m

    def entry(self, index: sp.Symbol, sample: sp.Symbol = s) -> sp.Expr:
        (z,), (gamma, beta) = self.inputs, self.params
        centred = self.at(z, index, sample) - self.batch_mean(index)
        return self.at(gamma, index) * centred / sp.sqrt(self.batch_variance(index) + self.epsilon) + self.at(beta, index)

    def forward_equations(self) -> tuple[Equation, ...]:
        """μ, σ² over the batch, x̂ = (z − μ)/√(σ² + ε), then u = γ ⊙ x̂ + β."""
        (z,), (gamma, beta) = self.inputs, self.params
        mu, var, xhat = self.mean, self.variance, self.normalized
        rows = z.rows
        return (
            Equation(mu, sp.MatMul(1 / m, SampleSum(z))),
            Equation(var, sp.MatMul(1 / m, SampleSum(Elementwise((entry(z) - entry(mu)) ** 2, rows)))),
            Equation(xhat, Elementwise((entry(z) - entry(mu)) / sp.sqrt(entry(var) + self.epsilon), rows)),
            Equation(self.output, Elementwise(entry(gamma) * entry(xhat) + entry(beta), rows)),
        )

    def forward(self) -> sp.Basic:
        return self.forward_equations()[-1].rhs

    def _named(self, upstream: Quantity) -> dict:
        """The definitions the sums over the batch are named by."""
        z = self.inputs[0]
        s1, s2 = self.sums()
        return {"mu": entry(self.mean), "var": entry(self.variance), "s1": entry(s1), "s2": entry(s2),
                "g": upstream, "z": z}

    def _total(self, f: sp.Expr, limits: tuple, unit: sp.Symbol, upstream: Quantity) -> sp.Expr:
        """Σ over the samples, done term by term with the definitions of μ, σ², Σg and Σg x̂."""
        k, low, high = limits
        z, xhat = self.inputs[0], self.normalized
        mu, var = entry(self.mean), entry(self.variance)
        s1, s2 = (entry(q) for q in self.sums())
        if f == (self.at(z, unit, k) - mu) ** 2:
            return m * var
        known = {sp.Integer(1): m, self.at(z, unit, k): m * mu, self.at(upstream, unit, k): s1,
                 self.at(upstream, unit, k) * self.at(xhat, unit, k): s2}
        return _named_sum(f, (k, low, high), known)

    def _over_batch(self, f: sp.Expr, unit: sp.Symbol, upstream: Quantity) -> sp.Expr:
        return f.replace(sp.Sum, lambda body, limits: self._total(body, limits, unit, upstream))

    def _normalized(self, expr: sp.Expr, unit: sp.Symbol, samples: tuple[sp.Symbol, ...]) -> sp.Expr:
        """zⱼₛ = μⱼ + √(σ²ⱼ + ε) x̂ⱼₛ, the definition of x̂ read backwards."""
        z, xhat = self.inputs[0], self.normalized
        spread = sp.sqrt(entry(self.variance) + self.epsilon)
        return expr.xreplace({self.at(z, unit, k): entry(self.mean) + spread * self.at(xhat, unit, k) for k in samples})

    def derivative(self, wrt: Quantity) -> sp.Expr:
        """∂uᵢₛ/∂x by ``sympy.diff`` of the index form (x = zⱼₜ, γⱼ or βⱼ), with i = j: units do not couple."""
        point = self.at(wrt, j, t) if wrt == self.inputs[0] else self.at(wrt, j)
        derivative = sp.diff(self.entry(i, s), point)
        if sp.simplify(derivative.subs(sp.KroneckerDelta(i, j), 0).doit()) != 0:
            raise NotImplementedError("batch normalization couples units")
        return derivative.subs(sp.KroneckerDelta(i, j), 1).subs(i, j)

    def backward(self, upstream: sp.Basic) -> dict[Quantity, Backward]:
        """∂L/∂zⱼₜ = Σₛ gⱼₛ ∂uⱼₛ/∂zⱼₜ and ∂L/∂γⱼ, ∂L/∂βⱼ, derived over the batch (g = ∂L/∂u, stored)."""
        if not isinstance(upstream, Quantity):
            raise NotImplementedError("batch normalization reads a stored ∂L/∂u")
        (z,), (gamma, beta) = self.inputs, self.params
        xhat, (s1, s2) = self.normalized, self.sums()
        sums = {entry(s1): SampleSum(upstream), entry(s2): SampleSum(sp.HadamardProduct(upstream, xhat))}
        out = {}
        for wrt in (z, gamma, beta):
            partial = self._over_batch(self.derivative(wrt), j, upstream)
            summand = self.at(upstream, j, s) * self._normalized(partial, j, (s, t))
            total = sp.factor(self._total(summand, (s, 1, m), j, upstream))
            if wrt == z:
                steps = (sp.Sum(summand, (s, 1, m)), total)
                before = tuple(Equation(q, sums[entry(q)]) for q in (s1, s2))
                value_ = Elementwise(_entries(total), z.rows)
                out[wrt] = Backward(value_, value_, before, steps)
            elif total in sums:
                out[wrt] = Backward(sums[total], sums[total])
            else:
                raise NotImplementedError(f"no matrix form for {total}")
        return out

    def factor(self, wrt: Quantity) -> Factor:
        """∂uᵢₛ/∂zⱼₜ as SymPy finds it (with i = j): every sample t reaches every sample s."""
        derivative = self._over_batch(self.derivative(wrt), j, gradient(self.output))
        derivative = sp.factor_terms(self._normalized(derivative, j, (s, t)))
        index_form = Equation(Partial(self.at(self.output, j, s), self.at(wrt, j, t)), derivative)
        return Factor(Partial(self.output, wrt), derivative, index_form)


def batch_norm(x: Quantity, layer: int) -> BatchNorm:
    """Batch normalization of layer ``layer``'s pre-activations, with γ⁽ˡ⁾ and β⁽ˡ⁾."""
    return BatchNorm(value("u", layer, x.rows), (x,), (param("gamma", layer, x.rows, role="gamma"),
                                                       param("beta", layer, x.rows, role="beta")),
                     "batch normalization")


@dataclass(frozen=True)
class LayerNorm(Op):
    """Layer normalization: uᵢ = γᵢ (zᵢ − μ)/√(σ² + ε) + βᵢ, with μ = Σₖ zₖ/n and σ² = Σₖ (zₖ − μ)²/n
    over the n units of each sample; no running statistics.

    Every unit of a sample reads every other, as in softmax: the backward map is SymPy's
    ∂L/∂zⱼ = Σᵢ gᵢ ∂uᵢ/∂zⱼ with the sums over the units named by their definitions (Σₖ zₖ = n μ,
    Σₖ (zₖ − μ)² = n σ², zₖ − μ = x̂ₖ √(σ² + ε)), and what remains read as the matrix form.
    """

    epsilon: sp.Expr = EPSILON

    @property
    def units(self) -> sp.Symbol:
        return sp.Symbol("n", integer=True, positive=True)

    @property
    def mean(self) -> Quantity:
        return value("mu", self.output.layer, 1, f"mu{self.output.layer}")

    @property
    def variance(self) -> Quantity:
        return value("sigma^2", self.output.layer, 1, f"var{self.output.layer}")

    @property
    def normalized(self) -> Quantity:
        return value("xhat", self.output.layer, self.output.rows)

    def sums(self) -> tuple[Quantity, Quantity]:
        """Σᵢ gᵢγᵢ and Σᵢ gᵢγᵢx̂ᵢ per sample, which the backward map reads."""
        layer = self.output.layer
        return (value("s", f"{layer},1", 1, f"s{layer}_1"), value("s", f"{layer},2", 1, f"s{layer}_2"))

    def unit_mean(self, units: sp.Expr) -> sp.Expr:
        return sp.Sum(self.at(self.inputs[0], k), (k, 1, units)) / units

    def unit_variance(self, units: sp.Expr) -> sp.Expr:
        return sp.Sum((self.at(self.inputs[0], k) - self.unit_mean(units)) ** 2, (k, 1, units)) / units

    def entry(self, index: sp.Symbol, units: sp.Expr | None = None) -> sp.Expr:
        (z,), (gamma, beta) = self.inputs, self.params
        units = self.output.rows if units is None else units
        centred = self.at(z, index) - self.unit_mean(units)
        return self.at(gamma, index) * centred / sp.sqrt(self.unit_variance(units) + self.epsilon) + self.at(beta, index)

    def forward_equations(self) -> tuple[Equation, ...]:
        """μ, σ² over the units of each sample, x̂ = (z − μ)/√(σ² + ε), then u = γ ⊙ x̂ + β."""
        (z,), (gamma, beta) = self.inputs, self.params
        mu, var, xhat = self.mean, self.variance, self.normalized
        rows = z.rows
        return (
            Equation(mu, sp.MatMul(sp.Integer(1) / rows, UnitSum(z))),
            Equation(var, sp.MatMul(sp.Integer(1) / rows, UnitSum(Elementwise((entry(z) - entry(mu)) ** 2, rows)))),
            Equation(xhat, Elementwise((entry(z) - entry(mu)) / sp.sqrt(entry(var) + self.epsilon), rows)),
            Equation(self.output, Elementwise(entry(gamma) * entry(xhat) + entry(beta), rows)),
        )

    def forward(self) -> sp.Basic:
        return self.forward_equations()[-1].rhs

    def _total(self, f: sp.Expr, limits: tuple, upstream: Quantity) -> sp.Expr:
        """Σ over the units, term by term, with the definitions of μ, σ², Σgγ and Σgγx̂."""
        index, low, high = limits
        z, gamma, xhat = self.inputs[0], self.params[0], self.normalized
        mu, var = entry(self.mean), entry(self.variance)
        s1, s2 = (entry(q) for q in self.sums())
        if f == (self.at(z, index) - mu) ** 2:
            return self.units * var
        g = self.at(upstream, index) * self.at(gamma, index)
        known = {sp.Integer(1): self.units, self.at(z, index): self.units * mu, g: s1, g * self.at(xhat, index): s2}
        return _named_sum(f, (index, low, high), known)

    def _named(self, expr: sp.Expr, upstream: Quantity) -> sp.Expr:
        """Sums over the units named, then zₖ = μ + √(σ² + ε) x̂ₖ, the definition of x̂ read backwards."""
        expr = expr.replace(sp.Sum, lambda body, limits: self._total(body, limits, upstream))
        z, xhat = self.inputs[0], self.normalized
        spread = sp.sqrt(entry(self.variance) + self.epsilon)
        return expr.xreplace({self.at(z, x): entry(self.mean) + spread * self.at(xhat, x) for x in (i, j)})

    def derivative(self, wrt: Quantity) -> sp.Expr:
        """∂uᵢ/∂x by ``sympy.diff`` of the index form, x = zⱼ, γⱼ or βⱼ."""
        return sp.diff(self.entry(i, self.units), self.at(wrt, j))

    def backward(self, upstream: sp.Basic) -> dict[Quantity, Backward]:
        """∂L/∂zⱼ = Σᵢ gᵢ ∂uᵢ/∂zⱼ, and ∂L/∂γ, ∂L/∂β summed over the samples (g = ∂L/∂u, stored)."""
        if not isinstance(upstream, Quantity):
            raise NotImplementedError("layer normalization reads a stored ∂L/∂u")
        (z,), (gamma, beta) = self.inputs, self.params
        xhat, (s1, s2) = self.normalized, self.sums()
        g = sp.HadamardProduct(upstream, gamma)
        sums = {s1: UnitSum(g), s2: UnitSum(sp.HadamardProduct(upstream, gamma, xhat))}
        out = {}
        for wrt in (z, gamma, beta):
            summand = self.at(upstream, i) * self._named(self.derivative(wrt), upstream)
            total = sp.factor(self._total(summand, (i, 1, self.units), upstream)).subs(self.units, z.rows)
            if wrt == z:
                before = tuple(Equation(q, sums[q]) for q in (s1, s2))
                value_ = Elementwise(_entries(total), z.rows)
                out[wrt] = Backward(value_, value_, before, (sp.Sum(summand, (i, 1, self.units)), total))
            else:
                per_sample = lift(total, j, z.rows)
                out[wrt] = Backward(SampleSum(per_sample), SampleSum(per_sample))
        return out

    def factor(self, wrt: Quantity) -> Factor:
        """∂uᵢ/∂zⱼ as SymPy finds it: every unit of a sample reaches every other."""
        derivative = self._named(self.derivative(wrt), gradient(self.output))
        index_form = Equation(Partial(self.at(self.output, i), self.at(wrt, j)), derivative)
        return Factor(Partial(self.output, wrt), derivative, index_form)


def layer_norm(x: Quantity, layer: int) -> LayerNorm:
    """Layer normalization of layer ``layer``'s pre-activations, with γ⁽ˡ⁾ and β⁽ˡ⁾."""
    return LayerNorm(value("u", layer, x.rows), (x,), (param("gamma", layer, x.rows, role="gamma"),
                                                       param("beta", layer, x.rows, role="beta")),
                     "layer normalization")


DROP = sp.Symbol("p", positive=True)  # the probability of dropping a unit, as torch's


@dataclass(frozen=True)
class Dropout(Op):
    """Inverted dropout: dᵢ = aᵢ Mᵢ/(1 − p), M a 0/1 mask drawn per sample and unit (1 keeps the
    unit, with probability 1 − p). The mask is an input of the derivation, as X is: the backward
    map multiplies by the same M/(1 − p). At inference there is no mask: d = a.
    """

    rate: sp.Expr = DROP

    def entry(self, index: sp.Symbol) -> sp.Expr:
        a, mask = self.inputs
        return self.at(a, index) * self.at(mask, index) / (1 - self.rate)


def dropout(x: Quantity, layer: int) -> Dropout:
    """Inverted dropout of layer ``layer``'s activations, with mask M⁽ˡ⁾."""
    mask = Quantity(f"mask{layer}", x.rows, 1, MASK, "M", layer)
    return Dropout(value("d", layer, x.rows), (x, mask), (), "dropout")


# -- registry of ops a network may insert ------------------------------------------------------

AFTER_AFFINE, AFTER_ACTIVATION = "after_affine", "after_activation"


@dataclass(frozen=True)
class Registration:
    """How to make a registered op for a layer: ``make(x, layer) -> Op`` and where it goes."""

    name: str
    make: Callable[[Quantity, int], Op]
    where: str = AFTER_AFFINE
    init: dict[str, str] = field(default_factory=dict)  # parameter role → "ones" or "zeros" under fan_in


REGISTRY: dict[str, Registration] = {}


def register(name: str, make: Callable[[Quantity, int], Op], where: str = AFTER_AFFINE,
             init: dict[str, str] | None = None) -> Registration:
    """Make ``--op NAME:LAYER`` (and ``ops=[(NAME, LAYER)]``) insert ``make(x, layer)`` into layer ``layer``.

    ``where`` is AFTER_AFFINE (between z⁽ˡ⁾ and the activation) or AFTER_ACTIVATION.
    ``init`` says how each parameter role starts under ``init="fan_in"`` ("ones" or "zeros").
    """
    if where not in (AFTER_AFFINE, AFTER_ACTIVATION):
        raise ValueError(f"where must be {AFTER_AFFINE!r} or {AFTER_ACTIVATION!r}")
    registration = Registration(name, make, where, dict(init or {}))
    REGISTRY[name] = registration
    return registration


def fan_in_start(role: str) -> str:
    """How a parameter of this role starts under ``init="fan_in"``: "weight" (variance 1/fan-in),
    "zeros" (biases) or "ones", as its op's registration says."""
    if role == "weight":
        return "weight"
    for registration in REGISTRY.values():
        if role in registration.init:
            return registration.init[role]
    return "zeros"


register("batch_norm", batch_norm, AFTER_AFFINE, init={"gamma": "ones", "beta": "zeros"})
register("layer_norm", layer_norm, AFTER_AFFINE, init={"gamma": "ones", "beta": "zeros"})
register("dropout", dropout, AFTER_ACTIVATION)
