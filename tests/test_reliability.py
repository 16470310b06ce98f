"""The CLI against careless and hostile use: a table of bad inputs, each refused cleanly.

Every case runs ``unfold.cli.main`` in a folder of small files (event, samples and predictions
files, a user's notes and folder, a truncated checkpoint) and checks the promise of the CLI:
exit status 2, exactly one line on stderr naming the option or file, no traceback, no file or
folder left behind (no run folder, temporary file or shard folder), and every file that was
there before byte-identical afterwards.
"""

from __future__ import annotations

import csv
import hashlib
import os
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from unfold.cli import main
from unfold.data.hdf5_io import atomic_output
from unfold.errors import UnfoldError
from unfold.outputs import check_output_file

LONG = "n" * 250


def _write_files(root: Path) -> None:
    """The user's files every case starts from."""
    rng = np.random.default_rng(15)
    with h5py.File(root / "events.h5", "w") as file:
        file["INPUTS/Momenta/pt"] = rng.exponential(50.0, (8, 4))
    with h5py.File(root / "samples.h5", "w") as file:
        file["PARTONS/b_had/pt"] = rng.exponential(50.0, 8)
        file["SAMPLES/PARTONS/b_had/pt"] = rng.exponential(50.0, (8, 3))
    with h5py.File(root / "nan_samples.h5", "w") as file:
        file["PARTONS/b_had/pt"] = rng.exponential(50.0, 8)
        file["SAMPLES/PARTONS/b_had/pt"] = np.full((8, 3), np.nan)
    with h5py.File(root / "predictions.h5", "w") as file:
        file["PREDICTIONS/t_had/b"] = np.zeros(8, dtype=np.int64)
    (root / "notes.txt").write_text("the user's notes\n")
    (root / "broken.yaml").write_text("encoder: [unclosed\n")
    card = (resources.files("configs.detector") / "cms_like.yaml").read_text()
    (root / "card.yaml").write_text(card.replace("  efficiency: 0.99\n", "  efficiency: 1.7\n", 1))
    (root / "userdir").mkdir()
    (root / "userdir" / "thesis.tex").write_text("\\chapter{Results}\n")
    with h5py.File(root / "userdir" / "samples.h5", "w") as file:
        file["PARTONS/b_had/pt"] = rng.exponential(50.0, 8)
        file["SAMPLES/PARTONS/b_had/pt"] = rng.exponential(50.0, (8, 3))
    torch.save({"epoch": 3, "state_dict": {"w": torch.zeros(1000)}}, root / "full.ckpt")
    data = (root / "full.ckpt").read_bytes()
    (root / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    hyper = {"event_file_yaml": "INPUTS: {}", "process": "ttbar-semileptonic", "encoder": {}, "model": {}}
    torch.save({"epoch": 1, "hyper_parameters": hyper, "state_dict": {}}, root / "parton.ckpt")


def _snapshot(root: Path) -> dict[str, str | None]:
    """Every path under root: a file's SHA-256, None for a folder."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


# (id, argv, a fragment the one error line must contain). Each is a mistake from issue 15.
CASES = [
    # Data destroyed before: outputs that are inputs, other files, or the user's folders.
    ("report-out-user-folder", ["report", "samples.h5", "--out", "userdir"], "not a previous report"),
    ("report-out-input-folder", ["report", "userdir/samples.h5", "--out", "userdir"], "holds the input"),
    ("report-out-file", ["report", "samples.h5", "--out", "notes.txt"], "a file"),
    ("report-out-dot", ["report", "samples.h5", "--out", "."], "working folder"),
    ("report-out-too-long", ["report", "samples.h5", "--out", LONG], "too long"),
    ("sample-out-is-data", ["sample", "--checkpoint", "parton.ckpt", "--data", "events.h5", "--out", "events.h5"],
     "also an input"),
    ("sample-out-predictions", ["sample", "--checkpoint", "parton.ckpt", "--data", "events.h5", "--out",
                                "predictions.h5"], "a predictions file"),
    ("sample-out-user-file", ["sample", "--checkpoint", "parton.ckpt", "--data", "events.h5", "--out", "notes.txt"],
     "not a file this suite wrote"),
    ("sample-out-folder", ["sample", "--checkpoint", "parton.ckpt", "--data", "events.h5", "--out", "userdir"],
     "a folder"),
    ("sample-out-under-file", ["sample", "--checkpoint", "parton.ckpt", "--data", "events.h5", "--out",
                               "notes.txt/s.h5"], "not a folder"),
    ("sample-out-too-long", ["sample", "--checkpoint", "parton.ckpt", "--data", "events.h5", "--out", LONG + ".h5"],
     "at most"),
    ("predict-out-is-data", ["predict", "recon", "--checkpoint", "full.ckpt", "--data", "events.h5", "--out",
                             "events.h5"], "also an input"),
    ("predict-out-samples", ["predict", "recon", "--checkpoint", "full.ckpt", "--data", "events.h5", "--out",
                             "samples.h5"], "a samples file"),
    ("evaluate-json-is-data", ["evaluate", "recon", "--checkpoint", "full.ckpt", "--data", "events.h5", "--json",
                               "events.h5"], "also an input"),
    ("generate-out-file", ["generate", "--out", "notes.txt"], "a file"),
    # Options checked before any work.
    ("train-batch-size-0", ["train", "recon", "--batch-size", "0"], "trainer.batch_size"),
    ("train-epochs-negative", ["train", "recon", "--epochs", "-1"], "trainer.epochs"),
    ("train-epochs-0", ["train", "recon", "--epochs", "0"], "trainer.epochs"),
    ("train-max-time-garbage", ["train", "recon", "--max-time", "garbage"], "days:hours:minutes:seconds"),
    ("train-precision-garbage", ["train", "recon", "--precision", "garbage"], "bf16-mixed"),
    ("train-devices-too-many", ["train", "recon", "--data", "events.h5", "--accelerator", "cpu", "--devices", "4096"],
     "--devices 4096"),
    ("train-precision-missing-package", ["train", "recon", "--data", "events.h5", "--precision", "transformer-engine"],
     "Lightning refuses this combination"),
    ("train-strategy-garbage", ["train", "recon", "--data", "events.h5", "--strategy", "garbage"], "invalid strategy"),
    ("train-limit-0", ["train", "recon", "--limit", "0"], "limit"),
    ("train-config-missing", ["train", "recon", "--config", "missing.yaml"], "missing.yaml"),
    ("train-config-malformed", ["train", "recon", "--config", "broken.yaml"], "--config broken.yaml: not a YAML"),
    ("train-config-misspelt-key", ["train", "recon", "--encoder.widht", "3"], "encoder.widht"),
    ("train-test-missing", ["train", "recon", "--data", "events.h5", "--test", "missing.h5"], "--test missing.h5"),
    ("train-data-folder", ["train", "recon", "--data", "userdir"], "--data userdir: a folder"),
    ("train-resume-truncated", ["train", "recon", "--data", "events.h5", "--resume", "truncated.ckpt"],
     "not a readable checkpoint"),
    ("train-resume-other-task", ["train", "recon", "--data", "events.h5", "--resume", "parton.ckpt"],
     "a parton checkpoint; expected a recon run"),
    ("train-out-file", ["train", "recon", "--data", "events.h5", "--out", "notes.txt"], "--out notes.txt: a file"),
    ("train-out-too-long", ["train", "recon", "--data", "events.h5", "--out", LONG + LONG], "at most"),
    ("report-out-too-long-parent", ["report", "samples.h5", "--out", f"{LONG}{LONG}/report"], "name too long"),
    ("train-out-under-file", ["train", "parton", "--data", "events.h5", "--out", "notes.txt/runs"], "not a folder"),
    ("sample-limit-0", ["sample", "--limit", "0"], "--limit: got '0'"),
    ("sample-steps-0", ["sample", "--steps", "0"], "--steps: got '0'"),
    ("generate-card-efficiency-1.7", ["generate", "--detector", "card.yaml", "--out", "gen", "--events", "10"],
     "'jets.efficiency' is a probability, got 1.7"),
    ("generate-events-0", ["generate", "--events", "0", "--out", "gen"], "--events must be a positive number"),
    ("generate-workers-0", ["generate", "--workers", "0", "--out", "gen"], "--workers must be at least 1"),
    ("generate-max-jets-0", ["generate", "--max-particle-jets", "0"], "--max-particle-jets: got '0'"),
    ("evaluate-limit-0", ["evaluate", "recon", "--limit", "0"], "--limit"),
    ("inspect-folder", ["inspect", "userdir"], "userdir: a folder"),
    ("inspect-missing", ["inspect", "missing.h5"], "missing.h5"),
    ("report-nan-draws", ["report", "nan_samples.h5", "--out", "nan_report"], "NaN"),
    ("report-bins-1", ["report", "samples.h5", "--out", "r", "--bins", "1"], "--bins"),
]
if not torch.cuda.is_available():
    CASES.append(("train-gpu-without-one", ["train", "recon", "--data", "events.h5", "--accelerator", "gpu"],
                  "no CUDA GPU"))


@pytest.mark.parametrize(("argv", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_input_is_refused_cleanly(argv, fragment, tmp_path, monkeypatch, capsys):
    _write_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    status = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert fragment in lines[0]
    assert _snapshot(tmp_path) == before, "a refused command must neither add, remove nor change a file"


UNWRITABLE = {
    "train": ["train", "recon", "--data", "events.h5", "--out", "locked/runs"],
    "sample": ["sample", "--checkpoint", "parton.ckpt", "--data", "events.h5", "--out", "locked/s.h5"],
    "predict": ["predict", "recon", "--checkpoint", "full.ckpt", "--data", "events.h5", "--out", "locked/p.h5"],
    "evaluate": ["evaluate", "recon", "--checkpoint", "full.ckpt", "--data", "events.h5", "--json", "locked/t.json"],
    "generate": ["generate", "--out", "locked/data"],
    "report": ["report", "samples.h5", "--out", "locked/report"],
}


@pytest.mark.parametrize("command", list(UNWRITABLE))
def test_an_unwritable_output_folder_is_refused_before_work(command, tmp_path, monkeypatch, capsys):
    """Tests may run as root, who may write anywhere, so the folder is made unwritable by
    answering os.access for it; the commands must ask before they start."""
    _write_files(tmp_path)
    (tmp_path / "locked").mkdir()
    monkeypatch.chdir(tmp_path)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path).name != "locked" and real_access(path, mode))
    before = _snapshot(tmp_path)
    assert main(UNWRITABLE[command]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "locked is not a writable folder" in err or "folder locked is not writable" in err
    assert _snapshot(tmp_path) == before


def test_an_output_replaces_only_its_own_kind(tmp_path):
    """The positive side of the table: a previous samples file may be replaced, nothing else."""
    _write_files(tmp_path)
    assert check_output_file(tmp_path / "samples.h5", option="--out", kind="samples") == tmp_path / "samples.h5"
    assert check_output_file(tmp_path / "new.h5", option="--out", kind="samples") == tmp_path / "new.h5"
    with pytest.raises(UnfoldError, match="also an input"):
        check_output_file(tmp_path / "samples.h5", option="--out", kind="samples", inputs=[tmp_path / "samples.h5"])
    with pytest.raises(UnfoldError, match="an events file"):
        check_output_file(tmp_path / "events.h5", option="--out", kind="samples")


def test_a_killed_writers_partial_file_is_removed_by_the_next_write(tmp_path):
    """SIGKILL leaves `.NAME.partial-PID` behind; the next atomic write of NAME removes it once
    PID is gone, and leaves a live writer's partial file alone."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".samples.h5.partial-{dead.stdout.strip()}"
    live = tmp_path / f".samples.h5.partial-{os.getppid()}"
    for path in (stale, live):
        path.write_bytes(b"half a file")
    with atomic_output(tmp_path / "samples.h5") as partial:
        partial.write_bytes(b"whole")
    assert not stale.exists()
    assert live.read_bytes() == b"half a file"
    assert (tmp_path / "samples.h5").read_bytes() == b"whole"


def test_sigterm_ends_a_command_like_ctrl_c(tmp_path):
    """SIGTERM (what batch systems send) while a command runs: it says so, exits 128 + 15 and
    leaves no temporary file. The command here is a stand-in that sleeps inside the CLI."""
    script = (
        "import sys, time\n"
        "import unfold.commands.inspect as inspect_command\n"
        "def slow(args):\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
        "inspect_command.run = slow\n"
        "from unfold.cli import main\n"
        "sys.exit(main(['inspect', 'x.h5']))\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines() == ["unfold inspect: interrupted by SIGTERM"]
    assert list(tmp_path.iterdir()) == []


def test_sigterm_stops_a_training_that_then_resumes_with_its_metrics(spanet_example, tmp_path):
    """A foreign topology (the real ttH SPANet example) trains: SIGTERM after its first epoch stops
    it with the command to resume, the resumed run keeps the first epoch's metrics row, and the
    efficiency table is printed with the chi-square baseline skipped (it knows only ttbar)."""
    data, event_file = spanet_example
    argv = ["train", "recon", "--data", str(data), "--event-file", str(event_file), "--limit", "300",
            "--config", "small", "--batch-size", "64", "--accelerator", "cpu", "--out", str(tmp_path / "runs")]
    process = subprocess.Popen([sys.executable, "-m", "unfold.cli", *argv, "--epochs", "50", "--test", "null"],
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(600):
        if any((tmp_path / "runs").glob("recon/*/checkpoints/last.ckpt")) or process.poll() is not None:
            break
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    (run,) = (tmp_path / "runs" / "recon").iterdir()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert f"interrupted by SIGTERM; last checkpoint {run / 'checkpoints' / 'last.ckpt'}" in err
    assert f"--resume {run}" in err
    first_epochs = _metrics(run)
    done = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] + 1
    resumed = subprocess.run([sys.executable, "-m", "unfold.cli", *argv, "--epochs", str(done + 1), "--resume",
                              str(run), "--test", str(data)], cwd=tmp_path, capture_output=True, text=True,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert resumed.returncode == 0, resumed.stderr
    assert "note: chi-square baseline skipped" in resumed.stdout
    assert "complete" in resumed.stdout
    rows = _metrics(run)
    kept = [row for row in first_epochs if row["epoch"] == "0"]
    assert kept, "the first epoch logged its validation before the interruption"
    assert [row for row in rows if row["epoch"] == "0"] == kept, "the first epoch's rows, kept once and unchanged"
    assert any(row["epoch"] == str(done) for row in rows), "and the resumed epoch's rows after them"


def _metrics(run: Path) -> list[dict[str, str]]:
    """metrics.csv rows without their empty cells (the header grows as new metrics appear)."""
    with (run / "metrics" / "metrics.csv").open(newline="") as file:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(file)]


def _corrupt(key: str, change: str):
    """A function that damages dataset ``key`` of an open file: negative, fractional or text."""

    def apply(file: h5py.File) -> None:
        values = file[key][()]
        del file[key]
        if change == "negative":
            values[0, 0] = -abs(values[0, 0]) - 5.0
        elif change == "fractional":
            values = values.astype(np.float64)
            values[values >= 0] += 0.5
        else:
            values = values.astype(str).astype(object)
        file.create_dataset(key, data=values, dtype=h5py.string_dtype() if change == "text" else None)

    return apply


DATA_CASES = {
    "negative-pt": (_corrupt("INPUTS/Momenta/pt", "negative"), "'INPUTS/Momenta/pt' holds 1 negative values"),
    "negative-mass": (_corrupt("INPUTS/Momenta/mass", "negative"), "'INPUTS/Momenta/mass' holds 1 negative"),
    "non-integer-target": (_corrupt("TARGETS/ht/b", "fractional"), "'TARGETS/ht/b' holds index"),
    "text-feature": (_corrupt("INPUTS/Momenta/eta", "text"), "'INPUTS/Momenta/eta' has dtype object"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_physical_nonsense_in_the_data_is_refused_before_a_run_folder(case, spanet_example, tmp_path, monkeypatch,
                                                                       capsys):
    """Negative pt or mass of a real object, fractional jet indices and text features: one line
    naming the file and key, exit 2, and no run folder."""
    source, event_file = spanet_example
    damage, fragment = DATA_CASES[case]
    data = tmp_path / "bad.h5"
    with h5py.File(source, "r") as original, h5py.File(data, "w") as copy:
        datasets = []
        original.visititems(lambda key, node: datasets.append(key) if isinstance(node, h5py.Dataset) else None)
        for key in datasets:
            copy[key] = original[key][:40]
        damage(copy)
    monkeypatch.chdir(tmp_path)
    status = main(["train", "recon", "--data", str(data), "--event-file", str(event_file), "--test", "null",
                   "--epochs", "1", "--accelerator", "cpu"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert fragment in err
    assert str(data) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5"], "no runs/ folder"


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads worker processes from Linux's /proc")
def test_generate_of_a_billion_events_stays_small_and_ends_cleanly_on_sigterm(tmp_path):
    """`generate --events 1000000000` starts its workers without first planning every shard in
    memory; SIGTERM then ends the workers, removes the shard folder and partial files, and the
    leftovers of an earlier killed run (a dead process's shard folder and partial file) are gone too."""
    out = tmp_path / "data"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = [out / f".shards-{dead.stdout.strip()}-x1y2", out / f".ttbar_semileptonic_train.h5.partial-{dead.stdout.strip()}"]
    stale[0].mkdir()
    (stale[0] / "shard-00000.h5").write_bytes(b"left by a killed run")
    stale[1].write_bytes(b"left by a killed run")
    process = subprocess.Popen([sys.executable, "-m", "unfold.cli", "generate", "--events", "1000000000", "--workers",
                                "2", "--out", str(out), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    for _ in range(600):
        workers = _children(process.pid)
        if len(workers) == 2 or process.poll() is not None:
            break
        time.sleep(0.2)
    rss_kib = int(next(line for line in Path(f"/proc/{process.pid}/status").read_text().splitlines()
                       if line.startswith("VmRSS")).split()[1])
    assert len(workers) == 2, "both workers run"
    assert not any(path.exists() for path in stale), "a dead run's shard folder and partial file are removed"
    assert rss_kib < 2 * 1024**2, "the parent does not hold a plan of every shard"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    assert [line for line in err.splitlines() if line.strip() and not line.startswith("#")] == [
        "unfold generate: interrupted by SIGTERM"
    ]
    assert list(out.iterdir()) == [], "no shard folder, no partial file"
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], "the workers are ended"


_SIGTERM_WHILE_THE_POOL_STARTS = """
import signal, sys, threading
from unfold.cli import _terminate
from unfold.generation import pipeline

signal.signal(signal.SIGTERM, _terminate)
start, started = threading.Thread.start, []
def start_then_sigterm(thread):  # the pool's constructor starts three handler threads after forking
    start(thread)
    started.append(thread)
    if len(started) == int(sys.argv[1]):
        signal.raise_signal(signal.SIGTERM)
threading.Thread.start = start_then_sigterm
try:
    with pipeline._worker_pool(2, None) as pool:
        pool.apply_async(sum, ([1],)).get(timeout=60)
except KeyboardInterrupt:
    sys.exit(143)
"""


@pytest.mark.parametrize("threads_started", [1, 2, 3])
def test_sigterm_while_the_worker_pool_starts_ends_its_workers(threads_started):
    """SIGTERM inside ``multiprocessing.Pool``'s constructor, after its workers are forked, must
    still end them: unguarded, they outlive the command and hold its stderr open forever."""
    process = subprocess.run([sys.executable, "-c", _SIGTERM_WHILE_THE_POOL_STARTS, str(threads_started)],
                             capture_output=True, text=True, timeout=60)
    assert (process.returncode, process.stderr) == (143, "")
