"""The report folder: a previous report is replaced whole, anything else is refused untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from evaluation.errors import ReportError
from evaluation.report import REPORT_MARKER, write_report

OPTIONS = {"features": ["parton/q1/pt"], "resamples": 2, "bins": 8}


def _checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def samples(make_samples_file) -> Path:
    return make_samples_file(n_events=60, n_draws=2, particles=False)


def test_a_previous_report_is_replaced_whole(samples, tmp_path):
    out = tmp_path / "report"
    write_report([samples], out, **OPTIONS)
    assert (out / REPORT_MARKER).is_file()
    (out / "stale.png").write_bytes(b"from an older report")
    write_report([samples], out, **OPTIONS)
    assert not (out / "stale.png").exists(), "the old report goes whole, not file by file"
    assert {p.name for p in tmp_path.iterdir()} == {samples.name, "report"}, "no temporary folder left"


def test_a_report_from_before_the_marker_is_still_replaced(samples, tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    for name in ("index.html", "metrics.json", "dist_parton__q1__pt.png"):
        (out / name).write_text("old report")
    write_report([samples], out, **OPTIONS)
    assert (out / REPORT_MARKER).is_file()


@pytest.mark.parametrize("content", ["thesis.tex", "index.html"])
def test_a_folder_that_is_not_a_report_is_refused_untouched(samples, tmp_path, content):
    """A user's folder, even one holding an index.html among other files, is never replaced."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / content).write_text("the user's work")
    (out / "data.csv").write_text("1,2,3")
    before = _checksums(tmp_path)
    with pytest.raises(ReportError, match="not a previous report"):
        write_report([samples], out, **OPTIONS)
    assert _checksums(tmp_path) == before


def test_the_inputs_folder_is_refused_even_when_it_is_a_report(samples, tmp_path):
    """A report folder that holds the samples file would delete its own input."""
    out = tmp_path / "report"
    write_report([samples], out, **OPTIONS)
    inside = out / "samples.h5"
    inside.write_bytes(samples.read_bytes())
    before = _checksums(tmp_path)
    with pytest.raises(ReportError, match="holds the input"):
        write_report([inside], out, **OPTIONS)
    assert _checksums(tmp_path) == before
