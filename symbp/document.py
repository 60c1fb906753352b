"""The derivation as a document people read: Markdown (GitHub, Jupyter) or a standalone LaTeX file.

The prose lives in ``templates/derivation.j2`` and is written once for both formats: the
wrapper templates hand it a ``heading``, a ``display`` (aligned equations) and a ``code``
helper in their own syntax. Every formula comes from :mod:`symbp.latex`; nothing here derives.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp

from .derive import Derivation
from .latex import Section, align, latex, sections
from .templating import environment
from .verify import VerifyReport
from .version import __version__

FORMATS = ("latex", "markdown", "tex")

# What f'(z) does to the error passing back through a unit, for the activations symbp knows.
SLOPE_NOTES = {
    "sigmoid": "saturates",
    "tanh": "saturates",
    "relu": "gates",
    "leaky_relu": "leaks",
    "softplus": "smooth_gate",
    "identity": "passes",
}

_TEX_SPECIALS = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "_": r"\_", "^": r"\^{}", "#": r"\#",
                 "$": r"\$", "%": r"\%", "&": r"\&", "~": r"\~{}"}


def tex_escape(text: str) -> str:
    """Plain text safe in LaTeX's text mode."""
    return "".join(_TEX_SPECIALS.get(char, char) for char in text)


def _markdown_helpers() -> dict[str, Callable[..., str]]:
    return {
        "heading": lambda title, level=2: f"{'#' * level} {title}",
        "display": lambda lines: "$$\n" + align(list(lines), "aligned") + "\n$$",
        "code": lambda text: f"`{text}`",
    }


def _tex_helpers() -> dict[str, Callable[..., str]]:
    levels = {1: "section*", 2: "subsection*", 3: "subsubsection*"}
    return {
        "heading": lambda title, level=2: rf"\{levels[level]}{{{tex_escape(title)}}}",
        "display": lambda lines: align(list(lines), "align"),
        "code": lambda text: rf"\texttt{{{tex_escape(text)}}}",
    }


def document_context(d: Derivation) -> dict:
    """The derivation's sections and the symbols the prose names, as LaTeX."""
    found = {section.key: section for section in sections(d)}
    out = d.layers[-1]
    names = [f.name for f in d.activations]
    activations = []
    for f, _definition, _derivative, in_output in d.activation_equations:
        activations.append({
            "name": f.name,
            "custom": f.custom,
            "symbol": f.function.latex_symbol,
            "section": found[f"activation:{f.name}"],
            "in_output": in_output is not None and in_output.rhs.has(sp.Symbol("a", real=True)),
            "constant": f.derivative.is_number,
            "note": SLOPE_NOTES.get(f.name),
        })
    chains: list[Section] = [found[key] for key in sorted(found) if key.startswith("chain:")]
    reference = (d.spec.layers == (2, 2, 1) and names == ["sigmoid", "sigmoid"] and d.spec.loss == "half_se"
                 and not d.spec.l2 and not d.spec.ops)
    return {
        "optimizer": _optimizer(d),
        "version": __version__,
        "options": d.spec.options(),
        "layers": d.spec.layers,
        "depth": d.spec.depth,
        "activation_names": names,
        "loss": d.spec.loss,
        "loss_title": d.loss.title,
        "reduction": d.spec.reduction,
        "l2": d.spec.l2,
        "activations": activations,
        "softmax": not d.activations[-1].elementwise,
        "sections": found,
        "chains": chains,
        "simplified": d.output_delta.simplified is not None and d.activations[-1].elementwise,
        "assumption": d.output_delta.assumption is not None,
        "hidden": d.spec.depth > 1,
        "uses_sigmoid": "sigmoid" in names,
        "reference": reference,
        "sym": {
            "L": latex(sp.Symbol("L")),
            "out": out.index,
            "aL": latex(out.a),
            "zL": latex(out.z),
            "WL": latex(out.W),
            "deltaL": latex(out.delta),
            "alpha": latex(sp.Symbol("alpha")),
            "loss": latex(d.loss_equation.rhs),
        },
    }


TORCH_NAMES = {"sgd": "torch.optim.SGD", "momentum": "torch.optim.SGD(momentum=...)",
               "nesterov": "torch.optim.SGD(nesterov=True)", "rmsprop": "torch.optim.RMSprop",
               "adam": "torch.optim.Adam", "adamw": "torch.optim.AdamW"}


def _optimizer(d: Derivation) -> dict | None:
    """What the prose says about the optimizer; every symbol printed from the optimizer's own."""
    o = d.optimizer
    if o is None:
        return None
    constants = [{"symbol": latex(c.symbol), "value": latex(sp.Float(c.value))} for c in o.constants]
    decay = next(c for c in o.constants if c.code_name == "WEIGHT_DECAY")
    kept = [latex(q) for q in o.state if q.of is None or q.of == d.params[0]]
    state = ", ".join(f"${k}$" for k in kept)
    if len(d.params) > 1 and len(kept) > 1:
        state += " (and the same for every parameter)"
    return {"name": o.name, "title": o.title, "torch": TORCH_NAMES[o.name], "constants": constants,
            "decay": decay.value if float(decay.value) > 0 else "", "wd": latex(decay.symbol),
            "decoupled": o.decoupled, "state": state, "mu": latex(sp.Symbol("mu"))}


def _proof(report: VerifyReport | None) -> dict | None:
    if report is None:
        return None
    symbolic = sum(check.method == "symbolic" for check in report.checks)
    return {"ok": report.ok, "entries": len(report.checks), "symbolic": symbolic,
            "numeric": len(report.checks) - symbolic, "samples": report.samples,
            "assumption": bool(report.assumption)}


def render_markdown(d: Derivation, report: VerifyReport | None = None) -> str:
    """Prose with $$ blocks, for GitHub and Jupyter."""
    template = environment().get_template("derivation.md.j2")
    return template.render(**document_context(d), proof=_proof(report), **_markdown_helpers())


def render_tex(d: Derivation, report: VerifyReport | None = None) -> str:
    """A complete LaTeX document that pdflatex compiles."""
    template = environment().get_template("derivation.tex.j2")
    return template.render(**document_context(d), proof=_proof(report), **_tex_helpers())


def render(d: Derivation, format: str = "latex", report: VerifyReport | None = None) -> str:
    """The derivation in one of FORMATS, with the proof's outcome when a report is given."""
    if format == "latex":
        return d.latex()
    if format == "markdown":
        return render_markdown(d, report)
    if format == "tex":
        return render_tex(d, report)
    raise ValueError(f"unknown format {format!r}: choose one of {', '.join(FORMATS)}")
