"""Random networks symbp accepts, shared by the tests that sweep over them."""

import numpy as np

ELEMENTWISE = ["sigmoid", "tanh", "relu", "leaky_relu(0.2)", "softplus", "identity",
               "z/(1 + exp(-z))", "z*tanh(log(exp(z) + 1))", "atan(z)"]


def random_network(seed):
    """A random network symbp accepts: depth 1–3, widths 1–5, activations, loss, reduction."""
    rng = np.random.default_rng(seed)
    depth = int(rng.integers(1, 4))
    hidden = [str(rng.choice(ELEMENTWISE)) for _ in range(depth - 1)]
    output = str(rng.choice([*ELEMENTWISE, "softmax", "softmax", "sigmoid"]))
    widths = [int(w) for w in rng.integers(1, 6, depth + 1)]
    if output == "softmax":
        widths[-1] = max(widths[-1], 2)
        loss = str(rng.choice(["half_se", "half_se", "cross_entropy", "cross_entropy"]))
    else:
        loss = str(rng.choice(["half_se", "bce"])) if output == "sigmoid" else "half_se"
    reduction = str(rng.choice(["sum", "mean"]))
    return "-".join(map(str, widths)), ",".join([*hidden, output]), loss, reduction


def targets(rng, loss, rows, samples):
    """Targets a loss takes: any reals, probabilities in (0, 1), or columns of class probabilities."""
    if loss == "half_se":
        return rng.standard_normal((rows, samples))
    if loss == "bce":
        return rng.uniform(0.05, 0.95, (rows, samples))
    weights = rng.uniform(0.05, 1.0, (rows, samples))  # class probabilities: each column sums to 1
    return weights / weights.sum(axis=0, keepdims=True)
