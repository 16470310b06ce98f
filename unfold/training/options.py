"""Constructor keywords resolved to complete values, so checkpoints never depend on defaults."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from unfold.errors import UnfoldError

__all__ = ["RENAMED", "complete_options", "saved_hyperparameters"]

# Keywords renamed when widths, depths and heads got one vocabulary: old -> new.
RENAMED = {
    "hidden_width": "width", "hidden_dim": "width", "condition_dim": "condition_width", "latent_dim": "latent_width",
    "num_layers": "depth", "num_heads": "heads", "vae_layers": "vae_depth", "multiplicity_layers": "multiplicity_depth",
}


def complete_options(
    constructor: Callable[..., Any], options: Mapping[str, Any] | None, *, skip: Collection[str] = (), where: str
) -> dict[str, Any]:
    """Every keyword of ``constructor`` (except ``skip``, which the caller supplies) with its
    value from ``options`` or else the constructor's current default.

    Storing the result instead of ``options`` makes a saved model independent of later changes
    to the defaults. Raises UnfoldError naming ``where`` for a key the constructor lacks.
    """
    parameters = {
        name: parameter
        for name, parameter in inspect.signature(constructor).parameters.items()
        if name not in skip and name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    }
    options = dict(options or {})
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        raise UnfoldError(f"{where}: unknown option(s) {unknown}; expected some of {sorted(parameters)}")
    missing = [name for name, p in parameters.items() if name not in options and p.default is inspect.Parameter.empty]
    if missing:
        raise UnfoldError(f"{where}: option(s) {missing} have no default and must be given")
    return {name: options.get(name, parameter.default) for name, parameter in parameters.items()}


def saved_hyperparameters(checkpoint: str | Path) -> dict[str, Any]:
    """The constructor keywords a Lightning checkpoint was saved with."""
    import torch

    return dict(torch.load(checkpoint, map_location="cpu", weights_only=False).get("hyper_parameters", {}))
