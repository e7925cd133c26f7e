"""`dstack plan` with the offline preview, per cloud: wall time and peak memory of the command
that picks the offer and runs the real stack program under the Pulumi SDK's mock runtime; and
`dstack --help` with every cloud extra installed (it must import none of them).

There is no engine here to compare with (`pulumi preview` needs the Pulumi CLI and provider
plug-ins from outside the package registries); a bare interpreter importing the cloud's Pulumi
SDK is printed beside each figure, as the floor any preview pays.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _timing import DSTACK, env_with, print_table, run_checked, seconds, time_command

RUNS = 3
WORKFLOW = """workflows:
  - name: train
    commands: [python train.py]
    resources: {gpu: {count: 1, name: T4}, interruptible: true}
"""
SDKS = {
    "aws": "pulumi_aws.ec2",
    "gcp": "pulumi_gcp.compute",
    "azure": "pulumi_azure_native.compute",
}
PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="dstack-bench-plan-") as tmp:
        repo = Path(tmp) / "repo"
        (repo / ".dstack").mkdir(parents=True)
        (repo / ".dstack" / "workflows.yaml").write_text(WORKFLOW)
        for cloud, sdk in SDKS.items():
            home = Path(tmp) / f"home-{cloud}"
            home.mkdir()
            (home / "config.yaml").write_text(
                f"backends:\n  local: {{enabled: false}}\n  {cloud}: {{}}\n"
            )
            env = env_with(DSTACK_HOME=str(home))
            command: list[str | Path] = [DSTACK, "plan", "train"]
            plan = time_command(command, runs=RUNS, cwd=repo, env=env)
            peak = int(
                run_checked([sys.executable, "-c", PEAK_RSS, *command], repo, env).split()[-1]
            )
            floor = time_command(
                [sys.executable, "-c", f"import {sdk}"], runs=RUNS, cwd=repo, env=env
            )
            rows.append(
                [
                    f"dstack plan ({cloud})",
                    seconds(plan.median),
                    f"{peak / 1024:.0f}",
                    f"import {sdk}: {seconds(floor.median)}",
                ]
            )
        env = env_with(DSTACK_HOME=str(Path(tmp) / "home-aws"))
        helped = time_command([DSTACK, "--help"], runs=10, cwd=repo, env=env)
        rows.append(
            ["dstack --help (all extras installed)", seconds(helped.median), "", "target < 0.25 s"]
        )
    print_table(
        f"Offline plan per cloud: wall seconds (median of {RUNS}) and peak RSS (MB)",
        ["command", "seconds", "MB", "beside it"],
        rows,
    )


if __name__ == "__main__":
    main()
