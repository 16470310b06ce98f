"""Writing HDF5 files whole or not at all, and opening them with clear errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import h5py
import numpy as np

from unfold.errors import UnfoldError
from unfold.outputs import partial_name, remove_stale_partials

__all__ = ["append_arrays", "atomic_output", "check_new_output", "event_chunks", "open_h5", "write_arrays"]


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    A failure (or Ctrl-C) removes the temporary file, so no half-written output is ever left
    under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path.parent, path.name)
    partial = partial_name(path)
    try:
        yield partial
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def check_new_output(source: str | Path, out: str | Path, what: str = "input file") -> None:
    """A command that writes a changed copy of ``source`` to ``out``: the source exists and is not
    the output, or a one-line error naming them."""
    if not Path(source).is_file():
        raise UnfoldError(f"{source}: no such file")
    if Path(out).resolve() == Path(source).resolve():
        raise UnfoldError(f"--out {out}: is the {what}; give another path")


def open_h5(path: str | Path) -> h5py.File:
    """Open an HDF5 file for reading, or raise a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise UnfoldError(f"{path}: file not found")
    try:
        return h5py.File(path, "r")
    except OSError:
        raise UnfoldError(f"{path}: not a readable HDF5 file") from None


def write_arrays(file: h5py.File, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, object] | None = None) -> None:
    """Write datasets by path (``GROUP/sub/name``) and root attributes into an open file."""
    for key, value in arrays.items():
        file.create_dataset(key, data=value, compression="gzip", compression_opts=4, shuffle=True)
    for key, value in (attrs or {}).items():
        file.attrs[key] = value


def append_arrays(file: h5py.File, arrays: Mapping[str, np.ndarray]) -> None:
    """Append a chunk of events (first axis) to datasets by path, creating them resizable on first use,
    so a file of any length is written with the memory of one chunk."""
    for key, value in arrays.items():
        value = np.asarray(value)
        if key not in file:
            file.create_dataset(key, data=value, maxshape=(None, *value.shape[1:]), chunks=True,
                                compression="gzip", compression_opts=4, shuffle=True)
            continue
        dataset = file[key]
        start = dataset.shape[0]
        dataset.resize(start + len(value), axis=0)
        dataset[start:] = value


def event_chunks(total: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` of the events 0..total-1, the unit in which commands stream
    over a file (read a chunk, process it, :func:`append_arrays`), so memory holds one chunk whatever
    the file's length."""
    if size < 1:
        raise UnfoldError(f"--chunk-size must be positive, got {size}")
    return [slice(start, min(start + size, total)) for start in range(0, total, size)]
