"""Custom activations written as a formula in z, read without evaluating any Python.

The text is parsed by :func:`ast.parse` (which only builds a tree) and the tree is walked
here: numbers, the name ``z``, the constants ``pi`` and ``E``, the operators
``+ - * / **`` and a fixed table of functions become SymPy objects. Everything else
(attributes, subscripts, keywords, lambdas, other names) is refused with a one-line error.
"""

from __future__ import annotations

import ast
from collections.abc import Callable

import sympy as sp

from .spec import SpecError

z = sp.Symbol("z", real=True)

MAX_LENGTH = 200
MAX_LITERAL = 10**6  # every number in a formula, as written or as computed from numbers
MAX_NUMERIC_EXPONENT = 16  # z**16 is allowed, z**17 and 2**17 are not
MAX_DEPTH = 10  # operations and calls nested in one another


def _sigmoid(x: sp.Expr) -> sp.Expr:
    return 1 / (1 + sp.exp(-x))


def _softplus(x: sp.Expr) -> sp.Expr:
    return sp.log(1 + sp.exp(x))


def _relu(x: sp.Expr) -> sp.Expr:
    return sp.Max(0, x)


# Functions a formula may call, each with its number of arguments.
FUNCTIONS: dict[str, tuple[Callable[..., sp.Expr], int]] = {
    "exp": (sp.exp, 1),
    "log": (sp.log, 1),
    "sqrt": (sp.sqrt, 1),
    "sin": (sp.sin, 1),
    "cos": (sp.cos, 1),
    "tan": (sp.tan, 1),
    "sinh": (sp.sinh, 1),
    "cosh": (sp.cosh, 1),
    "tanh": (sp.tanh, 1),
    "atan": (sp.atan, 1),
    "asinh": (sp.asinh, 1),
    "Abs": (sp.Abs, 1),
    "abs": (sp.Abs, 1),
    "Max": (sp.Max, 2),
    "max": (sp.Max, 2),
    "Min": (sp.Min, 2),
    "min": (sp.Min, 2),
    "sigmoid": (_sigmoid, 1),
    "softplus": (_softplus, 1),
    "relu": (_relu, 1),
}
CONSTANTS = {"z": z, "pi": sp.pi, "E": sp.E}

_BINARY: dict[type, Callable[[sp.Expr, sp.Expr], sp.Expr]] = {
    ast.Add: lambda x, y: x + y,
    ast.Sub: lambda x, y: x - y,
    ast.Mult: lambda x, y: x * y,
    ast.Div: lambda x, y: x / y,
    ast.Pow: lambda x, y: x**y,
}


def vocabulary() -> str:
    """What a formula may use, in words (for errors and --help)."""
    allowed = ", ".join(sorted(set(FUNCTIONS) - {"abs", "max", "min"}))  # lower-case aliases of Abs, Max, Min
    return f"{', '.join(CONSTANTS)}, numbers, + - * / ** and {allowed}"


def parse_formula(text: str) -> sp.Expr:
    """The SymPy expression for an activation formula in z, e.g. ``z/(1+exp(-z))``."""
    if len(text) > MAX_LENGTH:
        raise SpecError(f"bad activation formula: longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise SpecError(f"bad activation {text!r}: not a formula in z such as z/(1+exp(-z))") from None
    if _depth(tree.body) > MAX_DEPTH:
        raise SpecError(f"bad activation formula {text!r}: nested more than {MAX_DEPTH} deep")
    try:
        expr = _Reader(text).read(tree.body)
    except RecursionError:
        raise SpecError(f"bad activation formula {text!r}: nested too deeply") from None
    if not expr.has(z):
        raise SpecError(f"bad activation formula {text!r}: it must depend on z")
    if expr.has(sp.I, sp.zoo, sp.oo, sp.nan):
        raise SpecError(f"bad activation formula {text!r}: it is not a finite real formula")
    return expr


def _depth(node: ast.AST) -> int:
    """How deeply operations and calls nest (a name or a number is 0)."""
    children = [child for child in ast.iter_child_nodes(node) if isinstance(child, ast.expr)]
    if not children:
        return 0
    return 1 + max(_depth(child) for child in children)


class _Reader:
    """Turns an expression tree into SymPy, node type by node type; anything unlisted is refused."""

    def __init__(self, text: str) -> None:
        self.text = text

    def refuse(self, what: str) -> SpecError:
        return SpecError(f"bad activation formula {self.text!r}: {what}; use {vocabulary()}")

    def read(self, node: ast.AST) -> sp.Expr:
        method = getattr(self, f"read_{type(node).__name__}", None)
        if method is None:
            raise self.refuse(f"{type(node).__name__.lower()} is not allowed")
        return method(node)

    def read_Constant(self, node: ast.Constant) -> sp.Expr:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.refuse(f"{value!r} is not a real number")
        if abs(value) > MAX_LITERAL:
            raise self.refuse(f"the number {value!r} is larger than {MAX_LITERAL}")
        return sp.Integer(value) if isinstance(value, int) else sp.Rational(repr(value))

    def read_Name(self, node: ast.Name) -> sp.Expr:
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise self.refuse(f"unknown name {node.id!r}")

    def read_UnaryOp(self, node: ast.UnaryOp) -> sp.Expr:
        if isinstance(node.op, ast.USub):
            return -self.read(node.operand)
        if isinstance(node.op, ast.UAdd):
            return self.read(node.operand)
        raise self.refuse(f"the operator {type(node.op).__name__} is not allowed")

    def read_BinOp(self, node: ast.BinOp) -> sp.Expr:
        combine = _BINARY.get(type(node.op))
        if combine is None:
            raise self.refuse(f"the operator {type(node.op).__name__} is not allowed")
        left, right = self.read(node.left), self.read(node.right)
        if isinstance(node.op, ast.Pow) and right.is_number and not abs(right) <= MAX_NUMERIC_EXPONENT:
            raise self.refuse(f"a power above {MAX_NUMERIC_EXPONENT}")
        if isinstance(node.op, ast.Div) and right == 0:
            raise self.refuse("division by zero")
        # Decide a power's size before computing it: 15**16 has 19 digits, and the next power 300.
        if isinstance(node.op, ast.Pow) and left.is_Number and right.is_Number \
                and abs(right) * sp.log(abs(left) or 1, 10) > 6:
            raise self.refuse(f"a number larger than {MAX_LITERAL}")
        result = combine(left, right)
        if result.is_Number and not abs(result) <= MAX_LITERAL:
            raise self.refuse(f"a number larger than {MAX_LITERAL}")
        return result

    def read_Call(self, node: ast.Call) -> sp.Expr:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise self.refuse(f"unknown function {name!r}")
        function, arity = FUNCTIONS[node.func.id]
        # Max and Min take two or more (SymPy writes Max(z, Max(1, -z)) as Max(1, -z, z)).
        fits = len(node.args) >= arity if arity == 2 else len(node.args) == arity
        if node.keywords or not fits:
            many = "2 or more arguments" if arity == 2 else "1 argument"
            raise self.refuse(f"{node.func.id} takes {many}")
        return function(*(self.read(arg) for arg in node.args))
