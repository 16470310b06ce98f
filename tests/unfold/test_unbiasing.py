"""Unbiasing: the top prior family, the template fit on a smeared toy, the reweighted draws, `unfold reweight`."""

from __future__ import annotations

import ast
import shutil

import h5py
import numpy as np
import pytest
from scipy.integrate import quad

from evaluation.metrics import effective_events
from unfold.cli import main
from unfold.data.hdf5_schema import SPANET_WEIGHTS
from recon.chi_square import DetectorEvents, four_vector_mass
from unfold.errors import UnfoldError
from unfold.tasks.unbias import systematic_resample
from unfold.unbiasing.detector_observables import equal_mass_tops
from unfold.unbiasing.draw_weights import draw_weights
from unfold.unbiasing.template_fit import (
    FREE_PARAMETERS,
    DetectorSample,
    _Binned,
    _MassMorphing,
    fit_prior,
)
from unfold.unbiasing.top_prior import (
    GeneratedPrior,
    PriorParameters,
    prior_weights,
    relative_cross_section,
    top_line_shape,
    top_width,
)

WINDOW = (165.0, 180.0)  # GeV, the closure's window around the top mass
MASS_RESOLUTION, PT_RESOLUTION = 12.0, 0.15  # GeV and relative: a detector much coarser than the 1.4 GeV width


def _breit_wigner(rng: np.random.Generator, pole: float, size) -> np.ndarray:
    """Top masses from the relativistic Breit-Wigner in s (inverse CDF: s = M^2 + M Gamma tan(pi (u - 1/2)))."""
    width = top_width(pole)
    s = pole**2 + pole * width * np.tan(np.pi * (rng.uniform(0.02, 0.98, size) - 0.5))
    return np.sqrt(s)


def _window_mean(values: np.ndarray, weights: np.ndarray | None = None) -> float:
    weights = np.ones_like(values) if weights is None else weights
    inside = (values > WINDOW[0]) & (values < WINDOW[1])
    return float(np.sum(values * weights * inside) / np.sum(weights * inside))


def _tolerance(values: np.ndarray, *sizes: float) -> float:
    """Three standard errors of the difference of window means over samples of these (effective) sizes."""
    inside = values[(values > WINDOW[0]) & (values < WINDOW[1])]
    return 3 * inside.std() * np.sqrt(sum(1 / size for size in sizes))


def _tops(rng, pole: float, events: int, slope: float = 0.0) -> dict[str, dict[str, np.ndarray]]:
    """Two tops per event at ``pole``, with a falling pT spectrum tilted by sqrt(prod (1 + s pT / 500))
    (accept-reject)."""
    tops = {name: {"mass": _breit_wigner(rng, pole, 4 * events), "pt": rng.gamma(2.0, 50.0, 4 * events)}
            for name in ("t_had", "t_lep")}
    factor = np.sqrt((1 + slope * tops["t_had"]["pt"] / 500) * (1 + slope * tops["t_lep"]["pt"] / 500))
    keep = np.flatnonzero(rng.uniform(0, factor.max(), factor.size) < factor)[:events]
    assert keep.size == events
    return {name: {q: v[keep] for q, v in top.items()} for name, top in tops.items()}


def _detector(rng, tops) -> dict[str, np.ndarray]:
    return {f"{name}/{q}": (top[q] + rng.normal(0, MASS_RESOLUTION, top[q].size) if q == "mass"
                            else top[q] * (1 + rng.normal(0, PT_RESOLUTION, top[q].size)))
            for name, top in tops.items() for q in ("mass", "pt")}


def test_the_line_shape_is_normalised_and_its_width_is_pythias():
    assert quad(lambda m: top_line_shape(m, 173.0), 0.0, 2000.0, points=[173.0], limit=200)[0] == pytest.approx(1, abs=1e-4)
    assert top_width(173.0) == pytest.approx(1.3568, rel=1e-6)
    assert top_width(175.5) == pytest.approx(1.4270, rel=1e-3)  # Pythia 8.317 after 6:m0 = 175.5


def test_reweighting_a_sample_to_another_mass_moves_its_peak_there(rng):
    nominal = _tops(rng, 173.0, 40_000)
    shifted = _tops(rng, 175.5, 40_000)
    weights = prior_weights(nominal, PriorParameters(top_mass=175.5), GeneratedPrior((173.0,), (1.0,)))
    error = _tolerance(shifted["t_had"]["mass"], effective_events(weights), 40_000)
    assert _window_mean(nominal["t_had"]["mass"], weights) == pytest.approx(_window_mean(shifted["t_had"]["mass"]),
                                                                            abs=error)
    assert _window_mean(nominal["t_had"]["mass"]) < _window_mean(shifted["t_had"]["mass"]) - 2.0


def test_a_prior_spaced_by_about_a_width_reweights_between_its_masses_with_most_events(rng):
    poles = (171.5, 173.0, 174.5)  # GeV, spaced by about one top width (1.4 GeV)
    mixture = {name: {q: np.concatenate([part[name][q] for part in parts]) for q in ("mass", "pt")}
               for parts in [[_tops(rng, pole, 15_000) for pole in poles]] for name in ("t_had", "t_lep")}
    target = PriorParameters(top_mass=173.75)  # between two generated masses
    weights = prior_weights(mixture, target, GeneratedPrior(poles, (1 / 3,) * 3, (1.0,) * 3))
    direct = _tops(np.random.default_rng(5), target.top_mass, 45_000)
    error = _tolerance(direct["t_had"]["mass"], effective_events(weights), 45_000)
    assert _window_mean(mixture["t_had"]["mass"], weights) == pytest.approx(_window_mean(direct["t_had"]["mass"]),
                                                                            abs=error)
    assert effective_events(weights) > 0.3 * weights.size
    # One narrow sample 2.5 GeV away keeps a few per cent of its events.
    narrow = prior_weights(direct, PriorParameters(top_mass=176.25), GeneratedPrior((173.75,), (1.0,)))
    assert effective_events(narrow) < 0.05 * narrow.size


def test_runs_are_mixed_in_proportion_to_their_events_over_their_cross_section():
    masses = [np.array([168.0, 171.0, 173.0, 175.5]), np.array([172.0, 173.0, 176.0, 174.0])]

    def line_shapes(pole):
        return top_line_shape(masses[0], pole) * top_line_shape(masses[1], pole)

    toy = GeneratedPrior((170.0, 176.0), (0.4, 0.6), (2.0, 1.0))
    assert np.allclose(toy.density(masses), 0.4 * line_shapes(170.0) / 2.0 + 0.6 * line_shapes(176.0))
    # Pythia's runs: a lighter top is produced more often, sigma ~ exp(-0.025 (M - 173 GeV)).
    pythia = GeneratedPrior((170.0, 176.0), (0.4, 0.6))
    assert relative_cross_section(170.0) == pytest.approx(np.exp(0.075))
    assert np.allclose(pythia.density(masses), 0.4 * line_shapes(170.0) / np.exp(0.075)
                       + 0.6 * line_shapes(176.0) / np.exp(-0.075))


def test_the_pt_slope_tilts_the_spectrum_by_the_stated_factor(rng):
    tops = _tops(rng, 173.0, 1000)
    weights = prior_weights(tops, PriorParameters(top_pt_slope=1.0), GeneratedPrior((173.0,), (1.0,)))
    expected = np.sqrt((1 + tops["t_had"]["pt"] / 500) * (1 + tops["t_lep"]["pt"] / 500))
    assert np.allclose(weights, expected, rtol=1e-9)


def _generated_file(path, mass: float | None, events: int, efficiency: float):
    settings = ["Beams:eCM = 13000."] + ([f"6:m0 = {mass}"] if mass is not None else [])
    with h5py.File(path, "w") as file:
        file.attrs["pythia_settings"] = str(settings)
        file.attrs["selection_efficiency"] = efficiency
        file["PARTONS/t_had/mass"] = np.full(events, 173.0)
    return path


def test_the_generated_prior_is_read_from_the_files(tmp_path):
    files = [_generated_file(tmp_path / "a.h5", None, 300, 0.3), _generated_file(tmp_path / "b.h5", 176.0, 100, 0.2),
             _generated_file(tmp_path / "c.h5", 173.0, 300, 0.3)]
    prior = GeneratedPrior.of_files(files)
    assert prior.masses == (173.0, 176.0)
    # Shares of the generated events, before the selection: 2000 at 173 GeV, 500 at 176 GeV.
    assert prior.shares == pytest.approx((0.8, 0.2))
    bare = tmp_path / "bare.h5"
    with h5py.File(bare, "w") as file:
        file["PARTONS/t_had/mass"] = np.ones(3)
    with pytest.raises(UnfoldError, match=r"bare\.h5: no pythia_settings"):
        GeneratedPrior.of_files([bare])


def test_the_equal_mass_assignment_finds_the_hadronic_top_of_parton_level_events(semileptonic_files):
    """Detector objects that are the generated top daughters, plus a spurious jet: the W mass and
    equal-mass terms must pick b_had q1 q2 for the hadronic top in most events (a random choice of the
    two b jets: half; the swapped b's can also give equal masses, and the neutrino's pz is a guess)."""
    with h5py.File(semileptonic_files[0]) as file:
        daughters = {name: {f: file[f"PARTONS/{name}/{f}"][()] for f in ("pt", "eta", "phi", "mass")}
                     for name in ("b_lep", "b_had", "q1", "q2", "lepton", "neutrino")}
    spurious = {**daughters["q1"], "phi": daughters["q1"]["phi"] + np.pi, "pt": 0.5 * daughters["q1"]["pt"]}
    slots = [daughters[name] for name in ("b_lep", "b_had", "q1", "q2")] + [spurious, daughters["lepton"]]
    n = len(daughters["b_had"]["pt"])
    column = np.zeros((n, len(slots)), bool)
    events = DetectorEvents.from_arrays(
        **{f: np.stack([slot[f] for slot in slots], axis=1) for f in ("pt", "eta", "phi", "mass")},
        btag=column | (np.arange(len(slots)) < 2), is_jet=column | (np.arange(len(slots)) < 5),
        is_lepton=column | (np.arange(len(slots)) == 5),
        met=daughters["neutrino"]["pt"], met_phi=daughters["neutrino"]["phi"])
    p4 = events.four_momenta()
    true_hadronic = four_vector_mass(p4[:, 1] + p4[:, 2] + p4[:, 3])
    tops = equal_mass_tops(events)
    assert np.mean(np.abs(tops["t_had"] - true_hadronic) < 0.01) > 0.75  # 0.81 on these 300 events
    assert np.median(np.abs(tops["t_lep"] - true_hadronic)) < 5.0  # the neutrino's pz from the W mass


@pytest.fixture(scope="module")
def broad_simulation() -> DetectorSample:
    """A smeared simulation generated at 170, 173 and 176 GeV."""
    rng = np.random.default_rng(11)
    parts = [_tops(rng, pole, 8000) for pole in (170.0, 173.0, 176.0)]
    tops = {name: {q: np.concatenate([p[name][q] for p in parts]) for q in ("mass", "pt")} for name in ("t_had", "t_lep")}
    return DetectorSample(_detector(rng, tops), np.ones(24_000), tops, GeneratedPrior((170.0, 173.0, 176.0), (1 / 3,) * 3, (1.0,) * 3))


@pytest.mark.parametrize(("pole", "slope"), [(173.0, 0.0), (174.5, 1.0), (171.0, -0.3)])
def test_the_template_fit_finds_the_mass_and_slope_of_smeared_data(broad_simulation, pole, slope):
    rng = np.random.default_rng(int(pole * 10))
    tops = _tops(rng, pole, 4000, slope)
    data = DetectorSample(_detector(rng, tops), np.ones(4000))
    fit = fit_prior(data, broad_simulation, free=FREE_PARAMETERS, resamples=8)
    assert 0 < fit.errors["top_mass"] < 1.0
    assert 0 < fit.errors["top_pt_slope"] < 0.5
    assert fit.parameters.top_mass == pytest.approx(pole, abs=3 * fit.errors["top_mass"])
    assert fit.parameters.top_pt_slope == pytest.approx(slope, abs=3 * fit.errors["top_pt_slope"])
    assert fit.chi2 < 2 * fit.ndf


def test_morphed_templates_match_a_sample_generated_between_the_simulated_masses(broad_simulation):
    """The morphing's template at 174.5 GeV (no run there) against 40k events generated at 174.5 GeV."""
    binned = _Binned(broad_simulation.observables)
    n_bins = {name: len(edges) + 2 for name, edges in binned.edges.items()}
    morphing = _MassMorphing(binned.indices(broad_simulation.observables), n_bins, broad_simulation.tops,
                             (166.0, 180.0))
    rng = np.random.default_rng(17)
    direct = binned.indices(_detector(rng, _tops(rng, 174.5, 40_000)))
    regression = morphing.regress(broad_simulation.weights)
    for pole, expect_agreement in ((174.5, True), (173.0, False)):
        chi2 = 0.0
        for name, (shares, variances) in morphing.templates(regression, pole).items():
            assert shares.sum() == pytest.approx(1.0)
            counts = np.bincount(direct[name], minlength=n_bins[name])
            chi2 += np.sum((counts - 40_000 * shares) ** 2 / (40_000 * shares + 40_000**2 * variances))
        ndf = sum(n_bins.values()) - len(n_bins)
        # t_had/mass alone moves by ~0.7 sigma per bin and GeV here: 1.5 GeV off is far outside.
        assert (chi2 < ndf + 4 * np.sqrt(2 * ndf)) == expect_agreement, (pole, chi2, ndf)


def test_a_fixed_parameter_stays_at_the_simulations(broad_simulation, rng):
    data = DetectorSample(_detector(rng, _tops(rng, 174.5, 3000)), np.ones(3000))
    fit = fit_prior(data, broad_simulation, free=("top_mass",), resamples=2)
    assert fit.parameters.top_pt_slope == 0.0
    assert fit.errors["top_pt_slope"] == 0.0
    assert fit.free == ("top_mass",)
    slope_only = fit_prior(data, broad_simulation, free=("top_pt_slope",), resamples=0)
    assert slope_only.parameters.top_mass == pytest.approx(173.0)  # the broad simulation's mean mass


def test_bad_fit_inputs_are_refused_in_one_line(broad_simulation, rng):
    data = DetectorSample(_detector(rng, _tops(rng, 173.0, 500)), np.ones(500))
    with pytest.raises(UnfoldError, match="top_width"):
        fit_prior(data, broad_simulation, free=("top_width",))
    partial = DetectorSample({k: v for k, v in data.observables.items() if k != "t_lep/pt"}, data.weights)
    with pytest.raises(UnfoldError, match="no reconstructed t_lep/pt"):
        fit_prior(partial, broad_simulation)
    with pytest.raises(UnfoldError, match="no truth tops"):
        fit_prior(data, DetectorSample(broad_simulation.observables, broad_simulation.weights))


def test_reweighted_draws_follow_the_new_prior_and_keep_each_event_whole(rng):
    events, n = 2000, 33
    poles = (170.0, 171.5, 173.0, 174.5, 176.0)  # a broad training prior, spaced by about a width
    # An unfolding that learned nothing about the mass returns its training prior in every draw.
    pole_of_draw = rng.choice(poles, (events, n))
    draws = {name: {"mass": np.sqrt(pole_of_draw**2 + pole_of_draw * top_width(pole_of_draw)
                                    * np.tan(np.pi * (rng.uniform(0.02, 0.98, (events, n)) - 0.5))),
                    "pt": rng.gamma(2.0, 50.0, (events, n))} for name in ("t_had", "t_lep")}
    draws["t_had"]["mass"][0] = np.nan  # an event no draw of which the prior allows
    weights = draw_weights(draws, PriorParameters(top_mass=175.5), GeneratedPrior(poles, (0.2,) * 5, (1.0,) * 5))
    assert weights.shape == (events, n)
    assert np.allclose(weights.sum(axis=1), n)
    assert np.all(weights[0] == 1.0)
    target = _breit_wigner(np.random.default_rng(3), 175.5, 200_000)
    unbiased = _window_mean(draws["t_had"]["mass"][1:].ravel(), weights[1:].ravel())
    assert unbiased == pytest.approx(_window_mean(target), abs=_tolerance(target, effective_events(weights[1:]), 200_000))
    assert abs(_window_mean(draws["t_had"]["mass"][1:].ravel()) - _window_mean(target)) > 1.0


def test_unfold_reweight_writes_the_prior_ratio_as_event_weights(semileptonic_files, tmp_path, capsys):
    source, out = semileptonic_files[1], tmp_path / "pt.h5"
    with h5py.File(source) as file:
        before = {key: file[key][()] for key in ("PARTONS/t_had/pt", "INPUTS/Momenta/pt")}
        has_weights = SPANET_WEIGHTS in file
    assert main(["reweight", str(source), "--out", str(out), "--top-pt-slope", "1"]) == 0
    assert "effective events" in capsys.readouterr().out
    with h5py.File(out) as file:
        weights = file[SPANET_WEIGHTS][()]
        t_had, t_lep = file["PARTONS/t_had/pt"][()], file["PARTONS/t_lep/pt"][()]
        assert np.array_equal(file["INPUTS/Momenta/pt"][()], before["INPUTS/Momenta/pt"])
    assert weights.mean() == pytest.approx(1.0, rel=1e-5)
    expected = np.sqrt((1 + t_had / 500) * (1 + t_lep / 500))
    assert np.allclose(weights, expected / expected.mean(), rtol=1e-5)
    with h5py.File(source) as file:  # the source is untouched
        assert (SPANET_WEIGHTS in file) == has_weights
        assert np.array_equal(file["PARTONS/t_had/pt"][()], before["PARTONS/t_had/pt"])
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("case", ["same", "missing"])
def test_unfold_reweight_refuses_bad_paths_in_one_line(semileptonic_files, tmp_path, capsys, case):
    source = semileptonic_files[1] if case == "same" else tmp_path / "nothing.h5"
    out = semileptonic_files[1] if case == "same" else tmp_path / "out.h5"
    assert main(["reweight", str(source), "--out", str(out), "--top-mass", "175"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert ("is the input file" if case == "same" else "nothing.h5: no such file") in error
    assert not (tmp_path / "out.h5").exists()


def test_unfold_merge_concatenates_the_events_and_records_the_top_mass_mixture(semileptonic_files, tmp_path):
    train, test = semileptonic_files
    heavier = tmp_path / "heavier.h5"
    shutil.copy(test, heavier)
    with h5py.File(heavier, "a") as file:  # as if generated with --pythia '6:m0 = 175.5'
        file.attrs["pythia_settings"] = str([*ast.literal_eval(file.attrs["pythia_settings"]), "6:m0 = 175.5"])
    out = tmp_path / "broad.h5"
    assert main(["merge", str(train), str(heavier), "--out", str(out)]) == 0
    with h5py.File(train) as a, h5py.File(heavier) as b, h5py.File(out) as merged:
        for key in ("INPUTS/Momenta/pt", "PARTONS/t_had/mass", "TARGETS/ht/b"):
            assert np.array_equal(merged[key][()], np.concatenate([a[key][()], b[key][()]]))
        events = [len(f["PARTONS/t_had/mass"]) for f in (a, b)]
        generated = [n / f.attrs["selection_efficiency"] for n, f in zip(events, (a, b), strict=True)]
        assert merged.attrs["selection_efficiency"] == pytest.approx(sum(events) / sum(generated))
    prior = GeneratedPrior.of_files([out])
    assert prior.masses == (173.0, 175.5)
    assert prior.shares == pytest.approx([g / sum(generated) for g in generated])
    assert prior == GeneratedPrior.of_files([train, heavier])


def test_unfold_merge_leaves_out_what_not_every_file_has_and_says_so(semileptonic_files, tmp_path, capsys):
    train, test = semileptonic_files
    older = tmp_path / "older.h5"
    shutil.copy(test, older)
    with h5py.File(older, "a") as file:  # as written before the regressions existed
        del file["REGRESSIONS"]
    out = tmp_path / "merged.h5"
    assert main(["merge", str(train), str(older), "--out", str(out)]) == 0
    assert "left out, not in every file: REGRESSIONS/" in capsys.readouterr().out
    with h5py.File(out) as merged:
        assert "REGRESSIONS" not in merged
        assert len(merged["INPUTS/Momenta/pt"]) == 400


@pytest.mark.parametrize("case", ["one-file", "other-shape", "same-out"])
def test_unfold_merge_refuses_what_cannot_be_concatenated_in_one_line(semileptonic_files, tmp_path, capsys, case):
    train, test = semileptonic_files
    other = tmp_path / "other.h5"
    shutil.copy(test, other)
    with h5py.File(other, "a") as file:  # another number of object slots
        pt = file["INPUTS/Momenta/pt"][()]
        del file["INPUTS/Momenta/pt"]
        file["INPUTS/Momenta/pt"] = pt[:, :-1]
    files = {"one-file": [train], "other-shape": [train, other], "same-out": [train, test]}[case]
    out = train if case == "same-out" else tmp_path / "merged.h5"
    assert main(["merge", *map(str, files), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert {"one-file": "at least two files", "other-shape": "other.h5: INPUTS/Momenta/pt has per-event shape",
            "same-out": "is one of the inputs"}[case] in error
    assert not (tmp_path / "merged.h5").exists()


def test_by_default_the_slope_is_fitted_and_the_mass_where_the_simulation_has_several(broad_simulation):
    rng = np.random.default_rng(101)
    data = DetectorSample(_detector(rng, _tops(rng, 173.0, 4000, 1.0)), np.ones(4000))
    fit = fit_prior(data, broad_simulation, resamples=6)
    assert fit.free == FREE_PARAMETERS
    assert fit.parameters.top_pt_slope == pytest.approx(1.0, abs=3 * fit.errors["top_pt_slope"])
    one_mass = broad_simulation.tops["t_had"]["mass"] < 171.5  # the run at 170 GeV alone
    narrow = DetectorSample({k: v[one_mass] for k, v in broad_simulation.observables.items()},
                            broad_simulation.weights[one_mass],
                            {t: {q: v[one_mass] for q, v in top.items()} for t, top in broad_simulation.tops.items()},
                            GeneratedPrior((170.0,), (1.0,), (1.0,)))
    fit = fit_prior(data, narrow, resamples=6)
    assert fit.free == ("top_pt_slope",)
    assert fit.parameters.top_mass == pytest.approx(170.0)  # the simulation's own, not fitted
    assert 0 < fit.errors["top_pt_slope"] < 0.6  # a third of the simulation
    assert fit.parameters.top_pt_slope == pytest.approx(1.0, abs=3 * fit.errors["top_pt_slope"])
    with pytest.raises(UnfoldError, match=r"generated at one top mass \(170.0 GeV\); fitting the top mass needs several"):
        fit_prior(data, narrow, free=("top_mass",))


def test_systematic_resampling_gives_each_draw_its_share_of_the_n_picks(rng):
    weights = rng.uniform(0, 1, (500, 33))
    weights[:, 0] = 0.0  # a draw the new prior forbids
    picks = systematic_resample(weights, rng)
    counts = np.stack([np.bincount(row, minlength=33) for row in picks])
    expected = 33 * weights / weights.sum(axis=1, keepdims=True)
    assert np.all(counts[:, 0] == 0)
    assert np.all((counts >= np.floor(expected)) & (counts <= np.ceil(expected)))
    assert np.all(counts.sum(axis=1) == 33)
