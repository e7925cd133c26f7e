"""The hosts' half of `dstack fsck`: each lasting host's cache `~/.dstack` (which several homes
may share; the backends say which hosts: Backend.kept_hosts) is checked there by the host
script host-fsck.sh, reached as the executor reaches it (the pinned host key, its address).
What the host answers is untrusted: each line must be one the script prints, in printable
text, or the host counts as unchecked.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from dstack.service.fsck_report import UNCHECKED, Finding, Report
from dstack.spec.names import shown

if TYPE_CHECKING:
    from dstack.backends.base import KeptHost
    from dstack.service.session import Session

RETRY_FOR = 10.0  # seconds a dropped host is tried again: fsck does not wait long for one
_TEXT = r"[^\x00-\x1f\x7f-\x9f]"
_FINDING = re.compile(
    rf"(corrupt|invalid|leftover)\t({_TEXT}{{1,2000}})\t({_TEXT}{{1,300}})\t(-|removed|kept)"
)
_CHECKED = re.compile(r"checked\t([0-9]{1,12})\t([0-9]{1,12})")
_ACTIONS = {"-": "", "removed": "removed", "kept": "kept: removing it failed"}


def kept_hosts(session: Session) -> list[KeptHost]:
    """Every backend's lasting hosts (`dstack pool list`'s)."""
    from dstack.backends import registry
    from dstack.backends.base import Context

    backends = registry.open_all(Context(session.home, session.state))
    return [host for backend in backends.values() for host in backend.kept_hosts()]


def check_host(host: KeptHost, stale: float, repair: bool) -> Report:
    """Run host-fsck.sh over the host's `~/.dstack`; a host that cannot be reached, or whose
    script fails, is one unchecked finding."""
    from dstack.ssh.connect import HostError
    from dstack.ssh.remote import Remote

    remote = Remote(host.address, host.known_hosts, RETRY_FOR)
    args: list[str | int] = [host.root, math.ceil(stale)]
    if repair:
        args.append("repair")
    try:
        code, out, err = remote.run_script("host-fsck.sh", *args)
        if code != 0:
            raise remote.failure("the host script host-fsck.sh", code, err)
    except HostError as e:
        return _unchecked(host.name, e.message.rstrip("."))
    finally:
        remote.close()
    return parse_answer(host.name, out)


def parse_answer(place: str, out: bytes) -> Report:
    """host-fsck.sh's lines as findings at ``place``, and its counts; anything else it printed
    (a hostile or broken host) leaves the host unchecked."""
    lines = out.decode(errors="replace").splitlines()
    counts = _CHECKED.fullmatch(lines[-1]) if lines else None
    if counts is None:
        return _unchecked(place, "host-fsck.sh ended without its last line")
    report = Report()
    report.checked.update({"host blobs": int(counts[1]), "environments": int(counts[2])})
    for line in lines[:-1]:
        found = _FINDING.fullmatch(line)
        if found is None:
            return _unchecked(place, f"host-fsck.sh printed {shown(line)}")
        kind, path, reason, done = found.groups()
        report.findings.append(Finding(kind, place, path, reason, _ACTIONS[done]))
    return report


def _unchecked(place: str, reason: str) -> Report:
    report = Report()
    report.findings.append(Finding(UNCHECKED, place, "~/.dstack", reason))
    return report
