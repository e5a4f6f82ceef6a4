"""The Zarr gradient store: ``zarr_store.GradientStore`` (chunks, done marks, checksums) and ``attrs.StoreAttrs``."""

from inflow.store.attrs import StoreAttrs
from inflow.store.zarr_store import GradientStore, chunk_digest

__all__ = ["GradientStore", "StoreAttrs", "chunk_digest"]
