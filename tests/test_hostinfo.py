"""GPU matching on probe output captured from a real H100 host (`nvidia-smi` is absent here)."""

from __future__ import annotations

from dstack.hostinfo import describe, missing_resources
from dstack.spec.jobspec import GPUSpec, ResourcesSpec
from dstack.ssh.probe import parse_probe

H100_PROBE = """cpus=16
mem_kb=131981020
disk_kb=67091632
os=Ubuntu 24.04.3 LTS
python=3.12.3
bash=5.2.21(1)-release
home=/root
gpu=NVIDIA H100 80GB HBM3, 81559
"""


def test_probe_of_a_gpu_host_and_matching() -> None:
    facts = parse_probe(H100_PROBE)
    (gpu,) = facts.resources.gpus
    assert (gpu.name, gpu.memory) == ("NVIDIA H100 80GB HBM3", 81559 * 1024**2)
    assert facts.resources.cpus == 16 and facts.python == "3.12.3" and facts.home == "/root"
    assert describe(facts.resources) == "16 CPUs, 126GB, 1x NVIDIA H100 80GB HBM3 79.6GB, 64GB free"
    assert (
        missing_resources(ResourcesSpec(gpu=GPUSpec(1, "h100", 60 * 1024**3)), facts.resources)
        == []
    )
    assert missing_resources(
        ResourcesSpec(gpu=GPUSpec(1, "H100", 96 * 1024**3)), facts.resources
    ) == ["1 GPU H100 with 96GB requested, 0 fitting (NVIDIA H100 80GB HBM3 79.6GB)"]
    assert missing_resources(ResourcesSpec(gpu=GPUSpec(2, "A100")), facts.resources) == [
        "2 GPUs A100 requested, 0 fitting (NVIDIA H100 80GB HBM3 79.6GB)"
    ]
