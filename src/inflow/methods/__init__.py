"""Influence methods, one sub-package each (LESS now; Influence Distillation and In2Core to come)."""
