import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# numba compiles the tests' kernels at LLVM's level 0: the same IEEE arithmetic in the same
# order (the kernels carry no fast-math flags, so no level may reorder it), in about two thirds
# of the time. tests/test_numba_backend.py compiles one kernel at numba's default level 3 in a
# child process, checks it vectorizes, and that it trains to the NumPy module's numbers.
os.environ.setdefault("NUMBA_OPT", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

XOR_MODULE = ROOT / "generated" / "xor_2_2_1.py"
XOR_OPTIONS = ["--layers", "2-2-1", "--activation", "sigmoid", "--loss", "half_se"]


@pytest.fixture(scope="session")
def xor_module():
    from symbp.train import load_module

    return load_module(XOR_MODULE, "xor_2_2_1")
