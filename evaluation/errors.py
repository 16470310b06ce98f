"""The evaluation package's exception: raised for bad input files and options, one line each."""

from __future__ import annotations

__all__ = ["ReportError"]


class ReportError(ValueError):
    """A user's mistake in a report's input (file, key, shape, option): the message names them."""
