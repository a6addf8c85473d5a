"""The `notifier` command: parses arguments and prints; everything else lives in `notifier/`.

This module is the root: it turns every failure into one line, sets up logging (`-v`), and
assembles the areas of `notifier/commands/` (one module per area) into one command.

With `--json`, a command prints one JSON document on standard output and nothing else; progress
and logs go to standard error. A usage or input problem is one line on standard error, exit 2.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError, NoSuchOption, UsageError  # Typer vendors Click
from typer.core import TyperGroup

from notifier.commands import billing, campaigns, care, imports, operations, templates
from notifier.commands.common import fail, out  # noqa: F401 - `out`: tests reach the console as `cli.out`
from notifier.commands.common import table as _table  # noqa: F401 - the name tests import from `cli`
from notifier.errors import NotifierError
from notifier.settings import get_settings

# --- failures: one line `error: …` on stderr, exit code 2 -------------------------------------

VERBOSE_KEY = "notifier.verbose"  # in the click context's meta, set by the `main` callback
_NEGATIVE_NUMBER = re.compile(r"-\d+(\.\d+)?")


def _command_path(ctx: typer.Context | None) -> str:
    """`notifier feed import`, whatever name the program was started under (tests, python -m)."""
    names: list[str] = []
    while ctx is not None:
        names.append((ctx.info_name or "") if ctx.parent is not None else "notifier")
        ctx = ctx.parent
    return " ".join(reversed(names))


def _usage_message(exc: UsageError) -> str:
    """Click's usage error as one clause plus where to look: "missing option '--format' (see …)"."""
    if isinstance(exc, NoSuchOption) and _NEGATIVE_NUMBER.fullmatch(exc.option_name):
        message = f"{exc.option_name} is not allowed here: ids and counts are whole numbers from 1"
    else:
        message = exc.format_message().replace("Value error, ", "").replace("Input should be", "must be")
    message = message.rstrip(".")
    if message[:1].isupper() and message[1:2].islower():
        message = message[0].lower() + message[1:]
    return f"{message} (see `{_command_path(exc.ctx)} --help`)"


def _database_url() -> str | None:
    try:
        return get_settings().database_url
    except Exception:  # noqa: BLE001 - the settings' own error is reported elsewhere
        return None


def _unexpected(exc: Exception, *, verbose: bool) -> NoReturn:
    """A database problem people can fix gets its sentence; anything else its type and first line.

    With -v the traceback comes first, redacted: it quotes SQL parameters and message texts.
    """
    from notifier.db import explain_database_error
    from notifier.redaction import format_exception

    if verbose:
        sys.stderr.write(format_exception(exc))
    explained = explain_database_error(exc, _database_url())
    if explained is not None:
        fail(str(explained))
    lines = str(exc).strip().splitlines()
    detail = f": {lines[0]}" if lines else ""
    fail(f"unexpected {type(exc).__name__}{detail} (run with -v for details)")


@contextmanager
def _one_line_errors(ctx: typer.Context | None) -> Iterator[None]:
    """Map every failure of parsing or running a command to `fail`; help and exits pass through."""
    try:
        yield
    except (typer.Exit, NoArgsIsHelpError, KeyboardInterrupt, BrokenPipeError):
        raise  # --help, a bare group (its help), a command's own exit, Ctrl-C, `| head`: as Typer does
    except typer.Abort:
        fail("aborted")
    except UsageError as exc:
        fail(_usage_message(exc))
    except ClickException as exc:
        fail(exc.format_message())
    except NotifierError as exc:
        fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - the last line of defence: never a bare traceback
        _unexpected(exc, verbose=bool(ctx and ctx.meta.get(VERBOSE_KEY)))


class _RootGroup(TyperGroup):
    """The `notifier` group: parsing and running every command go through `_one_line_errors`.

    Being the group itself (not a wrapper around `app()`), it behaves the same for the installed
    script, `python cli.py` and the test runner.
    """

    def make_context(self, info_name: str | None, args: list[str], parent: typer.Context | None = None,
                     **extra: Any) -> typer.Context:
        with _one_line_errors(None):
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: typer.Context) -> Any:
        with _one_line_errors(ctx):
            return super().invoke(ctx)


# --- the command: its top-level commands, then its groups, in the order `--help` lists them ------

app = typer.Typer(help="Warn subscribers about infected devices and leaked data, in Vietnamese.",
                  no_args_is_help=True, pretty_exceptions_enable=False, cls=_RootGroup)


def _add_areas(root: typer.Typer) -> None:
    """Each area's top-level commands, then its groups: `notifier --help` lists them in this order."""
    for name, command in (("history", care.history), ("audit", care.audit), ("worker", operations.worker),
                          ("demo", operations.demo), ("web", operations.web)):
        root.command(name)(command)
    for name, group in (("db", operations.db_app), ("subscribers", imports.subscribers_app),
                        ("assignments", imports.assignments_app), ("feed", imports.feed_app),
                        ("campaign", campaigns.campaign_app), ("peers", operations.peers_app),
                        ("templates", templates.templates_app), ("billing", billing.billing_app),
                        ("bounces", billing.bounces_app)):
        root.add_typer(group, name=name)


_add_areas(app)


@app.callback()
def main(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress to stderr.")] = False,
) -> None:
    """notifier: warn an operator's subscribers, in Vietnamese, and prove delivery."""
    from notifier.redaction import configure_logging

    ctx.meta[VERBOSE_KEY] = verbose
    configure_logging(verbose=verbose)


if __name__ == "__main__":
    app()
