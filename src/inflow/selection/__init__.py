"""Selections: top-k by score, the baselines (random, full pool), and their on-disk outputs."""

from inflow.selection.baselines import full_selection, random_selection
from inflow.selection.outputs import read_selection, write_selection
from inflow.selection.topk import round_robin, selection_size, top_k

__all__ = ["full_selection", "random_selection", "read_selection", "round_robin", "selection_size", "top_k",
           "write_selection"]
