"""The training step as NumPy calls that write into arrays made once.

``z1 = np.dot(W1, X) + b1`` allocates a fresh (units × m) array for the product and
another for the sum. On wide layers, getting that memory from the system every step
costs more than the arithmetic (about twice the time of the product itself on
64-128-10 with 1,797 samples). So ``train`` runs a step in which every statement of the
derivation is lowered, node by node, into ufunc calls with ``out=``:

* the values the derivation names (z, a, δ, ∂L/∂W, ∂L/∂b) live in work arrays made
  once per batch size;
* a statement's intermediate results live in its own scratch arrays, ``delta1_t1`` …;
* an elementwise formula's shared subexpressions are computed once (``sympy.cse``);
* activations are written out from their code form, so σ(z) is four ufunc calls into
  a⁽ˡ⁾ rather than a helper that allocates.

One call per line, each statement headed by its formula, as Tangent writes derivatives.
A node this module does not know is assigned whole (``out[...] = …``): correct, slower.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp
from sympy.codegen.numpy_nodes import logaddexp

from .activations import ActivationBase, z
from .algebra import PARAM, Elementwise, Equation, SampleSum, Softmax, UnitSum
from .codegen import _CODE, Statement, fits, short_assignments, statement
from .derive import Derivation

# SymPy functions whose NumPy ufunc takes out=, by the ufunc's name.
_UNARY = {sp.exp: "exp", sp.log: "log", sp.tanh: "tanh", sp.sinh: "sinh", sp.cosh: "cosh",
          sp.sin: "sin", sp.cos: "cos", sp.tan: "tan", sp.atan: "arctan", sp.asinh: "arcsinh",
          sp.Abs: "absolute"}
_BINARY = {logaddexp: "logaddexp", sp.Max: "maximum", sp.Min: "minimum"}


@dataclass(frozen=True)
class WorkArray:
    """One array a step writes into: its name and its shape as code (``(2, m)``)."""

    name: str
    shape: str


def _is_leaf(expr: sp.Basic) -> bool:
    """A value a ufunc can take as it is: a name, a number, or a transposed name."""
    if isinstance(expr, sp.Transpose):
        return _is_leaf(expr.arg)
    return isinstance(expr, (sp.Symbol, sp.MatrixSymbol, sp.Number, sp.NumberSymbol))


class StepWriter:
    """Lowers a derivation's forward pass, backward pass, gradients and updates to in-place code.

    Methods ``_into_<Node>(expr, out)`` return the lines that leave expr's value in the
    array named ``out``; they are found along the node's class hierarchy, as SymPy's
    printers find ``_print_<Node>``.
    """

    def __init__(self, d: Derivation) -> None:
        self.d = d
        self.rows: dict[str, int] = {d.X.name: int(d.X.rows), "y": int(d.Y.rows), d.Y.name: int(d.Y.rows)}
        for equation in (*d.forward, *d.backward):
            lhs = equation.lhs  # a matrix, or a Symbol for one number per sample (Σ over units)
            self.rows[lhs.name] = int(lhs.rows) if isinstance(lhs, sp.MatrixSymbol) else 1
        self.code_forms = {f.function: f.code_formula for f in d.activations if f.elementwise}
        self.work: list[WorkArray] = []
        self._owner = ""
        self._scratch = 0

    # -- the step ---------------------------------------------------------------------

    def step(self) -> list[Statement]:
        """Every line of one training step, with each equation's formula on its first line."""
        d = self.d
        lines = []
        for equation in (*d.forward, *d.backward, *d.gradients):
            lines += self._equation(equation)
        for update in d.updates:
            lines += self._update(update)
        return lines

    def _equation(self, equation: Equation) -> list[Statement]:
        name = equation.lhs.name
        if equation.lhs.of is not None and equation.lhs.of.kind == PARAM:  # shaped like the parameter
            rows, cols = equation.lhs.shape
            self.work.append(WorkArray(name, f"({int(rows)}, {int(cols)})"))
        else:
            self.work.append(WorkArray(name, f"({self.rows[name]}, m)"))
        self._owner, self._scratch = name, 0
        return self._headed(statement(equation).formula, self.into(equation.computed, name))

    def _update(self, update: Equation) -> list[Statement]:
        """θ ← θ − α ∂L/∂θ: the gradient's own array is scaled in place, as nothing reads it later."""
        formula = statement(update).formula
        coeff, matrices = update.rhs.as_coeff_matrices() if isinstance(update.rhs, sp.MatMul) else (1, [])
        gradient = matrices[0].name if len(matrices) == 1 and isinstance(matrices[0], sp.MatrixSymbol) else None
        target = _CODE.doprint(update.lhs)
        if gradient is None or gradient not in {w.name for w in self.work}:
            return self._headed(formula, [f"{target} -= {_CODE.doprint(update.rhs)}"])
        return self._headed(formula, [f"{gradient} *= {self.leaf(coeff)}", f"{target} -= {gradient}"])

    @staticmethod
    def _headed(formula: str, lines: list[str]) -> list[Statement]:
        first, *rest = lines
        return [Statement("", first, formula, ""), *(Statement("", line, "", "") for line in rest)]

    # -- dispatch and helpers ---------------------------------------------------------------

    def into(self, expr: sp.Basic, out: str) -> list[str]:
        """Lines that leave ``expr``'s value in the array ``out``."""
        if _is_leaf(expr):
            return [f"np.copyto({out}, {self.leaf(expr)})"]
        for cls in type(expr).__mro__:
            method = getattr(self, f"_into_{cls.__name__}", None)
            if method is not None:
                lines = method(expr, out)
                if lines is not None:
                    return lines
                break
        return self._whole(expr, out)

    def _whole(self, expr: sp.Basic, out: str) -> list[str]:
        """The fallback: the expression as NumPy evaluates it, copied into out."""
        lines = [f"{name} = {code}" for name, code in short_assignments(f"{out}_value", expr)]
        last_name, last_code = lines[-1].split(" = ", 1)
        if fits(f"{out}[...]", last_code):
            return [*lines[:-1], f"{out}[...] = {last_code}"]
        return [*lines, f"{out}[...] = {last_name}"]

    def leaf(self, expr: sp.Basic) -> str:
        """A name or a number as a ufunc argument; numbers as floats, which NumPy need not convert."""
        if isinstance(expr, sp.Number):
            return repr(float(expr))
        return _CODE.doprint(expr)

    def operand(self, expr: sp.Basic, lines: list[str]) -> str:
        """expr as a ufunc argument: itself when a leaf, else computed into a new scratch array."""
        if _is_leaf(expr):
            return self.leaf(expr)
        self._scratch += 1
        name = f"{self._owner}_t{self._scratch}"
        self.work.append(WorkArray(name, f"({self.rows_of(expr)}, m)"))
        lines += self.into(expr, name)
        return name

    def rows_of(self, expr: sp.Basic) -> int:
        """The rows of a per-sample value: its matrix shape, or the widest array in its formula."""
        if isinstance(expr, sp.MatrixExpr):
            return int(expr.shape[0])
        widths = [self.rows[s.name] for s in expr.free_symbols if s.name in self.rows]
        return max(widths, default=1)

    def _head(self, args: list[sp.Basic], out: str, combine: str) -> tuple[list[str], list[sp.Basic]]:
        """Start out from the first operand that needs computing (or combine two leaves);
        return the lines and the operands still to fold in."""
        lines: list[str] = []
        compound = next((arg for arg in args if not _is_leaf(arg)), None)
        if compound is not None:
            lines += self.into(compound, out)
            rest = list(args)
            rest.remove(compound)
            return lines, rest
        if len(args) == 1:
            return [f"np.copyto({out}, {self.leaf(args[0])})"], []
        first, second, *rest = args
        return [f"np.{combine}({self.leaf(first)}, {self.leaf(second)}, out={out})"], rest

    # -- matrix nodes ------------------------------------------------------------------

    def _into_MatAdd(self, expr: sp.MatAdd, out: str) -> list[str]:
        lines, rest = self._head(list(expr.args), out, "add")
        for term in rest:
            lines.append(f"{out} += {self.operand(term, lines)}")
        return lines

    def _into_MatMul(self, expr: sp.MatMul, out: str) -> list[str] | None:
        coeff, matrices = expr.as_coeff_matrices()
        if len(matrices) != 2 or not all(_is_leaf(arg) for arg in matrices):
            return None
        left, right = (self.leaf(arg) for arg in matrices)
        lines = [f"np.dot({left}, {right}, out={out})"]
        if coeff != 1:
            lines.append(f"{out} *= {self.leaf(coeff)}")
        return lines

    def _into_HadamardProduct(self, expr: sp.HadamardProduct, out: str) -> list[str]:
        lines, rest = self._head(list(expr.args), out, "multiply")
        for factor in rest:
            lines.append(f"{out} *= {self.operand(factor, lines)}")
        return lines

    def _into_Elementwise(self, expr: Elementwise, out: str) -> list[str]:
        formula = expr.expr.replace(lambda e: isinstance(e, ActivationBase) and type(e) in self.code_forms,
                                    lambda e: self.code_forms[type(e)].subs(z, e.args[0]))
        shared, (reduced,) = sp.cse(formula, symbols=sp.numbered_symbols(f"{out}_s", real=True))
        lines = []
        for name, value in shared:
            self.rows[name.name] = self.rows_of(value)
            self.work.append(WorkArray(name.name, f"({self.rows[name.name]}, m)"))
            lines += self.into(value, name.name)
        return lines + self.into(reduced, out)

    def _into_SampleSum(self, expr: SampleSum, out: str) -> list[str]:
        lines: list[str] = []
        return lines + [f"{self.operand(expr.arg, lines)}.sum(axis=1, keepdims=True, out={out})"]

    def _into_UnitSum(self, expr: UnitSum, out: str) -> list[str]:
        lines: list[str] = []
        return lines + [f"{self.operand(expr.arg, lines)}.sum(axis=0, keepdims=True, out={out})"]

    def _into_Softmax(self, expr: Softmax, out: str) -> list[str]:
        lines: list[str] = []
        arg = self.operand(expr.arg, lines)
        return lines + [
            f"np.subtract({arg}, {arg}.max(axis=0, keepdims=True), out={out})",
            f"np.exp({out}, out={out})",
            f"{out} /= {out}.sum(axis=0, keepdims=True)",
        ]

    # -- scalar nodes (entries of an elementwise formula) -------------------------------------

    def _into_Add(self, expr: sp.Add, out: str) -> list[str]:
        added = [t for t in expr.args if not t.could_extract_minus_sign()]
        subtracted = [-t for t in expr.args if t.could_extract_minus_sign()]
        if not added:  # −(x + y + …)
            return self.into(sp.Add(*subtracted), out) + [f"np.negative({out}, out={out})"]
        compound = next((t for t in subtracted if not _is_leaf(t)), None)
        if any(not _is_leaf(t) for t in added) or not subtracted:
            lines, rest = self._head(added, out, "add")
        elif compound is not None:  # 1 − a²: a² into out, then 1 − out
            lines = [*self.into(compound, out), f"np.subtract({self.leaf(added[0])}, {out}, out={out})"]
            rest, subtracted = added[1:], [t for t in subtracted if t is not compound]
        else:  # x − y in one call
            lines = [f"np.subtract({self.leaf(added[0])}, {self.leaf(subtracted[0])}, out={out})"]
            rest, subtracted = added[1:], subtracted[1:]
        for term in rest:
            lines.append(f"{out} += {self.operand(term, lines)}")
        for term in subtracted:
            lines.append(f"{out} -= {self.operand(term, lines)}")
        return lines

    def _into_Mul(self, expr: sp.Mul, out: str) -> list[str]:
        coeff, factors = expr.as_coeff_mul()
        numerator = [f for f in factors if not (f.is_Pow and f.exp.is_Number and f.exp < 0)]
        denominator = [f.base ** -f.exp for f in factors if f not in numerator]
        if not numerator:
            numerator, coeff = [coeff], sp.Integer(1)
        if coeff == 1 and len(numerator) == 1 and _is_leaf(numerator[0]) and denominator:  # x / (…)
            lines = []
            below = self.operand(denominator.pop(0), lines)
            lines.append(f"np.divide({self.leaf(numerator[0])}, {below}, out={out})")
            rest = []
        elif coeff == -1 and len(numerator) == 1 and _is_leaf(numerator[0]):
            lines, rest, coeff = [f"np.negative({self.leaf(numerator[0])}, out={out})"], [], sp.Integer(1)
        elif coeff not in (1, -1) and all(_is_leaf(f) for f in numerator):
            numerator.insert(0, coeff)
            coeff = sp.Integer(1)
            lines, rest = self._head(numerator, out, "multiply")
        else:
            lines, rest = self._head(numerator, out, "multiply")
        for factor in rest:
            lines.append(f"{out} *= {self.operand(factor, lines)}")
        for factor in denominator:
            lines.append(f"{out} /= {self.operand(factor, lines)}")
        if coeff == -1:
            lines.append(f"np.negative({out}, out={out})")
        elif coeff != 1:
            lines.append(f"{out} *= {self.leaf(coeff)}")
        return lines

    def _into_Pow(self, expr: sp.Pow, out: str) -> list[str]:
        base, exp = expr.args
        if exp == 2:
            return self._unary("square", base, out)
        if exp == sp.Rational(1, 2):
            return self._unary("sqrt", base, out)
        if exp.is_Integer and exp < 0:
            lines = self.into(base ** -exp, out) if exp != -1 or not _is_leaf(base) else []
            source = out if lines else self.leaf(base)
            return lines + [f"np.divide(1.0, {source}, out={out})"]
        lines = [] if _is_leaf(base) else self.into(base, out)
        source = out if lines else self.leaf(base)
        return lines + [f"np.power({source}, {self.leaf(exp)}, out={out})"]

    def _unary(self, ufunc: str, arg: sp.Basic, out: str) -> list[str]:
        if _is_leaf(arg):
            return [f"np.{ufunc}({self.leaf(arg)}, out={out})"]
        return self.into(arg, out) + [f"np.{ufunc}({out}, out={out})"]

    def _into_Application(self, expr: sp.Function, out: str) -> list[str] | None:
        if type(expr) in _UNARY and len(expr.args) == 1:
            return self._unary(_UNARY[type(expr)], expr.args[0], out)
        if type(expr) in _BINARY and len(expr.args) == 2:
            left, right = expr.args
            lines: list[str] = []
            if not _is_leaf(right):  # the computed operand goes into out; the other may need scratch
                lines += self.into(right, out)
                return lines + [f"np.{_BINARY[type(expr)]}({self.operand(left, lines)}, {out}, out={out})"]
            if not _is_leaf(left):
                lines += self.into(left, out)
                return lines + [f"np.{_BINARY[type(expr)]}({out}, {self.leaf(right)}, out={out})"]
            return [f"np.{_BINARY[type(expr)]}({self.leaf(left)}, {self.leaf(right)}, out={out})"]
        return None

    def _into_Heaviside(self, expr: sp.Heaviside, out: str) -> list[str]:
        at_zero = float(expr.args[1]) if len(expr.args) > 1 else 0.5
        lines: list[str] = []
        return lines + [f"np.heaviside({self.operand(expr.args[0], lines)}, {at_zero!r}, out={out})"]
