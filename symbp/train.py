"""Training a generated module on a data set: XOR, the document's, or one of scikit-learn's."""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType

import numpy as np

from .datasets import DEFAULTS, accuracy, xor

# The document's data, samples in columns, and the settings `symbp train` uses for it
# (datasets.DEFAULTS; the README gives the measurements behind them).
_XOR = xor()
XOR_X, XOR_Y = _XOR.X_train, _XOR.Y_train
DEFAULT_EPOCHS = DEFAULTS["xor"].epochs
DEFAULT_LEARNING_RATE = DEFAULTS["xor"].learning_rate
DEFAULT_SEED = 0


@dataclass(frozen=True)
class XorResult:
    """What one training run on XOR gave."""

    losses: list[float]
    predictions: np.ndarray  # shape (4,)

    @property
    def solved(self) -> bool:
        """All four predictions within 0.2 of their targets."""
        return bool(np.all(np.abs(self.predictions - XOR_Y.ravel()) < 0.2))


_LOADED: set[str] = set()  # names load_module registered, each free to be replaced by the next load


def load_module(path: str | Path, name: str | None = None) -> ModuleType:
    """Import a generated module from its file, registered in ``sys.modules`` under ``name``
    (by default the file's stem, the name ``import`` gives it): numba's on-disk cache refers to
    compiled functions by their module's name, so a cache written by ``import net`` loads here,
    and one written here loads there."""
    path = Path(path)
    name = name or path.stem
    if name in sys.modules and name not in _LOADED:
        raise ValueError(f"cannot import {str(path)!r} as {name!r}: a module of that name is already "
                         "loaded; rename the file")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    _LOADED.add(name)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def module_for(source: str) -> ModuleType:
    """Import generated source by writing it to a temporary file (so tracebacks show lines)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "symbp_generated.py"
        path.write_text(source, encoding="utf-8")
        module = load_module(path, "symbp_generated")
    # Unregistered, so numba does not try to cache into the deleted folder.
    del sys.modules["symbp_generated"]
    return module


def train_xor(module: ModuleType, epochs: int = DEFAULT_EPOCHS, learning_rate: float = DEFAULT_LEARNING_RATE,
              seed: int = DEFAULT_SEED, log_every: int = 1000) -> XorResult:
    """Train from ``init_params(seed)`` on XOR and predict its four points."""
    if tuple(module.LAYERS[:1] + module.LAYERS[-1:]) != (2, 1):
        raise ValueError(f"XOR needs 2 inputs and 1 output; this network has layers {module.LAYERS}")
    params = module.init_params(seed)
    losses = module.train(params, XOR_X, XOR_Y, epochs, learning_rate, log_every=log_every)
    return XorResult(losses, module.forward(params, XOR_X).ravel())


def success_rate(module: ModuleType, seeds: int, epochs: int = DEFAULT_EPOCHS,
                 learning_rate: float = DEFAULT_LEARNING_RATE) -> int:
    """From how many of the seeds 0 … seeds − 1 training solves XOR."""
    return sum(train_xor(module, epochs, learning_rate, seed, log_every=epochs).solved for seed in range(seeds))


@dataclass(frozen=True)
class Record:
    """The network after ``epoch`` epochs: its loss and accuracies, all from the same parameters."""

    epoch: int
    loss: float  # module.loss on the training set
    test_loss: float | None  # on the held-out split; None where there is none (XOR)
    train_accuracy: float
    test_accuracy: float


@dataclass
class Fit:
    """One training run on a data set: what it measured along the way, and the trained parameters."""

    params: dict
    history: list[Record]  # epoch 0, then every few epochs (about 200 records), ending at the last epoch
    seconds: float  # training steps only, not the measuring
    state: dict | None = None  # the optimizer's, for modules generated with one

    @property
    def final(self) -> Record:
        return self.history[-1]

    @property
    def final_loss(self) -> float:
        return self.final.loss

    @property
    def train_accuracy(self) -> float:
        return self.final.train_accuracy

    @property
    def test_accuracy(self) -> float:
        return self.final.test_accuracy


def fit(module: ModuleType, data, epochs: int, learning_rate: float, batch_size: int | None = None,
        seed: int = 0, init: str = "normal", log_every: int | None = None,
        progress: Callable[[Record], None] | None = None, dtype: str = "float64",
        devices: int | None = None) -> Fit:
    """Train ``module`` on ``data`` (a :class:`symbp.datasets.Dataset`) from ``init_params(seed, init, dtype)``.

    ``dtype`` float32 trains in single precision end to end: the parameters, the state and the
    data (converted once, here) are float32.

    ``devices`` (a JAX module's) splits every batch over that many devices.

    The network is measured at about 200 epochs (for the curves), each time loss and accuracies
    together; ``progress(record)`` gets about ten of those records (or one every ``log_every``
    epochs), always the first and the last.
    """
    import math
    import time

    if tuple(module.LAYERS[:1] + module.LAYERS[-1:]) != (data.inputs, data.outputs):
        raise ValueError(f"{data.name} needs {data.inputs} inputs and {data.outputs} outputs; "
                         f"this network has layers {'-'.join(map(str, module.LAYERS))}")
    if dtype != "float64" and not hasattr(module, "DTYPES"):
        raise ValueError(f"this module computes in float64 only; regenerate it for dtype {dtype}")
    if hasattr(module, "DTYPES"):
        params = module.init_params(seed, init, dtype)
    else:
        params = module.init_params(seed, init) if hasattr(module, "INITS") else module.init_params(seed)
    data = replace(data, **{name: getattr(data, name).astype(dtype, copy=False)
                            for name in ("X_train", "Y_train", "X_test", "Y_test")})
    state = module.init_state(params) if hasattr(module, "init_state") else None  # kept across the chunks below
    kept = {} if state is None else {"state": state}
    if devices is not None:
        if not hasattr(module, "jax"):
            raise ValueError("devices splits batches over JAX's devices; this module is not a JAX module")
        kept["devices"] = devices
        # zero epochs: the module checks the devices and how batches split before any progress line
        module.train(params, data.X_train, data.Y_train, 0, learning_rate, log_every=None,
                     batch_size=batch_size, rng=seed, **kept)
    rng = np.random.default_rng(seed)
    step = max(1, epochs // 200)
    report_every = log_every or step * max(1, (epochs // 10) // step)
    step = math.gcd(step, report_every)
    history: list[Record] = []
    seconds = 0.0

    def measure(epoch: int) -> None:
        loss = float(module.loss(params, data.X_train, data.Y_train))
        if not np.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss} at epoch {epoch}; lower the learning rate")
        record = Record(epoch, loss, float(module.loss(params, data.X_test, data.Y_test)) if data.held_out else None,
                        accuracy(module.forward(params, data.X_train), data.labels_train),
                        accuracy(module.forward(params, data.X_test), data.labels_test))
        history.append(record)
        if progress is not None and (epoch % report_every == 0 or epoch == epochs):
            progress(record)

    measure(0)
    for start in range(0, epochs, step):
        count = min(step, epochs - start)
        began = time.perf_counter()
        # log_every=None: measure() computes the loss, so train need not run a forward pass for it
        module.train(params, data.X_train, data.Y_train, count, learning_rate, log_every=None,
                     batch_size=batch_size, rng=rng, **kept)
        seconds += time.perf_counter() - began
        measure(start + count)
    return Fit(params, history, seconds, state)
