"""One round trip that tells what a host has: CPUs, memory, free disk, GPUs, OS, python3, bash."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from dstack.hostinfo import GPUInfo, HostResources, parse_nvidia_smi

if TYPE_CHECKING:
    from fabric import Connection

PROBE = r"""
echo "cpus=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)"
echo "mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
echo "disk_kb=$(df -Pk "$HOME" | awk 'NR==2 {print $4}')"
echo "os=$( (. /etc/os-release && echo "$PRETTY_NAME") 2>/dev/null || uname -sr)"
echo "python=$(python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null)"
echo "bash=${BASH_VERSION}"
echo "home=$HOME"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits | sed 's/^/gpu=/'
fi
"""


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
    result = conn.run(f"bash -c {_quote(PROBE)}", hide=True, warn=True, in_stream=False)
    return parse_probe(result.stdout)


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
