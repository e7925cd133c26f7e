"""Entry point of a detached supervisor: `python -m dstack.runner.detached RUN [--no-cache]`.

It has no terminal: what it says goes to the run's log, DSTACK_HOME/runs/RUN/dstack.log."""

from __future__ import annotations

import os
import sys

from dstack import logs_setup
from dstack.errors import DstackError
from dstack.home import open_home
from dstack.runner.supervisor import supervise


def main(argv: list[str]) -> int:
    logs_setup.configure(debug=os.environ.get("DSTACK_DEBUG") == "1")
    try:
        return supervise(
            open_home(), argv[0], out=None, notes=None, no_cache="--no-cache" in argv[1:]
        )
    except DstackError as e:  # recorded on the run's jobs and in its log
        sys.stderr.write(f"dstack: {e.message}\n")
        return 1
    except Exception as e:  # recorded likewise, with its traceback in the run's log
        sys.stderr.write(logs_setup.unexpected_line(e, logs_setup.record_unexpected(e)) + "\n")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
