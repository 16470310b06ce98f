"""The mass chi-square baseline: exact synthetic ttbar events, the neutrino solution, the
resolution fit (against masses from the `vector` package) and the real SPANet example."""

from __future__ import annotations

from itertools import permutations

import h5py
import numpy as np
import pytest
import vector

from recon.chi_square import (
    TOP_MASS,
    W_MASS,
    ChiSquareBaseline,
    DetectorEvents,
    central_half_width,
    channel_of,
    neutrino_pz_solutions,
)
from recon.errors import ReconError
from recon.event_topology import EventTopology

B_MASS = 4.8
MUON_MASS = 0.10566


def _vectors(p4: np.ndarray) -> vector.MomentumNumpy4D:
    """``vector`` array of (..., 4) (E, px, py, pz) four-momenta."""
    return vector.array({"E": p4[..., 0], "px": p4[..., 1], "py": p4[..., 2], "pz": p4[..., 3]})


def _components(p4: vector.MomentumNumpy4D) -> np.ndarray:
    """(..., 4) (E, px, py, pz), the baseline's component order."""
    return np.stack([p4.E, p4.px, p4.py, p4.pz], axis=-1)


def _two_body(
    parent: np.ndarray, m1: float, m2: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic two-body decay of (E, 4) parents into daughters of masses m1, m2."""
    frame = _vectors(parent)
    mass = frame.mass
    p_star = np.sqrt((mass**2 - (m1 + m2) ** 2) * (mass**2 - (m1 - m2) ** 2)) / (2 * mass)
    cos_theta = rng.uniform(-1, 1, len(mass))
    direction = vector.array(
        {"rho": np.sqrt(1 - cos_theta**2), "phi": rng.uniform(0, 2 * np.pi, len(mass)), "z": cos_theta}
    )
    daughters = []
    for sign, m in ((1.0, m1), (-1.0, m2)):
        rest = vector.array(
            {"px": sign * p_star * direction.x, "py": sign * p_star * direction.y,
             "pz": sign * p_star * direction.z, "mass": np.full(len(mass), m)}
        )
        daughters.append(_components(rest.boost_p4(frame)))
    return daughters[0], daughters[1]


def _tops(
    n: int, rng: np.random.Generator, lepton_mass: float | None = None
) -> tuple[np.ndarray, ...]:
    """(b, W daughter 1, W daughter 2) of n on-shell tops, each (n, 4); a lepton and neutrino if leptonic."""
    top = vector.array(
        {"pt": rng.uniform(20, 250, n), "eta": rng.uniform(-2, 2, n),
         "phi": rng.uniform(0, 2 * np.pi, n), "mass": np.full(n, TOP_MASS)}
    )
    b, w = _two_body(_components(top), B_MASS, W_MASS, rng)
    d1, d2 = _two_body(w, lepton_mass if lepton_mass is not None else 0.0, 0.0, rng)
    return b, d1, d2


def _pt_eta_phi_m(p4: np.ndarray) -> tuple[np.ndarray, ...]:
    v = _vectors(p4)
    return v.pt, v.eta, v.phi, np.maximum(v.mass, 0.0)


def _extra_jets(n: int, count: int, below: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, count, 4) jets softer than ``below`` (n,) in random directions: never among the leading ones."""
    jets = vector.array(
        {"pt": below[:, None] * rng.uniform(0.3, 0.95, (n, count)), "eta": rng.uniform(-2.5, 2.5, (n, count)),
         "phi": rng.uniform(0, 2 * np.pi, (n, count)), "mass": np.full((n, count), 5.0)}
    )
    return _components(jets)


def _shuffle_into_slots(
    objects: np.ndarray, n_slots: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Place (E, M, 4) objects into random slots of n_slots; returns (E, n_slots, 4), real mask, slot of each object."""
    n_events, n_objects, _ = objects.shape
    slot_of = np.argsort(rng.random((n_events, n_slots)), axis=1)[:, :n_objects]
    placed = np.zeros((n_events, n_slots, 4))
    placed[:, :, :2] = 1.0  # padding: any finite, massless vector
    np.put_along_axis(placed, slot_of[:, :, None], objects, axis=1)
    real = np.zeros((n_events, n_slots), dtype=bool)
    np.put_along_axis(real, slot_of, True, axis=1)
    return placed, real, slot_of


def _events(
    objects: np.ndarray, real: np.ndarray, jets: np.ndarray, tagged: np.ndarray, met_xy: np.ndarray
) -> DetectorEvents:
    pt, eta, phi, mass = _pt_eta_phi_m(objects)
    return DetectorEvents.from_arrays(
        pt=np.where(real, pt, 0.0),
        eta=np.where(real, eta, 0.0),
        phi=np.where(real, phi, 0.0),
        mass=np.where(real, mass, 0.0),
        btag=tagged,
        is_jet=jets,
        is_lepton=real & ~jets,
        met=vector.array({"x": met_xy[:, 0], "y": met_xy[:, 1]}).rho,
        met_phi=vector.array({"x": met_xy[:, 0], "y": met_xy[:, 1]}).phi,
    )


def allhadronic_events(
    n: int, rng: np.random.Generator, n_extra: int = 2, n_slots: int = 10
) -> tuple[DetectorEvents, dict[str, np.ndarray]]:
    """Exact all-hadronic ttbar: six on-shell daughters plus softer extra jets, in shuffled slots."""
    b1, q1, q2 = _tops(n, rng)
    b2, q3, q4 = _tops(n, rng)
    partons = np.stack([b1, q1, q2, b2, q3, q4], axis=1)
    softest = _pt_eta_phi_m(partons)[0].min(axis=1)
    objects = np.concatenate([partons, _extra_jets(n, n_extra, softest, rng)], axis=1)
    placed, real, slot_of = _shuffle_into_slots(objects, n_slots, rng)
    tagged = np.zeros_like(real)
    np.put_along_axis(tagged, slot_of[:, [0, 3]], True, axis=1)
    events = _events(placed, real, real, tagged, np.zeros((n, 2)))
    return events, {"t1": slot_of[:, 0:3], "t2": slot_of[:, 3:6]}


def semileptonic_events(
    n: int, rng: np.random.Generator, n_extra: int = 2, n_slots: int = 8
) -> tuple[DetectorEvents, dict[str, np.ndarray], np.ndarray]:
    """Exact semi-leptonic ttbar (muon), the MET equal to the neutrino pt; also returns the neutrino (E, 4)."""
    b_lep, lepton, neutrino = _tops(n, rng, lepton_mass=MUON_MASS)
    b_had, q1, q2 = _tops(n, rng)
    partons = np.stack([lepton, b_lep, b_had, q1, q2], axis=1)
    softest = _pt_eta_phi_m(partons[:, 1:])[0].min(axis=1)
    objects = np.concatenate([partons, _extra_jets(n, n_extra, softest, rng)], axis=1)
    placed, real, slot_of = _shuffle_into_slots(objects, n_slots, rng)
    jets = real.copy()
    np.put_along_axis(jets, slot_of[:, :1], False, axis=1)
    tagged = np.zeros_like(real)
    np.put_along_axis(tagged, slot_of[:, [1, 2]], True, axis=1)
    events = _events(placed, real, jets, tagged, neutrino[:, 1:3])
    targets = {"lt": slot_of[:, [1, 0]], "ht": slot_of[:, 2:5]}
    return events, targets, neutrino


def _same_top(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(E,) the b slot agrees and the W daughters agree as a set."""
    return (predicted[:, 0] == truth[:, 0]) & (
        np.sort(predicted[:, 1:], axis=1) == np.sort(truth[:, 1:], axis=1)
    ).all(axis=1)


@pytest.fixture(scope="module")
def allhadronic(event_files) -> EventTopology:
    return EventTopology.from_yaml(event_files["ttbar-allhadronic"])


@pytest.fixture(scope="module")
def semileptonic(event_files) -> EventTopology:
    return EventTopology.from_yaml(event_files["ttbar-semileptonic"])


BASELINE = ChiSquareBaseline(sigma_t=15.0, sigma_W=10.0, sigma_t_lep=20.0)


@pytest.mark.parametrize(
    ("n_leading_jets", "use_btag"), [(6, True), (6, False), (7, True), (7, False)]
)
def test_allhadronic_recovers_exact_tops(allhadronic, rng, n_leading_jets, use_btag):
    events, truth = allhadronic_events(400, rng)
    baseline = ChiSquareBaseline(
        sigma_t=15.0, sigma_W=10.0, n_leading_jets=n_leading_jets, use_btag=use_btag
    )
    predicted = baseline.assign(events, allhadronic)
    assert list(predicted) == ["t1", "t2"]
    assert all(p.shape == (400, 3) and p.dtype == np.int64 for p in predicted.values())
    direct = _same_top(predicted["t1"], truth["t1"]) & _same_top(predicted["t2"], truth["t2"])
    swapped = _same_top(predicted["t1"], truth["t2"]) & _same_top(predicted["t2"], truth["t1"])
    assert np.mean(direct | swapped) > 0.99


@pytest.mark.parametrize("n_leading_jets", [6, 7])
def test_semileptonic_recovers_exact_tops(semileptonic, rng, n_leading_jets):
    """Exact whenever the smaller-|pz| neutrino is the true one; otherwise the leptonic term misleads it at times."""
    events, truth, neutrino = semileptonic_events(600, rng)
    baseline = ChiSquareBaseline(
        sigma_t=15.0, sigma_W=10.0, sigma_t_lep=20.0, n_leading_jets=n_leading_jets
    )
    predicted = baseline.assign(events, semileptonic)
    assert list(predicted) == ["lt", "ht"]
    np.testing.assert_array_equal(predicted["lt"][:, 1], truth["lt"][:, 1])
    correct = (predicted["lt"][:, 0] == truth["lt"][:, 0]) & _same_top(predicted["ht"], truth["ht"])
    true_neutrino = np.isclose(events.neutrino()[:, 3], neutrino[:, 3], rtol=1e-6, atol=1e-6)
    assert true_neutrino.mean() > 0.5
    assert np.mean(correct[true_neutrino]) > 0.99
    assert np.mean(correct) > 0.9


def _mass(p4: np.ndarray) -> np.ndarray:
    """Invariant mass of (..., 4) (E, px, py, pz)."""
    return np.sqrt(np.maximum(p4[..., 0] ** 2 - (p4[..., 1:] ** 2).sum(axis=-1), 0.0))


def _hadronic_chi2(
    baseline: ChiSquareBaseline, b: np.ndarray, q1: np.ndarray, q2: np.ndarray
) -> np.ndarray:
    top = (_mass(b + q1 + q2) - baseline.m_t) / baseline.sigma_t
    w = (_mass(q1 + q2) - baseline.m_W) / baseline.sigma_W
    return top**2 + w**2


def _brute_force_chi2(
    baseline: ChiSquareBaseline, events: DetectorEvents, channel: str
) -> np.ndarray:
    """(E,) minimum chi-square over every ordered jet tuple, one event at a time, momenta via `vector`."""
    best = np.full(events.n_events, np.inf)
    leptonic_w = events.lepton_momentum() + events.neutrino()
    size = 6 if channel == "allhadronic" else 4
    for e in range(events.n_events):
        jets = np.flatnonzero(events.is_jet[e])
        leading = jets[np.argsort(-events.pt[e, jets], kind="stable")][: baseline.n_leading_jets]
        v = vector.array({f: getattr(events, f)[e, leading] for f in ("pt", "eta", "phi", "mass")})
        p4 = np.stack([v.E, v.px, v.py, v.pz], axis=1)
        tagged = events.btag[e, leading]
        wanted = min(int(tagged.sum()), 2)
        for tup in permutations(range(len(leading)), size):
            b_slots = [tup[0], tup[3]] if channel == "allhadronic" else [tup[0], tup[1]]
            if baseline.use_btag and tagged[b_slots].sum() != wanted:
                continue
            if channel == "allhadronic":
                chi2 = _hadronic_chi2(baseline, *p4[list(tup[0:3])]) + _hadronic_chi2(
                    baseline, *p4[list(tup[3:6])]
                )
            else:
                leptonic = (_mass(p4[tup[0]] + leptonic_w[e]) - baseline.m_t) / baseline.sigma_t_lep
                chi2 = leptonic**2 + _hadronic_chi2(baseline, *p4[list(tup[1:4])])
            best[e] = min(best[e], chi2)
    return best


def _chi2_of(
    baseline: ChiSquareBaseline, events: DetectorEvents, assigned: dict[str, np.ndarray]
) -> np.ndarray:
    """(E,) chi-square of a given assignment, momenta via `vector`."""
    momenta = {
        name: [_vector_p4(events, slots[:, k : k + 1]) for k in range(slots.shape[1])]
        for name, slots in assigned.items()
    }
    if "t1" in momenta:
        return _hadronic_chi2(baseline, *momenta["t1"]) + _hadronic_chi2(baseline, *momenta["t2"])
    leptonic_w = events.lepton_momentum() + events.neutrino()
    leptonic = (_mass(momenta["lt"][0] + leptonic_w) - baseline.m_t) / baseline.sigma_t_lep
    return leptonic**2 + _hadronic_chi2(baseline, *momenta["ht"])


def _vector_p4(events: DetectorEvents, slots: np.ndarray) -> np.ndarray:
    """(E, 4) summed four-momentum (E, px, py, pz) of the objects ``slots`` (E, K), via `vector`."""
    total = np.zeros((events.n_events, 4))
    for column in slots.T:
        kinematics = {
            name: np.take_along_axis(getattr(events, name), column[:, None], axis=1)[:, 0]
            for name in ("pt", "eta", "phi", "mass")
        }
        v = vector.array(kinematics)
        total += np.stack([v.E, v.px, v.py, v.pz], axis=1)
    return total


@pytest.mark.parametrize("use_btag", [True, False])
@pytest.mark.parametrize("channel", ["allhadronic", "semileptonic"])
def test_minimum_matches_brute_force_enumeration(channel, use_btag, allhadronic, semileptonic, rng):
    """Smeared events with random tags and 5 to 8 jets: the vectorised minimum is the brute-force one."""
    topology = allhadronic if channel == "allhadronic" else semileptonic
    make = allhadronic_events if channel == "allhadronic" else semileptonic_events
    events = _smeared(make(24, rng, n_extra=2)[0], rng, 0.15)
    dropped = events.is_jet & (rng.random(events.pt.shape) < 0.15)
    tags = rng.random(events.pt.shape) < 0.3
    events = DetectorEvents(
        **{
            **events.__dict__,
            "is_jet": events.is_jet & ~dropped,
            "btag": tags & events.is_jet & ~dropped,
        }
    )
    baseline = ChiSquareBaseline(sigma_t=20.0, sigma_W=12.0, sigma_t_lep=25.0, use_btag=use_btag)
    assigned = baseline.assign(events, topology)
    expected = _brute_force_chi2(baseline, events, channel)
    found = (assigned["t1"] if channel == "allhadronic" else assigned["ht"])[:, 0] >= 0
    np.testing.assert_array_equal(found, np.isfinite(expected))
    assert found.sum() > 10
    chi2 = _chi2_of(baseline, events.subset(found), {k: v[found] for k, v in assigned.items()})
    np.testing.assert_allclose(chi2, expected[found], rtol=1e-7, atol=1e-9)


def test_btag_fills_b_slots_with_tagged_jets(allhadronic, rng):
    """Tags moved onto random jets: whenever two are among the leading six, both b slots hold them."""
    events, _ = allhadronic_events(300, rng, n_extra=0, n_slots=6)
    random_tags = rng.random(events.btag.shape) < 0.35
    retagged = DetectorEvents(**{**events.__dict__, "btag": random_tags & events.is_jet})
    predicted = BASELINE.assign(retagged, allhadronic)
    b_slots = np.stack([predicted["t1"][:, 0], predicted["t2"][:, 0]], axis=1)
    b_tags = np.take_along_axis(retagged.btag, b_slots, axis=1).sum(axis=1)
    expected = np.minimum(retagged.btag.sum(axis=1), 2)
    np.testing.assert_array_equal(b_tags, expected)


def test_too_few_jets_or_no_lepton_gives_unassigned(allhadronic, semileptonic, rng):
    events, _ = allhadronic_events(20, rng, n_extra=0, n_slots=8)
    dropped = events.is_jet.copy()
    dropped[:10, np.argmax(events.is_jet[:10], axis=1)] = False
    few = DetectorEvents(**{**events.__dict__, "is_jet": dropped, "btag": events.btag & dropped})
    predicted = BASELINE.assign(few, allhadronic)
    assert np.all(predicted["t1"][:10] == -1)
    assert np.all(predicted["t2"][:10] == -1)
    assert np.all(predicted["t1"][10:] >= 0)

    events, _, _ = semileptonic_events(20, rng)
    no_lepton = DetectorEvents(**{**events.__dict__, "is_lepton": np.zeros_like(events.is_lepton)})
    predicted = BASELINE.assign(no_lepton, semileptonic)
    assert np.all(predicted["lt"] == -1)
    assert np.all(predicted["ht"] == -1)


def test_assignments_use_distinct_jets(semileptonic, allhadronic, rng):
    events, _, _ = semileptonic_events(200, rng)
    predicted = BASELINE.assign(events, semileptonic)
    jets = np.concatenate([predicted["lt"][:, :1], predicted["ht"]], axis=1)
    assert all(len(set(row)) == 4 for row in jets)
    assert np.take_along_axis(events.is_jet, jets, axis=1).all()
    events, _ = allhadronic_events(200, rng)
    predicted = BASELINE.assign(events, allhadronic)
    jets = np.concatenate([predicted["t1"], predicted["t2"]], axis=1)
    assert all(len(set(row)) == 6 for row in jets)


def test_neutrino_pz_has_the_true_solution(rng):
    """With the true MET of an on-shell W decay, one of the two solutions is the true pz."""
    _, lepton, neutrino = _tops(2000, rng, lepton_mass=MUON_MASS)
    solutions = neutrino_pz_solutions(lepton, neutrino[:, 1], neutrino[:, 2])
    error = np.abs(solutions - neutrino[:, 3:4]).min(axis=1)
    assert np.all(error < 1e-6 * (1 + np.abs(neutrino[:, 3])))
    # Each solution satisfies the W mass constraint.
    for pz in solutions.T:
        nu = vector.array({"px": neutrino[:, 1], "py": neutrino[:, 2], "pz": pz, "mass": np.zeros_like(pz)})
        np.testing.assert_allclose((_vectors(lepton) + nu).mass, W_MASS, rtol=1e-6)


def test_neutrino_picks_smaller_pz_and_real_part(rng):
    events, _, _ = semileptonic_events(300, rng)
    lepton = events.lepton_momentum()
    met_x, met_y = events.met * np.cos(events.met_phi), events.met * np.sin(events.met_phi)
    solutions = neutrino_pz_solutions(lepton, met_x, met_y)
    np.testing.assert_allclose(
        np.abs(events.neutrino()[:, 3]), np.abs(solutions).min(axis=1), rtol=1e-9
    )
    # A large MET opposite the lepton puts the transverse mass above m_W: no real solution,
    # both entries are the real part k pz_l / A.
    away = -500.0 * lepton[:, 1:3] / np.hypot(lepton[:, 1], lepton[:, 2])[:, None]
    complex_case = neutrino_pz_solutions(lepton, away[:, 0], away[:, 1])
    k = 0.5 * (W_MASS**2 - MUON_MASS**2) + (lepton[:, 1:3] * away).sum(axis=1)
    real_part = k * lepton[:, 3] / (lepton[:, 0] ** 2 - lepton[:, 3] ** 2)
    np.testing.assert_allclose(complex_case, np.stack([real_part, real_part], axis=1), rtol=1e-6)


def test_central_half_width_recovers_gaussian_sigma(rng):
    values = np.concatenate([rng.normal(80.0, 9.0, 200_000), rng.uniform(0, 400, 2_000)])
    assert central_half_width(values) == pytest.approx(9.0, rel=0.03)
    assert np.std(values) > 1.5 * 9.0  # the tails that the central interval ignores
    with pytest.raises(ReconError, match="at least 2"):
        central_half_width([1.0])


def _smeared(events: DetectorEvents, rng: np.random.Generator, resolution: float) -> DetectorEvents:
    """Scale every jet's pt and mass by one Gaussian factor: masses stretch, directions stay."""
    factor = np.where(events.is_jet, 1 + resolution * rng.standard_normal(events.pt.shape), 1.0)
    return DetectorEvents(
        **{**events.__dict__, "pt": events.pt * factor, "mass": events.mass * factor}
    )


def _vector_mass(events: DetectorEvents, slots: np.ndarray) -> np.ndarray:
    """Invariant mass of the objects ``slots`` (E, K), momenta via the `vector` package."""
    return _mass(_vector_p4(events, slots))


def test_fit_resolutions_match_matched_masses(allhadronic, rng):
    events, truth = allhadronic_events(1500, rng)
    events = _smeared(events, rng, 0.08)
    truth["t2"][:200] = -1  # partially matched events: t2 unused there
    baseline = ChiSquareBaseline.fit(events, truth, allhadronic, centres="fitted")
    matched = events.subset(slice(200, None))
    top = np.concatenate(
        [_vector_mass(events, truth["t1"]), _vector_mass(matched, truth["t2"][200:])]
    )
    w = np.concatenate(
        [_vector_mass(events, truth["t1"][:, 1:]), _vector_mass(matched, truth["t2"][200:, 1:])]
    )
    assert baseline.sigma_t == pytest.approx(central_half_width(top), rel=1e-6)
    assert baseline.sigma_W == pytest.approx(central_half_width(w), rel=1e-6)
    assert baseline.m_t == pytest.approx(np.median(top), rel=1e-6)
    assert baseline.sigma_t_lep is None
    # 8 % per-jet smearing widens the top peak to roughly 8 % of its mass.
    assert 0.03 * TOP_MASS < baseline.sigma_t < 0.12 * TOP_MASS
    # The smeared events are still mostly solved.
    predicted = baseline.assign(events, allhadronic)
    direct = _same_top(predicted["t1"], truth["t1"])
    swapped = _same_top(predicted["t2"], truth["t1"])
    assert np.mean((direct | swapped)[200:]) > 0.5


def test_fit_semileptonic_leptonic_width(semileptonic, rng):
    events, truth, _ = semileptonic_events(1500, rng)
    baseline = ChiSquareBaseline.fit(_smeared(events, rng, 0.05), truth, semileptonic)
    assert baseline.m_t == TOP_MASS
    assert baseline.m_W == W_MASS
    assert baseline.sigma_t_lep is not None
    assert baseline.sigma_t_lep > 0
    # Exact events with the wrong neutrino solution still give a finite, sizeable width.
    exact = ChiSquareBaseline.fit(events, truth, semileptonic)
    assert exact.sigma_t < 1e-3 < exact.sigma_t_lep


def test_rejects_unsupported_topology_and_bad_inputs(rng, spanet_example, semileptonic):
    _, event_file = spanet_example
    tth = EventTopology.from_yaml(event_file)
    events, truth, _ = semileptonic_events(10, rng)
    with pytest.raises(ReconError, match=r"only ttbar.*'h'"):
        BASELINE.assign(events, tth)
    with pytest.raises(ReconError, match="sigma_t_lep is needed"):
        ChiSquareBaseline(sigma_t=15.0, sigma_W=10.0).assign(events, semileptonic)
    with pytest.raises(ReconError, match="eta has shape"):
        DetectorEvents(**{**events.__dict__, "eta": events.eta[:, :3]})
    with pytest.raises(ReconError, match="NaN"):
        DetectorEvents(**{**events.__dict__, "pt": np.where(events.is_jet, np.nan, events.pt)})
    with pytest.raises(ReconError, match="sigma_W must be a positive"):
        ChiSquareBaseline(sigma_t=15.0, sigma_W=0.0)
    with pytest.raises(ReconError, match=r"targets\['ht'\] has shape"):
        ChiSquareBaseline.fit(events, {**truth, "ht": truth["ht"][:5]}, semileptonic)
    with pytest.raises(ReconError, match="centres='median'"):
        ChiSquareBaseline.fit(events, truth, semileptonic, centres="median")  # type: ignore[arg-type]
    with pytest.raises(ReconError, match="found 0 fully matched"):
        ChiSquareBaseline.fit(events, {**truth, "ht": np.full_like(truth["ht"], -1)}, semileptonic)
    assert channel_of(semileptonic) == "semileptonic"


def test_runs_on_the_real_spanet_example(spanet_example, semileptonic):
    """The ttH file's inputs read through from_inputs under the semi-leptonic ttbar event file; the
    ttbar hypothesis finds its hadronic top far above chance."""
    path, _ = spanet_example
    with h5py.File(path) as file:
        inputs = {
            kind: {s.name: np.stack([file[f"INPUTS/{s.name}/{f}"][:] for f in s.features], axis=-1) for s in sources}
            for kind, sources in (("sequential", semileptonic.sequential), ("global", semileptonic.globals))
        }
        masks = {"Momenta": file["INPUTS/Momenta/MASK"][:]}
        events = DetectorEvents.from_inputs(inputs["sequential"], masks, inputs["global"], semileptonic, origin=str(path))
        truth = {
            name: np.stack([file[f"TARGETS/{name}/{d}"][:] for d in r.daughters], axis=1)
            for name, r in (
                ("lt", semileptonic.resonance("lt")),
                ("ht", semileptonic.resonance("ht")),
            )
        }
        mask = file["INPUTS/Momenta/MASK"][:]
    assert np.all(events.is_lepton.sum(axis=1) == 1)
    assert np.all(events.is_jet.sum(axis=1) + 1 == mask.sum(axis=1))
    matched_lepton = truth["lt"][:, 1] >= 0
    np.testing.assert_array_equal(
        events.leading_lepton()[matched_lepton], truth["lt"][matched_lepton, 1]
    )
    baseline = ChiSquareBaseline.fit(events, truth, semileptonic, centres="fitted")
    assert 5.0 < baseline.sigma_W < 30.0
    assert 10.0 < baseline.sigma_t < 60.0
    predicted = baseline.assign(events, semileptonic)
    assert np.all(predicted["lt"][:, 1] == events.leading_lepton())
    reconstructable = (truth["ht"] >= 0).all(axis=1)
    efficiency = _same_top(predicted["ht"], truth["ht"])[reconstructable].mean()
    # A random (b, {q, q'}) of the six leading jets is right 1 time in 60.
    assert efficiency > 5 / 60
