"""inflow: influence-based training-data selection for LLMs.

The numerical core. It imports torch, transformers, peft, polars and zarr, and never prefect: the Prefect
tasks in ``tasks/`` and flows in ``flows/`` are thin wrappers over the functions here.
"""

__version__ = "0.1.0"
