"""Entry point of a detached supervisor: `python -m dstack.runner.detached RUN [--no-cache]`."""

from __future__ import annotations

import sys

from dstack.home import open_home
from dstack.runner.supervisor import supervise


def main(argv: list[str]) -> int:
    return supervise(open_home(), argv[0], out=None, notes=None, no_cache="--no-cache" in argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
