"""Proof that the matrix formulas are the gradient.

At small sizes every weight and input gets its own scalar symbol, the loss is expanded
into one scalar expression, and for every parameter entry the derivation's formula is
compared with ``sympy.diff`` of that expression. The difference must simplify to 0;
where SymPy cannot decide — steps at kinks, where the two sides differ only at z = 0, or
differences of more than SIMPLIFY_MAX_OPS operations, which simplify may not finish — the two
are compared at random points with 50-digit arithmetic, and the report says which was used.
The rule is fixed, so the same network gets the same report on an idle or a loaded machine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import singledispatch

import sympy as sp
from sympy.matrices.expressions.matexpr import MatrixExpr

from . import activations as act
from . import losses
from .activations import ActivationBase
from .algebra import Elementwise, SampleSum, Softmax, UnitSum
from .budget import within_each
from .derive import Derivation, m
from .ops import DROP, EPSILON, EPSILON_VALUE

MAX_PROOF_PARAMS = 200
MAX_PROOF_DEPTH = 8  # the expanded loss nests one activation per layer
MAX_PROOF_SAMPLES = 4
SIMPLIFY_MAX_OPS = 150
SYMBOLIC_SECONDS = 30.0  # a safety net per entry: the entries simplified here take well under a second
_KINKS = (sp.Heaviside, sp.Piecewise, sp.Max, sp.Min, sp.sign, sp.Abs)


@dataclass(frozen=True)
class EntryCheck:
    """One parameter entry: ∂L/∂θ by the formula against sympy.diff."""

    param: str
    row: int
    col: int
    method: str  # "symbolic" (difference simplified to 0) or "numeric" (50-digit points)
    ok: bool


@dataclass(frozen=True)
class VerifyReport:
    """All entries of all parameters, with how each was decided."""

    network: str
    samples: int
    checks: tuple[EntryCheck, ...]
    assumption: str = ""  # a fact both sides were compared under, e.g. targets summing to 1

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def summary(self) -> str:
        symbolic = sum(c.method == "symbolic" for c in self.checks)
        numeric = len(self.checks) - symbolic
        failed = [f"{c.param}[{c.row},{c.col}]" for c in self.checks if not c.ok]
        verdict = "all equal" if not failed else "MISMATCH at " + ", ".join(failed)
        return (
            f"verify {self.network}, {self.samples} sample(s): {len(self.checks)} gradient entries vs sympy.diff "
            f"of the expanded loss: {verdict} ({symbolic} by symbolic simplification to 0, "
            f"{numeric} by 50-digit evaluation at random points)"
            + (f", given {self.assumption}" if self.assumption else "")
        )

    def __repr__(self) -> str:
        return f"<VerifyReport {self.summary()}>"

    def _repr_markdown_(self) -> str:
        """The verdict and one table row per parameter, for a notebook."""
        failed = [c for c in self.checks if not c.ok]
        verdict = (f"**all {len(self.checks)} gradient entries equal**" if not failed else
                   "**MISMATCH** at " + ", ".join(f"`{c.param}[{c.row},{c.col}]`" for c in failed))
        given = f", given {self.assumption}" if self.assumption else ""
        headline = (f"Proof of `{self.network}` against `sympy.diff` of the expanded loss, "
                    f"{self.samples} sample(s): {verdict}{given}.")
        lines = [headline, "",
                 "| parameter | entries | by simplification to 0 | by 50-digit evaluation | result |",
                 "| --- | ---: | ---: | ---: | --- |"]
        for param in dict.fromkeys(c.param for c in self.checks):
            mine = [c for c in self.checks if c.param == param]
            symbolic = sum(c.method == "symbolic" for c in mine)
            wrong = sum(not c.ok for c in mine)
            result = "equal" if not wrong else f"{wrong} differ"
            lines.append(f"| `{param}` | {len(mine)} | {symbolic} | {len(mine) - symbolic} | {result} |")
        return "\n".join(lines)


def explicit_environment(d: Derivation, samples: int) -> dict[str, sp.Matrix]:
    """A scalar symbol for every entry of every parameter, input and target."""
    env: dict[str, sp.Matrix] = {}
    for symbol in d.params:
        env[symbol.name] = sp.Matrix(symbol.rows, symbol.cols,
                                     lambda i, j, s=symbol: sp.Symbol(f"{s.name}_{i + 1}{j + 1}", real=True))
    for symbol in (d.X, d.Y):
        env[symbol.name] = sp.Matrix(symbol.rows, samples,
                                     lambda i, k, s=symbol: sp.Symbol(f"{s.name}_{i + 1}_{k + 1}", real=True))
    env[m.name] = sp.Integer(samples)
    if d.penalty is not None:
        env[d.penalty.strength.name] = sp.Rational(d.spec.l2)
    env[EPSILON.name] = sp.Rational(EPSILON_VALUE)
    for mask in d.masks:  # a fixed 0/1 pattern that keeps some units and drops others
        env[mask.name] = sp.Matrix(mask.rows, samples, lambda i, k: sp.Integer(int((i + 2 * k) % 3 != 0)))
    if d.masks:
        env[DROP.name] = sp.Rational(d.spec.dropout)
    return env


@singledispatch
def evaluate(expr: sp.Basic, env: dict) -> sp.Matrix | sp.Expr:
    """Evaluate a derivation expression on explicit matrices (samples in columns)."""
    if expr.is_Number:
        return expr
    raise TypeError(f"cannot evaluate {type(expr).__name__}")


@evaluate.register
def _(expr: sp.MatrixSymbol, env: dict) -> sp.Matrix:
    return env[expr.name]


@evaluate.register
def _(expr: sp.Symbol, env: dict) -> sp.Expr:
    return env[expr.name]


@evaluate.register
def _(expr: sp.Pow, env: dict) -> sp.Expr:
    return expr.xreplace({s: env[s.name] for s in expr.free_symbols})  # 1/m before a sum over the samples


@evaluate.register
def _(expr: sp.MatMul, env: dict) -> sp.Matrix:
    result = sp.Integer(1)
    for arg in expr.args:
        result = result * evaluate(arg, env)
    return result


@evaluate.register
def _(expr: sp.MatAdd, env: dict) -> sp.Matrix:
    terms = [evaluate(arg, env) for arg in expr.args]
    cols = max(term.cols for term in terms)
    return sum((_broadcast(term, cols) for term in terms[1:]), _broadcast(terms[0], cols))


@evaluate.register
def _(expr: sp.Transpose, env: dict) -> sp.Matrix:
    return evaluate(expr.arg, env).T


@evaluate.register
def _(expr: sp.HadamardProduct, env: dict) -> sp.Matrix:
    terms = [evaluate(arg, env) for arg in expr.args]
    cols = max(term.cols for term in terms)
    result = _broadcast(terms[0], cols)
    for term in terms[1:]:
        result = result.multiply_elementwise(_broadcast(term, cols))
    return result


@evaluate.register
def _(expr: SampleSum, env: dict) -> sp.Matrix:
    value = evaluate(expr.arg, env)
    return sp.Matrix([sum(value.row(i)) for i in range(value.rows)])


@evaluate.register
def _(expr: UnitSum, env: dict) -> sp.Matrix:
    value = evaluate(expr.arg, env)
    return sp.Matrix([[sum(value.col(k)) for k in range(value.cols)]])


@evaluate.register
def _(expr: Softmax, env: dict) -> sp.Matrix:
    exps = evaluate(expr.arg, env).applyfunc(sp.exp)
    return sp.Matrix(exps.rows, exps.cols, lambda i, k: exps[i, k] / sum(exps.col(k)))


@evaluate.register
def _(expr: Elementwise, env: dict) -> sp.Matrix:
    scalar = _expand_activations(expr.expr)
    vectors = {s: env[s.name] for s in scalar.free_symbols if isinstance(env.get(s.name), sp.MatrixBase)}
    scalars = {s: env[s.name] for s in scalar.free_symbols if s not in vectors}
    cols = max([v.cols for v in vectors.values()] + [1])
    rows = int(expr.shape[0])

    def entry(i: int, k: int) -> sp.Expr:
        # A per-sample row such as s⁽ᴸ⁾ = Σ over units is shared by every unit.
        values = {s: v[i if v.rows > 1 else 0, k if v.cols > 1 else 0] for s, v in vectors.items()}
        return scalar.xreplace({**values, **scalars})

    return sp.Matrix(rows, cols, entry)


def _expand_activations(expr: sp.Expr) -> sp.Expr:
    """Replace σ(z⁽ˡ⁾) by its formula and σ'(z⁽ˡ⁾) by SymPy's derivative of it."""
    def formula_of(f: sp.Expr) -> sp.Expr:
        return act.get_activation_by_function(type(f)).formula.subs(act.z, f.args[0])

    expr = expr.replace(lambda e: isinstance(e, sp.Derivative) and isinstance(e.expr, ActivationBase),
                        lambda e: sp.diff(formula_of(e.expr).subs(e.variables[0], act.z), act.z).subs(
                            act.z, e.variables[0]))
    return expr.replace(lambda e: isinstance(e, ActivationBase), formula_of)


def _broadcast(value: sp.Matrix, cols: int) -> sp.Matrix:
    """A bias column added to every sample, as NumPy broadcasts it."""
    if isinstance(value, MatrixExpr) or not isinstance(value, sp.MatrixBase) or value.cols == cols:
        return value
    return sp.Matrix.hstack(*([value] * cols))


def _simplified_to_zero(differences: list[sp.Expr]) -> list[bool]:
    """Which differences SymPy rewrites to 0. Which are tried is decided by a fixed rule (no
    kinks — a step is ½ at 0 for sympy.diff and 0 for the code, equal except on a null set —
    and at most SIMPLIFY_MAX_OPS operations for simplify), so the report does not depend on the
    machine's load; the time limit per entry is only a safety net far above what any entry here
    takes. One child process tries them all in turn."""
    tried = [i for i, difference in enumerate(differences) if difference != 0 and not difference.has(*_KINKS)]
    zero = [difference == 0 for difference in differences]
    results = within_each(_zero_after_rewrites, [differences[i] for i in tried], seconds=SYMBOLIC_SECONDS)
    for i, result in zip(tried, results, strict=True):
        zero[i] = result is True
    return zero


def _equal_at_points(difference: sp.Expr, right: sp.Expr, rng: random.Random) -> bool:
    """The two sides at three random points with 50-digit arithmetic."""
    symbols = sorted(difference.free_symbols, key=str)
    for _ in range(3):
        point = {s: sp.Float(rng.uniform(-1.5, 1.5), 50) for s in symbols}
        scale = 1 + abs(sp.N(right.xreplace(point), 50))
        if abs(sp.N(difference.xreplace(point), 50)) > sp.Float(10, 50) ** -35 * scale:
            return False
    return True


def _zero_after_rewrites(expr: sp.Expr) -> bool:
    """cancel(together(·)), then simplify where the expression is small enough to finish."""
    if sp.cancel(sp.together(expr)) == 0:
        return True
    return sp.count_ops(expr) <= SIMPLIFY_MAX_OPS and sp.simplify(expr) == 0


def verify(d: Derivation, samples: int = 1, seed: int = 0) -> VerifyReport:
    """Compare every entry of every ∂L/∂W⁽ˡ⁾ and ∂L/∂b⁽ˡ⁾ with sympy.diff of the expanded loss."""
    count = sum(int(p.rows) * int(p.cols) for p in d.params)
    if count > MAX_PROOF_PARAMS:
        raise ValueError(f"the proof expands every weight; {count} parameters is too many "
                         f"(at most {MAX_PROOF_PARAMS}); verify a smaller network of the same shape")
    if d.spec.depth > MAX_PROOF_DEPTH:
        raise ValueError(f"the proof expands the whole loss; {d.spec.depth} layers is too deep "
                         f"(at most {MAX_PROOF_DEPTH}); verify a shallower network with the same layers")
    if type(samples) is not int or not 1 <= samples <= MAX_PROOF_SAMPLES:
        raise ValueError(f"samples must be an integer from 1 to {MAX_PROOF_SAMPLES}, got {samples!r}")
    env = explicit_environment(d, samples)
    for equation in (*d.forward, *d.backward, *d.gradients):
        env[equation.lhs.name] = evaluate(equation.computed, env)
    total = _explicit_loss(d, env)
    targets = _targets_summing_to_one(env[d.Y.name]) if d.output_delta.assumption is not None else {}
    entries = [(param, i, j) for param in d.params for i in range(param.rows) for j in range(param.cols)]
    sides = [(env[d.gradient_of(param).name][i, j].subs(targets),
              sp.diff(total, env[param.name][i, j]).subs(targets)) for param, i, j in entries]
    differences = [left - right for left, right in sides]
    rng = random.Random(seed)
    checks = []
    for (param, i, j), (_, right), difference, zero in zip(entries, sides, differences,
                                                           _simplified_to_zero(differences), strict=True):
        method, ok = ("symbolic", True) if zero else ("numeric", _equal_at_points(difference, right, rng))
        checks.append(EntryCheck(param.name, i + 1, j + 1, method, ok))
    assumption = "Σᵢ yᵢ = 1 for every sample" if targets else ""
    return VerifyReport(d.spec.options(), samples, tuple(checks), assumption)


def _targets_summing_to_one(Y: sp.Matrix) -> dict[sp.Symbol, sp.Expr]:
    """The derivation's assumption Σᵢ yᵢ = 1 per sample, imposed by solving for the last target."""
    return {Y[-1, k]: 1 - sum(Y[:-1, k]) for k in range(Y.cols)}


def _explicit_loss(d: Derivation, env: dict) -> sp.Expr:
    """L = Σ over samples and output units of ℓ, straight from the loss's formula and the forward
    pass; with --l2, plus ½λ times the sum of the squares of every weight entry."""
    out, target = env[d.output.name], env[d.Y.name]
    # the hinge loss's t, the true class's score Σᵢ yᵢaᵢ of each sample
    scores = [sum(target[i, k] * out[i, k] for i in range(out.rows)) for k in range(out.cols)]
    total = sum(d.loss.per_unit.subs({losses.a: out[i, k], losses.y: target[i, k], losses.t: scores[k]})
                for i in range(out.rows) for k in range(out.cols))
    total = total / out.cols if d.spec.reduction == "mean" else total
    if d.penalty is not None:
        squares = sum(entry**2 for W in d.penalty.params for entry in env[W.name])
        total += env[d.penalty.strength.name] / 2 * squares
    return total
