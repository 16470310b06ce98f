"""The project's exceptions: raised by the library, reported by the CLI as one line."""

from __future__ import annotations

__all__ = ["UnfoldError"]


class UnfoldError(ValueError):
    """A user's mistake (bad file, key, shape, option): the message names file, key and expectation."""
