"""The JSON Schema of the workflow files, aliases included, for editors to complete and check."""

from __future__ import annotations

from typing import Any

from dstack.spec.models import ALIASES, RESOURCE_ALIASES, Workflow


def workflows_schema() -> dict[str, Any]:
    workflow = Workflow.model_json_schema(by_alias=True)
    defs = workflow.pop("$defs", {})
    props = workflow["properties"]
    for alias, canonical in ALIASES.items():
        if canonical in props and alias not in props:
            props[alias] = {**props[canonical], "description": f"Alias of '{canonical}'"}
    resources = defs.get("Resources", {}).get("properties", {})
    for alias, canonical in RESOURCE_ALIASES.items():
        resources[alias] = {**resources[canonical], "description": f"Alias of '{canonical}'"}
    for size_field in ("memory", "shm_size", "disk"):
        if size_field in resources:
            resources[size_field] = {
                "anyOf": [
                    {"type": "string", "pattern": r"^\d+(\.\d+)?\s*[A-Za-z]+$"},
                    {"type": "null"},
                ],
                "description": resources[size_field].get("description", ""),
            }
    defs["Workflow"] = workflow
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "dstack workflows",
        "type": "object",
        "additionalProperties": False,
        "properties": {"workflows": {"type": "array", "items": {"$ref": "#/$defs/Workflow"}}},
        "required": ["workflows"],
        "$defs": defs,
    }
