"""`DSTACK_HOME/config.yaml`, validated like the workflow files (unknown keys are errors)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

STORE_SCHEMES = ("file", "s3", "gs", "az")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _backends_model() -> type[BaseModel]:
    """`backends:`, one optional section per registered backend, each validated by the model
    its backend names (a backend used by default has its section filled in)."""
    import importlib

    from dstack.backends.registry import backend_class, names

    sections: dict[str, Any] = {}
    for name in names():
        backend = backend_class(name)
        if backend.settings_model is None:
            continue
        module, _, attr = backend.settings_model.partition(":")
        model = getattr(importlib.import_module(module), attr)
        if backend.settings_by_default:
            sections[name] = (model, Field(default_factory=model))
        else:
            sections[name] = (model | None, None)
    check = field_validator(*sections)(_section_problem)
    return create_model(
        "Backends", __base__=_Strict, __validators__={"_problem": check}, **sections
    )


def _section_problem(cls: type[BaseModel], value: BaseModel | None) -> BaseModel | None:
    """A backend's own check of its whole section (its `problem()`), reported at the section."""
    problem = getattr(value, "problem", None)
    message = problem() if callable(problem) else None
    if message:
        raise ValueError(message)
    return value


Backends = _backends_model()


class StoreSettings(_Strict):
    """Where blobs, manifests, run records and tags live; absent: a folder in DSTACK_HOME."""

    url: str | None = Field(None, description="file:///path, s3://b/prefix, gs://b/p, az://c/p")
    endpoint_url: str | None = Field(None, description="S3-compatible server, e.g. MinIO")
    region: str | None = Field(None, description="S3 bucket region")
    profile: str | None = Field(None, description="AWS profile for s3://")
    project: str | None = Field(None, description="Google Cloud project for gs://")
    account: str | None = Field(None, description="Azure storage account for az://")
    direct: bool = Field(
        True,
        description="hosts that can reach the store write their jobs' logs and artifacts to "
        "it themselves, through an agent with upload rights for the run only (false: all "
        "of it passes through this machine)",
    )

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        if url is None:
            return None
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in STORE_SCHEMES or not rest.strip("/"):
            raise ValueError(
                f"'{url}' is not a store URL (file:///path, s3://bucket/prefix, "
                "gs://bucket/prefix or az://container/prefix)"
            )
        if scheme == "file" and not rest.startswith("/"):
            import os

            raise ValueError(
                f"'{url}' names a relative path, which would depend on the folder dstack is "
                f"started in; give an absolute one, e.g. file://{os.path.abspath(rest)}"
            )
        return url


class PulumiSettings(_Strict):
    backend_url: str | None = Field(
        None, description="Where stack state lives (default: file:// in DSTACK_HOME/pulumi)"
    )


class Config(_Strict):
    backends: Backends = Field(default_factory=Backends)  # type: ignore[valid-type]
    store: StoreSettings = Field(default_factory=StoreSettings)
    pulumi: PulumiSettings = Field(default_factory=PulumiSettings)
