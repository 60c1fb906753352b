"""Backpropagation derived by SymPy, for one sample with samples in columns.

The derivation is data: lists of equations between SymPy objects. Renderers (LaTeX,
code) only print them; the verifier proves them against direct differentiation.

Where each piece comes from:

* f'(z) and its form in a = f(z): ``sympy.diff`` and :func:`activations.rewrite_in_output`;
* ∂ℓ/∂a: ``sympy.diff`` of the loss per unit; δ⁽ᴸ⁾ = ∂ℓ/∂a ⊙ f'(z⁽ᴸ⁾), simplified by SymPy
  when the product cancels (sigmoid with bce gives a − y);
* ∂z⁽ˡ⁾ᵢ/∂a⁽ˡ⁻¹⁾ⱼ and ∂z⁽ˡ⁾ᵢ/∂W⁽ˡ⁾ₚq: ``sympy.diff`` of the indexed sum z = Σₖ Wᵢₖ aₖ + bᵢ.
  Read as matrices they give the transpose in δ⁽ˡ⁾ = (W⁽ˡ⁺¹⁾)ᵀ δ⁽ˡ⁺¹⁾ ⊙ f'(z⁽ˡ⁾)
  and the outer product ∂L/∂W⁽ˡ⁾ = δ⁽ˡ⁾ (a⁽ˡ⁻¹⁾)ᵀ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import sympy as sp

from . import activations as act
from . import losses as lss
from .activations import Activation, get_activation
from .algebra import Elementwise, Partial, SampleSum, Softmax, UnitSum
from .losses import Loss, get_loss
from .spec import NetworkSpec, make_spec

L = sp.Symbol("L")
alpha = sp.Symbol("alpha", positive=True)
m = sp.Symbol("m", positive=True, integer=True)


@dataclass(frozen=True)
class Equation:
    """lhs = rhs in the document's notation; ``value`` is rhs with every factor computed.

    ``relation`` is "=" for a definition and "-=" for an update: lhs ← lhs − rhs.
    """

    lhs: sp.Basic
    rhs: sp.Basic
    value: sp.Basic | None = None
    relation: str = "="

    @property
    def computed(self) -> sp.Basic:
        return self.rhs if self.value is None else self.value


@dataclass(frozen=True)
class Factor:
    """One factor of a chain rule: its notation, its value, and the index form SymPy found."""

    partial: Partial
    value: sp.Basic
    index_form: Equation | None = None
    notation: sp.Basic | None = None  # e.g. σ'(z⁽²⁾), shown between partial and value


@dataclass(frozen=True)
class ChainRule:
    """target = f₁ · f₂ · …, the factorization the document writes out."""

    target: Partial
    factors: tuple[Factor, ...]


@dataclass(frozen=True)
class LayerSymbols:
    """The symbols of layer l, as matrices (for matrix formulas) and as names (elementwise)."""

    index: int
    W: sp.MatrixSymbol
    b: sp.MatrixSymbol
    z: sp.MatrixSymbol
    a: sp.MatrixSymbol
    delta: sp.MatrixSymbol
    dW: sp.MatrixSymbol
    db: sp.MatrixSymbol

    @property
    def a_unit(self) -> sp.Symbol:
        return sp.Symbol(self.a.name)

    @property
    def z_unit(self) -> sp.Symbol:
        return sp.Symbol(self.z.name)


@dataclass(frozen=True)
class OutputDelta:
    """How δ⁽ᴸ⁾ = ∂L/∂z⁽ᴸ⁾ came out: as a product, or simplified by SymPy.

    For an elementwise output δ⁽ᴸ⁾ = ∂ℓ/∂a ⊙ f'(z). For softmax every output depends on
    every input, so δᵢ = Σⱼ (∂aⱼ/∂zᵢ)(∂L/∂aⱼ); ``index_steps`` records how SymPy worked
    that sum out, and ``assumption`` the fact it used (Σⱼ yⱼ = 1 for cross-entropy).
    """

    loss_derivative: sp.Expr  # ∂ℓ/∂a in the unit symbols a, y
    activation_derivative: sp.Expr  # f'(z) in a (or z); for softmax the Jacobian entry ∂aⱼ/∂zᵢ
    simplified: sp.Expr | None  # the product after SymPy cancelled it, if that is simpler
    index_steps: tuple[sp.Expr, ...] = ()  # δᵢ, step by step (softmax)
    assumption: sp.Eq | None = None


@dataclass
class Derivation:
    """Everything symbp knows about one network's backpropagation."""

    spec: NetworkSpec
    activations: tuple[Activation, ...]
    loss: Loss
    layers: tuple[LayerSymbols, ...]
    X: sp.MatrixSymbol
    Y: sp.MatrixSymbol
    forward: tuple[Equation, ...] = ()
    loss_equation: Equation | None = None
    output_delta: OutputDelta | None = None
    chain_rules: tuple[ChainRule, ...] = ()
    backward: tuple[Equation, ...] = ()
    gradients: tuple[Equation, ...] = ()
    updates: tuple[Equation, ...] = ()
    activation_equations: tuple[tuple[Activation, Equation, Equation, Equation | None], ...] = field(default=())
    loss_code: sp.Expr | None = None  # ℓ in the output's names, with logs taken stably from z
    recurrence: tuple[Equation, ...] = ()  # the same backward pass for any depth, in l

    def latex(self) -> str:
        """The derivation's equations as LaTeX (an ``align*``-ready list)."""
        from .latex import render_latex

        return render_latex(self)

    def markdown(self) -> str:
        """The derivation as prose with $$ blocks (GitHub, Jupyter)."""
        from .document import render_markdown

        return render_markdown(self)

    def _repr_markdown_(self) -> str:
        return self.markdown()

    def _repr_latex_(self) -> str:
        from .latex import render_latex

        return render_latex(self, display=True)

    def verify(self, samples: int = 1):
        """Prove every gradient formula against direct differentiation (see :mod:`symbp.verify`)."""
        from .verify import verify

        return verify(self, samples=samples)

    @cached_property
    def params(self) -> tuple[sp.MatrixSymbol, ...]:
        """W1, b1, W2, b2, … in the generated module's order."""
        return tuple(s for layer in self.layers for s in (layer.W, layer.b))


def _layer_symbols(widths: tuple[int, ...]) -> tuple[LayerSymbols, ...]:
    layers = []
    for index in range(1, len(widths)):
        rows, cols = widths[index], widths[index - 1]
        layers.append(LayerSymbols(
            index=index,
            W=sp.MatrixSymbol(f"W{index}", rows, cols),
            b=sp.MatrixSymbol(f"b{index}", rows, 1),
            z=sp.MatrixSymbol(f"z{index}", rows, 1),
            a=sp.MatrixSymbol(f"a{index}", rows, 1),
            delta=sp.MatrixSymbol(f"delta{index}", rows, 1),
            dW=sp.MatrixSymbol(f"dW{index}", rows, cols),
            db=sp.MatrixSymbol(f"db{index}", rows, 1),
        ))
    return tuple(layers)


def linear_partials(layer: LayerSymbols, previous: sp.Symbol) -> tuple[Equation, Equation]:
    """∂zᵢ/∂aⱼ and ∂zᵢ/∂Wₚq of zᵢ = Σₖ Wᵢₖ aₖ + bᵢ, differentiated by SymPy."""
    i, j, k, p, q = sp.symbols("i j k p q", integer=True, positive=True)
    n = sp.Symbol("n", integer=True, positive=True)
    W, a_prev, b, z = (sp.IndexedBase(name) for name in (layer.W.name, str(previous), layer.b.name, layer.z.name))
    z_i = sp.Sum(W[i, k] * a_prev[k], (k, 1, n)) + b[i]
    # j and q run over 1 … n by construction; SymPy's range guard is then always true.
    def first_piece(*pieces):
        return pieces[0][0]

    dz_da = sp.diff(z_i, a_prev[j]).doit().replace(sp.Piecewise, first_piece)
    dz_dW = sp.diff(z_i, W[p, q]).doit().replace(sp.Piecewise, first_piece)
    dz_dW = sp.simplify(dz_dW)
    return (Equation(Partial(z[i], a_prev[j]), dz_da), Equation(Partial(z[i], W[p, q]), dz_dW))


def derive(layers: str | tuple[int, ...] = "2-2-1", activation: str = "sigmoid", loss: str = "half_se",
           reduction: str = "sum") -> Derivation:
    """Derive backpropagation for a network described as on the command line."""
    return derive_spec(make_spec(layers, activation, loss, reduction))


def derive_spec(spec: NetworkSpec) -> Derivation:
    """Derive backpropagation for a checked :class:`NetworkSpec`."""
    activations = _activations(spec)
    loss = get_loss(spec.loss)
    layers = _layer_symbols(spec.layers)
    X = sp.MatrixSymbol("X", spec.layers[0], 1)
    Y = sp.MatrixSymbol("y", spec.layers[-1], 1)
    d = Derivation(spec, activations, loss, layers, X, Y)

    inputs = (X, *(layer.a for layer in layers[:-1]))

    d.activation_equations = tuple(_activation_equations(f) for f in dict.fromkeys(activations) if f.elementwise)

    forward = []
    for layer, previous, f in zip(layers, inputs, activations):
        forward.append(Equation(layer.z, layer.W * previous + layer.b))
        applied = Elementwise(f.function(layer.z_unit), layer.a.rows) if f.elementwise else Softmax(layer.z)
        forward.append(Equation(layer.a, applied))
    d.forward = tuple(forward)

    out, f_out = layers[-1], activations[-1]
    y_unit = sp.Symbol(Y.name)
    unit = {lss.a: out.a_unit, lss.y: y_unit}
    d.loss_equation = Equation(L, _total_loss(loss, out, Y, spec.reduction))
    d.loss_code = loss.per_unit.subs(dict(f_out.log_forms)).subs({**unit, act.z: out.z_unit})

    dl_da = loss.derivative.subs(unit)
    if spec.reduction == "mean":
        dl_da = dl_da / m
    backward = list(_softmax_delta(d, dl_da) if not f_out.elementwise else _elementwise_delta(d, dl_da))
    for layer, above, f in zip(reversed(layers[:-1]), reversed(layers[1:]), reversed(activations[:-1])):
        propagated = above.W.T * above.delta
        backward.append(Equation(
            layer.delta,
            sp.HadamardProduct(propagated, _derivative_notation(f, layer)),
            sp.HadamardProduct(propagated, Elementwise(_in_layer(f, layer), layer.a.rows)),
        ))
    d.backward = tuple(backward)

    gradients, updates = [], []
    for layer, previous in reversed(tuple(zip(layers, inputs))):
        dW, db = layer.delta * previous.T, SampleSum(layer.delta)
        gradients.append(Equation(layer.dW, dW))
        gradients.append(Equation(layer.db, db))
        updates.append(Equation(layer.W, alpha * layer.dW, alpha * dW, relation="-="))
        updates.append(Equation(layer.b, alpha * layer.db, alpha * db, relation="-="))
    d.gradients = tuple(gradients)
    d.updates = tuple(updates)
    d.chain_rules = _chain_rules(d, inputs)
    d.recurrence = general_recurrence(f_out)
    return d


def _activations(spec: NetworkSpec) -> tuple[Activation, ...]:
    """The spec's activations; formulas in z are numbered f₁, f₂, … in order of first use."""
    custom = [name for name in dict.fromkeys(spec.activations) if not act.is_builtin(name)]
    return tuple(get_activation(name, custom.index(name) + 1 if name in custom else 1) for name in spec.activations)


def _elementwise_delta(d: Derivation, dl_da: sp.Expr) -> tuple[Equation]:
    """δ⁽ᴸ⁾ = ∂ℓ/∂a ⊙ f'(z⁽ᴸ⁾), and what SymPy simplifies the product to."""
    out, f_out = d.layers[-1], d.activations[-1]
    df_out = _in_layer(f_out, out)
    product = dl_da * df_out
    simplified = sp.factor(sp.cancel(product))
    simpler = sp.count_ops(simplified) < sp.count_ops(dl_da) + sp.count_ops(df_out)
    d.output_delta = OutputDelta(dl_da, df_out, simplified if simpler else None)
    n_out = out.a.rows
    return (Equation(
        out.delta,
        sp.HadamardProduct(Elementwise(dl_da, n_out), _derivative_notation(f_out, out)),
        Elementwise(simplified, n_out) if simpler
        else sp.HadamardProduct(Elementwise(dl_da, n_out), Elementwise(df_out, n_out)),
    ),)


def _softmax_delta(d: Derivation, dl_da: sp.Expr) -> tuple[Equation, ...]:
    """δᵢ = Σⱼ (∂aⱼ/∂zᵢ) ∂L/∂aⱼ with SymPy's Jacobian ∂aⱼ/∂zᵢ = aⱼ([i = j] − aᵢ).

    SymPy sums the [i = j] terms away; a sum left over runs over the units and becomes
    one vector s⁽ᴸ⁾ per sample. When that sum is Σⱼ yⱼ, the targets being one-hot (or
    probabilities) makes it 1, which is how cross-entropy's δ⁽ᴸ⁾ = a − y comes about.
    """
    out, f_out = d.layers[-1], d.activations[-1]
    jacobian = f_out.derivative_in_output
    i, j = act.i, act.j
    a_i, y_i = sp.IndexedBase("a"), sp.IndexedBase("y")
    n = sp.Symbol("n", integer=True, positive=True)
    y_unit = sp.Symbol(d.Y.name)
    g_j = dl_da.subs({out.a_unit: a_i[j], y_unit: y_i[j]})
    summed = sp.Sum(jacobian * g_j, (j, 1, n))

    collected = sp.Integer(0)
    for term in sp.Add.make_args(sp.expand(jacobian)):
        outside, inside = term.as_independent(j, as_Add=False)
        body = sp.factor(sp.cancel(inside * g_j))
        total = sp.Sum(body, (j, 1, n)).doit().replace(sp.Piecewise, lambda *pieces: pieces[0][0])
        collected += outside * total.replace(sp.Sum, lambda body, limits: _pull_out(body, limits))
    assumption = sp.Eq(sp.Sum(y_i[j], (j, 1, n)), 1)
    one_hot = collected.subs(assumption.lhs, assumption.rhs)

    sums = sorted(one_hot.atoms(sp.Sum), key=sp.default_sort_key)
    names = {total: sp.Symbol(f"s{out.index}" if len(sums) == 1 else f"s{out.index}_{k}")
             for k, total in enumerate(sums, start=1)}
    delta_i = sp.factor_terms(one_hot.xreplace(names))
    steps = (summed, collected) + ((delta_i.xreplace({v: k for k, v in names.items()}),)
                                   if one_hot != collected else ())
    to_units = {a_i[i]: out.a_unit, y_i[i]: y_unit, a_i[j]: out.a_unit, y_i[j]: y_unit}
    equations = [Equation(name, UnitSum(Elementwise(total.function.subs(to_units), out.a.rows)))
                 for total, name in names.items()]
    value = delta_i.subs(to_units)
    d.output_delta = OutputDelta(dl_da, jacobian, value, steps, assumption if one_hot != collected else None)
    notation = sp.MatAdd(sp.DiagMatrix(out.a), -out.a * out.a.T) * Elementwise(dl_da, out.a.rows)
    return (*equations, Equation(out.delta, notation, Elementwise(value, out.a.rows)))


def _pull_out(body: sp.Expr, limits: sp.Tuple) -> sp.Expr:
    """Σⱼ c·bⱼ = c·Σⱼ bⱼ for c free of j."""
    outside, inside = body.as_independent(limits[0], as_Add=False)
    return outside * sp.Sum(inside, limits)


def general_recurrence(f_out: Activation) -> tuple[Equation, ...]:
    """The backward pass for any depth, in the layer index l (a⁽⁰⁾ = X)."""
    n = {label: sp.Symbol(f"n_{{{label}}}", integer=True, positive=True) for label in ("L", "l", "l+1", "l-1")}

    def vector(base: str, label: str) -> sp.MatrixSymbol:
        return sp.MatrixSymbol(f"{base}{label}", n[label], 1)

    def derivative(label: str) -> Elementwise:
        z_unit = sp.Symbol(f"z{label}")
        return Elementwise(sp.Derivative(act.ActivationBase(z_unit), z_unit), n[label])

    a_out, dl_da = vector("a", "L"), vector("da", "L")
    if f_out.elementwise:
        output = sp.HadamardProduct(dl_da, derivative("L"))
    else:
        output = sp.MatAdd(sp.DiagMatrix(a_out), -a_out * a_out.T) * dl_da
    W_above = sp.MatrixSymbol("Wl+1", n["l+1"], n["l"])
    delta = vector("delta", "l")
    return (
        Equation(vector("delta", "L"), output),
        Equation(delta, sp.HadamardProduct(W_above.T * vector("delta", "l+1"), derivative("l"))),
        Equation(sp.MatrixSymbol("dWl", n["l"], n["l-1"]), delta * vector("a", "l-1").T),
        Equation(vector("db", "l"), SampleSum(delta)),
    )


def _activation_equations(f: Activation) -> tuple[Activation, Equation, Equation, Equation | None]:
    """f(z) = formula; f'(z) = SymPy's derivative; f'(z) = g(a) where SymPy found g."""
    applied = f.function(act.z)
    definition = Equation(applied, f.formula)
    derivative = Equation(sp.Derivative(applied, act.z), f.derivative)
    in_output = None
    if f.derivative_in_output is not None:
        in_output = Equation(sp.Derivative(applied, act.z), f.derivative_in_output.subs(act.a, applied))
    return f, definition, derivative, in_output


def _in_layer(f: Activation, layer: LayerSymbols) -> sp.Expr:
    """f'(z⁽ˡ⁾) as computed: in a⁽ˡ⁾ when possible, else in z⁽ˡ⁾."""
    return f.derivative_form.subs({act.a: layer.a_unit, act.z: layer.z_unit})


def _derivative_notation(f: Activation, layer: LayerSymbols) -> Elementwise:
    """f'(z⁽ˡ⁾) as notation."""
    return Elementwise(sp.Derivative(f.function(layer.z_unit), layer.z_unit), layer.a.rows)


def _total_loss(loss: Loss, out: LayerSymbols, Y: sp.MatrixSymbol, reduction: str) -> sp.Expr:
    """L = Σᵢ ℓ(a⁽ᴸ⁾ᵢ, yᵢ), written without the index when there is one output unit."""
    if out.a.rows == 1:
        total = loss.per_unit.subs({lss.a: out.a_unit, lss.y: sp.Symbol(Y.name)})
    else:
        i = sp.Symbol("i", integer=True, positive=True)
        term = loss.per_unit.subs({lss.a: sp.IndexedBase(out.a.name)[i], lss.y: sp.IndexedBase(Y.name)[i]})
        total = sp.Sum(term, (i, 1, out.a.rows))
    return total / m if reduction == "mean" else total


def _chain_rules(d: Derivation, inputs: tuple[sp.MatrixSymbol, ...]) -> tuple[ChainRule, ...]:
    """The document's two factorizations: ∂L/∂W⁽ᴸ⁾ and, with a hidden layer, δ⁽ᴸ⁻¹⁾."""
    out, f_out = d.layers[-1], d.activations[-1]
    n_out = out.a.rows
    dl_da = Factor(Partial(L, out.a), Elementwise(d.output_delta.loss_derivative, n_out))
    if f_out.elementwise:
        da_dz = Factor(Partial(out.a, out.z), Elementwise(d.output_delta.activation_derivative, n_out),
                       notation=_derivative_notation(f_out, out))
    else:
        jacobian = d.output_delta.activation_derivative
        i, j = act.i, act.j
        a_i, z_i = sp.IndexedBase(out.a.name), sp.IndexedBase(out.z.name)
        entry = jacobian.subs(sp.IndexedBase("a"), a_i)
        da_dz = Factor(Partial(out.a, out.z), sp.MatAdd(sp.DiagMatrix(out.a), -out.a * out.a.T),
                       Equation(Partial(a_i[j], z_i[i]), entry))
    dz_da, dz_dW = linear_partials(out, sp.Symbol(inputs[-1].name))
    rules = [ChainRule(Partial(L, out.W), (dl_da, da_dz, Factor(Partial(out.z, out.W), inputs[-1].T, dz_dW)))]
    if len(d.layers) > 1:
        hidden, f_hidden = d.layers[-2], d.activations[-2]
        rules.append(ChainRule(Partial(L, hidden.z), (
            dl_da, da_dz,
            Factor(Partial(out.z, hidden.a), out.W, dz_da),
            Factor(Partial(hidden.a, hidden.z), Elementwise(_in_layer(f_hidden, hidden), hidden.a.rows),
                   notation=_derivative_notation(f_hidden, hidden)),
        )))
    return tuple(rules)
