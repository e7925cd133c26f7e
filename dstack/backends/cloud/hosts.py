"""From a chosen cloud offer and a job to the provider-neutral host description (stacks.spec)."""

from __future__ import annotations

from dstack.backends.cloud.limits import CloudLimits
from dstack.offer import Offer
from dstack.spec.jobspec import ResourcesSpec
from stacks.spec import HostSpec

DEFAULT_DISK_GB = 100
DEADLINE_MINUTES = 24 * 60  # the host powers itself off after this, whatever happens to dstack
IDLE_MINUTES = 30  # ... and this long after its last job ended (dstack itself gone, say)


def stack_name(run: str, job: str) -> str:
    return f"dstack-{run}-{job}"


def host_spec(
    offer: Offer,
    run: str,
    job: str,
    owner: str,
    want: ResourcesSpec,
    limits: CloudLimits,
    allowed_cidr: str = "",
    ssh_public_key: str = "",
) -> HostSpec:
    """The host a cloud offer becomes; the caller's address and the run's key come at launch."""
    gpus = offer.resources.gpus
    disk_gb = max(DEFAULT_DISK_GB, -(-(want.disk or 0) // 1024**3))
    return HostSpec(
        backend=offer.backend,
        name=stack_name(run, job),
        instance_type=offer.name,
        region=offer.region,
        gpu_name=gpus[0].name if gpus else None,
        gpu_count=len(gpus),
        disk_gb=disk_gb,
        spot=offer.spot,
        max_price=limits.max_price if offer.spot else None,
        ssh_public_key=ssh_public_key,
        allowed_cidr=allowed_cidr,
        labels={"run": run, "job": job, "owner": owner},
        shutdown_after_minutes=DEADLINE_MINUTES,
        idle_minutes=IDLE_MINUTES,
    )
