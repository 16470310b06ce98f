"""The report end to end: every promised file, side-by-side comparison, errors leave nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from evaluation.errors import ReportError
from evaluation.recon_report import build_recon_report
from evaluation.report import write_report
from unfold.cli import main

CHROMIUM = Path("/usr/bin/chromium")
FEW = "parton/t_had/mass,particle/jets/multiplicity"
IMAGE_CHECK = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter((img) => !img.complete || img.naturalWidth === 0).length;
  const note = document.createElement("div");
  note.id = "image-check";
  note.textContent = `images=${images.length} broken=${broken}`;
  document.body.appendChild(note);
});
</script>"""


def _hidden_entries(folder: Path) -> list[str]:
    """Temporary report folders (dot-named) left beside the output."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def full_report(tmp_path_factory, samples_writer) -> Path:
    """The default report of a 300-event, 8-draw file with parton and particle level."""
    folder = tmp_path_factory.mktemp("full")
    samples = samples_writer(folder / "samples.h5")
    out = folder / "reports" / "samples"
    write_report([samples], out)
    return out


@pytest.mark.slow
def test_report_writes_every_promised_file(full_report):
    index = (full_report / "index.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', index)
    assert images, "the page shows no image"
    for image in images:
        assert not Path(image).is_absolute()
        assert (full_report / image).is_file(), image
    for kind in ("dist_", "calib_", "migration_", "corr_"):
        assert any(name.startswith(kind) for name in images), kind
    metrics = json.loads((full_report / "metrics.json").read_text())  # strict JSON: no NaN
    t_had = metrics["observables"]["parton/t_had/mass"]
    assert set(t_had["distances"]["samples"]) == {"wasserstein", "energy", "ks", "kl", "triangular"}
    assert t_had["reference"]["wasserstein"]["value"] > 0
    assert t_had["reference"]["wasserstein"]["error"] > 0
    # The truth-matched line covers fewer events (80 % per parton, 51 % for three) than the
    # reconstruction of every event (99 % per parton).
    assert t_had["entries"]["matched"] < 0.6 * t_had["entries"]["truth"] < 0.61 * t_had["entries"]["reference"]
    assert t_had["matched"]["wasserstein"]["value"] > 0
    assert set(t_had["noise_floor"]) == set(t_had["distances"]["samples"])
    assert set(t_had["verdicts"]["samples"].values()) <= {"better", "worse", "compatible"}
    assert {c["nominal"] for c in t_had["calibration"]["samples"]["coverage"]} == {0.68, 0.95}
    assert set(t_had["peaks"]) == {"truth", "detector", "truth-matched", "samples"}
    assert 150 < t_had["peaks"]["truth"] < 200, t_had["peaks"]
    assert "peaks" not in metrics["observables"]["parton/t_had/pt"]
    assert "Mass peaks" in index
    assert "particle/jets/multiplicity" in metrics["observables"]
    assert metrics["files"][0]["attrs"]["model"] == "synthetic"
    assert "the first file): chi-square (synthetic), reconstructing every event without truth" in index
    assert "285 of 300 events" in index
    assert "noise floor (truth vs truth, 300 entries)" in index
    assert "W1 [obs. unit]" in index
    assert "parton/t_had/mass [GeV]" in index
    assert "truth [GeV]" in index
    assert _hidden_entries(full_report.parent) == []


@pytest.mark.slow
def test_distribution_plots_are_drawn_at_150_dpi(full_report):
    from matplotlib import image

    height, width = image.imread(full_report / "dist_parton__t_had__mass.png").shape[:2]
    assert (width, height) == (8 * 150, 8 * 150)


@pytest.mark.parametrize(("group", "scale", "expected"), [
    ("REFERENCE", 1.5, "better"),  # the detector reference is far off: the unfolding beats it
    ("SAMPLES", 1.5, "worse"),  # the draws are far off
    ("SAMPLES", 1.0, "compatible"),  # both scatter around the truth: within the noise
])
def test_colours_call_a_model_better_only_beyond_the_noise(make_samples_file, tmp_path, group, scale, expected):
    path = make_samples_file(n_events=400, n_draws=4, particles=False)
    with h5py.File(path, "a") as file:
        file[f"{group}/PARTONS/q1/pt"][...] = file[f"{group}/PARTONS/q1/pt"][()] * scale
    out = tmp_path / "out"
    write_report([path], out, features=["parton/q1/pt"], resamples=20)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["observables"]["parton/q1/pt"]["verdicts"]["samples"]["wasserstein"] == expected
    index = (out / "index.html").read_text()
    assert f'class="{expected}"' in index


def _dump_dom(page: Path) -> str:
    result = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.stdout


@pytest.mark.slow
def test_index_shows_no_broken_image_in_headless_chromium(full_report, tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not installed (Debian package `chromium`)")
    copy = tmp_path / "report"
    shutil.copytree(full_report, copy)
    page = (copy / "index.html").read_text()
    (copy / "check.html").write_text(page.replace("</body>", IMAGE_CHECK + "</body>"))
    match = re.search(r"images=(\d+) broken=(\d+)", _dump_dom(copy / "check.html"))
    assert match, "the image check did not run"
    assert int(match.group(1)) == page.count("<img ")
    assert int(match.group(2)) == 0
    # The check can fail: a page with one missing image reports it.
    (copy / "broken.html").write_text(
        page.replace("</body>", '<img src="missing.png">' + IMAGE_CHECK + "</body>")
    )
    assert re.search(r"broken=1\b", _dump_dom(copy / "broken.html"))


def test_cli_compares_two_unfoldings_side_by_side(make_samples_file, tmp_path, capsys):
    first = make_samples_file("a.h5", n_events=120, n_draws=4)
    second = tmp_path / "b.h5"
    shutil.copy(first, second)
    with h5py.File(second, "a") as file:
        file["SAMPLES/PARTONS/q1/pt"][...] = file["SAMPLES/PARTONS/q1/pt"][()] * 1.5
    out = tmp_path / "compare"
    status = main(
        [
            "report",
            str(first),
            str(second),
            "--labels",
            "VLD,plain",
            "--out",
            str(out),
            "--features",
            FEW,
            "--bins",
            "16",
            "--format",
            "pdf",
        ]
    )
    assert status == 0
    stdout = capsys.readouterr().out
    assert "VLD" in stdout
    assert "plain" in stdout
    assert "parton/t_had/mass" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["observables"]) == set(FEW.split(","))
    distances = metrics["observables"]["parton/t_had/mass"]["distances"]
    assert distances["plain"]["wasserstein"]["value"] > distances["VLD"]["wasserstein"]["value"]
    index = (out / "index.html").read_text()
    for pdf in re.findall(r'<a href="([^"]+\.pdf)">', index):
        assert (out / pdf).is_file()
    assert index.count(".pdf") > 0
    assert (out / "dist_parton__t_had__mass.png").is_file()


def test_cli_finds_the_newest_samples_file(tmp_path, monkeypatch, samples_writer, capsys):
    (tmp_path / "samples").mkdir()
    old = samples_writer(tmp_path / "samples" / "old.h5", n_events=40, n_draws=3, particles=False)
    new = samples_writer(tmp_path / "samples" / "new.h5", n_events=40, n_draws=3, particles=False)
    os.utime(old, (1, 1))
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--features", "parton/t_had/mass"]) == 0
    assert (tmp_path / "reports" / new.stem / "index.html").is_file()
    capsys.readouterr()
    shutil.rmtree(tmp_path / "samples")
    assert main(["report"]) == 2
    assert "no samples file given and none found" in capsys.readouterr().err


def _assert_nothing_written(parent: Path, out: Path) -> None:
    assert not out.exists()
    assert _hidden_entries(parent) == []


def test_file_without_truth_fails_cleanly_through_the_cli(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as file:
        file["SAMPLES/PARTONS/b/pt"] = np.zeros((3, 2))
    out = tmp_path / "out"
    assert main(["report", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "bad.h5" in err
    assert "no truth" in err
    _assert_nothing_written(tmp_path, out)


def test_mismatched_event_counts_fail_cleanly(make_samples_file, tmp_path):
    a = make_samples_file("a.h5", n_events=60, n_draws=3)
    b = make_samples_file("b.h5", n_events=50, n_draws=3)
    out = tmp_path / "out"
    with pytest.raises(ReportError, match=r"b\.h5: has 50 events but .*a\.h5 has 60"):
        write_report([a, b], out, features=["parton/t_had/mass"])
    _assert_nothing_written(tmp_path, out)


def test_different_truth_fails_cleanly(make_samples_file, tmp_path):
    a = make_samples_file("a.h5", n_events=60, n_draws=3, seed=1)
    b = make_samples_file("b.h5", n_events=60, n_draws=3, seed=2)
    with pytest.raises(ReportError, match="truth differs"):
        write_report([a, b], tmp_path / "out")
    _assert_nothing_written(tmp_path, tmp_path / "out")


def test_unknown_feature_lists_the_available_ones(make_samples_file, tmp_path):
    a = make_samples_file("a.h5", n_events=40, n_draws=3)
    with pytest.raises(
        ReportError, match=r"unknown feature\(s\) m_top; available: all, .*parton/t_had/mass"
    ):
        write_report([a], tmp_path / "out", features=["m_top"])
    _assert_nothing_written(tmp_path, tmp_path / "out")


def test_a_failure_while_plotting_leaves_the_previous_report(
    make_samples_file, tmp_path, monkeypatch
):
    a = make_samples_file("a.h5", n_events=40, n_draws=3)
    out = tmp_path / "out"
    write_report([a], out, features=["parton/t_had/mass"])
    before = sorted(p.name for p in out.iterdir())

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("evaluation.report.plot_calibration", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report([a], out, features=["parton/t_had/mass"])
    assert sorted(p.name for p in out.iterdir()) == before
    assert _hidden_entries(tmp_path) == []


def test_labels_must_match_the_files(make_samples_file, tmp_path):
    a = make_samples_file("a.h5", n_events=40, n_draws=3)
    with pytest.raises(ReportError, match="2 labels given for 1 files"):
        write_report([a], tmp_path / "out", labels=["x", "y"])


def test_recon_predictions_report(predictions_writer, tmp_path, capsys):
    path = predictions_writer(tmp_path / "predictions.h5")
    out = tmp_path / "recon"
    assert main(["report", str(path), "--out", str(out), "--bins", "20"]) == 0
    stdout = capsys.readouterr().out
    assert "0.6100" in stdout
    assert "by_jets" not in stdout
    assert "baseline" in stdout
    index = (out / "index.html").read_text()
    assert "Efficiencies" in index
    assert "0.5500" in index
    assert "==4" in index
    for image in re.findall(r'<img src="([^"]+)"', index):
        assert (out / image).is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    counts = metrics["mass_counts"]["ht/all"]
    assert counts["correct"] + counts["wrong"] == 200
    assert set(metrics["mass_counts"]) == {"ht/all", "ht/q", "lt/all"}


def test_recon_report_counts_recons_own_verdict(predictions_writer, tmp_path):
    """Correct vs wrong masses follow the stored PREDICTIONS/<resonance>/correct, not a second rule."""
    path = predictions_writer(tmp_path / "predictions.h5")
    with h5py.File(path, "r+") as file:
        verdict = file["PREDICTIONS/ht/correct"][...]
        del file["PREDICTIONS/ht/correct"]
        file["PREDICTIONS/ht/correct"] = np.zeros_like(verdict)  # recon says: none is right
    metrics_dir = tmp_path / "recon"
    assert main(["report", str(path), "--out", str(metrics_dir), "--bins", "20"]) == 0
    counts = json.loads((metrics_dir / "metrics.json").read_text())["mass_counts"]["ht/all"]
    assert counts == {"correct": 0, "wrong": 200}
    assert verdict.sum() > 0


def test_predictions_without_recons_verdict_are_refused(predictions_writer, tmp_path):
    path = predictions_writer(tmp_path / "predictions.h5")
    with h5py.File(path, "r+") as file:
        del file["PREDICTIONS/lt/correct"]
    with pytest.raises(ReportError, match=r"PREDICTIONS/lt/correct: not found.*unfold predict recon"):
        build_recon_report(path, bins=20)



def test_the_bootstrap_resamples_events_so_identical_objects_stay_identical(make_samples_file, tmp_path):
    # Draws that repeat the truth jets exactly: a bootstrap by events keeps every resample at zero
    # distance; resampling the jets of truth and draws independently would not.
    path = make_samples_file(n_events=200, n_draws=3, partons=False)
    with h5py.File(path, "a") as file:
        for feature in ("MASK", "pt", "eta", "phi", "mass", "btag"):
            truth = file[f"PARTICLES/jets/{feature}"][()]
            file[f"SAMPLES/PARTICLES/jets/{feature}"][...] = np.repeat(truth[:, None], 3, axis=1)
    out = tmp_path / "out"
    write_report([path], out, features=["particle/jets/pt"], resamples=10)
    observable = json.loads((out / "metrics.json").read_text())["observables"]["particle/jets/pt"]
    assert observable["distances"]["samples"]["wasserstein"] == {"value": 0.0, "error": 0.0, "min": 0.0, "max": 0.0}
    assert observable["noise_floor"]["wasserstein"] > 0
