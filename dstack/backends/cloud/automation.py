"""The Pulumi Automation API, as dstack uses it: one stack per job in a workspace inside
DSTACK_HOME, previewed, brought up and destroyed by the `pulumi` CLI.

State goes to the backend dstack.backends.cloud.workspace chooses (a file backend in
DSTACK_HOME, or the bucket of a shared store, where every home sharing it sees the stacks);
stack secrets use the passphrase provider with a passphrase file (0600). The stack's config
holds its HostSpec (``host``), so the stack can also be operated with the plain `pulumi` CLI
and `stacks/__main__.py`. A stack another process is updating (its lock is held) is a
StackBusy: someone else is on it.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dstack.backends.cloud.preview import key_inputs
from dstack.backends.cloud.workspace import StateBackend, pulumi_root, state_backend
from dstack.backends.cloud.workspace import passphrase_file as passphrase_file
from dstack.backends.plans import PlannedResource
from dstack.errors import CloudError
from dstack.home import Home
from stacks.spec import HostSpec

if TYPE_CHECKING:
    from pulumi import automation as auto
    from pulumi.automation import Stack

PROJECT = "dstack-host"
# The provider plug-in of each cloud, named as `pulumi plugin install` names it, and the
# Python SDK whose version it must match.
INSTALL_HINT = (
    "install the Pulumi CLI (curl -fsSL https://get.pulumi.com | sh, or see "
    "https://www.pulumi.com/docs/install/) and open a new shell so `pulumi` is on PATH"
)

Notes = Callable[[str], None]


@dataclass(frozen=True)
class HostOutputs:
    """Where the created host is reached."""

    address: str
    ssh_user: str
    instance_id: str


def require_cli() -> None:
    """Fail before anything is recorded when the Pulumi SDK or CLI is missing."""
    _sdk()
    _command()


def _command() -> auto.PulumiCommand:
    from pulumi import automation as auto

    try:
        return auto.PulumiCommand()
    except FileNotFoundError:
        raise CloudError(
            "dstack creates cloud hosts with the Pulumi CLI, and there is no `pulumi` on PATH.",
            hint=INSTALL_HINT,
        ) from None
    except (OSError, subprocess.CalledProcessError, ValueError) as e:
        raise CloudError(
            f"The Pulumi CLI on PATH does not work (`pulumi version`: {e}).", hint=INSTALL_HINT
        ) from None


class StackBusy(CloudError):
    """The stack is locked by an update under way elsewhere (another home, another process)."""


def _options(home: Home, backend: StateBackend | None) -> auto.LocalWorkspaceOptions:
    from pulumi import automation as auto

    backend = backend or state_backend(home)
    url = backend.url
    work = pulumi_root(home) / "work"
    work.mkdir(parents=True, exist_ok=True)
    return auto.LocalWorkspaceOptions(
        work_dir=str(work),
        pulumi_command=_command(),
        secrets_provider="passphrase",
        project_settings=auto.ProjectSettings(
            name=PROJECT, runtime="python", backend=auto.ProjectBackend(url)
        ),
        env_vars={
            "PULUMI_BACKEND_URL": url,
            "PULUMI_CONFIG_PASSPHRASE_FILE": str(backend.passphrase),
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            **backend.env,
        },
    )


def _sdk() -> Any:
    try:
        from pulumi import automation as auto
    except ImportError:
        raise CloudError(
            "Creating cloud hosts needs the Pulumi SDK.",
            hint="install a cloud's extra, e.g. pip install 'dstack[aws]'",
        ) from None
    return auto


def open_stack(
    home: Home, spec: HostSpec, stack_name: str | None = None, backend: StateBackend | None = None
) -> auto.Stack:
    """The job's stack (named after the host unless ``stack_name``), created if new, with
    its HostSpec in the stack config."""
    auto = _sdk()

    def program() -> None:
        from stacks.program import host

        host(spec)

    name = stack_name or spec.name
    with cloud_errors("stack init", name):
        stack: Stack = auto.create_or_select_stack(
            name, project_name=PROJECT, program=program, opts=_options(home, backend)
        )
        stack.set_config("host", auto.ConfigValue(spec.to_json()))
    return stack


def select_stack(home: Home, name: str, backend: StateBackend | None = None) -> auto.Stack | None:
    """An existing stack (for teardown); None when the backend has no such stack."""
    auto = _sdk()
    try:
        with cloud_errors("stack select", name):
            found: Stack = auto.select_stack(
                name, project_name=PROJECT, program=lambda: None, opts=_options(home, backend)
            )
            return found
    except CloudError as e:
        if isinstance(e.__cause__, auto.StackNotFoundError):
            return None
        raise


def ensure_plugin(stack: auto.Stack, backend: str, notes: Notes) -> None:
    """The cloud's provider plug-in at the version of the installed SDK, installed once."""
    import importlib.metadata

    from dstack.backends.registry import backend_class

    plugin = getattr(backend_class(backend), "plugin", None)
    if plugin is None:
        return
    name, sdk = plugin
    version = importlib.metadata.version(sdk)
    with cloud_errors("plugin install", stack.name):
        if any(p.name == name and p.version == version for p in stack.workspace.list_plugins()):
            return
        notes(f"installing the Pulumi {name} plug-in {version} (once)")
        stack.workspace.install_plugin(name, version)


def preview(stack: auto.Stack, shown_as: dict[str, str]) -> list[PlannedResource]:
    """What `up` would create, from the engine's own preview events; ``shown_as`` names
    values by their meaning (the run's public key)."""
    found: list[PlannedResource] = []

    def on_event(event: Any) -> None:
        pre = event.resource_pre_event
        if pre is None or pre.metadata.type == "pulumi:pulumi:Stack":
            return
        step = pre.metadata.new or pre.metadata.old
        inputs = (step.inputs if step else None) or {}
        found.append(
            PlannedResource(
                pre.metadata.type, _name(pre.metadata.urn), key_inputs(inputs, shown_as)
            )
        )

    with cloud_errors("preview", stack.name):
        stack.preview(on_event=on_event)
    return found


def up(stack: auto.Stack, notes: Notes) -> HostOutputs:
    """Create the stack's resources; the host's outputs."""

    with cloud_errors("up", stack.name):
        result = stack.up(on_event=_narrator("res_outputs_event", "created", notes))
    values = {key: str(output.value) for key, output in result.outputs.items()}
    missing = [k for k in ("address", "ssh_user", "instance_id") if not values.get(k)]
    if missing:
        raise CloudError(f"Stack {stack.name} came up without {', '.join(missing)}.")
    return HostOutputs(values["address"], values["ssh_user"], values["instance_id"])


def engine_preview(home: Home, spec: HostSpec, shown_as: dict[str, str]) -> list[PlannedResource]:
    """The engine's preview of a host without a run (`dstack plan`): a throw-away stack,
    removed afterwards; a preview creates nothing in the cloud."""
    stack = open_stack(home, spec, f"dstack-plan-{secrets.token_hex(4)}")
    try:
        ensure_plugin(stack, spec.backend, lambda text: None)
        return preview(stack, shown_as)
    finally:
        with cloud_errors("stack rm", stack.name):
            stack.workspace.remove_stack(stack.name)


def destroy(stack: auto.Stack, notes: Notes) -> None:
    """Delete every resource of the stack, then the stack itself."""

    with cloud_errors("destroy", stack.name):
        stack.destroy(on_event=_narrator("resource_pre_event", "deleting", notes))
    with cloud_errors("stack rm", stack.name):
        stack.workspace.remove_stack(stack.name)


def _name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def _narrator(kind: str, verb: str, notes: Notes) -> Callable[[Any], None]:
    """An event handler saying "VERB TYPE NAME" for each resource step of ``kind`` (the
    stack and the providers go unsaid)."""

    def on_event(event: Any) -> None:
        step = getattr(event, kind)
        if step is not None and not step.metadata.type.startswith("pulumi:"):
            notes(f"{verb} {step.metadata.type} {_name(step.metadata.urn)}")

    return on_event


@contextmanager
def cloud_errors(step: str, stack: str) -> Iterator[None]:
    """The Automation API's errors as a CloudError naming the step and the stack, with the
    engine's last words (not a traceback)."""
    from pulumi import automation as auto

    try:
        yield
    except auto.CommandError as error:
        text = str(error).partition(" stderr: ")[2].strip() or str(error).strip()
        tail = "\n".join(line for line in text.splitlines()[-6:] if line.strip())
        if isinstance(error, auto.ConcurrentUpdateError):
            raise StackBusy(
                f"Stack {stack} is being updated elsewhere (its lock is held):\n{tail}",
                hint="another home or process is on it; if none is (one was killed), "
                f"`pulumi cancel --stack {stack}` removes the lock it left",
            ) from error
        raise CloudError(
            f"`pulumi {step}` of stack {stack} failed:\n{tail}",
            hint="`dstack gc` tears down stacks left behind; Pulumi's state is in "
            "DSTACK_HOME/pulumi",
        ) from error
