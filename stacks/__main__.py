"""Standalone entry point (Pulumi.yaml's `main: stacks/`): the host description is the stack
config object `host`, as written by `dstack plan WORKFLOW --export DIR`."""

from __future__ import annotations

import sys
from pathlib import Path

import pulumi

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the `stacks` package

from stacks.program import host  # noqa: E402
from stacks.spec import HostSpec  # noqa: E402

host(HostSpec.from_dict(pulumi.Config().require_object("host")))
