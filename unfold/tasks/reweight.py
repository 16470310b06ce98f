"""``unfold reweight``: pseudo-data with another top mass or top-pT spectrum, for prior-dependence tests.

A copy of a generated file whose ``WEIGHTS/weight`` (SPANet's event weight, which every command
reads) is multiplied by p_theta / p_generated of the prior family (:mod:`unfold.unbiasing.top_prior`)
at each event's true tops, normalised to a mean of one: unfolding it tests whether an answer
follows a top mass or a top-pT spectrum the simulation did not have.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np

from unfold.data.hdf5_io import atomic_output, check_new_output
from unfold.data.hdf5_schema import SPANET_WEIGHTS, read_truth
from unfold.errors import UnfoldError
from unfold.generation.processes import PROCESSES
from unfold.unbiasing.top_prior import GeneratedPrior, PriorParameters, prior_weights, top_names

__all__ = ["reweight_file"]


def reweight_file(source: Path, out: Path, *, top_mass: float | None = None,
                  top_pt_slope: float = 0.0) -> tuple[np.ndarray, PriorParameters]:
    """Write ``out``: ``source`` with its event weights times the prior ratio (top mass default: the
    file's own); returns the new weights and the prior. The copy is written under a temporary name
    and moved into place, so an interruption leaves no half-written file."""
    source, out = Path(source), Path(out)
    check_new_output(source, out, "input file")
    with h5py.File(source, "r") as file:
        process = str(file.attrs.get("process", ""))
    if process not in PROCESSES:
        raise UnfoldError(f"{source}: attribute process={process!r}; expected one of {', '.join(PROCESSES)}")
    generated = GeneratedPrior.of_files([source])
    parameters = PriorParameters(top_mass=top_mass, top_pt_slope=top_pt_slope)
    truth = read_truth(source, "PARTONS")
    tops = {top: {q: truth[top][q] for q in ("mass", "pt")} for top in top_names(process)}
    ratio = prior_weights(tops, parameters, generated)
    with atomic_output(out) as partial:
        shutil.copyfile(source, partial)
        with h5py.File(partial, "r+") as file:
            weights = (file[SPANET_WEIGHTS][:] if SPANET_WEIGHTS in file else np.ones(len(ratio))) * ratio
            weights = weights / weights.mean()
            if SPANET_WEIGHTS in file:
                del file[SPANET_WEIGHTS]
            file.create_dataset(SPANET_WEIGHTS, data=weights.astype(np.float32))
            file.attrs["reweighted"] = json.dumps({**asdict(parameters), "source": str(source)})
    return weights, parameters
