"""`dstack plan`: the chosen offer, its price and the stack's resources, offline, before launch."""

from __future__ import annotations

import json
from typing import Any

from conftest import Project

GPU_JOB = """
workflows:
  - name: train
    commands: [python train.py]
    resources:
      gpu: {count: 1, name: A10G}
      interruptible: true
  - name: tiny
    commands: [echo hi]
"""


def set_up(project: Project, config: str) -> None:
    project.home.mkdir(parents=True, exist_ok=True)
    (project.home / "config.yaml").write_text(config)
    project.workflows(GPU_JOB)


def plan_json(project: Project, *args: str) -> dict[str, Any]:
    done = project.dstack("plan", *args, "--json", check=True)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_plan_picks_the_cheapest_allowed_offer_and_previews_its_stack(project: Project) -> None:
    set_up(project, "backends:\n  aws:\n    regions: [eu-west-1, us-west-2]\n")
    report = plan_json(project, "train")
    assert report["preview"] == "offline"
    [job] = report["jobs"]
    offer = job["offer"]
    assert (offer["backend"], offer["name"], offer["spot"]) == ("aws", "g5.xlarge", True)
    assert offer["region"] == "us-west-2", "the cheaper of the allowed regions"
    assert offer["gpus"] == "1x A10G" and offer["price"] == 0.3018
    assert job["cost_cap"] == round(0.3018 * 24, 2)
    by_type = {r["type"]: r for r in job["resources"]}
    assert set(by_type) == {
        "dstack:aws:Host",
        "pulumi:providers:aws",
        "aws:ec2/keyPair:KeyPair",
        "aws:ec2/securityGroup:SecurityGroup",
        "aws:ec2/instance:Instance",
    }
    ssh = by_type["aws:ec2/securityGroup:SecurityGroup"]["inputs"]
    assert ssh["port"] == "22" and ssh["from"] == "<your address>/32"
    vm = by_type["aws:ec2/instance:Instance"]["inputs"]
    assert vm["type"] == "g5.xlarge" and vm["market"] == "spot" and vm["disk GB"] == "100"
    assert vm["on shutdown"] == "terminate" and vm["image"] == "<looked up at launch>"
    assert by_type["aws:ec2/keyPair:KeyPair"]["inputs"]["key"] == "<per-run key>"
    assert by_type["pulumi:providers:aws"]["inputs"]["region"] == "us-west-2"

    text = project.dstack("plan", "train", check=True).stdout
    assert "offline preview: nothing is created" in text
    assert "train: aws g5.xlarge in us-west-2, 1x A10G, spot\n  $0.3018/h; at most $7.24" in text
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "+ aws:ec2/securityGroup:SecurityGroup" in text and "from: <your address>/32" in text


def test_a_job_that_fits_here_creates_nothing(project: Project) -> None:
    set_up(project, "backends:\n  aws: {}\n")
    [job] = plan_json(project, "tiny")["jobs"]
    assert job["offer"]["backend"] == "local" and job["offer"]["price"] == 0
    assert job["resources"] == []
    assert "nothing to create" in project.dstack("plan", "tiny", check=True).stdout


def test_gcp_and_azure_offers_preview_their_own_resources(project: Project) -> None:
    set_up(
        project,
        "backends:\n  gcp: {spot: never}\n  azure: {instance_types: [Standard_NC4as_T4_v3]}\n",
    )
    project.workflows(GPU_JOB.replace("A10G", "T4"))
    [job] = plan_json(project, "train", "--backend", "gcp")["jobs"]
    assert (job["offer"]["name"], job["offer"]["spot"]) == ("n1-standard-8", False)
    types = {r["type"] for r in job["resources"]}
    assert {"gcp:compute/firewall:Firewall", "gcp:compute/instance:Instance"} <= types
    [job] = plan_json(project, "train", "--backend", "azure")["jobs"]
    assert job["offer"]["name"] == "Standard_NC4as_T4_v3" and job["offer"]["spot"]
    vm = next(r for r in job["resources"] if r["type"].endswith("VirtualMachine"))
    assert vm["inputs"]["market"] == "Spot" and vm["inputs"]["eviction"] == "Delete"


def test_no_fitting_offer_says_which_host_or_limit_stopped_it(project: Project) -> None:
    set_up(project, "backends:\n  aws:\n    max_price: 0.2\n")
    done = project.dstack("plan", "train")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "No offer fits the job" in done.stderr
    assert "local (" in done.stderr and "1 GPU A10G requested" in done.stderr
    assert "aws: the limit max_price $0.2/h excludes all" in done.stderr
    assert "g5.xlarge in us-east-1, $0.3018/h, spot" in done.stderr
