"""The instance catalog shipped with dstack (catalog.csv): what AWS, GCP and Azure sell, per
region, with on-demand and spot prices as of the snapshot date in its header."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from dstack.hostinfo import GPUInfo, HostResources

CLOUDS = ("aws", "gcp", "azure")
GIB = 1024**3
CLOUD_DISK = 16 * 1024**4  # a cloud disk is made the size the job asks for


@dataclass(frozen=True)
class InstanceType:
    backend: str
    name: str
    region: str
    vcpus: int
    memory_gib: float
    gpu_name: str
    gpu_count: int
    gpu_memory_gib: float
    price: float
    spot_price: float

    @property
    def resources(self) -> HostResources:
        gpus = [GPUInfo(self.gpu_name, int(self.gpu_memory_gib * GIB))] * self.gpu_count
        return HostResources(self.vcpus, int(self.memory_gib * GIB), CLOUD_DISK, gpus)


@dataclass(frozen=True)
class Catalog:
    snapshot: str
    types: tuple[InstanceType, ...]

    def regions(self, backend: str) -> list[str]:
        return sorted({t.region for t in self.types if t.backend == backend})

    def names(self, backend: str) -> list[str]:
        return sorted({t.name for t in self.types if t.backend == backend})


@lru_cache(maxsize=1)
def load_catalog(path: Path = Path(__file__).with_name("catalog.csv")) -> Catalog:
    import csv

    lines = path.read_text().splitlines()
    snapshot = next(
        line.split(":", 1)[1].strip() for line in lines if line.startswith("# snapshot:")
    )
    rows = csv.DictReader(line for line in lines if not line.startswith("#"))
    types = tuple(
        InstanceType(
            backend=row["backend"],
            name=row["instance_type"],
            region=row["region"],
            vcpus=int(row["vcpus"]),
            memory_gib=float(row["memory_gib"]),
            gpu_name=row["gpu_name"],
            gpu_count=int(row["gpu_count"]),
            gpu_memory_gib=float(row["gpu_memory_gib"]),
            price=float(row["price"]),
            spot_price=float(row["spot_price"]),
        )
        for row in rows
    )
    return Catalog(snapshot, types)
