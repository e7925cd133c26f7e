"""The files a run (``RUN``) or a tagged run (``:TAG``) saved: listed per job, downloaded into
one folder. Runs of teammates sharing the store are found there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dstack.service.session import Session
    from dstack.storage.manifest import Entry
    from dstack.storage.objects import Meter


@dataclass(frozen=True)
class ArtifactFile:
    """One saved file of a job (``link``: a symlink's target, then ``size`` is 0)."""

    job: str
    path: str
    size: int
    link: str | None = None


@dataclass(frozen=True)
class JobArtifacts:
    """What one job saved. ``state``: complete (the job ended well), partial (it failed or
    was stopped), live (it still runs and saves)."""

    job: str
    state: str
    paths: list[str]
    entries: list[Entry]

    @property
    def files(self) -> list[ArtifactFile]:
        return [ArtifactFile(self.job, e.path, e.size, e.link) for e in self.entries]

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "paths": self.paths,
            "files": [e.__dict__ for e in self.entries],
        }


@dataclass(frozen=True)
class Downloaded:
    files: int
    target: Path


def list_artifacts(session: Session, ref: str) -> list[JobArtifacts]:
    """Each job's saved files; ``ref`` is a run name or ``:TAG``."""
    from dstack.artifacts import load_all

    session.recover()
    return [
        JobArtifacts(job, m.state, m.paths, m.entries)
        for job, m in load_all(session.state, session.store, ref).items()
    ]


def download(
    session: Session, ref: str, target: Path | None = None, progress: Meter | None = None
) -> Downloaded:
    """Write every job's files into ``target`` (default: ./RUN or ./TAG), each verified
    against its hash; ``progress`` is told the bytes expected, then each batch moved."""
    from dstack.artifacts import load_all
    from dstack.storage.manifest import materialize
    from dstack.storage.tree import final_tree

    store = session.store
    manifests = load_all(session.state, store, ref)
    folder = target or Path(ref.lstrip(":"))
    # the jobs' files land in one folder: one tree, judged whole (links across jobs)
    tree = final_tree(m.entries for m in manifests.values())
    if progress is not None:
        progress.expect(sum(e.size for e in tree))
    materialize(tree, folder, store.blobs, progress)
    return Downloaded(sum(len(m.entries) for m in manifests.values()), folder)
