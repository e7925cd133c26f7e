"""Artifacts in three layers: object storage (bytes by key) -> content-addressed blobs -> manifests."""
