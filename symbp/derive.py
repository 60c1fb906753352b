"""Backpropagation by composing ops: the network is a chain of ops, the chain rule runs it backwards.

:func:`chain` turns a checked :class:`~symbp.spec.NetworkSpec` into ops: per layer an
affine map, any registered ops, an activation; then the loss. :func:`derive_spec` walks the
chain from the loss down, handing each op ∂L/∂(its output) and taking back ∂L/∂(its inputs
and parameters), each derived by SymPy from the op's index form (:mod:`symbp.ops`). A
gradient an op reads more than once (any op with parameters reads it for each) is named and
stored: δ⁽ˡ⁾ = ∂L/∂z⁽ˡ⁾ in the dense layers. Nothing here knows the dense recurrence
δ⁽ˡ⁾ = (W⁽ˡ⁺¹⁾)ᵀδ⁽ˡ⁺¹⁾ ⊙ f'(z⁽ˡ⁾): it is what the composition gives.

The derivation is data (lists of equations between SymPy objects); renderers print it and
the proof checks it, and this module knows none of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from . import activations as act
from . import losses
from .activations import Activation, get_activation
from .algebra import (
    INPUT,
    MASK,
    TARGET,
    Elementwise,
    Entry,
    Equation,
    Partial,
    Quantity,
    entry,
)
from .budget import OverBudget, within
from .losses import Loss, get_loss
from .ops import (
    AFTER_ACTIVATION,
    AFTER_AFFINE,
    REGISTRY,
    Activate,
    Affine,
    Backward,
    Factor,
    HingeLossOp,
    LossOp,
    Op,
    PenaltyOp,
    SoftmaxOp,
    gradient,
    i,
    m,
    param,
    value,
)
from .optimizers import Optimizer, alpha, optimizer
from .spec import NetworkSpec

__all__ = ["Derivation", "Equation", "alpha", "chain", "derive_spec", "m"]

L = sp.Symbol("L")


@dataclass(frozen=True)
class ChainRule:
    """target = f₁ · f₂ · …, the factorization the document writes out; ``name`` is δ⁽ˡ⁾ where it has one."""

    target: Partial
    factors: tuple[Factor, ...]
    name: Quantity | None = None


@dataclass(frozen=True)
class LayerSymbols:
    """The quantities of dense layer l."""

    index: int
    W: Quantity
    b: Quantity
    z: Quantity
    a: Quantity
    delta: Quantity
    dW: Quantity
    db: Quantity

    @property
    def a_unit(self) -> Entry:
        return entry(self.a)


@dataclass(frozen=True)
class OutputDelta:
    """How δ⁽ᴺ⁾ = ∂L/∂z⁽ᴺ⁾ came out: as a product, or simplified by SymPy.

    For an elementwise output δ⁽ᴺ⁾ = ∂ℓ/∂a ⊙ f'(z). For softmax every output depends on
    every input, so δᵢ = Σⱼ (∂aⱼ/∂zᵢ)(∂L/∂aⱼ); ``index_steps`` records how SymPy worked
    that sum out, and ``assumption`` the fact it used (Σⱼ yⱼ = 1 for cross-entropy).
    """

    loss_derivative: sp.Expr  # ∂ℓ/∂a in entries of a⁽ᴺ⁾ and y
    activation_derivative: sp.Expr  # f'(z) in a (or z); for softmax the Jacobian entry ∂aⱼ/∂zᵢ
    simplified: sp.Expr | None  # the product after SymPy cancelled it, if that is simpler
    index_steps: tuple[sp.Expr, ...] = ()
    assumption: sp.Eq | None = None


@dataclass
class Derivation:
    """Everything symbp knows about one network's backpropagation."""

    spec: NetworkSpec
    activations: tuple[Activation, ...]
    loss: Loss
    ops: tuple[Op, ...]
    layers: tuple[LayerSymbols, ...]
    X: Quantity
    Y: Quantity
    params: tuple[Quantity, ...] = ()
    forward: tuple[Equation, ...] = ()
    loss_equation: Equation | None = None
    output_delta: OutputDelta | None = None
    chain_rules: tuple[ChainRule, ...] = ()
    backward: tuple[Equation, ...] = ()
    gradients: tuple[Equation, ...] = ()
    updates: tuple[Equation, ...] = ()
    activation_equations: tuple[tuple[Activation, Equation, Equation, Equation | None], ...] = ()
    loss_code: sp.Expr | None = None  # ℓ in the output's entries, with logs taken stably from z
    penalty: PenaltyOp | None = None  # ½λ Σ‖W‖² with --l2 λ
    recurrence: tuple[Equation, ...] = ()  # the same backward pass for any depth, in l
    optimizer: Optimizer | None = None  # None: gradient descent as the tutorial does it

    @property
    def masks(self) -> tuple[Quantity, ...]:
        """The dropout masks the loss reads, inputs drawn by the caller."""
        return tuple(x for op in self.ops for x in op.inputs if x.kind == MASK)

    @property
    def output(self) -> Quantity:
        """The network's output a⁽ᴺ⁾ (what the loss reads)."""
        return self.ops[-1].inputs[0]

    def gradient_of(self, quantity: Quantity) -> Quantity:
        """The stored ∂L/∂quantity."""
        return next(e.lhs for e in (*self.gradients, *self.backward) if e.lhs.of == quantity)


def chain(spec: NetworkSpec, activations: tuple[Activation, ...]) -> tuple[tuple[Op, ...], tuple[LayerSymbols, ...]]:
    """The network as ops: per layer z = W x + b, registered ops, a = f(·); then the loss."""
    X = Quantity("X", spec.layers[0], 1, INPUT, "X")
    Y = Quantity("y", spec.layers[-1], 1, TARGET, "y")
    inserted = {(name, layer) for name, layer in spec.ops}
    ops: list[Op] = []
    layers = []
    x = X
    for index, f in enumerate(activations, start=1):
        rows, cols = spec.layers[index], spec.layers[index - 1]
        W, b = param("W", index, rows, cols, "weight"), param("b", index, rows, 1, "bias")
        z = value("z", index, rows)
        ops.append(Affine(z, (x,), (W, b), "affine map"))
        x = _insert(ops, z, index, AFTER_AFFINE, inserted)
        a = value("a", index, rows)
        ops.append(SoftmaxOp(a, (x,), (), "softmax", f) if not f.elementwise else Activate(a, (x,), (), "activation", f))
        x = _insert(ops, a, index, AFTER_ACTIVATION, inserted)
        layers.append(LayerSymbols(index, W, b, z, a, gradient(z), gradient(W), gradient(b)))
    kind = HingeLossOp if spec.loss == "hinge" else LossOp
    ops.append(kind(Quantity("L", 1, 1, "value", "L"), (x, Y), (), "loss", get_loss(spec.loss), spec.reduction))
    return tuple(ops), tuple(layers)


def _insert(ops: list[Op], x: Quantity, layer: int, where: str, inserted: set) -> Quantity:
    for name, registration in REGISTRY.items():
        if registration.where == where and (name, layer) in inserted:
            op = registration.make(x, layer)
            ops.append(op)
            x = op.output
    return x


def derive_spec(spec: NetworkSpec) -> Derivation:
    """Derive backpropagation for a checked :class:`NetworkSpec` by composing its ops."""
    activations = _activations(spec)
    ops, layers = chain(spec, activations)
    loss_op = ops[-1]
    X, Y = ops[0].inputs[0], loss_op.inputs[1]
    d = Derivation(spec, activations, get_loss(spec.loss), ops, layers, X, Y)
    d.params = tuple(param for op in ops for param in op.params)
    d.activation_equations = tuple(_activation_equations(f) for f in dict.fromkeys(activations) if f.elementwise)
    d.forward = tuple(e for op in ops[:-1] for e in op.forward_equations())
    if spec.l2:
        weights = tuple(layer.W for layer in layers)
        d.penalty = PenaltyOp(value("P", "", 1, "P"), (), weights, "weight penalty")
    d.loss_equation = Equation(L, loss_op.definition() + (d.penalty.entry(i) if d.penalty else 0))
    d.loss_code = _loss_code(d)

    # The chain rule, backwards: ∂L/∂(output of op) → ∂L/∂(its inputs and parameters).
    dl_da = loss_op.gradient()
    pending = {d.output: Backward(dl_da, dl_da, loss_op.before() if isinstance(loss_op, HingeLossOp) else ())}
    backward, gradients = [], []
    for op in reversed(ops[:-1]):
        incoming = pending.pop(op.output)
        backward += incoming.before
        upstream = incoming.value
        if op.params:  # read once per parameter and input: computed once, by name
            named = gradient(op.output)
            fused = _fused(incoming.value)
            backward.append(Equation(named, incoming.notation, fused, steps=(incoming.value,) * (fused is not incoming.value)))
            upstream = named
            if op.output == layers[-1].z:
                d.output_delta = _output_delta(d, incoming, activations[-1])
        for wrt, result in op.backward(upstream).items():
            if wrt in op.params:
                gradients.append(Equation(gradient(wrt), result.value))
            elif wrt.kind not in (INPUT, MASK):  # masks are drawn, not learned
                pending[wrt] = result
    if d.penalty is not None:  # the penalty's gradient joins the weights' own: δ aᵀ + λ W
        extra = d.penalty.gradients()
        gradients = [Equation(e.lhs, sp.MatAdd(e.rhs, extra[e.lhs.of])) if e.lhs.of in extra else e
                     for e in gradients]
    d.backward = tuple(backward)
    d.gradients = tuple(gradients)
    if spec.plain_sgd:
        d.updates = tuple(Equation(g.lhs.of, alpha * g.lhs, alpha * g.rhs, relation="-=") for g in gradients)
    else:
        d.optimizer = optimizer(spec, tuple(g.lhs for g in gradients))
        d.updates = d.optimizer.updates
    d.chain_rules = _chain_rules(d)
    d.recurrence = general_recurrence(activations[-1])
    return d


def _fused(value_: sp.Basic) -> sp.Basic:
    """An elementwise product offered to SymPy to cancel (sigmoid with bce gives a − y).

    With a formula the user wrote in it, SymPy gets a time budget and, past it, the product
    stays as it is.
    """
    if isinstance(value_, sp.HadamardProduct) and all(isinstance(arg, Elementwise) for arg in value_.args):
        factors = [arg.expr for arg in value_.args]
        product = sp.Mul(*factors)
        try:
            simplified = within(_cancel, product) if _has_custom(product) else _cancel(product)
        except OverBudget:
            return value_
        if sp.count_ops(simplified) < sum(sp.count_ops(f) for f in factors):
            return Elementwise(simplified, *value_.shape)
    return value_


def _cancel(expr: sp.Expr) -> sp.Expr:
    return sp.factor(sp.cancel(expr))


def _has_custom(expr: sp.Expr) -> bool:
    """Whether expr may hold a formula the user wrote: the built-ins' derivatives are polynomials
    in a, steps and exp, which SymPy cancels at once."""
    return any(not isinstance(f, (sp.Heaviside, sp.Piecewise, sp.exp)) for f in expr.atoms(sp.Function))


def _output_delta(d: Derivation, incoming: Backward, f_out: Activation) -> OutputDelta:
    """What the document says about δ⁽ᴺ⁾: the two factors, and what SymPy made of them."""
    dl_da = d.ops[-1].gradient().expr
    layer = d.layers[-1]
    if not f_out.elementwise:
        softmax = next(op for op in d.ops if isinstance(op, SoftmaxOp) and op.output == layer.a)
        return OutputDelta(dl_da, softmax.jacobian(), incoming.value.expr, incoming.steps, incoming.assumption)
    fused = _fused(incoming.value)
    factors = incoming.value.args if isinstance(incoming.value, sp.HadamardProduct) else ()
    df = factors[-1].expr if factors and isinstance(factors[-1], Elementwise) else sp.Integer(1)
    return OutputDelta(dl_da, df, fused.expr if fused is not incoming.value else None)


def _activations(spec: NetworkSpec) -> tuple[Activation, ...]:
    """The spec's activations; formulas in z are numbered f₁, f₂, … in order of first use."""
    custom = [name for name in dict.fromkeys(spec.activations) if not act.is_builtin(name)]
    return tuple(get_activation(name, custom.index(name) + 1 if name in custom else 1) for name in spec.activations)


def _loss_code(d: Derivation) -> sp.Expr:
    """ℓ over the output's entries, with log a and log(1 − a) taken from z where the output op allows."""
    out_op = next(op for op in d.ops if op.output == d.output)
    logs = dict(out_op.activation.log_forms) if isinstance(out_op, (Activate, SoftmaxOp)) else {}
    unit = {losses.a: entry(d.output), losses.y: entry(d.Y), act.z: entry(out_op.inputs[0])}
    if isinstance(d.ops[-1], HingeLossOp):
        unit[losses.t] = entry(d.ops[-1].named()[0])
    return d.loss.per_unit.subs(logs).subs(unit)


def general_recurrence(f_out: Activation) -> tuple[Equation, ...]:
    """The backward pass for any depth, in the layer index l (a⁽⁰⁾ = X): the same ops, composed
    with symbolic layer labels and a generic activation f."""
    n = {label: sp.Symbol(f"n_{{{label}}}", integer=True, positive=True) for label in ("N", "l", "l+1", "l-1")}
    a_prev, z, a = value("a", "l-1", n["l-1"]), value("z", "l", n["l"]), value("a", "l", n["l"])
    W, b = param("W", "l", n["l"], n["l-1"], "weight"), param("b", "l", n["l"], 1, "bias")
    z_next = value("z", "l+1", n["l+1"])
    above = Affine(z_next, (a,), (param("W", "l+1", n["l+1"], n["l"], "weight"), param("b", "l+1", n["l+1"])))
    z_out, a_out = value("z", "N", n["N"]), value("a", "N", n["N"])
    output_op = Activate(a_out, (z_out,)) if f_out.elementwise else SoftmaxOp(a_out, (z_out,), (), "", f_out)
    delta_out = output_op.backward(gradient(a_out))[z_out].notation
    to_a = above.backward(gradient(z_next))[a].value
    delta = Activate(a, (z,)).backward(to_a)[z].notation
    grads = Affine(z, (a_prev,), (W, b)).backward(gradient(z))
    return (
        Equation(gradient(z_out), delta_out),
        Equation(gradient(z), delta),
        Equation(gradient(W), grads[W].value),
        Equation(gradient(b), grads[b].value),
    )


def _activation_equations(f: Activation) -> tuple[Activation, Equation, Equation, Equation | None]:
    """f(z) = formula; f'(z) = SymPy's derivative; f'(z) = g(a) where SymPy found g."""
    applied = f.function(act.z)
    definition = Equation(applied, f.formula)
    derivative = Equation(sp.Derivative(applied, act.z), f.derivative)
    in_output = None
    if f.derivative_in_output is not None:
        in_output = Equation(sp.Derivative(applied, act.z), f.derivative_in_output)  # in a = f(z)
    return f, definition, derivative, in_output


def _chain_rules(d: Derivation) -> tuple[ChainRule, ...]:
    """The document's two factorizations, read off the chain of ops: ∂L/∂W⁽ᴺ⁾ and, with a hidden
    layer, δ⁽ᴸ⁻¹⁾ = ∂L/∂z⁽ᴸ⁻¹⁾."""
    producer = {op.output: op for op in d.ops}
    factors = [d.ops[-1].factor(d.output)]
    op = producer[d.output]
    while not isinstance(op, Affine):
        factors.append(op.factor(op.inputs[0]))
        op = producer[op.inputs[0]]
    W = op.params[0]
    rules = [ChainRule(Partial(L, W), (*factors, op.factor(W)))]
    if len(d.layers) > 1:
        below = [op.factor(op.inputs[0])]
        op = producer[op.inputs[0]]
        while not isinstance(op, Affine):
            below.append(op.factor(op.inputs[0]))
            op = producer[op.inputs[0]]
        z = op.output
        rules.append(ChainRule(Partial(L, z), (*factors, *below), gradient(z)))
    return tuple(rules)
