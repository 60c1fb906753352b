"""Two generated modules of the same network, trained side by side on digits: B's epoch over A's.

    git show HEAD~1:generated/digits_64_128_10.py > /tmp/before.py
    python bench/compare.py /tmp/before.py generated/digits_64_128_10.py [--batch-size 32] [--repeats 15]
        [--dtype float32]

For a change to the generated code: both modules train from the same initial weights
(``init_params(0, "fan_in", dtype)``) on the digits training split, 20 epochs per run, no
logging, process CPU time, one BLAS thread, runs alternating A, B, A, B, … and medians
compared. The script stops if the two end at different weights: more than 1e-12 apart in
float64 and 1e-5 in float32, as a change may round differently (a bias added inside the
product instead of after it, say).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import one_thread  # noqa: F401  (first: one thread for every library, before they load)

# isort: split

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from symbp.datasets import load
from symbp.train import load_module

EPOCHS = 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="the module before")
    parser.add_argument("b", help="the module after")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    args = parser.parse_args()
    # Copies under names of their own: numba's cache beside a module names the module that wrote it.
    folder = Path(tempfile.mkdtemp())
    modules = []
    for label, path in (("a", args.a), ("b", args.b)):
        shutil.copyfile(path, folder / f"compared_{label}.py")
        modules.append(load_module(folder / f"compared_{label}.py"))
    data = load("digits")
    params = [module.init_params(0, "fan_in", args.dtype) for module in modules]
    X, Y = data.X_train.astype(args.dtype), data.Y_train.astype(args.dtype)
    for module, weights in zip(modules, params):  # a compiled module compiles here, not in a timed run
        module.train({name: value.copy() for name, value in weights.items()}, X, Y, 1, 0.1, log_every=None,
                     batch_size=args.batch_size, rng=0)
    times: list[list[float]] = [[], []]
    for _ in range(args.repeats):
        for module, weights, spent in zip(modules, params, times):
            start = time.process_time()
            module.train(weights, X, Y, EPOCHS, 0.1, log_every=None,
                         batch_size=args.batch_size, rng=0)
            spent.append(time.process_time() - start)
    difference = max(float(np.max(np.abs(params[0][name] - params[1][name]))) for name in params[0])
    if difference > (1e-12 if args.dtype == "float64" else 1e-5):
        raise SystemExit(f"the two modules end at weights {difference:.3g} apart")
    a, b = (statistics.median(spent) / EPOCHS * 1e3 for spent in times)
    shutil.rmtree(folder)
    print(f"A {a:.3f} ms/epoch, B {b:.3f} ms/epoch, B/A {b / a:.3f} (batch {args.batch_size or 'whole'}, "
          f"{args.dtype}, medians of {args.repeats}, weights {difference:.2g} apart at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
