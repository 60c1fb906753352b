"""Variants of the lowered program that the in-place NumPy step prints: the same arithmetic
in fewer calls, passes and arrays.

* ``fold_rate``: α multiplied into δ⁽ᴺ⁾ once, instead of into every gradient;
* ``stack_biases``: each layer's W and b as one array [W b], its input over a row of ones;
* ``gradients_early``: each gradient right after the error it reads;
* ``descend_early``: each descent right after the last step that reads its parameter, so
  gradients of one shape can share one array (``shared_gradients``).

Each takes a program and returns a new one (or the same, where it does not apply); the
allocating code and the numba kernel print the program as lowered.
"""

from __future__ import annotations

from dataclasses import replace

import sympy as sp

from .algebra import GRADIENT, PARAM, Equation, entry
from .derive import alpha
from .program import (
    AddBias,
    Apply,
    Buffer,
    Descend,
    Gemm,
    Program,
    RowBelow,
    SampleTotal,
    SideBySide,
    Step,
    _quantity,
    reads,
    writes,
)


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
# gradient of several MiB written between the backward products evicts what those read), unless
# ``descend_early`` moves them, each with its update, to share one array.
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


def descend_early(program: Program, only: set[str] | None = None) -> Program:
    """For plain gradient descent: the program with each update θ ← θ − α ∂L/∂θ moved up to right
    after the last step it must follow (the last that reads θ, as (W⁽ˡ⁾)ᵀδ⁽ˡ⁾ reads W⁽ˡ⁾, or that
    writes ∂L/∂θ), and each gradient still after the backward pass (those over
    ``CACHED_ENTRIES``) moved with it, to just before it; the steps join ``backward``.

    A gradient's array is then free again as soon as its update is done, so the gradients of
    equal shape (the square W⁽ˡ⁾ of a deep, wide network) can all be computed in one array
    (``shared_gradients``). Where those arrays are megabytes, the step then streams one
    of them instead of one per layer: width 1024, depth 4 trained 2–7% faster (batches of 256
    to 4). The program is returned unchanged for an optimizer, whose update reads and writes
    its state. With ``only``, just the updates of those parameters move (the numba kernel's,
    whose other updates are made as their gradients are summed), each where no step left after
    the backward pass reads what it writes.
    """
    if not program.updates or not all(
            len(s.operations) == 1 and isinstance(s.operations[0], Descend) for s in program.updates):
        return program
    order = list(program.backward)
    pending = {s.target.name: s for s in program.gradients}
    placed: list[Step] = []
    kept: list[Step] = []  # updates that stay after the backward pass (``only``)
    for update in program.updates:
        if only is not None and update.operations[0].param.name not in only:
            kept.append(update)
            continue
        gradient = pending.pop(update.operations[0].gradient.name, None)
        moved = [update] if gradient is None else [gradient, update]  # a gradient just before its update
        # what stays after the backward pass: gradients not moved, updates kept or not yet placed
        rest = [*pending.values(), *(u for u in program.updates if u not in moved and u not in placed)]
        if only is not None and any(_depends(program, later, step) for later in rest for step in moved):
            kept.append(update)
            if gradient is not None:
                pending[gradient.target.name] = gradient
            continue
        position = max((i for i, s in enumerate(order) if any(_depends(program, m, s) for m in moved)), default=-1)
        while position + 1 < len(order) and order[position + 1] in placed:  # after those placed there already
            position += 1
        order[position + 1:position + 1] = moved
        placed += moved
    if only is not None:
        return replace(program, backward=tuple(order), gradients=tuple(s for s in program.gradients if s in
                                                                        pending.values()), updates=tuple(kept))
    if pending:  # a gradient no update reads: keep the program as lowered
        return program
    return replace(program, backward=tuple(order), gradients=(), updates=())


def _depends(program: Program, step: Step, earlier: Step) -> bool:
    """Whether ``step`` must come after ``earlier``: it reads what that writes, or writes what
    that reads or writes."""
    def names(s: Step, which) -> set[str]:
        return _expanded(program, (name for op in s.operations for name in which(op)))

    written = names(step, writes)
    return bool(names(step, reads) & names(earlier, writes)
                or written & (names(earlier, reads) | names(earlier, writes)))


def shared_gradients(program: Program) -> list[list[str]]:
    """Gradients (errors δ⁽ˡ⁾ and ∂L/∂θ) of one shape that can be computed in one array, each
    group in the order the step computes them (the first names the array).

    A gradient can take the array of one read for the last time before it is written: an
    error once the next error and its layer's gradients are computed, a ∂L/∂θ once its update
    is done, which ``descend_early`` puts right after it. Gradients that are part of
    [∂L/∂W ∂L/∂b], or that hold two, keep arrays of their own.
    """
    stacked = {name for stack in program.stacks for name in (stack.whole.name, *(p.name for p in stack.parts))}
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for index, op in enumerate(op for step in program.steps for op in step.operations):
        for name in set().union(*map(program.within, reads(op) | writes(op))):
            first.setdefault(name, index)
            last[name] = index
    gradients = sorted((b for b in program.buffers.values()
                        if b.role == GRADIENT and b.name in first and b.name not in stacked), key=lambda b: first[b.name])
    groups: list[list[str]] = []
    for gradient in gradients:
        group = next((g for g in groups if program.buffers[g[0]].shape_code == gradient.shape_code
                      and last[g[-1]] < first[gradient.name]), None)
        if group is None:
            groups.append([gradient.name])
        else:
            group.append(gradient.name)
    return [group for group in groups if len(group) > 1]
