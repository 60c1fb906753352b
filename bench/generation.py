"""Generation time against depth and width: derive + render in a fresh process, medians of runs.

    python bench/generation.py [--repeats 3]

Each network is generated in its own process (SymPy caches are per process), timing
``symbp.generate`` only, not the interpreter's start-up. Widths enter the derivation as
matrix shapes, so the time should not grow with the width.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import json, sys, time; sys.path.insert(0, sys.argv[1]); import symbp; "
    "t = time.perf_counter(); symbp.generate(sys.argv[2], 'tanh,' * (sys.argv[2].count('-') - 1) + 'sigmoid'); "
    "print(json.dumps(time.perf_counter() - t))"
)


def seconds(layers: str, repeats: int) -> float:
    runs = [json.loads(subprocess.run([sys.executable, "-c", PROBE, str(ROOT), layers], capture_output=True,
                                      text=True, check=True).stdout) for _ in range(repeats)]
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    base = seconds("2-2-1", args.repeats)
    print(f"baseline 2-2-1 (tanh hidden, sigmoid output): {base * 1000:.0f} ms")
    print("| depth | width | ms | × 2-2-1 |")
    print("|---:|---:|---:|---:|")
    for depth in (2, 4, 10):
        for width in (2, 64, 512, 1024):
            layers = "-".join([str(width)] * depth + ["1"])
            t = seconds(layers, args.repeats)
            print(f"| {depth} | {width} | {t * 1000:.0f} | {t / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
