"""The detector card: every number of the parametrised detector, read from YAML and validated.

The card mirrors ``configs/detector/cms_like.yaml`` key for key. Loading checks that every
parameter is present, numeric and non-negative, and that binned parameters have one value per
|eta| bin, so a typo fails at once with the file and the key named.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from unfold.errors import UnfoldError

__all__ = [
    "DEFAULT_CARD",
    "BTagCard",
    "CaloResolution",
    "DetectorCard",
    "ElectronCard",
    "JetCard",
    "LeptonCard",
    "MetCard",
    "MuonCard",
    "load_detector_card",
]

DEFAULT_CARD = "cms_like.yaml"


@dataclass(frozen=True)
class NSCResolution:
    """sigma/pT = sqrt((N/pT)^2 + S^2/pT + C^2) in bins of |eta|."""

    eta_edges: list[float]
    noise: list[float]
    stochastic: list[float]
    constant: list[float]


@dataclass(frozen=True)
class TrackResolution:
    """sigma/pT = sqrt(a^2 + (b pT)^2) in bins of |eta| (Delphes MomentumSmearing form)."""

    eta_edges: list[float]
    a: list[float]
    b: list[float]


@dataclass(frozen=True)
class CaloResolution:
    """Calorimeter energy resolution in bins of |eta| (Delphes SimpleCalorimeter form):
    sigma_E = (a + b (|eta| - eta0)^2) * sqrt((C E)^2 + S^2 E + N^2)."""

    eta_edges: list[float]
    shape_a: list[float]
    shape_b: list[float]
    shape_eta0: list[float]
    noise: list[float]
    stochastic: list[float]
    constant: list[float]


@dataclass(frozen=True)
class Isolation:
    """Relative isolation: scalar pT sum of particles above ``particle_pt_min`` within
    ``delta_r_max``, over the lepton pT, must stay below ``pt_ratio_max``."""

    delta_r_max: float
    particle_pt_min: float
    pt_ratio_max: float


@dataclass(frozen=True)
class BinnedEfficiency:
    eta_edges: list[float]
    values: list[float]


@dataclass(frozen=True)
class JetCard:
    cluster_radius: float
    cluster_pt_min: float
    calorimeter_eta_max: float
    efficiency: float
    energy_scale: float
    resolution: NSCResolution
    eta_resolution: float
    phi_resolution: float
    pt_min: float
    eta_max: float
    max_jets: int


@dataclass(frozen=True)
class TanhEfficiency:
    """a * tanh(k pT) * c / (1 + d pT), the Delphes CMS b- and c-tag form."""

    a: float
    k: float
    c: float
    d: float


@dataclass(frozen=True)
class LinearEfficiency:
    """a + b pT, the Delphes CMS light-jet mistag form."""

    a: float
    b: float


@dataclass(frozen=True)
class BTagCard:
    b: TanhEfficiency
    c: TanhEfficiency
    light: LinearEfficiency
    label_radius: float
    label_hadron_pt_min: float
    eta_max: float


@dataclass(frozen=True)
class ElectronCard:
    """Electrons: energy from the ECAL (:attr:`CalorimetersCard.ecal`), direction from the track."""

    efficiency: BinnedEfficiency
    isolation: Isolation
    pt_min: float
    eta_max: float


@dataclass(frozen=True)
class MuonCard:
    """Muons: momentum from the tracker and muon system."""

    efficiency: BinnedEfficiency
    resolution: TrackResolution
    isolation: Isolation
    pt_min: float
    eta_max: float


LeptonCard = ElectronCard | MuonCard


@dataclass(frozen=True)
class CalorimetersCard:
    """ECAL and HCAL energy resolutions, used for electrons and the MET's soft term."""

    ecal: CaloResolution
    hcal: CaloResolution


@dataclass(frozen=True)
class MetCard:
    """Missing transverse momentum: jets above ``jet_pt_min``, the lepton, and the soft term of
    every other visible particle within ``soft_eta_max``, each measured by its subdetector."""

    jet_pt_min: float
    soft_eta_max: float
    track_eta_max: float
    tracks: TrackResolution


@dataclass(frozen=True)
class MatchingCard:
    delta_r_max: float


@dataclass(frozen=True)
class DetectorCard:
    """The whole detector: jets, b-tagging, calorimeters, electrons, muons, MET and truth matching."""

    jets: JetCard
    btag: BTagCard
    calorimeters: CalorimetersCard
    electrons: ElectronCard
    muons: MuonCard
    met: MetCard
    matching: MatchingCard
    path: str = "<memory>"
    text: str = ""

    @classmethod
    def from_yaml(cls, path: str | Path) -> DetectorCard:
        path = Path(path)
        if not path.is_file():
            raise UnfoldError(f"{path}: detector card not found")
        text = path.read_text()
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise UnfoldError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
        built = _build(cls, raw, "", str(path), skip={"path", "text"})
        _check_btag(built.btag, str(path))
        return dataclasses.replace(built, path=str(path), text=text)


def load_detector_card(path: str | Path | None = None) -> DetectorCard:
    """Read a detector card; ``None`` gives the packaged CMS-like default."""
    if path is None:
        with resources.as_file(resources.files("configs.detector") / DEFAULT_CARD) as default:
            return DetectorCard.from_yaml(default)
    return DetectorCard.from_yaml(path)


def _build(cls: type, raw: object, key: str, origin: str, skip: frozenset[str] | set[str] = frozenset()):
    """Build dataclass ``cls`` from a YAML mapping, naming ``origin`` and the key path on error."""
    where = f"{origin}: {key or 'top level'}"
    if not isinstance(raw, dict):
        raise UnfoldError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        sub = f"{key}.{field.name}" if key else field.name
        if field.name not in raw:
            raise UnfoldError(f"{origin}: missing parameter {sub!r}")
        values[field.name] = _value(hints[field.name], raw[field.name], sub, origin)
    _check_efficiencies(cls, values, key, origin)
    if "eta_edges" in values:
        edges = values["eta_edges"]
        if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
            raise UnfoldError(f"{origin}: {key}.eta_edges must rise strictly, got {edges}")
        for name, value in values.items():
            if name != "eta_edges" and isinstance(value, list) and len(value) != len(edges) - 1:
                raise UnfoldError(
                    f"{origin}: {key}.{name} has {len(value)} values; expected {len(edges) - 1}, one per |eta| bin"
                )
    return cls(**values)


def _check_efficiencies(cls: type, values: dict, key: str, origin: str) -> None:
    """Efficiencies are probabilities, at most 1 (every number is already refused below 0)."""
    if cls is BinnedEfficiency:
        found = {"values": values["values"]}
    else:
        found = {name: value for name, value in values.items() if name == "efficiency" and isinstance(value, float)}
    for name, value in found.items():
        for i, number in enumerate(value if isinstance(value, list) else [value]):
            if number > 1.0:
                where = f"{key}.{name}" + (f"[{i}]" if isinstance(value, list) else "")
                raise UnfoldError(f"{origin}: parameter {where!r} is a probability, got {number}; expected a value in [0, 1]")


# Jet pT up to half of sqrt(s) = 13 TeV, where the b-tag curves are checked to stay probabilities.
_BTAG_PT_GRID = np.geomspace(1.0, 6500.0, 4000)


def _check_btag(card: BTagCard, origin: str) -> None:
    """The b-tag efficiency curves (b, c, light) stay within [0, 1] over every reachable jet pT."""
    # The detector's own formula; imported here because the detector module imports this one.
    from unfold.generation.detector import btag_efficiency
    from unfold.generation.particle_level import BOTTOM, CHARM

    for name, flavour in (("b", BOTTOM), ("c", CHARM), ("light", 0)):
        curve = btag_efficiency(_BTAG_PT_GRID, np.full(_BTAG_PT_GRID.shape, flavour), card)
        if curve.max() > 1.0:
            at = _BTAG_PT_GRID[np.argmax(curve)]
            raise UnfoldError(f"{origin}: btag.{name} gives an efficiency of {curve.max():.3g} at pT = {at:.0f} GeV; "
                              "expected a probability in [0, 1] up to 6.5 TeV")


def _value(hint: object, raw: object, key: str, origin: str):
    if dataclasses.is_dataclass(hint):
        return _build(hint, raw, key, origin)
    if typing.get_origin(hint) is list:
        if not isinstance(raw, list) or not raw:
            raise UnfoldError(f"{origin}: parameter {key!r} must be a non-empty list of numbers")
        return [_number(float, x, f"{key}[{i}]", origin) for i, x in enumerate(raw)]
    return _number(hint, raw, key, origin)


def _number(kind: object, raw: object, key: str, origin: str) -> float | int:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise UnfoldError(f"{origin}: parameter {key!r} must be a number, got {raw!r}")
    if raw < 0:
        raise UnfoldError(f"{origin}: parameter {key!r} must be non-negative, got {raw}")
    if kind is int and int(raw) != raw:
        raise UnfoldError(f"{origin}: parameter {key!r} must be an integer, got {raw}")
    return int(raw) if kind is int else float(raw)
