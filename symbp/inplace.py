"""The training step as NumPy calls that write into arrays made once: a printer of the program.

``z1 = np.dot(W1, X) + b1`` allocates a fresh (units × m) array for the product and
another for the sum. On wide layers, getting that memory from the system every step
costs more than the arithmetic. So ``train`` runs a step printed from the lowered
program (:mod:`symbp.program`) with ``out=`` everywhere: the program's buffers become work
arrays made once per batch size, and each operation becomes one call per line:

* ``Gemm`` → ``np.dot(W1, X, out=z1)``, or ``_dot(W2, a1, z2, z2_pieces)`` for a product with a
  side of 16 or less, which the module multiplies in pieces on long batches (``pieces_of``);
  ``AddBias`` → ``z1 += b1``;
* ``Apply`` → the elementwise formula (code forms put in, shared subexpressions in their
  scratch arrays, as the program decided) written as ufunc calls into its array;
* ``SampleTotal`` → ``np.dot`` with a column of ones; ``UnitTotal`` → ``np.dot`` with a row of
  ones; ``ColumnSoftmax``; ``Descend`` scales
  the gradient's own array in place and subtracts it.

The step it prints is the program after ``passes.fold_rate``, ``passes.stack_biases``,
``passes.gradients_early`` and ``passes.descend_early``; gradients of equal shape may share one
array (``passes.shared_gradients``), and a value read for the last time may hold an elementwise
formula's temporary (``InPlacePrinter.reusable``). A node inside a formula that has no ufunc is
an error naming it, never a silent whole-array assignment.
"""

from __future__ import annotations

import sympy as sp
from sympy.codegen.numpy_nodes import logaddexp

from .algebra import SCRATCH, VALUE, Entry
from .codegen import _CODE, OperationPrinter, UnsupportedOperation
from .program import (
    AddBias,
    Apply,
    Buffer,
    ColumnSoftmax,
    Descend,
    Gemm,
    Program,
    SampleTotal,
    UnitTotal,
    reads,
    writes,
)

# SymPy functions whose NumPy ufunc takes out=, by the ufunc's name.
_UNARY = {sp.exp: "exp", sp.log: "log", sp.tanh: "tanh", sp.sinh: "sinh", sp.cosh: "cosh",
          sp.sin: "sin", sp.cos: "cos", sp.tan: "tan", sp.atan: "arctan", sp.asinh: "arcsinh",
          sp.Abs: "absolute", sp.sign: "sign"}
_BINARY = {logaddexp: "logaddexp", sp.Max: "maximum", sp.Min: "minimum"}
# Entries per sample (or per gradient) between which a product with a side of 16 or less is
# multiplied in pieces: below, it would need more than 2,000 samples to be cut at all.
_PIECES_FROM, _PIECES_TO = 500, 4200


def _is_scalar(expr: sp.Basic) -> bool:
    """A formula in numbers and constants alone: no array's entry in it."""
    return not any(isinstance(s, Entry) for s in expr.free_symbols)


def _is_leaf(expr: sp.Basic) -> bool:
    """A value a ufunc can take as it is: a name, a number, or a formula in numbers and
    constants alone (``1 - DROPOUT``, ``learning_rate/m``), which Python computes once as a
    scalar instead of NumPy filling an array with it."""
    return isinstance(expr, (sp.Symbol, sp.Number, sp.NumberSymbol)) or _is_scalar(expr)


class InPlacePrinter(OperationPrinter):
    """Prints each operation of a program as NumPy calls with ``out=``.

    Inside an elementwise formula, ``_into_<Node>(expr, out)`` returns the lines that leave
    expr's value in the array named ``out``, found along the node's class hierarchy as
    SymPy's printers find ``_print_<Node>``.
    """

    backend = "numpy (in place)"

    def __init__(self, program: Program) -> None:
        super().__init__()
        self.program = program
        self._owner = ""
        self._out: Buffer | None = None
        self.ones = False  # whether a sum over the samples uses the work arrays' column of ones
        self._op: Apply | None = None
        # each buffer's last reader (reading a stacked array reads the buffers it holds)
        self.last_reader = {name: id(op) for step in program.steps for op in step.operations
                            for read in reads(op) for name in program.within(read)}
        self.units: set[int] = set()  # the unit counts of the rows of ones sums over units use
        self.pieces: dict[str, str] = {}  # products multiplied in pieces: name → _pieces' arguments

    # -- operations ----------------------------------------------------------------------------
    def _print_Gemm(self, op: Gemm) -> list[str]:
        left = op.left.name + (".T" if op.left_transposed else "")
        right = op.right.name + (".T" if op.right_transposed else "")
        pieces = self.pieces_of(op)
        if pieces is None:
            return [f"np.dot({left}, {right}, out={op.out.name})"]
        name = f"{op.out.name}_pieces"
        self.pieces[name] = pieces
        return [f"_dot({left}, {right}, {op.out.name}, {name})"]

    def pieces_of(self, op: Gemm) -> str | None:
        """The arguments of ``_pieces`` that cut a product with a small side into pieces of
        its result's columns, or None for a product multiplied whole.

        OpenBLAS multiplies a product of at most 10⁶ multiply-adds with kernels that do not
        pack (copy) its operands first; where one side is 16 or less, packing costs about
        as much as the arithmetic, and the pieces take 0.3–0.8 of the whole product's time
        (``bench/NOTES.md``). Past about 4,200 entries per sample (a wide layer into a
        narrow one) or per gradient the pieces were slower, so those stay whole. A
        gradient's pieces also hold at most 650 entries each: OpenBLAS's small kernel for
        it is slow on larger ones. A gradient is cut into pieces of its columns, and only
        where it has 16 rows or fewer: pieces of one or two columns were slower.
        """
        inner = op.left.rows if op.left_transposed else op.left.cols
        if op.out.per_sample and inner is not None:  # W a or Wᵀδ: pieces of the samples
            size = op.out.rows * inner
            if min(op.out.rows, inner) <= 16 and _PIECES_FROM <= size <= _PIECES_TO:
                return f"m, {size} * m"
        elif not op.out.per_sample and inner is None:  # δ aᵀ, summed over the samples: pieces of its
            size = op.out.rows * op.out.cols  # columns, so only where its rows are the short side
            if op.out.rows <= 16 and _PIECES_FROM <= size <= _PIECES_TO:
                return f"{op.out.cols}, {size} * m, {size}"
        return None

    def _print_AddBias(self, op: AddBias) -> list[str]:
        return [f"{op.out.name} += {op.bias.name}"]

    def _print_Apply(self, op: Apply) -> list[str]:
        self._owner, self._out, self._op = op.out.name, op.out, op
        lines: list[str] = []
        for scratch, value in op.shared:
            lines += self.into(value, scratch)
        reads_out = [s for s in op.code.free_symbols if isinstance(s, Entry) and s.quantity.name == op.out.name]
        if not reads_out:
            return lines + self.into(op.code, op.out)
        (itself,) = reads_out
        rest = op.code / itself
        if isinstance(op.code, sp.Mul) and not rest.has(itself):  # out ⊙ (…): scale out in place
            return lines + [f"{op.out.name} *= {self.operand(rest, lines)}"]
        rest = op.code - itself
        if isinstance(op.code, sp.Add) and not rest.has(itself):  # out + (…): add to out in place
            return lines + [f"{op.out.name} += {self.operand(rest, lines)}"]
        scratch = self.operand(op.code, lines)  # computed apart, as it reads what it overwrites
        return lines + [f"np.copyto({op.out.name}, {scratch})"]

    def _print_SampleTotal(self, op: SampleTotal) -> list[str]:
        # A product with a column of ones: on short rows (small batches) BLAS sums about 4
        # times faster than .sum(axis=1), and as fast on long ones.
        # The column is one of the work arrays, made with them once per batch size.
        self.ones = True
        return [f"np.dot({op.source.name}, ones, out={op.out.name})"]

    def _print_UnitTotal(self, op: UnitTotal) -> list[str]:
        return [f"np.dot({self.unit_ones(op.source.rows)}, {op.source.name}, out={op.out.name})"]

    def _print_ColumnSoftmax(self, op: ColumnSoftmax) -> list[str]:
        out, z = op.out.name, op.source.name
        total = self.program.scratch(f"{out}_total", 1)
        return [
            f"np.subtract({z}, {z}.max(axis=0, keepdims=True), out={out})",
            f"np.exp({out}, out={out})",
            f"np.dot({self.unit_ones(op.out.rows)}, {out}, out={total.name})",
            f"{out} /= {total.name}",
        ]

    def unit_ones(self, rows: int) -> str:
        """A row of ones, one per unit: a Σ over the units is a product with it, which on small
        batches takes half the time of .sum(axis=0). It is one of the work arrays."""
        name = f"ones_{rows}"
        if name in self.program.buffers:
            raise UnsupportedOperation(f"the {self.backend} backend needs an array named {name}, which the program has")
        self.units.add(rows)
        return name

    def _print_Descend(self, op: Descend) -> list[str]:
        """θ ← θ − α ∂L/∂θ: the gradient's own array is scaled in place, as nothing reads it later
        (a rate of 1: the array already holds α ∂L/∂θ, passes.fold_rate)."""
        if op.rate == 1:
            return [f"{op.param.name} -= {op.gradient.name}"]
        return [f"{op.gradient.name} *= {_CODE.doprint(op.rate)}", f"{op.param.name} -= {op.gradient.name}"]

    # -- elementwise formulas -----------------------------------------------------------------
    def into(self, expr: sp.Basic, out: Buffer | str) -> list[str]:
        """Lines that leave ``expr``'s value in the array ``out``."""
        out = out if isinstance(out, str) else out.name
        if _is_leaf(expr):
            return [f"np.copyto({out}, {self.leaf(expr)})"]
        for cls in type(expr).__mro__:
            method = getattr(self, f"_into_{cls.__name__}", None)
            if method is not None:
                lines = method(expr, out)
                if lines is not None:
                    return lines
                break
        raise UnsupportedOperation(f"the {self.backend} backend has no ufunc for {type(expr).__name__} ({expr})")

    def leaf(self, expr: sp.Basic) -> str:
        """A name or a number as a ufunc argument; numbers as floats, which NumPy need not convert."""
        if isinstance(expr, sp.Number):
            return repr(float(expr))
        return _CODE.doprint(expr)  # whole: a call's argument, or the right of out *= …

    def operand(self, expr: sp.Basic, lines: list[str]) -> str:
        """expr as a ufunc argument: itself when a leaf, else computed into a new scratch array."""
        if _is_leaf(expr):
            return self.leaf(expr)
        reused = self.reusable(expr)
        if reused is not None:
            start = len(lines)
            lines += self.into(expr, reused)
            lines[start] += f"  # {reused.name} is read no more: its array takes this"
            return reused.name
        fixed = self._out is not None and not self._out.per_sample  # scratch shaped like the array it feeds
        scratch = self.program.scratch(f"{self._owner}_t", self.rows_of(expr), self._out.cols if fixed else None)
        lines += self.into(expr, scratch)
        return scratch.name

    def reusable(self, expr: sp.Basic) -> Buffer | None:
        """The array of the one value expr reads, where that is its last read: 1 − a⁽¹⁾² goes
        into a⁽¹⁾'s own array once nothing reads a⁽¹⁾ afterwards, instead of into one more.

        Only where a write to the array cannot come before the read: expr reads no other
        array and the value once, the formula around it does not read the value, and no
        conditional (its condition is read after its values are written)."""
        op = self._op
        entries = [s for s in expr.free_symbols if isinstance(s, Entry)]
        if op is None or op.shared or len(entries) != 1 or expr.has(sp.Piecewise):
            return None
        (value,) = entries
        buffer = self.program.buffers[value.quantity.name]
        if (expr.count(value) != 1 or op.code.count(value) != 1 or buffer.name == op.out.name
                or buffer.role not in (VALUE, SCRATCH) or not buffer.per_sample
                or not self._out.per_sample or self.last_reader.get(buffer.name) != id(op)):
            return None
        return buffer

    def rows_of(self, expr: sp.Basic) -> int:
        """The rows of a per-sample value: the widest array its formula reads."""
        widths = [self.program.buffers[s.quantity.name].rows for s in expr.free_symbols if isinstance(s, Entry)]
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
        # The factors in numbers and constants alone make one scalar, α/m say (one call), but
        # a plain 1/m stays a division, as NumPy's allocating code divides.
        coeff, factors = expr.as_coeff_mul()
        scalar = sp.Mul(coeff, *(f for f in factors if _is_scalar(f)))
        factors = tuple(f for f in factors if not _is_scalar(f))
        top, bottom = sp.fraction(scalar)
        coeff, below = (scalar, []) if bottom != 1 and top not in (1, -1) else (top, [bottom] if bottom != 1 else [])
        numerator = [f for f in factors if not (f.is_Pow and f.exp.is_Number and f.exp < 0)]
        denominator = [f.base ** -f.exp for f in factors if f not in numerator] + below
        if not numerator:
            numerator, coeff = [coeff], sp.Integer(1)
        if coeff == 1 and len(numerator) == 1 and _is_leaf(numerator[0]) and denominator:  # x / (…)
            lines: list[str] = []
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
        if type(expr) in (sp.Max, sp.Min) and len(expr.args) > 2:  # folded: max(max(a, b), c)
            first, *rest = expr.args
            lines = self.into(first, out)
            for arg in rest:
                lines.append(f"np.{_BINARY[type(expr)]}({out}, {self.operand(arg, lines)}, out={out})")
            return lines
        if type(expr) in _BINARY and len(expr.args) == 2:
            left, right = expr.args
            lines: list[str] = []
            ufunc = _BINARY[type(expr)]
            if not _is_leaf(right):  # the computed operand goes into out; the other may need scratch
                lines += self.into(right, out)
                return lines + [f"np.{ufunc}({self.operand(left, lines)}, {out}, out={out})"]
            if not _is_leaf(left):
                lines += self.into(left, out)
                return lines + [f"np.{ufunc}({out}, {self.leaf(right)}, out={out})"]
            return [f"np.{ufunc}({self.leaf(left)}, {self.leaf(right)}, out={out})"]
        return None

    def _into_Heaviside(self, expr: sp.Heaviside, out: str) -> list[str]:
        at_zero = float(expr.args[1]) if len(expr.args) > 1 else 0.5
        lines: list[str] = []
        return lines + [f"np.heaviside({self.operand(expr.args[0], lines)}, {at_zero!r}, out={out})"]

    def _into_Piecewise(self, expr: sp.Piecewise, out: str) -> list[str]:
        """(value if condition else otherwise): otherwise into out, then value copied where the condition holds."""
        (value, condition), (otherwise, _) = expr.args
        lines = self.into(otherwise, out)
        source = self.operand(value, lines)
        return lines + [f"np.copyto({out}, {source}, where={_CODE.doprint(condition)})"]


def shared_arrays(program: Program) -> dict[str, str]:
    """Values that can take the array of a value read for the last time in computing them:
    {value: the earlier value}.

    An activation that is one ufunc of its input, such as tanh(z⁽¹⁾) when nothing reads z⁽¹⁾
    afterwards, may write over that input (NumPy's ufuncs allow out= to be an input). The
    step's working set then has one layer-sized array fewer, which keeps more of it in cache
    on long batches. Nothing else shares: a product's out= must not overlap its operands, and
    a formula printed as several calls could read its input after overwriting it.
    """
    operations = [op for step in program.steps for op in step.operations]
    last_read: dict[str, int] = {}
    written: dict[str, list[int]] = {}
    for index, op in enumerate(operations):  # reading or writing a stacked array reads or writes its parts
        for name in set().union(*map(program.within, reads(op))):
            last_read[name] = index
        for name in set().union(*map(program.within, writes(op) | {s.name for s, _ in getattr(op, "shared", ())})):
            written.setdefault(name, []).append(index)
    shared: dict[str, str] = {}
    for index, op in enumerate(operations):
        if not (isinstance(op, Apply) and not op.shared and type(op.code) in _UNARY
                and isinstance(op.code.args[0], Entry)):
            continue
        source = program.buffers[op.code.args[0].quantity.name]
        if (source.role in (VALUE, SCRATCH) and source.per_sample and op.out.per_sample
                and source.rows == op.out.rows and last_read.get(source.name) == index
                and written.get(source.name, [index])[-1] < index and written[op.out.name][0] == index):
            shared[op.out.name] = shared.get(source.name, source.name)
    return shared
