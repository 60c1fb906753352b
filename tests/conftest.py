import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

XOR_MODULE = ROOT / "generated" / "xor_2_2_1.py"
XOR_OPTIONS = ["--layers", "2-2-1", "--activation", "sigmoid", "--loss", "half_se"]


@pytest.fixture(scope="session")
def xor_module():
    from symbp.train import load_module

    return load_module(XOR_MODULE, "xor_2_2_1")
