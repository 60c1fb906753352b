"""The derivation as explicit loops, for the numba backend.

numba compiles loops over array entries into machine code; written this way a training step
allocates nothing and makes no Python calls, which is what makes small networks fast. Each
equation of the derivation becomes the loops its matrix form stands for — ``W @ a + b``,
``δ (a)ᵀ``, ``(W)ᵀ δ ⊙ f'(z)``, ``Σ`` over samples or units, softmax per column — with the
scalar formulas printed by :class:`symbp.codegen.NumpyCodePrinter` with every vector name
indexed. Weight and bias gradients are applied as they are computed (the updates come after
the whole backward pass, so no later formula reads a weight that has moved).
"""

from __future__ import annotations

import sympy as sp

from .activations import Activation
from .algebra import Elementwise, Equation, SampleSum, Softmax, UnitSum
from .codegen import NumpyCodePrinter, fits, short_assignments, statement
from .derive import Derivation, alpha

KERNEL_INDENT = 8  # the kernel's body (4) inside its loop over steps (4)
# Weight matrices with at least this many entries are multiplied by BLAS (np.dot, which numba
# hands to SciPy's BLAS) instead of loops: on 64-128-10 loops were 5 times slower than NumPy,
# while on 2-2-1 a BLAS call per product costs more than the product.
BLAS_MIN_ENTRIES = 256


class LoopWriter:
    """Writes one derivation's forward and backward pass as loops over units i, j and samples k."""

    def __init__(self, d: Derivation) -> None:
        self.d = d
        self.rows = {d.X.name: int(d.X.rows), d.Y.name: int(d.Y.rows)}
        for layer in d.layers:
            for symbol in (layer.z, layer.a, layer.delta, layer.b):
                self.rows[symbol.name] = int(symbol.rows)
            self.rows[layer.W.name] = int(layer.W.rows)
        self.cols = {layer.W.name: int(layer.W.cols) for layer in d.layers}
        self.sample_rows = {e.lhs.name for e in d.backward if isinstance(e.computed, UnitSum)}
        self.products: list[tuple[str, str]] = []  # (gradient, shape) arrays BLAS writes into

    def wide(self, W: str) -> bool:
        """Whether products with this weight matrix go to BLAS."""
        return self.rows[W] * self.cols[W] >= BLAS_MIN_ENTRIES

    # -- scalar formulas with every vector name indexed ---------------------------------------
    def scalar(self, expr: sp.Expr) -> str:
        names = {}
        for symbol in expr.free_symbols:
            if symbol.name in self.sample_rows:
                names[symbol.name] = f"{symbol.name}[0, k]"
            elif symbol.name in self.rows:
                code = "Y" if symbol.name == self.d.Y.name else symbol.name
                names[symbol.name] = f"{code}[i, k]"
        return _JitPrinter(names).doprint(expr)

    def assign(self, target: str, expr: sp.Expr, indent: int, op: str = "=") -> list[str]:
        """target op expr, split into short statements when the line would be long."""
        code = self.scalar(expr)
        if fits(target, code, indent):
            return [f"{target} {op} {code}"]
        names = {s.name: sp.Symbol(f"{s.name}_ik") for s in sorted(expr.free_symbols, key=str)
                 if s.name in self.rows or s.name in self.sample_rows}
        pieces = short_assignments("t", expr.xreplace({sp.Symbol(k): v for k, v in names.items()}), indent,
                                   _JitPrinter())
        loads = [f"{v.name} = {self.scalar(sp.Symbol(k))}" for k, v in names.items()]
        *temps, (_, last) = pieces
        return [*loads, *(f"{name} = {value}" for name, value in temps), f"{target} {op} {last}"]

    # -- one equation -------------------------------------------------------------------------
    def loop(self, equation: Equation) -> list[str]:
        target, value = equation.lhs.name, equation.computed
        rows = self.rows.get(target, 1)
        if isinstance(value, sp.MatAdd):  # z = W @ a + b, samples innermost: rows of C arrays are contiguous
            (W, previous), bias = _product_and_bias(value)
            if self.wide(W):
                return [
                    f"np.dot({W}, {_code(previous)}, {target})",
                    f"for i in range({rows}):",
                    f"    shift = {bias}[i, 0]",
                    "    for k in range(m):",
                    f"        {target}[i, k] += shift",
                ]
            return [
                f"for i in range({rows}):",
                "    for k in range(m):",
                f"        {target}[i, k] = {bias}[i, 0]",
                f"    for j in range({self.cols[W]}):",
                f"        weight = {W}[i, j]",
                "        for k in range(m):",
                f"            {target}[i, k] += weight * {_code(previous)}[j, k]",
            ]
        if isinstance(value, Softmax):
            z = value.arg.name
            return [
                "for k in range(m):",
                f"    top = {z}[0, k]",
                f"    for i in range(1, {rows}):",
                f"        top = max(top, {z}[i, k])",
                "    total = 0.0",
                f"    for i in range({rows}):",
                f"        {target}[i, k] = np.exp({z}[i, k] - top)",
                f"        total += {target}[i, k]",
                f"    for i in range({rows}):",
                f"        {target}[i, k] /= total",
            ]
        if isinstance(value, UnitSum):
            inner = value.arg.expr
            return [
                "for k in range(m):",
                "    total = 0.0",
                f"    for i in range({self.rows[_vector_of(inner, self.rows)]}):",
                *(f"        {line}" for line in self.assign("total", inner, KERNEL_INDENT + 8, "+=")),
                f"    {target}[0, k] = total",
            ]
        if isinstance(value, Elementwise) or _all_elementwise(value):
            expr = value.expr if isinstance(value, Elementwise) else sp.Mul(*(arg.expr for arg in value.args))
            return [
                f"for i in range({rows}):",
                "    for k in range(m):",
                *(f"        {line}" for line in self.assign(f"{target}[i, k]", expr, KERNEL_INDENT + 8)),
            ]
        if isinstance(value, sp.HadamardProduct):  # δ = (W)ᵀ δ_above ⊙ f'(z)
            propagated, slope = value.args
            W, above = propagated.args[0].arg.name, propagated.args[1].name
            if self.wide(W):
                return [
                    f"np.dot({W}.T, {above}, {target})",
                    f"for i in range({rows}):",
                    "    for k in range(m):",
                    f"        total = {target}[i, k]",
                    *(f"        {line}" for line in self.assign(f"{target}[i, k]", sp.Symbol("total") * slope.expr,
                                                                KERNEL_INDENT + 8)),
                ]
            return [
                f"for i in range({rows}):",
                "    for k in range(m):",
                f"        {target}[i, k] = 0.0",
                f"    for j in range({self.rows[W]}):",
                f"        weight = {W}[j, i]",
                "        for k in range(m):",
                f"            {target}[i, k] += weight * {above}[j, k]",
                "    for k in range(m):",
                f"        total = {target}[i, k]",
                *(f"        {line}" for line in self.assign(f"{target}[i, k]", sp.Symbol("total") * slope.expr,
                                                            KERNEL_INDENT + 8)),
            ]
        raise NotImplementedError(f"no loop form for {target} = {value}")

    def gradient_update(self, gradient: Equation) -> list[str]:
        """W ← W − α δ (a)ᵀ or b ← b − α Σ δ, entry by entry."""
        name = gradient.lhs.of.name
        value = gradient.computed
        if isinstance(value, SampleSum):
            delta = value.arg.name
            return [
                f"for i in range({self.rows[name]}):",
                "    total = 0.0",
                "    for k in range(m):",
                f"        total += {delta}[i, k]",
                f"    {name}[i, 0] -= {_code(alpha)} * total",
            ]
        delta, previous = value.args[0].name, value.args[1].arg.name
        if self.wide(name):
            gradient_name = gradient.lhs.name
            self.products.append((gradient_name, f"({self.rows[name]}, {self.cols[name]})"))
            return [
                f"np.dot({delta}, {_code(sp.Symbol(previous))}.T, {gradient_name})",
                f"for i in range({self.rows[name]}):",
                f"    for j in range({self.cols[name]}):",
                f"        {name}[i, j] -= {_code(alpha)} * {gradient_name}[i, j]",
            ]
        return [
            f"for i in range({self.rows[name]}):",
            f"    for j in range({self.cols[name]}):",
            "        total = 0.0",
            "        for k in range(m):",
            f"            total += {delta}[i, k] * {_code(sp.Symbol(previous))}[j, k]",
            f"        {name}[i, j] -= {_code(alpha)} * total",
        ]

    def kernel_context(self) -> dict:
        d = self.d
        work = [(e.lhs.name, 1 if e.lhs.name in self.sample_rows else self.rows[e.lhs.name])
                for e in (*d.forward, *d.backward)]
        by_param = {e.lhs.name: e for e in d.updates}
        scalars = [{"name": f.function.code_name, "formula": f"{f.function.unicode_symbol}(z)",
                    "lines": short_assignments("value", compiled_form(f), 4, _JitPrinter())}
                   for f in dict.fromkeys(d.activations) if f.elementwise]
        # (formula comment, loop lines) for every step, then for every parameter's update
        steps = [(statement(e).formula, self.loop(e)) for e in (*d.forward, *d.backward)]
        steps += [(statement(by_param[e.lhs.of.name]).formula, self.gradient_update(e)) for e in d.gradients]
        return {"scalars": scalars, "work": work, "steps": steps, "products": self.products}


def compiled_form(f: Activation) -> sp.Expr:
    """The formula the kernel evaluates for one number.

    Compiled code has no overflow warnings: exp overflows to inf and 1/(1 + inf) = 0 is the
    right limit, so the sigmoid's textbook form is safe there and cheaper than logaddexp.
    """
    return f.formula if f.name == "sigmoid" else f.code_formula


class _JitPrinter(NumpyCodePrinter):
    """Scalar formulas inside the kernel: activations call their compiled twins."""

    def _print_ActivationBase(self, expr: sp.Function) -> str:
        return f"_{type(expr).code_name}_jit({self._print(expr.args[0])})"

    def doprint(self, expr: sp.Basic, assign_to: str | None = None) -> str:
        text = super().doprint(expr, assign_to)
        # A conditional alone on the right of = needs no brackets (ruff format drops them).
        return text[1:-1] if isinstance(expr, (sp.Heaviside, sp.Piecewise)) else text

    # numba compiles Python's conditional expression; it has no np.heaviside, and np.where is for arrays.
    def _print_Heaviside(self, expr: sp.Heaviside) -> str:
        at_zero = float(expr.args[1]) if len(expr.args) > 1 else 0.5
        x = self._print(expr.args[0])
        if at_zero in (0.0, 1.0):
            return f"(1.0 if {x} {'>' if at_zero == 0 else '>='} 0 else 0.0)"
        return f"(1.0 if {x} > 0 else ({at_zero!r} if {x} == 0 else 0.0))"

    def _print_Piecewise(self, expr: sp.Piecewise) -> str:
        (value, condition), (otherwise, _) = expr.args
        return f"({self._print(value)} if {self._print(condition)} else {self._print(otherwise)})"

    def _print_Max(self, expr: sp.Max) -> str:
        return f"max({', '.join(self._print(arg) for arg in expr.args)})"

    def _print_Min(self, expr: sp.Min) -> str:
        return f"min({', '.join(self._print(arg) for arg in expr.args)})"

    def _print_Relational(self, expr: sp.core.relational.Relational) -> str:
        return f"{self._print(expr.lhs)} {expr.rel_op} {self._print(expr.rhs)}"


_NAMES = NumpyCodePrinter()


def _code(expr: sp.Basic) -> str:
    return _NAMES.doprint(expr)


def _product_and_bias(value: sp.MatAdd) -> tuple[tuple[str, sp.Basic], str]:
    product = next(arg for arg in value.args if isinstance(arg, sp.MatMul))
    bias = next(arg for arg in value.args if not isinstance(arg, sp.MatMul))
    W, previous = product.args
    return (W.name, previous), bias.name


def _all_elementwise(value: sp.Basic) -> bool:
    return isinstance(value, sp.HadamardProduct) and all(isinstance(arg, Elementwise) for arg in value.args)


def _vector_of(expr: sp.Expr, rows: dict[str, int]) -> str:
    """A vector a unit-wise formula runs over (all of its vectors have the same length)."""
    return next(s.name for s in sorted(expr.free_symbols, key=str) if s.name in rows)
