"""The per-parton attention summaries of the detector objects that condition the parton unfolding."""

from __future__ import annotations

import pytest
import torch

from unfold.errors import UnfoldError
from unfold.models.parton import PartonQueries


@pytest.fixture
def queries() -> PartonQueries:
    torch.manual_seed(0)
    return PartonQueries(queries=6, width=16, heads=4).eval()


def _events(events: int = 5, objects: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    embeddings = torch.randn(events, objects, 16, generator=generator)
    mask = torch.arange(objects) < torch.tensor([7, 5, 4, 6, 1])[:events, None]
    return embeddings, mask


def test_summaries_are_invariant_under_permutations_of_the_objects(queries):
    embeddings, mask = _events()
    order = torch.randperm(embeddings.shape[1], generator=torch.Generator().manual_seed(2))
    summaries = queries(embeddings, mask)
    assert summaries.shape == (5, queries.width) == (5, 6 * 16)
    torch.testing.assert_close(queries(embeddings[:, order], mask[:, order]), summaries)


def test_padding_never_contributes(queries):
    embeddings, mask = _events()
    scrambled = torch.where(mask[..., None], embeddings, 1e3 * torch.randn_like(embeddings))
    torch.testing.assert_close(queries(scrambled, mask), queries(embeddings, mask))
    # The same event with its padding slots removed altogether.
    torch.testing.assert_close(queries(embeddings[3:4, :6], mask[3:4, :6]), queries(embeddings[3:4], mask[3:4]))


def test_each_query_reads_the_objects_it_weights(queries):
    """The summaries depend on the real objects: changing one changes them (the test can fail)."""
    embeddings, mask = _events()
    changed = embeddings.clone()
    changed[1, 2] += 1.0
    differences = (queries(changed, mask) - queries(embeddings, mask)).abs().amax(dim=1)
    assert differences[1] > 1e-3
    assert torch.all(differences[[0, 2, 3, 4]] == 0)


def test_an_event_without_objects_gets_finite_summaries(queries):
    embeddings, _ = _events(2)
    summaries = queries(embeddings, torch.zeros(2, 7, dtype=torch.bool))
    assert torch.isfinite(summaries).all()
    torch.testing.assert_close(summaries[0], summaries[1])


@pytest.mark.parametrize("options", [{"queries": 0, "width": 16}, {"queries": 6, "width": 18, "heads": 4}])
def test_bad_shapes_are_refused_in_one_line(options):
    with pytest.raises(UnfoldError, match="parton queries need"):
        PartonQueries(**options)


def test_a_parton_module_conditions_on_the_queries_when_asked(event_files):
    from unfold.training.unfolding_modules import PartonModule

    event_file = event_files["ttbar-semileptonic"].read_text()
    without = PartonModule(event_file_yaml=event_file, object_queries=False)
    queried = PartonModule(event_file_yaml=event_file, object_queries=True)
    assert without.parton_queries is None and without.vld.condition_width == without.encoder.width
    assert queried.vld.condition_width == queried.encoder.width * (1 + len(queried.representation.daughters))
    assert queried.hparams.object_queries is True


@pytest.mark.parametrize("latent", [True, False])
def test_auto_queries_follow_the_latent_step_and_are_saved_resolved(event_files, latent):
    from unfold.training.unfolding_modules import PartonModule

    module = PartonModule(event_file_yaml=event_files["ttbar-semileptonic"].read_text(), object_queries="auto",
                          model={"latent": latent})
    assert (module.parton_queries is not None) is latent
    assert module.hparams.object_queries is latent


@pytest.mark.parametrize("random_pair_labels", [True, False])
def test_training_batches_label_the_w_quarks_at_random_when_asked(event_files, synthetic_truth, random_pair_labels):
    """Under ``random_pair_labels`` about half the events of a batch have q1 and q2 exchanged, differently in each
    training batch and the same in every validation pass; otherwise the batch is left as it is."""
    from unfold.training.unfolding_modules import PartonModule

    module = PartonModule(
        event_file_yaml=event_files["ttbar-semileptonic"].read_text(), random_pair_labels=random_pair_labels
    )
    truth = synthetic_truth(400)
    module.representation.fit(truth)
    partons = module.representation.encode(truth)
    labelled = module._labelled(partons, generator=None)
    exchanged = (labelled - partons).abs().amax(dim=1) > 1e-4
    if not random_pair_labels:
        assert not exchanged.any()
        return
    assert 120 < int(exchanged.sum()) < 280
    torch.testing.assert_close(module.representation.relabel(partons, exchanged[:, None]), labelled)
    assert not torch.equal(module._labelled(partons, generator=None), labelled)
    validation = [module._labelled(partons, generator=torch.Generator().manual_seed(5)) for _ in range(2)]
    torch.testing.assert_close(*validation)


@pytest.mark.parametrize("lift_directions", [True, False])
def test_training_batches_lift_the_decay_directions_when_asked(event_files, synthetic_truth, lift_directions):
    """Under ``lift_directions`` a batch's decay directions get fresh chi_3 radii (the same in every validation pass)
    and decode to the same events; otherwise the batch is left as it is."""
    from unfold.training.unfolding_modules import PartonModule

    module = PartonModule(event_file_yaml=event_files["ttbar-semileptonic"].read_text(), lift_directions=lift_directions)
    truth = synthetic_truth(400)
    module.representation.fit(truth)
    partons = module.representation.encode(truth)
    lifted = module._lifted(partons, generator=None)
    if not lift_directions:
        assert torch.equal(lifted, partons)
        return
    assert not torch.equal(lifted, partons)
    assert not torch.equal(module._lifted(partons, generator=None), lifted)
    torch.testing.assert_close(module.representation.decode(lifted)["q1"]["eta"], module.representation.decode(partons)["q1"]["eta"])
    validation = [module._lifted(partons, generator=torch.Generator().manual_seed(5)) for _ in range(2)]
    torch.testing.assert_close(*validation)
