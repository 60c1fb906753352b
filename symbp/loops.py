"""The training step as loops numba compiles: a printer of the program.

numba compiles loops over array entries into machine code; written this way a training
step allocates nothing and makes no Python calls, which is what makes small networks fast.
Each operation of the lowered program (:mod:`symbp.program`) becomes the loops it stands
for, samples k innermost (rows of C arrays are contiguous):

* ``Gemm``: loops, or ``np.dot`` with an output array (SciPy's BLAS) when the matrix that
  is not per-sample has at least ``BLAS_MIN_ENTRIES`` entries;
* ``Apply``: one pass over units i and samples k, the scalar formula printed with every
  buffer indexed by its shape (``a1[i, k]``, a per-sample sum ``s2[0, k]``, a parameter
  vector ``c1[i, 0]``) and activations calling their compiled twins;
* ``SampleTotal``: ``np.dot`` with a column of ones for ``BLAS_MIN_ROWS`` rows or more, else loops;
* ``UnitTotal``, ``ColumnSoftmax``, ``AddBias``, ``Descend``: their loops, samples innermost
  here too (a softmax keeps each sample's maximum and total in rows of the kernel's own).

A bias starts a looped product's rows; after a BLAS product, where the next step is one
formula of z that nothing else reads, the bias is added inside that formula's loop
(``_tanh(shift + z1[i, k])``): one pass over the layer fewer.
"""

from __future__ import annotations

import re
from itertools import pairwise

import sympy as sp
from sympy.printing.precedence import PRECEDENCE

from .activations import Activation
from .algebra import SCRATCH, STATE, Entry
from .codegen import (
    NumpyCodePrinter,
    OperationPrinter,
    UnsupportedOperation,
    fits,
    one_array,
    short_assignments,
    statement,
)
from .derive import alpha, m
from .passes import descend_early, shared_gradients
from .program import (
    AddBias,
    Apply,
    Buffer,
    ColumnSoftmax,
    Descend,
    Gemm,
    Program,
    SampleTotal,
    Step,
    UnitTotal,
    reads,
    writes,
)

KERNEL_INDENT = 12  # the kernel's body (4) inside its loops over epochs (4) and batches (4)
# Matrices with at least this many entries are multiplied by BLAS (np.dot, which numba hands
# to SciPy's BLAS) instead of loops: on 64-128-10 loops were 5 times slower than NumPy, while
# on 2-2-1 a BLAS call per product costs more than the product.
BLAS_MIN_ENTRIES = 256
# A sum over the samples of at least this many rows is a product with a column of ones (BLAS):
# a loop adds one number after another, a chain of dependent additions that does not vectorize.
BLAS_MIN_ROWS = 32


def compiled_form(f: Activation) -> sp.Expr:
    """The formula the kernel evaluates for one number.

    Compiled code has no overflow warnings: exp overflows to inf and 1/(1 + inf) = 0 is the
    right limit, so the sigmoid's textbook form is safe there and cheaper than logaddexp.
    """
    return f.formula if f.name == "sigmoid" else f.code_formula


class ScalarPrinter(NumpyCodePrinter):
    """One number of a formula inside the kernel: buffers indexed, activations compiled.

    Every constant is written ``real(c)``, ``real`` being the data's scalar type, which the
    kernel defines and passes to each compiled activation: numba types a Python number as
    float64, and a float64 constant would widen a float32 kernel's arithmetic to float64 (whole
    powers stay plain: ``a ** 2`` keeps a's type).
    """

    def __init__(self, program: Program | None = None, row: str = "i", sample: str = "k") -> None:
        super().__init__()
        self.program, self.row, self.sample = program, row, sample
        self.helpers: set[str] = set()  # the call-free exp and tanh the printed code uses
        self.twins: set[str] = set()  # the compiled activations the printed code calls

    # libm's exp and tanh are calls, one number at a time, and a call in a loop stops LLVM from
    # vectorizing it; the module's own _exp and _tanh are arithmetic, which vectorizes.
    def _print_exp(self, expr: sp.exp) -> str:
        self.helpers.add("exp")
        return f"_exp({self._print(expr.args[0])})"

    def _print_tanh(self, expr: sp.tanh) -> str:
        self.helpers.add("tanh")
        return f"_tanh({self._print(expr.args[0])})"

    def _print_Symbol(self, expr: sp.Symbol) -> str:
        if isinstance(expr, Entry) and self.program is not None:
            return self.index(self.program.buffers[expr.quantity.name])
        if expr == m or (not isinstance(expr, Entry) and expr.name in self.names and expr != alpha):  # m, λ, ε, p, β…
            return f"real({super()._print_Symbol(expr)})"  # (α: train passes it in the data's dtype)
        return super()._print_Symbol(expr)

    def _print_Integer(self, expr: sp.Integer) -> str:
        return f"real({expr.p})"

    _print_Zero = _print_Integer

    def _print_Float(self, expr: sp.Float) -> str:
        return f"real({super()._print_Float(expr)})"

    def _print_Rational(self, expr: sp.Rational) -> str:
        return f"real({expr.p} / {expr.q})"  # p/q in float64, rounded once, as NumPy takes it

    def _print_logaddexp(self, expr: sp.Function) -> str:
        return f"np.logaddexp({', '.join(self._print(arg) for arg in expr.args)})"

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        base, exp = expr.args
        if exp.is_Integer and exp < 0:
            return f"real(1) / {self._operand(base ** -exp, PRECEDENCE['Mul'] + 1)}"
        if exp == -sp.S.Half:
            return f"real(1) / np.sqrt({self._print(base)})"
        return super()._print_Pow(expr, rational)

    def index(self, buffer: Buffer) -> str:
        """``a1[i, k]``; a row shared by the units ``s2[0, k]``; a parameter vector ``c1[i, 0]``."""
        row = "0" if buffer.rows == 1 else self.row
        column = self.sample if buffer.per_sample else ("j" if buffer.cols > 1 else "0")
        name = "Y" if buffer.role == "target" else buffer.name
        return f"{name}[{row}, {column}]"

    def _print_ActivationBase(self, expr: sp.Function) -> str:
        self.twins.add(type(expr).code_name)
        return f"_{type(expr).code_name}_jit({self._print(expr.args[0])}, real)"

    def doprint(self, expr: sp.Basic, assign_to: str | None = None) -> str:
        text = super().doprint(expr, assign_to)
        # A conditional alone on the right of = needs no brackets (ruff format drops them).
        return text[1:-1] if isinstance(expr, (sp.Heaviside, sp.Piecewise)) else text

    # numba compiles Python's conditional expression; it has no np.heaviside, and np.where is for arrays.
    def _print_Heaviside(self, expr: sp.Heaviside) -> str:
        at_zero = float(expr.args[1]) if len(expr.args) > 1 else 0.5
        x = self._print(expr.args[0])
        if at_zero in (0.0, 1.0):
            return f"(real(1) if {x} {'>' if at_zero == 0 else '>='} 0 else real(0))"
        return f"(real(1) if {x} > 0 else (real({at_zero!r}) if {x} == 0 else real(0)))"

    def _print_Piecewise(self, expr: sp.Piecewise) -> str:
        (value, condition), (otherwise, _) = expr.args
        return f"({self._print(value)} if {self._print(condition)} else {self._print(otherwise)})"

    def _print_Max(self, expr: sp.Max) -> str:
        return f"max({', '.join(self._print(arg) for arg in expr.args)})"

    def _print_Min(self, expr: sp.Min) -> str:
        return f"min({', '.join(self._print(arg) for arg in expr.args)})"

    def _print_Relational(self, expr: sp.core.relational.Relational) -> str:
        # a comparison yields a bool whatever its operands' types: numbers stay plain
        lhs, rhs = ((str(side) if side.is_Integer else repr(float(side))) if side.is_Number else self._print(side)
                    for side in (expr.lhs, expr.rhs))
        return f"{lhs} {expr.rel_op} {rhs}"


def wide(op: Gemm) -> bool:
    """Whether a product goes to BLAS: the operand (or result) shared by all samples is large."""
    fixed = [b for b in (op.out, op.left, op.right) if not b.per_sample]
    return any(b.rows * b.cols >= BLAS_MIN_ENTRIES for b in fixed)


def blas_total(op: SampleTotal) -> bool:
    """Whether a sum over the samples goes to BLAS, as a product with a column of ones."""
    return op.source.rows >= BLAS_MIN_ROWS


def _rows(count: int, body: list[str], index: str = "i") -> list[str]:
    """``for i in range(count):`` around body; no loop at all for one row (index 0)."""
    if count == 1:
        return [re.sub(rf"\b{index}\b", "0", line) for line in body]
    return [f"for {index} in range({count}):", *(f"    {line}" for line in body)]


class LoopPrinter(OperationPrinter):
    """Prints each operation of a program as loops (or a BLAS call) inside the numba kernel."""

    backend = "numba"

    def __init__(self, program: Program) -> None:
        super().__init__()
        self.program = program
        self.scalar = ScalarPrinter(program)
        self.bias: Buffer | None = None  # a bias the next product starts from instead of 0
        self.ones = False  # whether a sum over the samples uses the kernel's column of ones
        self.rows: list[Buffer] = []  # work rows of the kernel's own, not the program's
        self.applied = _applied_at_once(program)
        self.later_bias = _bias_in_next_formula(program)

    def step_lines(self, step: Step) -> list[str]:
        """A step's loops. z = W x + b starts each row from the bias: one pass fewer than adding it after."""
        lines: list[str] = []
        operations = list(step.operations)
        for index, op in enumerate(operations):
            after = operations[index + 1] if index + 1 < len(operations) else None
            if isinstance(op, AddBias) and self.bias is op.bias:
                self.bias = None
                continue
            if isinstance(op, AddBias) and op.out.name in self.later_bias:
                lines.append(f"# {op.bias.name} is added in the next step's loop, as it reads {op.out.name}")
                continue
            if isinstance(op, Gemm) and isinstance(after, AddBias) and after.out == op.out and not self.wide(op):
                self.bias = after.bias
            lines += self.operation(op)
        return lines

    def store(self, out: Buffer, index: str, value: str) -> str:
        """``out[index] = value``; a gradient that only its update reads goes into the parameter at once."""
        if out.name in self.applied:
            param = self.applied[out.name]
            return f"{param.param.name}[{index}] -= {self.scalar.doprint(param.rate)} * {value}"
        return f"{out.name}[{index}] = {value}"

    def wide(self, op: Gemm) -> bool:
        return wide(op)

    def _print_Gemm(self, op: Gemm) -> list[str]:
        left = op.left.name + (".T" if op.left_transposed else "")
        right = op.right.name + (".T" if op.right_transposed else "")
        if self.wide(op):
            return [f"np.dot({left}, {right}, {op.out.name})"]
        if op.out.per_sample and not op.left.per_sample and op.right.per_sample and not op.right_transposed:
            # out[i, k] = Σⱼ W[i, j] x[j, k], the weight read once per row
            inner = op.left.rows if op.left_transposed else op.left.cols
            weight = f"{op.left.name}[j, i]" if op.left_transposed else f"{op.left.name}[i, j]"
            start = "0.0" if self.bias is None else "shift"
            return _rows(op.out.rows, [
                *([f"shift = {self.bias.name}[i, 0]"] if self.bias is not None else []),
                "for k in range(m):",
                f"    {op.out.name}[i, k] = {start}",
                *_rows(inner, [
                    f"weight = {weight}",
                    "for k in range(m):",
                    f"    {op.out.name}[i, k] += weight * {op.right.name}[j, k]",
                ], "j"),
            ])
        if op.out.per_sample or not (op.left.per_sample and op.right.per_sample and op.right_transposed):
            raise UnsupportedOperation(f"the {self.backend} backend has no loops for {op}")
        # out[i, j] = Σₖ left[i, k] right[j, k]: a gradient summed over the samples
        return _rows(op.out.rows, _rows(op.out.cols, [
            "total = 0.0",
            "for k in range(m):",
            f"    total += {op.left.name}[i, k] * {op.right.name}[j, k]",
            self.store(op.out, "i, j", "total"),
        ], "j"))

    def _print_AddBias(self, op: AddBias) -> list[str]:
        return _rows(op.out.rows, [
            f"shift = {op.bias.name}[i, 0]",
            "for k in range(m):",
            f"    {op.out.name}[i, k] += shift",
        ])

    def _print_Apply(self, op: Apply) -> list[str]:
        # inside the loops over i and k, or over i and j for an array with no samples
        inner = 4 if op.out.per_sample else (4 if op.out.cols > 1 else 0)
        indent = KERNEL_INDENT + inner + (4 if op.out.rows > 1 else 0)
        formula, shift = op.formula, []
        for z, (bias, reader) in self.later_bias.items():
            if reader is op:  # z without its bias in the array: the formula adds it (one shift per row)
                entries = {e for e in formula.free_symbols if isinstance(e, Entry) and e.quantity.name == z}
                formula = formula.xreplace({e: e + sp.Symbol("shift") for e in entries})
                shift = [f"shift = {bias.name}[i, 0]"]
        body = self.assign(self.scalar.index(op.out), formula, indent)
        if op.out.per_sample:
            return _rows(op.out.rows, [*shift, "for k in range(m):", *(f"    {line}" for line in body)])
        return _rows(op.out.rows, _rows(op.out.cols, body, "j"))

    def assign(self, target: str, expr: sp.Expr, indent: int) -> list[str]:
        """target = expr, split into short statements when the line would be long."""
        code = self.scalar.doprint(expr)
        if fits(target, code, indent):
            return [f"{target} = {code}"]
        entries = sorted((s for s in expr.free_symbols if isinstance(s, Entry)), key=sp.default_sort_key)
        local = {s: sp.Symbol(f"{s.name}_ik") for s in entries}
        loads = [f"{local[s].name} = {self.scalar.doprint(s)}" for s in entries]
        # the last line assigns to target, not t: measured as if indented by the difference
        *temps, (_, last) = short_assignments("t", expr.xreplace(local), indent + len(target) - 1, self.scalar)
        return [*loads, *(f"{name} = {value}" for name, value in temps), f"{target} = {last}"]

    def _print_SampleTotal(self, op: SampleTotal) -> list[str]:
        if blas_total(op):
            self.ones = True
            return [f"np.dot({op.source.name}, ones, {op.out.name})"]
        return _rows(op.out.rows, [
            "total = 0.0",
            "for k in range(m):",
            f"    total += {op.source.name}[i, k]",
            self.store(op.out, "i, 0", "total"),
        ])

    def _print_UnitTotal(self, op: UnitTotal) -> list[str]:
        # unit by unit, the samples innermost: the loop vectorizes, and each sample's total
        # still adds its units in order
        out = op.out.name
        return [
            "for k in range(m):",
            f"    {out}[0, k] = 0",
            *_rows(op.source.rows, ["for k in range(m):", f"    {out}[0, k] += {op.source.name}[i, k]"]),
        ]

    def _print_ColumnSoftmax(self, op: ColumnSoftmax) -> list[str]:
        """Row by row, each sample's maximum and total kept in a row of their own: the loops over
        the samples are innermost and call the kernel's own exp (arithmetic, not a libm call),
        so they vectorize; each column's total still adds its rows in order, as NumPy's sum
        over axis 0 does."""
        out, z, rows = op.out.name, op.source.name, op.out.rows
        top, total = (self.row(f"{out}_{use}") for use in ("top", "total"))
        self.scalar.helpers.add("exp")
        return [
            "for k in range(m):",
            f"    {top}[0, k] = {z}[0, k]",
            f"    {total}[0, k] = 0",
            f"for i in range(1, {rows}):",
            "    for k in range(m):",
            f"        {top}[0, k] = max({top}[0, k], {z}[i, k])",
            f"for i in range({rows}):",
            "    for k in range(m):",
            f"        {out}[i, k] = _exp({z}[i, k] - {top}[0, k])",
            f"        {total}[0, k] += {out}[i, k]",
            f"for i in range({rows}):",
            "    for k in range(m):",
            f"        {out}[i, k] /= {total}[0, k]",
        ]

    def row(self, name: str) -> str:
        """A work row of one number per sample that only the kernel uses (the program has none)."""
        if name in self.program.buffers:
            raise UnsupportedOperation(f"the {self.backend} backend needs a row named {name}, which the program has")
        self.rows.append(Buffer(name, SCRATCH, 1))
        return name

    def _print_Descend(self, op: Descend) -> list[str]:
        if op.gradient.name in self.applied:
            return []  # applied as the gradient was summed
        rate = self.scalar.doprint(op.rate)
        return _rows(op.param.rows, _rows(op.param.cols, [
            f"{op.param.name}[i, j] -= {rate} * {op.gradient.name}[i, j]",
        ], "j"))


def _sharing(program: Program) -> tuple[Program, list[list[str]]]:
    """The program with the updates of gradients that BLAS computes moved up where that lets such
    gradients of one shape share an array (``passes.descend_early``, ``passes.shared_gradients``),
    and those groups; else the program as lowered and no group. Only whole-batch arrays share:
    the kernel makes its per-sample arrays again for a last, shorter batch."""
    blas = {op.out.name for step in program.gradients for op in step.operations
            if (isinstance(op, Gemm) and wide(op)) or (isinstance(op, SampleTotal) and blas_total(op))}
    params = {op.param.name for step in program.updates for op in step.operations
              if isinstance(op, Descend) and op.gradient.name in blas}
    if not params:
        return program, []
    early = descend_early(program, only=params)
    groups = [group for group in shared_gradients(early) if set(group) <= blas]
    return (early, groups) if groups else (program, [])


def _bias_in_next_formula(program: Program) -> dict[str, tuple[Buffer, Apply]]:
    """{z: (b, the formula)} for each z = W x + b whose product goes to BLAS and whose next step
    is one elementwise formula, the only other reader of z: that formula's loop can add b as it
    reads z."""
    steps = program.steps
    later: dict[str, tuple[Buffer, Apply]] = {}
    for step, following in pairwise(steps):
        match step.operations, following.operations:
            case ((Gemm() as product, AddBias(out=z, bias=b)), (Apply(out=out, shared=()) as formula,)):
                pass
            case _:
                continue
        others = [op for s in steps for op in s.operations
                  if op not in (product, step.operations[1], formula) and z.name in reads(op) | writes(op)]
        if product.out == z and wide(product) and z.per_sample and out.per_sample and not others \
                and z.name in reads(formula):
            later[z.name] = (b, formula)
    return later


def _applied_at_once(program: Program) -> dict[str, Descend]:
    """Gradients whose update can be made as each entry is summed, with no array for the gradient.

    That holds for a gradient computed by loops (not BLAS) and read by nothing but its update,
    whose parameter no later step reads before the updates: then θ −= α·(entry) right away
    gives the same θ.
    """
    descents = {op.gradient.name: op for step in program.updates for op in step.operations
                if isinstance(op, Descend)}
    applied = {}
    for position, step in enumerate(program.gradients):
        for op in step.operations:
            name = getattr(op, "out", None) and op.out.name
            looped = (isinstance(op, Gemm) and not wide(op)) or (isinstance(op, SampleTotal) and not blas_total(op))
            if name not in descents or not looped:
                continue
            later = program.gradients[position + 1:]
            param = descents[name].param.name
            readers = [o for s in (*program.gradients, *program.updates) for o in s.operations
                       if name in (reads(o) | writes(o)) and o is not op and not isinstance(o, Descend)]
            if readers or any(param in (reads(o) | writes(o)) for s in later for o in s.operations):
                continue
            applied[name] = descents[name]
    return applied


def kernel_context(program: Program, batch_norms: list[dict] | None = None) -> dict:
    """What templates/numba_module.py.j2 needs: compiled activations, work arrays, the steps' loops.

    ``batch_norms`` (the module context's) adds, after each step's loops, the moves of the
    running mean and variance that the NumPy ``train`` makes in ``_update_running``.
    """
    program, groups = _sharing(program)
    printer = LoopPrinter(program)
    updates = {step.operations[0].gradient.name: statement(step.equation).formula for step in program.updates
               if isinstance(step.operations[0], Descend)}
    steps = []
    for step in program.steps:
        lines = printer.step_lines(step)
        if not lines:
            continue  # an update made as its gradient was summed
        formula = statement(step.equation).formula
        if step.target.name in printer.applied:
            formula = f"{updates[step.target.name]}, with {formula}"
        steps.append((formula, lines))
    # the compiled activations the loops call (a twin no loop calls is not written)
    twins = ScalarPrinter()
    scalars = [{"name": f.name, "formula": f"{f.activation.function.unicode_symbol}(z)",
                "lines": short_assignments("value", compiled_form(f.activation), 4, twins)}
               for f in program.functions if f.name in printer.scalar.twins]
    # The kernel evaluates each formula whole, so the scratch arrays of shared subexpressions go
    # unused; gradients applied at once need no array either.
    used = {name for step in program.steps for op in step.operations for name in reads(op) | writes(op)}
    used -= set(printer.applied)
    used -= {name for group in groups for name in group[1:]}
    state = [b.name for b in program.buffers.values() if b.role == STATE]
    running = [line for b in batch_norms or [] for line in _running_lines(b)]
    estimates = [name for b in batch_norms or [] for name in (b["running_mean"], b["running_var"])]
    helpers = printer.scalar.helpers | twins.helpers
    return {"scalars": scalars, "steps": steps, "work": [b for b in program.work if b.name in used] + printer.rows,
            "aliases": one_array(groups), "state": state,
            "running": running, "masks": [mask.name for mask in program.derivation.masks],
            "exp": bool(helpers), "tanh": "tanh" in helpers, "ones": printer.ones,
            # the arrays the kernel changes in place, in train's order: parameters, estimates, state
            "arrays": [p.name for p in program.params] + estimates + state}


def _running_lines(b: dict) -> list[str]:
    """One batch norm's running estimates moved towards this batch's, in ``_update_running``'s
    order of operations: × (1 − momentum), then + momentum × the batch's (variance unbiased)."""
    return _rows(b["rows"], [
        f"{b['running_mean']}[i, 0] *= 1 - BN_MOMENTUM",
        f"{b['running_mean']}[i, 0] += BN_MOMENTUM * {b['mean']}[i, 0]",
        f"{b['running_var']}[i, 0] *= 1 - BN_MOMENTUM",
        f"{b['running_var']}[i, 0] += BN_MOMENTUM * {b['var']}[i, 0] * m / (m - 1)",
    ])


