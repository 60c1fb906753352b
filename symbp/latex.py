"""LaTeX for a derivation, in the document's notation.

``BackpropLatexPrinter`` is SymPy's LaTeX printer with the notation the document uses:
layer superscripts W⁽ˡ⁾, ⊙ for the elementwise product, (W⁽ˡ⁾)ᵀ, σ'(z), ∂L/∂W.
``render_latex`` lays the derivation's equations out; it prints, it never derives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy as sp
from sympy.printing.latex import LatexPrinter

from .activations import ActivationBase
from .activations import a as act_a
from .algebra import (
    GRADIENT,
    SCRATCH,
    STATE,
    Elementwise,
    Entry,
    Equation,
    Partial,
    Quantity,
    SampleSum,
    Softmax,
    UnitSum,
    is_sum,
)
from .derive import Derivation, m
from .ops import Activate, Affine, Op, SoftmaxOp, gradient

_NAMES = {"alpha": r"\alpha", "L": "L", "m": "m"}


# What makes a bracketed expression tall enough for \left( … \right) to grow the brackets.
_TALL = (r"\frac", r"\sum", r"\prod", r"\int", r"\begin", r"\substack")
_PAIRS = {"(": ")", "[": "]"}


def plain_brackets(text: str) -> str:
    r"""\left( … \right) as plain ( … ) unless what they hold is tall (a fraction, a sum), as a
    textbook sets it: σ(z), (W⁽²⁾)ᵀ and (a − y)² without the gaps and oversized brackets."""
    result, stack, index = "", [], 0
    while index < len(text):
        if text.startswith("\\left", index) and text[index + 5:index + 6] in ("(", "[", ".", "|"):
            stack.append((len(result), text[index + 5]))
            result += text[index:index + 6]
            index += 6
        elif text.startswith("\\right", index) and text[index + 6:index + 7] in (")", "]", ".", "|") and stack:
            start, opening = stack.pop()
            closing = text[index + 6]
            inner = result[start + 6:]
            if _PAIRS.get(opening) == closing and not any(mark in inner for mark in _TALL):
                result = result[:start] + opening + inner.rstrip() + closing
            else:
                result += text[index:index + 7]
            index += 7
        else:
            result += text[index]
            index += 1
    return result


class BackpropLatexPrinter(LatexPrinter):
    """SymPy's LaTeX printer, speaking the document's notation."""

    printmethod = "_symbp_latex"

    def doprint(self, expr: sp.Basic) -> str:
        return plain_brackets(super().doprint(expr))

    def _print_Quantity(self, expr: Quantity) -> str:
        """W^{(2)}, δ^{(1)} for ∂L/∂z⁽¹⁾, ∂L/∂W^{(2)}, X."""
        if expr.kind == GRADIENT:
            of = expr.of
            if of.base == "z":
                return rf"\delta^{{({of.layer})}}"
            return rf"\frac{{\partial L}}{{\partial {self._print(of)}}}"
        base = super()._print_Symbol(sp.Symbol(expr.base)) if len(expr.base) > 1 else expr.base
        if expr.kind in (STATE, SCRATCH) and expr.of is not None:  # an optimizer's array for θ: v_θ
            return f"{base}_{{{self._print(expr.of)}}}"
        if "^" in base and expr.layer:  # σ², braced before its layer: {σ^{2}}^{(1)}
            base = f"{{{base}}}"
        return f"{base}^{{({expr.layer})}}" if expr.layer else base

    def _print_Symbol(self, expr: sp.Symbol, style: str = "plain") -> str:
        if isinstance(expr, Entry):
            return self._print_Quantity(expr.quantity)
        return _NAMES.get(expr.name) or super()._print_Symbol(expr, style)

    def _print_IndexedBase(self, expr: sp.IndexedBase) -> str:
        return self._print(expr.label)

    def _print_Indexed(self, expr: sp.Indexed) -> str:
        indices = "".join(self._print(index) for index in expr.indices)
        base = self._print(expr.base)
        if r"\frac" in base:  # an entry of ∂L/∂u: (∂L/∂u)_{js}, not a subscript on the fraction
            base = rf"\left({base}\right)"
        return f"{base}_{{{indices}}}"

    def _print_Mul(self, expr: sp.Mul) -> str:
        """A product in a textbook's order: ½(a − y)², σ(z)(1 − σ(z)), y log a, (a − y)/(a(1 − a)).

        Numbers lead, then symbols, then functions, then sums, then logarithms (whose argument
        reads on); a fraction whose numerator reads with a leading minus swaps that sign with a
        sum in its denominator. Anything else is SymPy's own printing.
        """
        if expr.could_extract_minus_sign():
            inner = -expr
            top, bottom = sp.fraction(inner, exact=True)
            if bottom != 1 and isinstance(top, sp.Add) and self._print(top).startswith("-"):
                flipped = sp.Add(*(-term for term in sp.Add.make_args(top)), evaluate=False)
                return rf"\frac{{{self._product(flipped)}}}{{{self._product(bottom)}}}"  # −(−a + y)/m as (a − y)/m
            text = self._print(inner)
            return rf"- \left({text}\right)" if isinstance(inner, sp.Add) else f"- {text}"
        coeff, rest = expr.as_coeff_Mul()
        if isinstance(coeff, sp.Rational) and not coeff.is_Integer and rest != 1:
            return rf"\frac{{{coeff.p}}}{{{coeff.q}}} {self._print(rest)}"
        numer, denom = sp.fraction(expr, exact=True)
        if denom == 1:
            return self._product(expr)
        if any(isinstance(f, (sp.MatrixExpr, sp.Indexed)) for f in sp.Mul.make_args(denom)):
            return super()._print_Mul(expr)
        numer, denom = _textbook_signs(numer, denom)
        constants = [f for f in sp.Mul.make_args(numer) if _is_constant(f)]
        if constants and len(constants) < len(sp.Mul.make_args(numer)):  # α m̂/(…) as α (m̂/(…))
            rest = sp.Mul(*(f for f in sp.Mul.make_args(numer) if f not in constants))
            return rf"{self._product(sp.Mul(*constants))} \frac{{{self._product(rest)}}}{{{self._product(denom)}}}"
        return rf"\frac{{{self._product(numer)}}}{{{self._product(denom)}}}"

    def _product(self, expr: sp.Expr) -> str:
        factors = sp.Mul.make_args(expr)
        if len(factors) == 1:
            return self._print(expr)
        coeff, rest = expr.as_coeff_Mul()
        ordered = sorted(sp.Mul.make_args(rest), key=_factor_rank)  # sorted() is stable: SymPy's order within a rank
        texts = [rf"\left({self._print(f)}\right)" if isinstance(f, sp.Add) else self._print(f) for f in ordered]
        lead = [] if coeff == 1 else ["-"] if coeff == -1 else [self._print(coeff)]
        return " ".join(lead + texts)

    def _print_Add(self, expr: sp.Add, order: str | None = None) -> str:
        """A sum of negative terms as −[…], shortest term first: −[y log a + (1 − y) log(1 − a)]."""
        terms = sp.Add.make_args(expr)
        if len(terms) > 1 and all(term.could_extract_minus_sign() for term in terms):
            return f"- {self._bracketed(-expr)}"
        return super()._print_Add(expr, order)

    def _bracketed(self, expr: sp.Add) -> str:
        inside = sorted(sp.Add.make_args(expr), key=sp.count_ops)
        return r"\left[" + " + ".join(self._print(term) for term in inside) + r"\right]"

    def _print_Sum(self, expr: sp.Sum) -> str:
        """−Σᵢ[…] rather than Σᵢ(−[…]): the sign of a negative summand goes in front, a summand
        that is a sum goes in brackets, shortest term first."""
        if expr.function.could_extract_minus_sign():
            return f"- {self._print(sp.Sum(-expr.function, *expr.limits))}"
        if len(expr.limits) == 1 and isinstance(expr.function, sp.Add):
            index, start, end = (self._print(part) for part in expr.limits[0])
            return rf"\sum_{{{index}={start}}}^{{{end}}} {self._bracketed(expr.function)}"
        return super()._print_Sum(expr)

    def _print_Pow(self, expr: sp.Pow) -> str:
        integer = expr.exp.is_Integer
        base = self._print(expr.base) if integer and isinstance(expr.base, (sp.Indexed, Entry)) else ""
        if "^" in base or r"\frac" in base:  # (W^{(1)}_{rc})^{2}, (∂L/∂W)^{2}: no double superscript
            return rf"\left({base}\right)^{{{self._print(expr.exp)}}}"
        return super()._print_Pow(expr)

    def _print_Heaviside(self, expr: sp.Heaviside, exp: object = None) -> str:
        """The step as Iverson's bracket: [x > 0] (0 at the kink, as the code and PyTorch take it)."""
        at_zero = expr.args[1] if len(expr.args) > 1 else sp.Rational(1, 2)
        if at_zero in (0, 1):
            relation = ">" if at_zero == 0 else r"\geq"
            return rf"[{self._print(expr.args[0])} {relation} 0]"
        return super()._print_Heaviside(expr, exp)

    def _print_KroneckerDelta(self, expr: sp.KroneckerDelta, exp: object = None) -> str:
        # Iverson's bracket: δ is taken by the errors δ⁽ˡ⁾.
        return rf"\left[{self._print(expr.args[0])} = {self._print(expr.args[1])}\right]"

    def _print_Transpose(self, expr: sp.Transpose) -> str:
        inner = self._print(expr.arg)
        if isinstance(expr.arg, Quantity) and not expr.arg.layer:
            return f"{inner}^{{T}}"
        return rf"\left({inner}\right)^{{T}}"

    def _print_HadamardProduct(self, expr: sp.HadamardProduct) -> str:
        return r" \odot ".join(self._factor(arg) for arg in expr.args)

    def _factor(self, arg: sp.Basic) -> str:
        """An operand of ⊙ or ·, parenthesized when it is a sum."""
        text = self._print(arg)
        return rf"\left({text}\right)" if is_sum(arg) else text

    def _print_MatMul(self, expr: sp.MatMul) -> str:
        coeff, matrices = expr.as_coeff_matrices()
        factors = [self._factor(arg) if not _is_negative(arg) else rf"\left({self._print(arg)}\right)"
                   for arg in matrices]
        text = " ".join(factors)
        if coeff == 1:
            return text
        return f"- {text}" if coeff == -1 else f"{self._print(coeff)} {text}"

    def _print_Elementwise(self, expr: Elementwise) -> str:
        """A formula read entry by entry: a product of vectors is written with ⊙, as the matrix
        formulas write it, vectors first and sums after (a ⊙ (1 − a), not (1 − a) a); a vector
        scaled by symbols has them in front (λ W, (1 − β₁) g), term by term."""
        formula = expr.expr
        if isinstance(formula, sp.Add) and any(_scaled_vector(term) for term in formula.args):
            text = ""
            for index, term in enumerate(self._as_ordered_terms(formula)):
                negative = term.could_extract_minus_sign()
                body = self._elementwise_product(-term if negative else term)
                sign = ("- " if negative else "") if index == 0 else (" - " if negative else " + ")
                text += sign + body
            return text
        return self._elementwise_product(formula)

    def _elementwise_product(self, formula: sp.Expr) -> str:
        if isinstance(formula, sp.Mul) and sp.fraction(formula)[1] == 1:
            coeff, factors = formula.as_coeff_mul()
            vectors = [f for f in factors if any(isinstance(s, Entry) for s in f.free_symbols)]
            if _scaled_vector(formula):
                scalars = coeff * sp.Mul(*(f for f in factors if f not in vectors))
                lead = self._factor(scalars) if isinstance(scalars, sp.Add) else self._print(scalars)
                return f"{lead} {self._factor(vectors[0])}"
            if len(vectors) > 1:
                scalars = [f for f in factors if f not in vectors]
                ordered = sorted(vectors, key=lambda f: isinstance(f, sp.Add))  # stable: sums last
                text = r" \odot ".join(rf"\left({self._print(f)}\right)" if isinstance(f, sp.Add) else self._print(f)
                                       for f in ordered)
                lead = self._print(coeff * sp.Mul(*scalars)) if (coeff != 1 or scalars) else ""
                if lead == "-1":
                    return f"- {text}"
                return f"{lead} {text}" if lead else text
        return self._print(formula)

    def _print_SampleSum(self, expr: SampleSum) -> str:
        return rf"\sum_{{\text{{samples}}}} {self._print(expr.arg)}"

    def _print_UnitSum(self, expr: UnitSum) -> str:
        return rf"\sum_{{\text{{units}}}} {self._factor(expr.arg)}"

    def _print_Softmax(self, expr: Softmax) -> str:
        return rf"\operatorname{{softmax}}\left({self._print(expr.arg)}\right)"

    def _print_DiagMatrix(self, expr: sp.DiagMatrix) -> str:
        return rf"\operatorname{{diag}}\left({self._print(expr.args[0])}\right)"

    def _print_Partial(self, expr: Partial) -> str:
        return rf"\frac{{\partial {self._print(expr.num)}}}{{\partial {self._print(expr.den)}}}"

    def _print_ActivationBase(self, expr: sp.Function, exp: str | None = None) -> str:
        text = rf"{type(expr).latex_symbol}\left({self._print(expr.args[0])}\right)"
        return rf"{text}^{{{exp}}}" if exp else text

    def _print_Derivative(self, expr: sp.Derivative) -> str:
        if isinstance(expr.expr, ActivationBase) and len(expr.variables) == 1:
            symbol = type(expr.expr).latex_symbol
            return rf"{symbol}'\left({self._print(expr.variables[0])}\right)"
        return super()._print_Derivative(expr)

    def _print_logaddexp(self, expr: sp.Function) -> str:
        left, right = (self._print(arg) for arg in expr.args)
        return rf"\log\left(e^{{{left}}} + e^{{{right}}}\right)"


class InlineLatexPrinter(BackpropLatexPrinter):
    """The same notation for math inside a line of prose: ∂L/∂z and ½ set small, so that a tall
    fraction does not push the lines of the paragraph apart."""

    def __init__(self) -> None:
        super().__init__({"fold_short_frac": True})

    def _print_Partial(self, expr: Partial) -> str:
        return rf"\partial {self._print(expr.num)} / \partial {self._print(expr.den)}"

    def _print_Quantity(self, expr: Quantity) -> str:
        if expr.kind == GRADIENT and expr.of.base != "z":
            return self._print_Partial(Partial(sp.Symbol("L"), expr.of))
        return super()._print_Quantity(expr)

    def _print_Mul(self, expr: sp.Mul) -> str:
        return super()._print_Mul(expr).replace(r"\frac{", r"\tfrac{")


class NumberLatexPrinter(BackpropLatexPrinter):
    """Numbers as a worked example shows them: four decimals, so that columns line up."""

    def _print_Float(self, expr: sp.Float) -> str:
        return f"{float(expr):.4f}"


def numbers(values: object) -> str:
    """A matrix of computed numbers (a 1 × 1 one as a plain number), to four decimals."""
    matrix = sp.Matrix(np.atleast_2d(np.asarray(values, dtype=float)).tolist())
    return _NUMBERS.doprint(matrix[0, 0] if matrix.shape == (1, 1) else matrix)


def inline(expr: sp.Basic) -> str:
    """One SymPy object in the document's notation, for inline math in prose."""
    return _INLINE.doprint(expr)


def _factor_rank(factor: sp.Expr) -> float:
    base = factor.base if isinstance(factor, sp.Pow) and factor.exp.is_Number else factor
    if isinstance(base, sp.KroneckerDelta):
        return 0
    if isinstance(base, sp.log):
        return 4
    if isinstance(base, sp.Add):
        return 3
    if isinstance(base, (sp.Function, sp.Derivative)):
        return 2
    return 1 if _is_constant(base) else 1.5  # μ v, α m̂: a hyperparameter before the quantity it scales


def _is_constant(factor: sp.Expr) -> bool:
    """A scalar symbol such as α, μ or m, not an entry of a quantity."""
    return isinstance(factor, sp.Symbol) and not isinstance(factor, Entry)


def _textbook_signs(numer: sp.Expr, denom: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """(−a + y)/(a(a − 1)) as (a − y)/(a(1 − a)): the minus moves from the numerator into a sum below."""
    if not (isinstance(numer, sp.Add) and latex(numer).startswith("-")):
        return numer, denom
    factors = list(sp.Mul.make_args(denom))
    for index, factor in enumerate(factors):
        if isinstance(factor, sp.Add):
            factors[index] = sp.Add(*(-term for term in sp.Add.make_args(factor)), evaluate=False)
            return sp.Add(*(-term for term in sp.Add.make_args(numer)), evaluate=False), sp.Mul(*factors, evaluate=False)
    return numer, denom


def _scaled_vector(term: sp.Basic) -> bool:
    """One vector times symbols (not only a number): λ W, (1 − β₁) g."""
    if not isinstance(term, sp.Mul):
        return False
    vectors = [f for f in term.args if any(isinstance(s, Entry) for s in f.free_symbols)]
    return len(vectors) == 1 and any(not f.is_number for f in term.args if f not in vectors)


def _is_negative(arg: sp.Basic) -> bool:
    return isinstance(arg, Elementwise) and arg.expr.could_extract_minus_sign()


_PRINTER = BackpropLatexPrinter()
_INLINE = InlineLatexPrinter()
_NUMBERS = NumberLatexPrinter()


def latex(expr: sp.Basic) -> str:
    """One SymPy object in the document's notation."""
    return _PRINTER.doprint(expr)


def equation_lines(equation: Equation, show_value: bool = True) -> list[str]:
    """``lhs &= rhs`` (and ``&= value`` when the value differs), for an align environment."""
    lhs = latex(equation.lhs)
    if equation.relation == "-=":
        rhs = latex(equation.value if equation.value is not None else equation.rhs)
        return [rf"{lhs} &\leftarrow {lhs} - {rhs}"]
    if equation.relation == "<-":
        return [rf"{lhs} &\leftarrow {latex(equation.rhs)}"]
    lines = [rf"{lhs} &= {latex(equation.rhs)}"]
    if show_value:
        lines += [rf"&= {latex(step)}" for step in equation.steps]
    if show_value and equation.value is not None and equation.value != equation.rhs:
        lines.append(rf"&= {latex(equation.value)}")
    return lines


def align(lines: list[str], environment: str = "align*") -> str:
    """Lines ``lhs &= rhs`` in one aligned environment (``align*``, ``align``, ``aligned``)."""
    body = " \\\\\n".join(lines)
    return f"\\begin{{{environment}}}\n{body}\n\\end{{{environment}}}"


@dataclass(frozen=True)
class Section:
    """One part of the derivation: a key the prose refers to, a title, and its aligned lines."""

    key: str
    title: str
    lines: tuple[str, ...]


def _lines(equations: tuple[Equation, ...]) -> tuple[str, ...]:
    return tuple(line for e in equations for line in equation_lines(e))


def sections(d: Derivation) -> list[Section]:
    """Each part of the derivation, in the document's order."""
    out: list[Section] = []
    for f, definition, derivative, in_output in d.activation_equations:
        # tanh(z) = tanh(z) says nothing: a function SymPy knows by the same name needs no definition
        named = isinstance(f.formula, sp.Function) and type(f.formula).__name__ == f.name
        lines = [*([] if named else equation_lines(definition)), *equation_lines(derivative)]
        if in_output is not None and in_output.rhs.has(act_a):  # in f(z), then in a: what the code computes
            in_f = in_output.rhs.subs(act_a, definition.lhs)
            if in_f.subs(definition.lhs, definition.rhs) != derivative.rhs:  # 1 − tanh(z)² twice says nothing
                lines.append(rf"&= {latex(in_f)}")
            lines.append(rf"&= {latex(in_output.rhs)} \qquad \text{{with }} a = {latex(definition.lhs)}")
        out.append(Section(f"activation:{f.name}", f"Activation: {f.name}", tuple(lines)))
    out.append(Section("forward", "Forward pass", _lines(d.forward)))
    out.append(Section("loss", f"Loss: {d.loss.title}", (_loss_line(d),)))
    output_error = d.chain_rules[0].factors[:-1]  # ∂L/∂a⁽ᴺ⁾ · … · ∂a⁽ᴺ⁾/∂z⁽ᴺ⁾ = δ⁽ᴺ⁾
    for index, rule in enumerate(d.chain_rules):
        target = latex(rule.target) if rule.name is None else rf"{latex(rule.name)} = {latex(rule.target)}"
        lines = [rf"{target} &= " + r" \cdot ".join(latex(f.partial) for f in rule.factors)]
        factors = rule.factors
        if index and factors[:len(output_error)] == output_error:  # named already: δ⁽ᴺ⁾ and the new factors
            factors = factors[len(output_error):]
            lines.append("&= " + r" \cdot ".join([latex(d.layers[-1].delta), *(latex(f.partial) for f in factors)]))
        for factor in factors:
            if factor.index_form is not None:
                lines.append(rf"{latex(factor.index_form.lhs)} &= {latex(factor.index_form.rhs)}")
                if factor.value == factor.index_form.rhs:  # it couples samples: its own section has the matrix form
                    continue
            first, *rest = (latex(step) for step in (factor.partial, factor.notation, factor.value) if step is not None)
            lines.append(f"{first} &= " + " = ".join(rest))
        out.append(Section(f"chain:{index}", f"Chain rule for {_plain(rule)}", tuple(lines)))
    if d.output_delta.index_steps:
        out.append(Section("softmax", "Softmax output: the error, unit by unit", _softmax_steps(d)))
    for op in inserted_ops(d):
        out.append(Section(f"op:{op.output.name}", f"{op.title.capitalize()}: index form to matrix form",
                           op_lines(op)))
    out.append(Section("backward", "Backward pass: the errors", _lines(d.backward)))
    out.append(Section("gradients", "Gradients", _lines(d.gradients)))
    out.append(Section("updates", "Updates, with learning rate alpha", _lines(d.updates)))
    out.append(Section("recurrence", "The recurrence for any depth, with a^(0) = X", _lines(d.recurrence)))
    return out


def inserted_ops(d: Derivation) -> list[Op]:
    """The ops between a layer's affine map, its activation and the next layer: normalization, dropout."""
    return [op for op in d.ops[:-1] if not isinstance(op, (Affine, Activate, SoftmaxOp))]


def op_lines(op: Op) -> tuple[str, ...]:
    """An op's forward map in index form, ∂(output)/∂(input) as SymPy finds it, the vector–Jacobian
    product ∂L/∂x in index form, and its matrix form."""
    x = op.inputs[0]
    lines = []
    sample = getattr(op, "batch_mean", None) is not None
    indices = (sp.Symbol("i", integer=True, positive=True),) + ((sp.Symbol("s", integer=True, positive=True),)
                                                               if sample else ())
    lines.append(rf"{latex(sp.IndexedBase(op.output)[indices])} &= {latex(op.entry(*indices))}")
    factor = op.factor(x)
    if factor.index_form is not None:
        lines.append(rf"{latex(factor.index_form.lhs)} &= {latex(factor.index_form.rhs)}")
    result = op.backward(gradient(op.output))[x]
    if len(result.steps) == 2:  # the sum SymPy did in index form, then what it came to
        index = sp.Symbol("j", integer=True, positive=True)
        target = sp.IndexedBase(gradient(x))[(index, sp.Symbol("t", integer=True, positive=True)) if sample else index]
        lines.append(rf"{latex(target)} &= {latex(result.steps[0])}")
        lines.append(rf"&= {latex(result.steps[1])}")
    for equation in result.before:
        lines.append(rf"{latex(equation.lhs)} &= {latex(equation.rhs)}")
    lines.append(rf"{latex(gradient(x))} &= {latex(result.value)}")
    return tuple(lines)


def _loss_line(d: Derivation) -> str:
    """L = ℓ, or with the mean over the samples L = (1/m) Σ_samples ℓ, then the penalty."""
    rhs = d.loss_equation.rhs
    if d.spec.reduction != "mean":
        return rf"L &= {latex(rhs)}"
    penalty = d.penalty.entry(sp.Symbol("i")) if d.penalty is not None else sp.Integer(0)
    per_sample = (rhs - penalty) * m
    sign = ""
    if isinstance(per_sample, sp.Sum) and per_sample.function.could_extract_minus_sign():
        sign, per_sample = "- ", sp.Sum(-per_sample.function, *per_sample.limits)
    elif per_sample.could_extract_minus_sign():
        sign, per_sample = "- ", -per_sample
    text = plain_brackets(_PRINTER._bracketed(per_sample)) if isinstance(per_sample, sp.Add) else latex(per_sample)
    line = rf"L &= {sign}\frac{{1}}{{m}} \sum_{{\text{{samples}}}} {text}"
    return line + (f" + {latex(penalty)}" if penalty != 0 else "")


def _softmax_steps(d: Derivation) -> tuple[str, ...]:
    """δᵢ = Σⱼ (∂aⱼ/∂zᵢ)(∂L/∂aⱼ), then each form SymPy reached, naming the fact it used."""
    out = d.layers[-1]
    i = sp.Symbol("i", integer=True, positive=True)
    first, *rest = (latex(step) for step in d.output_delta.index_steps)
    lines = [rf"{latex(sp.IndexedBase(out.delta)[i])} &= {first}"] + [f"&= {step}" for step in rest]
    if d.output_delta.assumption is not None:
        lines[-1] += rf" &&\text{{using }} {latex(d.output_delta.assumption)}"
    return tuple(lines)


def _plain(rule) -> str:
    den = rule.target.den
    return f"delta({den.layer}) = dL/dz({den.layer})" if rule.name is not None else f"dL/d{den.base}({den.layer})"


def render_latex(d: Derivation, display: bool = False) -> str:
    """The derivation's equations as ``align*`` blocks; with ``display``, bare blocks for a notebook."""
    if display:  # MathJax typesets each environment; it has no use for comments
        return "\n\n".join(align(list(section.lines)) for section in sections(d))
    header = f"% Backpropagation derived by symbp for {d.spec.options()}"
    blocks = [header] + [f"% {section.title}\n{align(list(section.lines))}" for section in sections(d)]
    return "\n\n".join(blocks)
