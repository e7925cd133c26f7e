"""One exception tree for the whole package.

DstackError                  anything the user can act on; the CLI prints it as one paragraph
├── SpecError                a workflow, variable or config file is wrong (names file, line, field)
├── HomeError                DSTACK_HOME is missing, unwritable or damaged
├── NotFoundError            a run, tag, workflow or artifact that does not exist
├── ResourceError            the requested resources cannot be satisfied here
├── ProviderError            a provider cannot prepare or run the job
├── StoreError               the artifact store refused or returned damaged data
│   └── ContentMismatch      bytes sent under a hash they do not have (the file changed)
├── CloudError               a cloud cannot be used (its SDK missing, a stack failing)
└── RunStateError            an operation that the run's current state does not allow

Library errors are converted at the boundary with ``raise ... from e``.
"""

from __future__ import annotations


class DstackError(Exception):
    """Base of all errors meant for the user; ``hint`` says what to do next."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nHint: {self.hint}"


class SpecError(DstackError):
    """A user-written file (workflows, variables, config) is invalid."""

    exit_code = 2


class HomeError(DstackError):
    """DSTACK_HOME cannot be used."""


class NotFoundError(DstackError):
    """A named run, tag, workflow or artifact does not exist."""


class ResourceError(DstackError):
    """The job asks for more than the chosen host has."""


class ProviderError(DstackError):
    """A provider cannot prepare the job (missing script, python version, requirements)."""


class StoreError(DstackError):
    """The artifact store is unusable or returned data that fails verification."""


class ContentMismatch(StoreError):
    """The store refused bytes that do not hash to the sha256 they were sent under: the file
    changed while it was being sent."""


class CloudError(DstackError):
    """A cloud backend cannot be used: its SDK is not installed, or its stack failed."""


class RunStateError(DstackError):
    """The run's status does not allow the operation (e.g. tagging a running run)."""


def describe(error: BaseException) -> str:
    """One sentence for an expected error, to record as the reason something failed: a
    DstackError's message, or what an OSError says and on which file (a full disk says so)."""
    if isinstance(error, DstackError):
        return error.message.rstrip(".")
    if isinstance(error, OSError):
        import errno

        where = f": {error.filename}" if error.filename else ""
        if error.errno == errno.ENOSPC:
            return f"no space left on this machine{where}"
        return f"{error.strerror or error}{where}"
    return f"{type(error).__name__}: {error}"
