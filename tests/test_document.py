"""The derivation as a document: Markdown, a standalone LaTeX file that pdflatex compiles, notebooks."""

import os
import shutil
import subprocess

import pytest
from test_cli import run

from symbp import derive
from symbp.document import render_markdown, render_tex
from symbp.verify import EntryCheck, VerifyReport

DEEP = ("4-8-8-6-3", "tanh,relu,z/(1+exp(-z)),softmax", "cross_entropy", "mean")


def test_markdown_has_prose_and_math_blocks_in_the_documents_order():
    text = render_markdown(derive("2-2-1", "sigmoid", "half_se"))
    assert text.startswith("# Backpropagation for the network 2-2-1")
    assert text.count("$$\n\\begin{aligned}") == text.count("\\end{aligned}\n$$") >= 8
    expected = [
        r"\delta^{(2)} &= (a^{(2)} - y) \odot \sigma'(z^{(2)})",
        r"\delta^{(1)} &= (W^{(2)})^{T} \delta^{(2)} \odot \sigma'(z^{(1)})",
        r"W^{(2)} &\leftarrow W^{(2)} - \alpha \delta^{(2)} (a^{(1)})^{T}",
        r"W^{(1)} &\leftarrow W^{(1)} - \alpha \delta^{(1)} X^{T}",
    ]
    positions = [text.find(line) for line in expected]
    assert all(p >= 0 for p in positions) and positions == sorted(positions)
    for phrase in ("chain rule", "saturated", "output rather than its input"):
        assert phrase in text


def test_the_reference_network_gets_the_remarks_on_the_tutorial():
    text = render_markdown(derive("2-2-1", "sigmoid", "half_se"))
    assert "its error formulas and update rules appear above in its order" in text
    assert r"labels the output error $\delta^{(2)} = \partial L / \partial a^{(2)}$" in text
    assert "prints the mean of $(y - a^{(2)})^2$" in text
    assert "`sigmoid_derivative(x)` takes the sigmoid's output, not its input" in text


def test_remarks_follow_the_network():
    text = render_markdown(derive("3-4-3", "tanh,softmax", "cross_entropy"))
    assert "sigmoid_derivative" not in text and "prints the mean" not in text
    assert "targets of each sample sum to 1" in text
    assert r"\delta^{(2)}_{i} &=" in text


def test_notebook_reprs():
    d = derive("2-3-1", "tanh,sigmoid", "bce")
    assert d._repr_markdown_() == d.markdown()
    assert d._repr_latex_().startswith(r"\begin{align*}")


def test_repr_is_a_few_lines_naming_the_network():
    d = derive("3-4-2", "tanh,softmax", "cross_entropy")
    text = repr(d)
    assert len(text) < 400 and text.count("\n") <= 3, text
    assert "--layers 3-4-2 --activation tanh,softmax --loss cross_entropy" in text
    assert "4 forward" in text and ".latex()" in text and ".verify()" in text


def table_rows(markdown):
    """| `W1` | 12 | 12 | 0 | equal | -> {"W1": ["12", "12", "0", "equal"]}"""
    rows = [line.strip("|").split("|") for line in markdown.splitlines() if line.startswith("| `")]
    return {cells[0].strip().strip("`"): [cell.strip() for cell in cells[1:]] for cells in rows}


def test_the_proof_report_is_one_line_and_renders_in_a_notebook():
    report = derive("3-2-2", "tanh,softmax", "cross_entropy").verify()
    text = repr(report)
    assert len(text) < 400 and "\n" not in text and "3-2-2" in text and "all equal" in text, text
    markdown = report._repr_markdown_()
    assert "**all 14 gradient entries equal**" in markdown and "Σᵢ yᵢ = 1" in markdown
    assert "| --- | ---: | ---: | ---: | --- |" in markdown
    rows = table_rows(markdown)
    assert {name: int(cells[0]) for name, cells in rows.items()} == {"W1": 6, "b1": 2, "W2": 4, "b2": 2}
    assert all(int(cells[1]) + int(cells[2]) == int(cells[0]) and cells[3] == "equal" for cells in rows.values())


def test_a_failed_proof_says_where_in_the_notebook():
    checks = (EntryCheck("W1", 1, 1, "symbolic", True), EntryCheck("W1", 1, 2, "numeric", False),
              EntryCheck("b1", 1, 1, "symbolic", True))
    markdown = VerifyReport("--layers 2-1", 1, checks)._repr_markdown_()
    assert "**MISMATCH** at `W1[1,2]`" in markdown
    assert table_rows(markdown) == {"W1": ["2", "1", "1", "1 differ"], "b1": ["1", "1", "0", "equal"]}


def test_cli_formats_and_output_file(tmp_path):
    out = tmp_path / "doc.md"
    result = run("derive", "--layers", "2-2-1", "--format", "markdown", "--verify", "-o", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "## Proof" in text and "Every one of the 9 entries" in text
    bad = run("derive", "--layers", "2-2-1", "--format", "html")
    assert bad.returncode == 2 and "invalid choice: 'html'" in bad.stderr and len(bad.stderr.splitlines()) == 1


def _pdflatex():
    found = shutil.which("pdflatex")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install pdflatex (Debian's texlive-latex-base); .ci/run does")
        pytest.skip("pdflatex is not installed here (Debian: apt-get install texlive-latex-base)")
    return found


@pytest.mark.parametrize("network", [("2-2-1", "sigmoid", "half_se", "sum"), DEEP], ids=["xor", "deep"])
def test_standalone_document_compiles_without_errors_or_overfull_lines(network, tmp_path):
    pdflatex = _pdflatex()
    source = tmp_path / "derivation.tex"
    source.write_text(render_tex(derive(*network)), encoding="utf-8")
    result = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", source.name], cwd=tmp_path,
                            capture_output=True, text=True, check=False, timeout=120)
    log = (tmp_path / "derivation.log").read_text(errors="replace")
    assert result.returncode == 0, log[-2000:]
    assert (tmp_path / "derivation.pdf").stat().st_size > 10_000
    assert "Undefined control sequence" not in log
    assert "Overfull \\hbox" not in log, "something runs off the page"
    assert "\\begin{align}" in source.read_text()  # numbered equations


@pytest.mark.parametrize("network", [("3-4-2", "sigmoid", "bce"), ("2-3-3-1", "sigmoid", "half_se"),
                                     ("2-2-1", "tanh,sigmoid", "half_se")])
def test_the_tutorial_remarks_are_for_the_tutorials_network_only(network):
    text = render_markdown(derive(*network))
    assert "reference tutorial" not in text and "sigmoid_derivative" not in text


def test_the_introduction_claims_the_proof_only_when_it_was_run():
    d = derive("2-2-1", "sigmoid", "half_se")
    plain = " ".join(render_markdown(d).split())
    assert "not run for this document" in plain and "--verify`" in plain
    assert "`symbp derive --layers 2-2-1 --activation sigmoid --loss half_se`" in plain
    proved = " ".join(render_markdown(d, d.verify()).split())
    assert "`symbp derive --layers 2-2-1 --activation sigmoid --loss half_se --verify`" in proved
    assert "the proof is at the end" in proved and "not run" not in proved
    assert render_tex(d, d.verify()).startswith("% Generated by symbp")
    assert "--verify --format tex" in render_tex(d, d.verify()).splitlines()[0]
