"""Offers: the shipped catalog, this machine and the pool at price 0, clouds within limits."""

from __future__ import annotations

import json

from conftest import Project

from dstack.backends.cloud.catalog import load_catalog
from dstack.backends.cloud.limits import CloudLimits, allowed, catalog_offers, fitting, why_not
from dstack.spec.jobspec import GPUSpec, ResourcesSpec

LIMITS = """
backends:
  aws:
    regions: [us-east-1]
    spot: never
    max_price: 4
  gcp:
    instance_types: [g2-standard-8]
"""


def offers(project: Project, *args: str) -> list[dict]:  # type: ignore[type-arg]
    done = project.dstack("offers", "--json", *args, check=True)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_without_a_cloud_only_this_machine_is_offered_and_free(project: Project) -> None:
    listed = offers(project)
    assert [(o["backend"], o["name"], o["price"]) for o in listed] == [("local", "local", 0.0)]
    note = project.dstack("offers", check=True).stderr
    assert "No cloud is set up" in note and "catalog of 2025-05-01" in note


def test_cloud_limits_decide_what_is_offered(project: Project) -> None:
    project.home.mkdir(parents=True, exist_ok=True)
    (project.home / "config.yaml").write_text(LIMITS)
    listed = offers(project)
    assert listed[0]["backend"] == "local", "free offers come first"
    prices = [o["price"] for o in listed]
    assert prices == sorted(prices)
    aws = [o for o in listed if o["backend"] == "aws"]
    assert aws and all(o["region"] == "us-east-1" and not o["spot"] for o in aws)
    assert all(o["price"] <= 4 for o in aws)
    assert {"g5.xlarge", "p3.2xlarge"} <= {o["name"] for o in aws}
    assert "p4d.24xlarge" not in {o["name"] for o in aws}, "over max_price"
    gcp = [o for o in listed if o["backend"] == "gcp"]
    assert {o["name"] for o in gcp} == {"g2-standard-8"}
    assert {o["spot"] for o in gcp} == {True, False}, "spot: auto lists both"
    assert not [o for o in listed if o["backend"] == "azure"], "not set up: never used"


def test_a_cloud_not_set_up_lists_its_catalog_by_gpu(project: Project) -> None:
    listed = offers(project, "--backend", "aws", "--gpu", "A100:8")
    assert {o["name"] for o in listed} == {"p4d.24xlarge"}
    assert all(len(o["gpus"]) == 8 and o["gpus"][0]["name"] == "A100" for o in listed)
    shown = project.dstack("offers", "--backend", "aws", "--gpu", "a100", check=True)
    assert "aws is not set up" in shown.stderr and "never used" in shown.stderr
    assert all(len(line) <= 80 for line in shown.stdout.splitlines())


def test_bad_limits_and_arguments_are_clear_errors(project: Project) -> None:
    project.home.mkdir(parents=True, exist_ok=True)
    (project.home / "config.yaml").write_text(LIMITS.replace("us-east-1", "us-east-9"))
    done = project.dstack("offers")
    assert done.returncode == 2
    assert "config.yaml:3: field 'backends.aws'" in done.stderr
    assert "'us-east-9' is not a aws entry" in done.stderr and "us-east-1" in done.stderr
    (project.home / "config.yaml").unlink()
    bad = project.dstack("offers", "--gpu", "A100:x")
    assert bad.returncode == 2 and "NAME:COUNT" in bad.stderr and "Traceback" not in bad.stderr


def test_the_limit_that_stopped_a_job_is_named() -> None:
    catalog = load_catalog()
    offers = catalog_offers(catalog, ["aws"])
    want = ResourcesSpec(gpu=GPUSpec(count=8, name="H100"))
    capped = {"aws": CloudLimits(max_price=50.0)}
    assert not allowed(fitting(want, offers), capped, interruptible=False)
    reason = why_not(want, offers, capped)["aws"]
    assert reason.startswith("the limit max_price $50/h excludes all")
    assert "p5.48xlarge in us-east-1, $98.32/h" in reason

    spot_only = {"aws": CloudLimits(spot="only")}
    small = ResourcesSpec(cpu=2)
    assert "spot: only (the job is not interruptible)" in why_not(small, offers, spot_only)["aws"]
    interruptible = ResourcesSpec(cpu=2, interruptible=True)
    cheapest = allowed(fitting(interruptible, offers), spot_only, interruptible=True)[0]
    assert cheapest.spot and cheapest.name == "t3.xlarge"
    huge = ResourcesSpec(gpu=GPUSpec(count=16))
    assert why_not(huge, offers, spot_only)["aws"] == "no instance type in the catalog fits"


def test_the_catalog_is_complete_and_consistent() -> None:
    catalog = load_catalog()
    for cloud in ("aws", "gcp", "azure"):
        types = [t for t in catalog.types if t.backend == cloud]
        assert len(catalog.regions(cloud)) >= 2 and any(t.gpu_count for t in types)
    for t in catalog.types:
        assert t.vcpus > 0 and t.memory_gib > 0 and 0 < t.spot_price < t.price, t
        assert bool(t.gpu_name) == (t.gpu_count > 0) == (t.gpu_memory_gib > 0), t
