"""Selections: top-k by score and the subtask rules, the baselines (random, full pool; BM25 and RDS scores in
:mod:`inflow.selection.bm25`, :mod:`inflow.selection.rds`), and their on-disk outputs."""

from inflow.selection.baselines import full_selection, random_selection
from inflow.selection.outputs import read_selection, write_selection
from inflow.selection.topk import round_robin, select_by_rule, selection_size, top_k

__all__ = ["full_selection", "random_selection", "read_selection", "round_robin", "select_by_rule", "selection_size",
           "top_k", "write_selection"]
