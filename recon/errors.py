"""The recon package's exception: raised for bad inputs, reported by the CLI as one line."""

from __future__ import annotations

__all__ = ["ReconError"]


class ReconError(ValueError):
    """Inputs or options the assignment model cannot take: wrong target shapes, unknown options."""
