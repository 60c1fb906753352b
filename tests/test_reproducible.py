"""Reproducible output: the same bytes from every process, a numpy-only module that imports fast,
and a symbp installed by pip into a fresh virtual environment that works away from the source tree.

The numpy-only import check itself lives in test_cli.py (test_generate_writes_a_numpy_only_module);
here only what it does not cover: the committed module, timing, and no module at all beyond numpy's.
"""

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, XOR_MODULE, XOR_OPTIONS

NETWORKS = {
    "2-2-1-sigmoid-half_se": XOR_OPTIONS,
    "3-4-2-tanh,sigmoid-bce-mean": ["--layers", "3-4-2", "--activation", "tanh,sigmoid", "--loss", "bce",
                                    "--reduction", "mean"],
    "numba-3-4-3-relu,softmax-half_se-mean": ["--layers", "3-4-3", "--activation", "relu,softmax", "--loss",
                                              "half_se", "--reduction", "mean", "--backend", "numba"],
    "jax-3-4-2-tanh,sigmoid-bce-adam": ["--layers", "3-4-2", "--activation", "tanh,sigmoid", "--loss", "bce",
                                        "--l2", "0.01", "--optimizer", "adam", "--backend", "jax"],
}
HASH_SEEDS = ("0", "1", "12345", "random")
TIMEOUT = 300


# One process per hash seed generates every network (the command's main, as python -m symbp calls it).
GENERATE_ALL = """
import json, sys
from symbp.cli import main
networks = json.loads(sys.argv[1])
sys.exit(max(main(["generate", *options, "-o", name + ".py"]) for name, options in networks.items()))
"""


def test_generate_is_byte_identical_across_processes_and_hash_seeds(tmp_path):
    # The same environment as test_cli.run (PYTHONPATH = the source tree), one process per hash seed, side by side.
    folders = {seed: tmp_path / f"seed_{seed}" for seed in HASH_SEEDS}
    processes = {}
    for seed, folder in folders.items():
        folder.mkdir()
        processes[seed] = subprocess.Popen([sys.executable, "-c", GENERATE_ALL, json.dumps(NETWORKS)], cwd=folder,
                                           env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": seed},
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for seed, process in processes.items():
            _, stderr = process.communicate(timeout=TIMEOUT)
            assert process.returncode == 0, f"PYTHONHASHSEED={seed}: {stderr}"
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    for name, options in NETWORKS.items():
        contents = {seed: (folder / f"{name}.py").read_bytes() for seed, folder in folders.items()}
        reference = contents[HASH_SEEDS[0]]
        assert reference.startswith(f'"""Backpropagation for the network {" ".join(options)}.'.encode())
        differing = [seed for seed, content in contents.items() if content != reference]
        assert differing == [], f"{name}: PYTHONHASHSEED {differing} gave different bytes than {HASH_SEEDS[0]}"


IMPORT_PROBE = """
import importlib.util, json, sys, time
import numpy
before = set(sys.modules)
start = time.perf_counter()
spec = importlib.util.spec_from_file_location("xor_2_2_1", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "new_modules": sorted(set(sys.modules) - before),
                  "has_forward": callable(getattr(module, "forward", None))}))
"""


def test_committed_module_imports_only_numpy_and_fast(tmp_path):
    # A fresh process; no bytecode is written (none into generated/), so the time includes compiling the source.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([sys.executable, "-c", IMPORT_PROBE, str(XOR_MODULE)], capture_output=True, text=True,
                            cwd=tmp_path, env=env, check=False, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["has_forward"]
    assert [name for name in report["new_modules"] if name.split(".")[0] != "numpy"] == []
    assert report["seconds"] < 0.2, f"importing {XOR_MODULE.name} took {report['seconds']:.3f} s"


# From a fresh virtual environment. It reuses the machine's numpy, sympy, jinja2, setuptools, wheel and pip
# (--system-site-packages, --without-pip) and installs offline (--no-index --no-deps --no-build-isolation):
# a few seconds in all, so it runs with the rest of the suite.


def _venv_executable(venv: Path, name: str) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / name


def _venv_run(command: list, cwd: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, cwd=cwd, env=env,
                          check=False, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A new virtual environment with symbp pip-installed from the source tree."""
    venv = tmp_path_factory.mktemp("venv")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    created = _venv_run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], elsewhere)
    assert created.returncode == 0, created.stderr
    python = _venv_executable(venv, "python")
    if sys.prefix != sys.base_prefix:
        # Run from inside a virtual environment: --system-site-packages reaches only the base interpreter's
        # packages, so also reach this environment's (after the new venv's own site-packages).
        purelib = _venv_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], elsewhere)
        assert purelib.returncode == 0, purelib.stderr
        Path(purelib.stdout.strip(), "outer_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    if _venv_run([python, "-m", "pip", "--version"], elsewhere).returncode != 0:
        ensured = _venv_run([python, "-m", "ensurepip", "--default-pip"], elsewhere)
        assert ensured.returncode == 0, ensured.stderr
    installed = _venv_run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-build-isolation",
                           ROOT], elsewhere)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


def test_venv_symbp_is_the_installed_copy_with_its_templates(venv, tmp_path):
    probe = ("import json, symbp, symbp.templating as c; "
             "print(json.dumps([symbp.__file__, str(c.templates_dir())]))")
    result = _venv_run([_venv_executable(venv, "python"), "-c", probe], tmp_path)
    assert result.returncode == 0, result.stderr
    package, templates = (Path(p).resolve() for p in json.loads(result.stdout))
    assert package.is_relative_to(venv.resolve()), f"the venv imports symbp from {package}, not its own copy"
    assert templates.is_relative_to(venv.resolve())
    assert (templates / "numpy_module.py.j2").is_file()
    katex = [path.relative_to(ROOT / "templates") for path in (ROOT / "templates" / "katex").rglob("*") if path.is_file()]
    assert len(katex) > 20 and all((templates / name).is_file() for name in katex)  # what an HTML page inlines


NET_PROBE = """
import importlib.util, json, sys
import numpy as np
spec = importlib.util.spec_from_file_location("net", sys.argv[1])
net = importlib.util.module_from_spec(spec)
spec.loader.exec_module(net)
params = net.init_params(0)
again = net.init_params(0)
X = np.array([[0.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0]])
out = net.forward(params, X)
a1 = np.tanh(params["W1"] @ X + params["b1"])
expected = 1 / (1 + np.exp(-(params["W2"] @ a1 + params["b2"])))
print(json.dumps({
    "shapes": {name: list(value.shape) for name, value in params.items()},
    "same_seed_same_params": all(np.array_equal(params[n], again[n]) for n in params),
    "out_shape": list(out.shape),
    "max_error": float(np.max(np.abs(out - expected))),
    "heavy": sorted(n for n in ("sympy", "jinja2", "symbp") if n in sys.modules),
}))
"""


def test_venv_symbp_generate_works_outside_the_source_tree(venv, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    options = ["--layers", "2-3-1", "--activation", "tanh,sigmoid", "--loss", "half_se"]
    result = _venv_run([_venv_executable(venv, "symbp"), "generate", *options, "-o", "out.py"], work)
    assert result.returncode == 0, result.stderr
    out = work / "out.py"
    assert out.is_file()
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == f'"""Backpropagation for the network {" ".join(options)}.'
    assert lines[2].startswith("Generated by symbp ")
    assert lines[2].endswith(f" from: symbp generate {' '.join(options)}")

    imported = _venv_run([_venv_executable(venv, "python"), "-c", NET_PROBE, out], work)
    assert imported.returncode == 0, imported.stderr
    report = json.loads(imported.stdout)
    assert report["shapes"] == {"W1": [3, 2], "b1": [3, 1], "W2": [1, 3], "b2": [1, 1]}
    assert report["same_seed_same_params"]
    assert report["out_shape"] == [1, 4]
    assert report["max_error"] < 1e-12
    assert report["heavy"] == []


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    import os

    from symbp import files

    target = tmp_path / "net.py"
    target.write_text("old contents\n")

    def broken_replace(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        files.write_atomically(target, "new contents\n")
    assert target.read_text() == "old contents\n"
    assert [path.name for path in tmp_path.iterdir()] == ["net.py"]  # no temporary file left


def test_every_function_of_a_generated_module_has_a_docstring_and_type_hints():
    import ast

    tree = ast.parse(XOR_MODULE.read_text(encoding="utf-8"))
    functions = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]
    assert len(functions) > 15
    for function in functions:
        assert ast.get_docstring(function), function.name
        assert function.returns is not None, function.name
        arguments = [arg for arg in function.args.args if arg.arg != "self"]
        assert all(arg.annotation is not None for arg in arguments), function.name
