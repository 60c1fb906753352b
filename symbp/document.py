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
from functools import cache

import sympy as sp

from .derive import Derivation
from .files import GENERATED_MARKER
from .latex import Section, align, latex, sections
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

    return {
        "heading": lambda title, level=2: keep(f"<h{level}>{_text(title)}</h{level}>"),
        "display": lambda lines: keep(f'<div class="math display">{_text(align(list(lines), "aligned"))}</div>'),
        "code": lambda text: keep(f"<code>{_text(text)}</code>"),
    }


def _html_block(block: str, kept: list[str]) -> str:
    """One paragraph of the prose: its text escaped, $…$ as inline formulas, helpers' HTML put back."""
    parts = _INLINE_MATH.split(block)  # text, formula, text, …
    text = "".join(_text(part) if index % 2 == 0 else f'<span class="math">{_text(part)}</span>'
                   for index, part in enumerate(parts))
    text = _KEPT.sub(lambda match: kept[int(match.group(1))], text)
    alone = _KEPT.fullmatch(block.strip())
    if alone and kept[int(alone.group(1))].startswith(("<h", "<div")):
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


def render_html(d: Derivation, report: VerifyReport | None = None) -> str:
    """One HTML file that needs nothing else: the prose, and formulas typeset by KaTeX inlined into it."""
    kept: list[str] = []
    context = document_context(d)
    prose = environment().get_template("derivation.j2").render(**context, proof=_proof(report), **_html_helpers(kept))
    script, style = katex_assets()
    title = "Backpropagation for the network " + "-".join(map(str, d.spec.layers))
    command = f"symbp derive {d.spec.options()}{' --verify' if report else ''} --format html"
    return environment().get_template("derivation.html.j2").render(
        **context, title=title, generated=f"{GENERATED_MARKER} {__version__}", command=_text(command),
        body=html_body(prose, kept), katex_js=script, katex_css=style)


def render(d: Derivation, format: str = "latex", report: VerifyReport | None = None) -> str:
    """The derivation in one of FORMATS, with the proof's outcome when a report is given."""
    if format == "latex":
        return d.latex()
    if format == "markdown":
        return render_markdown(d, report)
    if format == "tex":
        return render_tex(d, report)
    if format == "html":
        return render_html(d, report)
    raise ValueError(f"unknown format {format!r}: choose one of {', '.join(FORMATS)}")
