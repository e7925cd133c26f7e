"""The provider-neutral description of one host, and what every cloud's component shares.

Plain data without Pulumi imports, so dstack can build and show it cheaply; each cloud module
turns it into resources."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BACKENDS = ("aws", "gcp", "azure", "ssh")


@dataclass(frozen=True)
class HostSpec:
    """One host for one job.

    ``allowed_cidr`` is the only source SSH is opened to (dstack passes the caller's address
    as /32; 0.0.0.0/0 only when the user configured it). ``shutdown_after_minutes`` is a
    deadline the host enforces itself (power-off from its startup script), so a lost laptop
    cannot leave a VM running for long; ``idle_minutes`` powers it off sooner, that long after
    the last dstack job on it ended (a finished job whose laptop went away). ``labels`` name
    the run, job and owner on every resource. ``address``/``port`` describe a pre-existing
    own server (backend "ssh")."""

    backend: str
    name: str
    instance_type: str = ""
    region: str = ""
    zone: str | None = None
    gpu_name: str | None = None
    gpu_count: int = 0
    disk_gb: int = 100
    spot: bool = False
    max_price: float | None = None
    image: str | None = None
    ssh_public_key: str = ""
    ssh_user: str = "ubuntu"
    allowed_cidr: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    shutdown_after_minutes: int | None = None
    idle_minutes: int | None = None
    address: str | None = None
    port: int = 22

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError(f"host '{self.name}': " + "; ".join(problems))

    def problems(self) -> list[str]:
        """What makes this description unusable, in words (empty when it is fine)."""
        found = []
        if self.backend not in BACKENDS:
            found.append(f"backend must be one of {', '.join(BACKENDS)}, not '{self.backend}'")
        if self.backend == "ssh":
            if not self.address:
                found.append("an own server needs its address")
            return found
        for key in ("instance_type", "region", "ssh_public_key", "allowed_cidr"):
            if not getattr(self, key):
                found.append(f"{key} is required for {self.backend}")
        if self.allowed_cidr:
            try:
                ipaddress.ip_network(self.allowed_cidr, strict=False)
            except ValueError:
                found.append(f"allowed_cidr '{self.allowed_cidr}' is not an address range")
        for key in ("shutdown_after_minutes", "idle_minutes"):
            value = getattr(self, key)
            if value is not None and value < 1:
                found.append(f"{key} must be at least 1")
        if self.disk_gb < 8:
            found.append("disk_gb must be at least 8")
        if self.gpu_count < 0:
            found.append("gpu_count cannot be negative")
        if self.max_price is not None and self.max_price <= 0:
            found.append("max_price must be positive")
        return found

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostSpec:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown host settings: {', '.join(unknown)}")
        return cls(**data)


# Runs on the host as root, in the background (stacks/idle-off.sh): powers it off once no
# dstack job has been busy for IDLE seconds (looking every EVERY seconds), or AFTER_SEAL
# seconds after every job's agent sealed its data while nobody is logged in over SSH (the
# job's laptop went away: nothing is left to do there, and a teammate's `dstack gc` destroys
# the stack). A job is busy while its process lives without an `rc`, then while its agent
# holds the job's lock unsealed. The patterns are where job folders may be: a home's own
# folder of runs on the host, ~/.dstack/runs/HOME-ID/RUN/JOB (dstack.execution.ssh).
IDLE_WATCHDOG = (Path(__file__).parent / "idle-off.sh").read_text()
JOB_PIDS = ("/home/*/.dstack/runs/*/*/*/pid", "/root/.dstack/runs/*/*/*/pid")
IDLE_EVERY = 60  # seconds between the watchdog's looks
AFTER_SEAL = 10 * 60  # seconds; an attached dstack tears the host down within one of those


def startup_script(spec: HostSpec) -> str:
    """User data / startup script: the self-shutdown deadline and the idle watchdog (powering
    off deletes a spot VM set to be deleted on stop, and terminates an AWS instance whose
    shutdown behaviour is 'terminate')."""
    lines = ["#!/bin/bash", "# dstack: the host powers itself off at its deadline"]
    if spec.shutdown_after_minutes:
        lines.append(f"shutdown -h +{spec.shutdown_after_minutes}")
    if spec.idle_minutes:
        patterns = " ".join(f"'{p}'" for p in JOB_PIDS)
        lines += [
            f"# ... and {spec.idle_minutes} minutes after its last dstack job ended (sooner once"
            " its data is sealed and nobody is logged in)",
            "cat > /usr/local/bin/dstack-idle-off <<'WATCHDOG'",
            IDLE_WATCHDOG.rstrip("\n"),
            "WATCHDOG",
            "chmod 755 /usr/local/bin/dstack-idle-off",
            f"nohup /usr/local/bin/dstack-idle-off {spec.idle_minutes * 60} {IDLE_EVERY} "
            f"--after-seal {AFTER_SEAL} {patterns} >>/var/log/dstack-idle-off.log 2>&1 &",
        ]
    return "\n".join(lines) + "\n"


def cloud_labels(spec: HostSpec) -> dict[str, str]:
    """Labels in the strictest form the clouds share (GCP: lowercase letters, digits, '-' and
    '_', at most 63 characters), so one set of names works everywhere."""
    clean = {"managed-by": "dstack"}
    for key, value in spec.labels.items():
        clean[_label(key)] = _label(value)
    return clean


def _label(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]
