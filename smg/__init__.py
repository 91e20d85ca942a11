"""smg: a high-performance LLM inference gateway on uvloop with Cython hot paths."""
from smg._version import __version__

__all__ = ["__version__"]
