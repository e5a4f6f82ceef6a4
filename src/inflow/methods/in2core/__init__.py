"""In2Core (San Joaquin et al. 2024; DESIGN §6): influence-function coresets with DataInf's per-layer inverse
Hessian, on a reduced set of layers, and the coverage of each test point by the pool."""

from inflow.methods.in2core.coverage import Coverage
from inflow.methods.in2core.datainf import Blocks, DataInfFit, fit_datainf
from inflow.methods.in2core.layers import kept_blocks

__all__ = ["Blocks", "Coverage", "DataInfFit", "fit_datainf", "kept_blocks"]
