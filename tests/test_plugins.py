"""Providers come from one registry that installed plug-ins extend via the `dstack.providers` group."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import Project


def install_plugin(site: Path) -> None:
    """A real distribution on sys.path whose entry point registers the provider `shout`."""
    (site / "shout_provider.py").write_text(
        "from dstack.providers.base import Provider\n"
        "class ShoutProvider(Provider):\n"
        "    name = 'shout'\n"
        "    def script(self, wf, host):\n"
        "        return 'set -e\\n' + '\\n'.join(f'echo {c.upper()!r}' for c in wf.commands)\n"
    )
    info = site / "shout_provider-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shout-provider\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[dstack.providers]\nshout = shout_provider:ShoutProvider\n"
    )


def test_plugin_provider_is_found_and_runs(project: Project, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install_plugin(site)
    project.workflows(
        "workflows:\n  - name: loud\n    provider: shout\n    commands: [hello, world]\n"
    )
    env = project.env(PYTHONPATH=f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    done = project.dstack("run", "loud", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "HELLO\nWORLD\n"
    without = project.dstack("run", "loud")
    assert without.returncode == 2 and "provider 'shout' is not available" in without.stderr
