import contextlib
import importlib
import importlib.util
import io
import os
import subprocess
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

# CI installs every extra and the test-only oracle: there a missing package fails the tests that need
# it; elsewhere they are skipped, and the rest of their file still runs.
CI = bool(os.environ.get("CI"))


def installed(package: str) -> bool:
    """Whether the tests that need ``package`` run here (always under CI)."""
    return CI or importlib.util.find_spec(package) is not None


def needs(package: str, extra: str):
    """``package``, imported, for a test that needs it: the test is skipped where it is missing,
    but not under CI, where the import error fails it."""
    if CI:
        return importlib.import_module(package)
    return pytest.importorskip(package, reason=f"needs {package}: {extra}")


requires_torch = pytest.mark.skipif(
    not installed("torch"), reason="PyTorch is the test-only oracle: pip install torch==2.13.0 (CI installs it)")

XOR_MODULE = ROOT / "generated" / "xor_2_2_1.py"
XOR_OPTIONS = ["--layers", "2-2-1", "--activation", "sigmoid", "--loss", "half_se"]


@pytest.fixture(scope="session")
def xor_module():
    from symbp.train import load_module

    return load_module(XOR_MODULE, "xor_2_2_1")


def run_main(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``symbp ARGS`` in this process: ``main``, as ``python -m symbp`` calls it, from cwd, with
    its exit status and output. tests/test_cli.py and tests/test_safety.py run the command as a
    process of its own."""
    from symbp.cli import main

    out, err, before = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd or ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
