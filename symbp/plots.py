"""Pictures of a training run: the loss curve, and for two inputs the decision surface (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np

from .spec import SpecError


def require_matplotlib() -> None:
    """Fail early, in one line, when the plotting extra is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SpecError("--plot needs matplotlib: pip install 'symbp[plot]'") from None


def plot_training(path: str | Path, module: ModuleType, fit, data, title: str) -> None:
    """Write a PNG to ``path`` (the caller makes it atomic): the loss curve, beside the decision
    surface when the data has two inputs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    surface = data.inputs == 2
    figure, axes = plt.subplots(1, 2 if surface else 1, figsize=(11 if surface else 6, 4.2), squeeze=False)
    epochs, losses = zip(*fit.curve)
    curve = axes[0][0]
    curve.plot(epochs, losses, color="tab:blue")
    curve.set_xlabel("epoch")
    curve.set_ylabel("loss L on the training set")
    if min(losses) > 0:
        curve.set_yscale("log")
    curve.set_title("loss")
    curve.grid(True, alpha=0.3)
    if surface:
        _decision_surface(axes[0][1], module, fit.params, data)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=110, format="png")
    finally:
        plt.close(figure)


def _decision_surface(ax, module: ModuleType, params: dict, data) -> None:
    """The network's output over the input plane, the 0.5 contour, and the training points."""
    X = data.X_train
    low, high = X.min(axis=1) - 0.5, X.max(axis=1) + 0.5
    u, v = np.meshgrid(np.linspace(low[0], high[0], 200), np.linspace(low[1], high[1], 200))
    grid = np.vstack([u.ravel(), v.ravel()])
    output = module.forward(params, grid)
    value = output[0] if output.shape[0] == 1 else output.argmax(axis=0)
    shade = ax.contourf(u, v, value.reshape(u.shape), levels=20, cmap="RdBu_r", alpha=0.8)
    if output.shape[0] == 1:
        ax.contour(u, v, value.reshape(u.shape), levels=[0.5], colors="k", linewidths=1.2)
    ax.figure.colorbar(shade, ax=ax, label="network output")
    ax.scatter(X[0], X[1], c=data.labels_train, cmap="RdBu_r", edgecolors="k", s=120, vmin=0, vmax=1, zorder=3)
    ax.set_xlabel("input 1")
    ax.set_ylabel("input 2")
    ax.set_title("decision surface (black: output 0.5)")
