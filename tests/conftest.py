"""Shared fixtures: a seeded RNG, the packaged event files and the real SPANet example."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / "shared" / "data"
SPANET_EXAMPLE = SHARED_DATA / "spanet_semi_leptonic_ttH_example.h5"
SPANET_EXAMPLE_EVENT_FILE = SHARED_DATA / "spanet_semi_leptonic_ttH_example.yaml"
EVENT_FILES = {
    "ttbar-semileptonic": PROJECT / "configs" / "events" / "ttbar_semileptonic.yaml",
    "ttbar-allhadronic": PROJECT / "configs" / "events" / "ttbar_allhadronic.yaml",
}


@pytest.fixture(scope="session")
def event_files() -> dict[str, Path]:
    """The packaged SPANet event files, by process name."""
    return dict(EVENT_FILES)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261123)


@pytest.fixture
def spanet_example() -> tuple[Path, Path]:
    """The real SPANet semi-leptonic ttH file and its event file, read from ../shared/data."""
    if not SPANET_EXAMPLE.is_file():
        pytest.skip(f"real SPANet example not found at {SPANET_EXAMPLE} (../shared/data is absent)")
    return SPANET_EXAMPLE, SPANET_EXAMPLE_EVENT_FILE


@pytest.fixture
def one_thread():
    """Many small training steps on one torch thread: no thread contention on a shared machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
