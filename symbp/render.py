"""A derivation rendered as a training module: lowered once, printed by the backend asked for."""

from __future__ import annotations

from .algebra import STATE
from .codegen import _COMMENT, module_context, unpack, unpack_masks
from .derive import Derivation
from .inplace import InPlacePrinter, shared_arrays
from .jaxcode import JAX_CODE, jax_context
from .loops import kernel_context
from .program import Program, fold_rate, lower
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
        context.update(numpy_context(program))
    elif backend == "jax":
        context["options"] += f" --backend {backend}"
        context.update(jax_context(program))
    else:  # the compiled loops, and the in-place NumPy step for the calls where it is faster
        context["options"] += f" --backend {backend}"
        context["kernel"] = kernel_context(program, context["batch_norms"])
        context.update(numpy_context(program))
    return environment().get_template(f"{backend}_module.py.j2").render(**context)


def numpy_context(program: Program) -> dict:
    """The allocating module plus ``_step``, the in-place printing of the same program, with α
    folded into δ⁽ᴺ⁾ where the optimizer allows (``gradients`` and ``train_step`` keep ∂L/∂θ)."""
    folded = fold_rate(program)
    printer = InPlacePrinter(folded)
    step = [line for s in folded.steps for line in printer.step(s)]
    shared = shared_arrays(folded)
    # after printing: the in-place printer may add scratch arrays
    work = tuple(w for w in program.work if w.name not in shared)
    return {
        "step": step,
        "work": work,
        "shared": shared,
        "ones": printer.ones,
        "folded": _COMMENT.doprint(program.derivation.layers[-1].delta) if folded is not program else "",
        "unpack_params": unpack([p.name for p in program.params], "params"),
        "unpack_work": unpack([w.name for w in work] + (["ones"] if printer.ones else []), "work"),
        "unpack_state": unpack([b.name for b in program.buffers.values() if b.role == STATE], "state"),
        "unpack_masks": unpack_masks([mask.name for mask in program.derivation.masks]),
    }

