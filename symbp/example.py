"""A worked example: one sample through the network, every number computed by the generated module.

The derivation says what to compute; this runs the NumPy module symbp generates for the same
network on one sample, from ``init_params(seed)``, and hands the numbers to the document
(:class:`symbp.document.Example`), which prints them next to the formulas.
"""

from __future__ import annotations

import numpy as np

from .derive import Derivation
from .document import Example
from .render import render_module
from .spec import SpecError
from .train import module_for

# Every matrix is printed whole, so the example is for small networks.
MAX_UNITS = 4
LEARNING_RATE = 0.1  # the reference tutorial's


def sample(d: Derivation) -> tuple[np.ndarray, np.ndarray]:
    """XOR's (1, 0) → 1 for a 2-…-1 network (the tutorial's data); otherwise a fixed input and the first class."""
    inputs, outputs = d.spec.layers[0], d.spec.layers[-1]
    if (inputs, outputs) == (2, 1):
        return np.array([[1.0], [0.0]]), np.array([[1.0]])
    x = np.round(np.linspace(-1.0, 1.0, inputs), 2).reshape(inputs, 1)
    y = np.zeros((outputs, 1))
    y[0, 0] = 1.0
    return x, y


def worked_example(d: Derivation, seed: int = 0, learning_rate: float = LEARNING_RATE) -> Example:
    """Run the generated module on one sample: forward pass, loss, errors, gradients, one update."""
    if max(d.spec.layers) > MAX_UNITS:
        raise SpecError(f"--example prints every matrix, so it needs at most {MAX_UNITS} units per layer, "
                        f"not {'-'.join(map(str, d.spec.layers))}")
    module = module_for(render_module(d, "numpy"))
    X, Y = sample(d)
    params = module.init_params(seed)
    values = {"X": X, "y": Y, **{name: value.copy() for name, value in params.items()}}
    values.update(module.forward_pass(params, X))
    values["L"] = np.array([[module.loss(params, X, Y)]])
    grads = module.gradients(params, X, Y)
    values.update({f"d{name}": value for name, value in grads.items()})
    module.train_step(params, X, Y, learning_rate)
    after = {f"{name}_new": value for name, value in params.items()}
    return Example(seed, learning_rate, values, after)
