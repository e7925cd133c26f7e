"""The offline preview of a job's stack: the real stack program (stacks/) run under the Pulumi
SDK's mock runtime, each resource recorded with the inputs a reviewer checks (sizes, ports and
who may reach them, spot, prices). Nothing is created and no credentials are needed.

What dstack fills in at launch (the per-run SSH key, the image lookup, and the caller's address
when it cannot be looked up now) is shown as such, never as made-up values."""

from __future__ import annotations

import importlib
from typing import Any

from dstack.backends.plans import PlannedResource
from dstack.errors import CloudError
from stacks.spec import HostSpec

# Stand-ins for what dstack fills in at launch, shown by their meaning. CALLER stands only for
# an address that could not be looked up: one that could is shown as it is (planning.ssh_from).
CALLER = "192.0.2.1/32"  # documentation range (RFC 5737): never a real caller
PREVIEW_KEY = "ssh-ed25519 AAAA-dstack-preview"
PLACEHOLDERS = {
    CALLER: "<this machine's public address: not known now>",
    PREVIEW_KEY: "<per-run key>",
}
SECRET_MARKER = "4dabf18193072939515e22adb298388d"

# The inputs worth reading in a preview (flattened paths end with one of these keys).
KEY_INPUTS = {
    "instanceType": "type",
    "machineType": "type",
    "vmSize": "type",
    "region": "region",
    "location": "region",
    "zone": "zone",
    "availabilityZone": "zone",
    "volumeSize": "disk GB",
    "size": "disk GB",
    "diskSizeGB": "disk GB",
    "volumeType": "disk type",
    "fromPort": "port",
    "ports": "ports",
    "destinationPortRange": "port",
    "cidrBlocks": "from",
    "sourceRanges": "from",
    "sourceAddressPrefix": "from",
    "marketType": "market",
    "provisioningModel": "market",
    "priority": "market",
    "maxPrice": "max price",
    "evictionPolicy": "eviction",
    "instanceInitiatedShutdownBehavior": "on shutdown",
    "onHostMaintenance": "on maintenance",
    "publicKey": "key",
    "keyData": "key",
    "ami": "image",
}


def offline_preview(spec: HostSpec) -> list[PlannedResource]:
    """Every resource the stack would create, in registration order, with its key inputs."""
    try:
        import pulumi

        from stacks.program import SDKS, host

        importlib.import_module(SDKS[spec.backend])
    except ImportError as e:
        raise CloudError(
            f"Previewing a {spec.backend} host needs the Pulumi SDK for it ({e.name} is missing).",
            hint=f"install the cloud's extra: pip install 'dstack[{spec.backend}]'",
        ) from None

    class Recorder(pulumi.runtime.Mocks):
        def __init__(self) -> None:
            self.found: list[PlannedResource] = []

        def new_resource(self, args: Any) -> tuple[str, dict[str, Any]]:
            self.found.append(PlannedResource(args.typ, args.name, key_inputs(args.inputs)))
            return f"{args.name}-id", dict(args.inputs)

        def call(self, args: Any) -> dict[str, Any]:  # type: ignore[override]
            return {"id": "<looked up at launch>"}

    recorder = Recorder()
    pulumi.runtime.set_mocks(recorder, project="dstack-host", stack="preview", preview=True)

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def program() -> None:
        host(spec)

    program()
    return recorder.found


def key_inputs(inputs: dict[str, Any], shown_as: dict[str, str] | None = None) -> dict[str, str]:
    """The inputs a reviewer checks, by label; values dstack fills in shown by their meaning."""
    names = {**PLACEHOLDERS, **(shown_as or {})}
    shown: dict[str, list[str]] = {}
    for path, value in _flatten(inputs, ""):
        label = KEY_INPUTS.get(path.rsplit(".", 1)[-1].split("[")[0])
        if label is not None and "egress" in path:  # outbound rules: where to, not from
            label = "egress " + ("to" if label == "from" else label)
        if label is not None:
            text = names.get(str(value), str(value))
            if text not in shown.setdefault(label, []):
                shown[label].append(text)
    return {label: ", ".join(values) for label, values in shown.items()}


def _flatten(value: Any, path: str) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        if SECRET_MARKER in value:
            return [(path, "[secret]")]
        return [p for key, item in value.items() for p in _flatten(item, f"{path}.{key}")]
    if isinstance(value, list):
        if all(not isinstance(item, (dict, list)) for item in value):
            return [(path, ", ".join(PLACEHOLDERS.get(str(v), str(v)) for v in value))]
        return [p for i, item in enumerate(value) for p in _flatten(item, f"{path}[{i}]")]
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # the engine passes numbers as floats
    return [(path, value)]
