"""The Zarr gradient store: ``zarr_store.GradientStore`` (chunks, done marks, checksums), ``attrs.StoreAttrs``
(settings checked on reopen), ``rows.RowManifest`` (ids and content hashes of the rows) and ``append`` (growing a
store when its data grows)."""

from inflow.store.attrs import StoreAttrs
from inflow.store.rows import Growth, RowManifest, plan_growth, row_hash
from inflow.store.zarr_store import GradientStore, chunk_digest

__all__ = ["GradientStore", "Growth", "RowManifest", "StoreAttrs", "chunk_digest", "plan_growth", "row_hash"]
