"""The derivation as a document people read: Markdown (GitHub, Jupyter), a standalone LaTeX file,
or a self-contained HTML page.

The prose lives in ``templates/derivation.j2`` and is written once for every format: the
wrapper templates hand it a ``heading``, a ``display`` (aligned equations) and a ``code``
helper in their own syntax. Every formula comes from :mod:`symbp.latex`; nothing here derives.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import sympy as sp

from .algebra import Partial
from .derive import Derivation, alpha
from .files import GENERATED_MARKER
from .latex import Section, align, inline, inserted_ops, latex, numbers, sections
from .ops import BatchNorm, Dropout, LayerNorm, gradient, param, value
from .templating import environment, templates_dir
from .verify import VerifyReport
from .version import __version__

FORMATS = ("latex", "markdown", "tex", "html")

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


def _markdown_display(lines: tuple[str, ...], tag: int | None = None) -> str:
    """One $$ block; a key result carries its number, which the prose refers to as (n)."""
    return "$$\n" + align(list(lines), "aligned") + (f"\n\\tag{{{tag}}}" if tag else "") + "\n$$"


def _markdown_helpers() -> dict[str, Callable[..., str]]:
    return {
        "heading": lambda title, level=2: f"{'#' * level} {title}",
        "display": _markdown_display,
        "code": lambda text: f"`{text}`",
        "bullets": lambda items: "\n".join(f"- {item}" for item in items),
    }


def _tex_display(lines: tuple[str, ...], tag: int | None = None) -> str:
    """Unnumbered aligned lines; a key result is one numbered block, as a textbook numbers them."""
    if tag is None:
        return align(list(lines), "align*")
    return f"\\begin{{equation}}\\tag{{{tag}}}\n{align(list(lines), 'aligned')}\n\\end{{equation}}"


def tex_code(text: str) -> str:
    """Typewriter text that pastes back as typed: straight quotes, not the curly ones TeX makes of " and '."""
    return "".join({'"': r"{\char34}", "'": r"{\char13}"}.get(char, tex_escape(char)) for char in text)


def _tex_helpers() -> dict[str, Callable[..., str]]:
    levels = {1: "section*", 2: "subsection*", 3: "subsubsection*"}
    return {
        "heading": lambda title, level=2: rf"\{levels[level]}{{{tex_escape(title)}}}",
        "display": _tex_display,
        "code": lambda text: rf"\texttt{{{tex_code(text)}}}",
        "bullets": lambda items: "\\begin{itemize}\n" + "\n".join(rf"\item {item}" for item in items)
        + "\n\\end{itemize}",
    }


@dataclass(frozen=True)
class Example:
    """One sample's numbers by quantity name (X, y, W1, z1, L, dW1, …) and the parameters after one step."""

    seed: int
    learning_rate: float
    values: dict[str, np.ndarray]
    updated: dict[str, np.ndarray]


def example_sections(d: Derivation, example: Example) -> dict[str, tuple[str, ...]]:
    """The worked example's lines: each formula of the derivation, then its value for this sample."""
    values = example.values

    def number(name: str) -> str:
        return numbers(values[name])

    start = [rf"{latex(q)} &= {number(q.name)}" for q in (d.X, d.Y, *d.params)]
    forward = [rf"{latex(e.lhs)} &= {latex(e.rhs)} = {number(e.lhs.name)}" for e in d.forward]
    forward.append(rf"L &= {latex(d.loss_equation.rhs)} = {number('L')}")
    formulas = {e.lhs: e.computed for e in d.backward}
    errors = [rf"{latex(layer.delta)} &= {latex(formulas[layer.delta])} = {number('d' + layer.b.name)}"
              for layer in reversed(d.layers)]  # with one sample δ⁽ˡ⁾ is ∂L/∂b⁽ˡ⁾, which the module returns
    gradients = [rf"{latex(e.lhs)} &= {latex(e.rhs)} = {number('d' + e.lhs.of.name)}" for e in d.gradients]
    updates = [rf"{latex(e.lhs)} &\leftarrow {latex(e.lhs)} - {latex(e.rhs)} = {numbers(example.updated[e.lhs.name + '_new'])}"
               for e in d.updates]
    return {"start": tuple(start), "forward": tuple(forward), "errors": tuple(errors),
            "gradients": tuple(gradients), "updates": tuple(updates)}


# The key results, numbered in every format so that the prose can refer to them.
TAGS = {"backward": 1, "gradients": 2, "updates": 3, "recurrence": 4}


def notation(d: Derivation) -> list[str]:
    """Every symbol the derivation uses, with its shape, printed from the quantities themselves."""
    n = {label: sp.Symbol(f"n_{{{label}}}", integer=True, positive=True) for label in ("0", "l", "l-1", "N")}
    m_ = sp.Symbol("m")
    W, b = param("W", "l", n["l"], n["l-1"]), param("b", "l", n["l"])
    z, a = value("z", "l", n["l"]), value("a", "l", n["l"])
    theta = sp.Symbol("theta")

    def shape(rows: sp.Expr, cols: sp.Expr = 1) -> str:
        return rf"\mathbb{{R}}^{{{inline(rows)}}}" if cols == 1 else rf"\mathbb{{R}}^{{{inline(rows)} \times {inline(cols)}}}"

    widths = ", ".join(f"n_{{{index}}} = {width}" for index, width in enumerate(d.spec.layers))
    items = [
        (f"$m$: the number of samples in a batch; ${inline(d.X)} \\in {shape(n['0'], m_)}$ holds them, one per column, "
        f"and ${inline(d.Y)} \\in {shape(n['N'], m_)}$ their targets."),
        (f"$N = {d.spec.depth}$: the number of weight layers; $l = 1, \\dots, N$ numbers them, and ${widths}$ "
        "are the widths from input to output."),
        (f"${inline(W)} \\in {shape(n['l'], n['l-1'])}$ and ${inline(b)} \\in {shape(n['l'])}$: layer $l$'s weights "
        "and bias (the bias is added to every sample)."),
        (f"${inline(z)}, {inline(a)} \\in {shape(n['l'], m_)}$: the layer's weighted input and its activation, "
        f"with ${inline(value('a', '0', n['0']))} = {inline(d.X)}$."),
        (f"$L$: the loss, one number; ${inline(gradient(z))} = {inline(Partial(sp.Symbol('L'), z))}$, the layer's error, "
        f"is shaped like ${inline(z)}$, and so is every ${inline(Partial(sp.Symbol('L'), theta))}$ like its parameter "
        f"${inline(theta)}$."),
        "$AB$ is the matrix product, $A \\odot B$ the elementwise one, $A^{T}$ the transpose; "
        "$\\sum_{\\text{samples}}$ sums the columns"
        + (" and $\\sum_{\\text{units}}$ the rows" if not d.activations[-1].elementwise else "") + ".",
        ("$[P]$ is 1 where the condition $P$ holds and 0 elsewhere (Iverson's bracket); "
        "$f'$ is the derivative of the activation $f$."),
        f"${inline(alpha)}$: the learning rate"
        + (f"; $\\lambda = {d.spec.l2}$: the weight penalty's factor." if d.spec.l2 else "."),
    ]
    return items


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
            # a step such as relu's [a > 0] reads a without arithmetic worth the saving the prose explains
            "reuses_output": in_output is not None and not in_output.rhs.has(sp.Heaviside, sp.Piecewise),
            "constant": f.derivative.is_number,
            "note": SLOPE_NOTES.get(f.name),
        })
    chains: list[Section] = [found[key] for key in sorted(found) if key.startswith("chain:")]
    reference = (d.spec.layers == (2, 2, 1) and names == ["sigmoid", "sigmoid"] and d.spec.loss == "half_se"
                 and not d.spec.l2 and not d.spec.ops)
    return {
        "notation": notation(d),
        "tags": TAGS,
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
        "output_saturates": SLOPE_NOTES.get(d.activations[-1].name) == "saturates",
        "sections": found,
        "ops": [{"kind": OP_KINDS.get(type(op), "op"),
                 "layer": op.output.layer, "section": found[f"op:{op.output.name}"],
                 "title": f"{op.title.capitalize()} in layer {op.output.layer}"} for op in inserted_ops(d)],
        "dropout": d.spec.dropout,
        "chains": chains,
        "simplified": d.output_delta.simplified is not None and d.activations[-1].elementwise,
        "assumption": d.output_delta.assumption is not None,
        "hidden": d.spec.depth > 1,
        "uses_sigmoid": "sigmoid" in names,
        "reference": reference,
        "sym": {
            "L": inline(sp.Symbol("L")),
            "out": out.index,
            "aL": inline(out.a),
            "zL": inline(out.z),
            "WL": inline(out.W),
            "deltaL": inline(out.delta),
            "alpha": inline(sp.Symbol("alpha")),
            "loss": inline(d.loss_equation.rhs),
        },
    }


OP_KINDS = {BatchNorm: "batch_norm", LayerNorm: "layer_norm", Dropout: "dropout"}  # what the prose says of each
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


def _example(d: Derivation, example: Example | None) -> dict | None:
    if example is None:
        return None
    return {"seed": example.seed, "rate": example.learning_rate, "lines": example_sections(d, example),
            "flag": f" --example --seed {example.seed}"}


def render_markdown(d: Derivation, report: VerifyReport | None = None, example: Example | None = None) -> str:
    """Prose with $$ blocks, for GitHub and Jupyter."""
    template = environment().get_template("derivation.md.j2")
    return template.render(**document_context(d), proof=_proof(report), example=_example(d, example),
                           **_markdown_helpers())


def render_tex(d: Derivation, report: VerifyReport | None = None, example: Example | None = None) -> str:
    """A complete LaTeX document that pdflatex compiles."""
    template = environment().get_template("derivation.tex.j2")
    return template.render(**document_context(d), proof=_proof(report), example=_example(d, example),
                           **_tex_helpers())


# HTML made by a helper is set aside behind a private-use token while the prose around it is escaped.
_KEPT = re.compile("\ue000(\\d+)\ue001")
_INLINE_MATH = re.compile(r"\$([^$]+)\$")
# KaTeX's fonts as the stylesheet names them: woff2, then fallbacks a page with woff2 inlined has no use for.
_FONT_SOURCE = re.compile(r'url\(fonts/([\w-]+\.woff2)\) format\("woff2"\)(?:,url\([^)]*\) format\("[\w-]+"\))*')


def _text(text: str) -> str:
    return html.escape(text, quote=False)


def _html_helpers(kept: list[str]) -> dict[str, Callable[..., str]]:
    def keep(markup: str) -> str:
        kept.append(markup)
        return f"\ue000{len(kept) - 1}\ue001"

    def display(lines: tuple[str, ...], tag: int | None = None) -> str:
        formula = align(list(lines), "aligned") + (f"\n\\tag{{{tag}}}" if tag else "")  # as the Markdown has it
        return keep(f'<div class="math display">{_text(formula)}</div>')

    return {
        "heading": lambda title, level=2: keep(f"<h{level}>{_text(title)}</h{level}>"),
        "display": display,
        "code": lambda text: keep(f"<code>{_text(text)}</code>"),
        "bullets": lambda items: keep("<ul>\n" + "\n".join(f"<li>{_with_math(item)}</li>" for item in items)
                                      + "\n</ul>"),
    }


def _with_math(text: str) -> str:
    """Text escaped, with its $…$ as inline formulas."""
    parts = _INLINE_MATH.split(text)  # text, formula, text, …
    return "".join(_text(part) if index % 2 == 0 else f'<span class="math">{_text(part)}</span>'
                   for index, part in enumerate(parts))


def _html_block(block: str, kept: list[str]) -> str:
    """One paragraph of the prose: its text escaped, $…$ as inline formulas, helpers' HTML put back."""
    text = _KEPT.sub(lambda match: kept[int(match.group(1))], _with_math(block))
    alone = _KEPT.fullmatch(block.strip())
    if alone and kept[int(alone.group(1))].startswith(("<h", "<div", "<ul")):
        return text.strip()
    return f"<p>{text.strip()}</p>"


def html_body(prose: str, kept: list[str]) -> str:
    """The prose as HTML: a heading or a display stands alone, every other block is a paragraph."""
    return "\n\n".join(_html_block(block, kept) for block in re.split(r"\n\s*\n", prose.strip()))


@cache
def katex_assets() -> tuple[str, str]:
    """KaTeX's script, and its stylesheet with the fonts inlined as data: URLs (templates/katex)."""
    folder = templates_dir() / "katex"
    script = (folder / "katex.min.js").read_text(encoding="utf-8")
    if "</script" in script.lower():
        raise ValueError("katex.min.js would end its <script> element early")

    def inline(match: re.Match) -> str:
        data = base64.b64encode((folder / "fonts" / match.group(1)).read_bytes()).decode("ascii")
        return f'url(data:font/woff2;base64,{data}) format("woff2")'

    style = _FONT_SOURCE.sub(inline, (folder / "katex.min.css").read_text(encoding="utf-8"))
    if "url(fonts/" in style:
        raise ValueError("katex.min.css names a font that is not inlined")
    return script, style


def render_html(d: Derivation, report: VerifyReport | None = None, example: Example | None = None) -> str:
    """One HTML file that needs nothing else: the prose, and formulas typeset by KaTeX inlined into it."""
    kept: list[str] = []
    context = document_context(d)
    prose = environment().get_template("derivation.j2").render(**context, proof=_proof(report),
                                                               example=_example(d, example), **_html_helpers(kept))
    script, style = katex_assets()
    title = "Backpropagation for the network " + "-".join(map(str, d.spec.layers))
    flag = f" --example --seed {example.seed}" if example else ""
    command = f"symbp derive {d.spec.options()}{' --verify' if report else ''}{flag} --format html"
    return environment().get_template("derivation.html.j2").render(
        **context, title=title, generated=f"{GENERATED_MARKER} {__version__}", command=_text(command),
        body=html_body(prose, kept), katex_js=script, katex_css=style)


def render(d: Derivation, format: str = "latex", report: VerifyReport | None = None,
           example: Example | None = None) -> str:
    """The derivation in one of FORMATS, with the proof's outcome when a report is given and the
    worked example's numbers when one is given (documents only)."""
    if format == "latex":
        return d.latex()
    if format == "markdown":
        return render_markdown(d, report, example)
    if format == "tex":
        return render_tex(d, report, example)
    if format == "html":
        return render_html(d, report, example)
    raise ValueError(f"unknown format {format!r}: choose one of {', '.join(FORMATS)}")
