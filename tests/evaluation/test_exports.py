"""Cross-section exports: JSON and ROOT files read back equal to what was written, variances included."""

from __future__ import annotations

import numpy as np
import pytest
import uproot

from evaluation.cross_sections import differential_cross_section
from evaluation.errors import ReportError
from evaluation.exports import read_json, read_root, write_json, write_root

EDGES = np.array([0.0, 50.0, 100.0, 200.0, 400.0])


@pytest.fixture
def sections(rng):
    """Truth and one unfolding (5 draws, per-event weights) of a pT-like observable."""
    truth = rng.exponential(100.0, 300)
    draws = truth[:, None] * rng.normal(1.0, 0.1, (300, 5))
    weights = rng.uniform(0.5, 1.5, 300)
    common = {"observable": "parton/t_had/pt", "label": "$p_T(t_{had})$", "unit": "GeV"}
    return [
        differential_cross_section(truth, EDGES, 0.4, event_weights=weights, **common),
        differential_cross_section(draws, EDGES, 0.4, event_weights=weights, source="VLD model", **common),
    ]


def test_json_round_trip(sections, tmp_path):
    path = tmp_path / "cross_sections.json"
    write_json(path, sections)
    back = read_json(path)
    assert [s.source for s in back] == ["truth", "VLD model"]
    for written, read in zip(sections, back, strict=True):
        for field in ("edges", "values", "stat_data", "stat_draws"):
            np.testing.assert_array_equal(getattr(read, field), getattr(written, field))
        assert (read.observable, read.unit, read.n_draws, read.luminosity_fb_inv, read.total) == (
            written.observable, written.unit, written.n_draws, written.luminosity_fb_inv, written.total)


def test_root_round_trip_keeps_values_and_both_variances(sections, tmp_path):
    path = tmp_path / "cross_sections.root"
    write_root(path, sections)
    histograms = read_root(path)
    assert set(histograms) == {"parton/t_had/pt/truth", "parton/t_had/pt/VLD_model", "parton/t_had/pt/VLD_model_draws"}
    truth, model = sections
    for key, section, error in (("truth", truth, truth.stat_data), ("VLD_model", model, model.stat_data),
                                ("VLD_model_draws", model, model.stat_draws)):
        h = histograms[f"parton/t_had/pt/{key}"]
        np.testing.assert_allclose(h.axes[0].edges, EDGES)
        np.testing.assert_allclose(h.values(), section.values, rtol=1e-12)
        np.testing.assert_allclose(h.variances(), error**2, rtol=1e-12)
    with uproot.open(path) as file:  # what ROOT's GetBinError reads: sqrt of the sum of squares
        th1 = file["parton/t_had/pt/VLD_model"]
        assert th1.classname == "TH1D"
        np.testing.assert_allclose(th1.errors(), model.stat_data, rtol=1e-12)


def test_one_luminosity_per_export(sections, tmp_path):
    other = differential_cross_section(np.ones(3), EDGES, 1.0, observable="x")
    with pytest.raises(ReportError, match="one luminosity"):
        write_json(tmp_path / "x.json", [sections[0], other])
    with pytest.raises(ReportError, match="one luminosity"):
        write_root(tmp_path / "x.root", [sections[0], other])
