"""The shell scripts dstack runs on hosts, kept as files so that shellcheck reads what runs.

Values never go into a script's text: each script takes them as its positional arguments (or
from the job's environment), quoted by ``command`` like any other word of a command line.
"""

from __future__ import annotations

import shlex
from functools import cache

_LIBRARY = "# library:"


@cache
def load(name: str) -> str:
    """The text of the packaged script ``name`` (e.g. ``job-poll.sh``), preceded by the
    libraries it names on a ``# library: LIB.sh`` line (a command line carries one text)."""
    from importlib.resources import files

    text = files(__package__).joinpath(name).read_text()
    libraries = [
        line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(_LIBRARY)
    ]
    return "".join(load(library) + "\n" for library in libraries) + text


def command(name: str, *args: str | int) -> str:
    """A command line that runs script ``name`` in bash with ``args`` as its "$1", "$2"...
    (``$0`` is the script's name, so its own messages say where they come from)."""
    return shlex.join(["bash", "-c", load(name), name, *map(str, args)])
