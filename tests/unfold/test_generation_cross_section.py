"""The generator's cross section in the generated files: Pythia's sigmaGen with the decay filter's
acceptance, combined over shards by tried events, and the equivalent luminosity it gives."""

from __future__ import annotations

import math

import h5py
import pytest
import pythia8mc

from unfold.errors import UnfoldError
from unfold.generation.cross_section import CrossSection, CrossSectionMeter, combine
from unfold.generation.processes import BASE_SETTINGS, get_process

HADRONIC = (1, 2, 3, 4, 5)
LIGHT_LEPTONS = (11, 13)


def test_combination_weights_each_estimate_by_its_tried_events():
    parts = [CrossSection(100.0, 4.0, 100, 0.3), CrossSection(130.0, 2.0, 300, 0.4)]
    combined = combine(parts)
    assert combined.tried == 400
    assert combined.sigma_fb == pytest.approx((100 * 100 + 300 * 130) / 400)
    assert combined.error_fb == pytest.approx(math.hypot(100 * 4.0, 300 * 2.0) / 400)
    assert combined.filter_acceptance == pytest.approx((100 * 0.3 + 300 * 0.4) / 400)
    assert combined.luminosity_fb_inv == pytest.approx(400 / combined.sigma_fb)
    # Equal shards: the plain mean, and the error falls as 1/sqrt(shards).
    same = combine([CrossSection(50.0, 2.0, 10, 1.0)] * 4)
    assert (same.sigma_fb, same.error_fb) == (pytest.approx(50.0), pytest.approx(1.0))


def test_combination_refuses_nothing_to_combine():
    with pytest.raises(UnfoldError, match="no estimates"):
        combine([])


def _process_level(settings: tuple[str, ...], events: int) -> CrossSection:
    """The meter's cross section after ``events`` ttbar events, hard process and W decays only."""
    pythia = pythia8mc.Pythia("", False)
    decay_filter = pythia8mc.ResonanceDecayFilterHook(pythia.settings)
    pythia.setUserHooksPtr(decay_filter)
    for line in (*BASE_SETTINGS, *settings, "PartonLevel:all = off", "HadronLevel:all = off",
                 "Random:setSeed = on", "Random:seed = 5"):
        assert pythia.readString(line)
    assert pythia.init()
    meter = CrossSectionMeter()
    meter.follow(pythia, decay_filter)
    for _ in range(events):
        pythia.next()
    return meter.cross_section(events)


def _branching(pythia_ids: tuple[int, ...]) -> float:
    """Pythia's W branching fraction into channels whose first product is one of ``pythia_ids``."""
    entry = pythia8mc.Pythia("", False).particleData.particleDataEntryPtr(24)
    return sum(entry.channel(i).bRatio() for i in range(entry.sizeChannels())
               if abs(entry.channel(i).product(0)) in pythia_ids)


def test_semileptonic_cross_section_holds_the_branching_fractions():
    """onMode's open fraction is in sigmaGen, the filter's acceptance is measured: one W -> l nu
    and one W -> q q' among the open channels, 2 B_l B_q / (B_l + B_q)^2, and semi-leptonic over
    all-hadronic = 2 B_l / B_q."""
    events = 2000
    semileptonic = _process_level(get_process("ttbar-semileptonic").decay_settings(), events)
    hadronic = _process_level(get_process("ttbar-allhadronic").decay_settings(), events)
    b_l, b_q = _branching(LIGHT_LEPTONS), _branching(HADRONIC)
    expected = 2 * b_l * b_q / (b_l + b_q) ** 2
    assert hadronic.filter_acceptance == 1.0
    assert semileptonic.filter_acceptance == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / events))
    ratio = semileptonic.sigma_fb / hadronic.sigma_fb
    error = ratio * math.hypot(semileptonic.error_fb / semileptonic.sigma_fb, hadronic.error_fb / hadronic.sigma_fb)
    assert ratio == pytest.approx(2 * b_l / b_q, abs=4 * error)


def test_meter_without_pythia_is_an_error():
    with pytest.raises(UnfoldError, match="follows no Pythia"):
        CrossSectionMeter().cross_section(10)


def test_generated_files_record_cross_section_and_luminosity(semileptonic_files):
    train, test = semileptonic_files
    with h5py.File(train) as a, h5py.File(test) as b:
        sigma, tried = a.attrs["cross_section_fb"], a.attrs["events_generated"]
        # Pythia's LO ttbar at 13 TeV is about 500 pb; e/mu + jets keeps 2 B_l B_q ~ 0.29 of it.
        assert 1.0e5 < sigma < 2.0e5
        assert 0 < a.attrs["cross_section_error_fb"] < 0.1 * sigma
        assert b.attrs["cross_section_fb"] == sigma
        luminosities = a.attrs["luminosity_fb_inv"], b.attrs["luminosity_fb_inv"]
        assert sum(luminosities) == pytest.approx(tried / sigma)
        assert luminosities[0] / luminosities[1] == pytest.approx(len(a["INPUTS/Momenta/MASK"]) / len(b["INPUTS/Momenta/MASK"]))


def test_samples_carry_the_luminosity_of_the_events_unfolded(tmp_path):
    """``unfold sample --limit`` unfolds a share of the data file: its luminosity shrinks alike."""
    from unfold.tasks.sample import _generated_luminosity

    data = tmp_path / "data.h5"
    with h5py.File(data, "w") as file:
        file.attrs.update(cross_section_fb=150e3, cross_section_error_fb=4e3, luminosity_fb_inv=0.02)
    assert _generated_luminosity(data, 0.25) == {
        "cross_section_fb": 150e3, "cross_section_error_fb": 4e3, "luminosity_fb_inv": pytest.approx(0.005)}
    with h5py.File(data, "w") as file:
        file.attrs["process"] = "ttbar-semileptonic"
    assert _generated_luminosity(data, 0.25) == {}
