"""Channel pruning of SRNets (placeholder docstring, rewritten below)."""

from .gates import Gate, GatedModel
from .graph import ChannelGraph, Space, analyze
from .importance import (
    CostModel,
    TaylorImportance,
    cost_model,
    cost_of,
    l1_importance,
    normalized,
    per_gate,
    unit_costs,
)
from .shrink import empty_convs, make_plan, shrink
from .surgery import apply_plan, decode_indices, encode_indices

__all__ = [
    "ChannelGraph",
    "CostModel",
    "Gate",
    "GatedModel",
    "Space",
    "TaylorImportance",
    "analyze",
    "apply_plan",
    "cost_model",
    "cost_of",
    "decode_indices",
    "empty_convs",
    "encode_indices",
    "l1_importance",
    "make_plan",
    "normalized",
    "per_gate",
    "shrink",
    "unit_costs",
]
