"""The derivation: what SymPy finds, what it proves, and how it prints."""

import sympy as sp

import symbp
from symbp import derive
from symbp.activations import a, get_activation, z
from symbp.algebra import Elementwise, Equation, entry


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
    assert d.output_delta.simplified == entry(d.layers[-1].a) - entry(d.Y)
    assert d.verify().ok


def test_latex_has_the_documents_formulas_in_its_order():
    text = derive("2-2-1", "sigmoid", "half_se").latex()
    expected = [
        r"\sigma(z) &= \frac{1}{1 + e^{- z}}",
        r"z^{(1)} &= W^{(1)} X + b^{(1)}",
        r"a^{(1)} &= \sigma(z^{(1)})",
        r"z^{(2)} &= W^{(2)} a^{(1)} + b^{(2)}",
        r"a^{(2)} &= \sigma(z^{(2)})",
        r"L &= \frac{1}{2} (a^{(2)} - y)^{2}",
        (r"\frac{\partial L}{\partial W^{(2)}} &= \frac{\partial L}{\partial a^{(2)}} \cdot "
         r"\frac{\partial a^{(2)}}{\partial z^{(2)}} \cdot \frac{\partial z^{(2)}}{\partial W^{(2)}}"),
        r"\delta^{(2)} &= (a^{(2)} - y) \odot \sigma'(z^{(2)})",
        r"\delta^{(1)} &= (W^{(2)})^{T} \delta^{(2)} \odot \sigma'(z^{(1)})",
        r"\frac{\partial L}{\partial W^{(2)}} &= \delta^{(2)} (a^{(1)})^{T}",
        r"\frac{\partial L}{\partial b^{(2)}} &= \sum_{\text{samples}} \delta^{(2)}",
        r"W^{(2)} &\leftarrow W^{(2)} - \alpha \delta^{(2)} (a^{(1)})^{T}",
        r"W^{(1)} &\leftarrow W^{(1)} - \alpha \delta^{(1)} X^{T}",
    ]
    positions = [text.find(line) for line in expected]
    assert all(p >= 0 for p in positions), [line for line, p in zip(expected, positions) if p < 0]
    assert positions == sorted(positions)


def test_chain_rule_factors_carry_the_values_sympy_found():
    text = derive("2-2-1", "sigmoid", "half_se").latex()
    assert r"\frac{\partial a^{(2)}}{\partial z^{(2)}} &= \sigma'(z^{(2)}) = a^{(2)} \odot (1 - a^{(2)})" in text
    assert r"\frac{\partial z^{(2)}_{i}}{\partial a^{(1)}_{j}} &= W^{(2)}_{ij}" in text
    assert r"\frac{\partial z^{(2)}_{i}}{\partial W^{(2)}_{pq}} &= [i = p] a^{(1)}_{q}" in text
    assert r"\delta^{(1)} = \frac{\partial L}{\partial z^{(1)}} &=" in text


def test_notebook_repr_is_latex():
    assert derive("2-2-1")._repr_latex_().startswith(r"\begin{align*}")


def test_softmax_with_cross_entropy_simplifies_to_a_minus_y_given_targets_sum_to_one():
    d = derive("2-3-3", "tanh,softmax", "cross_entropy")
    assert d.output_delta.simplified == entry(d.layers[-1].a) - entry(d.Y)
    assert d.output_delta.assumption is not None
    text = d.latex()
    assert r"\frac{\partial a^{(2)}_{j}}{\partial z^{(2)}_{i}} &= a^{(2)}_{j} ([i = j] - a^{(2)}_{i})" in text
    assert r"&= a^{(2)}_{i} - y_{i} &&\text{using } \sum_{j=1}^{n} y_{j} = 1" in text


def test_softmax_with_half_se_keeps_one_sum_over_the_units():
    d = derive("2-3-3", "tanh,softmax", "half_se")
    s2, delta2 = d.backward[0], d.backward[1]
    a2, s, y = entry(d.layers[-1].a), entry(s2.lhs), entry(d.Y)
    assert s2.lhs.name == "s2" and d.output_delta.assumption is None
    assert delta2.value.expr == a2 * (a2 - s - y)


def test_the_general_recurrence_is_printed_for_any_depth():
    text = derive("4-3-3-3-2", "tanh,tanh,tanh,sigmoid", "bce").latex()
    assert r"\delta^{(l)} &= (W^{(l+1)})^{T} \delta^{(l+1)} \odot f'(z^{(l)})" in text
    assert r"\frac{\partial L}{\partial W^{(l)}} &= \delta^{(l)} (a^{(l-1)})^{T}" in text
    assert r"\frac{\partial L}{\partial b^{(l)}} &= \sum_{\text{samples}} \delta^{(l)}" in text
    assert r"\delta^{(N)} &= \frac{\partial L}{\partial a^{(N)}} \odot f'(z^{(N)})" in text
    for layer in (1, 2, 3):  # and every concrete layer of this network
        assert rf"\delta^{{({layer})}} &= (W^{{({layer + 1})}})^{{T}} \delta^{{({layer + 1})}}" in text


def test_a_formula_in_z_is_differentiated_by_sympy():
    d = derive("2-3-1", "z/(1+exp(-z)),sigmoid", "half_se")
    swish = d.activations[0]
    assert swish.custom and swish.name == "z/(1 + exp(-z))"
    assert sp.simplify(swish.derivative - sp.diff(z / (1 + sp.exp(-z)), z)) == 0
    assert swish.derivative_in_output is None  # no form in a: the code keeps z⁽¹⁾
    assert r"f_{1}(z) &= \frac{z}{1 + e^{- z}}" in d.latex()


def test_a_formula_gets_its_derivative_in_the_output_when_sympy_finds_one():
    d = derive("2-3-1", "1/(1+exp(-2*z)),sigmoid", "half_se")
    assert sp.expand(d.activations[0].derivative_in_output - 2 * a * (1 - a)) == 0


def test_code_keeps_z_only_where_the_derivative_needs_it():
    source = symbp.generate("2-3-3-1", "z/(1+exp(-z)),tanh,sigmoid", "half_se")
    gradients = source[source.index("def _gradients"):source.index("def gradients")]
    assert 'z1 = cache["z1"]' in gradients
    assert 'z2 = cache["z2"]' not in gradients and 'z3 = cache["z3"]' not in gradients


def test_cross_entropy_loss_is_computed_from_z_with_log_softmax():
    source = symbp.generate("2-3-3", "tanh,softmax", "cross_entropy")
    assert "np.sum(-(Y * log_softmax(z2)))" in source
    bce = symbp.generate("2-3-1", "tanh,sigmoid", "bce")
    assert "np.log(" not in bce[bce.index("def _loss"):bce.index("def loss")]


def test_no_hidden_layer_and_many_layers_derive():
    assert len(derive("4-1", "identity").backward) == 1
    d = derive("64-32-16-10", "relu,relu,softmax", "cross_entropy", "mean")
    assert [e.lhs.name for e in d.backward] == ["delta3", "delta2", "delta1"]


def test_the_derivative_in_a_is_shown_in_a_and_steps_as_brackets():
    sigmoid = derive("2-1", "sigmoid").latex()
    assert r"&= a (1 - a) \qquad \text{with } a = \sigma(z)" in sigmoid
    relu = derive("2-1", "relu").latex()
    assert r"\operatorname{relu}'(z) &= [z > 0]" in relu and r"&= [a > 0] \qquad" in relu
    assert r"\theta" not in relu
    tanh = derive("2-1", "tanh").latex()
    assert r"\tanh(z) &= \tanh" not in tanh  # no definition that only repeats the name
    assert r"&= 1 - a^{2} \qquad \text{with } a = \tanh(z)" in tanh


def test_products_and_losses_are_in_a_textbooks_order():
    sigmoid_bce = symbp.derive("2-2-1", "sigmoid", "bce").latex()
    assert r"&= \sigma(z) (1 - \sigma(z))" in sigmoid_bce  # not (1 − σ(z)) σ(z)
    assert r"L &= - [y \log{(a^{(2)})} + (1 - y) \log{(1 - a^{(2)})}]" in sigmoid_bce
    assert r"\frac{a^{(2)} - y}{a^{(2)} (1 - a^{(2)})}" in sigmoid_bce  # not (−a + y)/(a(a − 1))
    mean = symbp.derive("2-3-3", "tanh,softmax", "cross_entropy", "mean").latex()
    assert r"L &= - \frac{1}{m} \sum_{\text{samples}} \sum_{i=1}^{3} y_{i} \log{(a^{(2)}_{i})}" in mean
