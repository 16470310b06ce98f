"""The description of one detector input, as a SPANet event file declares it under INPUTS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from encoders.errors import EncoderError

__all__ = ["InputSource", "Normalization", "SourceKind"]

Normalization = Literal["log_normalize", "normalize", "none"]
SourceKind = Literal["SEQUENTIAL", "GLOBAL"]


@dataclass(frozen=True)
class InputSource:
    """One detector input: a set of objects (SEQUENTIAL) or one event-level vector (GLOBAL).

    Attributes:
        name: the source name (``INPUTS/<name>`` in the data file).
        kind: ``"SEQUENTIAL"`` for a padded set of objects (E, N_s, F_s) with a mask, or
            ``"GLOBAL"`` for one vector per event (E, F_g).
        features: feature names in event-file order (the order of the last tensor axis).
        normalizations: one per feature: ``"log_normalize"`` (log(1 + x), then standardise),
            ``"normalize"`` (standardise) or ``"none"``.
    """

    name: str
    kind: SourceKind
    features: tuple[str, ...]
    normalizations: tuple[Normalization, ...]

    def __post_init__(self) -> None:
        if self.kind not in get_args(SourceKind):
            raise EncoderError(
                f"source {self.name!r}: kind {self.kind!r}; expected one of {get_args(SourceKind)}"
            )
        if not self.features:
            raise EncoderError(f"source {self.name!r}: needs at least one feature")
        if len(self.features) != len(self.normalizations):
            raise EncoderError(
                f"source {self.name!r}: {len(self.features)} features but {len(self.normalizations)} normalisations"
            )
        for feature, normalization in zip(self.features, self.normalizations, strict=True):
            if normalization not in get_args(Normalization):
                raise EncoderError(
                    f"source {self.name!r}, feature {feature!r}: normalisation {normalization!r}; "
                    f"expected one of {get_args(Normalization)}"
                )
