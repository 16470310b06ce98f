"""The shared event encoder: detector objects and event vectors in, object and event embeddings out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from encoders.errors import EncoderError
from encoders.normalization import FeatureNormalizer
from encoders.pair_features import PairBias
from encoders.sources import InputSource
from encoders.transformer import TransformerBlock

__all__ = ["EncoderInputs", "EncoderOutput", "EventEncoder", "SourceEmbedding"]


class EncoderInputs(NamedTuple):
    """One batch of detector inputs in SPANet's layout, raw (un-normalised) features.

    Attributes:
        sequential_features: per SEQUENTIAL source in topology order, (E, N_s, F_s) float; the
            sources are concatenated along N in this order (N = sum of N_s), which is the object
            index assignment targets refer to. Values on padded objects are ignored.
        sequential_masks: per SEQUENTIAL source, (E, N_s) bool, True for real objects.
        global_features: per GLOBAL source in topology order, (E, F_g) float.
        four_momenta: optional (E, N, 4) as (energy, px, py, pz) in GeV of the concatenated
            objects, needed only by the pairwise attention bias.
    """

    sequential_features: tuple[Tensor, ...]
    sequential_masks: tuple[Tensor, ...]
    global_features: tuple[Tensor, ...] = ()
    four_momenta: Tensor | None = None


class EncoderOutput(NamedTuple):
    """The encoder's result.

    Attributes:
        objects: (E, N, D) embeddings of the sequential objects (zero on padding).
        object_mask: (E, N) bool, True for real objects.
        event: (E, D) the event token's embedding, a summary of the whole event.
    """

    objects: Tensor
    object_mask: Tensor
    event: Tensor


class SourceEmbedding(nn.Module):
    """Normalise one source's raw features and embed them to width D with a two-layer MLP.

    Args:
        source: the input's description (its normalisations fix F).
        width: D.
    """

    def __init__(self, *, source: InputSource, width: int) -> None:
        super().__init__()
        self.source = source
        self.normalizer = FeatureNormalizer(normalizations=source.normalizations)
        features = len(source.features)
        self.mlp = nn.Sequential(nn.Linear(features, width), nn.GELU(), nn.Linear(width, width))

    def forward(self, x: Tensor) -> Tensor:
        """(..., F) raw features to (..., D) embeddings."""
        return self.mlp(self.normalizer(x))


class EventEncoder(nn.Module):
    """Permutation-equivariant transformer over the detector objects, event vectors and an event token.

    Each source gets its own normalisation and embedding MLP to width D; each GLOBAL source
    becomes one extra token, and a learnable event token is prepended (SPANet arXiv
    2309.01886). A stack of pre-norm transformer blocks follows, with padded objects removed
    as attention keys, so they never influence real objects, the global tokens or the event
    token. With ``pair_bias`` the attention logits between sequential objects receive a bias
    from Lorentz-invariant pair features (ParT arXiv 2202.03772); logits touching the global
    or event tokens get none. An event with no objects still has the event and global tokens
    and gives finite outputs.

    Args:
        sources: the event file's inputs (``EventTopology.sources``), SEQUENTIAL and GLOBAL.
        width: D, token width.
        depth: number of transformer blocks.
        heads: H, attention heads (must divide D).
        dropout: dropout inside the blocks.
        pair_bias: add the Lorentz-invariant pairwise bias; then ``four_momenta`` is required.
        feedforward_multiplier: feed-forward hidden width in units of D.
    """

    def __init__(
        self,
        *,
        sources: Sequence[InputSource],
        width: int = 64,
        depth: int = 4,
        heads: int = 4,
        dropout: float = 0.0,
        pair_bias: bool = False,
        feedforward_multiplier: int = 2,
    ) -> None:
        super().__init__()
        self.sources = tuple(sources)
        self.sequential_sources = tuple(s for s in self.sources if s.kind == "SEQUENTIAL")
        self.global_sources = tuple(s for s in self.sources if s.kind == "GLOBAL")
        if not self.sequential_sources:
            raise EncoderError("the encoder needs at least one SEQUENTIAL source of objects")
        if width % heads != 0:
            raise EncoderError(f"width {width} must be a multiple of heads {heads}")
        self.width = width
        self.heads = heads
        self.sequential_embeddings = nn.ModuleList(
            SourceEmbedding(source=s, width=width) for s in self.sequential_sources
        )
        self.global_embeddings = nn.ModuleList(
            SourceEmbedding(source=s, width=width) for s in self.global_sources
        )
        self.event_token = nn.Parameter(torch.randn(width) * 0.02)
        self.pair_bias = PairBias(heads=heads) if pair_bias else None
        self.blocks = nn.ModuleList(
            TransformerBlock(
                width=width,
                heads=heads,
                dropout=dropout,
                feedforward_multiplier=feedforward_multiplier,
            )
            for _ in range(depth)
        )
        self.output_norm = nn.LayerNorm(width)

    @torch.no_grad()
    def fit_normalization(self, inputs: EncoderInputs, weights: Tensor | None = None) -> None:
        """Fit every source's normalisation statistics on a (large) batch of training inputs,
        weighted by the (E,) event weights when given."""
        self._check(inputs)
        for embedding, features, mask in zip(
            self.sequential_embeddings,
            inputs.sequential_features,
            inputs.sequential_masks,
            strict=True,
        ):
            embedding.normalizer.fit(features, mask, weights)
        for embedding, features in zip(self.global_embeddings, inputs.global_features, strict=True):
            embedding.normalizer.fit(features, weights=weights)

    def forward(self, inputs: EncoderInputs) -> EncoderOutput:
        """Encode one batch; see :class:`EncoderInputs` for the shapes."""
        self._check(inputs)
        object_mask = torch.cat(inputs.sequential_masks, dim=1)
        objects = torch.cat(
            [
                embedding(torch.where(mask[..., None], features, 0.0))
                for embedding, features, mask in zip(
                    self.sequential_embeddings,
                    inputs.sequential_features,
                    inputs.sequential_masks,
                    strict=True,
                )
            ],
            dim=1,
        )
        batch = objects.shape[0]
        leading = [self.event_token.expand(batch, 1, self.width)]
        leading += [
            embedding(x)[:, None, :]
            for embedding, x in zip(self.global_embeddings, inputs.global_features, strict=True)
        ]
        tokens = torch.cat([*leading, objects * object_mask[..., None]], dim=1)
        attention_mask = self._attention_mask(object_mask, len(leading), inputs.four_momenta)
        for block in self.blocks:
            tokens = block(tokens, attention_mask)
        tokens = self.output_norm(tokens)
        return EncoderOutput(
            objects=tokens[:, len(leading) :] * object_mask[..., None],
            object_mask=object_mask,
            event=tokens[:, 0],
        )

    def _attention_mask(
        self, object_mask: Tensor, leading: int, four_momenta: Tensor | None
    ) -> Tensor:
        """Bool key mask (E, 1, 1, L), or the additive bias (E, H, L, L) with -inf on padded keys."""
        batch = object_mask.shape[0]
        keys = torch.cat([object_mask.new_ones(batch, leading), object_mask], dim=1)
        if self.pair_bias is None:
            return keys[:, None, None, :]
        if four_momenta is None:
            raise EncoderError("pair_bias=True needs four_momenta (E, N, 4) in the inputs")
        bias = F.pad(self.pair_bias(four_momenta, object_mask), (leading, 0, leading, 0))
        return bias.masked_fill(~keys[:, None, None, :], float("-inf"))

    def _check(self, inputs: EncoderInputs) -> None:
        """Raise EncoderError on inputs that do not match the sources or hold NaN/inf on real objects."""
        if len(inputs.sequential_features) != len(self.sequential_sources) or len(
            inputs.sequential_masks
        ) != len(self.sequential_sources):
            raise EncoderError(
                f"got {len(inputs.sequential_features)} sequential feature tensors and "
                f"{len(inputs.sequential_masks)} masks; expected one each for {[s.name for s in self.sequential_sources]}"
            )
        if len(inputs.global_features) != len(self.global_sources):
            raise EncoderError(
                f"got {len(inputs.global_features)} global feature tensors; "
                f"expected one each for {[s.name for s in self.global_sources]}"
            )
        batch = inputs.sequential_features[0].shape[0]
        for source, features, mask in zip(
            self.sequential_sources,
            inputs.sequential_features,
            inputs.sequential_masks,
            strict=True,
        ):
            shape_ok = (
                features.dim() == 3
                and features.shape[0] == batch
                and features.shape[2] == len(source.features)
            )
            if not shape_ok or mask.shape != features.shape[:2]:
                raise EncoderError(
                    f"INPUTS/{source.name}: features {tuple(features.shape)} and mask {tuple(mask.shape)}; "
                    f"expected (E, N, {len(source.features)}) and (E, N) with E = {batch}"
                )
            if mask.dtype != torch.bool:
                raise EncoderError(
                    f"INPUTS/{source.name}/MASK: dtype {mask.dtype}; expected torch.bool"
                )
            if not torch.isfinite(features[mask]).all():
                raise EncoderError(
                    f"INPUTS/{source.name}: NaN or inf in the features of unmasked objects"
                )
        for source, features in zip(self.global_sources, inputs.global_features, strict=True):
            if tuple(features.shape) != (batch, len(source.features)):
                raise EncoderError(
                    f"INPUTS/{source.name}: features {tuple(features.shape)}; expected ({batch}, {len(source.features)})"
                )
            if not torch.isfinite(features).all():
                raise EncoderError(f"INPUTS/{source.name}: NaN or inf in the features")
        if inputs.four_momenta is not None:
            total = sum(mask.shape[1] for mask in inputs.sequential_masks)
            if tuple(inputs.four_momenta.shape) != (batch, total, 4):
                raise EncoderError(
                    f"four_momenta: shape {tuple(inputs.four_momenta.shape)}; expected ({batch}, {total}, 4)"
                )
            real = torch.cat(inputs.sequential_masks, dim=1)
            if not torch.isfinite(inputs.four_momenta[real]).all():
                raise EncoderError("four_momenta: NaN or inf on unmasked objects")
