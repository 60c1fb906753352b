"""The JAX backend: the lowered program printed in jax.numpy, as pure functions JAX compiles.

JAX arrays cannot be written into, so each operation becomes an assignment of a new value to
its buffer's name (``z1 = jnp.dot(W1, X)``, then ``z1 = z1 + b1``), and the optimizer's
updates rebind the parameters and the state instead of changing them in place. The gradients
are symbp's derived formulas, one step under each formula, not ``jax.grad``; XLA fuses the
lines of a step when it compiles them.
"""

from __future__ import annotations

import sympy as sp
from sympy.printing.precedence import PRECEDENCE

from .algebra import STATE, TARGET, Entry
from .codegen import (
    LINE_LENGTH,
    NumpyCodePrinter,
    OperationPrinter,
    fits,
    short_assignments,
    signature,
    unpack,
    unpack_masks,
)
from .derive import alpha
from .ops import BatchNorm
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
)

INDENT = 4  # every step is printed in a function body


class JaxCodePrinter(NumpyCodePrinter):
    """The NumPy dialect with ``jnp.`` for ``np.``: jax.numpy mirrors NumPy's functions."""

    def _module_format(self, fqn: str, register: bool = True) -> str:
        return "jnp." + fqn[len("numpy."):] if fqn.startswith("numpy.") else super()._module_format(fqn, register)


JAX_CODE = JaxCodePrinter()


class JaxPrinter(OperationPrinter):
    """Prints each operation of a program as assignments of jax.numpy expressions."""

    backend = "jax"

    def __init__(self, program: Program) -> None:
        super().__init__()
        self.program = program
        self.code = JAX_CODE

    def name(self, buffer: Buffer) -> str:
        return self.code.names.get(buffer.name, "Y" if buffer.role == TARGET else buffer.name)

    def assign(self, target: Buffer, expr: sp.Expr) -> list[str]:
        """``target = expr``, split into short lines (shared subexpressions first) when too long."""
        expr = factored_squares(expr)
        return [f"{name} = {code}" for name, code in short_assignments(self.name(target), expr, INDENT, self.code)]

    def _print_Gemm(self, op: Gemm) -> list[str]:
        """out = left · right; a transposed operand is named in einsum's subscripts (Wᵀδ is
        ``"ji,jk->ik"``), which XLA contracts in place, where ``W.T`` costs a copy per step."""
        out, left, right = self.name(op.out), self.name(op.left), self.name(op.right)
        if not (op.left_transposed or op.right_transposed):
            return [f"{out} = jnp.dot({left}, {right})"]
        subscripts = f"{'ji' if op.left_transposed else 'ij'},{'kj' if op.right_transposed else 'jk'}->ik"
        return [f'{out} = jnp.einsum("{subscripts}", {left}, {right})']

    def _print_AddBias(self, op: AddBias) -> list[str]:
        out = self.name(op.out)
        return [f"{out} = {out} + {self.name(op.bias)}"]

    def _print_Apply(self, op: Apply) -> list[str]:
        lines = [line for scratch, value in op.shared for line in self.assign(scratch, value)]
        itself = next((s for s in op.code.free_symbols if isinstance(s, Entry) and s.quantity.name == op.out.name), None)
        if op.code == itself:  # out ⊙ 1 (an identity's derivative): nothing changes
            return lines
        if isinstance(op.code, sp.Add) and itself in op.code.args:  # out + (…), out − (…): as the update reads
            out, rest = self.name(op.out), op.code - itself
            sign, term = ("-", -rest) if rest.could_extract_minus_sign() else ("+", rest)
            line = f"{out} = {out} {sign} {self.code._operand(term, PRECEDENCE['Add'] + 1)}"
            if fits("", line[len(out) + 3:], INDENT + len(out)):
                return [*lines, line]
        return lines + self.assign(op.out, op.code)

    def _print_SampleTotal(self, op: SampleTotal) -> list[str]:
        return [f"{self.name(op.out)} = {self.name(op.source)}.sum(axis=1, keepdims=True)"]

    def _print_UnitTotal(self, op: UnitTotal) -> list[str]:
        return [f"{self.name(op.out)} = {self.name(op.source)}.sum(axis=0, keepdims=True)"]

    def _print_ColumnSoftmax(self, op: ColumnSoftmax) -> list[str]:
        """e^(z − max z) written e^(−(max z − z)): the same numbers (negating is exact), but the
        form that XLA:CPU compiles to vector instructions when it writes the exponentials over
        z's own buffer, as it does when nothing reads z later. With tanh' factored too (below),
        a batch-32 digits step at width 16 went from 11.5 to 10.3 µs (bench/jax_step.py)."""
        out, z = self.name(op.out), self.name(op.source)
        return [f"{out} = jnp.exp(-({z}.max(axis=0, keepdims=True) - {z}))",
                f"{out} = {out} / {out}.sum(axis=0, keepdims=True)"]

    def _print_Descend(self, op: Descend) -> list[str]:
        param = self.name(op.param)
        return [f"{param} = {param} - {self.code.doprint(op.rate)} * {self.name(op.gradient)}"]


def _one_minus_square(expr: sp.Basic) -> bool:
    if not (isinstance(expr, sp.Add) and len(expr.args) == 2 and sp.S.One in expr.args):
        return False
    square = 1 - expr
    return square.is_Pow and square.exp == 2


def factored_squares(expr: sp.Expr) -> sp.Expr:
    """1 − x² as (1 − x)(1 + x), as tanh'(z) = 1 − tanh²(z) is printed: the same value, rounded
    less where |x| nears 1 (1 − x is exact there), and a product that XLA:CPU compiles to
    vector instructions when it writes δ over the buffer of Wᵀδ (1 − x² it leaves scalar)."""
    return expr.replace(_one_minus_square, lambda e: (1 - (1 - e).base) * (1 + (1 - e).base))


def pack(names: list[str], target: str, indent: int = INDENT) -> str:
    """``target = (a, b)`` (or ``return (a, b)``) as ruff formats it: on one line, or one name
    per line when too long."""
    pad = " " * indent
    assign = "return " if target == "return" else f"{target} = "
    line = f"{pad}{assign}({', '.join(names)}{',' if len(names) == 1 else ''})"
    if len(line) <= LINE_LENGTH:
        return line
    return f"{pad}{assign}(\n" + "".join(f"{pad}    {name},\n" for name in names) + f"{pad})"


def jax_context(program: Program) -> dict:
    """The JAX module's functions, printed from the program: forward, backward with the
    gradients, and the optimizer's update, each a list of lines headed by their formulas."""
    printer = JaxPrinter(program)
    d = program.derivation
    state = [b.name for b in program.buffers.values() if b.role == STATE]
    params = [p.name for p in program.params]
    grads = [d.gradient_of(p).name for p in d.params]
    masks = [mask.name for mask in d.masks]
    batch_norm = any(isinstance(op, BatchNorm) for op in d.ops)
    backward_names = {symbol.name for s in (*program.backward, *program.gradients)
                      for symbol in s.equation.computed.free_symbols}
    # What the functions that take batch normalization's running estimates or dropout's masks
    # are given, in this order: the masks (Arrays, in MASK_UNITS' order), the running estimates (Params).
    extra = [*(["masks: Arrays"] if masks else []), *(["running: Params"] if batch_norm else [])]
    return {
        "forward_steps": [line for s in program.forward for line in printer.step(s)],
        # each forward step's lines apart: batch normalization's statistics come from the running
        # estimates at inference
        "forward_groups": [{"target": s.target.name, "lines": printer.step(s)} for s in program.forward],
        "backward_masks": [name for name in masks if name in backward_names],
        "unpack_masks": unpack_masks(masks) if masks else "",
        "forward_signature": signature("_forward_pass", [
            "weights: Arrays", "X: Array", *(["masks: Arrays"] if masks else []),
            *(["running: Params | None = None"] if batch_norm else [])], "Params"),
        "update_running_signature": signature("_update_running", ["weights: Arrays", "X: Array", *extra],
                                              "Params"),
        "step_signature": signature("_step", [
            "weights: Arrays", "X: Array", "Y: Array", f"{JAX_CODE.doprint(alpha)}: Array", "state: Arrays",
            *extra], f"tuple[Arrays, Arrays{', Params' if batch_norm else ''}]"),
        "backward_steps": [line for s in (*program.backward, *program.gradients) for line in printer.step(s)],
        "update_steps": [line for s in program.updates for line in printer.step(s)],
        "param_names": params,
        "grad_names": grads,
        "state_names": state,
        "unpack_weights": unpack(params, "weights"),
        "unpack_grads": unpack(grads, "grads"),
        "unpack_state": unpack(state, "state") if state else "",
        "pack_weights": pack(params, "weights"),
        "return_grads": pack(grads, "return"),
        "pack_state": pack(state, "state"),
    }
