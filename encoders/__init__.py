"""The shared transformer encoder: per-input embeddings, a learnable event token, attention over padded sets."""

from encoders.errors import EncoderError
from encoders.event_encoder import EncoderInputs, EncoderOutput, EventEncoder, SourceEmbedding
from encoders.normalization import FeatureNormalizer
from encoders.pair_features import PairBias, pairwise_lorentz_features
from encoders.sources import InputSource, Normalization, SourceKind
from encoders.transformer import TransformerBlock

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
    "TransformerBlock",
    "pairwise_lorentz_features",
]
