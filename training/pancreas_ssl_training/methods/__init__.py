"""The self-supervised and auxiliary training methods; each is one module with one Method class."""

from .base import Method, build_methods

__all__ = ["Method", "build_methods"]
