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

from dataclasses import dataclass, field, fields, replace

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
    merged: tuple[Equation, ...] = ()  # more equations the same operations compute (stack_biases)


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
    stacks: tuple[SideBySide | RowBelow, ...] = ()  # arrays that hold two buffers (stack_biases)

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


def fold_rate(program: Program) -> Program:
    """For gradient descent with no penalty: the program with the step δ⁽ᴺ⁾ ← α δ⁽ᴺ⁾ right after
    δ⁽ᴺ⁾, and updates that subtract their gradients as they are.

    Every later error and every gradient is linear in δ⁽ᴺ⁾ (the chain rule multiplies it by
    Jacobians that do not depend on it), so each of their arrays then holds α times its formula,
    which is what the update subtracts: one multiplication per step instead of one per
    parameter. The program is returned unchanged for an optimizer or a penalty (λW joins the
    gradients unscaled), and where a step after δ⁽ᴺ⁾ reads no scaled array or reads a value of
    the backward pass computed before δ⁽ᴺ⁾ (an op after the last affine map).
    """
    d = program.derivation
    descents = all(isinstance(op, Descend) for s in program.updates for op in s.operations)
    if d.optimizer is not None or d.penalty is not None or not descents:
        return program
    delta = d.layers[-1].delta.name
    index = next((i for i, s in enumerate(program.backward) if s.target.name == delta), None)
    if index is None:
        return program
    first = program.backward[index]
    unscaled = {op.out.name for s in program.backward[:index] for op in s.operations}
    scaled = {delta}
    for later in (*program.backward[index + 1:], *program.gradients):
        read = set().union(*(reads(op) for op in later.operations))
        if read & unscaled or not read & scaled:
            return program
        scaled.add(later.target.name)
    value = entry(_quantity(first.target))
    equation = Equation(first.equation.lhs, alpha * first.equation.lhs, relation="<-")
    updates = tuple(replace(s, operations=tuple(replace(op, rate=sp.S.One) for op in s.operations))
                    for s in program.updates)
    last = first.operations[-1]
    if isinstance(last, Apply) and last.out == first.target:
        # δ⁽ᴺ⁾'s last formula times α: the printers fold α into its scalar factor, if any (a mean's 1/m)
        scaled = replace(last, formula=alpha * last.formula, code=alpha * last.code)
        merged = replace(first, operations=(*first.operations[:-1], scaled), merged=(*first.merged, equation))
        backward = (*program.backward[:index], merged, *program.backward[index + 1:])
    else:
        scale = Step(first.target, equation, (Apply(first.target, alpha * value, alpha * value),))
        backward = (*program.backward[:index + 1], scale, *program.backward[index + 1:])
    return replace(program, backward=backward, updates=updates)


# Parameters with more entries than this are taken to stream from memory rather than from
# cache: 2¹⁷ float64 entries is 1 MiB, the second-level cache of one core of the machine
# measured (bench/bound.py --grid). Their layers keep W and b apart (stacked, width 1024 was up
# to 15% slower: rows of 1025 numbers start off a cache line), and their gradients keep their
# place after the backward pass (computed early, width 1024 was 6–8% slower at batch 4: a
# gradient of several MiB written between the backward products evicts what those read).
CACHED_ENTRIES = 2**17


def stack_biases(program: Program) -> Program:
    """The program with each layer's W and b in one array [W b], and the layer's input over a
    row of ones, wherever the step uses them only as W a + b, δ aᵀ, Σ δ and plain descents
    and [W b] has at most ``CACHED_ENTRIES`` entries.

    [W b] [a; 1] = W a + b is then one product instead of a product and a pass adding b, and
    δ [a; 1]ᵀ = [δ aᵀ  Σ δ] gives both gradients in one product: per layer and step, one pass
    over the layer's values and three calls fewer, which tells most on small batches. The
    parts stay buffers of their own (views of the whole, for the steps that read them), and
    the steps that computed ∂L/∂b and updated b merge into those of W. The backward product
    (W⁽ˡ⁺¹⁾)ᵀ δ⁽ˡ⁺¹⁾ takes all of [W b] too, into an array with one row more, bᵀδ, that nothing
    reads: NumPy copies a view of W, with its rows one entry apart, before each BLAS call.
    Returned unchanged where no layer qualifies.
    """
    descents = {op.param.name: op for s in program.updates for op in s.operations
                if isinstance(op, Descend) and len(s.operations) == 1}
    by_target = {s.target.name: s for s in program.steps}
    buffers = dict(program.buffers)
    stacks: list[SideBySide | RowBelow] = []
    replaced: dict[str, Step] = {}  # step target → its new step
    dropped: set[str] = set()  # targets of steps merged into another
    stacked_inputs: set[str] = set()
    for step in program.forward:
        match step.operations:
            case (Gemm(out=z, left=W, right=a, left_transposed=False, right_transposed=False), AddBias(out=out, bias=b)):
                pass
            case _:
                continue
        if (out != z or W.name not in descents or b.name not in descents or a.name in stacked_inputs
                or W.rows * (W.cols + 1) > CACHED_ENTRIES):
            continue
        dW, db = descents[W.name].gradient, descents[b.name].gradient
        if descents[W.name].rate != descents[b.name].rate or not a.per_sample:
            continue
        gradient_W, gradient_b = by_target.get(dW.name), by_target.get(db.name)
        if gradient_W is None or gradient_b is None:
            continue
        match gradient_W.operations, gradient_b.operations:
            case ((Gemm(left=delta, right=a_read, left_transposed=False, right_transposed=True),),
                  (SampleTotal(source=delta_summed),)):
                pass
            case _:
                continue
        if a_read != a or delta_summed != delta:
            continue
        names = {f"{W.name}_{b.name}", f"{dW.name}_{db.name}", f"{a.name}_ones"}
        if names & set(buffers):
            continue
        Wb = Buffer(f"{W.name}_{b.name}", W.role, W.rows, W.cols + 1)
        dWb = Buffer(f"{dW.name}_{db.name}", dW.role, dW.rows, dW.cols + 1)
        a1 = Buffer(f"{a.name}_ones", a.role, a.rows + 1)
        stacks += [SideBySide(Wb, W, b), SideBySide(dWb, dW, db), RowBelow(a1, a)]
        stacked_inputs.add(a.name)
        replaced[z.name] = replace(step, operations=(Gemm(z, Wb, a1),))
        replaced[dW.name] = Step(dWb, gradient_W.equation, (Gemm(dWb, delta, a1, right_transposed=True),),
                                 (*gradient_W.merged, gradient_b.equation, *gradient_b.merged))
        update_W, update_b = by_target[W.name], by_target[b.name]
        replaced[W.name] = Step(Wb, update_W.equation, (Descend(Wb, dWb, descents[W.name].rate),),
                                (*update_W.merged, update_b.equation, *update_b.merged))
        dropped |= {db.name, b.name}
    if not stacks:
        return program
    pairs = {stack.left.name: stack for stack in stacks if isinstance(stack, SideBySide) and stack.whole.role == PARAM}
    for step in program.backward:  # δ⁽ˡ⁾ = (W⁽ˡ⁺¹⁾)ᵀ δ⁽ˡ⁺¹⁾ ⊙ …: [W b]ᵀ δ into an array with one row more
        match step.operations:
            case (Gemm(out=out, left=W, right=g, left_transposed=True, right_transposed=False), *rest):
                pass
            case _:
                continue
        name = f"{out.name}_extra"
        if W.name not in pairs or not out.per_sample or name in buffers or out.name in stacked_inputs:
            continue
        extra = Buffer(name, out.role, out.rows + 1)
        stacks.append(RowBelow(extra, out, ones=False))
        replaced[out.name] = replace(step, operations=(Gemm(extra, pairs[W.name].whole, g, True, False), *rest))
    wholes = {stack.parts[0].name: stack.whole for stack in stacks}
    ordered: dict[str, Buffer] = {}
    for name, buffer in buffers.items():  # each whole where its first part was: _work keeps the steps' order
        if name in wholes:
            ordered[wholes[name].name] = wholes[name]
        ordered[name] = buffer

    def rewritten(steps: tuple[Step, ...]) -> tuple[Step, ...]:
        return tuple(replaced.get(s.target.name, s) for s in steps if s.target.name not in dropped)

    return replace(program, buffers=ordered, stacks=tuple(stacks), forward=rewritten(program.forward),
                   backward=rewritten(program.backward), gradients=rewritten(program.gradients),
                   updates=rewritten(program.updates))


def gradients_early(program: Program) -> Program:
    """The program with each gradient step moved up to right after the last step that writes
    what it reads, the gradients joining ``backward``: ∂L/∂W⁽ˡ⁾ = δ⁽ˡ⁾ (a⁽ˡ⁻¹⁾)ᵀ then comes before
    δ⁽ˡ⁻¹⁾'s elementwise work instead of after all of the backward pass, so a⁽ˡ⁻¹⁾ is read for
    the last time sooner and its array can hold that work's temporaries (``InPlacePrinter``).
    Gradients with more than ``CACHED_ENTRIES`` entries stay where they were."""
    order = list(program.backward)
    moved: list[Step] = []
    for step in program.gradients:
        if step.target.per_sample or step.target.rows * step.target.cols > CACHED_ENTRIES:
            continue
        needs = _expanded(program, (name for op in step.operations for name in reads(op)))
        position = max((i for i, s in enumerate(order)
                        if needs & _expanded(program, (n for op in s.operations for n in writes(op)))), default=-1)
        while position + 1 < len(order) and order[position + 1] in moved:  # after those moved there already
            position += 1
        order.insert(position + 1, step)
        moved.append(step)
    return replace(program, backward=tuple(order), gradients=tuple(s for s in program.gradients if s not in moved))


def _expanded(program: Program, names) -> set[str]:
    """The names, with the buffers that stacked arrays among them hold."""
    return set().union(set(), *(program.within(name) for name in names))


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
