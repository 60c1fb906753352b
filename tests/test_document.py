"""The derivation as a document: Markdown, a standalone LaTeX file that pdflatex compiles, notebooks."""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import run_main as run

from symbp import derive
from symbp.document import render_markdown, render_tex
from symbp.example import worked_example
from symbp.verify import EntryCheck, VerifyReport

DEEP = ("4-8-8-6-3", "tanh,relu,z/(1+exp(-z)),softmax", "cross_entropy", "mean")


def test_markdown_has_prose_and_math_blocks_in_the_documents_order():
    text = render_markdown(derive("2-2-1", "sigmoid", "half_se"))
    assert text.startswith("# Backpropagation for the network 2-2-1")
    tagged = [text.count(f"\\end{{aligned}}\n\\tag{{{n}}}\n$$") for n in (1, 2, 3, 4)]
    assert tagged == [1, 1, 1, 1]  # the key results are numbered, once each
    assert text.count("$$\n\\begin{aligned}") == text.count("\\end{aligned}\n$$") + 4 >= 8
    assert "its layer's error (1)" in text and "against its gradient (2)" in text  # and referred to
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
    bad = run("derive", "--layers", "2-2-1", "--format", "docx")
    assert bad.returncode == 2 and "invalid choice: 'docx'" in bad.stderr and len(bad.stderr.splitlines()) == 1


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
    tex = source.read_text()
    assert "\\begin{align}" not in tex  # not every line numbered: the four key results, each once
    assert [tex.count(f"\\begin{{equation}}\\tag{{{n}}}") for n in (1, 2, 3, 4)] == [1, 1, 1, 1]


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


def test_the_tex_command_keeps_straight_quotes_and_the_notation_names_every_shape():
    tex = render_tex(derive("3-4-2", "z/(1+exp(-z)),sigmoid", "bce"))
    command = tex.split(r"from \texttt{", 1)[1].split("}.", 1)[0]
    assert "'" not in command and "{\\char13}z/(1 + exp(-z)),sigmoid{\\char13}" in command  # pastes back as typed
    markdown = render_markdown(derive("2-3-3", "tanh,softmax", "cross_entropy", l2="0.1"))
    notation = markdown.split("## Notation", 1)[1].split("## Activation functions", 1)[0]
    for shape in (r"X \in \mathbb{R}^{n_{0} \times m}", r"W^{(l)} \in \mathbb{R}^{n_{l} \times n_{l-1}}",
                  r"b^{(l)} \in \mathbb{R}^{n_{l}}", r"n_{0} = 2, n_{1} = 3, n_{2} = 3", r"\lambda = 0.1",
                  r"\sum_{\text{units}}", "Iverson"):
        assert shape in notation, shape


def test_the_reuse_of_a_is_explained_once_and_not_for_a_step():
    text = render_markdown(derive("2-3-3-3-1", "tanh,sigmoid,relu,sigmoid", "half_se"))
    assert text.count("The forward pass has already computed $a$") == 1
    relu_only = render_markdown(derive("2-3-1", "relu,identity", "half_se"))
    assert "The forward pass has already computed $a$" not in relu_only  # [a > 0] saves no arithmetic
    assert r"&= \delta^{(3)} \cdot" in render_markdown(derive("2-3-3-2", "relu,tanh,softmax", "cross_entropy"))


def _shown(section: str, lhs: str) -> np.ndarray:
    """The numbers after the last '=' on the example's line for ``lhs``."""
    line = next(line for line in section.splitlines() if line.startswith(lhs + " &"))
    return np.array([float(x) for x in re.findall(r"-?\d+\.\d{4}", line.rsplit("= ", 1)[1])])


def test_the_worked_example_shows_what_the_hand_written_network_computes(xor_module):
    from reference import SimpleNeuralNetwork

    d = derive("2-2-1", "sigmoid", "half_se")
    text = render_markdown(d, example=worked_example(d, seed=3))
    section = text.split("## A worked example", 1)[1].split("## For any depth", 1)[0]
    params = xor_module.init_params(3)
    net = SimpleNeuralNetwork(2, 2, 1, params)
    X, y = np.array([[1.0], [0.0]]), np.array([[1.0]])  # XOR's (1, 0) → 1
    net.forward(X)
    grads = net.gradients(X, y)
    delta2 = (net.a2 - y) * net.a2 * (1 - net.a2)
    expected = {
        "W^{(1)}": params["W1"], "z^{(1)}": net.z1, "a^{(1)}": net.a1, "z^{(2)}": net.z2, "a^{(2)}": net.a2,
        "L": 0.5 * (net.a2 - y) ** 2, r"\delta^{(2)}": delta2, r"\delta^{(1)}": grads["b1"],
        r"\frac{\partial L}{\partial W^{(2)}}": grads["W2"], r"\frac{\partial L}{\partial W^{(1)}}": grads["W1"],
    }
    for lhs, value in expected.items():
        np.testing.assert_allclose(_shown(section, lhs), np.ravel(value), atol=6e-5, err_msg=lhs)
    net.backward(X, y, 0.1)
    updates = [line for line in section.splitlines() if r"&\leftarrow" in line]
    for line, after in zip(updates, (net.W2, net.b2, net.W1, net.b1), strict=True):
        np.testing.assert_allclose([float(x) for x in re.findall(r"-?\d+\.\d{4}", line.rsplit("= ", 1)[1])],
                                   np.ravel(after), atol=6e-5, err_msg=line)


def test_the_worked_example_is_for_small_networks_and_documents():
    assert run("derive", "--layers", "2-5-1", "--format", "markdown", "--example").stderr.count("at most 4 units") == 1
    bad = run("derive", "--layers", "2-2-1", "--example")
    assert bad.returncode == 2 and "--format markdown" in bad.stderr
    ok = run("derive", "--layers", "3-4-3", "--activation", "tanh,softmax", "--loss", "cross_entropy",
             "--format", "tex", "--example", "--seed", "5")
    assert ok.returncode == 0 and r"\begin{matrix}" in ok.stdout and "init\\_params(5)" in ok.stdout


# \left( … \right) around one symbol, superscripted or subscripted or not: σ \left(z\right), \left(W^{(2)}\right)^{T}
_NEEDLESS = re.compile(r"\\left\(\s*\\?[A-Za-z]+(?:\^\{[^{}]*\}|_\{[^{}]*\}|\^\{\([^{}]*\)\})*\s*\\right\)")


@pytest.mark.parametrize("network", [("2-2-1", "sigmoid", "half_se", "sum"),
                                     ("64-32-16-10", "relu,tanh,softmax", "cross_entropy", "mean"),
                                     ("3-4-2", "z/(1+exp(-z)),sigmoid", "bce", "sum"), DEEP])
def test_no_sized_brackets_around_a_single_symbol(network):
    d = derive(*network)
    for text in (d.latex(), render_markdown(d), render_tex(d)):
        found = _NEEDLESS.findall(text)
        assert found == [], found[:5]
    assert _NEEDLESS.search(r"\sigma\left(z\right) \left(W^{(2)}\right)^{T}")  # the pattern finds what it should
