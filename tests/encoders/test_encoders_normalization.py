"""The one standardisation rule, and FeatureNormalizer: SPANet's normalisation options, statistics
fitted on real objects only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoders import EncoderError, FeatureNormalizer, fit_standardisation
from recon.heads import RegressionHead


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


def test_standardisation_is_the_population_mean_and_width_skipping_missing_entries(rng) -> None:
    values = rng.normal(3.0, 2.0, size=(200, 3))
    values[rng.random(200) < 0.3, 1] = np.nan
    values[:, 2] = np.nan
    mean, scale = fit_standardisation(torch.from_numpy(values))
    np.testing.assert_allclose(mean[:2].numpy(), np.nanmean(values[:, :2], axis=0), rtol=1e-12)
    np.testing.assert_allclose(scale[:2].numpy(), np.nanstd(values[:, :2], axis=0), rtol=1e-12)
    assert (mean[2].item(), scale[2].item()) == (0.0, 1.0)


def test_constant_rule_is_relative_to_the_feature_size() -> None:
    """A 1e-3 GeV jitter on 1e4 GeV is rounding (only centred); on 0 GeV it is a real spread."""
    jitter = torch.tensor([-1.0, 1.0]).repeat(50) * 1e-3
    values = torch.stack([1e4 + jitter, jitter, torch.full_like(jitter, 7.0)], dim=1)
    _, scale = fit_standardisation(values)
    torch.testing.assert_close(scale, torch.tensor([1.0, 1e-3, 1.0], dtype=torch.float64))
    with pytest.raises(EncoderError, match="expected \\(R, F\\)"):
        fit_standardisation(torch.ones(4))


def test_inputs_and_regression_targets_share_the_rule(rng) -> None:
    """The encoder's inputs and recon's regression targets get the same statistics from one rule."""
    targets = torch.as_tensor(rng.normal(50.0, 10.0, size=(300, 2)))
    targets[:, 1] = 91.0
    expected = fit_standardisation(targets)
    normalizer = FeatureNormalizer(normalizations=("normalize", "normalize"))
    normalizer.fit(targets.float())
    head = RegressionHead(width=4, outputs=2)
    head.fit(targets)
    for fitted_mean, fitted_scale in ((normalizer.mean, normalizer.std), (head.location, head.scale)):
        torch.testing.assert_close(fitted_mean.double(), expected.mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(fitted_scale.double(), expected.scale, rtol=1e-6, atol=1e-6)
    assert expected.scale[1] == 1.0
