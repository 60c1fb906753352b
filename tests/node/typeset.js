// Typeset formulas, given on stdin as JSON [[latex, display], ...], with KaTeX (the file named by the first
// argument) and with MathJax (mathjax-full from this folder's node_modules), both set to fail on any error.
// Prints {"typeset": n, "katex": [[latex, error], ...], "mathjax": [[latex, error], ...]}.
const katex = require(process.argv[2]);
const {mathjax} = require("mathjax-full/js/mathjax.js");
const {TeX} = require("mathjax-full/js/input/tex.js");
const {liteAdaptor} = require("mathjax-full/js/adaptors/liteAdaptor.js");
const {RegisterHTMLHandler} = require("mathjax-full/js/handlers/html.js");
const {SerializedMmlVisitor} = require("mathjax-full/js/core/MmlTree/SerializedMmlVisitor.js");
const {STATE} = require("mathjax-full/js/core/MathItem.js");
require("mathjax-full/js/input/tex/base/BaseConfiguration.js");
require("mathjax-full/js/input/tex/ams/AmsConfiguration.js");

RegisterHTMLHandler(liteAdaptor());
// Only base and ams, without noundefined and noerrors: an unknown command is an error, as in the plainest setup.
const tex = new TeX({packages: ["base", "ams"], formatError: (jax, error) => { throw error; }});
const page = mathjax.document("", {InputJax: tex});
const toMathML = new SerializedMmlVisitor();

const formulas = JSON.parse(require("fs").readFileSync(0, "utf8"));
const failed = {katex: [], mathjax: []};
for (const [source, display] of formulas) {
  try {
    katex.renderToString(source, {displayMode: display, throwOnError: true, strict: "error"});
  } catch (error) {
    failed.katex.push([source, String(error.message || error)]);
  }
  try {
    const mathml = toMathML.visitTree(page.convert(source, {display, end: STATE.CONVERT}));
    if (mathml.includes("<merror")) failed.mathjax.push([source, mathml]);
  } catch (error) {
    failed.mathjax.push([source, String(error.message || error)]);
  }
}
console.log(JSON.stringify({typeset: formulas.length, ...failed}));
