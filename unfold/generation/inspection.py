"""``unfold inspect``: a file's structure and a short physics summary."""

from __future__ import annotations

import functools
import operator
from pathlib import Path

import h5py
import numpy as np
import vector

from evaluation.metrics import peak_position
from unfold.data.hdf5_io import open_h5
from unfold.errors import UnfoldError

__all__ = ["describe", "generator_masses"]

# The top and W of each side as stored in the event record, both processes.
_RECORD_TOPS = ("t_had", "t_lep", "t1", "t2")
_RECORD_WS = ("W_had", "W_lep", "W1", "W2")


def _structure(file: h5py.File) -> list[str]:
    lines = []

    def visit(name: str, obj) -> None:
        depth = name.count("/")
        if isinstance(obj, h5py.Group):
            lines.append(f"{'  ' * depth}{name.rsplit('/', 1)[-1]}/")
        else:
            lines.append(f"{'  ' * depth}{name.rsplit('/', 1)[-1]:<24} {obj.dtype!s:<8} {obj.shape}")

    file.visititems(visit)
    return lines


def _mass_peak(masses: np.ndarray) -> str:
    """Peak (:func:`evaluation.metrics.peak_position`) and median of a mass distribution."""
    return f"peak {peak_position(masses):6.1f} GeV, median {np.median(masses):6.1f} GeV"


def _charge_balance(pdg_ids: np.ndarray) -> str:
    """Share of l+ (negative PDG id) with its binomial standard deviation."""
    n = len(pdg_ids)
    share = float(np.mean(pdg_ids < 0))
    return f"lepton charge: l+ {share:.1%} +- {np.sqrt(share * (1 - share) / n):.1%}, l- {1 - share:.1%} ({n} events)"


def _met_resolution(file: h5py.File) -> str:
    """MET response (median of the reconstructed MET projected on the true one, over the true MET,
    for true MET above 40 GeV) and resolution (half the 16-84 % width of each component's
    difference to the truth, all events)."""
    met, phi = file["INPUTS/Met/met"][...], file["INPUTS/Met/phi"][...]
    true, true_phi = file["PARTICLES/met/met"][...], file["PARTICLES/met/phi"][...]
    hard = true > 40.0
    response = f"{np.median(met[hard] * np.cos(phi[hard] - true_phi[hard]) / true[hard]):.3f}" if hard.any() else "n/a"
    difference = np.concatenate([met * np.cos(phi) - true * np.cos(true_phi), met * np.sin(phi) - true * np.sin(true_phi)])
    width = 0.5 * np.subtract(*np.percentile(difference, [84.0, 16.0]))
    return (
        f"MET against the true neutrinos: response {response} ({hard.sum()} events with true MET > 40 GeV), "
        f"resolution per component {width:.1f} GeV"
    )


def _composite_mass(file: h5py.File, names: list[str]) -> np.ndarray:
    """Invariant mass of the sum of the named partons (scikit-hep ``vector``)."""
    parts = [vector.array({f: file[f"PARTONS/{name}/{f}"][...] for f in ("pt", "eta", "phi", "mass")}) for name in names]
    return np.asarray(functools.reduce(operator.add, parts).mass)


def _physics(file: h5py.File) -> list[str]:
    lines = []
    if "INPUTS/Momenta/MASK" in file:
        mask = file["INPUTS/Momenta/MASK"][...]
        leptons = [file[f"INPUTS/Momenta/{tag}"][...] > 0 for tag in ("etag", "utag") if f"INPUTS/Momenta/{tag}" in file]
        jets = mask & ~np.any(leptons, axis=0) if leptons else mask
        n_jets = jets.sum(axis=1)
        values, counts = np.unique(n_jets, return_counts=True)
        share = ", ".join(f"{v}: {c / len(n_jets):.1%}" for v, c in zip(values, counts))
        lines.append(f"events: {len(mask)}; jets per event: mean {n_jets.mean():.2f} ({share})")
        if "INPUTS/Momenta/btag" in file:
            lines.append(f"b-tagged jets per event: mean {(file['INPUTS/Momenta/btag'][...] * jets).sum(axis=1).mean():.2f}")
    if "TARGETS" in file:
        complete = np.ones(len(file["INPUTS/Momenta/MASK"]), dtype=bool)
        for name, group in file["TARGETS"].items():
            matched = np.all([group[d][...] >= 0 for d in group if d not in ("MASK", "WEIGHT")], axis=0)
            complete &= matched
            lines.append(f"resonance {name}: fully matched in {matched.mean():.1%} of events")
        lines.append(f"fully matched events (every resonance): {complete.mean():.1%}")
    if "PARTONS" in file:
        composites = {"W_had": ["q1", "q2"], "t_had": ["b_had", "q1", "q2"], "W1": ["t1_q1", "t1_q2"], "t1": ["t1_b", "t1_q1", "t1_q2"]}
        for name, daughters in composites.items():
            if all(f"PARTONS/{d}" in file for d in daughters):
                lines.append(f"parton m({name}) from its decay products: {_mass_peak(_composite_mass(file, daughters))}")
        for name in ("t_had", "t_lep", "W_had", "W_lep", "t1", "t2"):
            if f"PARTONS/{name}/mass" in file:
                lines.append(f"parton m({name}) in the event record:     {_mass_peak(file[f'PARTONS/{name}/mass'][...])}")
    if "PARTICLES/lepton/pdgid" in file:
        lines.append(_charge_balance(file["PARTICLES/lepton/pdgid"][:, 0]))
    if "INPUTS/Met/met" in file and "PARTICLES/met/met" in file:
        lines.append(_met_resolution(file))
    if "PARTICLES/jets/MASK" in file:
        n = file["PARTICLES/jets/MASK"][...].sum(axis=1)
        nb = (file["PARTICLES/jets/btag"][...] * file["PARTICLES/jets/MASK"][...]).sum(axis=1)
        lines.append(f"particle-level jets per event: mean {n.mean():.2f}, b-labelled {nb.mean():.2f}")
    return lines


def generator_masses(path: str | Path) -> tuple[float, float]:
    """(m_t, m_W) of the generator: medians of the parton-level top and W masses in the event
    record of a generated file (Breit-Wigner medians, i.e. Pythia's 6:m0 and 24:m0)."""
    with open_h5(path) as file:
        masses = []
        for names in (_RECORD_TOPS, _RECORD_WS):
            found = [file[f"PARTONS/{name}/mass"][...] for name in names if f"PARTONS/{name}/mass" in file]
            if not found:
                raise UnfoldError(f"{path}: no parton-level {' or '.join(names)} mass to take the generator's mass from")
            masses.append(float(np.median(np.concatenate(found))))
    return masses[0], masses[1]


def describe(path: str | Path) -> str:
    """The structure of an HDF5 event file and a physics summary, as text."""
    with open_h5(path) as file:
        header = [f"{path}"] + [f"  @{k} = {str(v).splitlines()[0][:80]}" for k, v in file.attrs.items()]
        return "\n".join([*header, "", *_structure(file), "", "physics summary:", *("  " + line for line in _physics(file))])
