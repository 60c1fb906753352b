"""symbp: backpropagation derived by SymPy, printed as LaTeX, generated as NumPy code."""

__version__ = "0.1.0"

from .api import derive, generate

__all__ = ["__version__", "derive", "generate"]
