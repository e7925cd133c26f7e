"""Tags name a finished run (or an uploaded set of files) so others can reuse its artifacts."""

from __future__ import annotations

from dstack.errors import RunStateError
from dstack.state.db import State


def tag_run(state: State, tag: str, run_name: str) -> None:
    run = state.run(run_name)
    if not run.finished:
        raise RunStateError(
            f"Run '{run_name}' is {run.status}; only finished runs can be tagged.",
            hint=f"wait for it (dstack attach {run_name}) and tag it then",
        )
    manifests = {j.workflow: j.manifest for j in state.jobs(run_name) if j.manifest}
    state.add_tag(tag, run_name, manifests)
