"""``unfold merge``: one file from several ``unfold generate`` files of the same process and layout.

A broad prior is generated as several runs with different top masses (``--pythia '6:m0 = ...'``);
training and the unbiasing templates read it as one file. Every dataset that all files have is
concatenated along the events (one only some have is left out and named); the root attributes are the first file's, with the merged count of generated events and
selection efficiency, the input files, and the top-mass mixture the files make
(``top_mass_prior``, JSON, read by :class:`unfold.unbiasing.top_prior.GeneratedPrior`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from unfold.data.hdf5_io import append_arrays, atomic_output, open_h5
from unfold.errors import UnfoldError
from unfold.unbiasing.top_prior import GeneratedPrior

__all__ = ["merge_files"]

# Attributes that describe one run's sample size or physics and do not carry over to a merge.
PER_RUN_ATTRIBUTES = ("cross_section_fb", "cross_section_error_fb", "cross_section_filter_acceptance",
                      "luminosity_fb_inv", "seed")


def _datasets(file: h5py.File) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    found = {}
    file.visititems(lambda name, item: found.update({name: (item.shape[1:], item.dtype)})
                    if isinstance(item, h5py.Dataset) else None)
    return found


def merge_files(paths: Sequence[Path], out: Path) -> tuple[int, list[str]]:
    """Concatenate ``paths`` into ``out`` (written whole or not at all); returns the number of events and
    the datasets left out because not every file has them (files written by older versions)."""
    if len(paths) < 2:
        raise UnfoldError("unfold merge: give at least two files")
    paths = [Path(p) for p in paths]
    if Path(out).resolve() in {p.resolve() for p in paths}:
        raise UnfoldError(f"--out {out}: is one of the inputs; give another path")
    with open_h5(paths[0]) as first:
        layout, attrs = _datasets(first), dict(first.attrs)
    dropped: set[str] = set()
    for path in paths[1:]:
        with open_h5(path) as file:
            other = _datasets(file)
            if str(file.attrs.get("process")) != str(attrs.get("process")):
                raise UnfoldError(f"{path}: process {file.attrs.get('process')!r}; expected {attrs.get('process')!r} "
                                  f"as {paths[0]}")
        dropped.update(set(layout) ^ set(other))
        for key, (shape, _) in other.items():
            if key in layout and shape != layout[key][0]:
                raise UnfoldError(f"{path}: {key} has per-event shape {shape}; expected {layout[key][0]} as {paths[0]}")
    layout = {key: value for key, value in layout.items() if key not in dropped}
    prior = GeneratedPrior.of_files(paths)
    selected = generated = 0.0
    with atomic_output(out) as partial, h5py.File(partial, "w") as merged:
        for path in paths:
            with open_h5(path) as file:
                events = len(next(iter(file["PARTONS"].values()))["mass"])
                selected += events
                generated += events / float(file.attrs["selection_efficiency"])
                append_arrays(merged, {key: file[key][()] for key in layout})
        for key, value in attrs.items():
            if key not in PER_RUN_ATTRIBUTES:
                merged.attrs[key] = value
        merged.attrs["selection_efficiency"] = selected / generated
        merged.attrs["events_generated"] = round(generated)
        merged.attrs["merged_from"] = json.dumps([str(p) for p in paths])
        merged.attrs["top_mass_prior"] = json.dumps({"masses": list(prior.masses), "shares": list(prior.shares)})
    return int(selected), sorted(dropped)
