"""What `dstack fsck` finds: each finding (its kind, place, path, reason, what repair did) and
the counts of what was checked, summed up in one line."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

# What a finding can be; all but "leftover" make the check fail.
CORRUPT, MISSING, INVALID, UNCHECKED, LEFTOVER = (
    "corrupt",  # content that does not hash to its name
    "missing",  # named by a manifest or record, absent
    "invalid",  # a record, manifest or name dstack cannot use
    "unchecked",  # could not be checked: a host unreachable, an object unreadable
    "leftover",  # a temporary file or half-built environment of a killed process
)
FAILING = (CORRUPT, MISSING, INVALID, UNCHECKED)


@dataclass(frozen=True)
class Finding:
    """One thing wrong at ``place`` (a store's URL, a host's name, or DSTACK_HOME) under
    ``path`` (a store key, a path under the place), why, and what ``repair`` did about it."""

    kind: str
    place: str
    path: str
    reason: str
    action: str = ""


@dataclass
class Report:
    """The findings and how many of each thing were checked (blobs, manifests, hosts...)."""

    findings: list[Finding] = field(default_factory=list)
    checked: Counter[str] = field(default_factory=Counter)

    def add(self, other: Report) -> None:
        self.findings += other.findings
        self.checked.update(other.checked)

    @property
    def ok(self) -> bool:
        """Nothing is corrupt, missing, invalid or unchecked (leftovers alone are fine)."""
        return not any(f.kind in FAILING for f in self.findings)

    def summary(self) -> str:
        """One line: what was checked, and what was found (or that nothing was wrong)."""
        c, parts = self.checked, []
        if "blobs" in c:  # the store was checked
            parts = [_count(c[k], k[:-1]) for k in ("blobs", "manifests", "records")]
        if "hosts" in c:
            inside = (
                f"{_count(c['host blobs'], 'blob')}, {_count(c['environments'], 'environment')}"
            )
            parts.append(_count(c["hosts"], "host") + (f" ({inside})" if c["hosts"] else ""))
        kinds = Counter(f.kind for f in self.findings)
        found = ", ".join(f"{kinds[k]:,} {k}" for k in (*FAILING, LEFTOVER) if kinds[k])
        removed = sum(1 for f in self.findings if f.action and not f.action.startswith("kept"))
        repaired = f" ({removed:,} repaired)" if removed else ""
        return f"checked {', '.join(parts)}: {found + repaired if found else 'nothing wrong'}"

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "checked": {k.replace(" ", "_"): n for k, n in sorted(self.checked.items())},
            "findings": [asdict(f) for f in self.findings],
        }


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
