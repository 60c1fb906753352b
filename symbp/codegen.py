"""NumPy code for a derivation: SymPy's NumPy printer in the module's own dialect,
a plain-text printer for the formula comments, and the Jinja2 rendering of templates/.

Every expression in a generated module comes out of a SymPy object through a printer;
the templates only arrange the printed statements.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import sympy as sp
from sympy.printing.numpy import NumPyPrinter
from sympy.printing.precedence import PRECEDENCE, precedence
from sympy.printing.printer import Printer
from sympy.printing.str import StrPrinter

from .activations import LogSoftmax
from .algebra import (
    GRADIENT,
    SCRATCH,
    STATE,
    TARGET,
    Elementwise,
    Entry,
    Equation,
    Quantity,
    SampleSum,
    Softmax,
    UnitSum,
    is_sum,
)
from .derive import Derivation, alpha, m
from .ops import EPSILON, EPSILON_VALUE, BatchNorm, fan_in_start
from .optimizers import CODE_NAMES
from .program import Program
from .version import __version__

_CODE_NAMES = {"y": "Y", "alpha": "learning_rate", "lambda": "L2", "varepsilon": "NORM_EPS", "p": "DROPOUT",
               **{symbol.name: name for symbol, name in CODE_NAMES.items()}}


class NumpyCodePrinter(NumPyPrinter):
    """SymPy's NumPy printer writing ``np.``, ``@``, ``.T`` and ruff-formatted spacing."""

    def __init__(self, names: dict[str, str] | None = None) -> None:
        super().__init__({"fully_qualified_modules": True, "strict": True})
        self.names = {**_CODE_NAMES, **(names or {})}

    def _module_format(self, fqn: str, register: bool = True) -> str:
        return "np." + fqn[len("numpy."):] if fqn.startswith("numpy.") else super()._module_format(fqn, register)

    def _print_Symbol(self, expr: sp.Symbol) -> str:
        if isinstance(expr, Entry):
            return self._print_Quantity(expr.quantity)
        return self.names.get(expr.name, expr.name)

    def _print_Quantity(self, expr: Quantity) -> str:
        return self.names.get(expr.name, "Y" if expr.kind == TARGET else expr.name)

    def _operand(self, expr: sp.Basic, level: int) -> str:
        text = self._print(expr)
        inner = expr.expr if isinstance(expr, Elementwise) else expr
        return f"({text})" if precedence(inner) < level else text

    def _print_MatMul(self, expr: sp.MatMul) -> str:
        # np.dot, as the tutorial writes it: on small arrays it also dispatches faster than @.
        coeff, matrices = expr.as_coeff_matrices()
        product = self._print(matrices[0])
        for factor in matrices[1:]:
            product = f"{self._module_format('numpy.dot')}({product}, {self._print(factor)})"
        if coeff == 1:
            return product
        if coeff.is_Pow and coeff.exp == -1:  # Σ z/m, not 1/m·Σ z
            return f"{product} / {self._operand(coeff.base, PRECEDENCE['Mul'] + 1)}"
        if coeff.is_Rational and coeff.p == 1:  # Σ z/3
            return f"{product} / {coeff.q}"
        return f"{self._operand(coeff, PRECEDENCE['Mul'])} * {product}"

    def _print_logaddexp(self, expr: sp.Function) -> str:
        # A float constant spares NumPy converting a Python int on every call.
        args = (repr(float(arg)) if arg.is_Number else self._print(arg) for arg in expr.args)
        return f"{self._module_format('numpy.logaddexp')}({', '.join(args)})"

    def _print_Transpose(self, expr: sp.Transpose) -> str:
        return f"{self._operand(expr.arg, PRECEDENCE['Atom'])}.T"

    def _print_HadamardProduct(self, expr: sp.HadamardProduct) -> str:
        def operand(arg: sp.Basic) -> str:
            if isinstance(arg, sp.MatMul) and arg.as_coeff_matrices()[0] == 1:
                return self._print(arg)  # np.dot(…) is a call: no brackets needed
            return self._operand(arg, PRECEDENCE["Mul"] + 1)

        return " * ".join(operand(arg) for arg in expr.args)

    def _print_Elementwise(self, expr: Elementwise) -> str:
        return self._print(expr.expr)

    def _print_SampleSum(self, expr: SampleSum) -> str:
        # The method, not np.sum: on small arrays np.sum's Python-level dispatch costs more than the sum.
        return f"{self._operand(expr.arg, PRECEDENCE['Atom'])}.sum(axis=1, keepdims=True)"

    def _print_UnitSum(self, expr: UnitSum) -> str:
        return f"{self._operand(expr.arg, PRECEDENCE['Atom'])}.sum(axis=0, keepdims=True)"

    def _print_Softmax(self, expr: Softmax) -> str:
        return f"softmax({self._print(expr.arg)})"

    def _print_ActivationBase(self, expr: sp.Function) -> str:
        return f"{type(expr).code_name}({self._print(expr.args[0])})"

    def _print_Mul(self, expr: sp.Mul) -> str:
        if expr.could_extract_minus_sign():
            return "-" + self._operand(-expr, PRECEDENCE["Mul"] + 1)
        num, den = sp.fraction(expr)
        text = " * ".join(self._operand(f, PRECEDENCE["Mul"]) for f in sp.Mul.make_args(num))
        if den == 1:
            return text
        return f"{text} / {self._operand(den, PRECEDENCE['Mul'] + 1)}"

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        base, exp = expr.args
        if exp.is_Integer and exp > 0:
            text = self._operand(base, PRECEDENCE["Pow"] + 1)
            joiner = "**" if text.isidentifier() else " ** "  # ruff: a ** 2 hugs only plain names
            return f"{text}{joiner}{exp}"
        if exp.is_Integer and exp < 0:
            return f"1 / {self._operand(base ** -exp, PRECEDENCE['Mul'] + 1)}"
        if not exp.is_number:  # β₁ᵗ; ruff hugs ** only between plain names
            left, right = (self._operand(arg, PRECEDENCE["Pow"] + 1) for arg in (base, exp))
            return f"{left}{'**' if left.isidentifier() and right.isidentifier() else ' ** '}{right}"
        return super()._print_Pow(expr, rational=rational)

    def _print_Rational(self, expr: sp.Rational) -> str:
        return f"{expr.p} / {expr.q}"

    def _print_Heaviside(self, expr: sp.Heaviside) -> str:
        at_zero = float(expr.args[1]) if len(expr.args) > 1 else 0.5
        return f"{self._module_format('numpy.heaviside')}({self._print(expr.args[0])}, {at_zero!r})"

    def _print_Max(self, expr: sp.Max) -> str:
        return self._fold("numpy.maximum", expr.args)

    def _print_Min(self, expr: sp.Min) -> str:
        return self._fold("numpy.minimum", expr.args)

    def _fold(self, ufunc: str, args: tuple) -> str:
        """np.maximum(a, np.maximum(b, c)): a binary ufunc over any number of arguments."""
        first, *rest = args
        if not rest:
            return self._print(first)
        return f"{self._module_format(ufunc)}({self._print(first)}, {self._fold(ufunc, tuple(rest))})"

    def _print_Piecewise(self, expr: sp.Piecewise) -> str:
        (value, condition), (otherwise, _) = expr.args
        return (f"{self._module_format('numpy.where')}({self._print(condition)}, "
                f"{self._print(value)}, {self._print(otherwise)})")


_SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")
_PLAIN_NAMES = {"alpha": "α", "mu": "μ", "varepsilon": "ε", "beta_1": "β₁", "beta_2": "β₂", "epsilon": "ε", "rho": "ρ",
                "lambda_wd": "λ_wd"}
_PLAIN_BASES = {"mhat": "m̂", "vhat": "v̂"}  # as SymPy's LaTeX printer reads a name ending in "hat"
_GREEK_BASES = {"mu": "μ", "sigma^2": "σ²", "xhat": "x̂", "gamma": "γ", "beta": "β"}


def _sup(layer: str) -> str:
    return f"⁽{layer.translate(_SUPERSCRIPT)}⁾"


class FormulaCommentPrinter(StrPrinter):
    """Plain-text formulas for comments: W⁽²⁾, δ⁽¹⁾, (W⁽²⁾)ᵀ, ⊙, σ'(z⁽²⁾), ∂L/∂W⁽¹⁾, with − for minus."""

    def doprint(self, expr: sp.Basic) -> str:
        return super().doprint(expr).replace("-", "−")

    def _print_Max(self, expr: sp.Max) -> str:
        return f"max({', '.join(self._print(arg) for arg in expr.args)})"

    def _print_Min(self, expr: sp.Min) -> str:
        return f"min({', '.join(self._print(arg) for arg in expr.args)})"

    def _print_Symbol(self, expr: sp.Symbol) -> str:
        if isinstance(expr, Entry):
            return self._print_Quantity(expr.quantity)
        return _PLAIN_NAMES.get(expr.name, expr.name)

    def _print_Quantity(self, expr: Quantity) -> str:
        """W⁽²⁾, δ⁽¹⁾ for ∂L/∂z⁽¹⁾, ∂L/∂W⁽²⁾, X."""
        if expr.kind == GRADIENT:
            return f"δ{_sup(expr.of.layer)}" if expr.of.base == "z" else f"∂L/∂{self._print(expr.of)}"
        if expr.kind in (STATE, SCRATCH) and expr.of is not None:  # an optimizer's array for θ: v_θ
            return f"{_PLAIN_BASES.get(expr.base, expr.base)}_{self._print(expr.of)}"
        base = _GREEK_BASES.get(expr.base, expr.base)
        return f"{base}{_sup(expr.layer)}" if expr.layer else base

    def _print_Transpose(self, expr: sp.Transpose) -> str:
        inner = self._print(expr.arg)
        return f"{inner}ᵀ" if isinstance(expr.arg, Quantity) and not expr.arg.layer else f"({inner})ᵀ"

    def _print_MatMul(self, expr: sp.MatMul) -> str:
        coeff, matrices = expr.as_coeff_matrices()
        text = " ".join(f"({self._print(arg)})" if _needs_brackets(arg) else self._print(arg) for arg in matrices)
        return text if coeff == 1 else f"{self._print(coeff)} {text}"

    def _print_HadamardProduct(self, expr: sp.HadamardProduct) -> str:
        return " ⊙ ".join(f"({self._print(arg)})" if is_sum(arg) else self._print(arg) for arg in expr.args)

    def _print_Elementwise(self, expr: Elementwise) -> str:
        return self._print(expr.expr)

    def _print_SampleSum(self, expr: SampleSum) -> str:
        return f"Σ {self._print(expr.arg)}"

    def _print_Sum(self, expr: sp.Sum) -> str:
        (index, low, high), *_ = expr.limits
        return f"Σ_{self._print(index)}={self._print(low)}…{self._print(high)} {self.parenthesize(expr.function, PRECEDENCE['Mul'])}"

    def _print_Indexed(self, expr: sp.Indexed) -> str:
        return f"{self._print(expr.base.label)}[{', '.join(self._print(i) for i in expr.indices)}]"

    def _print_MatAdd(self, expr: sp.MatAdd) -> str:
        def negative(term: sp.Basic) -> bool:
            return isinstance(term, sp.MatMul) and term.as_coeff_matrices()[0].could_extract_minus_sign()

        first, *rest = sorted(expr.args, key=negative)  # diag(a) − a aᵀ, not −a aᵀ + diag(a)
        text = self._print(first)
        for term in rest:
            text += f" − {self._print(-term)}" if negative(term) else f" + {self._print(term)}"
        return text

    def _print_UnitSum(self, expr: UnitSum) -> str:
        arg = expr.arg
        return f"Σᵤₙᵢₜₛ ({self._print(arg)})" if is_sum(arg) else f"Σᵤₙᵢₜₛ {self._print(arg)}"

    def _print_Softmax(self, expr: Softmax) -> str:
        return f"softmax({self._print(expr.arg)})"

    def _print_DiagMatrix(self, expr: sp.DiagMatrix) -> str:
        return f"diag({self._print(expr.args[0])})"

    def _print_ActivationBase(self, expr: sp.Function) -> str:
        return f"{type(expr).unicode_symbol}({self._print(expr.args[0])})"

    def _print_Derivative(self, expr: sp.Derivative) -> str:
        return f"{type(expr.expr).unicode_symbol}'({self._print(expr.variables[0])})"

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        base, exp = expr.args
        if exp.is_Integer and exp > 0:
            return self.parenthesize(base, PRECEDENCE["Pow"] + 1) + str(exp).translate(_SUPERSCRIPT)
        if not exp.is_number:  # β₁^t: StrPrinter's ** would read β₁··t once · stands for *
            return f"{self.parenthesize(base, PRECEDENCE['Pow'] + 1)}^{self.parenthesize(exp, PRECEDENCE['Pow'] + 1)}"
        return super()._print_Pow(expr, rational)

    def _print_Mul(self, expr: sp.Mul) -> str:
        return super()._print_Mul(expr).replace("*", "·")


def _needs_brackets(arg: sp.Basic) -> bool:
    """A factor of a matrix product that must be bracketed: a sum, or a negative elementwise term."""
    inner = arg.expr if isinstance(arg, Elementwise) else arg
    return is_sum(arg) or (isinstance(inner, sp.Expr) and inner.could_extract_minus_sign())


_CODE = NumpyCodePrinter()
_COMMENT = FormulaCommentPrinter()


def plain_formula(expr: sp.Basic) -> str:
    """A formula as plain text, as the generated code's comments write it: (a − y)²/2."""
    return _COMMENT.doprint(expr)


class UnsupportedOperation(NotImplementedError):
    """An operation (or a node inside one) that a backend has no way to print."""


class OperationPrinter(Printer):
    """A SymPy printer of a program's operations: ``_print_<Operation>`` returns its lines of code.

    SymPy's dispatch finds the method along the operation's class hierarchy; an operation
    with no method reaches ``emptyPrinter``, which is an error naming the operation and the
    backend, never a silent fallback.
    """

    backend = "?"

    def emptyPrinter(self, expr: object) -> str:
        raise UnsupportedOperation(f"the {self.backend} backend cannot print the operation {type(expr).__name__}")

    def operation(self, op: object) -> list[str]:
        return self._print(op)

    def step(self, step) -> list[Statement]:
        """Every line of one step, headed by the formula of the equation it implements (and of
        those merged into it, each on a comment line of its own)."""
        first, *rest = (line for op in step.operations for line in self.operation(op))
        *heads, last = (statement(e).formula for e in (step.equation, *step.merged))
        return [*(Statement("", "", formula, "") for formula in heads),
                Statement("", first, last, ""), *(Statement("", line, "", "") for line in rest)]


@dataclass(frozen=True)
class Statement:
    """``target = code  # formula``: one line of the generated module."""

    target: str
    code: str
    formula: str
    op: str = "="

    @property
    def line(self) -> str:
        """The line of code; a statement with no target is a call such as ``np.dot(…, out=z1)``."""
        return f"{self.target} {self.op} {self.code}" if self.target else self.code


def statement(equation: Equation, printer: NumpyCodePrinter = _CODE) -> Statement:
    """A derivation equation as a line of code, with its formula as a comment."""
    formula = f"{_COMMENT.doprint(equation.lhs)} = {_COMMENT.doprint(equation.rhs)}"
    if isinstance(equation.value, Elementwise) and equation.value != equation.rhs:
        formula += f" = {_COMMENT.doprint(equation.value)}"  # what SymPy simplified it to
    if equation.relation == "-=":
        formula = f"{_COMMENT.doprint(equation.lhs)} ← {_COMMENT.doprint(equation.lhs)} − {_COMMENT.doprint(equation.rhs)}"
    if equation.relation == "<-":  # into the same array: the state lives on between steps
        formula = f"{_COMMENT.doprint(equation.lhs)} ← {_COMMENT.doprint(equation.rhs)}"
        return Statement(f"{printer.doprint(equation.lhs)}[...]", printer.doprint(equation.rhs), formula)
    code = printer.doprint(equation.rhs if equation.relation == "-=" else equation.computed)
    return Statement(printer.doprint(equation.lhs), code, formula, equation.relation)


LINE_LENGTH = 88  # ruff's default: generated lines must not need reformatting
BODY_INDENT = 8  # statements also appear inside train's loop


def fits(target: str, code: str, indent: int = BODY_INDENT) -> bool:
    """Whether ``target = code`` fits on one line at this indentation."""
    return indent + len(target) + len(" = ") + len(code) <= LINE_LENGTH


def statements(equation: Equation) -> list[Statement]:
    """The equation as one line, or — when that line would be too long — its long elementwise
    factors first, each as its own short statements (common subexpressions shared, as ``sympy.cse``
    finds them), then the equation in their names."""
    main = statement(equation)
    if fits(main.target, main.code) or equation.relation == "-=":
        return [main]
    hoisted: list[Statement] = []

    def hoist(node: Elementwise) -> Elementwise:
        name = f"{main.target}_{len(hoisted) + 1}"
        hoisted.extend(Statement(t, c, "") for t, c in short_assignments(name, node.expr))
        return Elementwise(sp.Symbol(name), *node.shape)

    value = equation.computed.replace(lambda e: isinstance(e, Elementwise) and len(_CODE.doprint(e)) > 24, hoist)
    if not hoisted:
        return [main]
    first = hoisted[0]
    # The formula heads the whole group of lines that computes it.
    return [Statement(first.target, first.code, main.formula), *hoisted[1:],
            Statement(main.target, _CODE.doprint(value), "")]


def short_assignments(target: str, expr: sp.Expr, indent: int = BODY_INDENT,
                      printer: NumpyCodePrinter = _CODE) -> list[tuple[str, str]]:
    """``target = expr`` as (name, code) lines that each fit: shared subexpressions become
    temporaries (``sympy.cse``), and a sum that is still too long is added up term by term."""
    code = printer.doprint(expr)
    if fits(target, code, indent):
        return [(target, code)]
    replacements, (reduced,) = sp.cse(expr, symbols=sp.numbered_symbols(f"{target}_", real=True))
    if replacements:
        lines = [line for name, value in replacements
                 for line in short_assignments(str(name), value, indent, printer)]
        return lines + short_assignments(target, reduced, indent, printer)
    if isinstance(expr, sp.Mul):  # the longest factor gets its own line
        factor = max(expr.args, key=lambda arg: len(printer.doprint(arg)))
        # a long denominator (a power of a sum) gets its line as that sum: still a division
        part = factor.base if factor.is_Pow and factor.base.is_Add else factor
        taken = {str(symbol) for symbol in expr.free_symbols}  # a factor named before, one level up
        name = next(sp.Symbol(f"{target}_factor{'' if k == 1 else k}", real=True) for k in range(1, len(taken) + 2)
                    if f"{target}_factor{'' if k == 1 else k}" not in taken)
        if part.is_Add or isinstance(part, (sp.Piecewise, sp.Heaviside)):  # a sum, or a conditional
            return [*short_assignments(name.name, part, indent, printer),
                    *short_assignments(target, expr.xreplace({part: name}), indent, printer)]
    terms = sp.Add.make_args(expr)
    if len(terms) == 1:
        return [(target, code)]  # one indivisible term: left to the reader's line length
    names = [sp.Symbol(f"{target}_term{k}", real=True) for k in range(1, len(terms) + 1)]
    lines = [line for name, term in zip(names, terms) for line in short_assignments(str(name), term, indent, printer)]
    return lines + [(target, " + ".join(map(str, names)))]


def _tuple(items: tuple, name: str = "") -> str:
    """A tuple literal as ruff formats it after ``NAME = ``: double quotes, a trailing comma
    for one item, and one item per line when the line would be too long."""
    parts = [f'"{item}"' if isinstance(item, str) else repr(item) for item in items]
    text = f"({parts[0]},)" if len(parts) == 1 else f"({', '.join(parts)})"
    if len(name) + len(" = ") + len(text) <= LINE_LENGTH:
        return text
    return "(\n" + "".join(f"    {part},\n" for part in parts) + ")"


def signature(name: str, arguments: list[str], returns: str) -> str:
    """``def name(arguments) -> returns:`` as ruff formats it: on one line, or the arguments on one
    indented line, or one per line."""
    line = f"def {name}({', '.join(arguments)}) -> {returns}:"
    if len(line) <= LINE_LENGTH:
        return line
    inner = f"    {', '.join(arguments)}"
    if len(inner) <= LINE_LENGTH:
        return f"def {name}(\n{inner}\n) -> {returns}:"
    return f"def {name}(\n" + "".join(f"    {argument},\n" for argument in arguments) + f") -> {returns}:"


def return_dict(pairs: list[tuple[str, str]], indent: int = 4) -> str:
    """``return {"a": b, ...}`` as ruff formats it: on one line, or one entry per line."""
    pad = " " * indent
    line = f"{pad}return {{{', '.join(f'{key!r}: {value}'.replace(chr(39), chr(34)) for key, value in pairs)}}}"
    if len(line) <= LINE_LENGTH:
        return line
    return f"{pad}return {{\n" + "".join(f'{pad}    "{key}": {value},\n' for key, value in pairs) + f"{pad}}}"


def unpack(names: list[str], source: str, indent: int = 4) -> str:
    """``a, b = source`` as ruff formats it: on one line, or bracketed with one name per line."""
    pad = " " * indent
    line = f"{pad}{', '.join(names)} = {source}"
    if len(line) <= LINE_LENGTH and len(names) > 1:
        return line
    inner = "".join(f"{pad}    {name},\n" for name in names)
    return f"{pad}(\n{inner}{pad}) = {source}"


def unpack_masks(names: list[str], source: str = "masks") -> str:
    """``mask1, mask2 = masks``, or ``(mask1,) = masks`` for one, as ruff writes it."""
    return f"    ({names[0]},) = {source}" if len(names) == 1 else unpack(names, source)


def _names_in(expressions: list[sp.Basic]) -> set[str]:
    names = set()
    for expr in expressions:
        names |= {s.name for s in expr.free_symbols}  # a gradient's args hold what it differentiates by
    return names


def module_context(program: Program, printer: NumpyCodePrinter = _CODE) -> dict:
    """Everything the module template needs, printed from the program; nothing here derives.

    The allocating functions (forward, loss, gradients, train_step) print each step whole,
    from the equation it implements: one readable line per formula. ``printer`` prints the
    loss and the activations' helper functions (another backend's array module).
    """
    d = program.derivation
    backward_values = [s.equation.computed for s in (*program.backward, *program.gradients)]
    used = _names_in(backward_values)
    produced = {s.target.name for s in (*program.backward, *program.gradients)}
    forward_names = [s.target.name for s in program.forward]
    cached = [name for name in forward_names if name in used and name not in produced]
    weights = [p.name for p in d.params if p.name in used]

    loss_code, loss_lines = printer.doprint(d.loss_code), []
    before_loss = [(s.target.name, printer.doprint(s.equation.rhs)) for s in program.backward
                   if s.target.name in {e.name for e in d.loss_code.free_symbols}]  # the hinge loss's t
    if not fits("total", f"float(np.sum({loss_code}))"):
        loss_code, loss_lines = "terms", short_assignments("terms", d.loss_code, printer=printer)
    loss_lines = before_loss + loss_lines
    loss_inputs = sorted(_names_in([d.loss_code, *(s.equation.rhs for s in program.backward
                                                   if s.target.name in dict(before_loss))]) & set(forward_names))
    f_out = d.activations[-1]
    param_updates = NumpyCodePrinter({d.gradient_of(p).name: f'grads["{p.name}"]' for p in d.params})
    helpers = []
    for function in program.functions:
        if hasattr(printer, f"_print_{function.name}"):
            continue  # NumPy has it (np.tanh): the code calls NumPy, not a helper
        f = function.activation
        applied, formula = f"{f.function.unicode_symbol}(z)", _COMMENT.doprint(f.formula)
        helpers.append({
            "name": function.name,
            "formula": applied if formula == applied else f"{applied} = {formula}",
            "lines": short_assignments("value", function.code_form, printer=printer),
            "in_loss": d.loss_code.has(f.function),
            "same_as_formula": function.code_form == f.formula,
        })
    return {
        "version": __version__,
        "options": d.spec.options(),
        "layers": d.spec.layers,
        "layers_literal": _tuple(d.spec.layers, "LAYERS"),
        "activations_literal": _tuple(d.spec.activations, "ACTIVATIONS"),
        "param_names_literal": _tuple(tuple(p.name for p in d.params), "PARAM_NAMES"),
        "loss": d.spec.loss,
        "reduction": d.spec.reduction,
        "params": [{"name": p.name, "shape": (int(p.rows), int(p.cols)), "fan_in": fan_in_start(p.role)}
                   for p in d.params],
        "activations": helpers,
        "forward": [statement(s.equation) for s in program.forward],
        "output": d.output.name,
        "output_formula": _COMMENT.doprint(d.output),
        "cached": cached,
        "weights": weights,
        "uses_m": m.name in used,
        "loss_code": loss_code,
        "loss_lines": loss_lines,
        "loss_inputs": loss_inputs,
        "softmax": None if f_out.elementwise else f"softmax(z)ⱼ = {_COMMENT.doprint(f_out.formula)}",
        "log_softmax": d.loss_code.has(LogSoftmax),
        "loss_formula": f"L = {_COMMENT.doprint(d.loss_equation.rhs)}",
        "backward": [line for s in program.backward for line in _with_assumption(d, s.target.name, statements(s.equation))],
        "gradients": [line for s in program.gradients for line in statements(s.equation)],
        "updates": [statement(s.equation, param_updates) for s in program.updates],
        "learning_rate": _CODE.doprint(alpha),
        "l2": d.spec.l2,
        "weights_literal": _tuple(tuple(W.name for W in d.penalty.params), "WEIGHTS") if d.penalty else "",
        "penalty_formula": _COMMENT.doprint(d.penalty.entry(sp.Symbol("i"))) if d.penalty else "",
        "optimizer": _optimizer_context(program),
        "uses_m_forward": any(m in s.equation.rhs.free_symbols for s in program.forward),
        "batch_norms": _batch_norms(d),
        "dropout": d.spec.dropout if d.masks else "",
        "mask_names": [mask.name for mask in d.masks],
        "mask_units": "{" + ", ".join(f"{mask.layer}: {int(mask.rows)}" for mask in d.masks) + "}",
        "forward_signature": signature("_forward_pass", [
            "params: Params", "X: Array", *(["training: bool = True"] if _batch_norms(d) else []),
            *(["masks: Params | None = None"] if d.masks else [])], "Params"),
        "forward_return": return_dict([(s.target.name, s.target.name) for s in program.forward]),
        "gradients_return": return_dict([(p.name, f"d{p.name}") for p in d.params]),
        "batch_norms_literal": _batch_norms_literal(d),
        "running": {b[key]: b[f"running_{key}"] for b in _batch_norms(d) for key in ("mean", "var")},
        "norm_eps": EPSILON_VALUE if any(EPSILON in s.equation.rhs.free_symbols for s in program.forward) else "",
    }


def _batch_norms_literal(d: Derivation) -> str:
    """BATCH_NORMS's tuple of (mean, variance, running mean, running variance) names, as ruff writes it."""
    items = ["(" + ", ".join(f'"{b[key]}"' for key in ("mean", "var", "running_mean", "running_var")) + ")"
             for b in _batch_norms(d)]
    text = f"({', '.join(items)}{',' if len(items) == 1 else ''})"
    if len("BATCH_NORMS = ") + len(text) <= LINE_LENGTH:
        return text
    return "(\n" + "".join(f"    {item},\n" for item in items) + ")"


def _batch_norms(d: Derivation) -> list[dict]:
    """Each batch normalization's statistics and the running estimates kept for inference."""
    return [{"mean": op.mean.name, "var": op.variance.name, "rows": int(op.output.rows),
             "running_mean": f"running_mean{op.output.layer}", "running_var": f"running_var{op.output.layer}"}
            for op in d.ops if isinstance(op, BatchNorm)]


def _optimizer_context(program: Program) -> dict | None:
    """The optimizer's constants, state and update lines, for modules generated with one."""
    o = program.derivation.optimizer
    if o is None:
        return None
    params = [p.name for p in program.params]
    state = [program.buffer(q) for q in o.state]
    return {
        "name": o.name,
        "title": o.title,
        "constants": [(c.code_name, c.value, _COMMENT.doprint(c.symbol)) for c in o.constants],
        "state": [{"name": b.name, "shape": (b.rows, b.cols),
                   "of": q.of.name if q.of is not None else ""} for b, q in zip(state, o.state)],
        "state_names_literal": _tuple(tuple(b.name for b in state), "STATE_NAMES") if state else "()",
        "unpack_params": unpack(params, "(params[name] for name in PARAM_NAMES)"),
        "unpack_grads": unpack([program.derivation.gradient_of(p).name for p in program.derivation.params],
                               "(grads[name] for name in PARAM_NAMES)"),
        "unpack_state": unpack([b.name for b in state], "(state[name] for name in STATE_NAMES)") if state else "",
        "updates": [statement(s.equation) for s in program.updates],
    }


def _with_assumption(d: Derivation, target: str, lines: list[Statement]) -> list[Statement]:
    """δ⁽ᴺ⁾'s comment names the fact SymPy used to simplify it (Σⱼ yⱼ = 1), as the derivation does."""
    if d.output_delta.assumption is None or target != d.layers[-1].delta.name:
        return lines
    first, *rest = lines
    return [replace(first, formula=f"{first.formula}, using Σⱼ yⱼ = 1"), *rest]


def one_array(groups: list[list[str]]) -> list[tuple[str, list[tuple[str, str]]]]:
    """For each group of gradients (δ⁽ˡ⁾ or ∂L/∂θ) that share an array: the comment above the
    lines that give them the first one's array, and those lines' (name, array) pairs."""
    return [(_one_array_comment(group), [(name, group[0]) for name in group[1:]]) for group in groups]


def _one_array_comment(group: list[str]) -> str:
    names = f"{', '.join(group[:-1])} and {group[-1]}"
    why = "each is read no more when the next is written"
    comment = f"# {names} share one array: {why}"
    return comment if len(comment) + 4 <= LINE_LENGTH else f"# those below share {group[0]}'s array: {why}"
