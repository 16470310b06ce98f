"""Reading the suite's HDF5 schema, a superset of SPANet's, through one code path.

Detector inputs and targets follow SPANet's layout (``INPUTS``, ``TARGETS``, ``REGRESSIONS``,
``CLASSIFICATIONS``, ``WEIGHTS``) so SPANet's own files load unchanged; unfolding truth sits beside
it under ``PARTONS`` and ``PARTICLES``. Only the inputs are required: measured events have no
``TARGETS``, ``REGRESSIONS``, ``CLASSIFICATIONS`` or truth, and those read as missing. Every
problem is reported as one line naming the file, the key and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from encoders.sources import declared_kinematics
from recon.event_topology import EventTopology
from unfold.data.hdf5_io import open_h5
from unfold.errors import UnfoldError

__all__ = ["MISSED", "SPANET_WEIGHTS", "SpanetData", "count_events", "has_group", "read_spanet", "read_truth"]

# SPANet's per-event weight dataset (its ROOT-to-HDF5 converters write ``WEIGHTS/weight``).
SPANET_WEIGHTS = "WEIGHTS/weight"
MISSED = "MISSED"  # the truth of the events that fail the detector selection (unfold generate --keep-missed)


@dataclass(frozen=True)
class SpanetData:
    """Detector inputs and assignment targets of E events, arranged by an event topology.

    Attributes:
        sequential: source -> (E, N_s, F_s) float32 raw features in event-file order.
        masks: source -> (E, N_s) bool, True for real objects.
        globals: source -> (E, F_g) float32 raw features.
        targets: resonance -> (E, K) int64 indices into the concatenated sequential objects,
            -1 where a daughter is not matched.
        target_masks: resonance -> (E,) bool, the resonance is fully reconstructable.
        weights: resonance -> (E,) float32 per-resonance weights (``TARGETS/<particle>/WEIGHT``, 1 where
            the file has none).
        regressions: (E, R) float32, NaN where missing. classifications: (E, C) int64, -1 missing.
        four_momenta: (E, N, 4) (E, px, py, pz) of the concatenated objects, or None when the
            sources lack pt/eta/phi/mass.
        event_weights: (E,) float32 event weights (``--weights DATASET``, else SPANet's
            ``WEIGHTS/weight``, else ones); negative weights (NLO generators) are kept.
        event_index: (E,) int64 row of each event in the file it was read from.
        has_targets: the file holds ``TARGETS`` (False for measured events: targets are all -1).
        weights_key: the dataset the event weights came from, or None for ones.
    """

    path: str
    sequential: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    globals: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    target_masks: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]
    regressions: np.ndarray
    classifications: np.ndarray
    four_momenta: np.ndarray | None
    event_weights: np.ndarray
    event_index: np.ndarray
    has_targets: bool = True
    weights_key: str | None = None

    @property
    def n_events(self) -> int:
        return len(next(iter(self.masks.values())))

    @property
    def object_mask(self) -> np.ndarray:
        """(E, N) mask of the concatenated sequential objects."""
        return np.concatenate(list(self.masks.values()), axis=1)


def _dataset(file: h5py.File, key: str, expected: str) -> np.ndarray:
    if key not in file or not isinstance(file[key], h5py.Dataset):
        raise UnfoldError(f"{file.filename}: missing dataset {key!r} ({expected})")
    return file[key][...]


def _check_events(file: h5py.File, key: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
    if array.shape != shape:
        raise UnfoldError(f"{file.filename}: {key!r} has shape {array.shape}; expected {shape}")


# Features that cannot be negative, with the rounding allowed (GeV): float32 masses of massless
# objects come out of E^2 - p^2 slightly below zero (down to -1.7e-6 GeV in SPANet's ttH example).
NON_NEGATIVE = {"pt": 0.0, "mass": 1e-2, "met": 0.0, "sumet": 0.0}


def _check_numeric(file: h5py.File, key: str, array: np.ndarray, *, integer: bool = False) -> None:
    """Numbers (not strings or objects); for ``integer`` (object indices) whole numbers only."""
    if array.dtype != bool and not np.issubdtype(array.dtype, np.number):
        raise UnfoldError(f"{file.filename}: {key!r} has dtype {array.dtype}; expected numbers")
    if integer and not np.issubdtype(array.dtype, np.integer):
        fractional = array != np.round(array)
        if fractional.any():
            raise UnfoldError(f"{file.filename}: {key!r} holds index {array[fractional][0]!r}; "
                              "expected whole-number object indices (-1 for none)")


def _check_physical(file: h5py.File, key: str, feature: str, values: np.ndarray, mask: np.ndarray | None) -> None:
    """pt, mass, MET and sum ET of real objects are not negative."""
    if feature not in NON_NEGATIVE:
        return
    real = values if mask is None else values[mask]
    negative = real < -NON_NEGATIVE[feature]
    if negative.any():
        raise UnfoldError(f"{file.filename}: {key!r} holds {int(negative.sum())} negative values "
                          f"(first {float(real[negative][0]):.4g}); expected {feature} >= 0")


def _check_finite(file: h5py.File, key: str, array: np.ndarray, mask: np.ndarray | None = None) -> None:
    values = array if mask is None else array[mask]
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise UnfoldError(f"{file.filename}: {key!r} holds {bad} NaN/inf values; expected finite numbers")


def count_events(path: str | Path, topology: EventTopology) -> int:
    """Number of events in ``path``: the length of the first input source's first dataset."""
    with open_h5(path) as file:
        return _file_events(file, topology)


def _file_events(file: h5py.File, topology: EventTopology) -> int:
    source = topology.sources[0]
    key = f"INPUTS/{source.name}/{'MASK' if source.kind == 'SEQUENTIAL' else source.features[0]}"
    return len(_dataset(file, key, f"the {source.kind.lower()} input {source.name!r} of {topology.path}"))


def has_group(path: str | Path, group: str) -> bool:
    """Whether ``path`` holds the group ``group`` (e.g. ``PARTONS``)."""
    with open_h5(path) as file:
        return group in file and isinstance(file[group], h5py.Group)


def read_spanet(
    path: str | Path,
    topology: EventTopology,
    *,
    limit: int | None = None,
    start: int = 0,
    weights: str | None = None,
    require_targets: bool = False,
) -> SpanetData:
    """Read detector inputs and, where the file has them, targets, regressions, classifications
    and event weights for ``topology``.

    Only the inputs the event file names are required; datasets it does not name are ignored, as
    in SPANet. Without ``TARGETS`` every target reads -1 (``has_targets`` False) unless
    ``require_targets`` (training) asks for them; a missing regression reads NaN and a missing
    classification -1. Events ``start`` to ``start + limit`` are read, nothing else.

    Args:
        weights: dataset of per-event weights (e.g. ``WEIGHTS/weight``); None: SPANet's
            ``WEIGHTS/weight`` when the file has it, else ones.
    """
    with open_h5(path) as file:
        events = slice(start, None if limit is None else start + limit)
        sequential, masks, global_inputs = {}, {}, {}
        n_events = None
        for source in topology.sources:
            mask_key = f"INPUTS/{source.name}/MASK"
            if source.kind == "SEQUENTIAL":
                mask = _dataset(file, mask_key, "(events, objects) bool")[events].astype(bool)
                if n_events is None:
                    n_events = len(mask)
                _check_events(file, mask_key, mask, (n_events, mask.shape[1]))
                masks[source.name] = mask
            features = []
            for feature in source.features:
                key = f"INPUTS/{source.name}/{feature}"
                values = _dataset(file, key, f"a {source.kind.lower()} input feature named in {topology.path}")
                _check_numeric(file, key, values)
                values = values[events].astype(np.float32)
                if source.kind == "SEQUENTIAL":
                    _check_events(file, key, values, masks[source.name].shape)
                    _check_finite(file, key, values, masks[source.name])
                    _check_physical(file, key, feature, values, masks[source.name])
                    values = np.where(masks[source.name], values, 0.0)
                else:
                    _check_events(file, key, values, (n_events,) if n_events is not None else values.shape[:1])
                    _check_finite(file, key, values)
                    _check_physical(file, key, feature, values, None)
                features.append(values)
            (sequential if source.kind == "SEQUENTIAL" else global_inputs)[source.name] = np.stack(features, axis=-1)
        object_mask = np.concatenate(list(masks.values()), axis=1)
        n_objects = object_mask.shape[1]
        empty = ~object_mask.any(axis=1)
        if empty.any():
            raise UnfoldError(
                f"{file.filename}: {int(empty.sum())} events have no objects (first: event {start + int(np.argmax(empty))}); "
                "expected at least one unmasked object per event"
            )
        has_targets = "TARGETS" in file
        if require_targets and not has_targets:
            raise UnfoldError(f"{file.filename}: missing group 'TARGETS'; expected TARGETS/<particle>/<daughter> "
                              f"jet indices of {list(topology.resonance_names)} to train on")
        offsets = dict(zip(masks, np.cumsum([0] + [m.shape[1] for m in masks.values()])[:-1], strict=True))
        targets, target_masks, weights_by_resonance = {}, {}, {}
        for resonance in topology.resonances:
            columns = []
            for daughter, source in zip(resonance.daughters, resonance.sources or (None,) * resonance.order, strict=True):
                if not has_targets:
                    columns.append(np.full(n_events, -1, np.int64))
                    continue
                key = f"TARGETS/{resonance.name}/{daughter}"
                index = _dataset(file, key, f"(events,) int daughter indices for {topology.path}")[events]
                _check_numeric(file, key, index, integer=True)
                index = index.astype(np.int64)
                _check_events(file, key, index, (n_events,))
                if source is not None:
                    if source not in offsets:
                        raise UnfoldError(f"{topology.path}: EVENT/{resonance.name}/{daughter} names source {source!r}; "
                                          f"expected one of the sequential inputs {list(offsets)}")
                    size = masks[source].shape[1]
                    if ((index < -1) | (index >= size)).any():
                        raise UnfoldError(f"{file.filename}: {key!r} indexes source {source!r} of {size} objects out of range")
                    index = np.where(index >= 0, index + offsets[source], -1)
                out_of_range = (index < -1) | (index >= n_objects)
                if out_of_range.any():
                    raise UnfoldError(
                        f"{file.filename}: {key!r} holds index {int(index[out_of_range][0])}; "
                        f"expected -1 or 0..{n_objects - 1} (the concatenated objects)"
                    )
                points_at_padding = (index >= 0) & ~np.take_along_axis(object_mask, np.clip(index, 0, None)[:, None], 1)[:, 0]
                if points_at_padding.any():
                    raise UnfoldError(
                        f"{file.filename}: {key!r} points at a padded (masked) object in {int(points_at_padding.sum())} events"
                    )
                columns.append(index)
            targets[resonance.name] = np.stack(columns, axis=1)
            present = (targets[resonance.name] >= 0).all(axis=1)
            mask_key = f"TARGETS/{resonance.name}/MASK"
            if mask_key in file:
                present &= file[mask_key][events].astype(bool)
            target_masks[resonance.name] = present
            weight_key = f"TARGETS/{resonance.name}/WEIGHT"
            weights_by_resonance[resonance.name] = (
                file[weight_key][events].astype(np.float32) if weight_key in file else np.ones(n_events, np.float32)
            )
        regressions = _event_targets(file, "REGRESSIONS", topology.regressions, events, n_events, np.float32, np.nan)
        classifications = _event_targets(file, "CLASSIFICATIONS", topology.classifications, events, n_events, np.int64, -1)
        weights_key = weights if weights is not None else (SPANET_WEIGHTS if SPANET_WEIGHTS in file else None)
        event_weights = _event_weights(file, weights_key, events, n_events, _file_events(file, topology))
        four = _four_momenta(sequential, topology)
    return SpanetData(
        str(path), sequential, masks, global_inputs, targets, target_masks, weights_by_resonance, regressions,
        classifications, four, event_weights, np.arange(start, start + n_events, dtype=np.int64), has_targets, weights_key,
    )


def _event_weights(file: h5py.File, key: str | None, events: slice, n_events: int, file_events: int) -> np.ndarray:
    """(E,) finite event weights from dataset ``key`` (ones for None); it must hold one per event of the file."""
    if key is None:
        return np.ones(n_events, np.float32)
    dataset = file.get(key)
    if not isinstance(dataset, h5py.Dataset):
        raise UnfoldError(f"{file.filename}: missing dataset {key!r}; expected (events,) event weights")
    if dataset.shape != (file_events,):
        raise UnfoldError(f"{file.filename}: weights {key!r} have shape {dataset.shape}; expected one per event ({file_events},)")
    values = dataset[events].astype(np.float32)
    if not np.isfinite(values).all():
        raise UnfoldError(f"{file.filename}: weights {key!r} hold {int((~np.isfinite(values)).sum())} NaN/inf values; "
                          "expected finite numbers (negative weights are allowed)")
    return values


def _event_targets(file, group, names, events, n_events, dtype, missing) -> np.ndarray:
    """(E, len(names)) event-level targets; a target the file lacks reads ``missing`` (measured events)."""
    columns = []
    for name in names:
        key = f"{group}/EVENT/{name}"
        if key not in file:
            columns.append(np.full(n_events, missing, dtype))
            continue
        values = _dataset(file, key, "(events,) event-level target named in the event file")[events].astype(dtype)
        _check_events(file, key, values, (n_events,))
        columns.append(values)
    return np.stack(columns, axis=1) if columns else np.full((n_events, 0), missing, dtype)


def _four_momenta(sequential: dict[str, np.ndarray], topology: EventTopology) -> np.ndarray | None:
    """(E, N, 4) (E, px, py, pz) from the declared kinematics (:func:`encoders.sources.declared_kinematics`:
    pt, eta, phi or sin_phi/cos_phi, mass or massless), if every source declares them."""
    parts = []
    for source in topology.sequential:
        kinematics = declared_kinematics(source, sequential[source.name])
        if kinematics is None:
            return None
        pt, eta, phi, mass = kinematics
        px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
        energy = np.sqrt(px**2 + py**2 + pz**2 + mass**2)
        parts.append(np.stack([energy, px, py, pz], axis=-1))
    return np.concatenate(parts, axis=1).astype(np.float32)


def read_truth(path: str | Path, group: str, *, limit: int | None = None, start: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Read ``PARTONS`` or ``PARTICLES`` (events ``start`` to ``start + limit``) as {object: {feature: array}},
    or fail naming the group."""
    events = slice(start, None if limit is None else start + limit)
    with open_h5(path) as file:
        if group not in file:
            raise UnfoldError(f"{file.filename}: missing group {group!r}; expected {group}/<object>/<feature> truth")
        return {
            name: {feature: data[events] for feature, data in obj.items()}
            for name, obj in file[group].items()
            if isinstance(obj, h5py.Group)
        }
