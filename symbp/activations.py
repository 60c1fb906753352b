"""Activation functions: each is a SymPy expression f(z); SymPy finds f'(z) and,
where it can, rewrites f'(z) in the activation's output a = f(z).

That rewrite is why the document's code writes ``x * (1 - x)``: the backward pass
already holds a = σ(z) from the forward pass, so σ'(z) = a(1 − a) costs two flops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache

import sympy as sp
from sympy.codegen.numpy_nodes import logaddexp

from .budget import OverBudget, within
from .expressions import parse_formula
from .spec import SpecError

z = sp.Symbol("z", real=True)
a = sp.Symbol("a", real=True)
# Unit indices of a layer, for softmax's Jacobian ∂aⱼ/∂zᵢ.
i, j = sp.symbols("i j", integer=True, positive=True)


class ActivationBase(sp.Function):
    """f applied to a pre-activation; subclasses are made per activation.

    Printers dispatch on this class (``_print_ActivationBase``; SymPy's dispatcher only
    looks past a Function subclass's own name for bases whose names end in "Base").
    LaTeX shows ``latex_symbol``, code calls ``code_name``.
    """

    nargs = 1
    latex_symbol = "f"
    code_name = "f"
    unicode_symbol = "f"


@dataclass(frozen=True)
class Activation:
    """One activation: its formula, its code form, and the derivative SymPy found."""

    name: str
    formula: sp.Expr  # f(z), the textbook definition
    code_formula: sp.Expr  # an equal form that is safe in float64 (checked equal by SymPy)
    derivative: sp.Expr  # f'(z) as SymPy differentiates it
    derivative_in_output: sp.Expr | None  # f'(z) written in a = f(z), when SymPy could
    function: type[ActivationBase]
    # Stable forms of log a and log(1 − a) in z, for losses that take logs of the output.
    log_forms: tuple[tuple[sp.Expr, sp.Expr], ...] = ()
    elementwise: bool = True  # False for softmax, whose every output depends on every input
    custom: bool = False  # written by the user as a formula in z

    @property
    def derivative_form(self) -> sp.Expr:
        """The derivative as code evaluates it: in a where possible, else in z."""
        return self.derivative if self.derivative_in_output is None else self.derivative_in_output

    @property
    def needs_z(self) -> bool:
        """Whether the backward pass must keep z (the derivative cannot be written in a)."""
        return self.derivative_in_output is None


def _same_function(left: sp.Expr, right: sp.Expr) -> bool:
    """True when SymPy proves left == right for every real z (splitting at z = 0 for steps)."""
    difference = left - right
    if difference.has(sp.Heaviside, sp.Piecewise, sp.Max, sp.Min):
        positive, negative = sp.Symbol("zp", positive=True), sp.Symbol("zn", negative=True)
        return all(
            sp.simplify(difference.subs(z, value).rewrite(sp.log)) == 0
            for value in (positive, negative, sp.Integer(0))
        )
    return sp.simplify(difference.rewrite(sp.log)) == 0


def _plain_logs(expr: sp.Expr) -> sp.Expr:
    """logaddexp(x, y) as log(eˣ + eʸ), which SymPy evaluates numerically."""
    return expr.replace(logaddexp, lambda x, y: sp.log(sp.exp(x) + sp.exp(y)))


def _differs_somewhere(left: sp.Expr, right: sp.Expr) -> bool:
    """True when left and right differ at one of a few points (away from kinks at 0)."""
    for point in (sp.Rational(3, 10), sp.Rational(-7, 10), sp.Rational(13, 10), sp.Rational(-17, 10)):
        try:
            difference = complex(sp.N(_plain_logs(left - right).subs(z, point), 30))
        except (TypeError, ValueError, ZeroDivisionError):
            continue
        if abs(difference) > 1e-12 * (1 + abs(complex(sp.N(_plain_logs(right).subs(z, point), 30)))):
            return True
    return False


def _sign_follows_z(formula: sp.Expr) -> bool:
    """f(z) > 0 exactly when z > 0, so a step in z is the same step in a."""
    positive, negative = sp.Symbol("zp", positive=True), sp.Symbol("zn", negative=True)
    return (
        sp.ask(sp.Q.positive(formula.subs(z, positive))) is True
        and sp.ask(sp.Q.nonpositive(formula.subs(z, negative))) is True
        and formula.subs(z, 0) == 0
    )


def rewrite_in_output(formula: sp.Expr, derivative: sp.Expr) -> sp.Expr | None:
    """Find g with f'(z) = g(f(z)), proved by SymPy, or None.

    Tries, in order: replacing f(z) by a inside f'(z) (tanh); inverting a = f(z) with
    solve where z occurs once in f (sigmoid); and for steps, replacing the step in z by the same step in a,
    valid when f has the sign of z (relu, leaky_relu).
    """
    known = {type(f) for f in (formula + derivative).atoms(sp.Function)} | {sp.Heaviside}
    for candidate in _candidates(formula, derivative):
        if candidate.has(z) or candidate.has(sp.I):
            continue
        if not {type(f) for f in candidate.atoms(sp.Function)} <= known:
            continue  # an inverse such as LambertW costs more than keeping z
        if _differs_somewhere(candidate.subs(a, formula), derivative):
            continue  # a quick numeric look spares simplify a proof that cannot succeed
        if _same_function(candidate.subs(a, formula), derivative):
            return candidate
    return None


def _candidates(formula: sp.Expr, derivative: sp.Expr) -> Iterator[sp.Expr]:
    """Forms of f'(z) in a, cheapest first, each made only when the ones before it failed."""
    yield derivative.subs(formula, a)
    # solve can take minutes on a formula where z occurs twice; where z occurs once it only peels functions.
    z_once = sum(1 for node in sp.preorder_traversal(formula) if node == z) == 1
    if z_once and not derivative.has(sp.Heaviside, sp.Piecewise):
        try:
            roots = sp.solve(sp.Eq(a, formula), z)
        except NotImplementedError:
            return
        for root in roots:
            yield sp.simplify(derivative.subs(z, root))
    elif _sign_follows_z(formula):
        yield derivative.subs(z, a)


def _function_class(name: str, latex_symbol: str, unicode_symbol: str) -> type[ActivationBase]:
    return type(name, (ActivationBase,), {
        "latex_symbol": latex_symbol, "code_name": name, "unicode_symbol": unicode_symbol,
    })


def _derivative(formula: sp.Expr) -> sp.Expr:
    """f'(z) by sympy.diff; at a kink SymPy's step is ½, where training code, like PyTorch, takes 0."""
    derivative = sp.diff(formula, z)
    return derivative.replace(sp.Heaviside, lambda arg, *h: sp.Heaviside(arg, 0))


def _build(name: str, formula: sp.Expr, code_formula: sp.Expr, latex_symbol: str, unicode_symbol: str,
           code_name: str | None = None, custom: bool = False) -> Activation:
    if custom:  # the user's formula: every symbolic step within a time budget, once per formula
        derivative, in_output, log_forms = _custom_calculus(name, formula)
    else:
        derivative = _derivative(formula)
        in_output, log_forms = rewrite_in_output(formula, derivative), _log_forms(formula)
    if code_formula is not formula and not _same_function(code_formula, formula):
        raise AssertionError(f"code form of {name} differs from its formula")
    activation = Activation(
        name=name,
        formula=formula,
        code_formula=code_formula,
        derivative=derivative,
        derivative_in_output=in_output,
        function=_function_class(code_name or name, latex_symbol, unicode_symbol),
        log_forms=log_forms,
        custom=custom,
    )
    _ALL.append(activation)
    return activation


def _optional(function: Callable, *args: object) -> object:
    """A rewrite symbp can do without: its result, or None when SymPy runs past the budget."""
    try:
        return within(function, *args)
    except OverBudget:
        return None


def _log_forms(formula: sp.Expr) -> tuple[tuple[sp.Expr, sp.Expr], ...]:
    """log a = −softplus(−z) and log(1 − a) = −softplus(z) for the sigmoid, proved by SymPy.

    Computing bce from z this way stays finite where σ(z) rounds to 0 or 1.
    """
    candidates = ((sp.log(a), -logaddexp(0, -z)), (sp.log(1 - a), -logaddexp(0, z)))
    return tuple((pattern, form) for pattern, form in candidates
                 if not _differs_somewhere(pattern.subs(a, formula), form)
                 and _same_function(pattern.subs(a, formula), form))


_ALL: list[Activation] = []


def _leaky(slope: sp.Rational) -> tuple[sp.Expr, sp.Expr]:
    form = sp.Piecewise((z, z > 0), (slope * z, True))
    return form, form


_BUILTINS = {
    # name: (formula, numerically safe code form, LaTeX symbol, plain symbol)
    "sigmoid": (1 / (1 + sp.exp(-z)), sp.exp(-logaddexp(0, -z)), r"\sigma", "σ"),
    "tanh": (sp.tanh(z), sp.tanh(z), r"\tanh", "tanh"),
    "relu": (sp.Max(0, z), sp.Max(0, z), r"\operatorname{relu}", "relu"),
    "softplus": (sp.log(1 + sp.exp(z)), logaddexp(0, z), r"\operatorname{softplus}", "softplus"),
    "identity": (z, z, r"\operatorname{id}", "id"),
}
SOFTMAX = "softmax"
_SUBSCRIPT = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def is_builtin(name: str) -> bool:
    """Whether ``name`` names a built-in activation rather than a formula in z."""
    return name in _BUILTINS or name == SOFTMAX or name == "leaky_relu" or (
        name.startswith("leaky_relu(") and name.endswith(")"))


def canonical_name(name: str) -> str:
    """A built-in's name as given, or a formula in z as SymPy prints it (checked, never evaluated)."""
    if is_builtin(name):
        get_activation(name)  # checks a leaky_relu slope
        return name
    if not any(char in name for char in "z()+-*/"):
        raise SpecError(f"unknown activation {name!r}: choose one of {', '.join(activation_names())}, "
                        "or write a formula in z such as z/(1+exp(-z))")
    return sp.sstr(parse_formula(name))


def get_activation(name: str, index: int = 1) -> Activation:
    """The activation called ``name``: a built-in, ``leaky_relu(0.1)``, or a formula in z.

    ``index`` numbers the formulas of one network (f₁, f₂, …); built-ins ignore it, and
    each activation is derived once per process, however it is asked for.
    """
    return _activation(name, 1 if is_builtin(name) else index)


@cache
def _activation(name: str, index: int) -> Activation:
    if name in _BUILTINS:
        formula, code_formula, latex_symbol, unicode_symbol = _BUILTINS[name]
        return _build(name, formula, code_formula, latex_symbol, unicode_symbol)
    if name == SOFTMAX:
        return _softmax()
    if name == "leaky_relu" or (name.startswith("leaky_relu(") and name.endswith(")")):
        slope_text = name[len("leaky_relu("):-1] if name != "leaky_relu" else "0.01"
        slope = _parse_slope(slope_text, name)
        formula, code_formula = _leaky(slope)
        return _build("leaky_relu", formula, code_formula, r"\operatorname{leaky\_relu}", "leaky_relu")
    return _custom(name, index)


# What generated code can compute: NumPy has each of these, and numba compiles them.
COMPUTABLE = (sp.exp, sp.log, sp.sin, sp.cos, sp.tan, sp.sinh, sp.cosh, sp.tanh, sp.atan, sp.asinh, sp.Abs,
              sp.sign, sp.Heaviside, sp.Max, sp.Min, sp.Piecewise, logaddexp)


@cache
def _custom_calculus(text: str, formula: sp.Expr) -> tuple[sp.Expr, sp.Expr | None, tuple]:
    """f'(z), its form in a (or None) and the stable log forms of a formula, each step on a budget.

    Cached by the formula alone: the same formula numbered f₁ in one network and f₂ in another
    is derived once.
    """
    try:
        derivative = within(_derivative, formula)
    except OverBudget as error:
        raise SpecError(f"bad activation formula {text!r}: SymPy could not differentiate it ({error})") from None
    return derivative, _optional(rewrite_in_output, formula, derivative), _optional(_log_forms, formula) or ()


def _custom(text: str, index: int) -> Activation:
    """A formula in z: SymPy differentiates it; code must be computable with NumPy alone."""
    formula = parse_formula(text)
    activation = _build(text, formula, formula, f"f_{{{index}}}", f"f{str(index).translate(_SUBSCRIPT)}",
                        code_name=f"custom{index}", custom=True)
    for expr in (activation.formula, activation.derivative_form):
        unknown = sorted({type(f).__name__ for f in expr.atoms(sp.Function) if not isinstance(f, COMPUTABLE)})
        if unknown:
            raise SpecError(f"bad activation formula {text!r}: NumPy cannot compute {expr} ({', '.join(unknown)})")
    return activation


def _softmax() -> Activation:
    """softmax(z)ⱼ = exp(zⱼ)/Σₖ exp(zₖ); SymPy differentiates it on indexed sums.

    Its derivative is a Jacobian, ∂aⱼ/∂zᵢ = aⱼ([i = j] − aᵢ), written in the output a.
    """
    k = sp.Symbol("k", integer=True, positive=True)
    n = sp.Symbol("n", integer=True, positive=True)
    z_i, a_i = sp.IndexedBase("z"), sp.IndexedBase("a")
    denominator = sp.Sum(sp.exp(z_i[k]), (k, 1, n))
    formula = sp.exp(z_i[j]) / denominator
    # i runs over 1 … n by construction, so SymPy's range guard is always true.
    derivative = sp.diff(formula, z_i[i]).doit().replace(sp.Piecewise, lambda *pieces: pieces[0][0])
    in_output = sp.factor(sp.expand(derivative).subs({sp.exp(z_i[j]): a_i[j] * denominator,
                                                      sp.exp(z_i[i]): a_i[i] * denominator}))
    back = in_output.subs({a_i[j]: formula, a_i[i]: formula.subs(j, i)})
    if in_output.has(z_i) or sp.simplify(back - derivative) != 0:
        raise AssertionError("SymPy did not find the softmax Jacobian in its output")
    activation = Activation(
        name=SOFTMAX,
        formula=formula,
        code_formula=formula,
        derivative=derivative,
        derivative_in_output=in_output,
        function=_function_class("softmax", r"\operatorname{softmax}", "softmax"),
        log_forms=((sp.log(a), LogSoftmax(z)),),
        elementwise=False,
    )
    _ALL.append(activation)
    return activation


class LogSoftmax(ActivationBase):
    """log softmax(z), computed from z so that it stays finite where softmax rounds to 0."""

    latex_symbol = r"\log\operatorname{softmax}"
    code_name = "log_softmax"
    unicode_symbol = "log softmax"


def _parse_slope(text: str, name: str) -> sp.Rational:
    """A decimal in [0, 1), read as an exact rational without evaluating anything."""
    body = text.strip()
    digits = body.replace(".", "", 1)
    if not digits.isdigit() or not digits.isascii() or len(digits) > 12:
        raise SpecError(f"bad activation {name[:40]!r}: the slope must be a decimal number of at most 12 digits, "
                        "such as leaky_relu(0.01)")
    slope = sp.Rational(body)
    if not 0 <= slope < 1:
        raise SpecError(f"bad activation {name!r}: the slope must be at least 0 and below 1")
    return slope


def activation_names() -> tuple[str, ...]:
    """Names accepted by --activation."""
    return (*_BUILTINS, "leaky_relu(slope)", SOFTMAX)


def get_activation_by_function(function: type[ActivationBase]) -> Activation:
    """The activation whose SymPy function class is ``function``."""
    for cached in _ALL:
        if cached.function is function:
            return cached
    raise KeyError(function.__name__)
