"""The workflow format: YAML files in `.dstack/`, validated into pydantic models (no I/O beyond reading them)."""
