"""One module per ``unfold`` subcommand; each exposes ``add_parser(subparsers)``."""

from __future__ import annotations

import argparse

from jsonargparse.typing import NonNegativeInt, PositiveInt

__all__ = ["DefaultsHelpFormatter", "comma_list", "non_negative_int", "positive_int"]


def positive_int(text: str) -> int:
    """argparse type: an integer above zero (event counts, draws, steps, batch sizes)."""
    try:
        return PositiveInt(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected an integer > 0") from None


def non_negative_int(text: str) -> int:
    """argparse type: an integer from zero up (seeds)."""
    try:
        return NonNegativeInt(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected an integer >= 0") from None


def comma_list(text: str) -> list[str]:
    """argparse type: comma-separated names (labels, features, parameters), blanks dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` once: not when the help text already states the default, nor
    when the default is None (the help then says what happens without the option)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default is None:
            return text
        return super()._get_help_string(action)
