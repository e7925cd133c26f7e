"""SSH to own servers through Fabric: pinned host keys, one probe of resources, clear errors."""
