"""The shared transformer encoder: per-input embeddings, a learnable event token, attention over padded sets.

The public names load on first use (PEP 562), so a torch-free module such as
:mod:`encoders.sources` can be imported without loading torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from encoders.errors import EncoderError
    from encoders.event_encoder import (
        EncoderInputs,
        EncoderOutput,
        EventEncoder,
        SourceEmbedding,
    )
    from encoders.normalization import FeatureNormalizer, Standardisation, fit_standardisation
    from encoders.pair_features import PairBias, pairwise_lorentz_features
    from encoders.sources import InputSource, Normalization, SourceKind
    from encoders.transformer import TransformerBlock

_SOURCE_OF = {
    "EncoderError": "encoders.errors",
    "EncoderInputs": "encoders.event_encoder",
    "EncoderOutput": "encoders.event_encoder",
    "EventEncoder": "encoders.event_encoder",
    "FeatureNormalizer": "encoders.normalization",
    "InputSource": "encoders.sources",
    "Normalization": "encoders.sources",
    "PairBias": "encoders.pair_features",
    "SourceEmbedding": "encoders.event_encoder",
    "SourceKind": "encoders.sources",
    "Standardisation": "encoders.normalization",
    "TransformerBlock": "encoders.transformer",
    "fit_standardisation": "encoders.normalization",
    "pairwise_lorentz_features": "encoders.pair_features",
}

__all__ = [
    "EncoderError",
    "EncoderInputs",
    "EncoderOutput",
    "EventEncoder",
    "FeatureNormalizer",
    "InputSource",
    "Normalization",
    "PairBias",
    "SourceEmbedding",
    "SourceKind",
    "Standardisation",
    "TransformerBlock",
    "fit_standardisation",
    "pairwise_lorentz_features",
]


def __getattr__(name: str) -> Any:
    if name not in _SOURCE_OF:
        raise AttributeError(f"module 'encoders' has no attribute {name!r}")
    return getattr(import_module(_SOURCE_OF[name]), name)


def __dir__() -> list[str]:
    return __all__
