"""Pictures of a training run (matplotlib): loss and accuracy curves, the confusion matrix on the
held-out split, and for two inputs the decision surface."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np

from .datasets import predicted_labels
from .spec import SpecError


def require_matplotlib() -> None:
    """Fail early, in one line, when the plotting extra is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SpecError("--plot needs matplotlib: pip install 'symbp[plot]'") from None


def plot_training(path: str | Path, module: ModuleType, fit, data, title: str) -> None:
    """Write :func:`training_figure` as a PNG to ``path`` (the caller makes it atomic)."""
    import matplotlib.pyplot as plt

    figure = training_figure(module, fit, data, title)
    try:
        figure.savefig(path, dpi=110, format="png")
    finally:
        plt.close(figure)


def training_figure(module: ModuleType, fit, data, title: str):
    """The loss curve; with a held-out split also the accuracy curves and the test split's confusion
    matrix; with two inputs the decision surface. Every curve comes from ``fit.history``, whose records
    measure loss and accuracies of the same parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 1 + 2 * data.held_out + (data.inputs == 2)
    figure, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.4), squeeze=False)
    axes = list(axes[0])
    _loss_curves(axes.pop(0), module, fit, data)
    if data.held_out:
        _accuracy_curves(axes.pop(0), fit)
        _confusion(axes.pop(0), module, fit.params, data)
    if data.inputs == 2:
        _decision_surface(axes.pop(0), module, fit.params, data)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def _loss_curves(ax, module: ModuleType, fit, data) -> None:
    """Training loss, and the held-out split's; a summed loss is divided by the samples so the two
    splits, of different sizes, can be compared."""
    epochs = [record.epoch for record in fit.history]
    per_sample = data.held_out and module.REDUCTION == "sum"
    train_scale = 1 / data.X_train.shape[1] if per_sample else 1.0
    losses = [record.loss * train_scale for record in fit.history]
    ax.plot(epochs, losses, color="tab:blue", label="train")
    if data.held_out:
        test_scale = 1 / data.X_test.shape[1] if per_sample else 1.0
        ax.plot(epochs, [record.test_loss * test_scale for record in fit.history], color="tab:orange", label="test")
        ax.legend()
        losses += [record.test_loss * test_scale for record in fit.history]
    name = f"{module.LOSS} ({module.REDUCTION}{' ÷ samples' if per_sample else ''})"
    if getattr(module, "L2", 0):
        name += " + ½λΣ‖W‖²"
    ax.set_ylabel(name)
    ax.set_xlabel("epoch")
    if min(losses) > 0:
        ax.set_yscale("log")
    ax.set_title("loss")
    ax.grid(True, alpha=0.3)


def _accuracy_curves(ax, fit) -> None:
    epochs = [record.epoch for record in fit.history]
    ax.plot(epochs, [record.train_accuracy for record in fit.history], color="tab:blue", label="train")
    ax.plot(epochs, [record.test_accuracy for record in fit.history], color="tab:orange", label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower right")
    ax.set_title(f"accuracy (test: {fit.test_accuracy:.3f})")
    ax.grid(True, alpha=0.3)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Counts: entry [t, p] is how many samples of class t were predicted as p."""
    counts = np.zeros((classes, classes), dtype=int)
    np.add.at(counts, (labels, predicted), 1)
    return counts


def _confusion(ax, module: ModuleType, params: dict, data) -> None:
    """The test split's confusion matrix, each cell's count written in it."""
    classes = max(2, data.outputs)
    counts = confusion_matrix(data.labels_test, predicted_labels(module.forward(params, data.X_test)), classes)
    ax.imshow(counts, cmap="Blues")
    dark = counts.max() / 2
    for (true, predicted), count in np.ndenumerate(counts):
        ax.text(predicted, true, str(count), ha="center", va="center", fontsize=8 if classes > 5 else 11,
                color="white" if count > dark else "black" if count else "0.7")  # zeros recede
    ax.set_xticks(range(classes))
    ax.set_yticks(range(classes))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion on the test split ({counts.sum()} samples)")


_MARKERS = "osD^v<>ph*"


def _decision_surface(ax, module: ModuleType, params: dict, data) -> None:
    """The network's output over the input plane, the 0.5 contour, and the training points."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    X = data.X_train
    low, high = X.min(axis=1) - 0.5, X.max(axis=1) + 0.5
    u, v = np.meshgrid(np.linspace(low[0], high[0], 200), np.linspace(low[1], high[1], 200))
    output = module.forward(params, np.vstack([u.ravel(), v.ravel()]))
    single = output.shape[0] == 1
    value = output[0] if single else output.argmax(axis=0)
    classes = max(2, data.outputs)
    cmap = plt.get_cmap("RdBu_r")
    shade = ax.contourf(u, v, value.reshape(u.shape), levels=20, cmap=cmap, alpha=0.8,
                        vmin=0, vmax=1 if single else classes - 1)
    handles = []
    if single:
        ax.contour(u, v, value.reshape(u.shape), levels=[0.5], colors="k", linewidths=1.2)
        handles.append(Line2D([], [], color="k", linewidth=1.2, label="output 0.5"))
    ax.figure.colorbar(shade, ax=ax, label="network output" if single else "predicted class")
    for label in range(classes):
        mine = data.labels_train == label
        if mine.any():
            # a shape per class and a white rim: a point stays visible on the surface of its own colour
            handles.append(ax.scatter(X[0, mine], X[1, mine], color=cmap(label / (classes - 1)),
                                      marker=_MARKERS[label % len(_MARKERS)], edgecolors="white", linewidths=2,
                                      s=150, zorder=3, label=f"target {label}"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=len(handles), frameon=False)
    ax.set_xlabel("input 1")
    ax.set_ylabel("input 2")
    ax.set_title("decision surface")
