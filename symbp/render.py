"""A derivation rendered as a training module: lowered once, printed by the backend asked for."""

from __future__ import annotations

from .algebra import PARAM, STATE
from .codegen import _COMMENT, module_context, one_array, unpack, unpack_masks
from .derive import Derivation
from .inplace import InPlacePrinter, shared_arrays
from .jaxcode import JAX_CODE, jax_context
from .loops import kernel_context
from .passes import descend_early, fold_rate, gradients_early, shared_gradients, stack_biases
from .program import Buffer, Program, RowBelow, SideBySide, lower, reads, writes
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
    back), and each gradient computed as soon as what it reads is; where gradients of one
    shape can then share an array, each update comes as soon as nothing reads its parameter.
    Batch normalization's running estimates read the parameters between steps, so with it W
    and b stay apart."""
    folded = fold_rate(program)
    stacked = gradients_early(folded if batch_norms else stack_biases(folded))
    groups = shared_gradients(stacked)
    early = descend_early(stacked)
    sharing = shared_gradients(early)
    # elsewhere the updates keep the textbook's place, after the backward pass: as fast
    moved = sum(map(len, sharing)) - len(sharing) > sum(map(len, groups)) - len(groups)
    if moved:
        stacked, groups = early, sharing
    printer = InPlacePrinter(stacked)
    step = [line for s in stacked.steps for line in printer.step(s)]
    shared = shared_arrays(stacked)
    in_one = {name for group in groups for name in group[1:]}
    views = _views(stacked, shared)
    # after printing: the in-place printer may add scratch arrays
    parts = {part.name for stack in stacked.stacks for part in stack.parts}
    below = {s.whole.name for s in stacked.stacks if isinstance(s, RowBelow) and s.ones}
    viewed = {name for made in views.values() for name, _ in made}
    work, wholes = [], []
    for w in stacked.work:
        code = f"_ones_below({w.rows - 1}, m, dtype)" if w.name in below else f"np.empty({w.shape_code}, dtype)"
        if w.name in views:  # made first, then handed over whole and as the views the step reads
            wholes.append((w.name, code))
            work += [(w.name, w.name), *views[w.name]]
        elif w.name not in shared and w.name not in parts | viewed | in_one:
            work.append((w.name, code))
    work += [(f"ones_{rows}", f"np.ones((1, {rows}), dtype)") for rows in sorted(printer.units)]
    work += [(name, f"_pieces({arguments})") for name, arguments in printer.pieces.items()]
    names = [name for name, _ in work] + (["ones"] if printer.ones else [])
    given = _weights(program, stacked)
    made = [(stack.whole.name, code) for _, stack, code in given if stack]
    weights = [(stack.whole.name, stack.whole.name) if stack else (p.name, code) for p, stack, code in given]
    weights += [view for name, _ in weights for view in views.get(name, [])]
    wholes_named = {stack.whole.name for stack in stacked.stacks}
    x = program.derivation.X.name
    x_stack = next((s for s in stacked.stacks if isinstance(s, RowBelow) and s.part.name == x), None)
    return {
        "step": step,
        "work": work,
        "work_wholes": wholes,
        "shared": shared,
        "gradient_groups": one_array(groups),
        "ones": printer.ones,
        "pieces": bool(printer.pieces),
        "folded": _COMMENT.doprint(program.derivation.layers[-1].delta) if folded is not program else "",
        "stacked": bool(stacked.stacks),
        "updates_early": moved,
        "partly_stacked": _partly(program, stacked),
        "extra_rows": any(isinstance(s, RowBelow) and not s.ones for s in stacked.stacks),
        "step_x": x_stack.whole.name if x_stack else x,
        "input_views": views.get(x_stack.whole.name, []) if x_stack else [],
        "step_weights": weights,
        "step_weights_made": made,
        "unstack": [(part.name, code) for stack in stacked.stacks if isinstance(stack, SideBySide)
                    and stack.whole.role == PARAM for part, code in _halves(stack)],
        "unpack_stacked": unpack([name if name in wholes_named else "_" for name, _ in weights], "weights"),
        "unpack_params": unpack([name for name, _ in weights], "params"),
        "unpack_work": unpack(names, "work"),
        "unpack_state": unpack([b.name for b in program.buffers.values() if b.role == STATE], "state"),
        "unpack_masks": unpack_masks([mask.name for mask in program.derivation.masks]),
    }


def _halves(stack: SideBySide) -> list[tuple[Buffer, str]]:
    """[W b]'s two parts and the code of each as a view of the whole."""
    cut = stack.left.cols
    return [(stack.left, f"{stack.whole.name}[:, :{cut}]"), (stack.right, f"{stack.whole.name}[:, {cut}:]")]


def _views(program: Program, shared: dict[str, str]) -> dict[str, list[tuple[str, str]]]:
    """For each stacked array, the parts the step reads or writes as (name, view of the whole).

    They are made once, with the arrays: slicing costs about 0.5 µs a step. A part that shares
    an array with a value of the step (a⁽¹⁾ with z⁽¹⁾) gives the view that value's name."""
    used = set().union(*(reads(op) | writes(op) for s in program.steps for op in s.operations))
    views: dict[str, list[tuple[str, str]]] = {}
    for stack in program.stacks:
        if isinstance(stack, SideBySide):
            halves = [(part.name, code) for part, code in _halves(stack) if part.name in used]
        else:
            part = stack.part
            halves = [(shared.get(part.name, part.name), f"{stack.whole.name}[:{part.rows}]")] if part.name in used else []
        if halves:
            views[stack.whole.name] = halves
    return views


def _weights(program: Program, stacked: Program) -> list[tuple[Buffer, SideBySide | None, str]]:
    """The parameters as ``train`` hands them to ``_step``: each [W b] built from the caller's
    two (with its stack), and the rest as they are."""
    pairs = {s.left.name: s for s in stacked.stacks if isinstance(s, SideBySide) and s.whole.role == PARAM}
    rights = {s.right.name for s in pairs.values()}
    return [(p, pairs.get(p.name), f'np.hstack((params["{p.name}"], params["{pairs[p.name].right.name}"]))'
             if p.name in pairs else f'params["{p.name}"]') for p in program.params if p.name not in rights]


def _partly(program: Program, stacked: Program) -> str:
    """The weights stacked with their biases as the docstring names them (W⁽²⁾ and W⁽³⁾), where
    only some layers' are; empty where every layer's is."""
    paired = {s.left.name for s in stacked.stacks if isinstance(s, SideBySide) and s.whole.role == PARAM}
    layers = program.derivation.layers
    if all(layer.W.name in paired for layer in layers):
        return ""
    return " and ".join(_COMMENT.doprint(layer.W) for layer in layers if layer.W.name in paired)
