"""The arguments after WORKFLOW in `dstack run` and `dstack plan`.

`--NAME VALUE` sets a declared variable, other words become `${{ run.args }}` (the 2022
format), and everything after `--` is passed into `${{ run.args }}` untouched. An unknown
`--option` that is close to one of the command's own (`--detatch`, `--no-cahce`) is an error
naming the right one instead of a silent run argument, unless a variable of that name is
declared: to pass such a word to the job, put it after `--`.
"""

from __future__ import annotations

from pathlib import Path

import typer
from typer.core import TyperCommand

_PASSED = "dstack.after_dashes"
CLOSE = 0.8  # how alike a word must be to an option to count as a typo of it


class WorkflowCommand(TyperCommand):
    """A command whose arguments after `--` are kept apart, as given: click (inside typer) would drop the
    `--` itself and mix what follows with the unknown options before it."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        if "--" in args:
            at = args.index("--")
            args, ctx.meta[_PASSED] = args[:at], args[at + 1 :]
        return super().parse_args(ctx, args)


def workflow_tokens(ctx: typer.Context, repo: Path) -> list[str]:
    """The arguments after WORKFLOW, for dstack.spec.variables.split_run_args: those before
    `--` (checked for mistyped options), then `--` and what followed it, if it was given."""
    tokens = list(ctx.args)
    _refuse_mistyped(ctx, tokens, repo)
    passed: list[str] | None = ctx.meta.get(_PASSED)
    return tokens if passed is None else [*tokens, "--", *passed]


def _refuse_mistyped(ctx: typer.Context, tokens: list[str], repo: Path) -> None:
    import difflib

    from dstack.errors import SpecError

    options = [o for p in ctx.command.params for o in p.opts if o.startswith("--")]
    for token in tokens:
        word = token.partition("=")[0]
        if not word.startswith("--") or len(word) < 3:
            continue
        close = difflib.get_close_matches(word, options, n=1, cutoff=CLOSE)
        if close and not _declared(word[2:], repo):
            command = f"dstack {ctx.info_name}"
            raise SpecError(
                f"Unknown option {word} for `{command}`: did you mean {close[0]}?",
                hint=f"to pass it to the workflow (as ${{{{ run.args }}}}), put it after `--`: "
                f"{command} {ctx.params.get('workflow', 'WORKFLOW')} -- {token} ...",
            )


def _declared(name: str, repo: Path) -> bool:
    """Whether ``name`` is a declared variable (only asked about a word that looks mistyped,
    so the usual run does not parse the project's files here)."""
    from dstack.spec.loader import Project

    project = Project.load(repo)
    declared = project.variables.declared(project.raw)
    return bool({name, name.replace("-", "_"), name.replace("_", "-")} & declared)
