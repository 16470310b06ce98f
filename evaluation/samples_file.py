"""Read a samples file (truth, n unfoldings per event, optional detector reference) and check it.

Layout (written by ``unfold sample``; E events, n draws, M particle slots)::

    PARTONS/<parton>/<feature>                 (E,)      truth: pt [GeV], eta, phi [rad], mass [GeV]
    SAMPLES/PARTONS/<parton>/<feature>         (E, n)    the unfoldings
    REFERENCE/PARTONS/<parton>/<feature>       (E,)      detector level, every event reconstructed
                                                         without truth (NaN where unassigned)
    MATCHED/PARTONS/<parton>/<feature>         (E,)      truth-matched detector object, NaN if none
    PARTICLES/<collection>/<feature>, MASK     (E, M)    truth objects (jets, lepton, ...)
    PARTICLES/<global>/<feature>               (E,)      global collections (met) have no MASK
    SAMPLES/PARTICLES/<collection>/<feature>   (E, n, M) with MASK (E, n, M); globals (E, n)
    REFERENCE/PARTICLES/...                    as the truth (detector-level objects)
    attrs["composites"]                        JSON {derived object: [constituent partons]}
    attrs["reference"], ["reference_events"]   how the parton reference was reconstructed, on
                                               how many events (all partons assigned)
    attrs["sqrt_s_gev"]                        collision energy, for the plots' label

Non-kinematic features (pdgid, charge) are skipped; ``btag`` is kept for b-jet counting.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from evaluation.errors import ReportError

__all__ = ["Collection", "ParticleLevel", "PartonLevel", "SamplesFile", "read_samples_file"]

SKIPPED_FEATURES = frozenset({"pdgid", "charge", "MASK"})


@dataclass(frozen=True)
class PartonLevel:
    """Parton-level truth, draws and reference: ``[parton][feature]`` arrays.

    Attributes:
        truth: (E,) per feature.
        draws: (E, n) per feature.
        reference: (E,) per feature, every event reconstructed without truth (NaN where a
            parton was left unassigned); empty if the file has none.
        matched: (E,) per feature, the truth-matched detector object (NaN where unmatched);
            empty if the file has none.
    """

    truth: Mapping[str, Mapping[str, np.ndarray]]
    draws: Mapping[str, Mapping[str, np.ndarray]]
    reference: Mapping[str, Mapping[str, np.ndarray]]
    matched: Mapping[str, Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class Collection:
    """One particle collection at one level.

    Attributes:
        features: (E, M) (truth, reference) or (E, n, M) (draws) per feature; global collections
            drop the M axis.
        mask: same shape as the features, True where a real object sits; None for globals.
    """

    features: Mapping[str, np.ndarray]
    mask: np.ndarray | None


@dataclass(frozen=True)
class ParticleLevel:
    """Particle-level truth, draws and optional reference, keyed by collection name."""

    truth: Mapping[str, Collection]
    draws: Mapping[str, Collection]
    reference: Mapping[str, Collection]


@dataclass(frozen=True)
class SamplesFile:
    """A checked samples file: E events, n draws, one or both levels.

    Attributes:
        path: where it was read from.
        n_events: E.
        n_draws: n.
        partons: the parton level, or None.
        particles: the particle level, or None.
        composites: derived object -> its constituent partons, e.g. t_had -> (b_had, q1, q2).
        attrs: every root attribute as text (process, seed, model, sampler, steps, ...).
        weights: (E,) event weights (``WEIGHTS/weight``), or None when the file has none.
        compared_with: ``"truth"``, or ``"detector level"`` for measured events (no truth in the
            file): the detector-level reference then stands where the truth would, and there is
            no separate reference to compare against.
    """

    path: Path
    n_events: int
    n_draws: int
    partons: PartonLevel | None
    particles: ParticleLevel | None
    composites: Mapping[str, tuple[str, ...]]
    attrs: Mapping[str, str]
    weights: np.ndarray | None = None
    compared_with: str = "truth"


class _Reader:
    """Reads datasets of one open file, checking shapes against the first E and n it meets."""

    def __init__(self, file: h5py.File, path: Path) -> None:
        self.file = file
        self.path = path
        self.n_events: int | None = None
        self.n_draws: int | None = None

    def fail(self, key: str, message: str) -> ReportError:
        return ReportError(f"{self.path}: {key}: {message}")

    def group(self, key: str) -> h5py.Group:
        node = self.file.get(key)
        if not isinstance(node, h5py.Group):
            raise self.fail(key, "expected an HDF5 group, found none")
        return node

    def array(
        self, key: str, kind: str, *, slotted: bool = False, n_slots: int | None = None
    ) -> np.ndarray:
        """Read ``key``, checking (E[, M]) for kind "truth" or (E, n[, M]) for kind "draws".

        ``slotted`` adds the particle axis M; ``n_slots`` pins its length (that of the MASK).
        """
        node = self.file.get(key)
        if not isinstance(node, h5py.Dataset):
            raise self.fail(key, "expected a dataset, found none")
        data = node[()]
        letters = ("E",) + (("n",) if kind == "draws" else ()) + (("M",) if slotted else ())
        if data.ndim != len(letters):
            raise self.fail(key, f"expected shape ({', '.join(letters)}), found {data.shape}")
        if self.n_events is None:
            self.n_events = data.shape[0]
        if data.shape[0] != self.n_events:
            raise self.fail(key, f"has {data.shape[0]} events, expected {self.n_events}")
        if kind == "draws":
            if self.n_draws is None:
                self.n_draws = data.shape[1]
            if data.shape[1] != self.n_draws:
                raise self.fail(key, f"has {data.shape[1]} draws, expected {self.n_draws}")
        if n_slots is not None and data.shape[-1] != n_slots:
            raise self.fail(key, f"has {data.shape[-1]} slots, expected {n_slots} as its MASK")
        if kind == "draws" and not slotted and not key.endswith("/MASK"):
            self.check_finite(key, data)
        return data.astype(bool) if key.endswith("/MASK") else data.astype(np.float64)

    def check_finite(self, key: str, values: np.ndarray) -> None:
        """Unfoldings must be numbers: a NaN draw would silently drop out of every histogram."""
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            raise self.fail(key, f"{bad} of {values.size} draws are NaN or infinite; expected finite unfoldings")

    def partons(self, prefix: str, kind: str, names: Mapping[str, list[str]] | None) -> dict:
        """``{parton: {feature: array}}`` under prefix; ``names`` (from the truth) are required."""
        group = self.group(prefix)
        wanted = names or {
            parton: [f for f in group[parton] if f not in SKIPPED_FEATURES]
            for parton in group
            if isinstance(group[parton], h5py.Group)
        }
        return {
            parton: {f: self.array(f"{prefix}/{parton}/{f}", kind) for f in features}
            for parton, features in wanted.items()
        }

    def collections(
        self, prefix: str, kind: str, like: Mapping[str, Collection] | None
    ) -> dict[str, Collection]:
        """Collections under prefix; ``like`` (the truth) fixes which must exist."""
        group = self.group(prefix)
        names = (
            list(like)
            if like is not None
            else [n for n in group if isinstance(group[n], h5py.Group)]
        )
        out = {}
        for name in names:
            sub = self.group(f"{prefix}/{name}")
            has_mask = "MASK" in sub
            if like is not None and (like[name].mask is not None) != has_mask:
                raise self.fail(
                    f"{prefix}/{name}/MASK", "MASK present at one level but not the other"
                )
            mask = self.array(f"{prefix}/{name}/MASK", kind, slotted=True) if has_mask else None
            features = (
                list(like[name].features)
                if like is not None
                else [f for f in sub if f not in SKIPPED_FEATURES]
            )
            out[name] = Collection(
                {
                    f: self.array(
                        f"{prefix}/{name}/{f}",
                        kind,
                        slotted=mask is not None,
                        n_slots=None if mask is None else mask.shape[-1],
                    )
                    for f in features
                },
                mask,
            )
            if kind == "draws" and mask is not None:
                for f, values in out[name].features.items():
                    self.check_finite(f"{prefix}/{name}/{f}", values[mask])
        return out


def _composites(path: Path, attrs: Mapping[str, object]) -> dict[str, tuple[str, ...]]:
    text = attrs.get("composites")
    if text is None:
        return {}
    try:
        parsed = json.loads(text if isinstance(text, str) else bytes(text).decode())
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as error:
        raise ReportError(f"{path}: attribute 'composites': not valid JSON ({error})") from None
    if not isinstance(parsed, dict) or not all(
        isinstance(v, list) and all(isinstance(c, str) for c in v) for v in parsed.values()
    ):
        raise ReportError(
            f"{path}: attribute 'composites': expected a JSON object of name -> [constituents]"
        )
    return {name: tuple(constituents) for name, constituents in parsed.items()}


def _attr_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value.tolist() if isinstance(value, np.ndarray) else value)


def read_samples_file(path: str | Path) -> SamplesFile:
    """Read and check a samples file; raises ReportError naming the file and key on bad input."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"{path}: no such samples file")
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise ReportError(f"{path}: not a readable HDF5 file ({error})") from None
    with file:
        levels = [level for level in ("PARTONS", "PARTICLES") if level in file]
        measured = [level for level in ("PARTONS", "PARTICLES") if f"REFERENCE/{level}" in file and f"SAMPLES/{level}" in file]
        if not levels and not measured:
            raise ReportError(
                f"{path}: no truth: expected a 'PARTONS' and/or 'PARTICLES' group at the root (or a detector-level "
                f"REFERENCE/ beside SAMPLES/ for measured events), found {sorted(file.keys())}"
            )
        truth_prefix = "" if levels else "REFERENCE/"
        reader = _Reader(file, path)
        partons = particles = None
        if f"{truth_prefix}PARTONS" in file:
            truth = reader.partons(f"{truth_prefix}PARTONS", "truth", None)
            if not truth:
                raise reader.fail("PARTONS", "holds no parton groups")
            names = {p: list(f) for p, f in truth.items()}
            draws = reader.partons("SAMPLES/PARTONS", "draws", names)
            reference, matched = (
                reader.partons(f"{group}/PARTONS", "truth", names) if f"{group}/PARTONS" in file and not truth_prefix else {}
                for group in ("REFERENCE", "MATCHED")
            )
            partons = PartonLevel(truth, draws, reference, matched)
        if f"{truth_prefix}PARTICLES" in file:
            truth_collections = reader.collections(f"{truth_prefix}PARTICLES", "truth", None)
            if not truth_collections:
                raise reader.fail("PARTICLES", "holds no collections")
            particles = ParticleLevel(
                truth_collections,
                reader.collections("SAMPLES/PARTICLES", "draws", truth_collections),
                {} if truth_prefix else _reference_collections(reader, truth_collections),
            )
        attrs = dict(file.attrs)
        weights = None
        if "WEIGHTS/weight" in file:
            weights = reader.array("WEIGHTS/weight", "truth")
            if not np.isfinite(weights).all() or weights.sum() <= 0:
                raise reader.fail("WEIGHTS/weight", "expected finite event weights with a positive sum")
    if reader.n_draws is None or reader.n_draws < 1:
        raise ReportError(f"{path}: SAMPLES: expected at least one draw per event")
    return SamplesFile(
        path=path,
        n_events=int(reader.n_events or 0),
        n_draws=int(reader.n_draws),
        partons=partons,
        particles=particles,
        composites=_composites(path, attrs),
        attrs={key: _attr_text(value) for key, value in attrs.items() if key != "composites"},
        weights=weights,
        compared_with="detector level" if truth_prefix else "truth",
    )


def _reference_collections(
    reader: _Reader, truth: Mapping[str, Collection]
) -> dict[str, Collection]:
    """Detector-level collections: M may differ from the truth's, so read each on its own."""
    if "REFERENCE/PARTICLES" not in reader.file:
        return {}
    present = {name: c for name, c in truth.items() if name in reader.file["REFERENCE/PARTICLES"]}
    out = {}
    for name, like in present.items():
        prefix = f"REFERENCE/PARTICLES/{name}"
        mask = (
            reader.array(f"{prefix}/MASK", "truth", slotted=True) if like.mask is not None else None
        )
        features = [f for f in like.features if f in reader.file[prefix]]
        out[name] = Collection(
            {
                f: reader.array(
                    f"{prefix}/{f}",
                    "truth",
                    slotted=mask is not None,
                    n_slots=None if mask is None else mask.shape[-1],
                )
                for f in features
            },
            mask,
        )
    return out
