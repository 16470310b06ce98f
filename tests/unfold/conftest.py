"""Generated data shared by the unfold tests: a few hundred real Pythia events, made once."""

from __future__ import annotations

from pathlib import Path

import pytest

from unfold.generation.pipeline import GenerationConfig, generate


@pytest.fixture(scope="session")
def semileptonic_files(tmp_path_factory) -> tuple[Path, Path]:
    """400 semi-leptonic ttbar events (MPI on), 2 workers: (train, test)."""
    out = tmp_path_factory.mktemp("semileptonic")
    result = generate(
        GenerationConfig(events=400, out=out, seed=11, workers=2, shard_size=100, test_fraction=0.25), progress=False
    )
    return result.train, result.test
