"""Jet-parton assignment: symmetric tensor attention heads, symmetric min-loss, decoding."""

from recon.assignment_loss import (
    AssignmentLoss,
    AssignmentTargets,
    RegressionDistribution,
    assignment_loss,
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
from recon.symmetric_attention import SymmetricTensorAttention, allowed_tuples, masked_log_softmax

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
    "assignment_loss",
    "decode_assignments",
    "masked_log_softmax",
    "pattern_balance_weights",
    "regression_nll",
    "resonance_presence",
]
