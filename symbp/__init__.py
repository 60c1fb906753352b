"""symbp: backpropagation derived by SymPy, printed as LaTeX, generated as NumPy code."""

from .api import derive, generate
from .version import __version__

__all__ = ["__version__", "derive", "generate"]
