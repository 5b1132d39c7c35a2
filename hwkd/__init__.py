"""hwkd: find a small, fast student network for an edge device and distill a teacher into it."""

from hwkd.errors import HwkdError

__version__ = "0.1.0"
__all__ = ["HwkdError", "__version__"]
