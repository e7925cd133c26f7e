"""Providers turn a workflow into the bash script a host runs; plug-ins add more via entry points."""
