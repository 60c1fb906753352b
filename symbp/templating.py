"""The Jinja2 environment over templates/: the prose of documents and the layout of modules."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jinja2


def templates_dir() -> Path:
    """templates/ beside the package in a source tree, or symbp/templates in a wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "numpy_module.py.j2").is_file():
            return candidate
    raise FileNotFoundError("symbp's templates are missing from this installation")


@cache
def environment() -> jinja2.Environment:
    """Strict about undefined names, no autoescaping (the output is code and LaTeX, not HTML).

    One environment per process: it keeps each template compiled after its first use, where a
    fresh environment per call compiled them again: over half the time of generating a module
    a second time."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
