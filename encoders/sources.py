"""The description of one detector input, as a SPANet event file declares it under INPUTS, and
the one reading of its declared features as kinematics (pt, eta, phi, mass)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

import numpy as np

from encoders.errors import EncoderError

__all__ = ["InputSource", "Kinematics", "Normalization", "SourceKind", "declared_azimuth", "declared_kinematics"]

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


class Kinematics(NamedTuple):
    """pt [GeV], eta, phi [rad] and mass [GeV] of a source's objects, each of the objects' shape."""

    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    mass: np.ndarray


def declared_azimuth(source: InputSource, values: np.ndarray) -> np.ndarray | None:
    """The azimuth (...) of raw features (..., F): the declared ``phi``, else atan2(``sin_phi``, ``cos_phi``)
    (SPANet's examples declare either); None when the source declares neither."""
    index = {feature: i for i, feature in enumerate(source.features)}
    if "phi" in index:
        return values[..., index["phi"]]
    if {"sin_phi", "cos_phi"} <= index.keys():
        return np.arctan2(values[..., index["sin_phi"]], values[..., index["cos_phi"]])
    return None


def declared_kinematics(source: InputSource, values: np.ndarray) -> Kinematics | None:
    """The kinematics of a source's raw features (..., F) as its event file names them.

    ``pt``, ``eta``, the azimuth (:func:`declared_azimuth`) and ``mass`` (zero, massless objects,
    when not declared). The normalisation flags do not enter: an event file's features hold raw
    values, and ``log_normalize`` is applied when a model reads them (SPANet arXiv 2309.01886).
    None when the source declares no pt, eta or azimuth.
    """
    index = {feature: i for i, feature in enumerate(source.features)}
    phi = declared_azimuth(source, values)
    if phi is None or not {"pt", "eta"} <= index.keys():
        return None
    mass = values[..., index["mass"]] if "mass" in index else np.zeros_like(phi)
    return Kinematics(values[..., index["pt"]], values[..., index["eta"]], phi, mass)
