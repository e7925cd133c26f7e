"""Python logging for dstack, configured once per process.

- Every logger is a child of ``dstack`` (``logging.getLogger(__name__)`` in each module).
- stderr gets warnings as one line each (``dstack: warning: ...``); with ``--debug`` (or
  DSTACK_DEBUG=1) it gets every record, debug ones included, with time and module.
- Each run's supervisor, attached or detached, writes its records to the run's own file,
  DSTACK_HOME/runs/RUN/dstack.log (``run_log``); a detached supervisor has no terminal, so
  this file is where its messages go.
- An error nobody expected is written with its traceback to that run's log, or to
  DSTACK_HOME/dstack.log for any other command (``record_unexpected``); the user is shown one
  line naming the file.
- Secret values (``dstack secrets``) are masked in every record written to a file or stderr.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dstack.home import Home, home_path

ROOT = "dstack"
RUN_LOG = "dstack.log"
COMMAND_LOG = "dstack.log"  # in DSTACK_HOME, for commands other than a run's supervisor
_LONG = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass
class _Setup:
    debug: bool = False
    details: Path | None = None  # the log holding the traceback of an unexpected error


_setup = _Setup()


class _Masking(logging.Formatter):
    """A formatter whose whole output (message and traceback) has the secret values masked."""

    def __init__(self, fmt: str, mask: Callable[[str], str]) -> None:
        super().__init__(fmt)
        self.mask = mask

    def format(self, record: logging.LogRecord) -> str:
        return self.mask(super().format(record))


def _not_file_only(record: logging.LogRecord) -> bool:
    """Records meant for the log file alone (a traceback the user is told about in one line)."""
    return not getattr(record, "file_only", False)


class _Warnings(logging.Formatter):
    """What a user reads on stderr without --debug: one line per warning or error, secret
    values masked (the secrets are read at the first warning: most commands print none)."""

    mask: Callable[[str], str] | None = None

    def format(self, record: logging.LogRecord) -> str:
        if self.mask is None:
            self.mask = masker(_home())
        kind = "warning" if record.levelno == logging.WARNING else "error"
        return self.mask(f"dstack: {kind}: {record.getMessage()}")


def masker(home: Home | None) -> Callable[[str], str]:
    """Replace each secret's value (in every form dstack.secrets masks) with the mask."""
    if home is None:
        return lambda text: text
    from dstack.errors import DstackError
    from dstack.secrets import MASK, Secrets, mask_pieces

    try:
        pieces = mask_pieces(Secrets(home).values().values())
    except (DstackError, OSError, ValueError):  # an unreadable secrets file: nothing to mask
        pieces = []

    def mask(text: str) -> str:
        for piece in pieces:
            text = text.replace(piece, MASK)
        return text

    return mask


def configure(debug: bool) -> None:
    """Set up the ``dstack`` logger and its stderr handler (again: replaces the first setup)."""
    _setup.debug = debug
    logger = logging.getLogger(ROOT)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for handler in [h for h in logger.handlers if getattr(h, "_dstack_stderr", False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.DEBUG if debug else logging.WARNING)
    handler.setFormatter(_Masking(_LONG, masker(_home())) if debug else _Warnings())
    handler.addFilter(_not_file_only)
    handler._dstack_stderr = True  # type: ignore[attr-defined]
    logger.addHandler(handler)


def debug_enabled() -> bool:
    return _setup.debug


def _home() -> Home | None:
    """The home when it already exists (logging never creates one)."""
    root = home_path()
    try:
        return Home(root) if root.is_dir() else None
    except OSError:  # a home this user may not look into: the command's own error says so
        return None


def run_log_path(home: Home, run_name: str) -> Path:
    return home.runs_dir / run_name / RUN_LOG


@contextmanager
def run_log(home: Home, run_name: str) -> Iterator[Path]:
    """While the body runs, every ``dstack`` record also goes to the run's log file (debug ones
    with --debug). An unexpected exception leaving the body is written there with its
    traceback, and that file becomes the one ``record_unexpected`` names."""
    path = run_log_path(home, run_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG if debug_enabled() else logging.INFO)
    handler.setFormatter(_Masking(_LONG, masker(home)))
    logger = logging.getLogger(ROOT)
    if logger.level == logging.NOTSET:  # used without configure() (dstack as a library)
        logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield path
    except BaseException as e:
        if not _expected(e):
            logger.error("unexpected error", exc_info=e, extra={"file_only": True})
            _setup.details = path
        raise
    finally:
        logger.removeHandler(handler)
        handler.close()


def _expected(error: BaseException) -> bool:
    from dstack.errors import DstackError

    return isinstance(error, DstackError | KeyboardInterrupt | SystemExit)


def record_unexpected(error: BaseException) -> Path | None:
    """Write the error's traceback to the command log (unless a run's log already has it);
    the file to name to the user, or None when no file could be written."""
    if _setup.details is not None:
        return _setup.details
    home = _home()
    if home is None:
        return None
    import logging.handlers

    path = home.root / COMMAND_LOG
    try:
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=1_000_000, backupCount=1, encoding="utf-8"
        )
    except OSError:
        return None
    handler.setFormatter(_Masking(_LONG, masker(home)))
    exc_info = (type(error), error, error.__traceback__)
    try:
        handler.emit(
            logging.LogRecord(
                ROOT, logging.ERROR, __file__, 0, "`%s` failed", (_command(),), exc_info
            )
        )
    finally:
        handler.close()
    return path


def unexpected_line(error: BaseException, details: Path | None) -> str:
    """The one line an unexpected error ends with (secret values masked)."""
    where = f"; details in {details}" if details else " (run with --debug for the traceback)"
    return masker(_home())(f"dstack: unexpected error: {type(error).__name__}: {error}{where}")


def _command() -> str:
    return " ".join(["dstack", *sys.argv[1:]]) if sys.argv else "dstack"


def show_traceback(error: BaseException) -> None:
    """--debug: the whole traceback on stderr, secret values masked."""
    sys.stderr.write(masker(_home())("".join(traceback.format_exception(error))))
