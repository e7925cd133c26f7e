"""One round trip that tells what a host has: CPUs, memory, free disk, GPUs, OS, python3, bash."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from dstack.hostinfo import GPUInfo, HostResources, parse_nvidia_smi
from dstack.scripts import command

if TYPE_CHECKING:
    from fabric import Connection


@dataclass(frozen=True)
class HostFacts:
    resources: HostResources
    os: str
    python: str | None
    bash: str
    home: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostFacts:
        res = dict(data["resources"])
        res["gpus"] = [GPUInfo(**g) for g in res.get("gpus", [])]
        return cls(**{**data, "resources": HostResources(**res)})


def parse_probe(text: str) -> HostFacts:
    values: dict[str, str] = {}
    gpu_lines = []
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "gpu":
            gpu_lines.append(value)
        elif key:
            values[key] = value.strip()
    resources = HostResources(
        cpus=int(values.get("cpus") or 0),
        memory=int(values.get("mem_kb") or 0) * 1024,
        disk_free=int(values.get("disk_kb") or 0) * 1024,
        gpus=parse_nvidia_smi("\n".join(gpu_lines)),
    )
    return HostFacts(
        resources,
        values.get("os", "?"),
        values.get("python") or None,
        values.get("bash", ""),
        values.get("home", ""),
    )


def probe(conn: Connection) -> HostFacts:
    result = conn.run(command("host-probe.sh"), hide=True, warn=True, in_stream=False)
    return parse_probe(result.stdout)
