"""What a host has (CPUs, memory, GPUs, disk) and whether a job's minimum resources fit it."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dstack.spec.sizes import format_size

if TYPE_CHECKING:
    from dstack.spec.jobspec import ResourcesSpec


@dataclass(frozen=True)
class GPUInfo:
    name: str
    memory: int


@dataclass(frozen=True)
class HostResources:
    cpus: int
    memory: int
    disk_free: int
    gpus: list[GPUInfo] = field(default_factory=list)


def parse_nvidia_smi(text: str) -> list[GPUInfo]:
    """Parse `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits` (MiB)."""
    gpus = []
    for line in text.strip().splitlines():
        name, _, memory = line.rpartition(",")
        if name.strip() and memory.strip().isdigit():
            gpus.append(GPUInfo(name.strip(), int(memory.strip()) * 1024**2))
    return gpus


def local_gpus() -> list[GPUInfo]:
    if shutil.which("nvidia-smi") is None:
        return []
    done = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return parse_nvidia_smi(done.stdout) if done.returncode == 0 else []


def local_resources(disk_path: Path, with_gpus: bool) -> HostResources:
    """This machine (Linux or macOS: POSIX sysconf); GPUs are probed only when asked, since
    nvidia-smi can take a second. CPUs: those this process may use where the system says
    (Linux), else all of them."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    affinity = getattr(os, "sched_getaffinity", None)
    cpus = len(affinity(0)) if affinity else (os.cpu_count() or 1)
    return HostResources(
        cpus, memory, shutil.disk_usage(disk_path).free, local_gpus() if with_gpus else []
    )


def missing_resources(want: ResourcesSpec, host: HostResources) -> list[str]:
    """Each way the host falls short of the request, in words; empty when it fits."""
    short = []
    if want.cpu and want.cpu > host.cpus:
        short.append(f"{want.cpu} CPUs requested, {host.cpus} available")
    if want.memory and want.memory > host.memory:
        short.append(
            f"{format_size(want.memory)} memory requested, {format_size(host.memory)} available"
        )
    if want.disk and want.disk > host.disk_free:
        short.append(f"{format_size(want.disk)} disk requested, {format_size(host.disk_free)} free")
    if want.gpu and want.gpu.count:
        fitting = [
            g
            for g in host.gpus
            if (not want.gpu.name or want.gpu.name.lower() in g.name.lower())
            and (not want.gpu.memory or g.memory >= want.gpu.memory)
        ]
        if len(fitting) < want.gpu.count:
            what = f"{want.gpu.count} GPU" + ("s" if want.gpu.count > 1 else "")
            if want.gpu.name:
                what += f" {want.gpu.name}"
            if want.gpu.memory:
                what += f" with {format_size(want.gpu.memory)}"
            have = ", ".join(f"{g.name} {format_size(g.memory)}" for g in host.gpus) or "no GPUs"
            short.append(f"{what} requested, {len(fitting)} fitting ({have})")
    return short


def describe(host: HostResources) -> str:
    """One line: '8 CPUs, 31.3GB, 2x A100 80GB, 120GB free'."""
    gpus = "no GPUs"
    if host.gpus:
        first = host.gpus[0]
        gpus = f"{len(host.gpus)}x {first.name} {format_size(first.memory)}"
    return (
        f"{host.cpus} CPUs, {format_size(host.memory)}, {gpus}, {format_size(host.disk_free)} free"
    )
