"""The derivation as one self-contained HTML page: the Markdown document's prose and formulas, typeset by KaTeX."""

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from conftest import ROOT, XOR_OPTIONS
from test_cli import run

from symbp import derive
from symbp.document import html_body, render_html, render_markdown

KATEX = ROOT / "templates" / "katex" / "katex.min.js"
VOID = {"meta", "br", "hr", "img", "link", "input"}
# Every activation, the step's and Kronecker's brackets, a formula in z, softmax, both reductions, the penalty.
NETWORKS = [("2-2-1", "sigmoid", "half_se", "sum", ""),
            ("4-8-8-6-3", "tanh,relu,z/(1+exp(-z)),softmax", "cross_entropy", "mean", "0.01"),
            ("3-4-4-4-2", "leaky_relu(0.1),softplus,identity,sigmoid", "bce", "sum", "")]


class Page(HTMLParser):
    """The page's elements: nesting checked as they close, text and formulas in order, every attribute."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.attributes, self.styles = [], [], [], []
        self.text, self.formulas = "", []  # formulas: (LaTeX, display)
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed {self.stack}")

    def handle_starttag(self, tag, attrs):
        self.attributes += [(tag, name, value) for name, value in attrs]
        if tag in VOID:
            return
        classes = dict(attrs).get("class", "").split()
        self.stack.append((tag, "math" in classes, "display" in classes))
        if "math" in classes:
            self.formulas.append(["", "display" in classes])
            self.text += "MATH"

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1][0] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
            return
        self.stack.pop()

    def handle_data(self, data):
        inside = [entry[0] for entry in self.stack]
        if "style" in inside:
            self.styles.append(data)
        elif "script" in inside or "title" in inside:
            pass
        elif any(entry[1] for entry in self.stack):
            self.formulas[-1][0] += data
        elif "main" in inside:
            self.text += data


def markdown_words_and_formulas(text: str) -> tuple[list[str], list[tuple[str, bool]]]:
    """What the Markdown document says, read the same way: each formula is a word MATH."""
    formulas, words = [], ""
    for index, part in enumerate(re.split(r"\$\$\n(.*?)\n\$\$", text, flags=re.DOTALL)):
        if index % 2:
            formulas.append((part, True))
            words += "MATH"
            continue
        for inner, piece in enumerate(re.split(r"\$([^$]+)\$", part)):
            if inner % 2:
                formulas.append((piece, False))
                words += "MATH"
            else:
                words += re.sub(r"^#+ ", "", piece.replace("`", ""), flags=re.MULTILINE)
    return words.split(), formulas


@pytest.fixture(scope="module")
def pages():
    """Each network's page and Markdown document, the first with its proof."""
    out = []
    for index, (layers, activation, loss, reduction, l2) in enumerate(NETWORKS):
        d = derive(layers, activation, loss, reduction, l2=l2)
        report = d.verify() if index == 0 else None
        out.append((render_html(d, report), render_markdown(d, report)))
    return out


def test_the_page_needs_nothing_outside_it(pages):
    page = Page(pages[0][0])
    assert not page.errors
    assert page.attributes and not [a for a in page.attributes if a[1] in ("src", "href", "srcset", "data", "action")]
    style = "".join(page.styles)
    fonts = style.count("@font-face")
    assert fonts >= 20 and style.count("url(") == style.count("url(data:font/woff2;base64,") == fonts
    assert "@import" not in style
    assert "katex.render(" in pages[0][0] and "</script>" in pages[0][0]


@pytest.mark.parametrize("index", range(len(NETWORKS)))
def test_the_page_says_what_the_markdown_document_says(pages, index):
    page_text, markdown = pages[index]
    page = Page(page_text)
    assert not page.errors
    words, formulas = markdown_words_and_formulas(markdown)
    assert page.text.split() == words
    assert [tuple(formula) for formula in page.formulas] == formulas
    assert sum(display for _, display in formulas) >= 8


def test_prose_is_escaped_and_formulas_kept_for_katex():
    kept = ['<h2>Title</h2>', "<code>a &lt; b</code>"]
    body = html_body("\ue0000\ue001\n\nx <script> & y, $a < b$ and \ue0001\ue001", kept)
    assert body == ('<h2>Title</h2>\n\n<p>x &lt;script&gt; &amp; y, <span class="math">a &lt; b</span> and '
                    "<code>a &lt; b</code></p>")


def _node():
    found = shutil.which("node")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install node (Debian's nodejs) to typeset the page's formulas; .ci/run does")
        pytest.skip("node is not installed here (Debian: apt-get install nodejs)")
    return found


TYPESET = """
const katex = require(process.argv[1]);
const formulas = JSON.parse(require("fs").readFileSync(0, "utf8"));
const failed = [];
for (const [tex, display] of formulas) {
  try { katex.renderToString(tex, {displayMode: display, throwOnError: true, strict: "error"}); }
  catch (error) { failed.push([tex, String(error)]); }
}
console.log(JSON.stringify({typeset: formulas.length, failed: failed}));
"""


def test_every_formula_on_the_pages_typesets_in_katex(pages):
    formulas = [f for page_text, _ in pages for f in Page(page_text).formulas]
    result = subprocess.run([_node(), "-e", TYPESET, str(KATEX)], input=json.dumps(formulas), capture_output=True,
                            text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome == {"typeset": len(formulas), "failed": []}
    assert len(formulas) > 100


def test_cli_writes_the_page_and_replaces_only_its_own(tmp_path):
    page = tmp_path / "derivation.html"
    for _ in range(2):  # the second run replaces the page it wrote, without --force
        result = run("derive", *XOR_OPTIONS, "--format", "html", "-o", str(page))
        assert result.returncode == 0, result.stderr
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>\n<!-- Generated by symbp ")
    assert "--loss half_se --format html -->" in text.splitlines()[1]
    foreign = tmp_path / "index.html"
    foreign.write_text("<!DOCTYPE html>\n<p>mine</p>\n")
    refused = run("derive", *XOR_OPTIONS, "--format", "html", "-o", str(foreign))
    assert refused.returncode == 2 and "symbp did not write it" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1 and foreign.read_text() == "<!DOCTYPE html>\n<p>mine</p>\n"
    assert text == derive("2-2-1", "sigmoid", "half_se").html() + "\n"  # the API writes the same page
