"""The names users give (workflows, tags, variables, hosts) and that dstack reads back from a
shared store. They become SQLite keys, store keys (`tags/TAG/...`) and folder names, so each is
short and made only of characters that are safe in all three: no '/', no leading '.', no '..'
component, no NUL, control characters or spaces."""

from __future__ import annotations

import re

NAME_MAX = 100  # characters, for every kind of name
NAME_RULE = "letters, digits, '-', '_' and '.', starting with a letter or digit"
VARIABLE_RULE = "letters, digits, '-', '_' and '.', starting with a letter or '_'"

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a workflow, tag, run or host; None when it can."""
    return _problem(name, _SAFE, NAME_RULE)


def variable_problem(name: object) -> str | None:
    """Why ``name`` cannot name a variable (`${{ name }}`, `--name VALUE`); None when it can."""
    return _problem(name, _VARIABLE, VARIABLE_RULE)


def _problem(name: object, pattern: re.Pattern[str], rule: str) -> str | None:
    if not isinstance(name, str):
        return f"is {type(name).__name__} {name!r:.40}, not text"
    if len(name) > NAME_MAX:
        return f"is {len(name)} characters long; at most {NAME_MAX} are allowed"
    if not pattern.fullmatch(name):
        return f"may hold only {rule}"
    return None


def shown(name: object) -> str:
    """A name as an error message may quote it: in quotes, control characters escaped, cut
    short (a hostile name must not fill the screen or move the cursor)."""
    text = repr(name) if not isinstance(name, str) else repr(name)[1:-1]
    return f"'{text[:60]}…'" if len(text) > 60 else f"'{text}'"
