"""Optimizers as equations: how each parameter moves, given its gradient, as torch.optim moves it.

An optimizer is its state (per parameter θ a velocity v_θ, or Adam's moments m_θ and v_θ; and
the step count t) and a list of update equations between :class:`~symbp.algebra.Quantity`
objects, read entry by entry: v_θ ← μ v_θ + ∂L/∂θ, then θ ← θ − α v_θ. The document prints these
equations and the code backends lower them like every other formula. The conventions are
torch.optim's (SGD with momentum and nesterov, RMSprop, Adam, AdamW), including where each adds
its weight decay: to the gradient (wd·θ, the L2 penalty's gradient) for all but AdamW, which
shrinks θ itself by α·wd·θ, apart from the gradient. Weight decay applies to the weights only,
as the --l2 penalty does (in torch.optim: a parameter group for the biases with weight_decay 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .algebra import SCRATCH, STATE, Elementwise, Equation, Quantity, entry
from .spec import NetworkSpec

alpha = sp.Symbol("alpha", positive=True)  # the learning rate
mu = sp.Symbol("mu", positive=True)
beta_1, beta_2 = sp.Symbol("beta_1", positive=True), sp.Symbol("beta_2", positive=True)
epsilon = sp.Symbol("epsilon", positive=True)
rho = sp.Symbol("rho", positive=True)  # RMSprop's smoothing constant, torch.optim's alpha
weight_decay = sp.Symbol("lambda_wd", positive=True)

# Each hyperparameter's name in generated code: torch.optim's, in capitals (RMSprop's ρ is its alpha).
CODE_NAMES = {mu: "MOMENTUM", beta_1: "BETA1", beta_2: "BETA2", epsilon: "EPS", rho: "ALPHA",
              weight_decay: "WEIGHT_DECAY"}
TITLES = {"sgd": "SGD", "momentum": "SGD with momentum", "nesterov": "SGD with Nesterov momentum",
          "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW"}


@dataclass(frozen=True)
class Constant:
    """A hyperparameter: its symbol in the equations and its value as canonical text."""

    symbol: sp.Symbol
    value: str

    @property
    def code_name(self) -> str:
        return CODE_NAMES[self.symbol]


@dataclass(frozen=True)
class Optimizer:
    """An optimizer's hyperparameters, state and update equations, for one network."""

    name: str
    title: str
    constants: tuple[Constant, ...]
    state: tuple[Quantity, ...]  # t first (where kept), then each parameter's
    updates: tuple[Equation, ...]

    @property
    def decoupled(self) -> bool:
        """Whether the weight decay shrinks θ apart from the gradient (AdamW) rather than adding to it."""
        return self.name == "adamw"


def state_of(base: str, param: Quantity, kind: str = STATE) -> Quantity:
    """The optimizer's array ``base`` for parameter θ (v_θ, m_θ, m̂_θ), shaped like θ."""
    return Quantity(f"{base}_{param.name}", param.rows, param.cols, kind, base, param.layer, param)


def optimizer(spec: NetworkSpec, gradients: tuple[Quantity, ...]) -> Optimizer:
    """The update equations of ``spec.optimizer`` for the parameters whose gradients are given."""
    name = spec.optimizer
    decay = float(spec.setting("weight_decay")) > 0
    constants = []
    if name in ("momentum", "nesterov"):
        constants.append(Constant(mu, spec.setting("momentum")))
    if name == "rmsprop":
        constants.append(Constant(rho, spec.setting("alpha")))
    if name in ("adam", "adamw"):
        first, second = spec.setting("betas").split(",")
        constants += [Constant(beta_1, first), Constant(beta_2, second)]
    if name in ("rmsprop", "adam", "adamw"):
        constants.append(Constant(epsilon, spec.setting("eps")))
    constants.append(Constant(weight_decay, spec.setting("weight_decay")))

    t = Quantity("t", 1, 1, STATE, "t")
    state: list[Quantity] = [] if name == "sgd" else [t]
    updates: list[Equation] = [] if name == "sgd" else [Equation(t, Elementwise(entry(t) + 1, 1, 1), relation="<-")]
    for g in gradients:
        theta = g.of
        G, Theta = entry(g), entry(theta)

        def elementwise(expr: sp.Expr, theta: Quantity = theta) -> Elementwise:
            return Elementwise(expr, theta.rows, theta.cols)

        decays = decay and theta.role == "weight"  # weights only, as --l2 penalises them
        if decays and name != "adamw":  # torch.optim: the decay joins the gradient, as an L2 penalty's would
            updates.append(Equation(g, elementwise(G + weight_decay * Theta), relation="<-"))
        if name == "sgd":
            updates.append(Equation(theta, alpha * g, relation="-="))
        elif name in ("momentum", "nesterov"):
            v = state_of("v", theta)
            state.append(v)
            updates.append(Equation(v, elementwise(mu * entry(v) + G), relation="<-"))
            step = alpha * v if name == "momentum" else elementwise(alpha * (G + mu * entry(v)))
            updates.append(Equation(theta, step, relation="-="))
        elif name == "rmsprop":
            v = state_of("v", theta)
            state.append(v)
            updates.append(Equation(v, elementwise(rho * entry(v) + (1 - rho) * G**2), relation="<-"))
            updates.append(Equation(theta, elementwise(alpha * G / (sp.sqrt(entry(v)) + epsilon)), relation="-="))
        else:
            if decays and name == "adamw":  # decoupled: θ shrinks by α·wd·θ before the Adam step
                updates.append(Equation(theta, elementwise(alpha * weight_decay * Theta), relation="-="))
            moment, square = state_of("m", theta), state_of("v", theta)
            state += [moment, square]
            m_hat, v_hat = state_of("mhat", theta, SCRATCH), state_of("vhat", theta, SCRATCH)
            updates += [
                Equation(moment, elementwise(beta_1 * entry(moment) + (1 - beta_1) * G), relation="<-"),
                Equation(square, elementwise(beta_2 * entry(square) + (1 - beta_2) * G**2), relation="<-"),
                Equation(m_hat, elementwise(entry(moment) / (1 - beta_1 ** entry(t)))),
                Equation(v_hat, elementwise(entry(square) / (1 - beta_2 ** entry(t)))),
                Equation(theta, elementwise(alpha * entry(m_hat) / (sp.sqrt(entry(v_hat)) + epsilon)),
                         relation="-="),
            ]
    return Optimizer(name, TITLES[name], tuple(constants), tuple(state), tuple(updates))
