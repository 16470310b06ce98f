"""Jet-parton assignment: symmetric tensor attention heads, symmetric min-loss, decoding.

The public names load on first use (PEP 562), so the numpy-only modules
(:mod:`recon.chi_square`, :mod:`recon.efficiency`, :mod:`recon.event_topology`) import without
loading torch. The loss function is imported from its module,
``from recon.assignment_loss import assignment_loss``, whose name it shares.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recon.assignment_loss import (
        AssignmentLoss,
        AssignmentTargets,
        RegressionDistribution,
        pattern_balance_weights,
        regression_nll,
        resonance_presence,
    )
    from recon.assignment_network import AssignmentNetwork, AssignmentOutput
    from recon.branch_encoder import BranchEncoder, BranchOutput
    from recon.decoding import DecodedAssignments, assignment_entropy, decode_assignments
    from recon.errors import ReconError
    from recon.event_topology import EventTopology, Resonance, TopologyError
    from recon.heads import ClassificationHead, DetectionHead, RegressionHead, RegressionPrediction
    from recon.symmetric_attention import (
        SymmetricTensorAttention,
        allowed_tuples,
        masked_log_softmax,
    )

_SOURCE_OF = {
    "AssignmentLoss": "recon.assignment_loss",
    "AssignmentNetwork": "recon.assignment_network",
    "AssignmentOutput": "recon.assignment_network",
    "AssignmentTargets": "recon.assignment_loss",
    "BranchEncoder": "recon.branch_encoder",
    "BranchOutput": "recon.branch_encoder",
    "ClassificationHead": "recon.heads",
    "DecodedAssignments": "recon.decoding",
    "DetectionHead": "recon.heads",
    "EventTopology": "recon.event_topology",
    "ReconError": "recon.errors",
    "RegressionDistribution": "recon.assignment_loss",
    "RegressionHead": "recon.heads",
    "RegressionPrediction": "recon.heads",
    "Resonance": "recon.event_topology",
    "SymmetricTensorAttention": "recon.symmetric_attention",
    "TopologyError": "recon.event_topology",
    "allowed_tuples": "recon.symmetric_attention",
    "assignment_entropy": "recon.decoding",
    "decode_assignments": "recon.decoding",
    "masked_log_softmax": "recon.symmetric_attention",
    "pattern_balance_weights": "recon.assignment_loss",
    "regression_nll": "recon.assignment_loss",
    "resonance_presence": "recon.assignment_loss",
}

__all__ = [
    "AssignmentLoss",
    "AssignmentNetwork",
    "AssignmentOutput",
    "AssignmentTargets",
    "BranchEncoder",
    "BranchOutput",
    "ClassificationHead",
    "DecodedAssignments",
    "DetectionHead",
    "EventTopology",
    "ReconError",
    "RegressionDistribution",
    "RegressionHead",
    "RegressionPrediction",
    "Resonance",
    "SymmetricTensorAttention",
    "TopologyError",
    "allowed_tuples",
    "assignment_entropy",
    "decode_assignments",
    "masked_log_softmax",
    "pattern_balance_weights",
    "regression_nll",
    "resonance_presence",
]


def __getattr__(name: str) -> Any:
    if name not in _SOURCE_OF:
        raise AttributeError(f"module 'recon' has no attribute {name!r}")
    return getattr(import_module(_SOURCE_OF[name]), name)


def __dir__() -> list[str]:
    return __all__

