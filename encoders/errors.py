"""The encoder package's exception: raised for bad inputs, reported by the CLI as one line."""

from __future__ import annotations

__all__ = ["EncoderError"]


class EncoderError(ValueError):
    """Inputs the encoder cannot take: wrong shapes, non-finite features, unknown options."""
