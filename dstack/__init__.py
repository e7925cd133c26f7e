"""dstack: workflow-as-code for AI researchers.

The Python API (dstack.service.api) is loaded on first use, so the CLI starts without it:
``dstack.run``, ``dstack.rerun``, ``dstack.runs``, ``dstack.stop``, ``dstack.Run``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from dstack.errors import DstackError
    from dstack.service.api import Run, rerun, run, runs, stop
    from dstack.service.artifacts import ArtifactFile
    from dstack.service.review import CloudReview
    from dstack.service.runs import JobInfo, RunInfo

_API = {
    "run": "dstack.service.api",
    "rerun": "dstack.service.api",
    "runs": "dstack.service.api",
    "stop": "dstack.service.api",
    "Run": "dstack.service.api",
    "RunInfo": "dstack.service.runs",
    "JobInfo": "dstack.service.runs",
    "ArtifactFile": "dstack.service.artifacts",
    "CloudReview": "dstack.service.review",
    "DstackError": "dstack.errors",
}
__all__ = [  # spelled out for linters and IDEs; _API says where each one lives
    "ArtifactFile",
    "CloudReview",
    "DstackError",
    "JobInfo",
    "Run",
    "RunInfo",
    "__version__",
    "rerun",
    "run",
    "runs",
    "stop",
]


def __getattr__(name: str) -> Any:
    """Load the API on first use of one of its names."""
    if name not in _API:
        raise AttributeError(f"module 'dstack' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_API[name]), name)
