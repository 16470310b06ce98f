"""FeatureNormalizer: SPANet's normalisation options, statistics fitted on real objects only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoders import EncoderError, FeatureNormalizer


def test_fit_standardises_real_objects_and_ignores_padding(rng: np.random.Generator) -> None:
    raw = torch.as_tensor(rng.lognormal(3.0, 1.0, size=(50, 7, 3)), dtype=torch.float32)
    mask = torch.as_tensor(rng.random((50, 7)) < 0.6)
    padded = torch.where(mask[..., None], raw, torch.full_like(raw, 1e6))
    normalizer = FeatureNormalizer(normalizations=("log_normalize", "normalize", "none"))
    normalizer.fit(padded, mask)
    out = normalizer(padded)[mask].double()
    torch.testing.assert_close(
        out[:, :2].mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        out[:, :2].std(0, correction=0), torch.ones(2, dtype=torch.float64), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(out[:, 2], padded[mask][:, 2].double())
    logged = torch.log1p(raw[mask][:, 0].double())
    torch.testing.assert_close(normalizer.mean[0].double(), logged.mean(), rtol=1e-5, atol=0)


def test_statistics_travel_with_the_state_dict(rng: np.random.Generator) -> None:
    data = torch.as_tensor(rng.normal(5.0, 2.0, size=(100, 2)), dtype=torch.float32)
    fitted = FeatureNormalizer(normalizations=("normalize", "log_normalize"))
    fitted.fit(data.abs())
    restored = FeatureNormalizer(normalizations=("normalize", "log_normalize"))
    restored.load_state_dict(fitted.state_dict())
    torch.testing.assert_close(restored(data.abs()), fitted(data.abs()))
    assert not torch.allclose(restored.mean, torch.zeros(2))


def test_constant_feature_is_only_centred() -> None:
    normalizer = FeatureNormalizer(normalizations=("normalize",))
    normalizer.fit(torch.full((10, 1), 3.0))
    torch.testing.assert_close(normalizer(torch.tensor([[4.0]])), torch.tensor([[1.0]]))


def test_bad_option_and_bad_data_raise_encoder_error() -> None:
    with pytest.raises(EncoderError, match="log_normalize"):
        FeatureNormalizer(normalizations=("standardize",))  # type: ignore[arg-type]
    normalizer = FeatureNormalizer(normalizations=("normalize",))
    with pytest.raises(EncoderError, match="NaN"):
        normalizer.fit(torch.tensor([[float("nan")], [1.0]]))
    with pytest.raises(EncoderError, match="no unmasked"):
        normalizer.fit(torch.ones(3, 2, 1), torch.zeros(3, 2, dtype=torch.bool))
