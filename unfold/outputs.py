"""Output paths checked before any work starts, so no command replaces what it did not write.

Every command that writes a file calls :func:`check_output_file` on it before reading its
inputs: the output may not be one of the inputs, nor a folder, nor an existing file of another
kind (a samples file only replaces a samples file, predictions only predictions, event files
only event files); its folder must be writable and its temporary name must fit the file
system. The file itself is then written under :func:`partial_name` and renamed into place
(:func:`unfold.data.hdf5_io.atomic_output`), so an existing output is replaced atomically.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import h5py

from unfold.errors import UnfoldError

__all__ = [
    "OutputKind", "check_output_file", "check_output_root", "output_kind", "partial_name", "process_alive",
    "remove_stale_partials",
]

OutputKind = Literal["samples", "predictions", "events", "json"]
# The group that makes an HDF5 file a samples or predictions file; event files have INPUTS only.
_MARKER_GROUPS = {"samples": "SAMPLES", "predictions": "PREDICTIONS"}


def partial_name(path: Path) -> Path:
    """The temporary name a file is written under beside ``path`` before it is renamed to it."""
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (the owner of a temporary name ending in its pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_partials(folder: Path, name: str = "*") -> None:
    """Remove partial files (:func:`partial_name`) of ``name`` in ``folder`` whose writing
    process is gone: what a killed (SIGKILL) run leaves behind."""
    pattern = "*" if name == "*" else glob.escape(name)
    for stale in Path(folder).glob(f".{pattern}.partial-*"):
        pid = stale.name.rsplit("-", 1)[1]
        if stale.is_file() and pid.isdigit() and not process_alive(int(pid)):
            stale.unlink(missing_ok=True)


def output_kind(path: Path) -> OutputKind | None:
    """Which of the suite's outputs an existing file is, None for anything else."""
    if path.suffix == ".json":
        try:
            json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            return None
        return "json"
    try:
        with h5py.File(path, "r") as file:
            for kind, group in _MARKER_GROUPS.items():
                if group in file:
                    return kind  # type: ignore[return-value]
            return "events" if "INPUTS" in file else None
    except OSError:
        return None


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return a.samefile(b)
    return a.resolve() == b.resolve()


def _check_folder(folder: Path, option: str, path: Path) -> None:
    """``folder`` (or its nearest existing parent, where it will be created) is a writable folder."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UnfoldError(f"{option} {path}: {existing} is a file, not a folder; expected a path inside a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UnfoldError(f"{option} {path}: folder {existing} is not writable; choose an output in a writable folder")


def _check_name_length(path: Path, option: str) -> None:
    """The temporary name (the longest one written) fits the file system's limit on a name."""
    try:
        limit = os.pathconf(Path.cwd() if not path.is_absolute() else path.anchor, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255  # NAME_MAX of Linux file systems
    for part in (*path.parent.parts, partial_name(path).name):
        if len(os.fsencode(part)) > limit:
            raise UnfoldError(f"{option} {path}: name {part[:40]}... is {len(os.fsencode(part))} bytes with the "
                              f"temporary suffix; at most {limit} are allowed")


def check_output_file(path: Path, *, option: str, kind: OutputKind, inputs: Iterable[Path | None] = ()) -> Path:
    """Refuse an output file that would destroy data: one of ``inputs``, a folder, an existing
    file of another kind, an unwritable folder or a name too long for the temporary file."""
    path = Path(path)
    _check_name_length(path, option)
    if path.is_dir():
        raise UnfoldError(f"{option} {path}: a folder; expected a file name")
    for given in inputs:
        if given is not None and _same_file(path, Path(given)):
            raise UnfoldError(f"{option} {path}: is also an input ({given}); choose another output name")
    if path.exists():
        found = output_kind(path)
        if found != kind:
            what = f"{'an' if found[0] in 'aeiou' else 'a'} {found} file" if found else "not a file this suite wrote"
            raise UnfoldError(f"{option} {path}: exists and is {what}; only a previous {kind} file is replaced, "
                              "choose another name")
    _check_folder(path.parent, option, path)
    return path


def check_output_root(path: Path, *, option: str) -> Path:
    """A folder that new outputs go under (runs/, data/): a folder or not yet there, writable."""
    path = Path(path)
    _check_name_length(path / "_", option)
    if path.exists() and not path.is_dir():
        raise UnfoldError(f"{option} {path}: a file; expected a folder")
    _check_folder(path, option, path)
    return path
