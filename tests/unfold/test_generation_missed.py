"""``--keep-missed``: the truth of the events the detector misses, beside unchanged selected events,
and the fiducial flag of every event."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from unfold.data.hdf5_schema import read_truth
from unfold.generation.kinematics import to_cartesian
from unfold.generation.pipeline import GenerationConfig, generate
from unfold.generation.processes import get_process


def _datasets(file: h5py.File, group: str | None = None) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    root = file if group is None else file[group]
    root.visititems(lambda k, o: out.__setitem__(k, o[...]) if isinstance(o, h5py.Dataset) else None)
    return out


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """The same 8 events (one shard, MPI off) generated with and without --keep-missed."""
    out = tmp_path_factory.mktemp("missed")
    config = {"events": 8, "seed": 5, "mpi": False, "workers": 1, "shard_size": 8, "test_fraction": 0.25}
    kept = generate(GenerationConfig(out=out / "kept", keep_missed=True, **config), progress=False)
    plain = generate(GenerationConfig(out=out / "plain", **config), progress=False)
    return kept, plain


def test_selected_events_unchanged_and_missed_events_counted(generated):
    kept, plain = generated
    missed_total = 0
    for kept_path, plain_path in ((kept.train, plain.train), (kept.test, plain.test)):
        with h5py.File(kept_path) as a, h5py.File(plain_path) as b:
            selected = {k: v for k, v in _datasets(a).items() if not k.startswith("MISSED/")}
            reference = _datasets(b)
            assert selected.keys() == reference.keys()
            assert all(np.array_equal(selected[k], reference[k]) for k in reference)
            assert "MISSED" not in b
            assert a.attrs["keep_missed"]
            assert not b.attrs["keep_missed"]
            missed = _datasets(a, "MISSED")
            # Same truth layout as the selected events, nothing else (no detector inputs, no bookkeeping).
            truth_keys = {k for k in reference if k.startswith(("PARTONS/", "PARTICLES/"))}
            assert set(missed) == truth_keys
            n_missed = {len(v) for v in missed.values()}
            assert len(n_missed) == 1
            missed_total += n_missed.pop()
    # Every generated event is either selected or missed.
    assert kept.tried == plain.tried == kept.events + missed_total
    assert missed_total > 0


def test_missed_events_carry_full_parton_truth(generated):
    kept, _ = generated
    partons = read_truth(kept.train, "MISSED/PARTONS")
    process = get_process("ttbar-semileptonic")

    def four(name):
        obj = partons[name]
        return to_cartesian(np.stack([obj["pt"], obj["eta"], obj["phi"], obj["mass"]], axis=-1))

    for composite in ("t_had", "t_lep"):
        daughters = sum(four(name) for name in process.composites[composite])
        np.testing.assert_allclose(daughters, four(composite), rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("group", ["PARTICLES", "MISSED/PARTICLES"])
def test_fiducial_flag_follows_the_stored_particle_level(generated, group):
    """Recompute the fiducial region from the stored particle-level objects (an oracle independent
    of the generation code): one lepton > 27 GeV |eta| < 2.5, >= 4 jets > 25 GeV |eta| < 2.5, >= 2 b."""
    kept, _ = generated
    region = get_process("ttbar-semileptonic").fiducial
    for path in (kept.train, kept.test):
        with h5py.File(path) as file:
            flag = file[f"{group}/fiducial"][...]
            jets = {k: file[f"{group}/jets/{k}"][...] for k in ("pt", "eta", "btag", "MASK")}
            lepton_pt, lepton_eta = file[f"{group}/lepton/pt"][:, 0], file[f"{group}/lepton/eta"][:, 0]
        good = jets["MASK"] & (jets["pt"] > region.jet_pt_min) & (np.abs(jets["eta"]) < region.jet_eta_max)
        expected = (
            (lepton_pt > region.lepton_pt_min)
            & (np.abs(lepton_eta) < region.lepton_eta_max)
            & (good.sum(axis=1) >= region.jets)
            & ((good & (jets["btag"] > 0)).sum(axis=1) >= region.b_jets)
        )
        assert flag.dtype == bool
        np.testing.assert_array_equal(flag, expected)
