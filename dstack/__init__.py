"""dstack: workflow-as-code for AI researchers."""

__version__ = "0.1.0"
