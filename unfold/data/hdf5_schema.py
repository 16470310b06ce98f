"""Reading the suite's HDF5 schema, a superset of SPANet's, through one code path.

Detector inputs and targets follow SPANet's layout (``INPUTS``, ``TARGETS``, ``REGRESSIONS``,
``CLASSIFICATIONS``) so SPANet's own files load unchanged; unfolding truth sits beside it
under ``PARTONS`` and ``PARTICLES``. Every problem is reported as one line naming the file,
the key and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from recon.event_topology import EventTopology
from unfold.errors import UnfoldError
from unfold.data.hdf5_io import open_h5

__all__ = ["SpanetData", "read_spanet", "read_truth"]


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
        weights: resonance -> (E,) float32 per-event weights (1 where the file has none).
        regressions: (E, R) float32, NaN where missing. classifications: (E, C) int64, -1 missing.
        four_momenta: (E, N, 4) (E, px, py, pz) of the concatenated objects, or None when the
            sources lack pt/eta/phi/mass.
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


def _check_finite(file: h5py.File, key: str, array: np.ndarray, mask: np.ndarray | None = None) -> None:
    values = array if mask is None else array[mask]
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise UnfoldError(f"{file.filename}: {key!r} holds {bad} NaN/inf values; expected finite numbers")


def read_spanet(path: str | Path, topology: EventTopology, *, limit: int | None = None) -> SpanetData:
    """Read detector inputs, targets, regressions and classifications for ``topology``.

    Datasets the event file does not name are ignored, as in SPANet. ``limit`` reads only the
    first events.
    """
    with open_h5(path) as file:
        events = slice(None, limit)
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
                values = values[events].astype(np.float32)
                if source.kind == "SEQUENTIAL":
                    _check_events(file, key, values, masks[source.name].shape)
                    _check_finite(file, key, values, masks[source.name])
                    values = np.where(masks[source.name], values, 0.0)
                else:
                    _check_events(file, key, values, (n_events,) if n_events is not None else values.shape[:1])
                    _check_finite(file, key, values)
                features.append(values)
            (sequential if source.kind == "SEQUENTIAL" else global_inputs)[source.name] = np.stack(features, axis=-1)
        object_mask = np.concatenate(list(masks.values()), axis=1)
        n_objects = object_mask.shape[1]
        empty = ~object_mask.any(axis=1)
        if empty.any():
            raise UnfoldError(
                f"{file.filename}: {int(empty.sum())} events have no objects (first: event {int(np.argmax(empty))}); "
                "expected at least one unmasked object per event"
            )
        offsets = dict(zip(masks, np.cumsum([0] + [m.shape[1] for m in masks.values()])))
        targets, target_masks, weights = {}, {}, {}
        for resonance in topology.resonances:
            columns = []
            for daughter, source in zip(resonance.daughters, resonance.sources or (None,) * resonance.order):
                key = f"TARGETS/{resonance.name}/{daughter}"
                index = _dataset(file, key, f"(events,) int daughter indices for {topology.path}")[events].astype(np.int64)
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
            weights[resonance.name] = (
                file[weight_key][events].astype(np.float32) if weight_key in file else np.ones(n_events, np.float32)
            )
        regressions = _event_targets(file, "REGRESSIONS", topology.regressions, events, n_events, np.float32, np.nan)
        classifications = _event_targets(file, "CLASSIFICATIONS", topology.classifications, events, n_events, np.int64, -1)
        four = _four_momenta(sequential, topology)
    return SpanetData(
        str(path), sequential, masks, global_inputs, targets, target_masks, weights, regressions, classifications, four
    )


def _event_targets(file, group, names, events, n_events, dtype, missing) -> np.ndarray:
    columns = []
    for name in names:
        key = f"{group}/EVENT/{name}"
        values = _dataset(file, key, "(events,) event-level target named in the event file")[events].astype(dtype)
        _check_events(file, key, values, (n_events,))
        columns.append(values)
    return np.stack(columns, axis=1) if columns else np.full((n_events, 0), missing, dtype)


def _four_momenta(sequential: dict[str, np.ndarray], topology: EventTopology) -> np.ndarray | None:
    """(E, N, 4) (E, px, py, pz) from pt, eta, phi (or sin_phi, cos_phi) and mass, if every source has them."""
    parts = []
    for source in topology.sequential:
        index = {f: i for i, f in enumerate(source.features)}
        x = sequential[source.name]
        if not {"pt", "eta", "mass"} <= index.keys():
            return None
        if "phi" in index:
            phi = x[..., index["phi"]]
        elif {"sin_phi", "cos_phi"} <= index.keys():
            phi = np.arctan2(x[..., index["sin_phi"]], x[..., index["cos_phi"]])
        else:
            return None
        pt, eta, mass = x[..., index["pt"]], x[..., index["eta"]], x[..., index["mass"]]
        px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
        energy = np.sqrt(px**2 + py**2 + pz**2 + mass**2)
        parts.append(np.stack([energy, px, py, pz], axis=-1))
    return np.concatenate(parts, axis=1).astype(np.float32)


def read_truth(path: str | Path, group: str, *, limit: int | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Read ``PARTONS`` or ``PARTICLES`` as {object: {feature: array}}, or fail naming the group."""
    with open_h5(path) as file:
        if group not in file:
            raise UnfoldError(f"{file.filename}: missing group {group!r}; expected {group}/<object>/<feature> truth")
        return {
            name: {feature: data[:limit] for feature, data in obj.items()}
            for name, obj in file[group].items()
            if isinstance(obj, h5py.Group)
        }
