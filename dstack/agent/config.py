"""What the laptop tells the agent about its job (agent.json in the job's folder, mode 0600:
it holds the upload grants). Read back with every value checked: the file sits on a host."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dstack.agent.grants import Grant

SEAL_GRACE = 600.0  # seconds the agent keeps trying to seal while the store does not answer


@dataclass(frozen=True)
class AgentConfig:
    run: str
    job: str
    host: str  # the host's name as the laptop knows it, for statuses
    store_url: str
    manifest: str  # the key of the job's manifest
    pid: int  # the job's process (and group), and when it started (ticks since boot)
    pid_start: int | None
    known_blobs: str  # the host's record of blobs it sent to this store
    artifacts: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    grants: list[Grant] = field(default_factory=list)
    seal_grace: float = SEAL_GRACE
    stop_url: str | None = None  # a signed GET of the job's stop request (dstack.agent.stop)

    def to_json(self) -> str:
        data = dict(self.__dict__)
        data["grants"] = [g.to_dict() for g in self.grants]
        return json.dumps(data)

    @classmethod
    def load(cls, path: Path) -> AgentConfig:
        data: Any = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        texts = ("run", "job", "host", "store_url", "manifest", "known_blobs")
        if not all(isinstance(data.get(k), str) for k in texts):
            raise ValueError(f"{', '.join(texts)} must be strings")
        start = data.get("pid_start")
        if type(data.get("pid")) is not int or not (start is None or type(start) is int):
            raise ValueError("pid and pid_start must be numbers")
        lists = [data.get("artifacts", []), data.get("mounts", [])]
        if not all(isinstance(v, list) and all(isinstance(p, str) for p in v) for v in lists):
            raise ValueError("artifacts and mounts must be lists of paths")
        grace = data.get("seal_grace", SEAL_GRACE)
        if not isinstance(grace, (int, float)):
            raise ValueError("seal_grace must be a number")
        stop_url = data.get("stop_url")
        if not (stop_url is None or isinstance(stop_url, str)):
            raise ValueError("stop_url must be a string")
        return cls(
            **{k: data[k] for k in texts},
            pid=data["pid"],
            pid_start=data.get("pid_start"),
            artifacts=lists[0],
            mounts=lists[1],
            grants=[Grant.from_dict(g) for g in data.get("grants", [])],
            seal_grace=float(grace),
            stop_url=stop_url,
        )
