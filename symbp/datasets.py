"""The data sets ``symbp train`` knows, with the settings it trains each with by default.

XOR is the document's four points, used as they are. ``digits`` (8×8 images of 0–9) and
``breast_cancer`` (30 measurements, benign or malignant) ship inside scikit-learn, an
optional extra; they are split into a stratified held-out test set and standardized with
the training split's mean and spread. Samples are columns, as in the generated modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spec import SpecError

TEST_FRACTION = 0.25


@dataclass(frozen=True)
class Defaults:
    """The network and training settings ``symbp train`` uses for a data set unless told otherwise."""

    layers: str
    activation: str
    loss: str
    reduction: str
    epochs: int
    learning_rate: float
    batch_size: int | None  # None: the whole training set per step
    init: str


# Measured in the README ("Training on data sets"): XOR solved from 100 of 100 seeds; digits and
# breast_cancer above 0.95 test accuracy in well under a second of training.
DEFAULTS = {
    "xor": Defaults("2-4-1", "sigmoid", "half_se", "sum", 10_000, 1.0, None, "normal"),
    "digits": Defaults("64-64-10", "tanh,softmax", "cross_entropy", "mean", 30, 0.1, 32, "fan_in"),
    "breast_cancer": Defaults("30-16-1", "tanh,sigmoid", "bce", "mean", 50, 0.05, 32, "fan_in"),
}
DATASETS = tuple(DEFAULTS)


@dataclass(frozen=True)
class Dataset:
    """A data set split for training and testing, samples in columns."""

    name: str
    X_train: np.ndarray
    Y_train: np.ndarray
    labels_train: np.ndarray
    X_test: np.ndarray
    Y_test: np.ndarray
    labels_test: np.ndarray
    input_mean: np.ndarray  # (inputs, 1): X = (raw − mean) / scale
    input_scale: np.ndarray
    held_out: bool = True  # False: the test set is the training set (XOR's four points)

    @property
    def inputs(self) -> int:
        return self.X_train.shape[0]

    @property
    def outputs(self) -> int:
        return self.Y_train.shape[0]


def xor() -> Dataset:
    """The document's four points; training and test set are the same four."""
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float).T
    labels = np.array([0, 1, 1, 0])
    Y = labels[None, :].astype(float)
    return Dataset("xor", X, Y, labels, X, Y, labels, np.zeros((2, 1)), np.ones((2, 1)), held_out=False)


def load(name: str, seed: int = 0) -> Dataset:
    """The data set ``name``, split with ``seed`` (XOR is not split)."""
    if name == "xor":
        return xor()
    if name not in DEFAULTS:
        raise SpecError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    try:
        from sklearn import datasets
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise SpecError(f"the {name} dataset ships with scikit-learn: pip install 'symbp[datasets]'") from None
    bunch = datasets.load_digits() if name == "digits" else datasets.load_breast_cancer()
    raw_train, raw_test, labels_train, labels_test = train_test_split(
        bunch.data, bunch.target, test_size=TEST_FRACTION, stratify=bunch.target, random_state=seed)
    mean = raw_train.mean(axis=0)
    scale = raw_train.std(axis=0)
    scale[scale == 0] = 1.0  # digits has pixels that are always blank
    classes = int(bunch.target.max()) + 1

    def targets(labels: np.ndarray) -> np.ndarray:
        if classes == 2:  # one sigmoid output: the probability of class 1
            return labels[None, :].astype(float)
        return np.eye(classes)[labels].T.copy()

    return Dataset(name, ((raw_train - mean) / scale).T.copy(), targets(labels_train), labels_train,
                   ((raw_test - mean) / scale).T.copy(), targets(labels_test), labels_test,
                   mean[:, None], scale[:, None])


def predicted_labels(output: np.ndarray) -> np.ndarray:
    """Class labels from a network's output: above 0.5 for one output unit, else the largest."""
    output = np.asarray(output)  # a JAX module's output too
    return (output[0] > 0.5).astype(int) if output.shape[0] == 1 else output.argmax(axis=0)


def accuracy(output: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of samples whose predicted label is right."""
    return float(np.mean(predicted_labels(output) == labels))
