"""The Python API, mirroring the command line."""

from __future__ import annotations

from pathlib import Path

from .codegen import BACKENDS, GENERATED_MARKER, render_module, write_atomically
from .derive import Derivation, derive_spec
from .spec import SpecError, make_spec


def derive(layers: str | tuple[int, ...] = "2-2-1", activation: str = "sigmoid", loss: str = "half_se",
           reduction: str = "sum") -> Derivation:
    """Derive backpropagation for a network; ``.latex()`` prints it, ``.verify()`` proves it."""
    return derive_spec(make_spec(layers, activation, loss, reduction))


def generate(layers: str | tuple[int, ...] = "2-2-1", activation: str = "sigmoid", loss: str = "half_se",
             reduction: str = "sum", output: str | Path | None = None, force: bool = False,
             backend: str = "numpy") -> str:
    """The training module's source; written to ``output`` when given.

    ``backend="numba"`` adds a training loop that numba compiles (numba is then needed to import it).

    An existing file that symbp did not generate is only replaced with ``force=True``.
    """
    if backend not in BACKENDS:
        raise SpecError(f"unknown backend {backend!r}: choose numpy or numba")
    source = render_module(derive(layers, activation, loss, reduction), backend)
    if output is not None:
        path = Path(output)
        if path.is_dir():
            raise SpecError(f"cannot write {str(path)!r}: it is a folder; give a file name such as net.py")
        if not path.parent.is_dir():
            raise SpecError(f"cannot write {str(path)!r}: folder {str(path.parent)!r} does not exist")
        if path.exists() and not force and not _is_generated(path):
            raise SpecError(f"refusing to overwrite {str(path)!r}: symbp did not generate it (use --force)")
        try:
            write_atomically(path, source)
        except OSError as error:
            raise SpecError(f"cannot write {str(path)!r}: {error.strerror or error}") from None
    return source


def _is_generated(path: Path) -> bool:
    try:
        head = path.read_text(encoding="utf-8", errors="replace")[:2000]
    except OSError:
        return False
    return GENERATED_MARKER in head
