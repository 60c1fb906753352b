"""The derivation lowered once into a small program that every code backend prints.

A :class:`Program` has buffers and steps:

* a :class:`Buffer` is a named array with a role (parameter, input, target, value,
  gradient, scratch; optimizer state and random masks have their roles reserved) and a
  shape: a fixed one, or rows × m for one column per sample;
* a :class:`Step` implements one equation of the derivation. It carries the equation (the
  formula the generated code shows above it) and a short list of operations from a closed
  set: :class:`Gemm`, :class:`AddBias`, :class:`Apply`, :class:`SampleTotal`,
  :class:`UnitTotal`, :class:`ColumnSoftmax`, :class:`Descend`.

Shapes, scratch arrays, the activations' numerically safe code forms and the shared
subexpressions of elementwise formulas are decided here. The backends (allocating NumPy,
NumPy with ``out=``, numba loops) are printers with one ``_print_<Operation>`` method per
operation; an operation a backend has no method for is an error naming both.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import sympy as sp

from .activations import Activation, ActivationBase
from .activations import z as act_z
from .algebra import (
    GRADIENT,
    PARAM,
    SCRATCH,
    VALUE,
    Elementwise,
    Entry,
    Equation,
    Quantity,
    SampleSum,
    Softmax,
    UnitSum,
    entry,
)
from .derive import Derivation, alpha


@dataclass(frozen=True)
class Buffer:
    """A named array: ``rows`` × ``cols``, where ``cols`` None means one column per sample (m)."""

    name: str
    role: str
    rows: int
    cols: int | None = None

    @property
    def per_sample(self) -> bool:
        return self.cols is None

    @property
    def shape_code(self) -> str:
        """The shape as code: ``(2, m)`` or ``(2, 3)``."""
        return f"({self.rows}, {'m' if self.cols is None else self.cols})"


# -- the operations: a closed set ------------------------------------------------------------

@dataclass(frozen=True)
class Gemm:
    """out = op(left) · op(right), op being the identity or the transpose."""

    out: Buffer
    left: Buffer
    right: Buffer
    left_transposed: bool = False
    right_transposed: bool = False


@dataclass(frozen=True)
class AddBias:
    """out += bias, the column added to every sample."""

    out: Buffer
    bias: Buffer


@dataclass(frozen=True)
class Apply:
    """out = a scalar formula, entry by entry; its Entry symbols name buffers (out itself included).

    ``formula`` keeps activations as calls f(z); ``code`` has them replaced by their code
    forms, and ``shared`` lists (scratch buffer, formula) pairs ``code`` reads: the common
    subexpressions, computed once.
    """

    out: Buffer
    formula: sp.Expr
    code: sp.Expr
    shared: tuple[tuple[Buffer, sp.Expr], ...] = ()


@dataclass(frozen=True)
class SampleTotal:
    """out (rows × 1) = Σ over the samples of source."""

    out: Buffer
    source: Buffer


@dataclass(frozen=True)
class UnitTotal:
    """out (1 × m) = Σ over the units of source, per sample."""

    out: Buffer
    source: Buffer


@dataclass(frozen=True)
class ColumnSoftmax:
    """out = softmax(source) per column, shifted by the column's maximum so exp cannot overflow."""

    out: Buffer
    source: Buffer


@dataclass(frozen=True)
class Descend:
    """param ← param − rate · gradient (``rate`` is a symbol: the learning rate)."""

    param: Buffer
    gradient: Buffer
    rate: sp.Expr = alpha


OPERATIONS = (Gemm, AddBias, Apply, SampleTotal, UnitTotal, ColumnSoftmax, Descend)


@dataclass(frozen=True)
class Step:
    """The operations that compute one equation's left-hand side."""

    target: Buffer
    equation: Equation
    operations: tuple
    merged: tuple[Equation, ...] = ()  # more equations the same operations compute (passes.stack_biases)


@dataclass(frozen=True)
class SideBySide:
    """``whole`` = [left right]: a layer's W and b as one array, b its last column (or their gradients)."""

    whole: Buffer
    left: Buffer
    right: Buffer

    @property
    def parts(self) -> tuple[Buffer, ...]:
        return (self.left, self.right)


@dataclass(frozen=True)
class RowBelow:
    """``whole`` = [part; one more row]: a layer's input over a row of ones (``ones``), so
    [W b] · whole = W part + b; or an error over the row bᵀδ that [W b]ᵀ δ computes beside Wᵀδ
    and nothing reads (a product with all of [W b], not with a view of W that BLAS would
    have NumPy copy)."""

    whole: Buffer
    part: Buffer
    ones: bool = True

    @property
    def parts(self) -> tuple[Buffer, ...]:
        return (self.part,)


@dataclass(frozen=True)
class Function:
    """An activation the code calls: its name in code, its formula, and the safe form it computes."""

    activation: Activation
    name: str
    code_form: sp.Expr  # in z


@dataclass
class Program:
    """Buffers and steps of one training step, lowered from a derivation."""

    derivation: Derivation
    buffers: dict[str, Buffer] = field(default_factory=dict)
    forward: tuple[Step, ...] = ()
    backward: tuple[Step, ...] = ()
    gradients: tuple[Step, ...] = ()
    updates: tuple[Step, ...] = ()
    functions: tuple[Function, ...] = ()
    stacks: tuple[SideBySide | RowBelow, ...] = ()  # arrays that hold two buffers (passes.stack_biases)

    @property
    def params(self) -> tuple[Buffer, ...]:
        return tuple(self.buffers[p.name] for p in self.derivation.params)

    @property
    def steps(self) -> tuple[Step, ...]:
        return (*self.forward, *self.backward, *self.gradients, *self.updates)

    @property
    def work(self) -> tuple[Buffer, ...]:
        """The arrays a step writes that are not parameters: values, gradients, scratch."""
        return tuple(b for b in self.buffers.values() if b.role in (VALUE, GRADIENT, SCRATCH))

    def within(self, name: str) -> set[str]:
        """The buffer's name and those of the buffers it holds, where it stacks two."""
        for stack in self.stacks:
            if stack.whole.name == name:
                return {name, *(part.name for part in stack.parts)}
        return {name}

    def buffer(self, quantity: Quantity) -> Buffer:
        return self.buffers[quantity.name]

    def scratch(self, prefix: str, rows: int, cols: int | None = None) -> Buffer:
        """A new scratch array named ``prefix`` and the first free number: ``delta1_t1``."""
        count = 1
        while f"{prefix}{count}" in self.buffers:
            count += 1
        buffer = Buffer(f"{prefix}{count}", SCRATCH, rows, cols)
        self.buffers[buffer.name] = buffer
        return buffer


class LoweringError(NotImplementedError):
    """A formula the program has no operation for; names the node."""


def lower(d: Derivation) -> Program:
    """The derivation as buffers and steps: forward, backward, gradients, then updates."""
    program = Program(d)
    for quantity in (d.X, d.Y, *d.params, *d.masks):
        program.buffers[quantity.name] = _buffer(quantity)
    program.functions = tuple(Function(f, f.function.code_name, f.code_formula)
                              for f in dict.fromkeys(d.activations) if f.elementwise)
    lowering = _Lowering(program)
    program.forward = tuple(lowering.step(e) for e in d.forward)
    program.backward = tuple(lowering.step(e) for e in d.backward)
    program.gradients = tuple(lowering.step(e) for e in d.gradients)
    for quantity in d.optimizer.state if d.optimizer else ():
        program.buffers[quantity.name] = _buffer(quantity)
    program.updates = tuple(lowering.update(e) for e in d.updates)
    return program


def reads(op: object) -> set[str]:
    """The names of the buffers an operation reads: an Apply's, those its formula's entries name
    (its own scratch arrays of shared subexpressions excepted); a Descend's, θ and ∂L/∂θ."""
    if isinstance(op, Apply):
        formulas = [op.code, *(value for _, value in op.shared)]
        names = {s.quantity.name for f in formulas for s in f.free_symbols if isinstance(s, Entry)}
        return names - {scratch.name for scratch, _ in op.shared}
    return {getattr(op, f.name).name for f in fields(op) if f.name != "out" and isinstance(getattr(op, f.name), Buffer)}


def writes(op: object) -> set[str]:
    """The names of the buffers an operation writes: its out; a Descend's θ and ∂L/∂θ (scaled in place)."""
    return {op.param.name, op.gradient.name} if isinstance(op, Descend) else {op.out.name}


def _buffer(quantity: Quantity) -> Buffer:
    # A quantity's kind (input, target, param, value, gradient) is its buffer's role.
    return Buffer(quantity.name, quantity.kind, int(quantity.rows), None if quantity.per_sample else int(quantity.cols))


class _Lowering:
    """Turns each equation's matrix formula into operations, node type by node type."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.code_forms = {f.activation.function: f.code_form for f in program.functions}

    def step(self, equation: Equation) -> Step:
        target = _buffer(equation.lhs)
        self.program.buffers[target.name] = target
        return Step(target, equation, tuple(self.into(equation.computed, target)))

    def update(self, equation: Equation) -> Step:
        """An optimizer's step: θ ← θ − α ∂L/∂θ is Descend; any other update is a formula applied to
        its array in place (v ← μv + g, θ ← θ − α v); m̂ = m/(1 − β₁ᵗ) is computed like any value."""
        if equation.relation == "=":
            return self.step(equation)
        target = self.program.buffer(equation.lhs)
        rhs = equation.rhs
        if equation.relation == "-=" and not isinstance(rhs, Elementwise):
            _, (quantity,) = rhs.as_coeff_matrices()
            if quantity.kind == GRADIENT:  # nothing reads the gradient after: Descend may scale it in place
                return Step(target, equation, (Descend(target, self.program.buffer(quantity)),))
        change = rhs.expr if isinstance(rhs, Elementwise) else self.multiple(rhs)
        formula = entry(equation.lhs) - change if equation.relation == "-=" else change
        return Step(target, equation, (self.apply(target, formula),))

    def into(self, expr: sp.Basic, out: Buffer) -> list:
        """Operations that leave expr's value in out."""
        method = getattr(self, f"_{type(expr).__name__}", None)
        if method is None:
            raise LoweringError(f"no operation computes {type(expr).__name__} ({expr})")
        return method(expr, out)

    def source(self, expr: sp.Basic, out: Buffer, suffix: str, operations: list) -> Buffer:
        """expr as a buffer: itself when it is a stored quantity, else computed into scratch."""
        if isinstance(expr, Quantity):
            return self.program.buffer(expr)
        rows = int(expr.shape[0])
        scratch = self.program.scratch(f"{out.name}_{suffix}", rows, None if out.per_sample else out.cols)
        operations += self.into(expr, scratch)
        return scratch

    # matrix nodes
    def _MatAdd(self, expr: sp.MatAdd, out: Buffer) -> list:
        """One product into out, then bias columns (AddBias) and multiples c·Q of stored quantities."""
        def is_product(term: sp.Basic) -> bool:
            return isinstance(term, sp.MatMul) and len(term.as_coeff_matrices()[1]) == 2

        products = [t for t in expr.args if is_product(t)]
        biases = [t for t in expr.args if isinstance(t, Quantity) and t.kind == PARAM and t.cols == 1]
        scaled = [t for t in expr.args if not is_product(t) and t not in biases]
        if len(products) != 1:
            raise LoweringError(f"no operation computes the sum {expr}")
        operations = [*self.into(products[0], out), *(AddBias(out, self.program.buffer(b)) for b in biases)]
        if scaled:
            terms = [self.multiple(t) for t in scaled]
            operations.append(self.apply(out, entry(_quantity(out)) + sp.Add(*terms)))
        return operations

    def multiple(self, term: sp.Basic) -> sp.Expr:
        """c·Q (a number or symbol times a stored quantity) as a formula in Q's entries."""
        coeff, matrices = term.as_coeff_matrices() if isinstance(term, sp.MatMul) else (1, [term])
        if len(matrices) != 1 or not isinstance(matrices[0], Quantity):
            raise LoweringError(f"no operation adds {term}")
        return coeff * entry(matrices[0])

    def _MatMul(self, expr: sp.MatMul, out: Buffer) -> list:
        coeff, matrices = expr.as_coeff_matrices()
        if coeff != 1 and len(matrices) == 1:  # c·(a matrix formula), such as a mean Σ z/m: the formula, then scaled
            return [*self.into(matrices[0], out), self.apply(out, coeff * entry(_quantity(out)))]
        if coeff != 1 or len(matrices) != 2:
            raise LoweringError(f"no operation computes the product {expr}")
        operations: list = []
        operands = []
        for index, factor in enumerate(matrices):
            transposed = isinstance(factor, sp.Transpose)
            inner = factor.arg if transposed else factor
            operands.append((self.source(inner, out, "f", operations), transposed))
        (left, left_t), (right, right_t) = operands
        return [*operations, Gemm(out, left, right, left_t, right_t)]

    def _HadamardProduct(self, expr: sp.HadamardProduct, out: Buffer) -> list:
        """The matrix factor (a product) into out, then out ⊙ the elementwise factors, as one formula."""
        matrices = [arg for arg in expr.args if not isinstance(arg, (Elementwise, Quantity))]
        operations: list = []
        if matrices:
            (first,) = matrices
            operations += self.into(first, out)
            scalars = [entry(_quantity(out)), *(self.scalar(a) for a in expr.args if a is not first)]
        else:
            scalars = [self.scalar(a) for a in expr.args]
        return [*operations, self.apply(out, sp.Mul(*scalars))]

    def _Elementwise(self, expr: Elementwise, out: Buffer) -> list:
        return [self.apply(out, expr.expr)]

    def _Quantity(self, expr: Quantity, out: Buffer) -> list:
        return [self.apply(out, entry(expr))]

    def _SampleSum(self, expr: SampleSum, out: Buffer) -> list:
        operations: list = []
        if isinstance(expr.arg, Quantity):
            source = self.program.buffer(expr.arg)
        else:  # the summand, one column per sample, into scratch
            source = self.program.scratch(f"{out.name}_terms", int(expr.arg.shape[0]))
            operations += self.into(expr.arg, source)
        if not source.per_sample:
            raise LoweringError(f"Σ over samples of {expr.arg}, which has no samples")
        return [*operations, SampleTotal(out, source)]

    def _UnitSum(self, expr: UnitSum, out: Buffer) -> list:
        operations: list = []
        if isinstance(expr.arg, Quantity):
            source = self.program.buffer(expr.arg)
        else:
            source = self.program.scratch(f"{out.name}_terms", int(expr.arg.shape[0]))
            operations += self.into(expr.arg, source)
        return [*operations, UnitTotal(out, source)]

    def _Softmax(self, expr: Softmax, out: Buffer) -> list:
        return [ColumnSoftmax(out, self.program.buffer(expr.arg))]

    # elementwise formulas
    def scalar(self, expr: sp.Basic) -> sp.Expr:
        if isinstance(expr, Elementwise):
            return expr.expr
        if isinstance(expr, Quantity):
            return entry(expr)
        raise LoweringError(f"no elementwise form of {expr}")

    def apply(self, out: Buffer, formula: sp.Expr) -> Apply:
        """An elementwise step: code forms put in, shared subexpressions given scratch arrays."""
        code = formula.replace(lambda e: isinstance(e, ActivationBase) and type(e) in self.code_forms,
                               lambda e: self.code_forms[type(e)].subs(act_z, e.args[0]))
        replacements, (reduced,) = sp.cse(code, symbols=sp.numbered_symbols("shared", real=True))
        shared, mapping = [], {}
        for symbol, value in replacements:
            value = value.xreplace(mapping)
            rows = max((int(e.quantity.rows) for e in value.free_symbols if isinstance(e, Entry)), default=out.rows)
            scratch = self.program.scratch(f"{out.name}_s", rows, None if out.per_sample else out.cols)
            mapping[symbol] = entry(_quantity(scratch))
            shared.append((scratch, value))
        return Apply(out, formula, reduced.xreplace(mapping), tuple(shared))


def _quantity(buffer: Buffer) -> Quantity:
    """The quantity a buffer holds, for formulas that read it entry by entry (printers look it up by name)."""
    return Quantity(buffer.name, buffer.rows, 1 if buffer.per_sample else buffer.cols, buffer.role, buffer.name)
