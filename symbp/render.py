"""A derivation rendered as a training module: lowered once, printed by the backend asked for."""

from __future__ import annotations

from .algebra import INPUT, PARAM, STATE
from .codegen import _COMMENT, module_context, unpack, unpack_masks
from .derive import Derivation
from .inplace import InPlacePrinter, shared_arrays
from .jaxcode import JAX_CODE, jax_context
from .loops import kernel_context
from .program import OnesBelow, Program, SideBySide, fold_rate, lower, reads, stack_biases, writes
from .spec import SpecError
from .templating import environment

BACKENDS = ("numpy", "numba", "jax")


def render_module(d: Derivation, backend: str = "numpy") -> str:
    """The generated module's source: NumPy only, with a training loop numba compiles, or in JAX."""
    if backend not in BACKENDS:
        raise SpecError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    program = lower(d)
    context = module_context(program, JAX_CODE) if backend == "jax" else module_context(program)
    if backend == "numpy":
        context.update(numpy_context(program, bool(context["batch_norms"])))
    elif backend == "jax":
        context["options"] += f" --backend {backend}"
        context.update(jax_context(program))
    else:  # the compiled loops, and the in-place NumPy step for the calls where it is faster
        context["options"] += f" --backend {backend}"
        context["kernel"] = kernel_context(program, context["batch_norms"])
        context.update(numpy_context(program, bool(context["batch_norms"])))
    return environment().get_template(f"{backend}_module.py.j2").render(**context)


def numpy_context(program: Program, batch_norms: bool = False) -> dict:
    """The allocating module plus ``_step``, the in-place printing of the same program, with α
    folded into δ⁽ᴺ⁾ where the optimizer allows (``gradients`` and ``train_step`` keep ∂L/∂θ)
    and each layer's b stacked beside its W where the step allows (``train`` copies them
    back). Batch normalization's running estimates read the parameters between steps, so
    with it W and b stay apart."""
    folded = fold_rate(program)
    stacked = folded if batch_norms else stack_biases(folded)
    printer = InPlacePrinter(stacked)
    step = [line for s in stacked.steps for line in printer.step(s)]
    shared = shared_arrays(stacked)
    parts = {part.name for stack in stacked.stacks for part in stack.parts}
    used = set().union(*(reads(op) | writes(op) for s in stacked.steps for op in s.operations))
    params, param_views, work_views, unstack = [], [], [], []
    wholes = {stack.parts[0].name: stack for stack in stacked.stacks}
    for p in program.params:
        stack = wholes.get(p.name)
        if p.name in parts and stack is None:
            continue  # the right half of [W b]
        params.append(stack.whole.name if stack else p.name)
        if stack:
            left, right = stack.parts
            unstack += [(left.name, f"{stack.whole.name}[:, :{left.cols}]"),
                        (right.name, f"{stack.whole.name}[:, {left.cols}:]")]
    for stack in stacked.stacks:
        if isinstance(stack, SideBySide):
            cut = stack.left.cols
            views = param_views if stack.whole.role == PARAM else work_views
            views += [(part.name, f"{stack.whole.name}[:, {index}]") for part, index in
                      ((stack.left, f":{cut}"), (stack.right, f"{cut}:")) if part.name in used]
        elif stack.part.role != INPUT:  # a1 = a1_ones[:128]; given to the value a1 shares an array with, if any
            work_views.append((shared.get(stack.part.name, stack.part.name), f"{stack.whole.name}[:{stack.part.rows}]"))
    x = program.derivation.X.name
    x_stack = next((s for s in stacked.stacks if isinstance(s, OnesBelow) and s.part.name == x), None)
    if x_stack is not None and x in used:
        work_views.insert(0, (x, f"{x_stack.whole.name}[:{x_stack.part.rows}]"))
    # after printing: the in-place printer may add scratch arrays
    below = {s.whole.name for s in stacked.stacks if isinstance(s, OnesBelow)}
    work = [(w.name, f"_ones_below({w.rows - 1}, m, dtype)" if w.name in below else f"np.empty({w.shape_code}, dtype)")
            for w in stacked.work if w.name not in shared and w.name not in parts | {name for name, _ in work_views}]
    work += [(f"ones_{rows}", f"np.ones((1, {rows}), dtype)") for rows in sorted(printer.units)]
    names = [name for name, _ in work] + (["ones"] if printer.ones else [])
    return {
        "step": step,
        "work": work,
        "shared": shared,
        "ones": printer.ones,
        "folded": _COMMENT.doprint(program.derivation.layers[-1].delta) if folded is not program else "",
        "stacked": bool(stacked.stacks),
        "step_x": x_stack.whole.name if x_stack else x,
        "param_views": param_views,
        "work_views": work_views,
        "stacked_weights": [_stacked_code(stacked, p) for p in program.params if p.name not in parts or p.name in wholes],
        "unstack": unstack,
        "unpack_stacked": unpack([name if name in {s.whole.name for s in stacked.stacks} else "_" for name in params],
                                 "weights"),
        "unpack_params": unpack(params, "params"),
        "unpack_work": unpack(names, "work"),
        "unpack_state": unpack([b.name for b in program.buffers.values() if b.role == STATE], "state"),
        "unpack_masks": unpack_masks([mask.name for mask in program.derivation.masks]),
    }


def _stacked_code(program: Program, param) -> str:
    """A parameter as ``train`` hands it to ``_step``: [W b] built from the caller's two, or itself."""
    for stack in program.stacks:
        if isinstance(stack, SideBySide) and stack.left.name == param.name:
            return f'np.hstack((params["{stack.left.name}"], params["{stack.right.name}"]))'
    return f'params["{param.name}"]'
