"""Two generated modules of the same network, trained side by side on digits: B's epoch over A's.

    git show HEAD~1:generated/digits_64_128_10.py > /tmp/before.py
    python bench/compare.py /tmp/before.py generated/digits_64_128_10.py [--batch-size 32] [--repeats 15]

For a change to the generated code: both modules train from the same initial weights
(``init_params(0, "fan_in")``) on the digits training split, 20 epochs per run, no logging,
process CPU time, one BLAS thread, runs alternating A, B, A, B, … and medians compared. The
script stops if the two end at different weights (a speed change must not change the result).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

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
    args = parser.parse_args()
    modules = [load_module(path, f"compared_{index}") for index, path in enumerate((args.a, args.b))]
    data = load("digits")
    params = [module.init_params(0, "fan_in") for module in modules]
    times: list[list[float]] = [[], []]
    for _ in range(args.repeats):
        for module, weights, spent in zip(modules, params, times):
            start = time.process_time()
            module.train(weights, data.X_train, data.Y_train, EPOCHS, 0.1, log_every=None,
                         batch_size=args.batch_size, rng=0)
            spent.append(time.process_time() - start)
    if any(not np.array_equal(params[0][name], params[1][name]) for name in params[0]):
        raise SystemExit("the two modules end at different weights")
    a, b = (statistics.median(spent) / EPOCHS * 1e3 for spent in times)
    print(f"A {a:.3f} ms/epoch, B {b:.3f} ms/epoch, B/A {b / a:.3f} (batch {args.batch_size or 'whole'}, "
          f"medians of {args.repeats}, the same weights at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
