"""The Python API, mirroring the command line."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from . import derive as _derive
from .files import write_output
from .latex import render_latex
from .network import make_spec
from .render import render_module
from .verify import VerifyReport, verify


class Derivation(_derive.Derivation):
    """A derivation that prints and proves itself: ``.latex()``, ``.markdown()``, ``.html()``, ``.verify()``."""

    def latex(self) -> str:
        """The derivation's equations as LaTeX (``align*`` blocks)."""
        return render_latex(self)

    def markdown(self) -> str:
        """The derivation as prose with $$ blocks (GitHub, Jupyter)."""
        from .document import render_markdown

        return render_markdown(self)

    def __repr__(self) -> str:
        """A few lines, not the dataclass's dump of every SymPy expression."""
        counts = ", ".join(f"{len(equations)} {what}" for what, equations in (
            ("forward", self.forward), ("backward (δ)", self.backward), ("gradients", self.gradients),
            ("updates", self.updates)))
        return (f"<Derivation {self.spec.options()}\n"
                f"  equations: {counts}, and the loss\n"
                "  .latex() or .markdown() prints it, .verify() proves it>")

    def html(self) -> str:
        """The derivation as one self-contained HTML page (formulas typeset by KaTeX, inlined)."""
        from .document import render_html

        return render_html(self)

    def _repr_markdown_(self) -> str:
        return self.markdown()

    def _repr_latex_(self) -> str:
        return render_latex(self, display=True)

    def verify(self, samples: int = 1) -> VerifyReport:
        """Prove every gradient formula against direct differentiation (see :mod:`symbp.verify`)."""
        return verify(self, samples=samples)


def derive(layers: str | tuple[int, ...] = "2-2-1", activation: str = "sigmoid", loss: str = "half_se",
           reduction: str = "sum", ops: tuple = (), l2: str | float = "", optimizer: str = "sgd",
           **hyperparameters: object) -> Derivation:
    """Derive backpropagation for a network; ``.latex()`` prints it, ``.verify()`` proves it.

    ``ops`` inserts registered ops (:func:`symbp.ops.register`), e.g. ``ops=["scale:1"]``;
    ``l2`` adds the weight penalty ½λ Σ‖W⁽ˡ⁾‖² (weights, not biases) with λ = l2, e.g. ``"0.01"``.
    ``optimizer`` is one of sgd, momentum, nesterov, rmsprop, adam, adamw, with the hyperparameters
    torch.optim names: ``momentum``, ``betas`` ("0.9,0.999" or a pair), ``eps``, ``alpha`` (RMSprop's
    smoothing), ``weight_decay``; defaults and updates are torch.optim's.
    """
    spec = make_spec(layers, activation, loss, reduction, ops, l2, optimizer, **hyperparameters)
    derived = _derive.derive_spec(spec)
    return Derivation(**{f.name: getattr(derived, f.name) for f in fields(derived)})


def generate(layers: str | tuple[int, ...] = "2-2-1", activation: str = "sigmoid", loss: str = "half_se",
             reduction: str = "sum", output: str | Path | None = None, force: bool = False,
             backend: str = "numpy", ops: tuple = (), l2: str | float = "", optimizer: str = "sgd",
             **hyperparameters: object) -> str:
    """The training module's source; written to ``output`` when given.

    ``backend="numba"`` adds a training loop that numba compiles (numba is then needed to import it);
    ``backend="jax"`` prints the same program in jax.numpy, jit-compiled, with data-parallel training;
    ``optimizer`` and its hyperparameters are as for :func:`derive`.

    An existing file that symbp did not generate is only replaced with ``force=True``.
    """
    source = render_module(derive(layers, activation, loss, reduction, ops, l2, optimizer, **hyperparameters), backend)
    if output is not None:
        write_output(Path(output), source, force)
    return source
