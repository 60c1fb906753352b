"""The derivation: what SymPy finds, what it proves, and how it prints."""

import sympy as sp

from symbp import derive
from symbp.activations import a, get_activation, z
from symbp.algebra import Elementwise
from symbp.derive import Equation


def test_sigmoid_derivative_is_found_and_rewritten_in_the_output():
    sigmoid = get_activation("sigmoid")
    assert sp.simplify(sigmoid.derivative - sp.diff(1 / (1 + sp.exp(-z)), z)) == 0
    assert sp.expand(sigmoid.derivative_in_output - a * (1 - a)) == 0


def test_output_forms_of_other_activations():
    assert sp.expand(get_activation("tanh").derivative_in_output - (1 - a**2)) == 0
    assert get_activation("relu").derivative_in_output == sp.Heaviside(a, 0)
    assert get_activation("identity").derivative_in_output == 1


def test_the_document_network_is_proved_entry_by_entry():
    report = derive("2-2-1", "sigmoid", "half_se").verify()
    assert report.ok
    assert len(report.checks) == 9  # W1 (4) + b1 (2) + W2 (2) + b2 (1)
    assert all(check.method == "symbolic" for check in report.checks)


def test_the_proof_sums_over_samples():
    report = derive("2-2-1", "sigmoid", "half_se").verify(samples=2)
    assert report.ok and len(report.checks) == 9


def test_the_proof_catches_a_wrong_formula():
    d = derive("2-2-1", "sigmoid", "half_se")
    hidden = d.backward[1]
    # A plausible slip: σ'(z) written as a² instead of a(1 − a).
    wrong_value = sp.HadamardProduct(sp.MatMul(d.layers[1].W.T, d.layers[1].delta),
                                     Elementwise(d.layers[0].a_unit ** 2, 2))
    d.backward = (d.backward[0], Equation(hidden.lhs, hidden.rhs, wrong_value))
    report = d.verify()
    assert not report.ok
    failed = {check.param for check in report.checks if not check.ok}
    assert failed == {"W1", "b1"}
    assert "MISMATCH" in report.summary()


def test_bce_with_sigmoid_simplifies_to_a_minus_y():
    d = derive("2-2-1", "sigmoid", "bce")
    assert d.output_delta.simplified == sp.Symbol("a2") - sp.Symbol("y")
    assert d.verify().ok


def test_latex_has_the_documents_formulas_in_its_order():
    text = derive("2-2-1", "sigmoid", "half_se").latex()
    expected = [
        r"\sigma\left(z\right) &= \frac{1}{1 + e^{- z}}",
        r"z^{(1)} &= W^{(1)} X + b^{(1)}",
        r"a^{(1)} &= \sigma\left(z^{(1)}\right)",
        r"z^{(2)} &= W^{(2)} a^{(1)} + b^{(2)}",
        r"a^{(2)} &= \sigma\left(z^{(2)}\right)",
        r"L &= \frac{\left(a^{(2)} - y\right)^{2}}{2}",
        (r"\frac{\partial L}{\partial W^{(2)}} &= \frac{\partial L}{\partial a^{(2)}} \cdot "
         r"\frac{\partial a^{(2)}}{\partial z^{(2)}} \cdot \frac{\partial z^{(2)}}{\partial W^{(2)}}"),
        r"\delta^{(2)} &= \left(a^{(2)} - y\right) \odot \sigma'\left(z^{(2)}\right)",
        r"\delta^{(1)} &= \left(W^{(2)}\right)^{T} \delta^{(2)} \odot \sigma'\left(z^{(1)}\right)",
        r"\frac{\partial L}{\partial W^{(2)}} &= \delta^{(2)} \left(a^{(1)}\right)^{T}",
        r"\frac{\partial L}{\partial b^{(2)}} &= \sum_{\text{samples}} \delta^{(2)}",
        r"W^{(2)} &\leftarrow W^{(2)} - \alpha \delta^{(2)} \left(a^{(1)}\right)^{T}",
        r"W^{(1)} &\leftarrow W^{(1)} - \alpha \delta^{(1)} X^{T}",
    ]
    positions = [text.find(line) for line in expected]
    assert all(p >= 0 for p in positions), [line for line, p in zip(expected, positions) if p < 0]
    assert positions == sorted(positions)


def test_chain_rule_factors_carry_the_values_sympy_found():
    text = derive("2-2-1", "sigmoid", "half_se").latex()
    assert r"\frac{\partial a^{(2)}}{\partial z^{(2)}} &= \sigma'\left(z^{(2)}\right) = a^{(2)} \left(1 - a^{(2)}\right)" in text
    assert r"\frac{\partial z^{(2)}_{i}}{\partial a^{(1)}_{j}} &= W^{(2)}_{ij}" in text
    assert r"\frac{\partial z^{(2)}_{i}}{\partial W^{(2)}_{pq}} &= \left[i = p\right] a^{(1)}_{q}" in text
    assert r"\delta^{(1)} = \frac{\partial L}{\partial z^{(1)}} &=" in text


def test_notebook_repr_is_latex():
    assert derive("2-2-1")._repr_latex_().startswith("$$")
