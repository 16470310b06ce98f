"""EventEncoder contract: shapes, permutation equivariance, padding inert, empty events, errors, gradients."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from encoders import (
    EncoderError,
    EncoderInputs,
    EventEncoder,
    InputSource,
    PairBias,
    pairwise_lorentz_features,
)
from encoders.kinematics import to_cartesian

SOURCES = (
    InputSource(
        "Jets",
        "SEQUENTIAL",
        ("pt", "eta", "sin_phi", "cos_phi", "btag"),
        ("log_normalize", "normalize", "normalize", "normalize", "none"),
    ),
    InputSource("Leptons", "SEQUENTIAL", ("pt", "eta"), ("log_normalize", "normalize")),
    InputSource("Met", "GLOBAL", ("met", "phi"), ("log_normalize", "normalize")),
)
JETS, LEPTONS = 6, 2


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine run fastest (by far) on one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_inputs(rng: np.random.Generator, events: int = 5) -> EncoderInputs:
    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return torch.as_tensor(rng.uniform(low, high, shape), dtype=torch.float32)

    count = JETS + LEPTONS
    pt, eta, phi = (
        uniform(20, 200, events, count),
        uniform(-2.5, 2.5, events, count),
        uniform(-3, 3, events, count),
    )
    jets = torch.stack(
        [
            pt[:, :JETS],
            eta[:, :JETS],
            phi[:, :JETS].sin(),
            phi[:, :JETS].cos(),
            (uniform(0, 1, events, JETS) > 0.7).float(),
        ],
        dim=-1,
    )
    leptons = torch.stack([pt[:, JETS:], eta[:, JETS:]], dim=-1)
    jet_mask = torch.as_tensor(rng.random((events, JETS)) < 0.7)
    jet_mask[:, 0] = True
    lepton_mask = torch.as_tensor(rng.random((events, LEPTONS)) < 0.5)
    four_momenta = to_cartesian(pt, eta, phi, uniform(0, 10, events, count))
    return EncoderInputs(
        (jets, leptons), (jet_mask, lepton_mask), (uniform(0, 100, events, 2),), four_momenta
    )


def permute_objects(
    inputs: EncoderInputs, jet_order: torch.Tensor, lepton_order: torch.Tensor
) -> EncoderInputs:
    full = torch.cat([jet_order, JETS + lepton_order])
    return EncoderInputs(
        (
            inputs.sequential_features[0][:, jet_order],
            inputs.sequential_features[1][:, lepton_order],
        ),
        (inputs.sequential_masks[0][:, jet_order], inputs.sequential_masks[1][:, lepton_order]),
        inputs.global_features,
        inputs.four_momenta[:, full] if inputs.four_momenta is not None else None,
    ), full


@pytest.fixture(params=[False, True], ids=["plain", "pair_bias"])
def encoder(request: pytest.FixtureRequest, rng: np.random.Generator) -> EventEncoder:
    torch.manual_seed(0)
    model = EventEncoder(
        sources=SOURCES, width=32, depth=2, heads=4, pair_bias=request.param
    ).eval()
    model.fit_normalization(make_inputs(rng, events=50))
    return model


def test_output_shapes_and_padding_zero(encoder: EventEncoder, rng: np.random.Generator) -> None:
    inputs = make_inputs(rng)
    out = encoder(inputs)
    assert out.objects.shape == (5, JETS + LEPTONS, 32)
    assert out.event.shape == (5, 32)
    torch.testing.assert_close(out.object_mask, torch.cat(inputs.sequential_masks, dim=1))
    assert bool((out.objects[~out.object_mask] == 0).all())


def test_permuting_objects_permutes_outputs_and_keeps_event(
    encoder: EventEncoder, rng: np.random.Generator
) -> None:
    inputs = make_inputs(rng)
    permuted, order = permute_objects(
        inputs, torch.as_tensor(rng.permutation(JETS)), torch.tensor([1, 0])
    )
    out, out_permuted = encoder(inputs), encoder(permuted)
    torch.testing.assert_close(out_permuted.objects, out.objects[:, order], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_permuted.event, out.event, atol=1e-5, rtol=1e-5)


def test_padding_values_are_inert(encoder: EventEncoder, rng: np.random.Generator) -> None:
    inputs = make_inputs(rng)
    garbage = [
        torch.where(m[..., None], f, torch.full_like(f, float("nan")))
        for f, m in zip(inputs.sequential_features, inputs.sequential_masks, strict=True)
    ]
    real = torch.cat(inputs.sequential_masks, dim=1)
    noisy_p4 = torch.where(
        real[..., None], inputs.four_momenta, torch.full_like(inputs.four_momenta, 1e4)
    )
    out = encoder(inputs)
    out_garbage = encoder(
        inputs._replace(sequential_features=tuple(garbage), four_momenta=noisy_p4)
    )
    torch.testing.assert_close(out_garbage.objects, out.objects)
    torch.testing.assert_close(out_garbage.event, out.event)


def test_padded_slots_act_as_if_absent(encoder: EventEncoder, rng: np.random.Generator) -> None:
    inputs = make_inputs(rng, events=1)
    jets_kept = inputs.sequential_masks[0][0].nonzero()[:, 0]
    leptons_kept = inputs.sequential_masks[1][0].nonzero()[:, 0]
    kept = torch.cat([jets_kept, JETS + leptons_kept])
    trimmed = EncoderInputs(
        (
            inputs.sequential_features[0][:, jets_kept],
            inputs.sequential_features[1][:, leptons_kept],
        ),
        (inputs.sequential_masks[0][:, jets_kept], inputs.sequential_masks[1][:, leptons_kept]),
        inputs.global_features,
        inputs.four_momenta[:, kept],
    )
    out, out_trimmed = encoder(inputs), encoder(trimmed)
    torch.testing.assert_close(out_trimmed.objects, out.objects[:, kept], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_trimmed.event, out.event, atol=1e-5, rtol=1e-5)


def test_event_with_no_objects_gives_finite_outputs(
    encoder: EventEncoder, rng: np.random.Generator
) -> None:
    inputs = make_inputs(rng)
    empty = tuple(torch.zeros_like(m) for m in inputs.sequential_masks)
    out = encoder(inputs._replace(sequential_masks=empty))
    assert bool(torch.isfinite(out.event).all())
    assert bool((out.objects == 0).all())


def test_nan_on_a_real_object_raises(encoder: EventEncoder, rng: np.random.Generator) -> None:
    inputs = make_inputs(rng)
    jets = inputs.sequential_features[0].clone()
    jets[0, 0, 1] = float("nan")
    with pytest.raises(EncoderError, match="INPUTS/Jets: NaN"):
        encoder(inputs._replace(sequential_features=(jets, inputs.sequential_features[1])))


def test_shape_mismatches_raise(encoder: EventEncoder, rng: np.random.Generator) -> None:
    inputs = make_inputs(rng)
    with pytest.raises(EncoderError, match="INPUTS/Jets"):
        encoder(
            inputs._replace(
                sequential_features=(
                    inputs.sequential_features[0][..., :3],
                    inputs.sequential_features[1],
                )
            )
        )
    with pytest.raises(EncoderError, match="expected one each"):
        encoder(inputs._replace(global_features=()))


def test_pair_bias_requires_four_momenta(rng: np.random.Generator) -> None:
    model = EventEncoder(sources=SOURCES, width=16, depth=1, heads=2, pair_bias=True)
    with pytest.raises(EncoderError, match="four_momenta"):
        model(make_inputs(rng)._replace(four_momenta=None))


def test_gradients_reach_every_parameter(rng: np.random.Generator) -> None:
    torch.manual_seed(1)
    model = EventEncoder(sources=SOURCES, width=16, depth=2, heads=2, pair_bias=True)
    out = model(make_inputs(rng))
    (out.objects.pow(2).sum() + out.event.pow(2).sum()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert bool(parameter.grad.abs().sum() > 0), name


def test_pair_features_are_symmetric_and_lorentz_invariant_in_mass(
    rng: np.random.Generator,
) -> None:
    p4 = make_inputs(rng).four_momenta.double()
    features = pairwise_lorentz_features(p4)
    torch.testing.assert_close(features, features.transpose(1, 2))
    # A boost along z leaves m^2 unchanged (and Delta y, hence ln Delta, kT and z too).
    rapidity = 0.7
    energy, pz = p4[..., 0], p4[..., 3]
    boosted = p4.clone()
    boosted[..., 0] = energy * np.cosh(rapidity) + pz * np.sinh(rapidity)
    boosted[..., 3] = pz * np.cosh(rapidity) + energy * np.sinh(rapidity)
    torch.testing.assert_close(pairwise_lorentz_features(boosted), features, atol=1e-6, rtol=1e-6)


def test_the_pair_bias_of_real_pairs_only_equals_the_mlp_on_every_ordered_pair() -> None:
    torch.manual_seed(3)
    bias = PairBias(heads=4)
    momenta = torch.randn(6, 9, 3) * 40
    four_momenta = torch.cat([torch.sqrt((momenta**2).sum(-1, keepdim=True) + 25.0), momenta], dim=-1)
    mask = torch.rand(6, 9) < 0.6
    mask[0] = False  # an event without objects
    mask[1] = True  # one without padding
    pair_mask = mask[:, :, None] & mask[:, None, :]
    features = torch.where(pair_mask[..., None], pairwise_lorentz_features(four_momenta), 0.0)
    every_pair = bias.mlp(features).masked_fill(~pair_mask[..., None], 0.0).permute(0, 3, 1, 2)
    torch.testing.assert_close(bias(four_momenta, mask), every_pair, atol=1e-6, rtol=1e-5)


def test_training_with_dropout_is_stochastic_and_eval_is_deterministic(
    rng: np.random.Generator,
) -> None:
    model = EventEncoder(sources=SOURCES, width=16, depth=1, heads=2, dropout=0.5)
    inputs = make_inputs(rng)
    assert not torch.allclose(model(inputs).event, model(inputs).event)
    model.eval()
    torch.testing.assert_close(model(inputs).event, model(inputs).event)


def test_bfloat16_autocast_gives_finite_outputs(rng: np.random.Generator) -> None:
    model = EventEncoder(sources=SOURCES, width=16, depth=1, heads=2, pair_bias=True).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(make_inputs(rng))
    assert bool(torch.isfinite(out.event).all())
    assert bool(torch.isfinite(out.objects).all())
